"""Managing limits: global concurrency / rate limits and task-run tag limits, kept in the otelflow store.

Global limits are JSON values in store namespace ``"gcl"`` under their name (Prefect's global concurrency
limits, ``prefect gcl``). Tag limits (Prefect's ``prefect concurrency-limit``) are global limits named
``tag:<tag>`` -- as in Prefect 3 -- and every change to one bumps a version counter so a running process
notices it (:func:`acquire_tag_slots` re-reads it at most every :data:`TAG_LIMITS_RECHECK_SECONDS`).

Example::

    from otelflow.concurrency import limits

    limits.create_global_concurrency_limit("database", limit=3)
    limits.create_global_concurrency_limit("api", limit=10, slot_decay_per_second=2.0)
    limits.create_tag_limit("small-instance", 2)
    print(limits.read_global_concurrency_limit("database").active_slots)
"""

from __future__ import annotations

import datetime as _dt
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Generator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from typing import Any

from otelflow.concurrency._core import GCL_NAMESPACE, Held, acquire_steps, release, wait_async, wait_sync
from otelflow.stores import Store, get_store

__all__ = [
    "TAG_LIMITS_RECHECK_SECONDS",
    "TAG_PREFIX",
    "ConcurrencyLimitExists",
    "ConcurrencyLimitNotFound",
    "GlobalConcurrencyLimit",
    "TagConcurrencyLimit",
    "aacquire_tag_slots",
    "acquire_tag_slots",
    "create_global_concurrency_limit",
    "create_tag_limit",
    "delete_global_concurrency_limit",
    "delete_tag_limit",
    "disable_global_concurrency_limit",
    "enable_global_concurrency_limit",
    "read_global_concurrency_limit",
    "read_global_concurrency_limits",
    "read_tag_limit",
    "read_tag_limits",
    "reset_tag_limit",
    "update_global_concurrency_limit",
]

#: Prefix of the global limit behind a tag limit (Prefect 3's convention).
TAG_PREFIX = "tag:"
#: How stale a process's view of "which tags have limits" may be (seconds).
TAG_LIMITS_RECHECK_SECONDS = 1.0
_META_NAMESPACE = "gcl-meta"
_TAG_VERSION_KEY = "tag-limits-version"


class ConcurrencyLimitNotFound(LookupError):
    """No limit has that name (Prefect: ``ObjectNotFound``)."""


class ConcurrencyLimitExists(ValueError):
    """A limit with that name exists already (Prefect: ``ObjectAlreadyExists``)."""


@dataclass(frozen=True)
class GlobalConcurrencyLimit:
    """A global concurrency limit as stored, with the slots in use when it was read."""

    name: str
    limit: int
    active: bool
    slot_decay_per_second: float
    active_slots: int
    denied_slots: int
    id: str
    created: str
    updated: str
    holders: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The fields ``otelflow gcl inspect --output json`` prints (Prefect's plus ``holders``)."""
        return {"id": self.id, "created": self.created, "updated": self.updated, "active": self.active,
                "name": self.name, "limit": self.limit, "active_slots": self.active_slots,
                "slot_decay_per_second": self.slot_decay_per_second, "holders": list(self.holders)}


@dataclass(frozen=True)
class TagConcurrencyLimit:
    """A task-run tag limit: at most ``concurrency_limit`` task runs with ``tag`` at once."""

    tag: str
    concurrency_limit: int
    active_slots: tuple[str, ...]  # holders (task run ids) of the slots
    id: str
    created: str
    updated: str


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


def _check_limit(limit: int | None, decay: float | None) -> None:
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 0):
        raise ValueError(f"limit must be an integer >= 0, got {limit!r}.")
    if decay is not None and (not isinstance(decay, (int, float)) or decay < 0):
        raise ValueError(f"slot_decay_per_second must be >= 0, got {decay!r}.")


def _record(store: Store, name: str) -> dict[str, Any] | None:
    raw = store.get(GCL_NAMESPACE, name)
    return None if raw is None else dict(json.loads(raw))


def _limit_from(store: Store, name: str, record: dict[str, Any]) -> GlobalConcurrencyLimit:
    usage = store.slot_usage(name, namespace=GCL_NAMESPACE)
    return GlobalConcurrencyLimit(
        name=name, limit=int(record["limit"]), active=bool(record.get("active", True)),
        slot_decay_per_second=float(record.get("slot_decay_per_second") or 0.0),
        active_slots=usage.active_slots, denied_slots=int(record.get("denied_slots", 0)),
        id=str(record.get("id", "")), created=str(record.get("created", "")), updated=str(record.get("updated", "")),
        holders=tuple(usage.held),
    )


def _validate_name(name: str) -> None:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"A concurrency limit name must be a non-empty string, got {name!r}.")


# --- global limits ---------------------------------------------------------------------------------------


def create_global_concurrency_limit(name: str, limit: int, *, active: bool = True,
                                    slot_decay_per_second: float = 0.0,
                                    store: Store | str | None = None) -> GlobalConcurrencyLimit:
    """Create limit ``name``: at most ``limit`` slots in use at once (``slot_decay_per_second`` > 0 makes it
    usable by ``rate_limit``). Raises :class:`ConcurrencyLimitExists` when the name is taken."""
    _validate_name(name)
    _check_limit(limit, slot_decay_per_second)
    resolved = get_store(store)
    now = _now()
    record = {"name": name, "limit": limit, "active": active, "slot_decay_per_second": float(slot_decay_per_second),
              "denied_slots": 0, "id": str(uuid.uuid4()), "created": now, "updated": now}
    if not resolved.put(GCL_NAMESPACE, name, json.dumps(record), if_absent=True):
        raise ConcurrencyLimitExists(f"Global concurrency limit {name!r} already exists.")
    resolved.reset_slots(name, namespace=GCL_NAMESPACE)  # leftovers of a deleted namesake
    _changed(resolved, name)
    return _limit_from(resolved, name, record)


def read_global_concurrency_limit(name: str, *, store: Store | str | None = None) -> GlobalConcurrencyLimit:
    """Limit ``name`` with its slots in use; raises :class:`ConcurrencyLimitNotFound`."""
    resolved = get_store(store)
    record = _record(resolved, name)
    if record is None:
        raise ConcurrencyLimitNotFound(f"Global concurrency limit {name!r} not found.")
    return _limit_from(resolved, name, record)


def read_global_concurrency_limits(*, store: Store | str | None = None) -> list[GlobalConcurrencyLimit]:
    """Every global limit (tag limits included, as ``tag:<tag>``), oldest first."""
    resolved = get_store(store)
    return [_limit_from(resolved, item.key, dict(json.loads(item.value)))
            for item in resolved.items(GCL_NAMESPACE)]


def update_global_concurrency_limit(name: str, *, limit: int | None = None, active: bool | None = None,
                                    slot_decay_per_second: float | None = None,
                                    store: Store | str | None = None) -> GlobalConcurrencyLimit:
    """Change the given fields of limit ``name`` (slots in use are kept); raises
    :class:`ConcurrencyLimitNotFound`."""
    _check_limit(limit, slot_decay_per_second)
    resolved = get_store(store)
    record = _record(resolved, name)
    if record is None:
        raise ConcurrencyLimitNotFound(f"Global concurrency limit {name!r} not found.")
    if limit is not None:
        record["limit"] = limit
    if active is not None:
        record["active"] = active
    if slot_decay_per_second is not None:
        record["slot_decay_per_second"] = float(slot_decay_per_second)
    record["updated"] = _now()
    resolved.put(GCL_NAMESPACE, name, json.dumps(record))
    _changed(resolved, name)
    return _limit_from(resolved, name, record)


def enable_global_concurrency_limit(name: str, *, store: Store | str | None = None) -> GlobalConcurrencyLimit:
    """Make limit ``name`` count again."""
    return update_global_concurrency_limit(name, active=True, store=store)


def disable_global_concurrency_limit(name: str, *, store: Store | str | None = None) -> GlobalConcurrencyLimit:
    """Stop limit ``name`` from limiting (``concurrency`` / ``rate_limit`` on it proceed at once)."""
    return update_global_concurrency_limit(name, active=False, store=store)


def delete_global_concurrency_limit(name: str, *, store: Store | str | None = None) -> None:
    """Delete limit ``name`` and forget its slots; raises :class:`ConcurrencyLimitNotFound`."""
    resolved = get_store(store)
    if not resolved.delete(GCL_NAMESPACE, name):
        raise ConcurrencyLimitNotFound(f"Global concurrency limit {name!r} not found.")
    resolved.reset_slots(name, namespace=GCL_NAMESPACE)
    _changed(resolved, name)


# --- tag limits ---------------------------------------------------------------------------------------------


def _tag_limit(store: Store, name: str, record: dict[str, Any]) -> TagConcurrencyLimit:
    usage = store.slot_usage(name, namespace=GCL_NAMESPACE)
    return TagConcurrencyLimit(tag=name[len(TAG_PREFIX):], concurrency_limit=int(record["limit"]),
                               active_slots=tuple(usage.held), id=str(record.get("id", "")),
                               created=str(record.get("created", "")), updated=str(record.get("updated", "")))


def create_tag_limit(tag: str, concurrency_limit: int, *, store: Store | str | None = None) -> TagConcurrencyLimit:
    """At most ``concurrency_limit`` task runs tagged ``tag`` at once (0: none may run). Like Prefect's
    ``create_concurrency_limit``, creating an existing tag limit updates it."""
    _validate_name(tag)
    _check_limit(concurrency_limit, None)
    resolved = get_store(store)
    name = TAG_PREFIX + tag
    try:
        create_global_concurrency_limit(name, concurrency_limit, store=resolved)
    except ConcurrencyLimitExists:
        update_global_concurrency_limit(name, limit=concurrency_limit, store=resolved)
    return read_tag_limit(tag, store=resolved)


def read_tag_limit(tag: str, *, store: Store | str | None = None) -> TagConcurrencyLimit:
    """The limit on ``tag``; raises :class:`ConcurrencyLimitNotFound`."""
    resolved = get_store(store)
    record = _record(resolved, TAG_PREFIX + tag)
    if record is None:
        raise ConcurrencyLimitNotFound(f"No concurrency limit found for the tag: {tag}")
    return _tag_limit(resolved, TAG_PREFIX + tag, record)


def read_tag_limits(*, store: Store | str | None = None) -> list[TagConcurrencyLimit]:
    """Every tag limit, oldest first."""
    resolved = get_store(store)
    return [_tag_limit(resolved, item.key, dict(json.loads(item.value)))
            for item in resolved.items(GCL_NAMESPACE, prefix=TAG_PREFIX)]


def reset_tag_limit(tag: str, *, store: Store | str | None = None) -> None:
    """Free every slot of the limit on ``tag`` (Prefect's ``reset``); raises :class:`ConcurrencyLimitNotFound`."""
    resolved = get_store(store)
    if _record(resolved, TAG_PREFIX + tag) is None:
        raise ConcurrencyLimitNotFound(f"No concurrency limit found for the tag: {tag}")
    resolved.reset_slots(TAG_PREFIX + tag, namespace=GCL_NAMESPACE)


def delete_tag_limit(tag: str, *, store: Store | str | None = None) -> None:
    """Delete the limit on ``tag``; raises :class:`ConcurrencyLimitNotFound`."""
    try:
        delete_global_concurrency_limit(TAG_PREFIX + tag, store=store)
    except ConcurrencyLimitNotFound:
        raise ConcurrencyLimitNotFound(f"No concurrency limit found for the tag: {tag}") from None


# --- the task engine's hook -----------------------------------------------------------------------------------


class _TagLimitCache:
    """Per process and store: which tags have an active limit, re-validated against the store's version counter
    at most every :data:`TAG_LIMITS_RECHECK_SECONDS` (so a plain task run usually pays no store call)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, str | None, frozenset[str]]] = {}

    def limited(self, store: Store) -> frozenset[str]:
        entry = self._entries.get(store.url)
        now = time.monotonic()
        if entry is not None and now - entry[0] < TAG_LIMITS_RECHECK_SECONDS:
            return entry[2]
        version = store.get(_META_NAMESPACE, _TAG_VERSION_KEY)
        if entry is not None and entry[1] == version:
            tags = entry[2]
        elif version is None:
            tags = frozenset()
        else:
            tags = frozenset(item.key[len(TAG_PREFIX):] for item in store.items(GCL_NAMESPACE, prefix=TAG_PREFIX)
                             if json.loads(item.value).get("active", True))
        with self._lock:
            self._entries[store.url] = (now, version, tags)
        return tags

    def invalidate(self, store: Store) -> None:
        with self._lock:
            self._entries.pop(store.url, None)


_tag_cache = _TagLimitCache()


def _changed(store: Store, name: str) -> None:
    if name.startswith(TAG_PREFIX):
        store.put(_META_NAMESPACE, _TAG_VERSION_KEY, json.dumps(uuid.uuid4().hex), notify=False)
        _tag_cache.invalidate(store)


def _tag_names(tags: list[str] | tuple[str, ...] | set[str] | frozenset[str], store: Store) -> list[str]:
    if not tags:
        return []
    limited = _tag_cache.limited(store)
    if not limited:
        return []
    return [TAG_PREFIX + tag for tag in sorted(set(tags)) if tag in limited]


def limited_tags(tags: list[str] | tuple[str, ...] | set[str] | frozenset[str],
                 store: Store | str | None = None) -> list[str]:
    """The slot names (``tag:<tag>``) of the tags in ``tags`` that have a limit: ``[]`` at once for most task runs
    (a cached set, checked against the store at most every :data:`TAG_LIMITS_RECHECK_SECONDS`)."""
    return _tag_names(tags, get_store(store)) if tags else []


def _tag_steps(names: list[str], holder: str, lease_duration: float, timeout_seconds: float | None,
               store: Store) -> Generator[float, None, Held | None]:
    """One slot on each limited tag of a task run (a missing limit is no error: it was removed meanwhile)."""
    return acquire_steps(names, 1, mode="concurrency", timeout_seconds=timeout_seconds, max_retries=None,
                         lease_seconds=lease_duration, strict=False, holder=holder, store=store, log_missing=False)


@contextmanager
def acquire_tag_slots(tags: list[str] | tuple[str, ...] | set[str] | frozenset[str], holder: str, *,
                      lease_duration: float = 300, timeout_seconds: float | None = None,
                      store: Store | str | None = None) -> Iterator[None]:
    """Hold one slot on every tag of ``tags`` that has a limit, for a task run (``holder``: its id).

    Returns at once when no tag has a limit: a cached set, checked against the store at most every
    :data:`TAG_LIMITS_RECHECK_SECONDS`. A tag limited to 0 raises ``ConcurrencySlotAcquisitionError``.
    """
    resolved = get_store(store)
    names = _tag_names(tags, resolved)
    if not names:
        yield
        return
    held = wait_sync(_tag_steps(names, holder, lease_duration, timeout_seconds, resolved))
    try:
        yield
    finally:
        release(held)


@asynccontextmanager
async def aacquire_tag_slots(tags: list[str] | tuple[str, ...] | set[str] | frozenset[str], holder: str, *,
                             lease_duration: float = 300, timeout_seconds: float | None = None,
                             store: Store | str | None = None) -> AsyncIterator[None]:
    """``async with`` form of :func:`acquire_tag_slots`."""
    resolved = get_store(store)
    names = _tag_names(tags, resolved)
    if not names:
        yield
        return
    held = await wait_async(_tag_steps(names, holder, lease_duration, timeout_seconds, resolved))
    try:
        yield
    finally:
        release(held)

"""Shared state for transactions and run input: one small interface, two backends.

A :class:`Store` keeps JSON text under ``(namespace, key)``, hands out leased locks, and lets a
reader wait until something is written to a namespace. Backends:

- ``sqlite:///path/to/file.sqlite3`` -- the embedded default (``$OTELFLOW_HOME/store.sqlite3``);
  safe for several processes on one machine (WAL journal, one-statement atomic updates).
- ``redis://[user:password@]host:port/db`` or ``rediss://...`` (TLS) -- shared by several machines;
  needs the ``redis`` extra (``pip install 'otelflow[redis]'``).

Pick one with ``OTELFLOW_STORE_URL`` or pass a URL / :class:`Store` where an API takes ``store=``.
Values are JSON text only: nothing is ever pickled. URLs shown in errors and telemetry have their
password replaced by ``***`` (:func:`redact_url`).

Example::

    from otelflow.stores import get_store

    store = get_store()                       # the configured store
    store.put("demo", "greeting", '"hello"')
    assert store.get("demo", "greeting") == '"hello"'
"""

from __future__ import annotations

import abc
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from typing import NamedTuple, TypeVar

__all__ = [
    "SLOT_MODES",
    "LockLost",
    "LockTimeout",
    "SlotGrant",
    "SlotRequestError",
    "SlotUsage",
    "Store",
    "StoreError",
    "StoreItem",
    "StoreUnavailable",
    "Watch",
    "get_store",
    "redact_url",
    "reset_stores",
    "wait_for",
]


class StoreError(RuntimeError):
    """A store operation failed (bad URL, corrupt data, or the backend refused the request)."""


class StoreUnavailable(StoreError):
    """The store could not be reached (server down, network error, file not writable)."""


class LockTimeout(StoreError, TimeoutError):
    """A lock was not acquired within the allowed wait: another holder kept it."""


class LockLost(StoreError):
    """A write fenced by a lock found the lock held by someone else (its lease expired)."""


class SlotRequestError(StoreError, ValueError):
    """A slot request no wait can satisfy: more slots than a limit has, or a rate limit on a limit without decay.

    ``reason`` is ``"too_many"`` or ``"no_decay"``; ``names`` the limits at fault.
    """

    def __init__(self, message: str, reason: str, names: tuple[str, ...]) -> None:
        super().__init__(message)
        self.reason = reason
        self.names = names


#: ``mode`` of :meth:`Store.try_acquire_slots`: held slots (released by the holder) or rate-limit slots (decaying).
SLOT_MODES = ("concurrency", "rate_limit")


class SlotGrant:
    """What :meth:`Store.try_acquire_slots` did; true when the slots were taken (or nothing limits ``names``).

    ``found``: the requested names that have a limit record (active or not); ``limited``: those that are active
    and so were counted (slots taken on them when ``acquired``).
    """

    __slots__ = ("acquired", "found", "limited")

    def __init__(self, acquired: bool, found: tuple[str, ...], limited: tuple[str, ...]) -> None:
        self.acquired, self.found, self.limited = acquired, found, limited

    def __bool__(self) -> bool:
        return self.acquired

    def __repr__(self) -> str:
        return f"SlotGrant(acquired={self.acquired}, found={self.found}, limited={self.limited})"


class SlotUsage(NamedTuple):
    """Slots in use on one limit right now: by live holders (``holder -> slots``) and by decaying rate-limit
    slots (``decaying``, fractional); ``active_slots`` is their sum, rounded up."""

    held: dict[str, int]
    decaying: float

    @property
    def active_slots(self) -> int:
        """Slots in use: held ones plus decaying ones (a partly decayed slot still counts)."""
        import math

        return sum(self.held.values()) + math.ceil(self.decaying - 1e-9)


class StoreItem(NamedTuple):
    """One stored value: its key and JSON text, in write order within its namespace."""

    key: str
    value: str


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (safe for messages, logs and span attributes).

    Example: ``redact_url("rediss://app:s3cret@cache:6380/0") == "rediss://app:***@cache:6380/0"``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparsable store URL>"
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


class Store(abc.ABC):
    """What transactions and run input need from shared state: JSON values, leased locks, waiting.

    Keys are grouped in namespaces (``"txn"``, ``"input:<flow-run-id>"``...). Every method is one
    atomic step on the backend, safe to call from several threads and processes at once.
    """

    #: Backend name: ``"sqlite"`` or ``"redis"``.
    backend: str = ""

    def __init__(self, url: str) -> None:
        self.url = url

    @property
    def display_url(self) -> str:
        """The store URL without its password."""
        return redact_url(self.url)

    # --- values ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def get(self, namespace: str, key: str) -> str | None:
        """The JSON text stored under ``key``, or ``None``."""

    @abc.abstractmethod
    def put(
        self,
        namespace: str,
        key: str,
        value: str,
        *,
        if_absent: bool = False,
        fence: tuple[str, str] | None = None,
        notify: bool = True,
        now_or_never: bool = False,
    ) -> bool:
        """Store ``value`` (JSON text) under ``key``, in one atomic step; returns True when written.

        ``if_absent``: write only when ``key`` is not stored yet; return False (and write nothing)
        when it is. ``fence=(lock_name, holder)``: write only while ``holder`` holds that lock, else
        raise :class:`LockLost`. ``notify`` (default): wake :meth:`watch` waiters on ``namespace`` and
        keep the key in :meth:`items` write order; ``notify=False`` is a plain record write (one
        ``HSET``/``HSETNX`` on Redis) for namespaces nobody watches, listed after the ordered keys.

        ``now_or_never``: the write takes effect while this call waits for it, or never. A call that
        raises (a timeout, an unreachable server) may still have written -- if the server ran the write
        and its reply was lost -- but a write that reaches the server after the call gave up is refused
        there, and :meth:`revoke` takes back either. For writes whose failure rolls something back
        (a transaction's commit): Redis can run a command long after the client timed out on it (a
        stalled server runs what was queued on its sockets when it resumes).
        """

    @abc.abstractmethod
    def delete(self, namespace: str, key: str) -> bool:
        """Delete ``key``; True when it existed."""

    @abc.abstractmethod
    def revoke(self, namespace: str, key: str, value: str) -> bool:
        """Take back a :meth:`put` of ``value`` under ``key`` whose outcome its caller does not know (the call
        raised) or no longer wants (a transaction rolling back); True when ``key`` held ``value`` and was deleted.

        Compare-and-delete: ``key`` is deleted only while it holds exactly ``value`` (another writer's value
        stays). It also settles a ``now_or_never`` put of that value still on its way: on Redis it is refused when
        it arrives (for a day), so the order in which the two reach the server does not matter. Safe to repeat,
        and harmless if it itself arrives late.
        """

    @abc.abstractmethod
    def items(self, namespace: str, prefix: str = "") -> list[StoreItem]:
        """The values of ``namespace`` whose key starts with ``prefix``, oldest write first."""

    @abc.abstractmethod
    def watch(self, namespace: str) -> Watch:
        """Start watching ``namespace`` for writes; see :class:`Watch`. Close it (``with``) when done."""

    # --- locks ----------------------------------------------------------------------------------
    @abc.abstractmethod
    def try_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        """Take lock ``name`` for ``holder`` for ``lease_seconds`` if it is free, expired or already
        ``holder``'s (then the lease is renewed). One round trip; never blocks."""

    @abc.abstractmethod
    def renew_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        """Extend ``holder``'s lease on ``name``; False when ``holder`` no longer holds it."""

    @abc.abstractmethod
    def release_lock(self, name: str, holder: str) -> bool:
        """Release ``name`` if ``holder`` holds it; True when it did."""

    @abc.abstractmethod
    def lock_holder(self, name: str) -> str | None:
        """Who holds ``name`` right now (``None`` when free or expired)."""

    def acquire_lock(self, name: str, holder: str, lease_seconds: float, wait_seconds: float) -> None:
        """Take lock ``name``, waiting at most ``wait_seconds`` for the current holder to release it
        (or for its lease to expire); raise :class:`LockTimeout` after that.

        Uncontended, this is one round trip (:meth:`try_lock`). Contended, it retries with a short
        backoff (from 5 ms up to 100 ms) until the deadline.
        """
        import time

        if lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}.")
        deadline = time.monotonic() + max(wait_seconds, 0.0)
        delay = 0.005
        while True:
            if self.try_lock(name, holder, lease_seconds):
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                other = self.lock_holder(name)
                raise LockTimeout(
                    f"Lock {name!r} on {self.display_url} is held by {other or 'another holder'}; gave up after "
                    f"{wait_seconds:g}s. Wait longer (lock_wait_seconds / OTELFLOW_LOCK_WAIT_SECONDS) or find the "
                    "holder; a crashed holder frees it when its lease expires."
                )
            time.sleep(min(delay, remaining))  # bounded by the deadline above
            delay = min(delay * 2, 0.1)

    # --- counted slots (global concurrency and rate limits) -------------------------------------------------
    # A limit is a JSON value in ``namespace`` under its name: {"limit": int, "active": bool,
    # "slot_decay_per_second": float, ...} (written with :meth:`put`). Slots are counted per (namespace, name).
    @abc.abstractmethod
    def try_acquire_slots(
        self,
        names: list[str],
        occupy: int,
        holder: str,
        lease_seconds: float,
        *,
        namespace: str,
        mode: str = "concurrency",
    ) -> SlotGrant:
        """Take ``occupy`` slots on every active limit in ``names`` -- all or none, in one atomic step; never blocks.

        Names without a limit record, or whose limit is inactive, limit nothing. ``mode="concurrency"``: the slots
        are ``holder``'s until :meth:`release_slots` or until the lease (``lease_seconds``, renewed with
        :meth:`renew_slots`) runs out; taking them again as the same holder renews them. ``mode="rate_limit"``:
        the slots have no holder and free themselves at the limit's ``slot_decay_per_second``.
        Raises :class:`SlotRequestError` (nothing taken) when ``occupy`` exceeds a limit or a rate limit names a
        limit without decay.
        """

    @abc.abstractmethod
    def renew_slots(self, names: list[str], holder: str, lease_seconds: float, *, namespace: str) -> bool:
        """Extend ``holder``'s lease on its slots of ``names``; False when it holds none of them any more."""

    @abc.abstractmethod
    def release_slots(self, names: list[str], holder: str, *, namespace: str) -> int:
        """Give back ``holder``'s slots on ``names`` (decaying rate-limit slots are not released); how many
        limits it held slots on."""

    @abc.abstractmethod
    def slot_usage(self, name: str, *, namespace: str) -> SlotUsage:
        """Slots in use on ``name`` right now (expired leases and decayed slots left out)."""

    @abc.abstractmethod
    def reset_slots(self, name: str, *, namespace: str) -> None:
        """Forget every slot taken on ``name`` (held and decaying): the limit starts empty."""

    def close(self) -> None:  # noqa: B027 - optional for backends without connections
        """Release connections; the store must not be used afterwards."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_url!r})"


class Watch(abc.ABC):
    """Waits for writes to one namespace without missing one that lands between a read and the wait.

    Create it *before* reading (``store.watch(ns)``), read, then :meth:`wait` if nothing was there::

        with store.watch(ns) as watch:
            while not (found := read()):
                watch.wait(remaining)
    """

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @abc.abstractmethod
    def wait(self, timeout: float) -> bool:
        """Block until something may have been written to the namespace since the watch started or the
        last wait returned (True; possibly spurious: re-read) or ``timeout`` seconds pass (False)."""

    def close(self) -> None:  # noqa: B027 - optional for watches without resources
        """Stop watching."""


T = TypeVar("T")

_log = logging.getLogger("otelflow.stores")


def wait_for(
    store: Store,
    namespace: str,
    check: Callable[[], T | None],
    timeout: float | None,
    poll_interval: float,
    before_wait: Callable[[], None] | None = None,
) -> T | None:
    """Call ``check()`` until it returns something (returned) or ``timeout`` seconds pass (``None``).

    Between checks, wait for a write to ``namespace`` (pushed by Redis, noticed within 25 ms by sqlite), at most
    ``poll_interval`` seconds. ``before_wait`` runs before each wait (the input API marks the run Paused there).
    A wait that has reached the store once survives an outage (a Redis restart): it logs a warning and keeps
    trying until the timeout; a store that is unreachable from the start raises :class:`StoreUnavailable` at once.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    reached = False
    warned = False
    while True:
        try:
            with store.watch(namespace) as watch:
                while True:
                    found = check()
                    reached = True
                    if found is not None:
                        return found
                    remaining = None if deadline is None else deadline - time.monotonic()
                    if remaining is not None and remaining <= 0:
                        return None
                    if before_wait is not None:
                        before_wait()
                    watch.wait(poll_interval if remaining is None else min(poll_interval, remaining))
        except StoreUnavailable as exc:
            remaining = None if deadline is None else deadline - time.monotonic()
            if not reached or (remaining is not None and remaining <= 0):
                raise
            if not warned:
                _log.warning("Store unreachable while waiting (%s); retrying until the wait times out.", exc)
                warned = True
            time.sleep(_OUTAGE_RETRY_S if remaining is None else min(_OUTAGE_RETRY_S, remaining))


_OUTAGE_RETRY_S = 0.5

_stores: dict[str, Store] = {}
_default_url: tuple[object, str] | None = None
_stores_lock = threading.Lock()


def _open(url: str) -> Store:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "sqlite":
        from otelflow.stores.sqlite import SqliteStore

        return SqliteStore(url)
    if scheme in ("redis", "rediss", "unix"):
        from otelflow.stores.redis import RedisStore

        return RedisStore(url)
    raise StoreError(
        f"Unsupported store URL {redact_url(url)!r}: use sqlite:///path/to/file.sqlite3, redis://host:port/db "
        "or rediss://user:password@host:port/db (set OTELFLOW_STORE_URL)."
    )


def get_store(url: str | Store | None = None) -> Store:
    """The store for ``url`` (default: ``OTELFLOW_STORE_URL``, else ``$OTELFLOW_HOME/store.sqlite3``).

    One store object per URL per process, shared by threads. A :class:`Store` passed in is returned as is.
    """
    if isinstance(url, Store):
        return url
    if url is None:
        from otelflow.settings import get_settings

        settings = get_settings()
        memo = _default_url
        if memo is not None and memo[0] is settings:
            url = memo[1]
        else:  # building the default URL (paths) costs more than a read: once per settings object
            url = settings.store_url_or_default
            globals()["_default_url"] = (settings, url)
    store = _stores.get(url)
    if store is None:
        with _stores_lock:
            store = _stores.get(url)
            if store is None:
                store = _stores[url] = _open(url)
    return store


def reset_stores() -> None:
    """Close and forget every store opened by :func:`get_store` (tests, or after changing settings)."""
    with _stores_lock:
        stores = list(_stores.values())
        _stores.clear()
    for store in stores:
        store.close()


def _too_many_error(names: tuple[str, ...]) -> SlotRequestError:
    return SlotRequestError("Slots requested is greater than the limit", "too_many", names)


def _no_decay_error(names: tuple[str, ...]) -> SlotRequestError:
    listed = ", ".join(repr(n) for n in names)
    return SlotRequestError(
        "Only concurrency limits with slot decay can be used for rate limiting. The following limits do not have "
        f"a decay configured: {listed}",
        "no_decay",
        names,
    )


def _check_slot_request(names: list[str], occupy: int, holder: str, lease_seconds: float, mode: str) -> None:
    if mode not in SLOT_MODES:
        raise ValueError(f"mode must be one of {SLOT_MODES}, got {mode!r}.")
    if occupy <= 0:
        raise ValueError(f"occupy must be > 0, got {occupy}.")
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be > 0, got {lease_seconds}.")
    _check_names(holder, *names)


def _check_names(*names: str) -> None:
    for name in names:
        if not isinstance(name, str) or not name:
            raise ValueError(f"Store keys and namespaces must be non-empty strings, got {name!r}.")


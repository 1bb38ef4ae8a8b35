"""What the sync and async forms share: errors, the acquisition loop, lease renewal and telemetry.

The loop is a generator that yields how long to sleep before the next attempt, so ``sync.py`` drives it with
``time.sleep`` and ``asyncio.py`` with ``asyncio.sleep`` -- one implementation of the rules.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Generator, Mapping
from typing import Any

from otelflow.stores import SlotGrant, SlotRequestError, Store, StoreError, get_store
from otelflow.stores.leases import Lease, keeper

__all__ = [
    "GCL_NAMESPACE",
    "AcquireConcurrencySlotTimeoutError",
    "ConcurrencySlotAcquisitionError",
    "Held",
    "acquire_steps",
    "holder_id",
    "normalize_names",
    "release",
]

#: Store namespace of every global limit (tag limits too, named ``tag:<tag>``, as Prefect 3 does).
GCL_NAMESPACE = "gcl"

_BACKOFF_START_S = 0.005
_BACKOFF_MAX_S = 0.1

_log = logging.getLogger("otelflow.concurrency")


class ConcurrencySlotAcquisitionError(Exception):
    """Slots cannot be acquired: a strict request for limits that do not exist, more slots than a limit has, a
    rate limit on a limit without decay, ``max_retries`` used up, or the store failed (Prefect's name)."""


class AcquireConcurrencySlotTimeoutError(TimeoutError):
    """The slots were not free within ``timeout_seconds`` (Prefect's name; a :class:`TimeoutError`)."""


def normalize_names(names: str | list[str] | None) -> list[str]:
    """``names`` as a list without duplicates (order kept); a single name becomes a one-item list."""
    if not names:
        return []
    if isinstance(names, str):
        return [names]
    return list(dict.fromkeys(names))


def holder_id(holder: object = None) -> str:
    """A unique store holder id for one acquisition, prefixed by who holds it when known.

    ``holder`` may be Prefect's ``ConcurrencyLeaseHolder`` (``type``/``id`` attributes), a mapping with
    ``type``/``id`` keys, or a string; the id stays unique so nested acquisitions by one holder never merge.
    """
    suffix = uuid.uuid4().hex
    if holder is None:
        return suffix
    if isinstance(holder, str):
        return f"{holder}/{suffix}"
    if isinstance(holder, Mapping):
        kind, ident = holder.get("type"), holder.get("id")
    else:
        kind, ident = getattr(holder, "type", None), getattr(holder, "id", None)
    return f"{kind}:{ident}/{suffix}" if kind or ident else suffix


class Held(Lease):
    """Slots taken by one acquisition; renewed in the background until :func:`release`. While the process lives its
    slots stay held; when it dies (even SIGKILL) renewal stops and the slots come back when the lease runs out."""

    __slots__ = ("grant", "holder", "names", "namespace", "store")

    def __init__(self, store: Store, namespace: str, grant: SlotGrant, holder: str, lease_seconds: float) -> None:
        super().__init__(lease_seconds)
        self.store, self.namespace, self.grant, self.holder = store, namespace, grant, holder
        self.names = list(grant.limited)

    def renew(self) -> bool:
        try:
            renewed = self.store.renew_slots(self.names, self.holder, self.lease_seconds, namespace=self.namespace)
        except StoreError as exc:
            _log.warning("Could not renew concurrency slots on %r (%s); retrying.", self.names, exc)
            return True  # a blip: the lease is longer than the renewal period
        if not renewed:
            _log.warning("Lost the lease on concurrency slots %r (held by %s): the lease expired before it was "
                         "renewed, so others may now use these slots.", self.names, self.holder)
        return renewed




def _missing(names: list[str], strict: bool, log_missing: bool) -> None:
    if strict:
        raise ConcurrencySlotAcquisitionError(f"Concurrency limits {names!r} must be created before acquiring slots")
    if not log_missing:
        return
    logger: logging.Logger | logging.LoggerAdapter[Any] = _log
    try:
        from otelflow.logging.loggers import get_run_logger

        logger = get_run_logger()
    except Exception:  # outside a run: the module logger
        pass
    logger.warning(f"Concurrency limits {names!r} do not exist - skipping acquisition.")


def acquire_steps(
    names: list[str],
    occupy: int,
    *,
    mode: str,
    timeout_seconds: float | None,
    max_retries: int | None,
    lease_seconds: float,
    strict: bool,
    holder: str,
    store: Store | str | None,
    namespace: str = GCL_NAMESPACE,
    log_missing: bool = True,
) -> Generator[float, None, Held | None]:
    """Try until the slots are taken; yields seconds to sleep between attempts (5 ms doubling to 100 ms, with
    jitter). Returns the :class:`Held` slots (``None`` when no active limit applies) and adds the event to the
    current span."""
    if occupy <= 0:
        raise ConcurrencySlotAcquisitionError(
            f"Unable to acquire concurrency slots on {names!r}: occupy must be greater than 0, got {occupy}")
    resolved = get_store(store)
    start = time.monotonic()
    deadline = None if timeout_seconds is None else start + timeout_seconds
    retries = max_retries
    delay = _BACKOFF_START_S
    while True:
        try:
            grant = resolved.try_acquire_slots(names, occupy, holder, lease_seconds, namespace=namespace, mode=mode)
        except SlotRequestError as exc:
            raise ConcurrencySlotAcquisitionError(f"Unable to acquire concurrency slots on {names!r}: {exc}") from exc
        except StoreError as exc:
            raise ConcurrencySlotAcquisitionError(f"Unable to acquire concurrency slots on {names!r}: {exc}") from exc
        if not grant.found:
            _missing(names, strict, log_missing)
            return None
        if grant.acquired:
            break
        if retries is not None:
            if retries <= 0:
                raise ConcurrencySlotAcquisitionError(
                    f"Unable to acquire concurrency slots on {names!r}: Locked (no free slots; max_retries="
                    f"{max_retries} used up)")
            retries -= 1
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            raise AcquireConcurrencySlotTimeoutError(
                f"Attempt to acquire concurrency slots timed out after {timeout_seconds} second(s)")
        pause = delay * random.uniform(0.8, 1.2)
        yield pause if deadline is None else max(0.0, min(pause, deadline - now))
        delay = min(delay * 2, _BACKOFF_MAX_S)
    waited = time.monotonic() - start
    if grant.limited:
        _record(names, occupy, waited, mode)
    if not grant.limited or mode == "rate_limit":
        return None
    held = Held(resolved, namespace, grant, holder, lease_seconds)
    keeper.add(held)
    return held


def wait_sync(steps: Generator[float, None, Held | None]) -> Held | None:
    """Drive :func:`acquire_steps` on this thread: sleep each wait it asks for; return what it holds."""
    try:
        while True:
            time.sleep(next(steps))
    except StopIteration as done:
        result: Held | None = done.value
        return result


async def wait_async(steps: Generator[float, None, Held | None]) -> Held | None:
    """Drive :func:`acquire_steps` on the event loop: ``await`` each wait it asks for; return what it holds."""
    import asyncio

    try:
        while True:
            await asyncio.sleep(next(steps))
    except StopIteration as done:
        result: Held | None = done.value
        return result


def release(held: Held | None) -> bool:
    """Stop renewing and give the slots back; False when the lease had been lost meanwhile."""
    if held is None:
        return True
    keeper.remove(held)
    try:
        held.store.release_slots(held.names, held.holder, namespace=held.namespace)
    except StoreError as exc:
        _log.warning("Could not release concurrency slots on %r (%s); they come back when their lease "
                     "(%gs) expires.", held.names, exc, held.lease_seconds)
    return not held.lost


def _record(names: list[str], occupy: int, waited: float, mode: str) -> None:
    from opentelemetry import trace

    from otelflow import semconv

    span = trace.get_current_span()
    if span.is_recording():
        span.add_event(semconv.EVENT_CONCURRENCY_ACQUIRED, {
            semconv.CONCURRENCY_NAMES: list(names),
            semconv.CONCURRENCY_OCCUPY: occupy,
            semconv.CONCURRENCY_WAIT_SECONDS: round(waited, 6),
            semconv.CONCURRENCY_MODE: mode,
        })

"""Global concurrency and rate limits, synchronous forms (``prefect.concurrency.sync``).

Example::

    from otelflow.concurrency.sync import concurrency, rate_limit

    with concurrency("database", occupy=1):     # at most N of these blocks at once, across processes
        run_query()

    rate_limit("external-api")                  # at most N calls, then one per 1/slot_decay_per_second
    call_api()

Create the limits first: ``otelflow gcl create database --limit 3`` (or :mod:`otelflow.concurrency.limits`).
"""

from __future__ import annotations

from collections.abc import Generator
from contextlib import contextmanager
from typing import Any

from otelflow.concurrency._core import (
    ConcurrencySlotAcquisitionError,
    acquire_steps,
    holder_id,
    normalize_names,
    release,
    wait_sync,
)
from otelflow.stores import Store

__all__ = ["concurrency", "rate_limit"]


@contextmanager
def concurrency(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    max_retries: int | None = None,
    lease_duration: float = 300,
    strict: bool = False,
    holder: Any = None,
    raise_on_lease_renewal_failure: bool | None = None,
    *,
    store: Store | str | None = None,
) -> Generator[None, None, None]:
    """Hold ``occupy`` slots of every limit in ``names`` for the ``with`` block (all at once, or none).

    Args:
        names: the limit names (one string or a list).
        occupy: slots taken on each limit.
        timeout_seconds: give up after this long with :class:`AcquireConcurrencySlotTimeoutError`
            (a ``TimeoutError``); ``None`` waits for ever.
        max_retries: give up with :class:`ConcurrencySlotAcquisitionError` after this many failed retries
            (retries come every 5-100 ms while the limit is full).
        lease_duration: seconds the slots stay held without renewal. A background thread renews them every
            third of it while this process lives; a process that dies (even SIGKILL) gives them back when the
            lease runs out.
        strict: raise :class:`ConcurrencySlotAcquisitionError` when none of ``names`` exists (else a warning
            is logged and the block runs unlimited).
        holder: who holds the slots (Prefect's ``ConcurrencyLeaseHolder``, a ``{"type", "id"}`` mapping or a
            string), shown by ``otelflow gcl inspect``.
        raise_on_lease_renewal_failure: when the lease was lost while the block ran, raise
            :class:`ConcurrencySlotAcquisitionError` on exit (default: follows ``strict``).
        store: the store holding the limits (default: ``OTELFLOW_STORE_URL``).

    Inactive limits and names without a limit never block. The time spent waiting is recorded on the current
    span (event ``concurrency.acquired``, attribute ``otelflow.concurrency.wait_seconds``).
    """
    wanted = normalize_names(names)
    if not wanted:
        yield
        return
    held = wait_sync(acquire_steps(wanted, occupy, mode="concurrency", timeout_seconds=timeout_seconds,
                              max_retries=max_retries, lease_seconds=lease_duration, strict=strict,
                              holder=holder_id(holder), store=store))
    kept = True
    try:
        yield
    finally:
        kept = release(held)
    if not kept and (strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure):
        raise ConcurrencySlotAcquisitionError(
            f"The lease on concurrency slots {wanted!r} was lost while they were held (renewal failed).")


def rate_limit(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    store: Store | str | None = None,
) -> None:
    """Block until ``occupy`` slots of every limit in ``names`` are free, and take them; they free themselves at
    each limit's ``slot_decay_per_second`` (nothing to release). Every named limit that exists must have a decay,
    else :class:`ConcurrencySlotAcquisitionError`. ``timeout_seconds`` and ``strict`` as in :func:`concurrency`.
    """
    wanted = normalize_names(names)
    if not wanted:
        return
    wait_sync(acquire_steps(wanted, occupy, mode="rate_limit", timeout_seconds=timeout_seconds, max_retries=None,
                       lease_seconds=1.0, strict=strict, holder=holder_id(None), store=store,
                       log_missing=True))

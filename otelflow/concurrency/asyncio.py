"""Global concurrency and rate limits, async forms (``prefect.concurrency.asyncio``).

Example::

    from otelflow.concurrency.asyncio import concurrency, rate_limit

    async def fetch(url):
        await rate_limit("external-api")
        async with concurrency("database", occupy=1, timeout_seconds=30):
            ...

Waiting sleeps with ``asyncio.sleep`` (the loop stays free); each attempt is one short store call
(a sqlite transaction or one Redis script) made on the loop.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from typing import Any

from otelflow.concurrency._core import (
    AcquireConcurrencySlotTimeoutError,
    ConcurrencySlotAcquisitionError,
    acquire_steps,
    holder_id,
    normalize_names,
    release,
    wait_async,
)
from otelflow.stores import Store

__all__ = [
    "AcquireConcurrencySlotTimeoutError",
    "ConcurrencySlotAcquisitionError",
    "concurrency",
    "rate_limit",
]


@asynccontextmanager
async def concurrency(
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
) -> AsyncGenerator[None, None]:
    """``async with`` form of :func:`otelflow.concurrency.sync.concurrency` (same arguments and errors)."""
    wanted = normalize_names(names)
    if not wanted:
        yield
        return
    held = await wait_async(acquire_steps(wanted, occupy, mode="concurrency", timeout_seconds=timeout_seconds,
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


async def rate_limit(
    names: str | list[str],
    occupy: int = 1,
    timeout_seconds: float | None = None,
    strict: bool = False,
    *,
    store: Store | str | None = None,
) -> None:
    """``await`` form of :func:`otelflow.concurrency.sync.rate_limit` (same arguments and errors)."""
    wanted = normalize_names(names)
    if not wanted:
        return
    await wait_async(acquire_steps(wanted, occupy, mode="rate_limit", timeout_seconds=timeout_seconds, max_retries=None,
                             lease_seconds=1.0, strict=strict, holder=holder_id(None), store=store))

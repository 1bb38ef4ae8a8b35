"""Global concurrency and rate limits, local-first (Prefect's ``prefect.concurrency``), kept in the otelflow store.

- :func:`otelflow.concurrency.sync.concurrency` / :func:`~otelflow.concurrency.sync.rate_limit` (sync) and the
  same names in :mod:`otelflow.concurrency.asyncio` (async);
- :mod:`otelflow.concurrency.limits`: create, read, update, enable, disable, delete limits; task-run tag limits;
- CLI: ``otelflow gcl ...`` and ``otelflow concurrency-limit ...``.

See ``docs/concurrency.md``.
"""

from __future__ import annotations

from otelflow.concurrency._core import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError

__all__ = ["AcquireConcurrencySlotTimeoutError", "ConcurrencySlotAcquisitionError"]

"""Prefect's ``MemoryLockManager``: here, locks in the configured store (see :mod:`otelflow.locking`)."""

from __future__ import annotations

from otelflow.locking.store import StoreLockManager

__all__ = ["MemoryLockManager"]


class MemoryLockManager(StoreLockManager):
    """Locks in the configured store: they hold across the threads of a process, and across its processes too."""

    def __init__(self) -> None:
        super().__init__(None)

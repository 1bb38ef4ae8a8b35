"""A lock manager over an :mod:`otelflow.stores` store, with Prefect's ``LockManager`` methods."""

from __future__ import annotations

import time

from otelflow.stores import Store, get_store

__all__ = ["StoreLockManager"]

_DEFAULT_HOLD_SECONDS = 30.0


class StoreLockManager:
    """Leased locks in a store: ``StoreLockManager(url_or_store=None)`` (``None``: the configured store)."""

    def __init__(self, url_or_store: str | Store | None = None) -> None:
        self._target = url_or_store

    def store(self) -> Store:
        """The store holding the locks."""
        return get_store(self._target)

    def acquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                     hold_timeout: float | None = None) -> bool:
        """Take ``key`` for ``holder`` (waiting at most ``acquire_timeout`` seconds; ``None``: as long as it takes),
        leased for ``hold_timeout`` seconds. True when taken."""
        store = self.store()
        lease = hold_timeout if hold_timeout is not None else _DEFAULT_HOLD_SECONDS
        deadline = None if acquire_timeout is None else time.monotonic() + acquire_timeout
        delay = 0.005
        while not store.try_lock(key, holder, lease):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(delay if deadline is None else max(0.0, min(delay, deadline - time.monotonic())))
            delay = min(delay * 2, 0.1)
        return True

    async def aacquire_lock(self, key: str, holder: str, acquire_timeout: float | None = None,
                            hold_timeout: float | None = None) -> bool:
        """:meth:`acquire_lock` off the event loop."""
        import asyncio

        return await asyncio.to_thread(self.acquire_lock, key, holder, acquire_timeout, hold_timeout)

    def release_lock(self, key: str, holder: str) -> None:
        """Release ``key`` if ``holder`` holds it; ``ValueError`` (Prefect's) if it does not."""
        if not self.store().release_lock(key, holder):
            raise ValueError(f"No lock held by {holder} for transaction with key {key}")

    def is_locked(self, key: str) -> bool:
        """True while someone holds ``key``."""
        return self.store().lock_holder(key) is not None

    def is_lock_holder(self, key: str, holder: str) -> bool:
        """True when ``holder`` holds ``key``."""
        return self.store().lock_holder(key) == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """Wait until ``key`` is free (at most ``timeout`` seconds); True when it is."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        """:meth:`wait_for_lock` off the event loop."""
        import asyncio

        return await asyncio.to_thread(self.wait_for_lock, key, timeout)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.store().display_url!r})"

"""Leases on store locks and slots, renewed from one background thread while their holder lives.

A lock (a transaction's, a cache key's) or a set of concurrency slots is held for ``lease_seconds`` and renewed
every third of that; when the process dies, even by SIGKILL, renewal stops and the store frees it when the lease
runs out. Each kind of lease says how it is renewed (:meth:`Lease.renew`); :data:`keeper` renews them all.
"""

from __future__ import annotations

import abc
import threading
import time

__all__ = ["Lease", "LeaseKeeper", "keeper"]


class Lease(abc.ABC):
    """Something held in a store for ``lease_seconds`` at a time. ``deadline``: a monotonic time after which it is
    left to run out (a transaction's timeout); ``lost``: set when a renewal found it held by someone else."""

    def __init__(self, lease_seconds: float, deadline: float | None = None) -> None:
        self.lease_seconds = lease_seconds
        self.deadline = deadline
        self.next_due = time.monotonic() + lease_seconds / 3
        self.lost = False

    @abc.abstractmethod
    def renew(self) -> bool:
        """Extend the lease; False when it is no longer held (the keeper then drops it, marked lost). A passing
        store error should return True: the lease is longer than the renewal period, the next try may work."""


class LeaseKeeper:
    """Renews every added lease every third of its length, from one daemon thread started when first needed."""

    def __init__(self) -> None:
        self._leases: set[Lease] = set()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def add(self, lease: Lease) -> None:
        """Keep ``lease`` renewed until :meth:`remove` (or until it is lost or past its deadline)."""
        with self._cond:
            self._leases.add(lease)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="otelflow-lease-keeper", daemon=True)
                self._thread.start()
            self._cond.notify()

    def remove(self, lease: Lease) -> None:
        """Stop renewing ``lease``."""
        with self._cond:
            self._leases.discard(lease)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                due = [lease for lease in self._leases if lease.next_due <= now]
                if not due:
                    wait = min((lease.next_due for lease in self._leases), default=now + 60) - now
                    self._cond.wait(max(wait, 0.001))
                    continue
            for lease in due:
                if lease.deadline is not None and now >= lease.deadline:
                    self.remove(lease)  # past its holder's deadline: let the lease run out
                    continue
                if not lease.renew():
                    lease.lost = True
                    self.remove(lease)
                lease.next_due = time.monotonic() + lease.lease_seconds / 3


#: The process's one keeper (transaction locks, cache-key locks, concurrency slots).
keeper = LeaseKeeper()

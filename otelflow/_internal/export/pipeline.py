"""The batching stage of the export pipeline: producers append, one worker thread hands batches to a route.

Why not the SDK's ``BatchSpanProcessor``/``BatchLogRecordProcessor``: when a producer outruns the exporter they
drop the newest items as soon as the queue is full, and a batch the exporter cannot deliver within its own
retry window is gone. Here:

- **producers never wait on the network.** :meth:`BatchProcessor.emit` appends to a bounded in-memory queue;
  only when it is full does a producer wait, at most ``max_block_seconds``, for room (then the item is dropped
  and counted). In a child process (forked, or a ``multiprocessing`` worker) each item is written to disk as it
  is produced instead: such a process may end by ``os._exit``, ``Pool.terminate()`` or SIGKILL, with no exit hook.
- **the worker** waits for a full batch or the schedule delay, splits batches under the receiver's size limit and
  hands them to its **route** (:mod:`otelflow._internal.export.routes`): the :class:`~.routes.DirectRoute`
  exports them itself (the spool, the console); the :class:`~.routes.OutageRoute` sends them over OTLP from a
  sender thread and keeps on disk whatever the collector cannot take, re-sending it when it answers.
- **every item is accounted for** in :class:`ProcessorStats`: at every moment it is exported, on disk, dropped
  with its first real cause, or in memory on its way; ``describe()["unaccounted"]`` is always 0.

The processor moves through explicit phases (:class:`Phase`): RUNNING, then STOPPING from ``shutdown`` until the
worker is done or the deadline passes, then STOPPED. Like the SDK's, the worker re-arms after ``fork``.
"""

from __future__ import annotations

import collections
import enum
import os
import sys
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

if TYPE_CHECKING:
    from otelflow._internal.export.routes import Route

__all__ = ["BatchProcessor", "ExportError", "Phase", "ProcessorStats", "in_multiprocessing_child"]

T = TypeVar("T")


class ExportError(Exception):
    """Raised by an ``export`` callable to say why a batch was not delivered.

    ``too_large``: the receiver refused the request for its size (the processor halves the batch and retries).
    """

    def __init__(self, cause: str, *, too_large: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.too_large = too_large


class Phase(enum.Enum):
    """Where a processor is in its life."""

    RUNNING = "running"
    STOPPING = "stopping"  # shutdown() was called: deliver what the deadline allows, keep the rest on disk
    STOPPED = "stopped"  # the worker has finished (or the deadline passed); emit drops, counted


@dataclass(slots=True)
class ProcessorStats:
    """Counters of one processor. Each item ends up counted once in ``exported``, ``on_disk`` or ``dropped``."""

    signal: str
    queued: int = 0
    exported: int = 0  # delivered (including re-sent from the buffer)
    dropped: int = 0
    buffered: int = 0  # ever written to the outage buffer
    resent: int = 0  # delivered from the outage buffer
    failed_exports: int = 0
    last_error: str | None = None
    first_error: str | None = None
    drop_cause: str | None = None  # the first cause of a drop


def in_multiprocessing_child() -> bool:
    """True in a process started by ``multiprocessing`` (a Pool worker, a Process), whatever its start method."""
    module = sys.modules.get("multiprocessing")
    if module is None:
        return False
    try:
        return module.parent_process() is not None
    except Exception:
        return False


class BatchProcessor(Generic[T]):
    """Queue items; a worker thread hands them in batches to a route that calls ``export(batch) -> bool``.

    ``export`` returns True on success, False (or raises, :class:`ExportError` to give the cause) on failure.
    ``buffer`` (an :class:`~otelflow._internal.export.outage.OutageBuffer`) chooses the outage route (a sender
    thread, the on-disk buffer, probes and back-off from ``retry_initial_seconds`` to ``retry_max_seconds``,
    ``on_unhealthy(cause, disk_refusal)`` said once, ``reachable()`` a quick check before a probe); without it
    the direct route is used. ``split(batch) -> [batch, ...]`` keeps requests under the receiver's size limit.
    """

    def __init__(
        self,
        export: Callable[[Sequence[T]], bool],
        shutdown_exporter: Callable[[], None],
        *,
        signal: str,
        max_queue_size: int = 8192,
        max_export_batch_size: int = 512,
        schedule_delay_seconds: float = 1.0,
        max_block_seconds: float = 2.0,
        buffer: Any = None,
        split: Callable[[list[T]], list[list[T]]] | None = None,
        retry_initial_seconds: float = 1.0,
        retry_max_seconds: float = 5.0,
        on_unhealthy: Callable[[str, str | None], None] | None = None,
        reachable: Callable[[], str | None] | None = None,
    ) -> None:
        from otelflow._internal.export.routes import DirectRoute, OutageRoute

        self._export_fn = export
        self._shutdown_exporter = shutdown_exporter
        self.max_queue_size = max(1, max_queue_size)
        self.batch_size = max(1, min(max_export_batch_size, self.max_queue_size))
        self.delay = schedule_delay_seconds
        self._max_block = max_block_seconds
        self.signal = signal
        self._split = split
        self.phase = Phase.RUNNING
        self.deadline: float | None = None
        self.spill_at: float | None = None  # from then on, while stopping, everything left goes to disk
        self._route_factory: Callable[[], Route[T]]
        if buffer is None:
            self._route_factory = lambda: DirectRoute(self)
        else:
            self._route_factory = lambda: OutageRoute(
                self, buffer, retry_initial=retry_initial_seconds, retry_max=retry_max_seconds,
                on_unhealthy=on_unhealthy, reachable=reachable)
        self._init_thread_state()
        if hasattr(os, "register_at_fork"):
            weak = weakref.WeakMethod(self._init_thread_state)

            def _after_fork_in_child() -> None:
                method = weak()
                if method is not None:
                    method()

            os.register_at_fork(after_in_child=_after_fork_in_child)

    def _init_thread_state(self) -> None:
        # After fork the parent's queue belongs to the parent (it exports it); the child starts empty.
        forked = getattr(self, "_pid", os.getpid()) != os.getpid()
        old_route = getattr(self, "route", None)
        if old_route is not None and forked:
            old_route.after_fork()  # the parent's batches on disk stay the parent's
        # A child process may end by os._exit, Pool.terminate's SIGTERM or SIGKILL, with no exit hook: each item
        # goes to disk as it is produced (see emit).
        self.write_through = forked or in_multiprocessing_child()
        self.stats = ProcessorStats(self.signal)
        self.queue: collections.deque[T] = collections.deque()
        self.front: collections.deque[list[T]] = collections.deque()  # halves of a too-large batch, first
        self.cond = threading.Condition(threading.Lock())
        self._direct = threading.Lock()
        self._flush_requests = 0
        self._flushed = 0
        self._worker_waiting = False
        self._pid = os.getpid()
        self.route: Route[T] = self._route_factory()
        self.route.start()
        self._worker = threading.Thread(target=self._run, name=f"otelflow-export-{self.signal}", daemon=True)
        self._worker.start()

    # --- producer side ----------------------------------------------------------------------------------
    def emit(self, item: T) -> None:
        """Queue one item (called on the run's thread; fast path is an append)."""
        if self.phase is not Phase.RUNNING:
            self.drop(1, "emitted after shutdown")
            return
        if self.write_through:
            with self._direct:
                with self.cond:
                    self.stats.queued += 1
                self.route.write_now(item)
            return
        queue = self.queue
        if len(queue) < self.max_queue_size:
            queue.append(item)
            self.stats.queued += 1
            if len(queue) >= self.batch_size and self._worker_waiting:
                # The worker is idle (waiting out its delay): wake it for a full batch.
                with self.cond:
                    self._worker_waiting = False
                    self.cond.notify_all()
            return
        self._emit_full(item)

    def _emit_full(self, item: T) -> None:
        with self.cond:
            self.cond.notify_all()
            deadline = time.monotonic() + self._max_block
            while (len(self.queue) >= self.max_queue_size and self.phase is Phase.RUNNING
                   and self.route.makes_room()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self.route.stalled()  # no room for max_block seconds: the next producers drop at once
                    break
                self.cond.wait(remaining)
            if len(self.queue) >= self.max_queue_size or self.phase is not Phase.RUNNING:
                self.drop_locked(1, "export queue full" if self.phase is Phase.RUNNING else "emitted after shutdown")
                return
            self.queue.append(item)
            self.stats.queued += 1

    # --- accounting (the routes use these too) ------------------------------------------------------------
    def drop(self, count: int, cause: str) -> None:
        """Count ``count`` items as dropped because of ``cause`` (the first cause is kept)."""
        with self.cond:
            self.drop_locked(count, cause)

    def drop_locked(self, count: int, cause: str) -> None:
        """:meth:`drop`, with ``cond`` held."""
        if count <= 0:
            return
        self.stats.dropped += count
        if self.stats.drop_cause is None:
            self.stats.drop_cause = cause

    def failed_locked(self, error: str) -> None:
        """Count a failed export (with ``cond`` held)."""
        self.stats.failed_exports += 1
        self.stats.last_error = error
        if self.stats.first_error is None:
            self.stats.first_error = error

    # --- batches ----------------------------------------------------------------------------------------
    def take_batch(self) -> list[T]:
        """The next batch: a half of a too-large batch first, else up to ``batch_size`` queued items."""
        if self.front:
            return self.front.popleft()
        queue = self.queue
        count = min(self.batch_size, len(queue))
        return [queue.popleft() for _ in range(count)]

    def pieces(self, batch: list[T]) -> list[list[T]]:
        """``batch`` split under the receiver's size limit (one piece when there is no limit)."""
        if self._split is None or not batch:
            return [batch]
        try:
            return self._split(batch)
        except Exception:
            return [batch]

    def call_export(self, batch: list[T]) -> tuple[bool, str | None, bool]:
        """``(delivered, cause, too large)`` of one export call; never raises (instrumentation suppressed)."""
        token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        try:
            ok = bool(self._export_fn(batch))
            return ok, None if ok else "exporter reported failure", False
        except ExportError as exc:
            return False, exc.cause, exc.too_large
        except Exception as exc:  # an exporter bug must not kill the worker
            return False, f"{type(exc).__name__}: {exc}", False
        finally:
            detach(token)

    @property
    def pending(self) -> bool:
        """Items queued in memory (including halves of a too-large batch)."""
        return bool(self.queue or self.front)

    # --- the worker ---------------------------------------------------------------------------------------
    def _run(self) -> None:
        route = self.route
        while True:
            with self.cond:
                if self.phase is Phase.RUNNING and self._flush_requests == self._flushed:
                    timeout = route.idle_timeout()
                    if timeout is not None:
                        self._worker_waiting = True
                        self.cond.wait(timeout)
                        self._worker_waiting = False
                else:
                    route.wait_busy()
                flush_target = self._flush_requests
                stopping = self.phase is not Phase.RUNNING
            done = route.step(stopping)
            with self.cond:
                if done or not route.busy_locked():
                    self._flushed = max(self._flushed, flush_target)
                self.cond.notify_all()
            if stopping and (done or self.deadline_passed()):
                route.finish()
                return

    def deadline_passed(self) -> bool:
        """True once the shutdown deadline has passed."""
        return self.deadline is not None and time.monotonic() > self.deadline

    # --- control ----------------------------------------------------------------------------------------
    def force_flush(self, timeout_seconds: float = 30.0) -> bool:
        """Export everything queued so far; True if it was all delivered within the timeout.

        With an outage buffer, items the collector could not take (it is down) are written to disk and the flush
        returns False once they are there (not after the timeout). Items a burst spilled to disk while the
        collector is up are sent before the flush returns.
        """
        if self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout_seconds
        with self.cond:
            self._flush_requests += 1
            target = self._flush_requests
            self.cond.notify_all()
            while self._flushed < target and self._worker.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.cond.wait(remaining)
            return self.route.settled_locked()

    def shutdown(self, timeout_seconds: float = 30.0) -> None:
        """Flush what is queued (bounded by the timeout), stop the worker and shut the exporter down.

        With an outage buffer, the last part of the time budget is kept for writing what is left to disk.
        """
        if self.phase is not Phase.RUNNING:
            return
        now = time.monotonic()
        self.deadline = now + timeout_seconds
        self.spill_at = self.deadline - min(1.0, timeout_seconds / 4)
        with self.cond:
            self.phase = Phase.STOPPING
            self.cond.notify_all()
        self._worker.join(max(0.0, self.deadline - time.monotonic()))
        with self.cond:
            # Whatever the deadline left behind in memory (the worker could not even write it to disk) is lost:
            # count it, so it is reported rather than silently gone.
            left = len(self.queue) + sum(len(b) for b in self.front)
            self.queue.clear()
            self.front.clear()
            if not self._worker.is_alive():
                left += self.route.abandon_live_locked()
            self.drop_locked(left, self.stats.first_error or "shutdown deadline reached")
            self.phase = Phase.STOPPED
            self.cond.notify_all()
        self.route.close_books()
        self._stop_exporter(max(0.0, self.deadline - time.monotonic()))

    def _stop_exporter(self, timeout: float) -> None:
        # The exporter's shutdown also interrupts a request under way; bounded, as it may block.
        def stop() -> None:
            try:
                self._shutdown_exporter()
            except Exception as exc:
                with self.cond:
                    if self.stats.last_error is None:
                        self.stats.last_error = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=stop, name=f"otelflow-exporter-shutdown-{self.signal}", daemon=True)
        thread.start()
        thread.join(max(0.05, timeout))

    @property
    def worker_alive(self) -> bool:
        """True while the worker thread runs."""
        return self._worker.is_alive()

    @property
    def healthy(self) -> bool:
        """False once an export failed, until one succeeds again."""
        return self.route.healthy

    @property
    def on_disk(self) -> int:
        """Items of this process waiting in the outage buffer."""
        return self.route.on_disk

    @property
    def buffer_location(self) -> Any:
        """The outage buffer's folder, or None."""
        return self.route.location

    def in_memory(self) -> int:
        """Items held in memory right now: queued, or in a live batch being sent (not yet on disk)."""
        with self.cond:
            return len(self.queue) + sum(len(b) for b in self.front) + self.route.live_items_locked()

    def describe(self) -> dict[str, Any]:
        """Counters as a dict (for the exit report and tests).

        ``unaccounted`` is the invariant the tests check after every fault: each item produced is exported, on
        disk, dropped with a cause, or still in memory on its way; it is always 0 (at rest).
        """
        s = self.stats
        in_memory = self.in_memory()
        on_disk = self.on_disk
        unaccounted = s.queued - s.exported - s.dropped - on_disk - in_memory
        location = self.buffer_location
        return {"signal": s.signal, "queued": s.queued, "exported": s.exported, "dropped": s.dropped,
                "in_memory": in_memory, "unaccounted": unaccounted,
                "buffered": s.buffered, "resent": s.resent, "on_disk": on_disk,
                "failed_exports": s.failed_exports, "last_error": s.last_error, "first_error": s.first_error,
                "drop_cause": s.drop_cause, "buffer": str(location) if location is not None else None}

"""A batching processor that never drops silently and never lets a dead exporter stall a run.

Why not the SDK's ``BatchSpanProcessor``/``BatchLogRecordProcessor``: when a producer outruns the
exporter they drop the newest items as soon as the queue is full (2048 by default), so a 100k-task
flow loses spans even when the exporter is healthy and merely a little slower than the flow. Making
the queue unbounded trades that for unbounded memory. This processor keeps the queue bounded and
applies *backpressure while the exporter is healthy*: a producer that finds the queue full waits (a
bounded time) for the worker to make room. Once an export fails, the exporter is unhealthy and
producers stop waiting: items beyond the queue are dropped at once and counted, so a dead collector
costs a run nothing. Drops and failures are counted and reported at shutdown (see ``stats()``).

Like the SDK's, the worker re-arms after ``fork`` and shutdown is bounded by a deadline.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

__all__ = ["BatchProcessor", "ProcessorStats"]

T = TypeVar("T")


@dataclass(slots=True)
class ProcessorStats:
    """Counters of one processor: what was queued, exported, dropped, and the last export error."""

    signal: str
    queued: int = 0
    exported: int = 0
    dropped: int = 0
    failed_exports: int = 0
    last_error: str | None = None


class BatchProcessor(Generic[T]):
    """Queue items; a worker thread hands them to ``export(batch) -> bool`` in batches.

    ``export`` returns True on success. ``max_block_seconds`` bounds how long one ``emit`` may wait
    for room while the exporter is healthy.
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
    ) -> None:
        self._export_fn = export
        self._shutdown_exporter = shutdown_exporter
        self._max_queue_size = max(1, max_queue_size)
        self._batch_size = max(1, min(max_export_batch_size, self._max_queue_size))
        self._delay = schedule_delay_seconds
        self._max_block = max_block_seconds
        self._signal = signal
        self._healthy = True
        self._shutdown = False
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
        self.stats = ProcessorStats(self._signal)
        self._settled = 0  # queued items whose fate is known (exported, or dropped after a failed export)
        self._queue: collections.deque[T] = collections.deque()
        self._cond = threading.Condition(threading.Lock())
        self._flush_requests = 0
        self._flushed = 0
        self._exporting = False
        self._pid = os.getpid()
        self._worker = threading.Thread(target=self._run, name=f"otelflow-export-{self.stats.signal}", daemon=True)
        self._worker.start()

    # --- producer side ----------------------------------------------------------------------------------
    def emit(self, item: T) -> None:
        """Queue one item (called on the run's thread; fast path is an append)."""
        if self._shutdown:
            self.stats.dropped += 1
            return
        queue = self._queue
        if len(queue) < self._max_queue_size:
            queue.append(item)
            self.stats.queued += 1
            if len(queue) >= self._batch_size and not self._exporting:
                # The worker is idle (waiting out its delay): wake it for a full batch.
                with self._cond:
                    self._cond.notify_all()
            return
        self._emit_full(item)

    def _emit_full(self, item: T) -> None:
        with self._cond:
            self._cond.notify_all()
            deadline = time.monotonic() + self._max_block
            while len(self._queue) >= self._max_queue_size and self._healthy and not self._shutdown:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # An exporter that made no room for max_block seconds is stalled (a collector that
                    # accepts connections but never answers): treat it as unhealthy until an export succeeds,
                    # so the next producers drop at once instead of each waiting out the deadline.
                    self._healthy = False
                    break
                self._cond.wait(remaining)
            if len(self._queue) >= self._max_queue_size or self._shutdown:
                self.stats.dropped += 1
                return
            self._queue.append(item)
            self.stats.queued += 1

    # --- worker side ------------------------------------------------------------------------------------
    def _take_batch(self) -> list[T]:
        queue = self._queue
        count = min(self._batch_size, len(queue))
        return [queue.popleft() for _ in range(count)]

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._shutdown and self._flush_requests == self._flushed:
                    self._cond.wait(self._delay)
                elif len(self._queue) < self._batch_size and not self._shutdown and (
                    self._flush_requests == self._flushed
                ):
                    # A partial batch: give producers one delay to fill it before exporting.
                    self._cond.wait(self._delay)
                flush_target = self._flush_requests
                stop = self._shutdown
            self._drain()
            with self._cond:
                self._flushed = max(self._flushed, flush_target)
                self._cond.notify_all()
            if stop:
                return

    def _drain(self) -> None:
        while self._queue:
            batch = self._take_batch()
            with self._cond:
                self._exporting = True
                self._cond.notify_all()  # room was made: wake blocked producers
            token = attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
            try:
                ok = bool(self._export_fn(batch))
                error = None if ok else "exporter reported failure"
            except Exception as exc:  # an exporter bug must not kill the worker
                ok, error = False, f"{type(exc).__name__}: {exc}"
            finally:
                detach(token)
            with self._cond:
                self._exporting = False
                if ok:
                    self.stats.exported += len(batch)
                    self._settled += len(batch)
                    self._healthy = True
                else:
                    self.stats.dropped += len(batch)
                    self._settled += len(batch)
                    self.stats.failed_exports += 1
                    self.stats.last_error = error
                    self._healthy = False
                self._cond.notify_all()
            if self._shutdown_deadline_passed():
                return

    def _shutdown_deadline_passed(self) -> bool:
        deadline = getattr(self, "_deadline", None)
        return deadline is not None and time.monotonic() > deadline

    # --- control ----------------------------------------------------------------------------------------
    def force_flush(self, timeout_seconds: float = 30.0) -> bool:
        """Export everything queued so far; True if done within the timeout."""
        if self._pid != os.getpid():
            return True
        deadline = time.monotonic() + timeout_seconds
        with self._cond:
            self._flush_requests += 1
            target = self._flush_requests
            self._cond.notify_all()
            while self._flushed < target and self._worker.is_alive():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def shutdown(self, timeout_seconds: float = 30.0) -> None:
        """Flush what is queued (bounded by the timeout), stop the worker and shut the exporter down."""
        if self._shutdown:
            return
        self._deadline = time.monotonic() + timeout_seconds
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
        self._worker.join(max(0.0, self._deadline - time.monotonic()))
        with self._cond:
            # What the deadline left behind (queued, or in a batch still stuck in the exporter) is lost:
            # count it, so it is reported rather than silently gone.
            self.stats.dropped += self.stats.queued - self._settled
            self._settled = self.stats.queued
            self._queue.clear()
        try:
            self._shutdown_exporter()
        except Exception as exc:
            self.stats.last_error = f"{type(exc).__name__}: {exc}"

    def describe(self) -> dict[str, Any]:
        """Counters as a dict (for the exit report and tests)."""
        s = self.stats
        return {"signal": s.signal, "queued": s.queued, "exported": s.exported, "dropped": s.dropped,
                "failed_exports": s.failed_exports, "last_error": s.last_error}

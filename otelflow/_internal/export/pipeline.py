"""The export processor: never drops silently, never lets a dead collector slow a run, loses nothing to an outage.

Why not the SDK's ``BatchSpanProcessor``/``BatchLogRecordProcessor``: when a producer outruns the exporter
they drop the newest items as soon as the queue is full, and a batch the exporter cannot deliver within its
own retry window is gone. This processor keeps a bounded in-memory queue that producers append to (a
bounded wait when it is full, never a network wait), and a worker thread that decides where each batch goes:

- **without an outage buffer** (the spool, the console): the worker exports batches itself; a failed batch is
  dropped and counted, and producers stop waiting for room once the exporter is unhealthy.
- **with an outage buffer** (OTLP): a *sender* thread does the network call, so the worker is never stuck in
  an exporter's retry loop. Whatever the sender cannot take right now (it failed, it is busy while the queue
  fills, older batches are still waiting on disk) is written to the :class:`~otelflow._internal.export.outage.
  OutageBuffer` and re-sent in order when the collector answers again, after a backoff. At shutdown,
  what the deadline leaves is written to disk for the next process instead of being lost.

Every item is counted once: ``exported``, kept on disk (``buffered`` / ``on_disk``), or ``dropped`` with the
first real cause (``drop_cause``: "connection refused", "message too large", "outage buffer full"...).
Batches are split (``split``) so that no request exceeds the receiver's size limit; a request rejected as too
large anyway is halved and retried.

Like the SDK's, the worker re-arms after ``fork`` and shutdown is bounded by a deadline.
"""

from __future__ import annotations

import collections
import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, detach, set_value

__all__ = ["BatchProcessor", "ExportError", "ProcessorStats"]

T = TypeVar("T")


def _is_multiprocessing_child() -> bool:
    """True in a process started by ``multiprocessing`` (a Pool worker, a Process), whatever its start method."""
    import sys

    module = sys.modules.get("multiprocessing")
    if module is None:
        return False
    try:
        return module.parent_process() is not None
    except Exception:
        return False


class ExportError(Exception):
    """Raised by an ``export`` callable to say why a batch was not delivered.

    ``too_large``: the receiver refused the request for its size (the processor halves the batch and retries).
    """

    def __init__(self, cause: str, *, too_large: bool = False) -> None:
        super().__init__(cause)
        self.cause = cause
        self.too_large = too_large


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


@dataclass(slots=True)
class _Job(Generic[T]):
    items: list[T]
    from_buffer: bool
    probe: bool = False  # sent while the collector looked down: try ``reachable`` first
    done: bool = False
    ok: bool = False
    error: str | None = None
    too_large: bool = False
    park_error: str | None = None  # the disk refused it while it was in flight (see _park_inflight)


class BatchProcessor(Generic[T]):
    """Queue items; a worker thread hands them to ``export(batch) -> bool`` in batches.

    ``export`` returns True on success, False (or raises, :class:`ExportError` to give the cause) on failure.
    ``max_block_seconds`` bounds how long one ``emit`` may wait for room. ``buffer`` (an
    :class:`~otelflow._internal.export.outage.OutageBuffer`) turns on the sender thread and the on-disk buffer.
    ``split(batch) -> [batch, ...]`` keeps requests under the receiver's size limit.
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
        on_unhealthy: Callable[[str], None] | None = None,
        reachable: Callable[[], str | None] | None = None,
    ) -> None:
        self._export_fn = export
        self._shutdown_exporter = shutdown_exporter
        self._max_queue_size = max(1, max_queue_size)
        self._batch_size = max(1, min(max_export_batch_size, self._max_queue_size))
        self._delay = schedule_delay_seconds
        self._max_block = max_block_seconds
        self._signal = signal
        self._buffer = buffer
        self._split = split
        self._retry_initial = retry_initial_seconds
        self._retry_max = retry_max_seconds
        self._on_unhealthy = on_unhealthy
        # A quick check that the collector is there (None) or why not, made before the first export and before
        # each probe while it looked down: a probe then costs a TCP connect, not an exporter call sleeping in its
        # own retries for seconds (which delayed recovery, and at exit left the final probe waiting until
        # everything went to disk).
        self._reachable = reachable
        self._healthy = True
        self._reached = False  # no export has reached the collector yet: the first is checked like a probe
        self._shutdown = False
        self._deadline: float | None = None
        self._spill_at: float | None = None
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
        if self._buffer is not None and forked:
            self._buffer.after_fork()
        # A child process (forked, or a multiprocessing worker) may end by os._exit, Pool.terminate's SIGTERM or
        # SIGKILL, with no exit hook: each item goes to disk as it is produced (see _write_through).
        self._write_through = forked or _is_multiprocessing_child()
        self._direct = threading.Lock()
        self.stats = ProcessorStats(self._signal)
        self._queue: collections.deque[T] = collections.deque()
        self._front: collections.deque[list[T]] = collections.deque()  # halves of a too-large batch, first
        self._cond = threading.Condition(threading.Lock())
        self._flush_requests = 0
        self._flushed = 0
        self._worker_waiting = False
        self._inflight: _Job[T] | None = None
        self._books_closed = False
        self._final_probe_done = False
        self._final_probe: _Job[T] | None = None
        self._backoff = self._retry_initial
        self._next_probe = 0.0
        self._reported_unhealthy = False
        self._pid = os.getpid()
        self._worker = threading.Thread(target=self._run, name=f"otelflow-export-{self._signal}", daemon=True)
        self._worker.start()
        self._sender: threading.Thread | None = None
        if self._buffer is not None:
            self._sender = threading.Thread(target=self._send_loop, name=f"otelflow-send-{self._signal}", daemon=True)
            self._sender.start()

    # --- producer side ----------------------------------------------------------------------------------
    def emit(self, item: T) -> None:
        """Queue one item (called on the run's thread; fast path is an append)."""
        if self._shutdown:
            self._drop(1, "emitted after shutdown")
            return
        if self._write_through:
            self._write_now(item)
            return
        queue = self._queue
        if len(queue) < self._max_queue_size:
            queue.append(item)
            self.stats.queued += 1
            if len(queue) >= self._batch_size and self._worker_waiting:
                # The worker is idle (waiting out its delay): wake it for a full batch.
                with self._cond:
                    self._worker_waiting = False
                    self._cond.notify_all()
            return
        self._emit_full(item)

    def _emit_full(self, item: T) -> None:
        with self._cond:
            self._cond.notify_all()
            deadline = time.monotonic() + self._max_block
            # With a buffer the worker always makes room (it writes to disk); without one only while healthy.
            while len(self._queue) >= self._max_queue_size and not self._shutdown and (
                self._healthy or self._buffer is not None
            ):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    # An exporter that made no room for max_block seconds is stalled (a collector that
                    # accepts connections but never answers): treat it as unhealthy until an export succeeds,
                    # so the next producers drop at once instead of each waiting out the deadline.
                    if self._buffer is None:
                        self._healthy = False
                    break
                self._cond.wait(remaining)
            if len(self._queue) >= self._max_queue_size or self._shutdown:
                self._drop_locked(1, "export queue full" if not self._shutdown else "emitted after shutdown")
                return
            self._queue.append(item)
            self.stats.queued += 1

    def _write_now(self, item: T) -> None:
        """In a child process: put the item on disk now, before returning to the code that produced it.

        Without an outage buffer (the spool) the exporter writes it; with one (OTLP) it is appended to the
        buffer, which the worker re-sends from like after an outage, and which the next process re-sends from
        if this one dies first. Either way it is counted like any other item.
        """
        with self._direct:
            with self._cond:
                self.stats.queued += 1
            if self._buffer is None:
                ok, error, _ = self._call_export([item])
                with self._cond:
                    if ok:
                        self.stats.exported += 1
                    else:
                        self._failed(error or "exporter reported failure")
                        self._drop_locked(1, error or "exporter reported failure")
                return
            try:
                with self._cond:
                    in_flight = self._inflight is not None and self._inflight.from_buffer
                dropped = self._buffer.append([item], in_flight=in_flight)
            except Exception as exc:
                self._drop(1, f"outage buffer not writable: {type(exc).__name__}: {exc}")
                return
            with self._cond:
                self.stats.buffered += 1
                if dropped:
                    self._drop_locked(dropped, "outage buffer full (OTELFLOW_BUFFER_MAX_BYTES)")
                self._cond.notify_all()

    # --- accounting -------------------------------------------------------------------------------------
    def _drop(self, count: int, cause: str) -> None:
        with self._cond:
            self._drop_locked(count, cause)

    def _drop_locked(self, count: int, cause: str) -> None:
        if count <= 0:
            return
        self.stats.dropped += count
        if self.stats.drop_cause is None:
            self.stats.drop_cause = cause

    def _failed(self, error: str) -> None:
        self.stats.failed_exports += 1
        self.stats.last_error = error
        if self.stats.first_error is None:
            self.stats.first_error = error

    # --- worker side ------------------------------------------------------------------------------------
    def _take_batch(self) -> list[T]:
        if self._front:
            return self._front.popleft()
        queue = self._queue
        count = min(self._batch_size, len(queue))
        return [queue.popleft() for _ in range(count)]

    def _pieces(self, batch: list[T]) -> list[list[T]]:
        if self._split is None or not batch:
            return [batch]
        try:
            return self._split(batch)
        except Exception:
            return [batch]

    def _call_export(self, batch: list[T]) -> tuple[bool, str | None, bool]:
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

    def _run(self) -> None:
        while True:
            with self._cond:
                self._wait_for_work()
                flush_target = self._flush_requests
                stop = self._shutdown
            if self._buffer is None:
                self._drain_sync()
                done = True
            else:
                done = self._step_async(stop)
            with self._cond:
                if done or not self._busy_locked():
                    self._flushed = max(self._flushed, flush_target)
                self._cond.notify_all()
            if stop and (done or self._deadline_passed()):
                if self._buffer is not None:
                    self._finish_async()
                return

    def _busy_locked(self) -> bool:
        """Live items still on their way (queued, or in flight), for flush: disk counts as settled."""
        inflight = self._inflight
        return bool(self._queue or self._front or (inflight is not None and not inflight.from_buffer))

    def _wait_for_work(self) -> None:
        if self._shutdown:
            inflight = self._inflight
            if self._buffer is not None and inflight is not None and not inflight.done:
                # Stopping: wait for the sender, but not past the time kept for writing the rest to disk, and
                # in short slices, to notice an export stuck in its exporter's retries (see _step_async).
                remaining = (self._spill_at or 0.0) - time.monotonic()
                if remaining > 0:
                    self._cond.wait(min(remaining, 0.05))
            return
        if self._flush_requests != self._flushed:
            inflight = self._inflight
            if inflight is not None and not inflight.done and len(self._queue) < self._max_queue_size // 2:
                # A flush waits for the export under way: sleep until the sender says it is done (it notifies)
                # rather than spinning, which took the GIL from the sender and made a flush 10x slower.
                self._cond.wait(0.05)
            return
        if self._buffer is None:
            if self._queue:
                if len(self._queue) < self._batch_size:
                    self._sleep(self._delay)  # a partial batch: give producers one delay to fill it
                return
            self._sleep(self._delay)
            return
        inflight = self._inflight
        if inflight is not None and inflight.done:
            return
        if self._front and inflight is None:
            return
        timeout = self._delay
        if not self._buffer.empty and inflight is None:
            if self._healthy:
                return
            timeout = min(timeout, max(0.0, self._next_probe - time.monotonic()))
        if len(self._queue) >= self._batch_size and (
            inflight is None or not self._healthy or not self._buffer.empty
            or len(self._queue) >= self._max_queue_size // 2
        ):
            return
        self._sleep(timeout)

    def _sleep(self, timeout: float) -> None:
        self._worker_waiting = True
        self._cond.wait(timeout)
        self._worker_waiting = False

    def _deadline_passed(self) -> bool:
        return self._deadline is not None and time.monotonic() > self._deadline

    # synchronous mode (no buffer) ------------------------------------------------------------------------
    def _drain_sync(self) -> None:
        while self._queue or self._front:
            batch = self._take_batch()
            with self._cond:
                self._cond.notify_all()  # room was made: wake blocked producers
            for piece in self._pieces(batch):
                ok, error, too_large = self._call_export(piece)
                if not ok and too_large and len(piece) > 1:
                    half = len(piece) // 2
                    self._front.extendleft([piece[half:], piece[:half]])
                    continue
                with self._cond:
                    if self._books_closed:
                        return  # shutdown gave up on this batch and counted it already
                    if ok:
                        self.stats.exported += len(piece)
                        self._healthy = True
                    else:
                        self._failed(error or "exporter reported failure")
                        self._drop_locked(len(piece), error or "exporter reported failure")
                        self._healthy = False
            with self._cond:
                self._cond.notify_all()
            if self._deadline_passed():
                return

    # asynchronous mode (sender thread + outage buffer) -----------------------------------------------------
    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while (self._inflight is None or self._inflight.done) and not self._shutdown_sender():
                    self._cond.wait()
                job = self._inflight
                if job is None or job.done:
                    return
            unreachable = self._unreachable() if job.probe else None
            error: str | None
            if unreachable is not None:
                ok, error, too_large = False, unreachable, False
            else:
                ok, error, too_large = self._call_export(job.items)
            with self._cond:
                job.ok, job.error, job.too_large, job.done = ok, error, too_large, True
                self._cond.notify_all()

    def _shutdown_sender(self) -> bool:
        return self._shutdown and not self._worker.is_alive()

    def _submit(self, items: list[T], from_buffer: bool) -> None:
        with self._cond:
            self._inflight = _Job(items, from_buffer, probe=not (self._healthy and self._reached))
            self._cond.notify_all()

    def _unreachable(self) -> str | None:
        """Why the collector cannot be reached now (a probe that fails at once), or None to try the export."""
        if self._reachable is None:
            return None
        try:
            return self._reachable()
        except Exception:
            return None  # a broken check must not hide a collector that is back: let the export decide

    def _park_inflight(self) -> str | None:
        """Write the live batch in flight to disk ahead of anything spilled after it, to keep the order.

        It becomes the buffer's oldest line: delivered, it is committed (not sent again); failed, it is already
        where it belongs. Returns why the disk refused it (None when parked, or nothing to park): the batch
        then stays live, and whoever learns it failed drops it with that cause.
        """
        job = self._inflight
        if job is None or job.from_buffer:
            return None
        try:
            self._buffer.append(job.items)
        except Exception as exc:
            cause = f"outage buffer not writable: {type(exc).__name__}: {exc}"
            job.park_error = cause
            with self._cond:
                self._failed(cause)
            return cause
        self._buffer.in_flight_is_newest()  # the buffer was empty (live batches go only then): it is the oldest
        job.from_buffer = True
        with self._cond:
            self.stats.buffered += len(job.items)
        return None

    def _spill(self, batch: list[T]) -> None:
        """Write a batch to the outage buffer (the worker, never a producer, pays for the disk)."""
        buffer = self._buffer
        self._park_inflight()
        for piece in self._pieces(batch):
            try:
                dropped = buffer.append(piece, in_flight=self._inflight is not None and self._inflight.from_buffer)
            except Exception as exc:
                self._drop(len(piece), f"outage buffer not writable: {type(exc).__name__}: {exc}")
                continue
            with self._cond:
                self.stats.buffered += len(piece)
                if dropped:
                    self._drop_locked(dropped, "outage buffer full (OTELFLOW_BUFFER_MAX_BYTES)")

    def _peek_buffer(self) -> list[T] | None:
        """The outage buffer's oldest batch; items of lines that cannot be read back are dropped with that cause."""
        peeked: tuple[list[T] | None, int, str | None] = self._buffer.peek(self._batch_size)
        items, unreadable, error = peeked
        if unreadable:
            self._drop(unreadable, f"outage buffer line unreadable: {error}")
        return items

    def _collect(self) -> None:
        job = self._inflight
        if job is None or not job.done:
            return
        with self._cond:
            self._inflight = None
        buffer = self._buffer
        # Items of the lines being re-sent that the buffer's bound dropped meanwhile (counted as dropped then).
        gone = buffer.inflight_dropped if job.from_buffer else 0
        if job.ok:
            if job.from_buffer:
                buffer.commit()
            with self._cond:
                self.stats.exported += len(job.items)
                self._healthy = self._reached = True
                self._backoff = self._retry_initial
                if job.from_buffer:
                    self.stats.resent += len(job.items)
                self.stats.dropped -= gone  # dropped from disk meanwhile, but delivered all the same
            return
        error = job.error or "exporter reported failure"
        if job.too_large and job.from_buffer and buffer.joined > 1:
            # Lines joined for the re-send made too large a request: leave them where they are (in order) and
            # join fewer from now on. Each line alone was a request that fitted when it was written.
            buffer.join_less()
            return
        if job.too_large and len(job.items) > 1:
            if job.from_buffer:
                # Re-write the lines as two smaller ones at the end of the buffer (order is kept per span),
                # less what the bound dropped meanwhile (the oldest items: they stay dropped, and counted).
                buffer.commit()
                rest = job.items[gone:]
                half = len(rest) // 2
                for piece in (rest[:half], rest[half:]):
                    if piece:
                        self._spill(piece)
                with self._cond:
                    self.stats.buffered -= len(rest)  # the same items, not new ones
            else:
                half = len(job.items) // 2
                self._front.extendleft([job.items[half:], job.items[:half]])
            return
        with self._cond:
            self._failed(error)
        if job.too_large:
            # One record a receiver refuses even alone: sending it again can never work.
            if job.from_buffer:
                buffer.commit()
            self._drop(len(job.items) - gone, error)  # what the bound dropped meanwhile is counted already
            return
        with self._cond:
            self._healthy = False
            self._next_probe = time.monotonic() + self._backoff
            self._backoff = min(self._retry_max, self._backoff * 2)
        if not job.from_buffer:
            with self._cond:
                self._inflight = job  # parked at the head of the buffer, where it belongs
            refused = self._park_inflight()
            with self._cond:
                self._inflight = None
                if refused is not None:
                    # Neither the collector nor the disk took it: dropped, with both causes.
                    self._drop_locked(len(job.items), f"{error}; {refused}")
        if not self._reported_unhealthy and self._on_unhealthy is not None:
            self._reported_unhealthy = True
            with contextlib.suppress(Exception):
                self._on_unhealthy(error)

    def _step_async(self, stopping: bool) -> bool:
        """Move batches one step; returns True when stopping and nothing more can be done before exit."""
        self._collect()
        buffer = self._buffer
        now = time.monotonic()
        past_spill = self._spill_at is not None and now >= self._spill_at
        inflight = self._inflight
        if stopping and not self._healthy and not self._final_probe_done and not past_spill:
            # Exiting while the collector looked down: one last try (it may be back) before writing to disk.
            self._final_probe_done = True
            self._next_probe = now
            if self._inflight is None:
                if not buffer.empty:
                    items = self._peek_buffer()
                    if items is not None:
                        self._submit(items, from_buffer=True)
                elif self._queue or self._front:
                    self._submit(self._take_batch(), from_buffer=False)
                self._final_probe = self._inflight
        probing = stopping and not past_spill and self._inflight is not None and self._inflight is self._final_probe
        spill_all = stopping and not probing and (not self._healthy or past_spill)
        while self._queue or self._front:
            inflight = self._inflight
            if not spill_all and buffer.empty and self._healthy and inflight is None:
                batch = self._take_batch()
                pieces = self._pieces(batch)
                self._submit(pieces[0], from_buffer=False)
                if len(pieces) > 1:
                    self._front.extendleft(reversed(pieces[1:]))
                with self._cond:
                    self._cond.notify_all()  # room was made: wake blocked producers
            elif (
                spill_all or not buffer.empty or not self._healthy
                or len(self._queue) >= self._max_queue_size // 2
            ):
                self._spill(self._take_batch())
                with self._cond:
                    self._cond.notify_all()
            else:
                break  # the sender is busy with a healthy collector: keep the rest in memory a little
        if self._inflight is None and not buffer.empty and not spill_all and (
            self._healthy or time.monotonic() >= self._next_probe
        ):
            items = self._peek_buffer()
            if items is not None:
                self._submit(items, from_buffer=True)
        if not stopping:
            return False
        inflight = self._inflight
        if spill_all:
            return not self._queue and not self._front
        return not self._queue and not self._front and inflight is None and (buffer.empty or not self._healthy)

    def _finish_async(self) -> None:
        """At exit: what is still queued or in flight goes to disk for the next process."""
        if self._queue or self._front:
            while self._queue or self._front:
                self._spill(self._take_batch())
        job = self._inflight
        if job is not None and job.done:
            self._collect()
        elif job is not None:
            # Its fate is unknown (the collector may still take it): keep it on disk; at worst it is sent twice.
            refused = self._park_inflight()
            if refused is not None:
                with self._cond:
                    self._inflight = None
                    self._drop_locked(len(job.items), f"shutdown deadline reached; {refused}")
        with contextlib.suppress(Exception):
            self._buffer.close()

    # --- control ----------------------------------------------------------------------------------------
    def force_flush(self, timeout_seconds: float = 30.0) -> bool:
        """Export everything queued so far; True if it was all delivered within the timeout.

        With an outage buffer, items the collector could not take are written to disk and the flush returns
        False once they are there (not after the timeout).
        """
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
            if self._buffer is not None:
                return self._buffer.empty and self._healthy
        return True

    def shutdown(self, timeout_seconds: float = 30.0) -> None:
        """Flush what is queued (bounded by the timeout), stop the worker and shut the exporter down.

        With an outage buffer, the last part of the time budget is kept for writing what is left to disk.
        """
        if self._shutdown:
            return
        now = time.monotonic()
        self._deadline = now + timeout_seconds
        self._spill_at = self._deadline - min(1.0, timeout_seconds / 4)
        with self._cond:
            self._shutdown = True
            self._cond.notify_all()
        self._worker.join(max(0.0, self._deadline - time.monotonic()))
        with self._cond:
            # Whatever the deadline left behind in memory (the worker could not even write it to disk) is lost:
            # count it, so it is reported rather than silently gone.
            left = len(self._queue) + sum(len(b) for b in self._front)
            self._queue.clear()
            self._front.clear()
            job = self._inflight
            if job is not None and not job.from_buffer and not self._worker.is_alive():
                # A live batch whose export outlived the deadline, and that the disk did not take: gone with us.
                left += len(job.items)
                self._inflight = None
            self._drop_locked(left, self._known_cause("shutdown deadline reached"))
            self._cond.notify_all()
        if self._buffer is None:
            self._account_stuck_sync()
        self._stop_exporter(max(0.0, self._deadline - time.monotonic()))

    def _account_stuck_sync(self) -> None:
        s = self.stats
        with self._cond:
            self._books_closed = True
            unsettled = s.queued - s.exported - s.dropped
            self._drop_locked(unsettled, self._known_cause("shutdown deadline reached (collector not answering)"))

    def _known_cause(self, fallback: str) -> str:
        return self.stats.first_error or fallback

    def _stop_exporter(self, timeout: float) -> None:
        # The SDK exporters' shutdown also interrupts their retry back-off; bounded, as it may block.
        def stop() -> None:
            try:
                self._shutdown_exporter()
            except Exception as exc:
                with self._cond:
                    if self.stats.last_error is None:
                        self.stats.last_error = f"{type(exc).__name__}: {exc}"

        thread = threading.Thread(target=stop, name=f"otelflow-exporter-shutdown-{self._signal}", daemon=True)
        thread.start()
        thread.join(max(0.05, timeout))

    @property
    def healthy(self) -> bool:
        """False once an export failed, until one succeeds again."""
        return self._healthy

    @property
    def on_disk(self) -> int:
        """Items of this process waiting in the outage buffer."""
        return int(self._buffer.pending_items) if self._buffer is not None else 0

    @property
    def buffer_location(self) -> Any:
        """The outage buffer's folder, or None."""
        return self._buffer.location if self._buffer is not None else None

    def in_memory(self) -> int:
        """Items held in memory right now: queued, or in a live batch being sent (not yet on disk)."""
        with self._cond:
            job = self._inflight
            live = len(job.items) if job is not None and not job.from_buffer and not job.done else 0
            done_live = len(job.items) if job is not None and not job.from_buffer and job.done else 0
            return len(self._queue) + sum(len(b) for b in self._front) + live + done_live

    def describe(self) -> dict[str, Any]:
        """Counters as a dict (for the exit report and tests).

        ``unaccounted`` is the invariant the tests check after every fault: each item produced is exported, on
        disk, dropped with a cause, or still in memory on its way; it is always 0.
        """
        s = self.stats
        in_memory = self.in_memory()
        unaccounted = s.queued - s.exported - s.dropped - self.on_disk - in_memory
        return {"signal": s.signal, "queued": s.queued, "exported": s.exported, "dropped": s.dropped,
                "in_memory": in_memory, "unaccounted": unaccounted,
                "buffered": s.buffered, "resent": s.resent, "on_disk": self.on_disk,
                "failed_exports": s.failed_exports, "last_error": s.last_error, "first_error": s.first_error,
                "drop_cause": s.drop_cause,
                "buffer": str(self.buffer_location) if self.buffer_location is not None else None}

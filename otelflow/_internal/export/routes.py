"""Where the batching stage's batches go: straight to the exporter, or over OTLP with an outage buffer behind it.

A route is driven by its :class:`~otelflow._internal.export.pipeline.BatchProcessor` (the *host*): the host's
worker asks it how long to idle, then lets it take one step; producers ask it whether to wait for room. Both
routes count every item in the host's :class:`~otelflow._internal.export.pipeline.ProcessorStats`.

- :class:`DirectRoute` (the spool, the console): the worker exports each batch itself. A batch that fails is
  dropped and counted with its cause; once the exporter failed (or made no room for ``max_block`` seconds),
  producers stop waiting for room until an export succeeds again.
- :class:`OutageRoute` (OTLP): a **sender** thread makes the network call, so the worker is never stuck behind
  the collector. The link to the collector is in one of three states (:class:`Link`): UNKNOWN (nothing
  delivered yet: the first export is a probe), UP, DOWN (an export failed: the next probe is due after a
  back-off, 1 s doubling to 5 s, and starts with a TCP connect). Whatever the sender cannot take right now (the
  link is down, it is busy while the queue fills, older batches are still waiting on disk) is written to the
  :class:`~otelflow._internal.export.outage.OutageBuffer` and re-sent in order, oldest first, when the collector
  answers. At shutdown the link gets one last probe, then what the deadline leaves is written to disk for the
  next process.
"""

from __future__ import annotations

import contextlib
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from otelflow._internal.export.pipeline import Phase

if TYPE_CHECKING:
    from otelflow._internal.export.pipeline import BatchProcessor

__all__ = ["DirectRoute", "Link", "OutageRoute", "Route"]

T = TypeVar("T")
T_contra = TypeVar("T_contra", contravariant=True)


class Route(Protocol[T_contra]):
    """What the batching stage needs from a route (``*_locked`` methods are called with the host's ``cond``)."""

    def start(self) -> None: ...
    def after_fork(self) -> None: ...
    def idle_timeout(self) -> float | None: ...
    def wait_busy(self) -> None: ...
    def step(self, stopping: bool) -> bool: ...
    def finish(self) -> None: ...
    def busy_locked(self) -> bool: ...
    def settled_locked(self) -> bool: ...
    def makes_room(self) -> bool: ...
    def stalled(self) -> None: ...
    def write_now(self, item: T_contra) -> None: ...
    def abandon_live_locked(self) -> int: ...
    def close_books(self) -> None: ...
    def live_items_locked(self) -> int: ...

    @property
    def healthy(self) -> bool: ...
    @property
    def on_disk(self) -> int: ...
    @property
    def location(self) -> Any: ...


# --- direct ----------------------------------------------------------------------------------------------------


class DirectRoute(Generic[T]):
    """The worker exports every batch itself; a failed batch is dropped and counted."""

    def __init__(self, host: BatchProcessor[T]) -> None:
        self.host = host
        self.healthy = True
        self._books_closed = False  # shutdown counted what was still unsettled: later results are ignored
        self._in_hand = 0  # items taken from the queue by the worker, not yet counted

    on_disk = 0
    location = None

    def start(self) -> None:
        """Nothing to start: the host's worker does the work."""

    def after_fork(self) -> None:
        """Nothing on disk to hand over."""

    def idle_timeout(self) -> float | None:
        host = self.host
        if host.queue and len(host.queue) >= host.batch_size:
            return None
        return host.delay  # a partial batch (or none): give producers one delay to fill it

    def wait_busy(self) -> None:
        """A flush or a shutdown: go at once."""

    def step(self, stopping: bool) -> bool:
        host = self.host
        while host.pending:
            with host.cond:
                batch = host.take_batch()
                self._in_hand += len(batch)
                host.cond.notify_all()  # room was made: wake blocked producers
            for piece in host.pieces(batch):
                ok, error, too_large = host.call_export(piece)
                if not ok and too_large and len(piece) > 1:
                    half = len(piece) // 2
                    with host.cond:
                        host.front.extendleft([piece[half:], piece[:half]])
                        self._in_hand -= len(piece)
                    continue
                with host.cond:
                    self._in_hand -= len(piece)
                    if self._books_closed:
                        return True  # shutdown gave up on this batch and counted it already
                    self._settle_locked(len(piece), ok, error)
            with host.cond:
                host.cond.notify_all()
            if host.deadline_passed():
                return True
        return True

    def _settle_locked(self, count: int, ok: bool, error: str | None) -> None:
        host = self.host
        if ok:
            host.stats.exported += count
            self.healthy = True
        else:
            cause = error or "exporter reported failure"
            host.failed_locked(cause)
            host.drop_locked(count, cause)
            self.healthy = False

    def write_now(self, item: T) -> None:
        ok, error, _ = self.host.call_export([item])
        with self.host.cond:
            self._settle_locked(1, ok, error)

    def finish(self) -> None:
        """Nothing to keep: what is left was counted by the host."""

    def busy_locked(self) -> bool:
        return self.host.pending

    def settled_locked(self) -> bool:
        return True

    def makes_room(self) -> bool:
        return self.healthy  # a failing exporter makes no room: producers do not wait for it

    def stalled(self) -> None:
        # An exporter that made no room for max_block seconds is stalled (a collector that accepts connections but
        # never answers): unhealthy until an export succeeds, so the next producers drop at once.
        self.healthy = False

    def abandon_live_locked(self) -> int:
        return 0  # the worker has finished: nothing is in its hands

    def close_books(self) -> None:
        host = self.host
        with host.cond:
            self._books_closed = True
            s = host.stats
            unsettled = s.queued - s.exported - s.dropped
            host.drop_locked(unsettled, s.first_error or "shutdown deadline reached (collector not answering)")
            self._in_hand = 0

    def live_items_locked(self) -> int:
        return self._in_hand


# --- over OTLP, with the outage buffer behind ------------------------------------------------------------------


class Link(enum.Enum):
    """What the route knows of the collector."""

    UNKNOWN = "not reached yet"  # the first export is a probe
    UP = "delivering"
    DOWN = "not taking telemetry"  # the last export failed: probe again after the back-off


@dataclass(slots=True)
class _Job(Generic[T]):
    """A batch handed to the sender: live (from the queue) or re-sent from the buffer."""

    items: list[T]
    from_buffer: bool
    probe: bool = False  # sent while the collector was not known to be up: try ``reachable`` first
    done: bool = False
    ok: bool = False
    error: str | None = None
    too_large: bool = False


class OutageRoute(Generic[T]):
    """A sender thread for the network; the worker decides, batch by batch, between the sender and the disk."""

    def __init__(
        self,
        host: BatchProcessor[T],
        buffer: Any,
        *,
        retry_initial: float,
        retry_max: float,
        on_unhealthy: Callable[[str, str | None], None] | None,
        reachable: Callable[[], str | None] | None,
    ) -> None:
        self.host = host
        self.buffer = buffer
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._on_unhealthy = on_unhealthy
        # A quick check that the collector is there (None) or why not, made before the first export and before
        # each probe while it is down: a probe then costs a TCP connect, not an export waiting out its timeout.
        self._reachable = reachable
        self.link = Link.UNKNOWN
        self._backoff = retry_initial
        self._next_probe = 0.0
        self._reported_down = False
        self._inflight: _Job[T] | None = None
        self._exit_probe: _Job[T] | None = None  # the one last try made when stopping while the link is down
        self._exit_probe_tried = False
        self._sender: threading.Thread | None = None

    # --- life ------------------------------------------------------------------------------------------------
    def start(self) -> None:
        self._sender = threading.Thread(target=self._send_loop, name=f"otelflow-send-{self.host.signal}",
                                        daemon=True)
        self._sender.start()

    def after_fork(self) -> None:
        self.buffer.after_fork()

    @property
    def healthy(self) -> bool:
        return self.link is not Link.DOWN

    @property
    def on_disk(self) -> int:
        return int(self.buffer.pending_items)

    @property
    def location(self) -> Any:
        return self.buffer.location

    # --- the sender thread ----------------------------------------------------------------------------------------
    def _send_loop(self) -> None:
        host = self.host
        while True:
            with host.cond:
                while (self._inflight is None or self._inflight.done) and not self._sender_done():
                    host.cond.wait()
                job = self._inflight
                if job is None or job.done:
                    return
            unreachable = self._unreachable() if job.probe else None
            error: str | None
            if unreachable is not None:
                ok, error, too_large = False, unreachable, False
            else:
                ok, error, too_large = host.call_export(job.items)
            with host.cond:
                job.ok, job.error, job.too_large, job.done = ok, error, too_large, True
                host.cond.notify_all()

    def _sender_done(self) -> bool:
        return self.host.phase is not Phase.RUNNING and not self.host.worker_alive

    def _unreachable(self) -> str | None:
        """Why the collector cannot be reached now (a probe that fails at once), or None to try the export."""
        if self._reachable is None:
            return None
        try:
            return self._reachable()
        except Exception:
            return None  # a broken check must not hide a collector that is back: let the export decide

    def _submit(self, items: list[T], from_buffer: bool) -> None:
        with self.host.cond:
            self._inflight = _Job(items, from_buffer, probe=self.link is not Link.UP)
            self.host.cond.notify_all()

    # --- the worker's side --------------------------------------------------------------------------------
    def idle_timeout(self) -> float | None:
        host = self.host
        inflight = self._inflight
        if inflight is not None and inflight.done:
            return None
        if host.front and inflight is None:
            return None
        timeout = host.delay
        if not self.buffer.empty and inflight is None:
            if self.link is not Link.DOWN:
                return None
            timeout = min(timeout, max(0.0, self._next_probe - time.monotonic()))
        if len(host.queue) >= host.batch_size and (
            inflight is None or self.link is Link.DOWN or not self.buffer.empty
            or len(host.queue) >= host.max_queue_size // 2
        ):
            return None
        return timeout

    def wait_busy(self) -> None:
        host = self.host
        inflight = self._inflight
        if host.phase is not Phase.RUNNING:
            if inflight is not None and not inflight.done:
                # Stopping: wait for the sender, but not past the time kept for writing the rest to disk.
                remaining = (host.spill_at or 0.0) - time.monotonic()
                if remaining > 0:
                    host.cond.wait(min(remaining, 0.05))
            return
        if inflight is not None and not inflight.done and len(host.queue) < host.max_queue_size // 2:
            # A flush waits for the export under way: sleep until the sender says it is done (it notifies)
            # rather than spinning, which took the GIL from the sender and made a flush 10x slower.
            host.cond.wait(0.05)

    def busy_locked(self) -> bool:
        """Items still on their way, for flush: queued, in flight, or spilled to disk while the collector is not down.

        Disk counts as settled only while the collector is down. Batches a burst spilled to disk because the
        sender was slower than the producer (the queue half full) go out with the flush when the collector takes
        them: a 20,000-task flow's flush otherwise returned with two thirds of its spans still on disk.
        """
        if self.host.pending:
            return True
        inflight = self._inflight
        if self.link is Link.DOWN:
            return inflight is not None and not inflight.from_buffer
        # up, or not known yet (the first request still on its way): the disk is a waiting room, not a home
        return inflight is not None or not self.buffer.empty

    def settled_locked(self) -> bool:
        return bool(self.buffer.empty) and self.link is not Link.DOWN

    def makes_room(self) -> bool:
        return True  # the worker always makes room: it writes to disk

    def stalled(self) -> None:
        """The worker writes to disk whatever the sender cannot take: producers never wait long."""

    def live_items_locked(self) -> int:
        job = self._inflight
        return len(job.items) if job is not None and not job.from_buffer else 0

    def step(self, stopping: bool) -> bool:
        """Move batches one step; returns True when stopping and nothing more can be done before exit."""
        self._collect()
        host, buffer = self.host, self.buffer
        now = time.monotonic()
        past_spill = host.spill_at is not None and now >= host.spill_at
        if stopping and self.link is Link.DOWN and not self._exit_probe_tried and not past_spill:
            # Stopping while the collector looked down: one last try (it may be back) before writing to disk.
            self._exit_probe_tried = True
            self._next_probe = now
            if self._inflight is None:
                if not buffer.empty:
                    items = self._peek_buffer()
                    if items is not None:
                        self._submit(items, from_buffer=True)
                elif host.pending:
                    self._submit(host.take_batch(), from_buffer=False)
                self._exit_probe = self._inflight
        probing = stopping and not past_spill and self._inflight is not None and self._inflight is self._exit_probe
        spill_all = stopping and not probing and (self.link is Link.DOWN or past_spill)
        while host.pending:
            inflight = self._inflight
            if not spill_all and buffer.empty and self.link is not Link.DOWN and inflight is None:
                pieces = host.pieces(host.take_batch())
                self._submit(pieces[0], from_buffer=False)
                if len(pieces) > 1:
                    host.front.extendleft(reversed(pieces[1:]))
                with host.cond:
                    host.cond.notify_all()  # room was made: wake blocked producers
            elif (spill_all or not buffer.empty or self.link is Link.DOWN
                  or len(host.queue) >= host.max_queue_size // 2):
                self._spill(host.take_batch())
                with host.cond:
                    host.cond.notify_all()
            else:
                break  # the sender is busy with a collector that is up: keep the rest in memory a little
        if self._inflight is None and not buffer.empty and not spill_all and (
            self.link is not Link.DOWN or time.monotonic() >= self._next_probe
        ):
            items = self._peek_buffer()
            if items is not None:
                self._submit(items, from_buffer=True)
        if not stopping:
            return False
        if spill_all:
            return not host.pending
        return not host.pending and self._inflight is None and (buffer.empty or self.link is Link.DOWN)

    def _collect(self) -> None:
        """Settle the job the sender finished: count it, commit it on disk, or keep it there."""
        job = self._inflight
        if job is None or not job.done:
            return
        host, buffer = self.host, self.buffer
        with host.cond:
            self._inflight = None
        # Items of the lines being re-sent that the buffer's bound dropped meanwhile (counted as dropped then).
        gone = buffer.inflight_dropped if job.from_buffer else 0
        if job.ok:
            if job.from_buffer:
                buffer.commit()
            with host.cond:
                host.stats.exported += len(job.items)
                self.link = Link.UP
                self._backoff = self._retry_initial
                if job.from_buffer:
                    host.stats.resent += len(job.items)
                host.stats.dropped -= gone  # dropped from disk meanwhile, but delivered all the same
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
                with host.cond:
                    host.stats.buffered -= len(rest)  # the same items, not new ones
            else:
                half = len(job.items) // 2
                with host.cond:
                    host.front.extendleft([job.items[half:], job.items[:half]])
            return
        with host.cond:
            host.failed_locked(error)
        if job.too_large:
            # One record a receiver refuses even alone: sending it again can never work.
            if job.from_buffer:
                buffer.commit()
            host.drop(len(job.items) - gone, error)  # what the bound dropped meanwhile is counted already
            return
        with host.cond:
            self.link = Link.DOWN
            self._next_probe = time.monotonic() + self._backoff
            self._backoff = min(self._retry_max, self._backoff * 2)
        refused = None
        if not job.from_buffer:
            with host.cond:
                self._inflight = job  # parked at the head of the buffer, where it belongs
            refused = self._park_inflight()
            with host.cond:
                self._inflight = None
                if refused is not None:
                    # Neither the collector nor the disk took it: dropped, with both causes.
                    host.drop_locked(len(job.items), f"{error}; {refused}")
        if not self._reported_down and self._on_unhealthy is not None:
            self._reported_down = True
            with contextlib.suppress(Exception):
                self._on_unhealthy(error, refused)

    # --- the disk -------------------------------------------------------------------------------------------
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
            self.buffer.append(job.items)
        except Exception as exc:
            cause = f"outage buffer not writable: {type(exc).__name__}: {exc}"
            with self.host.cond:
                self.host.failed_locked(cause)
            return cause
        self.buffer.in_flight_is_newest()  # the buffer was empty (live batches go only then): it is the oldest
        job.from_buffer = True
        with self.host.cond:
            self.host.stats.buffered += len(job.items)
        return None

    def _spill(self, batch: list[T]) -> None:
        """Write a batch to the outage buffer (the worker, never a producer, pays for the disk)."""
        self._park_inflight()
        for piece in self.host.pieces(batch):
            self._append(piece)

    def _append(self, piece: list[T]) -> None:
        host = self.host
        try:
            dropped = self.buffer.append(piece, in_flight=self._inflight is not None and self._inflight.from_buffer)
        except Exception as exc:
            host.drop(len(piece), f"outage buffer not writable: {type(exc).__name__}: {exc}")
            return
        with host.cond:
            host.stats.buffered += len(piece)
            if dropped:
                host.drop_locked(dropped, "outage buffer full (OTELFLOW_BUFFER_MAX_BYTES)")
            host.cond.notify_all()

    def write_now(self, item: T) -> None:
        """A child process's item: on disk now; the worker sends it from there, or the next process does."""
        self._append([item])

    def _peek_buffer(self) -> list[T] | None:
        """The outage buffer's oldest batch; items of lines that cannot be read back are dropped with that cause."""
        peeked: tuple[list[T] | None, int, str | None] = self.buffer.peek(self.host.batch_size)
        items, unreadable, error = peeked
        if unreadable:
            self.host.drop(unreadable, f"outage buffer line unreadable: {error}")
        return items

    # --- the end ----------------------------------------------------------------------------------------------
    def finish(self) -> None:
        """At exit: what is still queued or in flight goes to disk for the next process."""
        host = self.host
        while host.pending:
            self._spill(host.take_batch())
        job = self._inflight
        if job is not None and job.done:
            self._collect()
        elif job is not None:
            # Its fate is unknown (the collector may still take it): keep it on disk; at worst it is sent twice.
            refused = self._park_inflight()
            if refused is not None:
                with host.cond:
                    self._inflight = None
                    host.drop_locked(len(job.items), f"shutdown deadline reached; {refused}")
        with contextlib.suppress(Exception):
            self.buffer.close()

    def abandon_live_locked(self) -> int:
        """A live batch whose export outlived the deadline and that the disk did not take: gone with us."""
        job = self._inflight
        if job is not None and not job.from_buffer:
            self._inflight = None
            return len(job.items)
        return 0

    def close_books(self) -> None:
        """Everything was counted by :meth:`finish` and the host."""

"""The export batch processor: zero loss under a healthy-but-slow exporter, no stall behind a dead one."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from otelflow._internal.export.pipeline import BatchProcessor
from otelflow._internal.spool.otlp_json import decode_line


class SlowExporter:
    def __init__(self, delay: float = 0.002) -> None:
        self.delay = delay
        self.items: list[int] = []
        self.batches = 0

    def export(self, batch: Sequence[int]) -> bool:
        time.sleep(self.delay)  # slower than the producer: the queue fills up
        self.items.extend(batch)
        self.batches += 1
        return True

    def shutdown(self) -> None:
        pass


def test_backpressure_keeps_every_item_when_the_exporter_is_healthy():  # type: ignore[no-untyped-def]
    exporter = SlowExporter()
    processor = BatchProcessor(exporter.export, exporter.shutdown, signal="test", max_queue_size=64,
                               max_export_batch_size=16, schedule_delay_seconds=0.05)
    producers = [threading.Thread(target=lambda base=base: [processor.emit(base + i) for i in range(2_000)])
                 for base in range(0, 8_000, 2_000)]
    for t in producers:
        t.start()
    for t in producers:
        t.join()
    assert processor.force_flush(30)
    processor.shutdown(5)
    assert sorted(exporter.items) == list(range(8_000))
    assert processor.stats.dropped == 0
    assert processor.stats.exported == 8_000
    assert max(1, exporter.batches) >= 8_000 // 16


def test_a_failing_exporter_drops_counts_and_never_blocks_emit():  # type: ignore[no-untyped-def]
    calls = []

    def export(batch: Sequence[int]) -> bool:
        calls.append(len(batch))
        return False

    processor = BatchProcessor(export, lambda: None, signal="test", max_queue_size=10, max_export_batch_size=5,
                               schedule_delay_seconds=0.01, max_block_seconds=30)
    processor.emit(0)
    assert processor.force_flush(5)  # first export fails: the exporter is now unhealthy
    assert processor.stats.failed_exports == 1
    started = time.monotonic()
    for i in range(1, 1_001):
        processor.emit(i)
    # With max_block_seconds=30, a blocking emit would take minutes; unhealthy means drop at once.
    assert time.monotonic() - started < 10
    processor.shutdown(2)
    s = processor.stats
    assert s.exported == 0
    assert s.dropped == 1_001  # every item is accounted for: failed batches + overflow
    assert s.last_error == "exporter reported failure"


def test_exporter_exceptions_are_counted_not_fatal():  # type: ignore[no-untyped-def]
    def export(batch: Sequence[int]) -> bool:
        raise ConnectionError("collector gone")

    processor = BatchProcessor(export, lambda: None, signal="test", schedule_delay_seconds=0.01)
    processor.emit(1)
    processor.force_flush(5)
    processor.emit(2)
    processor.force_flush(5)
    processor.shutdown(1)
    assert processor.stats.dropped == 2
    assert processor.stats.last_error == "ConnectionError: collector gone"


def test_shutdown_is_bounded_by_its_deadline_and_counts_what_was_stuck():  # type: ignore[no-untyped-def]
    release = threading.Event()

    def export(batch: Sequence[int]) -> bool:
        release.wait(30)  # a collector that never answers
        return True

    processor = BatchProcessor(export, release.set, signal="test", max_export_batch_size=4,
                               schedule_delay_seconds=0.01)
    for i in range(10):
        processor.emit(i)
    started = time.monotonic()
    processor.shutdown(0.5)
    assert time.monotonic() - started < 5
    assert processor.stats.dropped + processor.stats.exported == 10
    assert processor.stats.dropped >= 6  # the batch in flight and the queue behind it


def test_worker_rearms_after_fork():  # type: ignore[no-untyped-def]
    read_fd, write_fd = os.pipe()
    exported: list[int] = []
    processor = BatchProcessor(lambda b: exported.extend(b) or True, lambda: None, signal="test",
                               schedule_delay_seconds=0.01)
    processor.emit(1)
    processor.force_flush(5)
    pid = os.fork()
    if pid == 0:  # child: the processor must work here with a fresh worker thread
        try:
            processor.emit(2)
            ok = processor.force_flush(5) and exported == [1, 2] and processor.stats.exported == 1
            os.write(write_fd, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 2) == b"ok"
    processor.shutdown(1)
    assert exported == [1]


def test_a_stalled_exporter_costs_one_bounded_wait_then_drops():  # type: ignore[no-untyped-def]
    release = threading.Event()

    def export(batch: Sequence[int]) -> bool:
        release.wait(30)  # accepts the batch, never answers
        return True

    processor = BatchProcessor(export, release.set, signal="test", max_queue_size=8, max_export_batch_size=4,
                               schedule_delay_seconds=0.01, max_block_seconds=0.3)
    processor.emit(0)
    processor.emit(1)
    processor.emit(2)
    processor.emit(3)  # a full batch: the worker takes it and hangs in export
    deadline = time.monotonic() + 5
    while processor.stats.queued and len(processor.queue) and time.monotonic() < deadline:
        time.sleep(0.01)  # wait until the worker holds the batch (poll, bounded)
    started = time.monotonic()
    for i in range(4, 200):
        processor.emit(i)
    elapsed = time.monotonic() - started
    # One producer waited max_block_seconds once; the other ~190 emits dropped at once.
    assert elapsed < 0.3 * 5
    assert processor.stats.dropped >= 180
    release.set()
    processor.shutdown(2)


# --- with the outage buffer (the OTLP path) ------------------------------------------------------------------

def _make_spans(count: int) -> list:  # type: ignore[type-arg]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otelflow")
    for i in range(count):
        tracer.start_span("task t", attributes={"i": i}).end()
    return list(exporter.get_finished_spans())


def _buffered(tmp_path, export, **options):  # type: ignore[no-untyped-def]
    from otelflow._internal.export.outage import OutageBuffer
    from otelflow._internal.spool.otlp_json import encode_spans

    buffer = OutageBuffer(tmp_path, "traces", encode_spans, max_bytes=options.pop("max_bytes", 1 << 30))
    return BatchProcessor(export, lambda: None, signal="traces", buffer=buffer, schedule_delay_seconds=0.02,
                          retry_initial_seconds=0.05, max_queue_size=options.pop("max_queue_size", 2048),
                          max_export_batch_size=options.pop("max_export_batch_size", 256), **options)


def _ids(spans) -> list[int]:  # type: ignore[no-untyped-def]
    return [s.attributes["i"] for s in spans]


def _emit_until_a_drop(processor, items) -> None:  # type: ignore[no-untyped-def]
    """Emit every item, stopping at the first drop: a broken worker fails the test in one max_block, not N."""
    for item in items:
        processor.emit(item)
        if processor.stats.dropped:
            return


def _collector_down():  # type: ignore[no-untyped-def]
    """An export function refusing connections until ``down`` is cleared, then keeping what it is sent."""
    from otelflow._internal.export.pipeline import ExportError

    down = threading.Event()
    down.set()
    received: list = []  # type: ignore[type-arg]

    def export(batch):  # type: ignore[no-untyped-def]
        if down.is_set():
            raise ExportError("connection refused")
        received.extend(batch)
        return True

    return down, received, export


def test_a_dead_collector_never_blocks_and_everything_lands_on_disk_then_ships(tmp_path):  # type: ignore[no-untyped-def]
    from otelflow._internal.export.pipeline import ExportError
    from otelflow._internal.export.ship import ship_directory

    spans = _make_spans(5_000)
    attempts = []

    def dead(batch):  # type: ignore[no-untyped-def]
        attempts.append(len(batch))
        raise ExportError("connection refused")

    # Producers outrun the worker here, so they do wait for room: for the disk (milliseconds), never for the
    # collector. A worker that kept them waiting on exports would run out their 1 s max_block: a drop.
    processor = _buffered(tmp_path, dead, max_block_seconds=1)
    _emit_until_a_drop(processor, spans)
    processor.shutdown(5)
    s = processor.stats
    assert (s.exported, s.dropped, processor.on_disk, s.buffered) == (0, 0, 5_000, 5_000)
    assert s.first_error == "connection refused" and s.drop_cause is None
    received: list = []  # type: ignore[type-arg]
    result = ship_directory(tmp_path, "traces", lambda batch: received.extend(batch) or True, delete_shipped=True)
    assert result.items_sent == 5_000 and _ids(received) == list(range(5_000))  # every item, in order
    assert not list(tmp_path.glob("*.jsonl"))


def test_the_collector_comes_back_and_the_buffer_is_resent_in_order(tmp_path):  # type: ignore[no-untyped-def]
    spans = _make_spans(3_000)
    down, received, flaky = _collector_down()
    processor = _buffered(tmp_path, flaky)
    for span in spans[:2_000]:
        processor.emit(span)
    assert not processor.force_flush(5)  # not delivered: on disk
    assert processor.on_disk == 2_000
    down.clear()  # the collector is back
    for span in spans[2_000:]:
        processor.emit(span)
    deadline = time.monotonic() + 10
    while len(received) < 3_000 and time.monotonic() < deadline:
        processor.force_flush(1)
    processor.shutdown(5)
    assert _ids(received) == list(range(3_000))  # once each, in order
    assert processor.stats.resent >= 2_000 and processor.on_disk == 0 and processor.stats.dropped == 0
    assert not list(tmp_path.glob("*.jsonl"))


def test_an_unreadable_buffer_line_is_counted_dropped_with_its_cause(tmp_path):  # type: ignore[no-untyped-def]
    """A line of the outage buffer that cannot be read back (a disk error, a damaged file) loses its items: they
    are counted as dropped, with that cause, and every other line is still re-sent in order."""
    spans = _make_spans(2_000)
    down, received, flaky = _collector_down()
    processor = _buffered(tmp_path, flaky, max_export_batch_size=250)
    for span in spans:
        processor.emit(span)
    assert not processor.force_flush(5) and processor.on_disk == 2_000  # lines of up to 250 spans on disk
    (path,) = tmp_path.glob("*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 5
    lost = set(_ids(decode_line(lines[4], "traces")))  # the fifth line (the oldest one is being probed with)
    assert lost
    with open(path, "r+b") as handle:  # damaged in place: rewriting the whole file would race with the probe
        handle.seek(sum(len(line) for line in lines[:4]))
        handle.write(b"#" * 20)
    down.clear()  # the collector is back
    deadline = time.monotonic() + 10
    while processor.on_disk and time.monotonic() < deadline:
        processor.force_flush(1)
    processor.shutdown(5)
    s = processor.stats
    assert _ids(received) == [i for i in range(2_000) if i not in lost]  # all but the damaged line, in order
    assert s.dropped == len(lost) and s.drop_cause is not None and "outage buffer line unreadable" in s.drop_cause
    assert len(received) + s.dropped == 2_000 and processor.on_disk == 0


def _retrying_exporter(down: threading.Event):  # type: ignore[no-untyped-def]
    """An export like the SDK's while the collector is down: it sits in its own retries, then fails."""
    from otelflow._internal.export.pipeline import ExportError

    calls: list[int] = []
    received: list = []  # type: ignore[type-arg]

    def export(batch):  # type: ignore[no-untyped-def]
        calls.append(len(batch))
        if down.is_set():
            time.sleep(3)  # the exporter's back-off between its retries (the SDK's lasts up to its 10 s timeout)
            raise ExportError("connection refused")
        received.extend(batch)
        return True

    return export, calls, received


def test_probes_while_the_collector_is_down_are_connects_not_exports(tmp_path):  # type: ignore[no-untyped-def]
    """Was: each probe was a whole exporter call sitting in the SDK's retries for seconds, so a collector that came
    back was noticed late, and one that came back just before exit found the final probe stuck behind that call:
    everything went to disk instead. Now the first export and each probe first try a connect (``reachable``)."""
    down = threading.Event()
    down.set()
    export, calls, received = _retrying_exporter(down)
    checks: list[str | None] = []

    def reachable() -> str | None:
        checks.append("connection refused" if down.is_set() else None)
        return checks[-1]

    processor = _buffered(tmp_path, export, reachable=reachable)
    for span in _make_spans(100):
        processor.emit(span)
    assert not processor.force_flush(5) and processor.on_disk == 100
    deadline = time.monotonic() + 10
    while len(checks) < 3 and time.monotonic() < deadline:  # a few probes, each a connect refused
        processor.force_flush(0.1)
    assert len(checks) >= 3 and calls == []  # the exporter was never called while the collector was down
    assert processor.stats.first_error == "connection refused"
    down.clear()  # back just before exit: the final probe finds it
    processor.shutdown(5)
    assert _ids(received) == list(range(100)) and processor.on_disk == 0 and processor.stats.dropped == 0


def test_a_broken_reachability_check_leaves_the_decision_to_the_export(tmp_path):  # type: ignore[no-untyped-def]
    def reachable() -> str | None:
        raise RuntimeError("check broke")

    received: list = []  # type: ignore[type-arg]
    processor = _buffered(tmp_path, lambda batch: received.extend(batch) or True, reachable=reachable)
    for span in _make_spans(10):
        processor.emit(span)
    assert processor.force_flush(5)
    processor.shutdown(5)
    assert _ids(received) == list(range(10))


def test_a_stalled_collector_costs_producers_nothing_and_shutdown_keeps_the_batch_in_flight(tmp_path):  # type: ignore[no-untyped-def]
    release = threading.Event()

    def stalled(batch):  # type: ignore[no-untyped-def]
        release.wait(30)  # accepts the connection, never answers
        return True

    # The export never returns while the producers run: a full queue must be written to disk, not waited out
    # (the 1 s max_block would run out: a drop).
    processor = _buffered(tmp_path, stalled, max_queue_size=512, max_export_batch_size=128, max_block_seconds=1)
    _emit_until_a_drop(processor, _make_spans(4_000))
    started = time.monotonic()
    processor.shutdown(1.0)
    assert time.monotonic() - started < 2.5
    s = processor.stats
    assert s.dropped == 0 and s.exported == 0
    assert processor.on_disk == 4_000  # the batch in flight is kept too: its fate is unknown
    release.set()


def test_a_request_too_large_is_halved_until_it_fits(tmp_path):  # type: ignore[no-untyped-def]
    from otelflow._internal.export.pipeline import ExportError

    received: list = []  # type: ignore[type-arg]

    def picky(batch):  # type: ignore[no-untyped-def]
        if len(batch) > 10:
            raise ExportError("message too large", too_large=True)
        received.extend(batch)
        return True

    processor = _buffered(tmp_path, picky)
    for span in _make_spans(300):
        processor.emit(span)
    assert processor.force_flush(10)
    processor.shutdown(5)
    assert _ids(received) == list(range(300))
    assert processor.stats.dropped == 0 and processor.stats.failed_exports == 0


def test_the_buffer_bound_drops_oldest_first_and_counts_once(tmp_path):  # type: ignore[no-untyped-def]
    from otelflow._internal.export.pipeline import ExportError

    def dead(batch):  # type: ignore[no-untyped-def]
        raise ExportError("connection refused")

    processor = _buffered(tmp_path, dead, max_bytes=100_000, max_export_batch_size=50)
    for span in _make_spans(2_000):
        processor.emit(span)
    processor.shutdown(5)
    s = processor.stats
    assert s.dropped > 0 and s.drop_cause is not None and "outage buffer full" in s.drop_cause
    assert s.dropped + processor.on_disk == 2_000
    from otelflow._internal.export.ship import ship_directory

    received: list = []  # type: ignore[type-arg]
    ship_directory(tmp_path, "traces", lambda batch: received.extend(batch) or True)
    assert _ids(received) == list(range(s.dropped, 2_000))  # the newest are kept


def test_a_forked_child_never_resends_or_deletes_the_parents_buffer(tmp_path):  # type: ignore[no-untyped-def]
    from otelflow._internal.export.pipeline import ExportError

    def dead(batch):  # type: ignore[no-untyped-def]
        raise ExportError("connection refused")

    processor = _buffered(tmp_path, dead)
    spans = _make_spans(101)
    for span in spans[:100]:
        processor.emit(span)
    processor.force_flush(5)
    assert processor.on_disk == 100
    parent_files = sorted(tmp_path.glob("traces-*.jsonl"))
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: a fresh, empty buffer in a file of its own
        try:
            processor.emit(spans[100])
            processor.force_flush(5)
            ok = processor.on_disk == 1 and all(p.exists() for p in parent_files)
            processor.shutdown(2)
            os.write(write_fd, b"ok" if ok else b"no")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read_fd, 2) == b"ok"
    processor.shutdown(2)
    assert processor.on_disk == 100 and all(p.exists() for p in parent_files)
    assert len(list(tmp_path.glob("traces-*.jsonl"))) == len(parent_files) + 1


# --- re-sending the outage buffer: lines joined into requests ------------------------------------------------


def _one_span_lines(tmp_path, count):  # type: ignore[no-untyped-def]
    """An outage buffer holding ``count`` lines of one span each (what a slow flow leaves during an outage)."""
    from otelflow._internal.export.outage import OutageBuffer
    from otelflow._internal.spool.otlp_json import encode_spans

    buffer = OutageBuffer(tmp_path, "traces", encode_spans, max_bytes=1 << 30)
    spans = _make_spans(count)
    for span in spans:
        buffer.append([span])
    return buffer, spans


def test_the_buffer_joins_whole_lines_up_to_a_batch_and_commits_them(tmp_path):  # type: ignore[no-untyped-def]
    from otelflow._internal.export import ship

    buffer, _ = _one_span_lines(tmp_path, 10)
    items, skipped, _ = buffer.peek(4)
    assert items is not None and _ids(items) == [0, 1, 2, 3] and skipped == 0 and buffer.joined == 4
    assert buffer.commit() == 4 and buffer.pending_items == 6
    (path,) = tmp_path.glob("traces-*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    assert ship.read_progress(path) == sum(len(line) for line in lines[:4])  # durably past the four lines
    buffer.resend_bytes = len(lines[4]) * 2  # the byte bound: two lines
    items, _, _ = buffer.peek(100)
    assert items is not None and _ids(items) == [4, 5]
    buffer.join_less()  # refused as too large: one line at a time from now on
    items, _, _ = buffer.peek(100)
    assert items is not None and _ids(items) == [4] and buffer.commit() == 1


def test_lines_dropped_while_being_resent_are_told_and_not_committed_twice(tmp_path):  # type: ignore[no-untyped-def]
    buffer, spans = _one_span_lines(tmp_path, 10)
    items, _, _ = buffer.peek(5)
    assert items is not None and _ids(items) == [0, 1, 2, 3, 4]
    buffer.max_bytes = buffer.pending_bytes  # full: the next line pushes the oldest (being re-sent) out
    assert buffer.append(spans[:1], in_flight=True) == 1
    assert buffer.inflight_dropped == 1 and buffer.pending_items == 10
    assert buffer.commit() == 4  # the four still on disk, not the dropped one, and not line 5
    items, _, _ = buffer.peek(100)
    assert items is not None and _ids(items) == [5, 6, 7, 8, 9, 0]


def test_an_unreadable_line_ends_a_join_and_is_skipped_as_the_oldest(tmp_path):  # type: ignore[no-untyped-def]
    buffer, _ = _one_span_lines(tmp_path, 6)
    (path,) = tmp_path.glob("traces-*.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    with open(path, "r+b") as handle:
        handle.seek(sum(len(line) for line in lines[:3]))
        handle.write(b"#" * 10)
    items, skipped, _ = buffer.peek(100)
    assert items is not None and _ids(items) == [0, 1, 2] and skipped == 0
    buffer.commit()
    items, skipped, error = buffer.peek(100)
    assert items is not None and _ids(items) == [4, 5] and skipped == 1 and error is not None


def test_after_an_outage_small_lines_are_resent_in_few_requests_in_order(tmp_path):  # type: ignore[no-untyped-def]
    """Was: one request per line. A slow flow's outage leaves a line of one span per worker wake-up; re-sent one
    request each, they could not all go before the process exited (the rest waited for the next process)."""
    down, received, flaky = _collector_down()
    requests: list[int] = []

    def counted(batch):  # type: ignore[no-untyped-def]
        if not down.is_set():
            requests.append(len(batch))
        return flaky(batch)

    processor = _buffered(tmp_path, counted, max_export_batch_size=256)
    for span in _make_spans(300):
        processor.emit(span)
        processor.force_flush(5)  # each span written to disk as a line of its own
    assert processor.on_disk == 300
    down.clear()
    deadline = time.monotonic() + 10
    while processor.on_disk and time.monotonic() < deadline:
        processor.force_flush(1)
    processor.shutdown(5)
    assert _ids(received) == list(range(300)) and processor.stats.dropped == 0
    assert requests == [256, 44]


def test_joined_lines_refused_as_too_large_are_resent_in_smaller_joins(tmp_path):  # type: ignore[no-untyped-def]
    """A receiver with a smaller request limit than the join's: fewer lines per request, never a reordering, a
    loop or a drop."""
    from otelflow._internal.export.pipeline import ExportError

    down, received, flaky = _collector_down()

    def small_limit(batch):  # type: ignore[no-untyped-def]
        if not down.is_set() and len(batch) > 10:
            raise ExportError("message too large", too_large=True)
        return flaky(batch)

    processor = _buffered(tmp_path, small_limit, max_export_batch_size=256)
    for span in _make_spans(100):
        processor.emit(span)
        processor.force_flush(5)
    down.clear()
    deadline = time.monotonic() + 10
    while processor.on_disk and time.monotonic() < deadline:
        processor.force_flush(1)
    processor.shutdown(5)
    assert _ids(received) == list(range(100)) and processor.stats.dropped == 0 and processor.on_disk == 0

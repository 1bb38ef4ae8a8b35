"""The export batch processor: zero loss under a healthy-but-slow exporter, no stall behind a dead one."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence

from otelflow._internal.batching import BatchProcessor


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
    while processor.stats.queued and len(processor._queue) and time.monotonic() < deadline:
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

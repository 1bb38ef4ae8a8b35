"""The export path under real faults: full disks (a small tmpfs), a collector that is down, umask 022.

Every test runs real processes on real disks and checks the promise the README makes: each item produced is
exported, on disk, or dropped with a counted cause (``unaccounted`` is 0 in ``telemetry.stats()``), and no
line on disk is ever half a line that a later line joins.

The small disks are tmpfs mounts (this suite runs as root in CI; mounting fails the test loudly otherwise).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from otlp_receiver import OTLPReceiver

from otelflow._internal.export.outage import OutageBuffer
from otelflow._internal.spool.otlp_json import encode_spans
from otelflow._internal.spool.reader import Skipped, iter_spool
from otelflow._internal.spool.writer import SpoolWriter


class SmallDisk:
    """A 4 MiB tmpfs mounted for one test, that the test fills and frees at will."""

    def __init__(self, path: Path, size_kib: int) -> None:
        self.path = path
        self.size_kib = size_kib
        self.filler = path / ".filler"

    def fill(self, leave_bytes: int = 0) -> None:
        """Fill the disk (the filler file takes every free block), then give ``leave_bytes`` back."""
        fd = os.open(self.filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            block = b"\0" * 4096
            while True:
                try:
                    if os.write(fd, block) == 0:
                        break
                except OSError:
                    break
            if leave_bytes:
                size = os.fstat(fd).st_size
                os.ftruncate(fd, max(0, size - leave_bytes))
        finally:
            os.close(fd)

    def free(self) -> None:
        """Give every block of the filler back."""
        self.filler.unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs for the full-disk tests (they need root): {done.stderr.strip()}")
    try:
        yield SmallDisk(mount, 4096)
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _span_line(index: int, padding: int = 0) -> str:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span(f"span-{index}") as span:
        span.set_attribute("padding", "p" * padding)
    return encode_spans([span])  # type: ignore[list-item]


# --- the line writer on a real full disk ---------------------------------------------------------------------


def test_a_line_the_full_disk_refused_leaves_nothing_for_the_next_line_to_join(small_disk: SmallDisk) -> None:
    writer = SpoolWriter(small_disk.path / "spool", "traces")
    writer.write(_span_line(0))
    small_disk.fill(leave_bytes=2048)  # room for part of the next line, not all of it
    with pytest.raises(OSError):
        writer.write(_span_line(1, padding=64 * 1024))
    small_disk.free()
    writer.write(_span_line(2))
    writer.close()
    skipped = Skipped()
    names = [item["name"] for _, item in iter_spool(small_disk.path / "spool", "traces", skipped)]
    assert names == ["span-0", "span-2"]
    assert skipped.count == 0
    assert writer.path is not None and writer.path.read_bytes().endswith(b"\n")


def test_the_outage_buffer_refuses_a_batch_whole_on_a_full_disk(small_disk: SmallDisk) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    spans = []
    for index in range(3):
        with provider.get_tracer("t").start_as_current_span(f"s{index}") as span:
            span.set_attribute("padding", "p" * (40 * 1024 if index == 1 else 10))
        spans.append(span)
    buffer = OutageBuffer(small_disk.path / "buffer", "traces", encode_spans, max_bytes=10 * 1024 * 1024)
    buffer.append([spans[0]])
    small_disk.fill(leave_bytes=4096)
    with pytest.raises(OSError):
        buffer.append([spans[1]])
    small_disk.free()
    buffer.append([spans[2]])
    assert buffer.pending_items == 2
    items, unreadable, error = buffer.peek(10)
    assert (unreadable, error) == (0, None)
    assert [item.name for item in items or []] == ["s0", "s2"]


# --- whole runs: every item accounted for ---------------------------------------------------------------------

_RUN = textwrap.dedent(
    """
    import json, os, sys
    from otelflow import flow, get_run_logger, telemetry

    filler = sys.argv[1]

    def fill():
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            while os.write(fd, b"\\0" * 4096):
                pass
        except OSError:
            pass
        finally:
            os.close(fd)

    @flow
    def noisy() -> int:
        log = get_run_logger()
        for i in range(1000):
            log.info("record %d %s", i, "x" * 200)
        telemetry.flush()
        fill()  # the disk fills up mid-run ...
        for i in range(1000, 1500):
            log.info("record %d %s", i, "x" * 200)
        telemetry.flush()
        os.unlink(filler)  # ... and space comes back
        for i in range(1500, 2002):
            log.info("record %d %s", i, "x" * 200)
        return 2002

    print(noisy())
    telemetry.flush()
    print(json.dumps({s["signal"]: s for s in telemetry.stats()}))
    """
)


def _run(home: Path, filler: Path, **env: str) -> tuple[dict[str, dict[str, object]], subprocess.CompletedProcess[str]]:
    done = subprocess.run(
        [PYTHON, "-c", _RUN, str(filler)], env=subprocess_env(OTELFLOW_HOME=str(home), **env),
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0] == "2002", done.stdout  # the run never fails because of telemetry
    return json.loads(lines[1]), done


def test_a_spool_on_a_disk_that_fills_mid_run_keeps_every_exported_record_readable(small_disk: SmallDisk) -> None:
    home = small_disk.path / "home"
    stats, _done = _run(home, small_disk.filler)
    logs = stats["logs"]
    assert logs["queued"] == logs["exported"] + logs["dropped"], logs
    assert int(str(logs["dropped"])) > 0 and "No space left on device" in str(logs["drop_cause"]), logs
    skipped = Skipped()
    readable = list(iter_spool(home / "spool", "logs", skipped))
    assert skipped.count == 0
    assert len(readable) == logs["exported"]  # every record reported exported can be read back
    messages = [str(item["body"].get("stringValue", "")) for _, item in readable]
    assert sum(message.startswith("record ") for message in messages) >= 1500
    assert logs["unaccounted"] == 0, logs


def test_a_batch_neither_the_collector_nor_the_full_disk_takes_is_counted_dropped(
    small_disk: SmallDisk, tmp_path: Path
) -> None:
    home = small_disk.path / "home"
    with OTLPReceiver() as receiver:
        endpoint = receiver.endpoint
    # The receiver is stopped: its port now refuses connections (a collector that is down).
    stats, _done = _run(home, small_disk.filler, OTEL_EXPORTER_OTLP_ENDPOINT=endpoint,
                       OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS="5")
    logs = stats["logs"]
    assert logs["queued"] == logs["exported"] + logs["dropped"] + logs["on_disk"], logs
    assert logs["unaccounted"] == 0, logs
    assert int(str(logs["on_disk"])) >= 1000 and int(str(logs["dropped"])) > 0, logs
    cause = str(logs["drop_cause"])
    assert "outage buffer not writable" in cause and "No space left on device" in cause, cause

    # What the buffer kept is all readable, and `otelflow spool ship` delivers it without deleting anything unsent.
    with OTLPReceiver() as receiver:
        ship = subprocess.run(
            [PYTHON, "-m", "otelflow", "spool", "ship", "--home", str(home), "--endpoint", receiver.endpoint],
            env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )
        assert ship.returncode == 0, ship.stderr
        assert "unreadable" not in ship.stdout + ship.stderr
        received = [log for log in receiver.logs() if log.body.startswith("record ")]
    on_disk_records = int(str(logs["on_disk"]))
    assert len(received) >= on_disk_records - 50  # the run's own lines (state changes) are the rest
    assert not list((home / "buffer").glob("logs-*.jsonl"))


def test_spool_ship_on_a_full_disk_fails_cleanly_and_resumes(small_disk: SmallDisk) -> None:
    home = small_disk.path / "home"
    buffer = home / "buffer"
    writer = SpoolWriter(buffer, "traces")
    for index in range(20):
        writer.write(_span_line(index))
    writer.close()
    small_disk.fill()
    with OTLPReceiver() as receiver:
        first = subprocess.run(
            [PYTHON, "-m", "otelflow", "spool", "ship", "--home", str(home), "--endpoint", receiver.endpoint],
            env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )
        assert first.returncode == 1
        assert "Traceback" not in first.stderr
        assert "No space left on device" in first.stderr, first.stderr
        assert not [p for p in buffer.iterdir() if p.name.endswith(".tmp")]
        small_disk.free()
        second = subprocess.run(
            [PYTHON, "-m", "otelflow", "spool", "ship", "--home", str(home), "--endpoint", receiver.endpoint],
            env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )
        assert second.returncode == 0, second.stderr
        names = sorted({span.name for span in receiver.spans()})
    assert names == sorted(f"span-{index}" for index in range(20))  # at least once each (one may repeat)
    assert not list(buffer.glob("traces-*.jsonl"))


def test_spool_ship_keeps_a_file_that_holds_a_line_it_cannot_read(tmp_path: Path) -> None:
    buffer = tmp_path / "buffer"
    writer = SpoolWriter(buffer, "traces")
    writer.write(_span_line(0))
    writer.write('{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}')
    writer.write(_span_line(2))
    writer.close()
    with OTLPReceiver() as receiver:
        done = subprocess.run(
            [PYTHON, "-m", "otelflow", "spool", "ship", "--home", str(tmp_path), "--endpoint", receiver.endpoint],
            env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert sorted(span.name for span in receiver.spans()) == ["span-0", "span-2"]
    assert not list(buffer.glob("traces-*.jsonl"))
    (kept,) = buffer.glob("traces-*.jsonl.damaged")
    assert b'"zz"' in kept.read_bytes()
    assert "kept" in done.stdout + done.stderr and kept.name in done.stdout + done.stderr


# --- owner-only files ------------------------------------------------------------------------------------------


def test_files_under_the_otelflow_home_are_owner_only_whatever_the_umask(tmp_path: Path) -> None:
    home = tmp_path / "fresh" / "home"
    code = textwrap.dedent(
        """
        import os
        os.umask(0o022)
        from otelflow import flow, task, get_run_logger, telemetry
        from otelflow.transactions import transaction
        from otelflow.variables import Variable

        @task(persist_result=True)
        def step(x: int) -> int:
            get_run_logger().info("step %d", x)
            return x * 2

        @flow
        def private(x: int = 1) -> int:
            with transaction(key="k"):
                Variable.set("v", "secret", overwrite=True)
                return step(x)

        private()
        telemetry.shutdown()
        """
    )
    with OTLPReceiver() as receiver:
        endpoint = receiver.endpoint
    for extra in ({}, {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS": "2"}):
        done = subprocess.run([PYTHON, "-c", code], env=subprocess_env(OTELFLOW_HOME=str(home), **extra),
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
    subprocess.run([PYTHON, "-m", "otelflow", "runs", "--home", str(home)], env=subprocess_env(), cwd=REPO_ROOT,
                   capture_output=True, text=True, timeout=120, check=True)
    seen = {"spool": 0, "buffer": 0, "store": 0, "storage": 0}
    for path in [home, *home.rglob("*")]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode & 0o077 == 0, f"{path.relative_to(home.parent)} is {oct(mode)}"
        for key in seen:
            if key in path.name:
                seen[key] += 1
    assert stat.S_IMODE((tmp_path / "fresh").stat().st_mode) & 0o077 == 0  # a parent created for it, too
    assert all(seen.values()), seen  # the spool, the outage buffer, the store and results were all checked


@pytest.mark.parametrize("fault", ["read-only", "full"])
@pytest.mark.parametrize("collector", ["none (spool)", "down (outage buffer)"])
def test_a_home_the_disk_refuses_loses_the_telemetry_with_its_cause_never_the_run(
    tmp_path: Path, collector: str, fault: str
) -> None:
    """A read-only or full disk from the start: with the collector down too, the first batch fails to send and
    then to be kept on disk (was: forgotten, in no counter)."""
    home = tmp_path / "ro"
    home.mkdir()
    options = "size=1m,ro" if fault == "read-only" else "size=1m"
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(home)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs (the fault tests need root): {done.stderr.strip()}")
    if fault == "full":
        for folder in ("spool", "buffer"):
            (home / "home" / folder).mkdir(parents=True, mode=0o700)
        SmallDisk(home, 1024).fill()
    code = textwrap.dedent(
        """
        import json
        from otelflow import flow, task, get_run_logger, telemetry

        @task
        def step(x: int) -> int:
            get_run_logger().info("step %d", x)
            return x

        @flow
        def f() -> int:
            return sum(step(i) for i in range(3))

        print(f())
        telemetry.flush()
        print(json.dumps(telemetry.stats()))
        """
    )
    env = {"OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS": "2"}
    if collector.startswith("down"):
        with OTLPReceiver() as receiver:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint  # stopped below: a collector that is down
    try:
        run = subprocess.run([PYTHON, "-c", code], env=subprocess_env(OTELFLOW_HOME=str(home / "home"), **env),
                             cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0] == "3"
    for signal in json.loads(lines[1]):
        assert signal["queued"] > 0 and signal["exported"] == 0 and signal["on_disk"] == 0, signal
        assert signal["dropped"] == signal["queued"] and signal["unaccounted"] == 0, signal
        cause = "Read-only file system" if fault == "read-only" else "No space left on device"
        assert cause in signal["drop_cause"], signal
    assert cause in run.stderr  # the exit report says why
    if collector.startswith("down"):  # and the first failure does not claim what the disk refused
        assert "keeping it on disk" not in run.stderr and "the outage buffer cannot keep it either" in run.stderr

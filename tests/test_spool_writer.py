"""The spool writer: one file per process *start*, and a partial line never swallows the next writer's data.

Issue 11: spool files were keyed by PID; a container that runs as PID 1 restarted after a crash that left a
partial last line, appended its first batch to that line, and the batch was never read.
"""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

from conftest import PYTHON, REPO_ROOT, subprocess_env

from otelflow._internal.spool.reader import iter_spool
from otelflow._internal.spool.writer import SpoolWriter

LINE = json.dumps({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {"name": "t"},
                  "spans": [{"traceId": "0" * 31 + "1", "spanId": "0" * 15 + "1", "name": "n"}]}]}]})


def test_a_new_process_start_with_the_same_pid_writes_a_new_file(tmp_path):  # type: ignore[no-untyped-def]
    crashed = SpoolWriter(tmp_path, "traces")
    crashed.write(LINE)
    assert crashed.path is not None
    with crashed.path.open("ab") as handle:
        handle.write(LINE[:40].encode())  # killed mid-write: a partial last line
    crashed.forget_after_fork()  # no close(): the process died (its descriptor went with it)

    restarted = SpoolWriter(tmp_path, "traces")  # same PID (as PID 1 in a container), a new start
    restarted.write(LINE)
    restarted.close()
    assert restarted.path != crashed.path
    assert restarted.path is not None and f"-{os.getpid()}-" in restarted.path.name
    assert restarted.path.name.startswith("traces-") and restarted.path.suffix == ".jsonl"
    # Both complete lines are readable; the partial one is skipped.
    assert len(list(iter_spool(tmp_path, "traces"))) == 2


def test_appending_to_an_existing_file_first_cuts_its_partial_line(tmp_path):  # type: ignore[no-untyped-def]
    writer = SpoolWriter(tmp_path, "logs")
    writer.write(LINE.replace("resourceSpans", "resourceLogs"))
    writer.close()
    assert writer.path is not None
    with writer.path.open("ab") as handle:
        handle.write(b'{"resourceLogs": [')
    writer.write(LINE)  # reopens the same file (same writer, same start)
    writer.close()
    lines = writer.path.read_bytes().split(b"\n")
    assert lines == [LINE.replace("resourceSpans", "resourceLogs").encode(), LINE.encode(), b""]


def test_a_real_process_killed_mid_spool_then_restarted_loses_nothing_readable(tmp_path):  # type: ignore[no-untyped-def]
    code = textwrap.dedent(
        """
        import sys
        from otelflow import flow, task, telemetry

        @task
        def t(i):
            return i

        @flow
        def f():
            return sum(t(i) for i in range(5))

        print(f())
        telemetry.flush()
        """
    )
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOG_RUN_EVENTS="false")
    subprocess.run([PYTHON, "-c", code], env=env, check=True, timeout=120, cwd=REPO_ROOT, capture_output=True)
    (first,) = sorted((tmp_path / "spool").glob("traces-*.jsonl"))
    with first.open("ab") as handle:
        handle.write(b'{"resourceSpans": [{"reso')  # what a SIGKILL mid-write leaves
    subprocess.run([PYTHON, "-c", code], env=env, check=True, timeout=120, cwd=REPO_ROOT, capture_output=True)
    files = sorted((tmp_path / "spool").glob("traces-*.jsonl"))
    assert len(files) == 2
    spans = [item for _, item in iter_spool(tmp_path / "spool", "traces")]
    assert len(spans) == 14  # 2 runs x (1 flow + its pending record + 5 tasks): the second run's first batch intact
    runs = subprocess.run([PYTHON, "-m", "otelflow", "runs", "--json"], env=env, capture_output=True, text=True,
                          timeout=60, cwd=REPO_ROOT)
    assert runs.returncode == 0 and len(runs.stdout.splitlines()) == 2, runs.stderr


def test_file_names_are_unique_per_start_not_only_per_pid(tmp_path: Path):  # type: ignore[no-untyped-def]
    names = set()
    for _ in range(20):
        writer = SpoolWriter(tmp_path, "traces")
        writer.write(LINE)
        writer.close()
        assert writer.path is not None
        names.add(writer.path.name)
    assert len(names) == 20


def test_a_child_forked_while_the_parent_was_writing_can_write(tmp_path):  # type: ignore[no-untyped-def]
    """Was: the child inherited the lock held by the parent's export thread at the fork and hung on its first write
    (a child writes each item through to disk, so this hung the user's code)."""
    writer = SpoolWriter(tmp_path, "logs")
    writer.write(LINE)
    with writer._lock:  # the parent's export thread is mid-write when the program forks
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports by its exit status
            import signal

            signal.alarm(10)  # a hang ends the child with SIGALRM, which the parent sees
            try:
                writer.write(LINE)
                os._exit(0 if writer.path is not None and f"-{os.getpid()}-" in writer.path.name else 3)
            except BaseException:
                os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    writer.close()
    assert len(sorted(tmp_path.glob("logs-*.jsonl"))) == 2  # the parent's file and the child's own

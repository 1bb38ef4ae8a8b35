"""A flow stopped by SIGTERM (Kubernetes, systemd, Docker) or SIGKILL, in a real subprocess, keeps its record.

SIGTERM: every open run ends Crashed with Prefect's message, the spans are flushed, and the process exits with
the usual status (143), or the application's own handler runs. SIGKILL: nothing can run, but the pending record
exported when the flow started is already in the spool.
"""

from __future__ import annotations

import os
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env

from otelflow import semconv as sc
from otelflow._internal.spool.reader import decode_attributes, read_spool
from otelflow.engine import PENDING_RECORD_NS

SCRIPT = textwrap.dedent('''
    import signal, sys, threading
    from otelflow import flow, task, get_run_logger

    if "--app-handler" in sys.argv:
        def app_handler(signum, frame):
            print("app handler ran", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, app_handler)

    @task
    def quick(i):
        get_run_logger().info("quick %s done", i)
        return i

    started = threading.Event()

    @task
    def endless():
        started.set()
        threading.Event().wait(120)

    @flow
    def long_job():
        [f.result() for f in quick.map(range(3))]
        endless.submit()
        started.wait(30)
        print("ready", flush=True)
        threading.Event().wait(120)

    long_job()
''')

TERMINATED = "Execution was aborted by a termination signal."


def _start(tmp_path: Path, *args: str, **env: str) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "job.py"
    script.write_text(SCRIPT)
    home = tmp_path / "home"
    proc = subprocess.Popen(
        [PYTHON, str(script), *args], env=subprocess_env(OTELFLOW_HOME=str(home), **env),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
    return proc, home / "spool"


def _spans(spool: Path) -> list[dict[str, Any]]:
    spans = []
    for _resource, item in read_spool(spool, "traces"):
        item = dict(item)
        item["attrs"] = decode_attributes(item.get("attributes"))
        spans.append(item)
    return spans


def test_sigterm_ends_every_open_run_crashed_and_flushes(tmp_path: Path) -> None:
    proc, spool = _start(tmp_path)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM, stderr  # died of SIGTERM, as it would without otelflow
    spans = [s for s in _spans(spool) if not s["attrs"].get(sc.SPAN_PENDING)]
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
    (flow_span,) = by_name["flow long-job"]
    (endless,) = by_name["task endless"]
    for crashed in (flow_span, endless):
        assert crashed["attrs"][sc.RUN_STATE] == "Crashed"
        assert crashed["status"]["message"] == TERMINATED
        assert int(crashed["endTimeUnixNano"]) >= int(crashed["startTimeUnixNano"])
    assert [s["attrs"][sc.RUN_STATE] for s in by_name["task quick"]] == ["Completed"] * 3
    # The queued records were flushed, each exactly once. Match whole bodies: a random flow run name can contain
    # "quick" too ("Beginning flow run 'quick-fox' ..."), which made a substring count flaky.
    bodies = [item.get("body", {}).get("stringValue") for _, item in read_spool(spool, "logs")]
    assert sorted(b for b in bodies if b and b.startswith("quick ")) == [f"quick {i} done" for i in range(3)], bodies


def test_sigterm_chains_the_applications_handler(tmp_path: Path) -> None:
    proc, spool = _start(tmp_path, "--app-handler")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 3, stderr  # the application's handler decided the exit status
    assert "app handler ran" in stdout
    states = {s["name"]: s["attrs"][sc.RUN_STATE] for s in _spans(spool) if not s["attrs"].get(sc.SPAN_PENDING)}
    assert states["flow long-job"] == "Crashed"


def test_handling_can_be_turned_off(tmp_path: Path) -> None:
    proc, spool = _start(tmp_path, OTELFLOW_HANDLE_SIGNALS="false")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    finished_flows = [s for s in _spans(spool) if s["name"] == "flow long-job" and not s["attrs"].get(sc.SPAN_PENDING)]
    assert finished_flows == []  # Python's default: the open run's span never ended


def test_sigkill_leaves_the_pending_record_of_the_running_flow(tmp_path: Path) -> None:
    proc, spool = _start(tmp_path)
    deadline = time.monotonic() + 20
    pending: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pending:
        pending = [s for s in _spans(spool) if s["attrs"].get(sc.SPAN_PENDING) and s["name"] == "flow long-job"]
        if not pending:
            time.sleep(0.1)  # polling for a file the exporter writes on its own schedule
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert pending, "the flow's pending record never reached the spool"
    (record,) = pending
    assert int(record["endTimeUnixNano"]) - int(record["startTimeUnixNano"]) == PENDING_RECORD_NS  # 1 µs
    assert record["attrs"][sc.RUN_TYPE] == "flow" and record["attrs"][sc.FLOW_NAME] == "long-job"
    assert sc.PENDING_PARENT_SPAN_ID not in record["attrs"]  # a root run: no parent to name
    real = [s for s in _spans(spool) if s["name"] == "flow long-job" and not s["attrs"].get(sc.SPAN_PENDING)]
    assert real == []  # killed: only the pending record says the run existed


@pytest.mark.parametrize("threshold", ["0.2"])
def test_a_long_task_gets_a_pending_record(tmp_path: Path, threshold: str) -> None:
    proc, spool = _start(tmp_path, OTELFLOW_PENDING_SPAN_AFTER_SECONDS=threshold)
    deadline = time.monotonic() + 20
    pending: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not pending:
        pending = [s for s in _spans(spool) if s["attrs"].get(sc.SPAN_PENDING) and s["name"] == "task endless"]
        if not pending:
            time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert len(pending) == 1
    quick_pending = [s for s in _spans(spool) if s["attrs"].get(sc.SPAN_PENDING) and s["name"] == "task quick"]
    assert quick_pending == []  # short task runs pay nothing
    (endless,) = [s for s in _spans(spool) if s["name"] == "task endless" and not s["attrs"].get(sc.SPAN_PENDING)]
    assert pending[0]["parentSpanId"] == endless["spanId"]  # superseded by the real span it names as parent


PAUSED_SCRIPT = textwrap.dedent('''
    import asyncio, sys
    from otelflow import flow
    from otelflow.flow_runs import pause_flow_run

    @flow
    async def waits_async():
        print("ready", flush=True)
        await pause_flow_run(timeout=600)

    @flow
    def waits_sync():
        print("ready", flush=True)
        pause_flow_run(timeout=600)

    if sys.argv[1] == "async":
        asyncio.run(waits_async())
    else:
        waits_sync()
''')


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_ends_a_paused_flow_at_once(tmp_path: Path, kind: str) -> None:
    # A paused async flow waited in asyncio's default executor, which asyncio.run joins on the way out: the process
    # logged Crashed, then stayed alive until the pause timed out (600 s here). communicate() bounds the wait.
    script = tmp_path / "paused.py"
    script.write_text(PAUSED_SCRIPT)
    home = tmp_path / "home"
    proc = subprocess.Popen([PYTHON, str(script), kind], env=subprocess_env(OTELFLOW_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, stderr
    (flow_span,) = [s for s in _spans(home / "spool") if s["name"] == f"flow waits-{kind}"
                    and not s["attrs"].get(sc.SPAN_PENDING)]
    assert flow_span["attrs"][sc.RUN_STATE] == "Crashed"
    assert flow_span["status"]["message"] == TERMINATED

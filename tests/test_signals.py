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


def _sigterm_when_ready(tmp_path: Path, text: str, *args: str) -> Path:
    """Run the script ``text``, send it SIGTERM once it prints "ready", check it died of it; its spool."""
    script = tmp_path / "job.py"
    script.write_text(text)
    home = tmp_path / "home"
    proc = subprocess.Popen([PYTHON, str(script), *args], env=subprocess_env(OTELFLOW_HOME=str(home)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, stderr
    return home / "spool"


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_sigterm_ends_a_paused_flow_at_once(tmp_path: Path, kind: str) -> None:
    # A paused async flow waited in asyncio's default executor, which asyncio.run joins on the way out: the process
    # logged Crashed, then stayed alive until the pause timed out (600 s here). communicate() bounds the wait.
    spool = _sigterm_when_ready(tmp_path, PAUSED_SCRIPT, kind)
    (flow_span,) = [s for s in _spans(spool) if s["name"] == f"flow waits-{kind}"
                    and not s["attrs"].get(sc.SPAN_PENDING)]
    assert flow_span["attrs"][sc.RUN_STATE] == "Crashed"
    assert flow_span["status"]["message"] == TERMINATED


AFTER_SCRIPT = textwrap.dedent('''
    import threading
    from otelflow import flow, get_run_logger

    @flow
    def finished():
        get_run_logger().info("the last line")

    finished()
    print("ready", flush=True)
    threading.Event().wait(60)
''')


def test_sigterm_after_the_runs_ended_flushes_them_before_dying(tmp_path: Path) -> None:
    # No run left to end: the signal takes its default action (death, status 143), but what the runs that ended
    # just before left in the export queues goes to the spool first (it died with the process).
    spool = _sigterm_when_ready(tmp_path, AFTER_SCRIPT)
    (flow_span,) = [s for s in _spans(spool) if s["name"] == "flow finished" and not s["attrs"].get(sc.SPAN_PENDING)]
    assert flow_span["attrs"][sc.RUN_STATE] == "Completed"
    bodies = [record.get("body", {}).get("stringValue") for _resource, record in read_spool(spool, "logs")]
    assert "the last line" in bodies


STUCK_SCRIPT = textwrap.dedent('''
    import logging, time
    from otelflow import flow, get_run_logger

    class Stuck(logging.Handler):
        def emit(self, record):
            if record.getMessage() == "this line hangs":
                print("ready", flush=True)
                time.sleep(120)  # a handler that does not come back (a dead log server, a full pipe)

    logging.getLogger("otelflow.flow_runs").addHandler(Stuck())

    @flow
    def stuck():
        get_run_logger().info("this line hangs")

    stuck()
''')


def test_a_termination_put_off_too_long_is_raised_where_it_is(tmp_path: Path) -> None:
    # Inside a logging handler the exception waits for the handler to return; one that never does gets it after
    # signals.DEFER_LIMIT_S, rather than the process ignoring SIGTERM (communicate() would time out first).
    spool = _sigterm_when_ready(tmp_path, STUCK_SCRIPT)
    (flow_span,) = [s for s in _spans(spool) if s["name"] == "flow stuck" and not s["attrs"].get(sc.SPAN_PENDING)]
    assert flow_span["attrs"][sc.RUN_STATE] == "Crashed"
    assert flow_span["status"]["message"] == TERMINATED


# Where the exception lands. A signal handler runs between two bytecodes of whatever the main thread does; here the
# handler is called, in a real subprocess, with the frame the main thread is in at one chosen bytecode (exactly what
# it receives when a signal arrives at that moment). Raised there, the exception broke the run's record: an import
# left the import lock held (the export thread's next import waited on it: the spool lost the flow span and its
# logs), a Condition left its lock held or released twice, a log record was lost half emitted.
LANDING_SCRIPT = textwrap.dedent('''
    import dis, linecache, signal, sys
    from otelflow import flow, get_run_logger
    from otelflow.flow_runs import pause_flow_run

    module, qualnames, line_text, opname = sys.argv[1], sys.argv[2].split("|"), sys.argv[3], sys.argv[4]
    landed = False

    def land(frame, event, arg):
        global landed
        frame.f_trace_opcodes = True
        if (event == "opcode" and not landed and frame.f_code.co_qualname in qualnames
                and str(frame.f_globals.get("__name__")).startswith(module)
                and line_text in linecache.getline(frame.f_code.co_filename, frame.f_lineno)
                and (not opname or dis.opname[frame.f_code.co_code[frame.f_lasti]] == opname)):
            landed = True
            sys.settrace(None)
            callers = []
            caller = frame.f_back
            while caller is not None and len(callers) < 4:
                callers.append(caller.f_code.co_qualname)
                caller = caller.f_back
            print(f"landing in {frame.f_code.co_qualname} line {frame.f_lineno}, called by {callers}", file=sys.stderr,
                  flush=True)
            signal.getsignal(signal.SIGTERM)(signal.SIGTERM, frame)  # what the handler gets from a signal now
        return None if landed else land

    @flow
    def lands():
        sys.settrace(land)
        sys._getframe().f_trace = land
        get_run_logger().info("before the pause")
        import landing_fresh_module  # noqa: F401 - a module nobody imported yet
        pause_flow_run(timeout=30)

    lands()
''')


@pytest.mark.parametrize(("module", "qualnames", "line_text", "opname"), [
    # the global import lock, about to be released, while the flow imports a module
    ("importlib._bootstrap", "_ImportLockContext.__exit__", "", ""),
    # Condition.wait, its lock just released, before the try that takes it back (then `with` released it again)
    ("threading", "Condition.wait", "self._release_save()", "STORE_FAST"),
    # Condition.__enter__, the lock just taken, before `with` holds it (nobody would ever release it)
    ("threading", "Condition.__enter__", "", "RETURN_VALUE"),
    # the run log handler, at the first bytecode of emitting "before the pause"
    ("otelflow.logging.handlers", "OTelRunLogHandler.emit|OTelRunLogHandler.emit_plain", "", ""),
], ids=["in-an-import", "in-condition-wait", "in-condition-enter", "in-the-log-handler"])
def test_a_termination_landing_mid_step_waits_for_the_step(tmp_path: Path, module: str, qualnames: str,
                                                         line_text: str, opname: str) -> None:
    script = tmp_path / "lands.py"
    script.write_text(LANDING_SCRIPT)
    (tmp_path / "landing_fresh_module.py").write_text("VALUE = 1\n")
    home = tmp_path / "home"
    proc = subprocess.run([PYTHON, str(script), module, qualnames, line_text, opname],
                          env=subprocess_env(OTELFLOW_HOME=str(home)), capture_output=True, text=True, timeout=60)
    assert "landing in" in proc.stderr, proc.stderr  # the chosen bytecode was reached
    assert proc.returncode == -signal.SIGTERM, proc.stderr
    assert "dropped" not in proc.stderr
    spool = home / "spool"
    (flow_span,) = [s for s in _spans(spool) if s["name"] == "flow lands" and not s["attrs"].get(sc.SPAN_PENDING)]
    assert flow_span["attrs"][sc.RUN_STATE] == "Crashed"
    assert flow_span["status"]["message"] == TERMINATED
    bodies = [record.get("body", {}).get("stringValue") for _resource, record in read_spool(spool, "logs")]
    assert "before the pause" in bodies
    assert "Crash detected! Execution was aborted by a termination signal." in bodies


def test_where_a_termination_may_land(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # safe_to_interrupt, on the frames a signal handler would get at each place.
    import logging
    import sys
    import threading

    from otelflow import flow, get_run_logger, task
    from otelflow._internal.runs.signals import safe_to_interrupt

    verdicts: dict[str, bool] = {}

    class Recording(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            verdicts.setdefault("in a logging handler", safe_to_interrupt(sys._getframe()))

    (tmp_path / "landing_probe.py").write_text(
        "import sys\nfrom otelflow._internal.runs.signals import safe_to_interrupt\n"
        "VERDICT = safe_to_interrupt(sys._getframe())\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    def hook(flow_: Any, flow_run: Any, state: Any) -> None:
        verdicts["in a state hook"] = safe_to_interrupt(sys._getframe())

    @task
    def body() -> None:
        verdicts["in a task's body"] = safe_to_interrupt(sys._getframe())

    @flow(on_completion=[hook])
    def landing() -> None:
        verdicts["in a flow's body"] = safe_to_interrupt(sys._getframe())
        body()
        import landing_probe

        verdicts["in a module being imported"] = landing_probe.VERDICT
        handler = Recording()
        logging.getLogger("otelflow").addHandler(handler)
        try:
            get_run_logger().info("a line")
        finally:
            logging.getLogger("otelflow").removeHandler(handler)
        # the main thread blocked in a wait, as the signal finds it
        waiting, release = threading.Event(), threading.Event()

        def look() -> None:
            waiting.wait(10)
            frame = sys._current_frames()[threading.main_thread().ident or 0]
            while "wait" not in frame.f_code.co_name:  # until the main thread is in Event.wait
                frame = sys._current_frames()[threading.main_thread().ident or 0]
            verdicts["blocked in Event.wait"] = safe_to_interrupt(frame)
            release.set()

        looker = threading.Thread(target=look)
        looker.start()
        waiting.set()
        release.wait(10)
        looker.join()
        # a Condition half entered: its lock just taken (by the lock's own __enter__), `with` not yet holding it
        class SpyLock:
            def __init__(self) -> None:
                self._lock = threading.Lock()
                self.acquire, self.release = self._lock.acquire, self._lock.release

            def __enter__(self) -> bool:
                self._lock.acquire()
                verdicts["in Condition.__enter__, lock taken"] = safe_to_interrupt(sys._getframe(1))
                return True

            def __exit__(self, *exc: object) -> None:
                self._lock.release()

        with threading.Condition(SpyLock()):  # type: ignore[arg-type]
            pass

    landing()
    assert verdicts == {
        "in a flow's body": True,
        "in a task's body": True,
        "in a state hook": True,
        "blocked in Event.wait": True,
        "in a module being imported": False,
        "in a logging handler": False,
        "in Condition.__enter__, lock taken": False,
    }


def test_a_delivery_inside_the_handler_is_left_to_the_call_below(monkeypatch: pytest.MonkeyPatch) -> None:
    # Starting the redelivery thread waits inside the handler, where the next redelivery can arrive. From there the
    # stack walk sees the handler's frames, not the torn spot below them: the nested call must not raise.
    import sys

    from otelflow._internal.runs import signals

    monkeypatch.setattr(signals, "_has_open_runs", lambda: True)
    monkeypatch.setattr(signals, "_terminating", None)
    assert signals.safe_to_interrupt(sys._getframe())  # here, the call below would raise
    monkeypatch.setattr(signals, "_handling", True)
    signals._handle(signal.SIGTERM, sys._getframe())
    assert signals.terminating() is None

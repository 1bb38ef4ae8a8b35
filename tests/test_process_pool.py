"""ProcessPoolTaskRunner with real worker processes: task runs execute in spawned workers, their spans join the
flow's trace (each process writing its own spool file, or sending OTLP), run logs correlate, states come back.

Flows run in a child Python process (clean global OTel providers; its pool workers inherit its environment), as in
tests/test_dask.py; what they exported is read back from the spool or from the loopback OTLP receiver.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import pickle
import signal
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env
from otlp_receiver import OTLPReceiver, ReceivedSpan

from otelflow import semconv, task
from otelflow._internal.spool.reader import LogRecord, Skipped, SpanRecord, parse_log_line, parse_span_line, spool_files
from otelflow.task_runners import ProcessPoolTaskRunner

pytestmark = pytest.mark.slow

HEADER = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import signal
    import sys
    import threading
    import time

    from opentelemetry import trace

    from otelflow import allow_failure, flow, get_run_logger, tags, task
    from otelflow.task_runners import ProcessPoolTaskRunner
    """
)


def _run(tmp_path: Path, body: str, **env: str) -> dict[str, Any]:
    """Run ``HEADER + body`` as a script (its last stdout line is JSON); return that JSON."""
    script = tmp_path / "pool_flow.py"
    script.write_text(HEADER + textwrap.dedent(body))
    proc = subprocess.run(
        [PYTHON, str(script)], env=subprocess_env(**env), cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def _pid_of(path: Path) -> int:
    return int(path.name.split("-")[2])  # <signal>-<date>-<pid>-<start>-<part>.jsonl


def _spool_spans(home: Path) -> list[SpanRecord]:
    """Every final span in the spool, each with ``source`` = the file it was in (pending records left out)."""
    spans = []
    for path in spool_files(home / "spool", "traces"):
        for line in path.read_bytes().splitlines():
            for span in parse_span_line(line, Skipped(), path.name):
                if not span.attributes.get(semconv.SPAN_PENDING):
                    span.source = path.name
                    spans.append(span)
    return spans


def _spool_logs(home: Path) -> list[LogRecord]:
    return [
        record
        for path in spool_files(home / "spool", "logs")
        for line in path.read_bytes().splitlines()
        for record in parse_log_line(line, Skipped(), path.name)
    ]


def _named(spans: list[Any], name: str) -> list[Any]:
    return [s for s in spans if s.name == name]


def test_task_runs_in_worker_processes_join_the_flow_trace_in_their_own_spool_files(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        @task
        def square(x: int) -> int:
            with trace.get_tracer("pool-test").start_as_current_span("work") as span:
                span.set_attribute("test.pid", os.getpid())
                time.sleep(0.05)  # some work, so that both workers get a share
                get_run_logger().info("squared %s", x)
            print("printed", x)  # the flow's log_prints reaches the workers
            return x * x

        @task
        def total(values: list) -> int:
            return sum(values)

        @task
        async def increment(x: int) -> int:
            await asyncio.sleep(0)
            return x + 1

        @task
        def read_env() -> str:
            return os.environ.get("POOL_TEST_VALUE", "unset")

        @task
        def submits_its_own() -> int:
            return total.submit([20, 22]).result()  # from a worker: a pool of its own, as Prefect

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2), log_prints=True)
        def pool_flow() -> dict:
            with tags("pool-test"):
                squares = square.map(range(6))
                summed = total.submit(squares)  # futures as arguments: the worker gets their states
                plus_one = increment.submit(summed)
                os.environ["POOL_TEST_VALUE"] = "set after the workers started"
                return {
                    "squares": squares.result(),
                    "plus_one": plus_one.result(),
                    "env": read_env.submit().result(),
                    "nested": submits_its_own.submit().result(),
                    "pid": os.getpid(),
                }

        if __name__ == "__main__":  # workers are spawned: they import this script and must not run the flow
            print(json.dumps(pool_flow()))
    """)
    assert result["squares"] == [x * x for x in range(6)]
    assert result["plus_one"] == 56
    assert result["env"] == "set after the workers started"
    assert result["nested"] == 42

    home = Path(os.environ["OTELFLOW_HOME"])
    spans = _spool_spans(home)
    (flow_span,) = _named(spans, "flow pool-flow")
    assert _pid_of(home / "spool" / flow_span.source) == result["pid"]
    task_spans = [s for s in spans if s.attributes.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_TASK]
    assert len(task_spans) == 6 + 1 + 1 + 1 + 1 + 1  # squares, total, increment, read_env, submits_its_own, nested
    for span in task_spans:
        assert span.trace_id == flow_span.trace_id
        assert span.attributes[semconv.FLOW_RUN_ID] == flow_span.attributes[semconv.RUN_ID]
        assert span.attributes[semconv.RUN_STATE] == "Completed"
        assert _pid_of(home / "spool" / span.source) != result["pid"], span.name  # written by a worker
    (outer,) = _named(spans, "task submits_its_own")
    nested = [s for s in _named(spans, "task total") if s.parent_id == outer.span_id]
    assert len(nested) == 1  # the run submitted from a worker is a child of the run that submitted it
    assert all(s.parent_id == flow_span.span_id for s in task_spans if s is not nested[0])
    assert all(s.attributes[semconv.TAGS] == ["pool-test"] for s in task_spans)

    squares = _named(spans, "task square")
    assert sorted(s.attributes[semconv.TASK_MAP_INDEX] for s in squares) == list(range(6))
    work = _named(spans, "work")
    assert {w.parent_id for w in work} == {s.span_id for s in squares}
    pids = {w.attributes["test.pid"] for w in work}
    assert len(pids) == 2 and result["pid"] not in pids  # both workers took a share
    assert {_pid_of(home / "spool" / w.source) for w in work} == pids  # each process has its own spool file

    # The futures passed between runs became span links, as in the flow's process.
    total_span = next(s for s in _named(spans, "task total") if s.parent_id == flow_span.span_id)
    assert {(span_id, attrs[semconv.INPUT_NAME]) for _, span_id, attrs in total_span.links} == {
        (s.span_id, "values") for s in squares
    }
    (increment_span,) = _named(spans, "task increment")
    assert [link[1] for link in increment_span.links] == [total_span.span_id]

    # Run logs (and the printed lines) in the workers correlate with their task span and the flow run.
    logs = [r for r in _spool_logs(home) if r.body.startswith(("squared", "printed"))]
    assert len(logs) == 12
    square_ids = {s.span_id for s in squares}
    for record in logs:
        assert record.trace_id == flow_span.trace_id and record.span_id in square_ids
        assert record.attributes[semconv.FLOW_RUN_ID] == flow_span.attributes[semconv.RUN_ID]


def test_failures_retries_and_timeouts_happen_in_the_worker_and_come_back_over_otlp(
    otlp_receiver: OTLPReceiver, tmp_path: Path
) -> None:
    result = _run(tmp_path, """
        attempts = []  # per process: retries run in the worker that ran the first attempt

        @task(retries=1)
        def flaky() -> list:
            attempts.append(os.getpid())
            if len(attempts) == 1:
                raise ValueError("first attempt fails")
            return attempts

        @task(timeout_seconds=0.3)
        def sleepy() -> None:
            for _ in range(100):
                time.sleep(0.05)

        class NeedsTwo(Exception):
            def __init__(self, a: int, b: int) -> None:  # pickles, but does not unpickle
                super().__init__(f"needs {a} and {b}")

        @task
        def explode() -> None:
            raise NeedsTwo(1, 2)

        @task
        def describe(value: object) -> str:
            return repr(value)

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=2))
        def failing_flow() -> dict:
            flaky_run, sleepy_run, failed = flaky.submit(), sleepy.submit(), explode.submit()
            skipped = describe.submit(failed)
            allowed = describe.submit(allow_failure(failed))
            sleepy_run.wait()
            try:
                failed.result()
            except Exception as exc:
                raised = f"{type(exc).__name__}: {exc}"
            return {
                "flaky": flaky_run.result(),
                "flaky_attempts": flaky_run.task_run.run_count,
                "sleepy": [sleepy_run.state.name, sleepy_run.state.message],
                "failed": [failed.state.name, failed.state.message],
                "raised": raised,
                "skipped": skipped.state.name,
                "allowed": allowed.result(),
                "pid": os.getpid(),
            }

        if __name__ == "__main__":
            print(json.dumps(failing_flow()))
    """, OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint, OTEL_SERVICE_NAME="pool-flow",
        OTEL_METRICS_EXPORTER="none")
    first, second = result["flaky"]
    assert first == second != result["pid"]  # both attempts in one worker process
    assert result["flaky_attempts"] == 2
    assert result["sleepy"] == ["TimedOut", "Task run exceeded timeout of 0.3 second(s)"]
    assert result["failed"][0] == "Failed" and "needs 1 and 2" in result["failed"][1]
    assert result["raised"] == "RuntimeError: NeedsTwo: needs 1 and 2"  # could not be unpickled in the flow
    assert result["skipped"] == "NotReady"
    assert result["allowed"] == "RuntimeError('NeedsTwo: needs 1 and 2')"

    def complete() -> list[ReceivedSpan] | None:
        spans = otlp_receiver.spans()
        return spans if len(_named(spans, "task describe")) == 2 and _named(spans, "flow failing-flow") else None

    spans = otlp_receiver.wait_for(complete, timeout=30)
    (flow_span,) = _named(spans, "flow failing-flow")
    for span in spans:
        assert span.trace_id == flow_span.trace_id
        assert span.resource["service.name"] == "pool-flow"  # workers read the same OTEL_* settings
    (flaky_span,) = _named(spans, "task flaky")
    assert flaky_span.attributes[semconv.RUN_ATTEMPT] == 2
    assert "Retrying" in [event.name for event in flaky_span.events]
    (sleepy_span,) = _named(spans, "task sleepy")
    assert sleepy_span.attributes[semconv.RUN_STATE] == "TimedOut" and sleepy_span.status_code == 2
    (explode_span,) = _named(spans, "task explode")
    assert explode_span.attributes[semconv.ERROR_TYPE] == "NeedsTwo"  # the real type, recorded in the worker
    assert sorted(s.attributes[semconv.RUN_STATE] for s in _named(spans, "task describe")) == ["Completed",
                                                                                               "NotReady"]


def test_a_worker_that_dies_crashes_its_run_and_the_flow_goes_on_with_a_new_pool(tmp_path: Path) -> None:
    result = _run(tmp_path, """
        @task
        def exits() -> None:
            os._exit(3)

        @task
        def killed() -> None:
            os.kill(os.getpid(), signal.SIGKILL)

        @task
        def slow(x: int) -> int:
            time.sleep(0.3)
            return x

        @task
        def returns_a_lock() -> object:
            return threading.Lock()

        @task
        def takes(value: object) -> None:
            pass

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
        def crashing_flow() -> dict:
            first = exits.submit()
            first.wait()
            second = killed.submit()
            second.wait()
            after = slow.submit(1).result()  # a new pool takes the runs submitted after a crash
            slow.submit(2)  # not waited for: the flow run's end waits for it
            unpicklable_result, unpicklable_argument = returns_a_lock.submit(), takes.submit(threading.Lock())
            unpicklable_result.wait(), unpicklable_argument.wait()
            return {
                "states": [first.state.name, second.state.name],
                "message": first.state.message,
                "raises": type(first.state.data).__name__,
                "after": after,
                "result": [unpicklable_result.state.name, unpicklable_result.state.message],
                "argument": [unpicklable_argument.state.name, unpicklable_argument.state.message],
            }

        if __name__ == "__main__":
            print(json.dumps(crashing_flow()))
    """)
    assert result["states"] == ["Crashed", "Crashed"]
    assert "a worker process of its ProcessPoolTaskRunner ended abruptly" in result["message"]
    assert result["raises"] == "BrokenProcessPool"
    assert result["after"] == 1
    assert result["result"][0] == "Crashed"
    assert "ended Completed in its worker process, but its result could not be sent back" in result["result"][1]
    assert result["argument"][0] == "Crashed"
    assert "must be picklable with cloudpickle" in result["argument"][1]

    spans = _spool_spans(Path(os.environ["OTELFLOW_HOME"]))
    (flow_span,) = _named(spans, "flow crashing-flow")
    slow_spans = _named(spans, "task slow")
    assert len(slow_spans) == 2  # the one nobody waited for ran to its end before the flow run ended
    assert all(s.end <= flow_span.end for s in slow_spans)


def test_workers_end_when_the_flow_process_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "worker.pid"
    script = tmp_path / "killed_flow.py"
    script.write_text(HEADER + textwrap.dedent(f"""
        @task
        def sleeps() -> None:
            with open({str(pid_file)!r}, "w") as handle:
                handle.write(str(os.getpid()))
            time.sleep(60)

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=1))
        def killed_flow() -> None:
            sleeps.submit()
            while not os.path.exists({str(pid_file)!r}):
                time.sleep(0.05)
            os.kill(os.getpid(), signal.SIGKILL)

        if __name__ == "__main__":
            killed_flow()
    """))
    with open(tmp_path / "output.txt", "wb") as output:  # not a pipe: the worker could hold it open
        proc = subprocess.run([PYTHON, str(script)], env=subprocess_env(), cwd=tmp_path, stdout=output,
                              stderr=subprocess.STDOUT, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (tmp_path / "output.txt").read_text()[-4000:]
    worker = int(pid_file.read_text())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return  # the worker saw its parent go and ended (it would otherwise wait for work forever)
        time.sleep(0.05)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the worker process outlived the flow process by 10 s")


@task
def double(x: int) -> int:
    return 2 * x


def test_used_as_a_context_manager_outside_a_flow() -> None:
    with ProcessPoolTaskRunner(max_workers=1) as runner:
        assert runner.submit(double, {"x": 21}).result() == 42
        assert runner.map(double, {"x": [1, 2]}).result() == [2, 4]


def test_prefects_api_and_errors_outside_a_flow(monkeypatch: pytest.MonkeyPatch) -> None:
    runner = ProcessPoolTaskRunner()
    assert runner.max_workers == multiprocessing.cpu_count() and runner.name == "processpool"
    assert ProcessPoolTaskRunner(max_workers=0).max_workers == multiprocessing.cpu_count()  # 0: the default, too
    with pytest.raises(RuntimeError, match="Task runner is not started"):
        runner.submit(double, {"x": 1})
    with pytest.raises(RuntimeError, match="The task runner must be started before submitting work"):
        runner.map(double, {"x": [1]})
    with pytest.raises(ValueError, match="max_workers"):
        ProcessPoolTaskRunner(max_workers=-1)

    def setup(*paths: str) -> None:
        pass

    configured = ProcessPoolTaskRunner(max_workers=3, initializer=setup, initargs=("/opt/libs",))
    copy = configured.duplicate()
    assert copy is not configured and copy == configured and copy.max_workers == 3
    assert (copy._initializer, copy._initargs) == (setup, ("/opt/libs",))
    assert configured != ProcessPoolTaskRunner(max_workers=2)
    with configured, pytest.raises(RuntimeError, match="already started"):
        configured.__enter__()
    with pytest.raises(RuntimeError, match="Task runner is not started"):  # after its flow run: closed
        configured.submit(double, {"x": 1})
    unpickled = pickle.loads(pickle.dumps(ProcessPoolTaskRunner(max_workers=2)))  # crosses to workers unstarted
    assert unpickled.max_workers == 2

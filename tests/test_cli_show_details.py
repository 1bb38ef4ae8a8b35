"""What `otelflow show` tells about a run beyond its tree: parameters, retries numbered as the logs number them,
a failed mapped run's warnings and errors (not folded away), one stack trace per failure, a readable crash on
Ctrl-C, the services a trace crossed, the latest run of a flow (`--flow`), state names checked, and a damaged
clock (a run ending before it started) drawn without hanging. Real runs in subprocesses, output read piped.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from test_cli import run_script

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    r'''
    import json, os, subprocess, sys

    from otelflow import flow, get_run_logger, task, telemetry
    from otelflow.context import hydrated_context, serialize_context


    @task(retries=2, retry_delay_seconds=0)
    def flaky(x: int) -> int:
        from otelflow.context import TaskRunContext
        if TaskRunContext.get().task_run.run_count < 3:
            raise ConnectionError(f"try {TaskRunContext.get().task_run.run_count}")
        return x


    @task
    def square(x: int) -> int:
        if x == 2:
            get_run_logger().warning("two looks wrong")
            raise RuntimeError("two is bad")
        get_run_logger().info("fine %d", x)
        return x * x


    @flow
    def remote_part() -> str:
        get_run_logger().info("in the other service")
        return "ok"


    @flow
    def details(n: int, label: str = "x") -> None:
        flaky(1)
        for f in square.map(range(4)):
            f.wait()
        carrier = json.dumps(serialize_context())
        subprocess.run([sys.executable, __file__, "child", carrier], check=True,
                       env={**os.environ, "OTEL_SERVICE_NAME": "billing"})


    @flow
    def explodes() -> None:
        raise ValueError("it broke")


    @flow
    def interrupted() -> None:
        raise KeyboardInterrupt


    if __name__ == "__main__":
        if sys.argv[1:2] == ["child"]:
            with hydrated_context(json.loads(sys.argv[2])):
                remote_part()
            telemetry.flush()
            sys.exit(0)
        details(3)
        try:
            explodes()
        except ValueError:
            pass
        try:
            interrupted()
        except KeyboardInterrupt:
            pass
        telemetry.flush()
    '''
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("details-home")
    run_script(home, SCRIPT, name="details.py", OTEL_SERVICE_NAME="pipeline")
    return home


def cli(home: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PYTHON, "-m", "otelflow", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, env=subprocess_env(OTELFLOW_HOME=str(home)))
    assert proc.returncode == code, proc.stdout + proc.stderr
    return proc


def test_parameters_of_a_flow_run_are_shown(home: Path) -> None:
    lines = cli(home, "show", "--flow", "details").stdout.splitlines()
    assert lines[2].strip() == "parameters  n=int  label=str", lines[:4]  # types by default, never values


def test_retries_are_numbered_as_the_logs_number_them(home: Path) -> None:
    out = cli(home, "show", "--flow", "details").stdout
    assert "retry 1/2 after ConnectionError: try 1" in out and "retry 2/2 after ConnectionError: try 2" in out
    assert "Retry 1/2 will start" in out  # the run's own log line says the same


def test_a_failed_mapped_runs_warnings_and_errors_are_not_hidden(home: Path) -> None:
    out = cli(home, "show", "--flow", "details").stdout
    assert "two looks wrong" in out and "Task run failed with exception: RuntimeError('two is bad')" in out
    assert "fine 1" not in out  # the completed members' lines stay folded
    assert "more log line(s) hidden; --expand shows every mapped run" in out


def test_traceback_is_printed_once_per_failure(home: Path) -> None:
    out = cli(home, "show", "--flow", "explodes", "--traceback").stdout
    assert out.count('raise ValueError("it broke")') == 1, out
    assert "ValueError: it broke  (stack trace above)" in out


def test_a_ctrl_c_crash_says_so(home: Path) -> None:
    out = cli(home, "show", "--flow", "interrupted").stdout
    # the exception has no message of its own: the run's state message says what happened
    assert "error: KeyboardInterrupt: Execution was aborted by an interrupt signal." in out, out


def test_the_header_names_every_service_of_the_trace(home: Path) -> None:
    out = cli(home, "show", "--flow", "details").stdout.splitlines()
    assert "services=pipeline, billing" in out[0], out[0]
    (remote,) = [line for line in out if "flow remote-part" in line]
    assert "service=billing" in remote


def test_show_flow_picks_the_latest_run_of_that_flow(home: Path) -> None:
    runs = [json.loads(line) for line in cli(home, "runs", "--json", "--flow", "explodes").stdout.splitlines()]
    shown = json.loads(cli(home, "show", "--flow", "explodes", "--json").stdout)
    assert shown["flow_run_id"] == runs[0]["flow_run_id"]
    missing = cli(home, "show", "--flow", "explode", code=1).stderr
    assert "No run of flow 'explode'" in missing and "Did you mean 'explodes'?" in missing
    both = cli(home, "show", runs[0]["flow_run_id"], "--flow", "explodes", code=2).stderr
    assert "not both" in both


@pytest.mark.parametrize("command", [["runs", "--state", "faild"], ["show", "--state", "bogus"],
                                     ["runs", "--state", "completed,faild"]])
def test_unknown_state_names_are_rejected(home: Path, command: list[str]) -> None:
    err = cli(home, *command, code=2).stderr
    assert "is not a state" in err and "failed" in err


def test_state_names_are_case_insensitive_and_custom_names_in_the_spool_count(home: Path) -> None:
    assert cli(home, "runs", "--state", "FAILED", "--json").stdout.strip()
    assert cli(home, "runs", "--state", "crashed").returncode == 0


def test_a_run_ending_before_it_started_is_drawn_without_hanging(tmp_path: Path) -> None:
    """A clock stepped back: the root span ends a day before it starts, a child starts an hour before it."""
    from otelflow._internal.spool.otlp_json import encode_spans  # noqa: F401  (the spool's own codec)

    spool = tmp_path / "spool"
    spool.mkdir()
    start = 1_780_000_000_000_000_000
    flow_attrs = [{"key": "otelflow.run.type", "value": {"stringValue": "flow"}},
                  {"key": "otelflow.run.id", "value": {"stringValue": "f1"}},
                  {"key": "otelflow.run.name", "value": {"stringValue": "stepped"}},
                  {"key": "otelflow.flow.name", "value": {"stringValue": "clock"}},
                  {"key": "otelflow.run.state", "value": {"stringValue": "Completed"}}]
    task_attrs = [{"key": "otelflow.run.type", "value": {"stringValue": "task"}},
                  {"key": "otelflow.run.name", "value": {"stringValue": "early"}},
                  {"key": "otelflow.run.state", "value": {"stringValue": "Completed"}}]
    spans = [
        {"traceId": "ab" * 16, "spanId": "01" * 8, "name": "flow clock", "startTimeUnixNano": str(start),
         "endTimeUnixNano": str(start - 86_400 * 10**9), "attributes": flow_attrs},
        {"traceId": "ab" * 16, "spanId": "02" * 8, "parentSpanId": "01" * 8, "name": "task early",
         "startTimeUnixNano": str(start - 3600 * 10**9), "endTimeUnixNano": str(start + 10**9),
         "attributes": task_attrs},
    ]
    line = {"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"scope": {}, "spans": spans}]}]}
    (spool / "traces-1.jsonl").write_text(json.dumps(line) + "\n")
    import pexpect  # type: ignore[import-untyped, unused-ignore]

    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    child = pexpect.spawn(PYTHON, ["-m", "otelflow", "show"], cwd=str(REPO_ROOT), env=env, dimensions=(60, 120),
                          encoding="utf-8", timeout=60, maxread=65536)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    assert len(child.before) < 20_000 and "task early" in child.before

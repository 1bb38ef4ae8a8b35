"""The `otelflow` command through subprocesses, on spools made by real runs: runs, show, logs, spool.

Spools: the README's ETL example (mapped runs, a retried task) and a scenario script (a failed run with a
NotReady task, a subflow, a mapped task with one failure, two runs sharing one name). Output is read piped,
as a script would; the terminal rendering is checked in ``test_cli_tty.py``.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from stack_parts import wait_until

pytestmark = pytest.mark.slow

SCENARIOS = textwrap.dedent(
    """
    from otelflow import flow, get_run_logger, task, telemetry


    @task
    def boom(x: int) -> int:
        raise ValueError(f"bad input {x}")


    @task
    def after(value: int) -> int:
        return value


    @task
    def square(x: int) -> int:
        if x == 3:
            raise RuntimeError("three is unlucky")
        return x * x


    @flow
    def child(n: int) -> int:
        get_run_logger().info("child running %d", n)
        return n


    @flow
    def failing() -> int:
        get_run_logger().warning("about to fail")
        first = boom.submit(1)
        after.submit(first).wait()
        child(7)
        for future in square.map(range(6)):
            future.wait()
        return first.result()


    @flow(flow_run_name="twin-run")
    def twins() -> None:
        get_run_logger().info("twin says hi")


    if __name__ == "__main__":
        try:
            failing()
        except ValueError:
            pass
        twins()
        twins()
        telemetry.flush()
    """
)


def run_script(home: Path, script: str, *, name: str = "scenario.py", **env: str) -> None:
    """Run a Python script (a flow program) in a subprocess with ``home`` as OTELFLOW_HOME."""
    path = home / name
    path.write_text(script)
    proc = subprocess.run([PYTHON, str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          env=subprocess_env(OTELFLOW_HOME=str(home), OTELFLOW_LOGGING_TO_CONSOLE="false", **env))
    assert proc.returncode == 0, proc.stderr


def cli(home: Path, *args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    """``otelflow ARGS`` in a subprocess, piped, with ``home`` as OTELFLOW_HOME."""
    proc = subprocess.run([PYTHON, "-m", "otelflow", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=subprocess_env(OTELFLOW_HOME=str(home), **env))
    assert "Traceback" not in proc.stderr, proc.stderr
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def runs_json(home: Path, *args: str) -> list[dict[str, Any]]:
    """``otelflow runs --json`` as dicts."""
    return [json.loads(line) for line in cli(home, "runs", "--json", *args).stdout.splitlines()]


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose spool holds the ETL example's run and the scenario runs (made once per module)."""
    home = tmp_path_factory.mktemp("cli-home")
    proc = subprocess.run([PYTHON, "examples/etl.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          env=subprocess_env(OTELFLOW_HOME=str(home), OTELFLOW_LOGGING_TO_CONSOLE="false"))
    assert proc.returncode == 0, proc.stderr
    run_script(home, SCENARIOS)
    return home


@pytest.fixture
def own_home(home: Path, tmp_path: Path) -> Path:
    """A copy of the module's spool, for tests that change it."""
    shutil.copytree(home / "spool", tmp_path / "spool")
    return tmp_path


def by_flow(runs: list[dict[str, Any]], flow: str) -> dict[str, Any]:
    (run,) = [r for r in runs if r["flow"] == flow]
    return run


# --- runs ---------------------------------------------------------------------------------------------


def test_runs_lists_every_flow_run_newest_first_with_subflows_linked(home: Path) -> None:
    runs = runs_json(home)
    assert [r["flow"] for r in runs if r["flow"] != "child"] == ["twins", "twins", "failing", "etl"]
    starts = [r["start_unix_nano"] for r in runs if r["flow"] != "child"]
    assert starts == sorted(starts, reverse=True)
    child, failing = by_flow(runs, "child"), by_flow(runs, "failing")
    assert child["parent_flow_run_id"] == failing["flow_run_id"] and failing["parent_flow_run_id"] is None
    assert child["trace_id"] == failing["trace_id"]
    assert (failing["state"], child["state"], by_flow(runs, "etl")["state"]) == ("Failed", "Completed", "Completed")
    # task runs per flow run: boom (Failed), after (NotReady), 6 squares (one Failed); etl: 1 + 5 + 5 + 1
    assert (failing["task_runs"], failing["task_runs_not_completed"]) == (8, 3)
    assert (by_flow(runs, "etl")["task_runs"], by_flow(runs, "etl")["task_runs_not_completed"]) == (12, 0)

    table = cli(home, "runs").stdout.splitlines()
    assert table[0].split()[:5] == ["START", "FLOW", "RUN", "NAME", "STATE"]
    row = next(i for i, line in enumerate(table) if failing["flow_run_id"] in line)
    assert child["flow_run_name"] in table[row + 1] and "└ " in table[row + 1]  # the subflow right under it
    assert "8 (3 not completed)" in table[row]
    assert "\x1b[" not in "\n".join(table)  # piped: plain text


def test_runs_filters(home: Path) -> None:
    assert [r["flow"] for r in runs_json(home, "--flow", "etl")] == ["etl"]
    assert [r["flow"] for r in runs_json(home, "--state", "failed")] == ["failing"]
    assert {r["flow"] for r in runs_json(home, "--state", "Failed,completed")} == {"failing", "etl", "twins", "child"}
    assert len(runs_json(home, "--since", "1h")) == 5
    assert len(runs_json(home, "-n", "2")) == 2
    nothing = cli(home, "runs", "--since", "2999-01-01")
    assert "No flow runs match these filters (5 flow run(s)" in nothing.stdout
    for bad in (["-n", "0"], ["-n", "-1"], ["--since", "yesterday-ish"]):
        proc = cli(home, "runs", *bad, check=False)
        assert proc.returncode == 2 and "Invalid value" in proc.stderr, bad


def test_runs_on_an_empty_home_says_what_to_do(tmp_path: Path) -> None:
    proc = cli(tmp_path, "runs")
    assert "No flow runs in" in proc.stdout and "Run a flow first" in proc.stdout
    assert list(tmp_path.iterdir()) == []  # looking creates nothing
    shown = cli(tmp_path, "show", check=False)
    assert shown.returncode == 1 and "Run a flow first" in shown.stderr


# --- show -----------------------------------------------------------------------------------------------


def test_show_etl_waterfall_with_logs_retries_and_collapsed_mapped_runs(home: Path) -> None:
    etl = by_flow(runs_json(home), "etl")
    shown = cli(home, "show", etl["flow_run_name"]).stdout
    lines = shown.splitlines()
    assert lines[0].startswith(f"trace {etl['trace_id']}")
    assert lines[1].startswith(f"flow etl  {etl['flow_run_name']}  Completed") and lines[1].endswith("+0.000s")
    assert any("Starting ETL" in line and "batch_size=5" in line for line in lines)
    assert not any("flow_run_id=" in line for line in lines)  # run identity is the tree's, not repeated per line
    extract = next(i for i, line in enumerate(lines) if "task extract" in line)
    assert "Extracted 5 rows" in lines[extract + 1]  # a run's logs sit right under it
    (transform,) = [line for line in lines if "task transform" in line]
    assert "5 mapped runs  [map 0..4]  Completed 5  p50 " in transform and "retried=1" in transform
    assert "tags=demo,etl" in transform

    expanded = cli(home, "show", etl["flow_run_name"], "--expand").stdout.splitlines()
    assert sum("task transform" in line for line in expanded) == 5
    assert any("retry 1/2 after ConnectionError: rate service timed out" in line for line in expanded)
    assert any("attempts=2" in line for line in expanded)
    # every way of naming the run shows the same thing
    for ident in (etl["flow_run_id"], etl["flow_run_id"][:8], etl["trace_id"], etl["trace_id"][:10]):
        assert cli(home, "show", ident).stdout.splitlines()[1:] == lines[1:]


def test_show_failure_traceback_notready_and_subflow(home: Path) -> None:
    runs = runs_json(home)
    failing, child = by_flow(runs, "failing"), by_flow(runs, "child")
    out = cli(home, "show", failing["flow_run_id"]).stdout
    lines = out.splitlines()
    assert lines[1].startswith(f"flow failing  {failing['flow_run_name']}  Failed")
    boom = next(i for i, line in enumerate(lines) if "task boom" in line)
    assert "Failed" in lines[boom] and "error: ValueError: bad input 1" in lines[boom + 1]
    boom_name = lines[boom].split()[3]
    (after,) = [i for i, line in enumerate(lines) if "task after" in line]
    assert "NotReady" in lines[after]
    # named from the run's link/NotReady message, or (an engine that records neither) from what failed before it
    assert lines[after + 1].lstrip("│ ").startswith("not run: ")
    assert f"{boom_name} (Failed)" in lines[after + 1]
    (mapped,) = [line for line in lines if "task square" in line]
    assert "6 mapped runs" in mapped and "Completed 5" in mapped and "Failed 1" in mapped
    assert any("[map 3] Failed" in line for line in lines) and any("three is unlucky" in line for line in lines)
    assert "raise ValueError" not in out and "--traceback shows them" in out

    with_tb = cli(home, "show", failing["flow_run_id"], "--traceback").stdout
    assert "Traceback (most recent call last)" in with_tb and 'raise ValueError(f"bad input {x}")' in with_tb

    sub = cli(home, "show", child["flow_run_id"]).stdout.splitlines()
    assert sub[1].startswith(f"flow child  {child['flow_run_name']}  Completed")
    assert not any("task boom" in line or "flow failing" in line for line in sub)
    assert any("child running 7" in line for line in sub)

    # filters keep the matching runs and the runs they sit in
    failed = cli(home, "show", failing["flow_run_id"], "--state", "failed,notready").stdout
    assert "task boom" in failed and "task after" in failed and "[map 3]  Failed" in failed
    assert "flow child" not in failed and "Completed" not in failed
    squares = cli(home, "show", failing["flow_run_id"], "--task", "square", "--state", "completed").stdout
    assert "5 mapped runs  [map 0..5]  Completed 5" in squares and "task boom" not in squares
    none = cli(home, "show", failing["flow_run_id"], "--task", "no-such-task", check=False)
    assert none.returncode == 1 and "matches these filters" in none.stderr

    shallow = cli(home, "show", failing["flow_run_id"], "--depth", "0").stdout.splitlines()
    assert not any("task " in line for line in shallow) and any("run(s) below" in line for line in shallow)


def test_show_json(home: Path) -> None:
    failing = by_flow(runs_json(home), "failing")
    data = json.loads(cli(home, "show", failing["flow_run_id"], "--json").stdout)
    assert data["trace_id"] == failing["trace_id"] and data["flow_run_id"] == failing["flow_run_id"]
    spans = {s["span_id"]: s for s in data["spans"]}
    root = next(s for s in spans.values() if s["run_id"] == failing["flow_run_id"])
    assert root["state"] == "Failed" and root["parent_span_id"] is None
    assert any(log["message"] == "about to fail" and log["severity"] == "WARN" for log in root["logs"])
    boom = next(s for s in spans.values() if s["task_name"] == "boom")
    assert boom["exception"]["type"] == "ValueError" and "Traceback" in boom["exception"]["stacktrace"]
    after = next(s for s in spans.values() if s["task_name"] == "after")
    assert after["state"] == "NotReady" and after["upstream_failed"] == [f"{boom['run_name']} (Failed)"]
    assert after["upstream_failed_guessed"] is False  # named by the engine's NotReady message, not guessed
    squares = [s for s in spans.values() if s["task_name"] == "square"]
    assert sorted(s["map_index"] for s in squares) == list(range(6))  # JSON is never collapsed
    assert all(spans[c]["parent_span_id"] == s["span_id"] for s in spans.values() for c in s["children"])


def test_unknown_and_ambiguous_ids_list_candidates_and_fail(home: Path) -> None:
    twins = [r for r in runs_json(home) if r["flow"] == "twins"]
    assert len(twins) == 2
    proc = cli(home, "show", "twin-run", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "'twin-run' matches 2 flow runs" in proc.stderr
    assert all(t["flow_run_id"] in proc.stderr for t in twins)
    assert cli(home, "logs", "twin-run", check=False).returncode == 1

    missing = cli(home, "show", "no-such-run", check=False)
    assert missing.returncode == 1 and "No flow run matching 'no-such-run'" in missing.stderr
    # a one-character prefix is either unique or lists what it could mean; it never guesses
    everything = runs_json(home)
    for prefix in "0123456789abcdef":
        proc = cli(home, "show", prefix, check=False)
        candidates = {r["flow_run_id"] for r in everything if r["flow_run_id"].startswith(prefix)} | {
            r["flow_run_id"] for r in everything if r["trace_id"].startswith(prefix)}
        if len(candidates) > 1 and proc.returncode == 1:
            assert "matches" in proc.stderr
        elif proc.returncode == 0:
            assert proc.stdout.startswith("trace ")
        else:
            assert "No flow run matching" in proc.stderr
        if prefix == "3":
            break  # enough subprocesses: the sqlite query is the same for every prefix


# --- logs -----------------------------------------------------------------------------------------------


def test_logs_of_a_run_with_level_and_task_filters(home: Path) -> None:
    etl = by_flow(runs_json(home), "etl")
    lines = cli(home, "logs", etl["flow_run_id"]).stdout.splitlines()
    assert any("Starting ETL" in line and f"{etl['flow_run_name']} |" in line for line in lines)
    assert any("Extracted 5 rows" in line and "extract-" in line for line in lines)
    times = [line.split()[0] for line in lines]
    assert times == sorted(times)
    failing = by_flow(runs_json(home), "failing")
    everything = cli(home, "logs", failing["flow_run_id"]).stdout
    warnings = cli(home, "logs", failing["flow_run_id"], "--level", "warning").stdout.splitlines()
    assert " INFO " in everything and "child running 7" in everything  # a subflow's logs are its parent's too
    assert warnings and all(" WARN" in line or " ERROR" in line for line in warnings if line[:1].isdigit())
    assert any("about to fail" in line for line in warnings)
    extract = cli(home, "logs", "--task", "extract", etl["flow_run_id"]).stdout.splitlines()
    assert len(extract) == 2 and "Extracted 5 rows" in extract[0]
    assert extract[1].endswith("| Finished in state Completed()")  # the engine's closing line, as Prefect's
    records = [json.loads(line) for line in cli(home, "logs", etl["trace_id"], "--json").stdout.splitlines()]
    assert len(records) == len(lines) and all(r["trace_id"] == etl["trace_id"] for r in records)

    latest = cli(home, "logs").stdout  # latest root run: the second twin
    assert latest.count("twin says hi") == 1
    bad = cli(home, "logs", "--level", "loud", check=False)
    assert bad.returncode == 2 and "loud" in bad.stderr


# --- a run still running (pending span records) ---------------------------------------------------------

RUNNING = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from otelflow import flow, get_run_logger, task, telemetry

    GO = Path(sys.argv[1])


    @task
    def wait_for_go() -> None:
        get_run_logger().info("waiting for go")
        deadline = time.monotonic() + 60
        while not GO.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        get_run_logger().warning("got go")


    @flow
    def slow() -> None:
        get_run_logger().info("slow flow started")  # the engine has written the run's pending record
        wait_for_go()
        get_run_logger().info("slow flow done")


    if __name__ == "__main__":
        slow()
        telemetry.flush()
    """
)


def start_slow_flow(home: Path, go: Path) -> subprocess.Popen[str]:
    """The RUNNING flow in a subprocess (home as OTELFLOW_HOME), waiting in its task until ``go`` exists."""
    script = home / "slow.py"
    script.write_text(RUNNING)
    env = subprocess_env(OTELFLOW_HOME=str(home), OTELFLOW_LOGGING_TO_CONSOLE="false",
                         OTEL_BLRP_SCHEDULE_DELAY="50", OTEL_BSP_SCHEDULE_DELAY="50")
    return subprocess.Popen([PYTHON, str(script), str(go)], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def follow_until(home: Path, text: str) -> tuple[subprocess.Popen[str], str]:
    """``otelflow logs latest --follow`` in a subprocess, read until it has printed ``text``; (process, output)."""
    follower = subprocess.Popen(
        [PYTHON, "-m", "otelflow", "logs", "latest", "--follow", "--interval", "0.1"], cwd=REPO_ROOT,
        env=subprocess_env(OTELFLOW_HOME=str(home)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stdout is not None
    seen = ""
    while text not in seen:
        line = follower.stdout.readline()
        if not line:
            follower.kill()
            raise AssertionError(f"follow ended before printing {text!r}: {seen}")
        seen += line
    return follower, seen


def stop(*procs: subprocess.Popen[str] | None) -> None:
    """Kill what is still running of ``procs``."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_running_flow_shows_as_running_and_logs_follow_it_to_the_end(tmp_path: Path) -> None:
    go = tmp_path / "go"
    flow_proc = start_slow_flow(tmp_path, go)
    follower: subprocess.Popen[str] | None = None
    try:
        running = wait_until(
            lambda: [r for r in runs_json(tmp_path) if r["flow"] == "slow"], 60, "a pending run", every=0.05
        )
        assert running[0]["state"] == "Running" and running[0]["running"] is True
        shown = cli(tmp_path, "show", running[0]["flow_run_name"]).stdout.splitlines()
        assert shown[1].startswith(f"flow slow  {running[0]['flow_run_name']}  Running…")

        # logged before the task waits: follow prints it while the run is running
        follower, seen = follow_until(tmp_path, "waiting for go")
        assert "slow flow started" in seen and follower.poll() is None
        # the task still running has no span yet: its log shows under the running flow run all the same
        during = cli(tmp_path, "show").stdout.splitlines()
        assert "Running…" in during[1]
        assert any("waiting for go" in line and "wait_for_go-" in line for line in during) or any(
            "task wait_for_go" in line and "Running" in line for line in during), during
        go.touch()
        rest, err = follower.communicate(timeout=60)  # it ends by itself once the flow run has ended
        assert follower.returncode == 0, err
        assert "got go" in rest and "slow flow done" in rest and "Traceback" not in err
        assert flow_proc.wait(timeout=60) == 0
        (done,) = [r for r in runs_json(tmp_path) if r["flow"] == "slow"]
        assert done["state"] == "Completed" and done["running"] is False  # the real span hides the pending one
        final = cli(tmp_path, "show").stdout.splitlines()
        assert "Completed" in final[1] and any("task wait_for_go" in line for line in final)
    finally:
        go.touch()
        stop(flow_proc, follower)


def test_logs_follow_ends_when_the_followed_run_is_killed(tmp_path: Path) -> None:
    """Was: `logs --follow` of a run whose process was SIGKILLed waited forever for a run that could not end."""
    flow_proc = start_slow_flow(tmp_path, tmp_path / "never")
    follower: subprocess.Popen[str] | None = None
    try:
        wait_until(
            lambda: [r for r in runs_json(tmp_path) if r["state"] == "Running"], 60, "a pending run", every=0.05
        )
        follower, _ = follow_until(tmp_path, "waiting for go")  # the follower has seen the run alive
        flow_proc.kill()
        flow_proc.wait(timeout=60)
        _, err = follower.communicate(timeout=60)  # ends by itself: the run's process is gone
        assert follower.returncode == 1 and "Traceback" not in err, err  # exit status: the run's outcome
        (run,) = runs_json(tmp_path)
        assert run["state"] == "Crashed" and run["running"] is False
    finally:
        stop(flow_proc, follower)


KILLED = textwrap.dedent(
    """
    import os, signal, time
    from otelflow import flow, get_run_logger
    from otelflow.settings import get_settings

    @flow
    def doomed() -> None:
        get_run_logger().info("about to be killed")
        spool = get_settings().spool_dir
        deadline = time.monotonic() + 30
        # the engine's pending record of this run, and the log record, reach the spool; then SIGKILL
        while time.monotonic() < deadline:
            traces = "".join(p.read_text() for p in spool.glob("traces-*.jsonl"))
            logs = "".join(p.read_text() for p in spool.glob("logs-*.jsonl"))
            if "otelflow.span.pending" in traces and "about to be killed" in logs:
                break
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGKILL)

    doomed()
    """
)


def test_a_killed_run_shows_as_crashed_not_running_forever(tmp_path: Path) -> None:
    """Was: a run whose process was SIGKILLed (the OOM killer) showed as Running forever, and `logs --follow`
    waited on it forever. Its process's liveness lock is free: the run is Crashed, and says why."""
    script = tmp_path / "doomed.py"
    script.write_text(KILLED)
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOGGING_TO_CONSOLE="false",
                         OTEL_BSP_SCHEDULE_DELAY="20", OTEL_BLRP_SCHEDULE_DELAY="20")
    proc = subprocess.run([PYTHON, str(script)], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == -9, proc.stderr
    (run,) = runs_json(tmp_path)
    assert run["flow"] == "doomed" and run["state"] == "Crashed" and run["running"] is False
    assert runs_json(tmp_path, "--state", "crashed") == [run] and runs_json(tmp_path, "--state", "running") == []
    shown = cli(tmp_path, "show", run["flow_run_name"]).stdout
    assert f"flow doomed  {run['flow_run_name']}  Crashed" in shown and "about to be killed" in shown
    assert "its process is gone" in shown and "Running" not in shown
    (span,) = json.loads(cli(tmp_path, "show", run["flow_run_id"], "--json").stdout)["spans"]
    assert span["state"] == "Crashed" and span["running"] is False and span["end_unix_nano"] >= span["start_unix_nano"]
    assert "about to be killed" in cli(tmp_path, "logs", run["flow_run_id"][:8]).stdout
    # returns: nothing more will come; its exit status is the run's outcome
    followed = cli(tmp_path, "logs", "--follow", run["flow_run_id"], "--interval", "0.05", check=False)
    assert followed.returncode == 1 and "about to be killed" in followed.stdout


# --- a damaged spool ------------------------------------------------------------------------------------


def test_corrupt_lines_are_skipped_with_one_warning(own_home: Path) -> None:
    spool = own_home / "spool"
    good = runs_json(own_home)
    trace_file = sorted(spool.glob("traces-*.jsonl"))[0]
    valid = trace_file.read_bytes().splitlines()[0]
    garbage = [
        b"\xff\xfe not utf-8 \xc3\x28",
        b"{not json",
        b"[]",
        b'{"resourceSpans": 5}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "nope"}]}]}]}',
        b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "' + b"a" * 32 + b'", "spanId": "'
        + b"b" * 16 + b'", "startTimeUnixNano": "soon", "endTimeUnixNano": "later"}]}]}]}',
        b'{"resourceLogs": [{"scopeLogs": [{"logRecords": [17, "x"]}]}]}',
        b'{"resourceSpans": [{"resource": [], "scopeSpans": "x"}]}',
    ]
    (spool / "traces-zz-corrupt.jsonl").write_bytes(b"\n".join(garbage) + b"\n")
    (spool / "logs-zz-corrupt.jsonl").write_bytes(b"\n".join(garbage) + b"\n")
    proc = cli(own_home, "runs", "--json")
    assert [json.loads(line)["flow_run_id"] for line in proc.stdout.splitlines()] == [r["flow_run_id"] for r in good]
    warnings = proc.stderr.strip().splitlines()
    assert len(warnings) == 1 and "skipped" in warnings[0] and "malformed" in warnings[0], proc.stderr
    for args in (["show", good[-1]["flow_run_id"]], ["logs", good[-1]["flow_run_id"]], ["show", "--json"]):
        assert cli(own_home, *args).returncode == 0

    # a line being written (no newline yet) is not read until it is complete
    half = len(valid) // 2
    with open(spool / "traces-zz-live.jsonl", "wb") as handle:
        handle.write(valid[:half])
    assert len(runs_json(own_home)) == len(good)
    with open(spool / "traces-zz-live.jsonl", "ab") as handle:
        handle.write(valid[half:] + b"\n")
    assert cli(own_home, "runs").stderr == ""  # the completed line is whole: no warning


def test_index_is_rebuilt_when_missing_corrupt_or_its_files_change(own_home: Path) -> None:
    before = runs_json(own_home)
    index = own_home / "spool-index.sqlite"
    assert index.exists()
    with sqlite3.connect(index) as db:
        assert db.execute("SELECT COUNT(*) FROM files").fetchone()[0] == len(list((own_home / "spool").glob("*.jsonl")))
        db.execute("UPDATE meta SET value = 'an older schema' WHERE key = 'schema'")
    assert runs_json(own_home) == before  # an index of another schema version is rebuilt
    for suffix in ("-wal", "-shm"):
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    index.write_bytes(b"this is not a sqlite database" * 100)
    assert runs_json(own_home) == before
    index.unlink()
    assert runs_json(own_home) == before
    # a run added later is picked up incrementally; pruned files take their runs with them
    run_script(own_home, WRITER, name="one_more.py")
    after = runs_json(own_home)
    assert len(after) == len(before) + 1 and after[0]["flow"] == "busy"
    for path in (own_home / "spool").glob("*.jsonl"):
        os.utime(path, (time.time() - 10 * 86400,) * 2)
    assert cli(own_home, "spool", "prune", "--older-than", "7").returncode == 0
    assert not list((own_home / "spool").glob("*.jsonl"))
    assert "No flow runs in" in cli(own_home, "runs").stdout


# --- several processes at once --------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import sys
    from otelflow import flow, get_run_logger, task, telemetry

    @task
    def step(i: int) -> int:
        get_run_logger().info("step %d", i)
        return i

    @flow
    def busy(n: int) -> int:
        return sum(f.result() for f in step.map(range(n)))

    if __name__ == "__main__":
        for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1):
            busy(50)
        telemetry.flush()
    """
)


def test_readers_and_writers_at_once(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOGGING_TO_CONSOLE="false",
                         OTEL_BSP_SCHEDULE_DELAY="20", OTEL_BLRP_SCHEDULE_DELAY="20")
    writers = [subprocess.Popen([PYTHON, str(script), "4"], cwd=REPO_ROOT, env=env, stderr=subprocess.PIPE)
               for _ in range(3)]
    reader_env = subprocess_env(OTELFLOW_HOME=str(tmp_path))
    calls = 0
    try:
        while any(w.poll() is None for w in writers) or calls < 3:
            readers = [subprocess.Popen([PYTHON, "-m", "otelflow", *args], cwd=REPO_ROOT, env=reader_env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                       for args in (["runs", "--json"], ["runs"], ["show", "--json"])]
            for reader in readers:
                _, err = reader.communicate(timeout=60)
                assert "Traceback" not in err and "warning" not in err, err
                assert reader.returncode in (0, 1), err  # 1: `show` before the first run has ended
            calls += 1
    finally:
        for writer in writers:
            _, writer_err = writer.communicate(timeout=120)
            assert writer.returncode == 0, writer_err
    runs = runs_json(tmp_path)
    assert len(runs) == 12 and {r["state"] for r in runs} == {"Completed"}
    shown = json.loads(cli(tmp_path, "show", runs[0]["flow_run_id"], "--json").stdout)
    assert len(shown["spans"]) == 51 and sum(len(s["logs"]) for s in shown["spans"]) >= 50
    waterfall = cli(tmp_path, "show", runs[0]["flow_run_id"]).stdout.splitlines()
    assert len(waterfall) < 12 and any("50 mapped runs  [map 0..49]  Completed 50" in line for line in waterfall)


# --- ship -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_ship_sends_the_spool_once(own_home: Path, protocol: str, request: pytest.FixtureRequest) -> None:
    receiver = request.getfixturevalue("otlp_receiver" if protocol == "http/protobuf" else "otlp_grpc_receiver")
    from otelflow._internal.spool.reader import iter_spool

    spans_in_spool = sum(1 for _ in iter_spool(own_home / "spool", "traces"))  # pending records too
    first = cli(own_home, "spool", "ship", "--endpoint", receiver.endpoint, "--protocol", protocol)
    assert f"shipped {spans_in_spool} span(s)" in first.stdout
    receiver.wait_for(lambda: len(receiver.spans(include_pending=True)) >= spans_in_spool)
    assert len(receiver.spans(include_pending=True)) == spans_in_spool and receiver.logs()
    sent_logs = len(receiver.logs())
    second = cli(own_home, "spool", "ship", "--endpoint", receiver.endpoint, "--protocol", protocol)
    assert "shipped 0 span(s) and 0 log record(s)" in second.stdout
    assert len(receiver.spans(include_pending=True)) == spans_in_spool and len(receiver.logs()) == sent_logs
    # the spool is still readable after shipping (progress files are not spool files)
    assert len(runs_json(own_home)) == 5


def test_ship_to_a_dead_endpoint_fails_and_keeps_everything(own_home: Path) -> None:
    proc = cli(own_home, "spool", "ship", "--endpoint", "http://127.0.0.1:9", "--timeout", "1", check=False)
    assert proc.returncode == 1 and "run `otelflow spool ship` again" in proc.stderr


def test_cli_import_is_light(tmp_path: Path) -> None:
    heavy = ("rich", "sqlite3", "otelflow.input", "opentelemetry.exporter.otlp.proto.http")
    code = f"import sys, otelflow.cli; print(sorted(m for m in {heavy!r} if m in sys.modules))"
    out = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), check=True)
    assert out.stdout.strip() == "[]"
    # command groups imported on use only are still there
    assert "input" in cli(tmp_path, "--help").stdout
    assert "send" in cli(tmp_path, "input", "--help").stdout


def test_ship_also_sends_the_outage_buffer_once(tmp_path: Path, otlp_receiver: Any) -> None:
    # A run made while the collector was down: what it could not deliver waits in the outage buffer.
    script = tmp_path / "offline.py"
    script.write_text(textwrap.dedent('''
        from otelflow import flow, task, get_run_logger

        @task
        def step(i):
            get_run_logger().info("step %s", i)

        @flow
        def offline():
            for i in range(3):
                step(i)

        offline()
    '''))
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOGGING_TO_CONSOLE="false",
                         OTEL_EXPORTER_OTLP_ENDPOINT="http://127.0.0.1:9", OTEL_EXPORTER_OTLP_TIMEOUT="1",
                         OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS="3")
    proc = subprocess.run([PYTHON, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert list((tmp_path / "buffer").glob("traces-*.jsonl")), proc.stderr
    first = cli(tmp_path, "spool", "ship", "--endpoint", otlp_receiver.endpoint)
    assert "from the outage buffer" in first.stdout, first.stdout
    names = {s.name for s in otlp_receiver.wait_for(lambda: otlp_receiver.spans() or None)}
    assert {"flow offline", "task step"} <= names
    assert not list((tmp_path / "buffer").glob("*.jsonl"))  # sent, then removed
    second = cli(tmp_path, "spool", "ship", "--endpoint", otlp_receiver.endpoint)
    assert "outage buffer" not in second.stdout

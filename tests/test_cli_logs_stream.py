"""`otelflow logs` streams: records in time order from lines read one at a time, in bounded memory; `--follow`.

Was (issue 25): `logs` read a run's whole log into memory before printing a line (1M records: 74 s, 7.2 GB);
`logs --follow latest` started just after a flow run started followed the previous run (ended) and exited;
`--follow` always exited 0; `logs --json` repeated each run attribute under Prefect's name beside otelflow's.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from spool_lines import (
    CLI_REPO,
    T0,
    cli_env,
    flow_attrs,
    log,
    log_attrs,
    logs_line,
    run_cli,
    span,
    task_attrs,
    traces_line,
    write,
)

TRACE = "6bf92f3577b34da6a3ce929d0e0e4736"
FLOW_SPAN = "20f067aa0ba902b7"
RUN_ID, RUN_NAME = "88888888-2222-3333-4444-555555555555", "steady-lynx"
PER_LINE, LINES = 20, 60


def two_writers(spool: Path) -> list[int]:
    """A run whose two task runs log from two processes at once (their lines overlap in time); the record times."""
    tasks = ["30f067aa0ba902b7", "40f067aa0ba902b7"]
    spans = [span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10**9, flow_attrs(RUN_ID, RUN_NAME))]
    spans += [span(TRACE, t, FLOW_SPAN, "task talk", T0 + 1, T0 + 10**9 - 1,
                   task_attrs(f"t-{i}", RUN_ID, f"talk-{i}", index=i)) for i, t in enumerate(tasks)]
    write(spool, "traces-20261124-100-1-0.jsonl", [traces_line(spans)])
    times = []
    for w, task in enumerate(tasks):
        lines = []
        for n in range(LINES):
            # writer w's records: every 10 ns, the two writers 5 ns apart; a line's records not in order
            batch = [T0 + 1000 + (n * PER_LINE + k) * 10 + 5 * w for k in reversed(range(PER_LINE))]
            times += batch
            # as a Prefect-style handler writes them: the run's attributes under both names
            attrs = {**log_attrs(RUN_ID, RUN_NAME, f"talk-{w}"), "flow_run_id": RUN_ID, "task_run_name": f"talk-{w}"}
            lines.append(logs_line([log(TRACE, task, t, f"w{w} {t - T0}", attrs) for t in batch]))
        write(spool, f"logs-20261124-{200 + w}-1-0.jsonl", lines)
    return sorted(times)


def test_log_stream_gives_records_in_time_order_holding_only_overlapping_lines(tmp_path: Path) -> None:
    from otelflow._internal.spool.index import LogStream, RunIndex

    times = two_writers(tmp_path / "spool")
    with RunIndex(tmp_path / "spool") as index:
        index.refresh()
        stream = LogStream(index, TRACE)
        records = stream.read()
        first = next(records)
        assert first.time == times[0] and stream.lines_read <= 2  # printed before the rest is read
        got = [first.time, *(record.time for record in records)]
        assert got == times and stream.lines_read == 2 * LINES
        assert stream.held_peak <= 2 * PER_LINE  # one line per writer at a time, not the run
        assert list(stream.read()) == []  # read again: only lines indexed since


def test_logs_prints_a_run_in_time_order_across_processes_each_attribute_once(tmp_path: Path) -> None:
    times = two_writers(tmp_path / "spool")
    proc = run_cli(tmp_path, "logs", RUN_ID, "--json")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    records = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [record["time_unix_nano"] for record in records] == times
    assert {key for record in records for key in record["attributes"]} == {
        "otelflow.flow_run.id", "otelflow.flow_run.name", "otelflow.task_run.name", "otelflow.task.name"}
    text = run_cli(tmp_path, "logs", RUN_ID, "--task", "talk-1").stdout.splitlines()
    assert len(text) == len(times) // 2 and all("talk-1 | w1 " in line for line in text)


def test_logs_json_names_each_run_attribute_once(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    write(spool, "traces-20261124-100-1-0.jsonl", [traces_line([
        span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10**9, flow_attrs(RUN_ID, RUN_NAME))])])
    both = {**log_attrs(RUN_ID, RUN_NAME), "flow_run_id": RUN_ID, "flow_run_name": RUN_NAME, "flow_name": "f",
            "otelflow.flow.name": "f", "task_name": "only-prefect-named", "row": 3}
    write(spool, "logs-20261124-100-1-0.jsonl", [logs_line([log(TRACE, FLOW_SPAN, T0 + 5, "hi", both)])])
    (record,) = [json.loads(line) for line in run_cli(tmp_path, "logs", "--json").stdout.splitlines()]
    assert record["attributes"] == {"otelflow.flow_run.id": RUN_ID, "otelflow.flow_run.name": RUN_NAME,
                                    "otelflow.flow.name": "f", "task_name": "only-prefect-named", "row": 3}
    (shown,) = json.loads(run_cli(tmp_path, "show", "--json").stdout)["spans"]
    assert shown["logs"][0]["attributes"] == record["attributes"]


def test_show_keeps_the_first_records_and_the_warnings_of_a_chatty_run(tmp_path: Path) -> None:
    """1,000 records of one task run: `show` keeps its first 20 and its warnings, and counts the others."""
    spool = tmp_path / "spool"
    task = "30f067aa0ba902b7"
    write(spool, "traces-20261124-100-1-0.jsonl", [traces_line([
        span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10**9, flow_attrs(RUN_ID, RUN_NAME)),
        span(TRACE, task, FLOW_SPAN, "task talk", T0 + 1, T0 + 10**9 - 1, task_attrs("t", RUN_ID, "talk-1"))])])
    attrs = log_attrs(RUN_ID, RUN_NAME, "talk-1")
    records = [log(TRACE, task, T0 + 10 + n, f"chat {n}", attrs) for n in range(1000)]
    for n in (500, 700, 990):
        records[n] = log(TRACE, task, T0 + 10 + n, f"trouble {n}", attrs, level="WARNING", number=13)
    records[999] = log(TRACE, task, T0 + 1009, "failed at last", attrs, level="ERROR", number=17)
    write(spool, "logs-20261124-100-1-0.jsonl", [logs_line(records[i:i + 100]) for i in range(0, 1000, 100)])
    shown = json.loads(run_cli(tmp_path, "show", "--json").stdout)
    (talk,) = [s for s in shown["spans"] if s["span_id"] == task]
    kept = [r["message"] for r in talk["logs"]]
    assert kept == [f"chat {n}" for n in range(20)] + ["trouble 500", "trouble 700", "trouble 990", "failed at last"]
    assert talk["logs_omitted"] == 1000 - len(kept)
    text = run_cli(tmp_path, "show").stdout
    assert "failed at last" in text and "chat 19" in text and "chat 20" not in text
    assert len(run_cli(tmp_path, "logs").stdout.splitlines()) == 1000  # `logs` prints them all


def test_exit_status_says_how_the_run_ended(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    failed = {**flow_attrs(RUN_ID, RUN_NAME), "otelflow.run.state": "Failed"}
    other_id = "99999999-2222-3333-4444-555555555555"
    write(spool, "traces-20261124-100-1-0.jsonl", [traces_line([
        span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10**9, failed, code=2, message="boom"),
        span("7bf92f3577b34da6a3ce929d0e0e4736", "50f067aa0ba902b7", None, "flow f", T0 + 10**10, T0 + 2 * 10**10,
             flow_attrs(other_id, "fine-run"))])])
    assert run_cli(tmp_path, "logs", RUN_ID).returncode == 0  # without --exit-status: printed, fine
    assert run_cli(tmp_path, "logs", RUN_ID, "--exit-status").returncode == 1
    assert run_cli(tmp_path, "logs", other_id, "--exit-status").returncode == 0
    assert run_cli(tmp_path, "logs", RUN_ID, "--follow").returncode == 1  # ended already: its outcome at once
    help_text = run_cli(tmp_path, "logs", "--help").stdout
    assert "--exit-status" in help_text and "Exit status" in help_text


# --- --follow, with real flow runs ------------------------------------------------------------------------------

FLOW = textwrap.dedent(
    """
    import sys
    from otelflow import flow, get_run_logger, task, telemetry

    @task
    def step(word: str) -> str:
        get_run_logger().info("step says %s", word)
        return word

    @flow
    def chatty(word: str, fail: bool) -> str:
        get_run_logger().info("flow says %s", word)
        step(word)
        if fail:
            raise RuntimeError("as asked")
        return word

    if __name__ == "__main__":
        try:
            chatty(sys.argv[1], sys.argv[2] == "fail")
        except RuntimeError:
            pass
        telemetry.flush()
    """
)


def run_flow(home: Path, word: str, outcome: str) -> None:
    script = home / "chatty.py"
    script.write_text(FLOW)
    proc = subprocess.run([PYTHON, str(script), word, outcome], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=subprocess_env(OTELFLOW_HOME=str(home), OTELFLOW_LOGGING_TO_CONSOLE="false"))
    assert proc.returncode == 0, proc.stderr


def start_follower(home: Path) -> subprocess.Popen[str]:
    """``otelflow logs --follow`` (latest), once it has said it waits for a flow run to start."""
    follower = subprocess.Popen([PYTHON, "-m", "otelflow", "logs", "--follow"], cwd=CLI_REPO, env=cli_env(home),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert follower.stderr is not None
    said = follower.stderr.readline()  # blocks until it says it waits (or ends)
    if "waiting for a flow run to start (Ctrl-C stops)" not in said:
        out, err = follower.communicate(timeout=60)
        raise AssertionError(f"the follower did not wait: {said!r} {err!r}; it printed: {out!r}")
    return follower


@pytest.mark.slow
def test_follow_latest_waits_for_the_next_run_and_exits_with_its_outcome(tmp_path: Path) -> None:
    run_flow(tmp_path, "earlier", "ok")  # ended: `--follow latest` does not mean it
    followers: list[subprocess.Popen[str]] = []
    try:
        for word, outcome, status in (("second", "ok", 0), ("third", "fail", 1)):
            follower = start_follower(tmp_path)
            followers.append(follower)
            run_flow(tmp_path, word, outcome)
            out, err = follower.communicate(timeout=60)  # ends by itself once the run has ended
            assert follower.returncode == status, err
            assert f"flow says {word}" in out and f"step says {word}" in out and "earlier" not in out, out
            assert "Traceback" not in err and err.strip() == "", err
    finally:
        for follower in followers:
            if follower.poll() is None:
                follower.kill()
                follower.wait()

"""A run's latest pending record says its state: a paused run (or one waiting for input) shows as Paused, not Running.

The engine writes a pending record when a run starts, and another when it pauses or waits in ``receive_input``
(``otelflow.run.state`` = ``Paused``, ``otelflow.run.state_message``), then one without a state when it runs again.
Of a span's pending records the latest gives its state; such a run is still live (``running``) and is settled
``Crashed`` once the process that wrote it is gone. Spools written by hand (``spool_lines``), CLI in subprocesses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from spool_lines import T0, flow_attrs, run_cli, span, traces_line, write

from otelflow._internal.spool.liveness import WriterMark

pytestmark = pytest.mark.slow

TRACE = "5bf92f3577b34da6a3ce929d0e0e4736"
REAL_SPAN = "10f067aa0ba902b7"
RUN_ID, RUN_NAME = "77777777-2222-3333-4444-555555555555", "patient-heron"
DATA_FILE = "traces-20261124-4242-abc-0.jsonl"  # <signal>-<date>-<pid>-<start>-<part>: its lock names its writer


def pending(record_id: str, end: int, state: str | None = None, message: str | None = None) -> dict[str, Any]:
    """A pending record of the flow run (a child of its real span, starting when the run started)."""
    attrs: dict[str, Any] = {**flow_attrs(RUN_ID, RUN_NAME), "otelflow.span.pending": True}
    del attrs["otelflow.run.state"]
    if state is not None:
        attrs["otelflow.run.state"] = state
    if message is not None:
        attrs["otelflow.run.state_message"] = message
    return span(TRACE, record_id, REAL_SPAN, "flow f", T0, end, attrs)


def runs(home: Path) -> list[dict[str, Any]]:
    proc = run_cli(home, "runs", "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def shown_state(home: Path) -> dict[str, Any]:
    proc = run_cli(home, "show", RUN_ID, "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    (flow,) = json.loads(proc.stdout)["spans"]
    return dict(flow)


@pytest.fixture
def alive(tmp_path: Path) -> Any:
    """The lock of the (pretend) process that wrote DATA_FILE, held by this test: its writer is alive."""
    mark = WriterMark(tmp_path / "spool", "traces", 4242, "abc")
    yield mark
    mark.close()


def test_the_latest_pending_record_gives_the_state(tmp_path: Path, alive: WriterMark) -> None:
    spool = tmp_path / "spool"
    started, paused = pending("20f067aa0ba902b7", T0 + 1_000), pending(
        "30f067aa0ba902b7", T0 + 5 * 10**9, "Paused", "Waiting for input 'approve'")
    write(spool, DATA_FILE, [traces_line([paused]), traces_line([started])])  # the latest is not the last written
    (run,) = runs(tmp_path)
    assert (run["state"], run["running"], run["start_unix_nano"]) == ("Paused", True, T0)
    assert [r["flow_run_id"] for r in runs_filtered(tmp_path, "paused")] == [RUN_ID]
    flow = shown_state(tmp_path)
    assert (flow["state"], flow["running"], flow["end_unix_nano"]) == ("Paused", True, None)
    assert flow["attributes"]["otelflow.run.state_message"] == "Waiting for input 'approve'"
    assert "Paused" in run_cli(tmp_path, "show").stdout.splitlines()[1]

    # it runs again: a later record without a state
    with open(spool / DATA_FILE, "a") as handle:
        handle.write(traces_line([pending("40f067aa0ba902b7", T0 + 6 * 10**9)]) + "\n")
    (run,) = runs(tmp_path)
    assert (run["state"], run["running"]) == ("Running", True)
    assert shown_state(tmp_path)["state"] == "Running"

    # it ends: the real span supersedes every pending record
    with open(spool / DATA_FILE, "a") as handle:
        handle.write(traces_line([span(TRACE, REAL_SPAN, None, "flow f", T0, T0 + 7 * 10**9,
                                       flow_attrs(RUN_ID, RUN_NAME))]) + "\n")
    (run,) = runs(tmp_path)
    assert (run["state"], run["running"]) == ("Completed", False)


def runs_filtered(home: Path, state: str) -> list[dict[str, Any]]:
    proc = run_cli(home, "runs", "--json", "--state", state)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_a_paused_run_whose_process_is_gone_is_crashed(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    mark = WriterMark(spool, "traces", 4242, "abc")
    write(spool, DATA_FILE, [traces_line([pending("20f067aa0ba902b7", T0 + 1_000)]),
                             traces_line([pending("30f067aa0ba902b7", T0 + 10**9, "Paused", "Waiting")])])
    assert runs(tmp_path)[0]["state"] == "Paused"
    mark.close()  # the process is gone (the kernel lets go of its lock however it ends)
    (run,) = runs(tmp_path)
    assert (run["state"], run["running"]) == ("Crashed", False)
    flow = shown_state(tmp_path)
    assert (flow["state"], flow["running"]) == ("Crashed", False) and "process is gone" in flow["status"]["message"]
    assert run_cli(tmp_path, "logs", RUN_ID, "--exit-status").returncode == 1


def test_exit_status_of_a_live_run(tmp_path: Path, alive: WriterMark) -> None:
    write(tmp_path / "spool", DATA_FILE, [traces_line([pending("30f067aa0ba902b7", T0 + 10**9, "Paused")])])
    proc = run_cli(tmp_path, "logs", RUN_ID, "--exit-status")
    assert proc.returncode == 3 and proc.stderr == "", proc.stderr  # not ended

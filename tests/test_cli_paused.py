"""A flow run that waits (``pause_flow_run``, ``receive_input``) shows as Paused, with what it waits for and the
command that ends the wait, in ``otelflow runs`` and ``show``; once resumed it shows Running, then its final
state. A real flow in a subprocess, resumed and sent input through the real ``otelflow input`` commands.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from stack_parts import wait_until

pytestmark = pytest.mark.slow

WAITER = textwrap.dedent(
    """
    from otelflow import flow, get_run_logger, telemetry
    from otelflow.flow_runs import pause_flow_run
    from otelflow.input import receive_input


    @flow
    def approvals() -> str:
        pause_flow_run(timeout=120, poll_interval=0.2)
        answer = receive_input(dict, timeout=120, poll_interval=0.2, key_prefix="approval")
        for item in answer:
            get_run_logger().info("got %s", item)
            return "done"
        return "none"


    if __name__ == "__main__":
        approvals()
        telemetry.flush()
    """
)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-m", "otelflow", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=60, env=subprocess_env(OTELFLOW_HOME=str(home)))


def _run(home: Path) -> dict[str, Any] | None:
    out = _cli(home, "runs", "--json").stdout.splitlines()
    return json.loads(out[0]) if out else None


def test_a_waiting_run_shows_as_paused_with_what_it_waits_for(tmp_path: Path) -> None:
    script = tmp_path / "waiter.py"
    script.write_text(WAITER)
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTEL_BLRP_SCHEDULE_DELAY="100", OTEL_BSP_SCHEDULE_DELAY="100")
    proc = subprocess.Popen([PYTHON, str(script)], cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        paused = wait_until(lambda: (r := _run(tmp_path)) and r["state"] == "Paused" and r, 60, "a Paused run")
        assert paused["running"] is True
        shown = _cli(tmp_path, "show").stdout
        assert "Paused…" in shown
        assert f"paused: waiting to be resumed (otelflow input resume {paused['flow_run_id']})" in shown
        assert _cli(tmp_path, "runs", "--state", "paused", "--json").stdout.strip()

        resumed = _cli(tmp_path, "input", "resume", paused["flow_run_id"])
        assert resumed.returncode == 0, resumed.stderr
        # then it waits for input: Paused again, saying which key prefix to send
        wait_until(lambda: "waiting for input with key prefix 'approval'" in _cli(tmp_path, "show").stdout, 60,
                   "the run waiting for input")
        sent = _cli(tmp_path, "input", "send", paused["flow_run_id"], "--key-prefix", "approval", '{"ok": true}')
        assert sent.returncode == 0, sent.stderr
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        proc.kill()
        proc.wait()
    final = _run(tmp_path)
    assert final is not None and final["state"] == "Completed" and final["running"] is False
    assert "paused:" not in _cli(tmp_path, "show").stdout

"""The `otelflow` command on a real spool: runs, show (with logs and retries), spool path/prune."""

from __future__ import annotations

import json
import os
import subprocess
import time

from click.testing import CliRunner
from conftest import PYTHON, REPO_ROOT, subprocess_env

from otelflow.cli import main


def _run_example(home: str) -> None:
    proc = subprocess.run([PYTHON, "examples/etl.py"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=subprocess_env(OTELFLOW_HOME=home, OTELFLOW_LOGGING_TO_CONSOLE="false"))
    assert proc.returncode == 0, proc.stderr


def test_show_prints_the_trace_with_logs_and_retries(tmp_path):  # type: ignore[no-untyped-def]
    _run_example(str(tmp_path))
    runner = CliRunner()
    runs = runner.invoke(main, ["runs", "--json", "--home", str(tmp_path)])
    assert runs.exit_code == 0, runs.output
    (run,) = [json.loads(line) for line in runs.output.splitlines()]
    assert run["flow"] == "etl" and run["state"] == "Completed"

    shown = runner.invoke(main, ["show", "--home", str(tmp_path), run["flow_run_name"]])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith(f"trace {run['trace_id']}")
    assert lines[1].startswith(f"flow etl  {run['flow_run_name']}  Completed")
    assert any("Starting ETL" in line and "batch_size=5" in line for line in lines)
    # the extract task's log sits right under its span
    extract = next(i for i, line in enumerate(lines) if "task extract" in line)
    assert "Extracted 5 rows" in lines[extract + 1]
    assert sum("task transform" in line for line in lines) == 5
    assert any("retry attempt 2 after ConnectionError: rate service timed out" in line for line in lines)
    assert any("attempts=2" in line for line in lines)
    by_trace_prefix = runner.invoke(main, ["show", "--home", str(tmp_path), run["trace_id"][:12]])
    assert by_trace_prefix.output == shown.output


def test_spool_path_and_prune(tmp_path):  # type: ignore[no-untyped-def]
    _run_example(str(tmp_path))
    runner = CliRunner()
    path = runner.invoke(main, ["spool", "path", "--home", str(tmp_path)]).output.strip()
    assert path == str(tmp_path / "spool")
    files = sorted((tmp_path / "spool").glob("*.jsonl"))
    assert {f.name.split("-")[0] for f in files} == {"traces", "logs"}
    old = files[0]
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))

    dry = runner.invoke(main, ["spool", "prune", "--older-than", "7", "--dry-run", "--home", str(tmp_path)])
    assert f"would delete {old.name}" in dry.output and old.exists()
    done = runner.invoke(main, ["spool", "prune", "--older-than", "7", "--home", str(tmp_path)])
    assert done.exit_code == 0 and f"deleted {old.name}" in done.output
    assert not old.exists() and all(f.exists() for f in files[1:])
    bad = runner.invoke(main, ["spool", "prune", "--older-than", "-1", "--home", str(tmp_path)])
    assert bad.exit_code == 2 and "-1" in bad.output

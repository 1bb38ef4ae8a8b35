"""Caching for task runs in other processes: a real Dask ``LocalCluster`` and the ProcessPoolTaskRunner. Workers
look up and write the same cache as the flow's process, and a run submitted inside a transaction hands its cache
entry (and its rollback hooks) to that transaction, in the flow's process."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    from pathlib import Path
    from otelflow import flow, task
    from otelflow.cache_policies import INPUTS, FLOW_PARAMETERS
    from otelflow.results import list_cache_entries
    from otelflow.transactions import transaction

    MARKS = Path(sys.argv[2])

    def make_runner():
        if sys.argv[1] == "dask":
            from otelflow.integrations.dask import DaskTaskRunner
            return DaskTaskRunner(cluster_kwargs={"processes": True, "n_workers": 2, "threads_per_worker": 1,
                                                  "dashboard_address": None})
        from otelflow.task_runners import ProcessPoolTaskRunner
        return ProcessPoolTaskRunner(max_workers=2)

    @task(cache_policy=INPUTS)
    def square(x):
        with open(MARKS, "a") as handle:
            handle.write(f"square {x} {os.getpid()}\\n")
        return x * x

    @task(cache_policy=FLOW_PARAMETERS)
    def per_run_setting():
        with open(MARKS, "a") as handle:
            handle.write("setting\\n")
        return "computed"

    @square.on_rollback
    def undo(txn):
        with open(MARKS, "a") as handle:
            handle.write("undo\\n")

    @flow(task_runner=make_runner())
    def pipeline(mode: str):
        if mode == "rollback":
            try:
                with transaction():
                    square.submit(100).result()
                    raise RuntimeError("abort")
            except RuntimeError:
                pass
        elif mode == "commit":
            with transaction():
                square.submit(100).result()
        square.map(range(4)).wait()  # computed on the workers (or Cached, on a second flow run)
        again = square.map(range(4))
        again.wait()
        states = [f.state for f in again]
        setting = per_run_setting.submit()
        setting.wait()
        return {"values": [s.result() for s in states], "names": [s.name for s in states],
                "setting": setting.state.name,
                "entries": sorted(e.task for e in list_cache_entries()), "main": os.getpid()}

    if __name__ == "__main__":
        print(json.dumps(pipeline(sys.argv[3])))
    """
)


def _pipeline(tmp_path: Path, runner: str, mode: str) -> dict[str, Any]:
    script = tmp_path / "cached_flow.py"
    script.write_text(SCRIPT)
    done = subprocess.run([PYTHON, str(script), runner, str(tmp_path / "marks"), mode], cwd=tmp_path,
                          capture_output=True, text=True, timeout=240,
                          env=subprocess_env(OTELFLOW_HOME=str(tmp_path / "home")))
    assert done.returncode == 0, done.stderr[-4000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _marks(tmp_path: Path) -> list[str]:
    return (tmp_path / "marks").read_text().splitlines()


@pytest.mark.parametrize("runner", ["dask", "process"])
def test_worker_task_runs_cache_like_local_ones(runner: str, tmp_path: Path) -> None:
    first = _pipeline(tmp_path, runner, "rollback")
    # The transaction rolled back in the flow's process: the worker's run was undone and left no cache entry.
    marks = _marks(tmp_path)
    assert marks[0].startswith("square 100 ") and marks[1] == "undo"
    assert int(marks[0].split()[2]) != first["main"]  # it ran on a worker
    assert first["values"] == [0, 1, 4, 9]
    # square.map ran twice in the flow: the second time every element was Cached, from the workers' entries.
    assert first["names"] == ["Cached"] * 4
    assert first["setting"] == "Completed"
    assert first["entries"] == ["per_run_setting", "square", "square", "square", "square"]

    second = _pipeline(tmp_path, runner, "commit")
    assert second["names"] == ["Cached"] * 4
    assert second["setting"] == "Completed"  # other flow parameters: another key
    assert second["entries"] == ["per_run_setting", "per_run_setting", "square", "square", "square", "square",
                                 "square"]
    assert sum(1 for m in _marks(tmp_path) if m.startswith("square 100")) == 2  # computed again: never committed
    assert sum(1 for m in _marks(tmp_path) if m.startswith("square ")) == 6  # 0..3 once, 100 twice

    third = _pipeline(tmp_path, runner, "commit")
    assert third["setting"] == "Cached"  # the flow's parameters reached the worker: the same key as the last run
    assert _marks(tmp_path).count("setting") == 2
    assert sum(1 for m in _marks(tmp_path) if m.startswith("square 100")) == 2  # committed last time: Cached

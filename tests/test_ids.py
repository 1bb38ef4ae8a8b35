"""Trace, span and run ids stay unique when a pipeline seeds ``random`` and when a process forks."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from conftest import PYTHON, subprocess_env

SCRIPT = textwrap.dedent('''
    import json, os, random, sys
    random.seed(7)  # common in data pipelines; the SDK's default id generator draws from this state
    from opentelemetry import trace
    from otelflow import flow, task, telemetry
    from otelflow.context import FlowRunContext

    @task
    def step():
        return trace.get_current_span().get_span_context().span_id

    @flow
    def pipeline():
        ctx = trace.get_current_span().get_span_context()
        return {"trace": ctx.trace_id, "span": ctx.span_id, "task_span": step(),
                "run": str(FlowRunContext.get().flow_run.id)}

    ids = [pipeline()]
    if "--fork" in sys.argv:
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.write(write, json.dumps(pipeline()).encode())
            os._exit(0)
        os.waitpid(pid, 0)
        ids.append(json.loads(os.read(read, 65536)))
        ids.append(pipeline())
    telemetry.shutdown()
    print(json.dumps(ids))
''')


def _ids(tmp_path: Path, *args: str) -> list[dict[str, object]]:
    script = tmp_path / "ids.py"
    script.write_text(SCRIPT)
    proc = subprocess.run([PYTHON, str(script), *args], env=subprocess_env(OTELFLOW_HOME=str(tmp_path / "home")),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_random_seed_does_not_repeat_trace_span_or_run_ids(tmp_path: Path) -> None:
    (first,) = _ids(tmp_path)
    (second,) = _ids(tmp_path)
    for key in ("trace", "span", "task_span", "run"):
        assert first[key] != second[key], key


def test_parent_and_forked_child_never_share_ids(tmp_path: Path) -> None:
    before, child, parent_after = _ids(tmp_path, "--fork")
    for key in ("trace", "span", "task_span", "run"):
        assert len({before[key], child[key], parent_after[key]}) == 3, key

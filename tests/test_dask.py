"""DaskTaskRunner on a real ``LocalCluster(processes=True, n_workers=2)``: task spans from both worker
processes land in the flow's trace, as children of the flow span, and worker run logs correlate.

The flow runs in a child process (clean global OTel providers; the cluster's workers inherit its
``OTEL_*`` environment) and exports through the loopback OTLP receiver.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env
from otlp_receiver import OTLPReceiver, ReceivedSpan

from otelflow import semconv

pytest.importorskip("distributed")

pytestmark = pytest.mark.slow

FLOW_SCRIPT = textwrap.dedent(
    """
    import json
    import os
    import time

    from opentelemetry import trace

    from otelflow import allow_failure, flow, get_run_logger, tags, task
    from otelflow.integrations.dask import DaskTaskRunner


    @task
    def square(x: int) -> dict:
        # A user span inside the task run, recording which worker process ran it.
        with trace.get_tracer("dask-test").start_as_current_span("work") as span:
            span.set_attribute("test.pid", os.getpid())
            time.sleep(0.05)  # some work, so that both single-threaded workers get a share
            get_run_logger().info("squared %s on %s", x, os.getpid())
        return x * x


    @task
    def total(values: list) -> int:
        return sum(values)


    @task
    def explode() -> None:
        raise ValueError("boom on a worker")


    @task
    def describe(value: object) -> str:
        return repr(value)


    runner = DaskTaskRunner(
        cluster_kwargs={"processes": True, "n_workers": 2, "threads_per_worker": 1, "dashboard_address": None}
    )


    @flow(task_runner=runner)
    def squares() -> dict:
        with tags("dask-test"):
            mapped = square.map(range(8))
            summed = total.submit(mapped)  # futures as arguments: their final states go to the worker
            failed = explode.submit()
            # upstream failed: the worker's engine records it NotReady (the user's code does not run)
            skipped = describe.submit(failed)
            allowed = describe.submit(allow_failure(failed))
            return {
                "squares": mapped.result(),
                "total": summed.result(),
                "failed": failed.state.name,
                "failed_message": failed.state.message,
                "skipped": skipped.state.name,
                "allowed": allowed.result(),
                "parent_pid": os.getpid(),
            }


    if __name__ == "__main__":  # worker processes are spawned: they must not run the flow again
        print(json.dumps(squares()))
    """
)


def _by_name(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


def test_dask_local_cluster_task_spans_join_the_flow_trace(otlp_receiver: OTLPReceiver, tmp_path: Path) -> None:
    script = tmp_path / "dask_flow.py"
    script.write_text(FLOW_SCRIPT)
    proc = subprocess.run(
        [PYTHON, str(script)],
        env=subprocess_env(
            OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
            OTEL_SERVICE_NAME="dask-flow",
            OTEL_METRICS_EXPORTER="none",
        ),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["squares"] == [x * x for x in range(8)]
    assert result["total"] == sum(x * x for x in range(8))
    assert result["failed"] == "Failed" and "boom on a worker" in result["failed_message"]
    assert result["skipped"] == "NotReady"
    assert result["allowed"] == "ValueError('boom on a worker')"

    def complete() -> list[ReceivedSpan] | None:
        spans = otlp_receiver.spans()
        done = (
            len(_by_name(spans, "task square")) == 8
            and len(_by_name(spans, "work")) == 8
            and _by_name(spans, "flow squares")
            and len(_by_name(spans, "task describe")) == 2
        )
        return spans if done else None

    spans = otlp_receiver.wait_for(complete, timeout=30)
    (flow_span,) = _by_name(spans, "flow squares")
    task_spans = [s for s in spans if s.attributes.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_TASK]
    assert len(task_spans) == 12  # 8 squares, total, explode, 2 x describe
    for span in task_spans:
        assert span.trace_id == flow_span.trace_id
        assert span.parent_span_id == flow_span.span_id, span.name
        assert span.attributes[semconv.FLOW_RUN_ID] == flow_span.attributes[semconv.RUN_ID]
        assert span.attributes[semconv.FLOW_NAME] == "squares"
        assert span.attributes[semconv.TAGS] == ["dask-test"]
        assert span.resource["service.name"] == "dask-flow"  # workers read the same OTEL_* settings
    squares = _by_name(spans, "task square")
    assert sorted(s.attributes[semconv.TASK_MAP_INDEX] for s in squares) == list(range(8))
    (explode_span,) = _by_name(spans, "task explode")
    assert explode_span.status_code == 2 and explode_span.attributes[semconv.ERROR_TYPE] == "ValueError"

    # The user's spans inside the task runs: children of their task span, from two worker processes.
    square_ids = {s.span_id for s in squares}
    work = _by_name(spans, "work")
    assert {w.parent_span_id for w in work} == square_ids
    pids = {w.attributes["test.pid"] for w in work}
    assert len(pids) == 2, pids
    assert result["parent_pid"] not in pids

    # Run logs on the workers: correlated with their task span and the flow run.
    def worker_logs() -> list[Any] | None:
        logs = [r for r in otlp_receiver.logs() if str(r.body).startswith("squared")]
        return logs if len(logs) == 8 else None

    logs = otlp_receiver.wait_for(worker_logs, timeout=30)
    for record in logs:
        assert record.trace_id == flow_span.trace_id
        assert record.span_id in square_ids
        assert record.attributes[semconv.FLOW_RUN_ID] == flow_span.attributes[semconv.RUN_ID]

    # Prefect's runner lines, in the flow run (the runner starts when the flow run does).
    runner_lines = [r for r in otlp_receiver.logs() if r.scope_name == "otelflow.task_runner.dask"]
    bodies = [str(r.body) for r in runner_lines]
    assert bodies[0] == "Creating a new Dask cluster with `distributed.deploy.local.LocalCluster`"
    assert bodies[1].startswith("The Dask dashboard is available at http")
    assert all(r.span_id == flow_span.span_id for r in runner_lines)

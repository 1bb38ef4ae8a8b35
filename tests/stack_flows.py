"""Flows the real-stack tests run, in a subprocess, with a record of what the process exported.

    python tests/stack_flows.py SCENARIO RECORD.json [ARG]

The process exports as configured by its environment (OTLP to the test's Collector, or the spool). Next
to that export, a recorder on the same tracer provider writes every span the process ended to
RECORD.json (ids, parents, names, attributes, status, events): the ground truth the test compares with
what Jaeger returns. Scenarios:

- ``etl``: ``examples/etl.py`` run as the README runs it;
- ``fails``: a flow also named ``etl`` whose task raises, so the flow run fails;
- ``long``: a flow that runs until the file ARG exists (its pending record is in Jaeger meanwhile);
- ``big_exception``: a task that raises an exception whose message is ARG megabytes long;
- ``many_tasks``: a flow of ARG sequential task runs.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from otelflow import flow, get_run_logger, task, telemetry

ROOT = Path(__file__).resolve().parent.parent


class Recorder(SpanProcessor):
    """Keeps every ended span as a plain dict."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []

    def on_end(self, span: ReadableSpan) -> None:
        context = span.get_span_context()
        assert context is not None
        self.spans.append(
            {
                "trace_id": f"{context.trace_id:032x}",
                "span_id": f"{context.span_id:016x}",
                "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else "",
                "name": span.name,
                "kind": span.kind.name,
                "attributes": _plain(dict(span.attributes or {})),
                "status": span.status.status_code.name,
                "status_message": span.status.description or "",
                "events": [
                    {"name": event.name, "time": event.timestamp, "attributes": _plain(dict(event.attributes or {}))}
                    for event in span.events
                ],
                "start": span.start_time,
                "end": span.end_time,
            }
        )


def _plain(attributes: dict[str, Any]) -> dict[str, Any]:
    return {key: list(value) if isinstance(value, tuple) else value for key, value in attributes.items()}


@task
def broken(reason: str) -> None:
    get_run_logger().warning("about to fail: %s", reason)
    raise RuntimeError(reason)


@flow(name="etl")
def failing_pipeline() -> None:
    get_run_logger().info("starting a run that fails")
    broken("the warehouse refused the load")


@task
def wait_for(path: str) -> str:
    get_run_logger().info("waiting for %s", path)
    while not Path(path).exists():
        time.sleep(0.05)
    return path


@flow
def long_pipeline(path: str) -> str:
    return wait_for(path)


@task
def huge_failure(megabytes: int) -> None:
    raise ValueError("x" * (megabytes * 1024 * 1024))


@flow
def huge_exception_pipeline(megabytes: int) -> None:
    huge_failure(megabytes)


@task
def step(i: int) -> int:
    return i


@flow
def many_tasks_pipeline(n: int) -> int:
    return sum(step(i) for i in range(n))


def main(argv: Sequence[str]) -> int:
    scenario, record = argv[0], Path(argv[1])
    arg = argv[2] if len(argv) > 2 else ""
    telemetry.configure()
    recorder = Recorder()
    provider = trace.get_tracer_provider()
    provider.add_span_processor(recorder)  # type: ignore[attr-defined]
    try:
        if scenario == "etl":
            runpy.run_path(str(ROOT / "examples" / "etl.py"), run_name="__main__")
        elif scenario == "fails":
            failing_pipeline(return_state=True)
        elif scenario == "long":
            long_pipeline(arg)
        elif scenario == "big_exception":
            huge_exception_pipeline(int(arg), return_state=True)
        elif scenario == "many_tasks":
            many_tasks_pipeline(int(arg))
        else:
            raise SystemExit(f"unknown scenario {scenario!r}")
    finally:
        flushed = telemetry.flush(timeout_seconds=300)
        record.write_text(json.dumps({"spans": recorder.spans, "stats": telemetry.stats(), "flushed": flushed}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""examples/microservices served for real: a uvicorn (or wsgiref) process and a pipeline process, both
exporting to a loopback OTLP receiver. One trace, two service.names, correlated run logs."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from otlp_receiver import OTLPReceiver, ReceivedSpan

from otelflow import semconv

pytestmark = pytest.mark.slow

EXAMPLE = REPO_ROOT / "examples" / "microservices"
N_ITEMS = 3


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _telemetry_env(receiver: OTLPReceiver, service_name: str) -> dict[str, str]:
    return subprocess_env(
        OTEL_SERVICE_NAME=service_name,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_METRICS_EXPORTER="none",
        OTEL_BSP_SCHEDULE_DELAY="100",  # the test waits for the service's telemetry while it keeps running
        OTEL_BLRP_SCHEDULE_DELAY="100",
    )


@contextlib.contextmanager
def running_service(command: list[str], receiver: OTLPReceiver, port: int) -> Iterator[str]:
    """Start the service process, wait until /health answers (bounded), terminate it at the end."""
    proc = subprocess.Popen(command, cwd=REPO_ROOT, env=_telemetry_env(receiver, "scoring-service"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"service exited with {proc.returncode}:\n{proc.stdout.read()}")  # type: ignore[union-attr]
            try:
                if httpx.get(f"{url}/health", timeout=1).text == "ok":
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service did not answer /health within 30 s"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_pipeline(url: str, receiver: OTLPReceiver) -> dict[str, Any]:
    proc = subprocess.run([PYTHON, str(EXAMPLE / "pipeline.py"), "--url", url, "-n", str(N_ITEMS)], cwd=REPO_ROOT,
                          env=_telemetry_env(receiver, "pipeline"), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def assert_one_trace_across_services(receiver: OTLPReceiver, flow_run_id: str) -> None:
    def complete() -> list[ReceivedSpan] | None:
        spans = receiver.spans()
        service_tasks = [s for s in spans if s.name == "task score_item"]
        flows = [s for s in spans if s.name == "flow scoring-pipeline"]
        return spans if len(service_tasks) == N_ITEMS and flows else None

    spans = receiver.wait_for(complete, timeout=30)
    (flow_span,) = [s for s in spans if s.name == "flow scoring-pipeline"]
    assert flow_span.attributes[semconv.RUN_ID] == flow_run_id
    trace_spans = [s for s in spans if s.trace_id == flow_span.trace_id]
    assert {s.resource["service.name"] for s in trace_spans} == {"pipeline", "scoring-service"}

    by_id = {s.span_id: s for s in trace_spans}
    pipeline_tasks = {s.span_id: s for s in trace_spans if s.name == "task score"}
    service_tasks = [s for s in trace_spans if s.name == "task score_item"]
    assert len(pipeline_tasks) == N_ITEMS and len(service_tasks) == N_ITEMS
    for span in service_tasks:
        assert span.resource["service.name"] == "scoring-service"
        assert span.attributes[semconv.FLOW_RUN_ID] == flow_run_id
        assert span.attributes[semconv.TAGS] == ["microservices-example"]
        # Descends from one of the pipeline's task spans (directly: no HTTP instrumentation in between).
        ancestor = by_id.get(span.parent_span_id)
        while ancestor is not None and ancestor.span_id not in pipeline_tasks:
            ancestor = by_id.get(ancestor.parent_span_id)
        assert ancestor is not None, f"{span.name} does not descend from a pipeline task span"

    def service_logs() -> list[Any] | None:
        logs = [r for r in receiver.logs() if r.resource.get("service.name") == "scoring-service"]
        scored = [r for r in logs if str(r.body).startswith("Scored item")]
        return logs if len(scored) == N_ITEMS else None

    logs = receiver.wait_for(service_logs, timeout=30)
    service_task_ids = {s.span_id for s in service_tasks}
    for record in logs:
        assert record.trace_id == flow_span.trace_id
        assert record.attributes[semconv.FLOW_RUN_ID] == flow_run_id
        if str(record.body).startswith(("Scored item", "Finished in state ")):  # the service's task runs' lines
            assert record.span_id in service_task_ids
        else:  # "Scoring request ...": logged by the handler, correlated with the calling task run
            assert record.span_id in pipeline_tasks


def test_asgi_service_under_uvicorn_joins_the_pipeline_trace(otlp_receiver: OTLPReceiver) -> None:
    port = _free_port()
    command = [PYTHON, "-m", "uvicorn", "examples.microservices.service:app", "--host", "127.0.0.1",
               "--port", str(port), "--log-level", "warning"]
    with running_service(command, otlp_receiver, port) as url:
        result = run_pipeline(url, otlp_receiver)
        assert len(result["scores"]) == N_ITEMS
        assert_one_trace_across_services(otlp_receiver, result["flow_run_id"])


def test_wsgi_service_under_wsgiref_joins_the_pipeline_trace(otlp_receiver: OTLPReceiver) -> None:
    port = _free_port()
    command = [PYTHON, str(EXAMPLE / "service.py"), "--wsgi", "--port", str(port)]
    with running_service(command, otlp_receiver, port) as url:
        result = run_pipeline(url, otlp_receiver)
        assert len(result["scores"]) == N_ITEMS
        assert_one_trace_across_services(otlp_receiver, result["flow_run_id"])

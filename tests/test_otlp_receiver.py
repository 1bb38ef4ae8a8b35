"""The test OTLP receiver itself: real SDK exporters -> receiver -> decoded spans, logs and metrics."""

from __future__ import annotations

import gzip
import logging
import urllib.error
import urllib.request

import otlp_receiver as receivers  # tests/ is on sys.path (rootdir conftest), like conftest imports it
import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.logging.handler import LoggingHandler
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode
from otlp_receiver import OTLPGrpcReceiver, OTLPReceiver

# conftest provides `otlp_receiver`; the gRPC twin is only needed here.
otlp_grpc_receiver = receivers.otlp_grpc_receiver

RESOURCE = Resource.create({"service.name": "receiver-test", "deployment.environment": "ci"})


def _emit_spans(exporter: SpanExporter) -> tuple[str, str]:
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("receiver-test-scope")
    attributes = {"s": "x", "i": 7, "f": 1.5, "b": True}
    with (
        tracer.start_as_current_span("parent", attributes=attributes) as parent,
        tracer.start_as_current_span("child") as child,
    ):
        child.set_attribute("tags", ["a", "b"])
        child.add_event("Running", {"n": 1})
        child.set_status(Status(StatusCode.ERROR, "boom"))
    provider.shutdown()
    return f"{parent.get_span_context().trace_id:032x}", f"{parent.get_span_context().span_id:016x}"


def _assert_spans(receiver: OTLPReceiver | OTLPGrpcReceiver, trace_id: str, parent_id: str) -> None:
    spans = receiver.wait_for(lambda: len(receiver.spans()) >= 2 and receiver.spans())
    by_name = {s.name: s for s in spans}
    parent, child = by_name["parent"], by_name["child"]
    assert parent.trace_id == child.trace_id == trace_id
    assert parent.span_id == parent_id and parent.parent_span_id == ""
    assert child.parent_span_id == parent_id
    assert parent.attributes == {"s": "x", "i": 7, "f": 1.5, "b": True}
    assert child.attributes == {"tags": ["a", "b"]}
    assert [(e.name, e.attributes) for e in child.events] == [("Running", {"n": 1})]
    assert (child.status_code, child.status_message) == (2, "boom")
    assert child.resource["service.name"] == "receiver-test"
    assert child.resource["deployment.environment"] == "ci"
    assert child.scope_name == "receiver-test-scope"


def test_http_spans_arrive_decoded(otlp_receiver: OTLPReceiver) -> None:
    trace_id, parent_id = _emit_spans(OTLPSpanExporter(endpoint=f"{otlp_receiver.endpoint}/v1/traces"))
    _assert_spans(otlp_receiver, trace_id, parent_id)
    assert otlp_receiver.request_headers[0]["content-type"] == "application/x-protobuf"


def test_http_gzip(otlp_receiver: OTLPReceiver) -> None:
    exporter = OTLPSpanExporter(endpoint=f"{otlp_receiver.endpoint}/v1/traces", compression=Compression.Gzip)
    trace_id, parent_id = _emit_spans(exporter)
    _assert_spans(otlp_receiver, trace_id, parent_id)
    assert otlp_receiver.request_headers[0]["content-encoding"] == "gzip"


def test_http_endpoint_from_env(otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    trace_id, parent_id = _emit_spans(OTLPSpanExporter())
    _assert_spans(otlp_receiver, trace_id, parent_id)
    assert otlp_receiver.request_headers[0]["x-tenant"] == "acme"


def test_http_logs_correlate_with_spans(otlp_receiver: OTLPReceiver) -> None:
    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(OTLPLogExporter(endpoint=f"{otlp_receiver.endpoint}/v1/logs"))
    )
    tracer_provider = TracerProvider(resource=RESOURCE)
    logger = logging.getLogger("receiver-test-logger")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = LoggingHandler(logger_provider=logger_provider)
    logger.addHandler(handler)
    try:
        with tracer_provider.get_tracer("t").start_as_current_span("op") as span:
            logger.warning("hello %s", "world", extra={"otelflow.flow_run.id": "abc", "n": 3})
    finally:
        logger.removeHandler(handler)
        logger_provider.shutdown()

    (record,) = otlp_receiver.wait_for(otlp_receiver.logs)
    assert record.body == "hello world"
    assert record.severity_text == "WARN" or record.severity_text == "WARNING"
    assert record.severity_number == 13  # SeverityNumber.WARN
    assert record.trace_id == f"{span.get_span_context().trace_id:032x}"
    assert record.span_id == f"{span.get_span_context().span_id:016x}"
    assert record.attributes["otelflow.flow_run.id"] == "abc"
    assert record.attributes["n"] == 3
    assert record.resource["service.name"] == "receiver-test"


def test_http_metrics(otlp_receiver: OTLPReceiver) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otlp_receiver.endpoint}/v1/metrics"), export_interval_millis=60_000
    )
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    meter = provider.get_meter("m")
    meter.create_counter("otelflow.runs", unit="{run}").add(2, {"otelflow.run.type": "flow"})
    meter.create_histogram("otelflow.run.duration", unit="s").record(0.25, {"otelflow.run.type": "task"})
    provider.shutdown()

    metrics = otlp_receiver.wait_for(
        lambda: {"otelflow.runs", "otelflow.run.duration"} <= set(otlp_receiver.metrics()) and otlp_receiver.metrics()
    )
    (runs,) = metrics["otelflow.runs"]
    assert (runs.kind, runs.value, runs.attributes, runs.unit) == ("sum", 2, {"otelflow.run.type": "flow"}, "{run}")
    (duration,) = metrics["otelflow.run.duration"]
    assert (duration.kind, duration.count, duration.sum) == ("histogram", 1, 0.25)
    assert duration.resource["service.name"] == "receiver-test"


def test_http_injected_failures_are_retried(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.fail_next(2, status=503)
    trace_id, parent_id = _emit_spans(OTLPSpanExporter(endpoint=f"{otlp_receiver.endpoint}/v1/traces"))
    _assert_spans(otlp_receiver, trace_id, parent_id)
    assert otlp_receiver.attempts >= 3


def test_http_non_retryable_failure_is_answered(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.fail_next(1, status=500)
    request = urllib.request.Request(
        f"{otlp_receiver.endpoint}/v1/traces",
        data=trace_service_pb2.ExportTraceServiceRequest().SerializeToString(),
        headers={"Content-Type": "application/x-protobuf"},
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert excinfo.value.code == 500
    # The next request succeeds with an (empty) protobuf response.
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        assert trace_service_pb2.ExportTraceServiceResponse.FromString(response.read()) is not None
    assert otlp_receiver.attempts == 2 and len(otlp_receiver.trace_requests) == 1


@pytest.mark.parametrize(
    ("path", "content_type", "body", "status"),
    [
        ("/v1/nope", "application/x-protobuf", b"", 404),
        ("/v1/traces", "application/json", b"{}", 415),
        ("/v1/traces", "application/x-protobuf", b"\xff\xff\xff", 400),
    ],
)
def test_http_rejects_bad_requests(
    otlp_receiver: OTLPReceiver, path: str, content_type: str, body: bytes, status: int
) -> None:
    request = urllib.request.Request(
        f"{otlp_receiver.endpoint}{path}", data=body, headers={"Content-Type": content_type}
    )
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(request, timeout=5)
    assert excinfo.value.code == status
    assert otlp_receiver.trace_requests == []


def test_http_gzip_by_hand(otlp_receiver: OTLPReceiver) -> None:
    payload = trace_service_pb2.ExportTraceServiceRequest()
    payload.resource_spans.add().scope_spans.add().spans.add(name="by-hand", trace_id=b"\x01" * 16)
    request = urllib.request.Request(
        f"{otlp_receiver.endpoint}/v1/traces",
        data=gzip.compress(payload.SerializeToString()),
        headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
    (span,) = otlp_receiver.spans()
    assert (span.name, span.trace_id) == ("by-hand", "01" * 16)


def test_wait_for_times_out_with_a_useful_message(otlp_receiver: OTLPReceiver) -> None:
    with pytest.raises(AssertionError, match="not met within"):
        otlp_receiver.wait_for(otlp_receiver.spans, timeout=0.05)


def test_grpc_spans_and_logs_arrive_decoded(otlp_grpc_receiver: OTLPGrpcReceiver) -> None:
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    exporter = GrpcSpanExporter(endpoint=otlp_grpc_receiver.endpoint, insecure=True, headers={"x-tenant": "acme"})
    trace_id, parent_id = _emit_spans(exporter)
    _assert_spans(otlp_grpc_receiver, trace_id, parent_id)
    assert otlp_grpc_receiver.request_headers[0]["x-tenant"] == "acme"

    logger_provider = LoggerProvider(resource=RESOURCE)
    logger_provider.add_log_record_processor(
        SimpleLogRecordProcessor(GrpcLogExporter(endpoint=otlp_grpc_receiver.endpoint, insecure=True))
    )
    logger_provider.get_logger("g").emit(body="via grpc", severity_text="INFO")
    logger_provider.shutdown()
    (record,) = otlp_grpc_receiver.wait_for(otlp_grpc_receiver.logs)
    assert record.body == "via grpc" and record.resource["service.name"] == "receiver-test"


def test_receivers_release_their_ports() -> None:
    with OTLPReceiver() as first:
        endpoint = first.endpoint
    with pytest.raises(RuntimeError):
        _ = first.endpoint
    with OTLPReceiver() as second:
        assert second.endpoint != "" and endpoint.startswith("http://127.0.0.1:")


def test_grpc_receiver_refuses_requests_over_4_mib_like_a_collector(otlp_grpc_receiver):  # type: ignore[no-untyped-def]
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter

    exporter = GrpcSpanExporter(endpoint=otlp_grpc_receiver.endpoint, insecure=True, timeout=5)
    provider = TracerProvider(resource=RESOURCE, shutdown_on_exit=False)
    spans = []

    class Keep(SimpleSpanProcessor):
        def on_end(self, span):  # type: ignore[no-untyped-def]
            spans.append(span)

    provider.add_span_processor(Keep(exporter))
    tracer = provider.get_tracer("t")
    with tracer.start_as_current_span("small"):
        pass
    with tracer.start_as_current_span("huge", attributes={"blob": "x" * (receivers.MAX_GRPC_MESSAGE_BYTES + 10)}):
        pass
    assert exporter.export(spans[:1]).name == "SUCCESS"
    assert exporter.export(spans[1:]).name == "FAILURE"  # RESOURCE_EXHAUSTED: larger than max
    assert [s.name for s in otlp_grpc_receiver.spans()] == ["small"]
    exporter.shutdown()


def test_receiver_can_start_on_a_chosen_port_later():  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    receiver = OTLPReceiver().start(port)
    try:
        assert receiver.endpoint == f"http://127.0.0.1:{port}"
    finally:
        receiver.stop()

"""Shipping OTLP/JSON lines: exact round trips, delivery to a real receiver, durable progress, bad lines."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs as proto_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as proto_spans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, StatusCode

from otelflow._internal.export.ship import read_progress, ship_directory
from otelflow._internal.spool.otlp_json import decode_logs, decode_spans, encode_logs, encode_spans
from otelflow._internal.spool.writer import SpoolWriter


def make_spans(count: int = 3) -> list:  # type: ignore[type-arg]
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otelflow", "0.1.0")
    with tracer.start_as_current_span("flow f", attributes={"i": 1, "f": [1.5, math.nan], "b": True, "s": ["x"]}) as f:
        for i in range(count - 1):
            with tracer.start_as_current_span("task t", kind=SpanKind.CLIENT,
                                              links=[Link(f.get_span_context(), {"param": "x"})]) as t:
                t.add_event("Retrying", {"attempt": i})
                t.set_status(StatusCode.ERROR, f"boom {i}")
    return list(exporter.get_finished_spans())


def make_logs() -> list:  # type: ignore[type-arg]
    exporter = InMemoryLogRecordExporter()
    provider = LoggerProvider(shutdown_on_exit=False)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    tracer = TracerProvider(shutdown_on_exit=False).get_tracer("t")
    with tracer.start_as_current_span("s"):
        provider.get_logger("otelflow.run").emit(LogRecord(
            timestamp=1, body="hello", severity_number=SeverityNumber.WARN, severity_text="WARN",
            attributes={"nested": {"n": 1, "l": [1, 2]}, "raw": b"\x00\x01"}))
    provider.get_logger("other").emit(LogRecord(timestamp=2, body={"k": [1, "two"]}, event_name="my.event"))
    return list(exporter.get_finished_logs())


def test_spans_round_trip_exactly_and_encode_to_the_same_protobuf():  # type: ignore[no-untyped-def]
    spans = make_spans()
    line = encode_spans(spans)
    decoded = decode_spans(line)
    assert encode_spans(decoded) == line
    assert proto_spans(decoded) == proto_spans(spans)  # what the OTLP exporters would put on the wire


def test_logs_round_trip_exactly_and_encode_to_the_same_protobuf():  # type: ignore[no-untyped-def]
    logs = make_logs()
    line = encode_logs(logs)
    decoded = decode_logs(line)
    assert encode_logs(decoded) == line
    assert proto_logs(decoded) == proto_logs(logs)


def write_lines(directory: Path, signal: str, lines: list[str]) -> Path:
    writer = SpoolWriter(directory, signal)
    for line in lines:
        writer.write(line)
    writer.close()
    assert writer.path is not None
    return writer.path


def test_ship_a_folder_to_a_real_receiver_in_order_once(otlp_receiver, tmp_path):  # type: ignore[no-untyped-def]
    batches = [make_spans(3) for _ in range(4)]
    path = write_lines(tmp_path, "traces", [encode_spans(b) for b in batches])
    with path.open("ab") as handle:
        handle.write(b'{"resourceSpans": [')  # a crashed writer's partial last line
    exporter = OTLPSpanExporter(endpoint=otlp_receiver.endpoint + "/v1/traces")
    result = ship_directory(tmp_path, "traces", exporter)
    assert (result.lines_sent, result.items_sent, result.failed) == (4, 12, False)
    expected = [f"{s.context.span_id:016x}" for b in batches for s in b]
    assert [s.span_id for s in otlp_receiver.spans()] == expected
    # Shipping again sends nothing: progress is on disk.
    again = ship_directory(tmp_path, "traces", exporter)
    assert again.lines_sent == 0 and len(otlp_receiver.spans()) == 12


def test_a_failed_export_stops_and_the_next_ship_resumes_at_that_line(otlp_receiver, tmp_path):  # type: ignore[no-untyped-def]
    batches = [make_spans(2) for _ in range(3)]
    path = write_lines(tmp_path, "traces", [encode_spans(b) for b in batches])
    exporter = OTLPSpanExporter(endpoint=otlp_receiver.endpoint + "/v1/traces", timeout=2)
    calls = []

    def export(items):  # type: ignore[no-untyped-def]
        calls.append(len(items))
        if len(calls) == 2:
            return False  # the collector went away during the second line
        return exporter.export(items).name == "SUCCESS"

    first = ship_directory(tmp_path, "traces", export)
    assert first.failed and first.lines_sent == 1
    assert read_progress(path) == len((encode_spans(batches[0]) + "\n").encode())
    second = ship_directory(tmp_path, "traces", exporter, delete_shipped=True)
    assert second.lines_sent == 2 and not second.failed
    assert [s.span_id for s in otlp_receiver.spans()] == [f"{s.context.span_id:016x}" for b in batches for s in b]
    assert not path.exists()  # fully shipped buffer files are deleted


def test_malformed_lines_are_skipped_and_counted_logs_too(otlp_receiver, tmp_path):  # type: ignore[no-untyped-def]
    logs = make_logs()
    write_lines(tmp_path, "logs", [encode_logs(logs), "not json", json.dumps({"resourceLogs": "nope"}),
                                   encode_logs(logs)])
    result = ship_directory(tmp_path, "logs", OTLPLogExporter(endpoint=otlp_receiver.endpoint + "/v1/logs"))
    assert result.lines_sent == 2 and result.lines_skipped == 2
    received = otlp_receiver.logs()
    assert [r.body for r in received] == ["hello", {"k": [1, "two"]}] * 2
    assert received[0].attributes["raw"] == b"\x00\x01"
    assert received[0].trace_id and received[1].trace_id == ""


def test_unknown_signal_is_refused(tmp_path):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="traces"):
        ship_directory(tmp_path, "metrics", lambda batch: True)

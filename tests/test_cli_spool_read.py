"""The spool reader never raises on what it reads: any bytes, any JSON shape. Valid lines decode exactly."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelflow._internal.spool.otlp_json import encode_spans
from otelflow._internal.spool.reader import Skipped, decode_attributes, parse_log_line, parse_span_line

# JSON built from the OTLP vocabulary, so the fuzzing reaches the decoder's inner paths, not just json.loads.
_KEYS = st.sampled_from([
    "resourceSpans", "resourceLogs", "scopeSpans", "scopeLogs", "spans", "logRecords", "resource", "attributes",
    "key", "value", "stringValue", "intValue", "doubleValue", "boolValue", "arrayValue", "kvlistValue", "values",
    "bytesValue", "traceId", "spanId", "parentSpanId", "name", "startTimeUnixNano", "endTimeUnixNano", "status",
    "code", "message", "events", "links", "timeUnixNano", "body", "severityNumber", "severityText",
])
_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=40),
    st.sampled_from(["a" * 32, "b" * 16, "1795570394821116398", "99999999999999999999999", "-5", "NaN"]),
)
_JSON = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_KEYS, inner, max_size=6)), max_leaves=40)


@settings(max_examples=400, deadline=None)
@given(_JSON)
def test_any_json_shape_is_skipped_or_decoded_never_raised(value: Any) -> None:
    line = json.dumps(value)
    skipped = Skipped()
    for span in parse_span_line(line, skipped, "x"):
        assert len(span.trace_id) == 32 and len(span.span_id) == 16 and 0 <= span.start < 2**63
    for record in parse_log_line(line, skipped, "x"):
        assert isinstance(record.body, str) and 0 <= record.time < 2**63
    decode_attributes(value)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_are_skipped_never_raised(line: bytes) -> None:
    skipped = Skipped()
    assert parse_span_line(line, skipped, "f:0") == []
    assert parse_log_line(line, skipped, "f:0") == []


def test_encoder_lines_decode_exactly() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otelflow")
    attrs: dict[str, Any] = {"s": "x", "i": 3, "f": 1.5, "b": True, "arr": ["a", "b"], "nums": [1, 2]}
    with tracer.start_as_current_span("flow f", attributes=attrs) as parent:
        parent.add_event("Retrying", {"otelflow.run.attempt": 2})
        with tracer.start_as_current_span("task t"):
            pass
    spans = exporter.get_finished_spans()
    skipped = Skipped()
    decoded = parse_span_line(encode_spans(spans), skipped, "x")
    assert skipped.count == 0 and len(decoded) == 2
    by_name = {s.name: s for s in decoded}
    flow, task = by_name["flow f"], by_name["task t"]
    assert flow.attributes == attrs and flow.parent_id is None and task.parent_id == flow.span_id
    assert flow.events[0][0] == "Retrying" and flow.events[0][2] == {"otelflow.run.attempt": 2}
    assert flow.start == spans[1].start_time and flow.end == spans[1].end_time


@pytest.mark.parametrize("bad", ["0x" + "a" * 30, "+" + "a" * 31, "aaaa_" * 6 + "aa", " " + "a" * 31,
                                 "a" * 31 + "\n"])
def test_ids_are_hex_digits_only(bad: str) -> None:
    """Was: a trace id was checked with int(value, 16), which takes "0x...", "+...", "1_0", blanks and other scripts'
    digits: such a span was read, under an id no other record could name."""
    line = json.dumps({"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": bad, "spanId": "b" * 16, "startTimeUnixNano": "1", "endTimeUnixNano": "2"}]}]}]})
    skipped = Skipped()
    assert parse_span_line(line, skipped, "traces-x.jsonl:0") == [] and skipped.count == 1


def test_a_log_record_reports_damage_in_its_attributes_when_they_are_decoded() -> None:
    """A record's attributes are decoded when first used: damage found then is counted where the record was read,
    once, and the record keeps its other attributes."""
    record = {"timeUnixNano": "5", "body": {"stringValue": "hi"}, "attributes": [
        {"key": "good", "value": {"intValue": "7"}}, {"key": "bad", "value": {"intValue": "\u00b2"}},
        {"key": "deep", "value": {"kvlistValue": {"values": [{"key": "x", "value": {"intValue": "9" * 50}}]}}}]}
    line = json.dumps({"resourceLogs": [{"scopeLogs": [{"logRecords": [{"timeUnixNano": "1"}, record]}]}]})
    skipped = Skipped()
    first, second = parse_log_line(line, skipped, "logs-x.jsonl:40")
    assert skipped.count == 0 and first.attributes == {}
    assert second.attributes == {"good": 7} and second.damaged
    assert skipped.count == 1 and skipped.first_location() == ("logs-x.jsonl", 40)
    assert second.attributes == {"good": 7} and skipped.count == 1  # decoded once, counted once
    parse_log_line(line, skipped, "logs-x.jsonl:40")[1].decode()  # the same record read again: the same one
    assert skipped.count == 1

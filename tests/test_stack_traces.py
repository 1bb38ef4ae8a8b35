"""A run's trace through the real stack: otelflow -> the real Collector -> the real Jaeger.

Each flow runs in its own process (``tests/stack_flows.py``) and exports as a user's would, over
OTLP/HTTP or OTLP/gRPC to the Collector of ``collector/otelcol.yaml``, which forwards to Jaeger v2 of
``collector/jaeger.yaml`` (badger storage). The process also records every span it ended, with the
same ids: Jaeger's query API must return exactly those spans (parents, names, attributes, status,
events), find them by the tags the README documents, and keep them across a restart of Jaeger.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from stack_parts import (
    MAIN_SERVICE,
    SPOOL_CONFIG,
    Collector,
    Jaeger,
    LokiDoor,
    Stack,
    exported_everything,
    flow_run_id,
    only_trace,
    open_stack,
    run_flow,
    start_main_collector,
    wait_until,
)

from otelflow import semconv
from otelflow._internal.spool.otlp_json import decode_attributes

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SERVICE = MAIN_SERVICE
ARRIVAL_TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with open_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def _hex_id(value: str) -> str:
    """Jaeger's OTLP JSON ids (hex, as the OTLP/JSON spec says) in lower case."""
    return value.lower()


def _event_order(event: dict[str, Any]) -> tuple[int, str]:
    """Events in time order (Jaeger returns them so; ties by name, since their order is then free)."""
    return event["time"], event["name"]


def jaeger_view(span: dict[str, Any]) -> dict[str, Any]:
    """A span of /api/v3/traces in the recorder's shape."""
    status = span.get("status") or {}
    code = {"STATUS_CODE_OK": "OK", "STATUS_CODE_ERROR": "ERROR", 1: "OK", 2: "ERROR"}.get(status.get("code"), "UNSET")
    return {
        "span_id": _hex_id(span["spanId"]),
        "parent_span_id": _hex_id(span.get("parentSpanId") or ""),
        "name": span["name"],
        "attributes": decode_attributes(span.get("attributes") or []),
        "status": code,
        "status_message": status.get("message", ""),
        "events": sorted(
            (
                {
                    "name": e["name"],
                    "time": int(e["timeUnixNano"]),
                    "attributes": decode_attributes(e.get("attributes") or []),
                }
                for e in span.get("events") or []
            ),
            key=_event_order,
        ),
    }


def as_jaeger_keeps(attributes: dict[str, Any]) -> dict[str, Any]:
    """Attributes as Jaeger stores them: its span model has no arrays, so an array is its JSON text.

    (``otelflow.tags`` ``["demo", "etl"]`` comes back as ``'["demo","etl"]'``: the OTLP -> Jaeger model
    translation of pkg/translator/jaeger in opentelemetry-collector-contrib.)
    """
    return {k: json.dumps(v, separators=(",", ":")) if isinstance(v, list) else v for k, v in attributes.items()}


def assert_same_trace(record: dict[str, Any], arrived: list[dict[str, Any]]) -> None:
    """Every span the process ended arrived unchanged (pending records too), and nothing else did."""
    sent = {s["span_id"]: s for s in record["spans"]}
    got = {view["span_id"]: view for view in map(jaeger_view, arrived)}
    assert set(sent) == set(got), (
        f"missing in Jaeger: {sorted(set(sent) - set(got))[:5]}, never sent: {sorted(set(got) - set(sent))[:5]}"
    )
    for span_id, span in sent.items():
        view = got[span_id]
        for key in ("parent_span_id", "name", "status", "status_message"):
            assert view[key] == span[key], (span["name"], key, view[key], span[key])
        assert view["attributes"] == as_jaeger_keeps(span["attributes"]), span["name"]
        expected_events = sorted(
            ({**e, "attributes": as_jaeger_keeps(e["attributes"])} for e in span["events"]), key=_event_order
        )
        assert view["events"] == expected_events, span["name"]
    roots = [s for s in sent.values() if not s["parent_span_id"]]
    assert len(roots) == 1, roots
    for span in sent.values():  # one tree: every parent is a span of the trace
        assert not span["parent_span_id"] or span["parent_span_id"] in sent, span["name"]


def arrived_trace(jaeger: Jaeger, record: dict[str, Any]) -> list[dict[str, Any]]:
    """Jaeger's spans of the record's trace, once every recorded span is there."""
    trace_id = only_trace(record)
    wanted = {s["span_id"] for s in record["spans"]}

    def complete() -> list[dict[str, Any]] | None:
        spans = jaeger.trace_v3(trace_id)
        return spans if wanted <= {_hex_id(s["spanId"]) for s in spans} else None

    return wait_until(complete, ARRIVAL_TIMEOUT_S, f"the {len(wanted)} spans of trace {trace_id} in Jaeger")


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_a_flow_reaches_jaeger_whole_over_each_otlp_protocol(stack: Stack, tmp_path: Path, protocol: str) -> None:
    endpoint = stack.grpc_endpoint if protocol == "grpc" else stack.http_endpoint
    record = run_flow(tmp_path, "etl", endpoint=endpoint, protocol=protocol)
    exported_everything(record)
    arrived = arrived_trace(stack.jaeger, record)
    assert_same_trace(record, arrived)
    runs = Counter(s["name"] for s in map(jaeger_view, arrived) if semconv.SPAN_PENDING not in s["attributes"])
    assert runs == {"flow etl": 1, "task extract": 1, "task transform": 5, "task validate": 5, "task load": 1}
    # the flaky transform of row 2 ran twice: one span, attempt 2, with its Retrying event
    retried = [s for s in map(jaeger_view, arrived) if any(e["name"] == "Retrying" for e in s["events"])]
    assert [(s["name"], s["attributes"][semconv.RUN_ATTEMPT]) for s in retried] == [("task transform", 2)]
    assert {s["resource"]["service.name"]["stringValue"] for s in arrived} == {SERVICE}


def test_jaeger_finds_a_run_by_the_tags_the_readme_documents(stack: Stack, tmp_path: Path) -> None:
    ok = run_flow(tmp_path, "etl", endpoint=stack.http_endpoint)
    failed = run_flow(tmp_path, "fails", endpoint=stack.http_endpoint)
    for record in (ok, failed):
        arrived_trace(stack.jaeger, record)

    by_id = stack.jaeger.find(SERVICE, {semconv.FLOW_RUN_ID: flow_run_id(ok)})
    assert [t["traceID"] for t in by_id] == [only_trace(ok)]

    errors = stack.jaeger.find(SERVICE, {semconv.FLOW_NAME: "etl", "error": "true"})
    assert only_trace(failed) in {t["traceID"] for t in errors}
    assert only_trace(ok) not in {t["traceID"] for t in errors}
    failed_spans = [s for s in record_spans(errors, only_trace(failed)) if _tag(s, "error") is True]
    assert {s["operationName"] for s in failed_spans} == {"flow etl", "task broken"}


def record_spans(traces: list[dict[str, Any]], trace_id: str) -> list[dict[str, Any]]:
    return [s for t in traces if t["traceID"] == trace_id for s in t["spans"]]


def _tag(span: dict[str, Any], key: str) -> Any:
    return next((t["value"] for t in span.get("tags", []) if t["key"] == key), None)


def test_a_running_flows_pending_record_is_in_jaeger_while_it_runs(stack: Stack, tmp_path: Path) -> None:
    release = tmp_path / "release"
    outcome: dict[str, Any] = {}
    runner = threading.Thread(
        target=lambda: outcome.update(run_flow(tmp_path, "long", endpoint=stack.http_endpoint, arg=str(release)))
    )
    runner.start()
    try:
        def pending_flow_run() -> list[dict[str, Any]] | None:
            traces = stack.jaeger.find(SERVICE, {semconv.SPAN_PENDING: "true", semconv.FLOW_NAME: "long-pipeline"})
            return traces or None

        traces = wait_until(pending_flow_run, ARRIVAL_TIMEOUT_S, "the pending record of the running flow")
        assert not outcome, "the flow ended before its pending record was seen"
        spans = traces[0]["spans"]
        assert all(_tag(s, semconv.SPAN_PENDING) is True for s in spans)
        assert {_tag(s, semconv.RUN_TYPE) for s in spans} >= {semconv.RUN_TYPE_FLOW}
    finally:
        release.touch()
        runner.join(120)
    assert_same_trace(outcome, arrived_trace(stack.jaeger, outcome))


def test_a_5_mb_exception_arrives_whole(stack: Stack, tmp_path: Path) -> None:
    record = run_flow(tmp_path, "big_exception", endpoint=stack.grpc_endpoint, protocol="grpc", arg="5")
    exported_everything(record)
    arrived = arrived_trace(stack.jaeger, record)
    assert_same_trace(record, arrived)
    messages = [
        e["attributes"].get("exception.message", "")
        for s in map(jaeger_view, arrived) for e in s["events"] if e["name"] == "exception"
    ]
    assert messages and max(len(m) for m in messages) == len(max(
        (e["attributes"].get("exception.message", "") for s in record["spans"] for e in s["events"]), key=len
    ))


def test_a_20k_task_flow_arrives_whole(stack: Stack, tmp_path: Path) -> None:
    record = run_flow(tmp_path, "many_tasks", endpoint=stack.http_endpoint, arg="20000")
    exported_everything(record)
    assert len(record["spans"]) >= 20001
    assert_same_trace(record, arrived_trace(stack.jaeger, record))


def test_jaeger_keeps_the_traces_across_a_restart(tmp_path: Path) -> None:
    jaeger = Jaeger(tmp_path / "jaeger", tmp_path / "badger").start()
    loki = LokiDoor().start()
    collector, endpoint, _ = start_main_collector(tmp_path / "collector", jaeger, loki)
    try:
        record = run_flow(tmp_path, "etl", endpoint=endpoint)
        before = arrived_trace(jaeger, record)
        assert jaeger.stop() == 0
        jaeger.start()  # same ports, same badger directories
        after = jaeger.trace_v3(only_trace(record))
        assert sorted(map(json.dumps, map(jaeger_view, after))) == sorted(map(json.dumps, map(jaeger_view, before)))
    finally:
        collector.stop()
        loki.stop()
        jaeger.stop()


@pytest.mark.parametrize(("scenario", "arg"), [("etl", ""), ("big_exception", "5")], ids=["etl", "5-MB-exception"])
def test_a_spool_shipped_by_the_spool_collector_shows_the_same_trace_in_jaeger(
    stack: Stack, tmp_path: Path, scenario: str, arg: str
) -> None:
    """A spool line of several MB (one export request) is read whole and forwarded whole too."""
    home = tmp_path / "home"
    record = run_flow(tmp_path, scenario, endpoint=None, home=home, arg=arg)  # no endpoint: the local spool
    spool_files = sorted((home / "spool").glob("**/traces-*.jsonl"))
    assert spool_files, f"nothing in the spool of {home}"
    shipper = Collector(
        SPOOL_CONFIG,
        tmp_path / "shipper",
        {
            "collector:4317": stack.grpc_endpoint.removeprefix("http://"),
            "/spool/": f"{home / 'spool'}/",
            "/var/lib/otelcol/spool-offsets": str(tmp_path / "offsets"),
        },
        name="collector-spool",
    ).start()
    try:
        assert_same_trace(record, arrived_trace(stack.jaeger, record))
    finally:
        assert shipper.stop() == 0

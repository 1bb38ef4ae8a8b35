"""The dashboards query what otelflow really emits (issue 5).

Runs a small real flow under ``otelflow.testing.capture_telemetry()`` and checks that every Prometheus
series and label and every Loki structured-metadata name the provisioned dashboards and datasources
use maps back (through ``semconv.prometheus_name`` / ``semconv.loki_name``, i.e. the collector's and
Loki's own translations) to a metric name / attribute key present in that telemetry. A name that only
exists in a copied string list, and not on the wire, fails here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

from otelflow import flow, get_run_logger, semconv, task
from otelflow.testing import capture_telemetry


def _load_static() -> Any:
    """The name extraction helpers of test_stack_static.py (one parser for both test files)."""
    name = "_otelflow_stack_static"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("test_stack_static.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


static = _load_static()


@task
def double(x: int) -> int:
    get_run_logger().info("doubling %s", x)
    return 2 * x


@task
def explode() -> None:
    get_run_logger().info("about to fail")
    raise ValueError("boom")


@flow
def contract_pipeline(x: int = 2) -> int:
    get_run_logger().info("pipeline starts")
    doubled = double(x)
    failed = explode(return_state=True)
    assert failed.is_failed()
    return doubled


def _attributes(record: Any) -> dict[str, Any]:
    inner = getattr(record, "log_record", record)
    return dict(inner.attributes or {})


def _trace_id(record: Any) -> int:
    inner = getattr(record, "log_record", record)
    return int(inner.trace_id or 0)


@pytest.fixture(scope="module")
def telemetry() -> Any:
    with capture_telemetry() as captured:
        assert contract_pipeline(2) == 4
    return captured


@pytest.fixture(scope="module")
def dashboard_queries() -> dict[str, list[str]]:
    """PromQL and LogQL of every provisioned dashboard and datasource link."""
    ds_doc = static.load_yaml(static.DATASOURCES)
    uids = static.datasource_uids(ds_doc)
    queries: dict[str, list[str]] = {"prometheus": [], "loki": []}
    for dash in static.all_dashboards():
        for _where, uid, expr in static.iter_queries(dash, uids):
            if uids.get(uid) in queries and expr:
                queries[uids[uid]].append(expr)
    for d in ds_doc["datasources"]:
        t2l = (d.get("jsonData") or {}).get("tracesToLogsV2") or {}
        if t2l.get("customQuery"):
            queries["loki"].append(t2l["query"])
    assert queries["prometheus"] and queries["loki"]
    return queries


def test_dashboard_metrics_and_labels_were_emitted_by_a_real_run(
    telemetry: Any, dashboard_queries: dict[str, list[str]]
) -> None:
    emitted = set(telemetry.metric_names())
    series_to_metric = static.series_to_metric()
    problems = []
    for expr in dashboard_queries["prometheus"]:
        metrics, labels, _ = static.promql_names(expr)
        for series in metrics:
            otel_name = series_to_metric.get(series)
            if otel_name is None or otel_name not in emitted:
                problems.append(f"{series!r} maps to no emitted metric (emitted: {sorted(emitted)}) in {expr}")
                continue
            keys = set(telemetry.metric_attribute_keys(otel_name))
            for label in labels - static.PROMETHEUS_BUILTIN_LABELS:
                if label not in {semconv.loki_name(k) for k in keys}:
                    problems.append(f"label {label!r} is no attribute of {otel_name} (has {sorted(keys)})")
    assert problems == []


def test_dashboard_label_values_were_emitted_by_a_real_run(
    telemetry: Any, dashboard_queries: dict[str, list[str]]
) -> None:
    """The run type / final state values the panels filter on are the ones the run spans carry."""
    span_values: dict[str, set[str]] = {semconv.RUN_TYPE: set(), semconv.RUN_STATE: set()}
    for span in telemetry.spans:
        for key, values in span_values.items():
            if key in (span.attributes or {}):
                values.add(str(span.attributes[key]))
    assert span_values[semconv.RUN_STATE] >= {"Completed", "Failed"}, span_values
    by_label = {semconv.loki_name(k): v for k, v in span_values.items()}
    for expr in dashboard_queries["prometheus"]:
        for label, _op, value in static.promql_names(expr)[2]:
            if label in by_label and "$" not in value:
                wanted = set(value.split("|"))
                assert wanted & by_label[label], f"{label}=~{value!r} matches no emitted value {by_label[label]}"


def test_logql_structured_metadata_names_are_attributes_of_real_log_records(
    telemetry: Any, dashboard_queries: dict[str, list[str]]
) -> None:
    run_records = [r for r in telemetry.logs if semconv.FLOW_RUN_ID in _attributes(r)]
    assert run_records, "get_run_logger() records carry the flow run id"
    present = {semconv.loki_name(k) for r in run_records for k in _attributes(r)}
    problems = []
    for expr in dashboard_queries["loki"]:
        _selector, filters = static.logql_names(expr)
        for name in filters - static.LOKI_RECORD_METADATA:
            if name not in present:
                problems.append(f"{name!r} is no attribute of the captured log records ({sorted(present)}): {expr}")
    assert problems == []
    task_records = [r for r in run_records if semconv.TASK_RUN_ID in _attributes(r)]
    assert task_records, "task run logs carry the task run id"
    # trace_id is what the Loki -> Jaeger derived field follows: run logs must be correlated to spans
    assert all(_trace_id(r) != 0 for r in run_records)
    span_trace_ids = {s.context.trace_id for s in telemetry.spans}
    assert {_trace_id(r) for r in run_records} <= span_trace_ids

"""The dashboards query what otelflow really emits (issues 5 and 14).

Runs a small real flow under ``otelflow.testing.capture_telemetry()`` and compares the *values* the stack
filters on with that telemetry:

- the dashboard's Level variable offers exactly the ``severity_text`` values run log records carry
  (Loki stores them unchanged), one record logged at every Python level through ``get_run_logger()``;
- every label of the run metrics a query uses is a spanmetrics dimension of the collector's config, and
  that dimension is an attribute of the real run spans the query selects; the values queries match on
  (run type, final state) are values those spans carry;
- the collector's filter in front of the connector, applied to the real spans, keeps every finished run
  and drops what is no run and pending records;
- every Loki field name is an index label made of a real resource attribute or a real log attribute.

Name extraction and translations are those of tests/test_stack_static.py (one parser for both files).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from otelflow import flow, get_run_logger, semconv, task
from otelflow.settings import reset_settings
from otelflow.testing import CapturedTelemetry, capture_telemetry


def _load_static() -> Any:
    """The helpers of test_stack_static.py (one parser and one set of translations for both files)."""
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

PYTHON_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL)
LEVEL_PROBE = "level probe"


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
    logger = get_run_logger()
    for level in PYTHON_LEVELS:
        logger.log(level, "%s %s", LEVEL_PROBE, logging.getLevelName(level))
    doubled = double(x)
    failed = explode(return_state=True)
    assert failed.is_failed()
    return doubled


def _record(record: Any) -> Any:
    return getattr(record, "log_record", record)


def _attributes(record: Any) -> dict[str, Any]:
    return dict(_record(record).attributes or {})


@pytest.fixture(scope="module")
def telemetry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CapturedTelemetry]:
    """One run of ``contract_pipeline``, run loggers at DEBUG so that every level is emitted."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OTELFLOW_HOME", str(tmp_path_factory.mktemp("otelflow-home")))
        env.setenv("OTELFLOW_LOGGING_LEVEL", "DEBUG")
        env.setenv("OTELFLOW_LOGGING_TO_CONSOLE", "false")
        reset_settings()
        try:
            with capture_telemetry() as captured:
                assert contract_pipeline(2) == 4
        finally:
            env.undo()
            reset_settings()
    yield captured


@pytest.fixture(scope="module")
def dashboard_queries() -> dict[str, list[str]]:
    """PromQL and LogQL of every provisioned dashboard, datasource link and the docs."""
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
    docs = [static.DOCS.read_text(encoding="utf-8")]
    docs.append(static.readme_stack_section(static.README.read_text(encoding="utf-8")))
    for text in docs:
        for kind, found in static.doc_queries(text).items():
            queries[kind] += found
    assert queries["prometheus"] and queries["loki"]
    return queries


def run_spans(telemetry: CapturedTelemetry) -> list[Any]:
    """The finished flow and task run spans (not pending records)."""
    return [
        s
        for s in telemetry.spans
        if (s.attributes or {}).get(semconv.RUN_TYPE) in static.RUN_TYPES
        and (s.attributes or {}).get(semconv.SPAN_PENDING) is not True
    ]


# --- the Level filter --------------------------------------------------------------------------------


def severity_texts(telemetry: CapturedTelemetry) -> set[str]:
    """severity_text of the run log records logged once at every Python level."""
    probes = [r for r in telemetry.logs if str(_record(r).body).startswith(LEVEL_PROBE)]
    assert len(probes) == len(PYTHON_LEVELS), [_record(r).body for r in probes]
    return {str(_record(r).severity_text) for r in probes}


def level_problems(offered: Iterable[str], emitted: set[str]) -> list[str]:
    """A Level filter must offer exactly the severity texts the run logs carry: no dead choice, none missing."""
    offered = list(offered)
    problems = [
        f"Level {v!r} matches no run log record (they carry {sorted(emitted)})" for v in offered if v not in emitted
    ]
    problems += [f"run logs with severity_text {v!r} cannot be selected" for v in sorted(emitted - set(offered))]
    return problems


def test_the_level_filter_offers_exactly_the_severity_texts_run_logs_carry(telemetry: CapturedTelemetry) -> None:
    emitted = severity_texts(telemetry)
    assert len(emitted) == len(PYTHON_LEVELS), emitted
    for dash in static.all_dashboards():
        query, options = static.level_values(dash)
        assert level_problems(query, emitted) == [], dash["title"]
        assert level_problems(options, emitted) == [], dash["title"]


def test_severity_values_in_queries_and_docs_are_emitted_ones(
    telemetry: CapturedTelemetry, dashboard_queries: dict[str, list[str]]
) -> None:
    emitted = severity_texts(telemetry)
    used = {
        value
        for expr in dashboard_queries["loki"]
        for m in re.finditer(r'severity_text\s*=~?\s*"([^"$]*)"', expr)
        for value in m.group(1).split("|")
    }
    assert used, "the docs show how to filter by level"
    assert used <= emitted, f"{sorted(used - emitted)} are Python level names, not OTel severity texts"


def test_level_check_fails_on_python_level_names(telemetry: CapturedTelemetry) -> None:
    problems = level_problems(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], severity_texts(telemetry))
    assert any("'WARNING' matches no run log record" in p for p in problems)
    assert any("'FATAL' cannot be selected" in p for p in problems)


# --- the run metrics --------------------------------------------------------------------------------------


def dimension_of_label(collector: Mapping[str, Any]) -> dict[str, str]:
    """Prometheus label -> the spanmetrics dimension (span attribute) it is made of."""
    dims = [d["name"] for d in static.spanmetrics(collector).get("dimensions") or []]
    return {static.prometheus_label(k): k for k in dims}


def selected_run_types(matchers: Iterable[tuple[str, str, str]]) -> set[str]:
    """The run types a query's otelflow_run_type matcher selects (both if it has none)."""
    for label, op, value in matchers:
        if label == static.prometheus_label(semconv.RUN_TYPE) and op in ("=", "=~") and "$" not in value:
            return set(value.split("|"))
    return set(static.RUN_TYPES)


def metric_label_problems(queries: Iterable[str], spans: list[Any], collector: Mapping[str, Any]) -> list[str]:
    """Labels of run-metric queries that no dimension makes, or that the selected real spans lack."""
    problems = []
    dims = dimension_of_label(collector)
    defaults = {static.prometheus_label(k) for k in static.SPANMETRICS_DEFAULT_DIMENSIONS}
    series = static.run_metric_series(collector)
    for expr in queries:
        metrics, labels, matchers = static.promql_names(expr)
        for metric in sorted(metrics - set(series)):
            problems.append(f"{metric!r} is no run metric series {sorted(series)}: {expr}")
        run_types = selected_run_types(matchers)
        selected = [s for s in spans if s.attributes[semconv.RUN_TYPE] in run_types]
        if not selected:
            problems.append(f"the query selects run types {sorted(run_types)} that no run has: {expr}")
        for label in sorted(labels - static.PROMETHEUS_BUILTIN_LABELS - defaults):
            key = dims.get(label)
            if key is None:
                problems.append(f"label {label!r} is no spanmetrics dimension ({sorted(dims)}): {expr}")
                continue
            lacking = sorted({s.name for s in selected if key not in (s.attributes or {})})
            if lacking:
                problems.append(f"label {label!r}: spans {lacking} have no attribute {key!r}: {expr}")
        if static.prometheus_label("service.name") in labels:
            lacking = sorted({s.name for s in selected if "service.name" not in s.resource.attributes})
            if lacking:
                problems.append(f"spans {lacking} have no resource service.name (label service_name): {expr}")
    return problems


def test_run_metric_labels_are_dimensions_the_real_run_spans_carry(
    telemetry: CapturedTelemetry, dashboard_queries: dict[str, list[str]]
) -> None:
    spans = run_spans(telemetry)
    types = {s.attributes[semconv.RUN_TYPE] for s in spans}
    assert types == static.RUN_TYPES, types
    collector = static.main_collector()
    assert metric_label_problems(dashboard_queries["prometheus"], spans, collector) == []
    # every configured dimension is a real span attribute (a task name only on task runs)
    for key in static.RUN_DIMENSIONS:
        carriers = {s.attributes[semconv.RUN_TYPE] for s in spans if key in s.attributes}
        expected = {semconv.RUN_TYPE_TASK} if key == semconv.TASK_NAME else static.RUN_TYPES
        assert carriers == expected, (key, carriers)


def test_run_metric_check_fails_on_a_label_no_span_carries(telemetry: CapturedTelemetry) -> None:
    collector = static.main_collector()
    flow_only = 'sum by (otelflow_task_name) (otelflow_runs_calls_total{otelflow_run_type="flow"})'
    problems = metric_label_problems(
        [flow_only, "sum by (otelflow_run_name) (otelflow_runs_calls_total)"], run_spans(telemetry), collector
    )
    assert any("have no attribute 'otelflow.task.name'" in p for p in problems), problems
    assert any("'otelflow_run_name' is no spanmetrics dimension" in p for p in problems), problems


def test_values_the_panels_filter_on_are_values_real_runs_carry(
    telemetry: CapturedTelemetry, dashboard_queries: dict[str, list[str]]
) -> None:
    spans = run_spans(telemetry)
    values = {
        static.prometheus_label(key): {str(s.attributes[key]) for s in spans if key in s.attributes}
        for key in (semconv.RUN_TYPE, semconv.RUN_STATE)
    }
    assert values[static.prometheus_label(semconv.RUN_STATE)] >= {"Completed", "Failed"}, values
    for expr in dashboard_queries["prometheus"]:
        for label, _op, value in static.promql_names(expr)[2]:
            if label in values and "$" not in value and "<" not in value:
                assert set(value.split("|")) & values[label], f"{label}=~{value!r} matches none of {values[label]}"
    # the per-flow task panels group task runs by the flow they ran in
    flows = {s.attributes[semconv.FLOW_NAME] for s in spans if s.attributes[semconv.RUN_TYPE] == semconv.RUN_TYPE_FLOW}
    assert {s.attributes[semconv.FLOW_NAME] for s in spans} == flows == {"contract-pipeline"}


def test_the_collectors_filter_counts_finished_runs_only(telemetry: CapturedTelemetry) -> None:
    conditions = static.run_metric_conditions(static.main_collector())
    runs = run_spans(telemetry)
    assert runs and not [s.name for s in runs if static.ottl_drops(conditions, s.attributes or {})]
    others = [s for s in telemetry.spans if semconv.RUN_TYPE not in (s.attributes or {})]
    assert all(static.ottl_drops(conditions, s.attributes or {}) for s in others)
    pending = [s for s in telemetry.spans if (s.attributes or {}).get(semconv.SPAN_PENDING) is True]
    assert all(static.ottl_drops(conditions, s.attributes or {}) for s in pending)
    # a pending record carries its run's attributes (semconv.SPAN_PENDING): it must not count as a run
    for span in runs:
        assert static.ottl_drops(conditions, {**span.attributes, semconv.SPAN_PENDING: True}), span.name


# --- Loki ---------------------------------------------------------------------------------------------


def test_logql_names_are_index_labels_or_attributes_of_real_log_records(
    telemetry: CapturedTelemetry, dashboard_queries: dict[str, list[str]]
) -> None:
    run_records = [r for r in telemetry.logs if semconv.FLOW_RUN_ID in _attributes(r)]
    assert run_records, "get_run_logger() records carry the flow run id"
    present = {semconv.loki_name(k) for r in run_records for k in _attributes(r)}
    loki = static.load_yaml(static.LOKI)
    first = run_records[0]
    resource = dict((getattr(first, "resource", None) or _record(first).resource).attributes)
    index = {semconv.loki_name(a) for a in static.loki_index_attributes(loki) if a in resource}
    assert index == {"service_name"}, index
    problems = []
    for expr in dashboard_queries["loki"]:
        selector, filters = static.logql_names(expr)
        for name in selector - index:
            problems.append(f"{name!r} is no index label made of a real resource attribute: {expr}")
        for name in filters - static.LOKI_RECORD_METADATA:
            if name not in present:
                problems.append(f"{name!r} is no attribute of the captured log records ({sorted(present)}): {expr}")
    assert problems == []
    task_records = [r for r in run_records if semconv.TASK_RUN_ID in _attributes(r)]
    assert task_records, "task run logs carry the task run id"
    # trace_id is what the Loki -> Jaeger derived field follows: run logs must be correlated to spans
    assert all(int(_record(r).trace_id or 0) != 0 for r in run_records)
    span_trace_ids = {s.context.trace_id for s in telemetry.spans}
    assert {int(_record(r).trace_id) for r in run_records} <= span_trace_ids

"""The Level filter and the LogQL names match what otelflow really emits (issues 5 and 14).

Runs a small real flow under ``otelflow.testing.capture_telemetry()`` and compares the *values* the
stack's Loki side filters on with that telemetry:

- the dashboard's Level variable offers exactly the ``severity_text`` values run log records carry
  (Loki stores them unchanged), one record logged at every Python level through ``get_run_logger()``;
  the severity values the docs filter on are emitted ones;
- every Loki field name of the dashboards, the traces -> logs link and the docs is an index label made of
  a real resource attribute or an attribute of the real log records, and run logs carry the trace id the
  logs -> traces link follows.

Loki and Grafana cannot run here; their static checks and the LogQL name extraction are those of
tests/test_stack_static.py. The run metrics, the Collector's filter and its names are checked for real:
the Collector, Jaeger and Prometheus built from their Go modules, in
tests/test_stack_{configs,traces,metrics,logs}.py.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator
from typing import Any

import pytest
from stack_queries import dashboard_queries, dashboards, datasources, documented_queries
from test_stack_static import LOKI, LOKI_RECORD_METADATA, level_values, load_yaml, logql_names, loki_index_attributes

from otelflow import flow, get_run_logger, semconv, task
from otelflow.settings import reset_settings
from otelflow.testing import CapturedTelemetry, capture_telemetry

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
def loki_queries() -> list[str]:
    """LogQL of every provisioned dashboard, the traces -> logs link, the README and the docs."""
    queries = [expr for _where, expr in dashboard_queries("loki") + documented_queries("loki") if expr]
    for d in datasources()["datasources"]:
        t2l = (d.get("jsonData") or {}).get("tracesToLogsV2") or {}
        if t2l.get("customQuery"):
            queries.append(t2l["query"])
    assert queries
    return queries


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
    for dash in dashboards():
        query, options = level_values(dash)
        assert level_problems(query, emitted) == [], dash["title"]
        assert level_problems(options, emitted) == [], dash["title"]


def test_severity_values_in_queries_and_docs_are_emitted_ones(
    telemetry: CapturedTelemetry, loki_queries: list[str]
) -> None:
    emitted = severity_texts(telemetry)
    used = {
        value
        for expr in loki_queries
        for m in re.finditer(r'severity_text\s*=~?\s*"([^"$]*)"', expr)
        for value in m.group(1).split("|")
    }
    assert used, "the docs show how to filter by level"
    assert used <= emitted, f"{sorted(used - emitted)} are Python level names, not OTel severity texts"


def test_level_check_fails_on_python_level_names(telemetry: CapturedTelemetry) -> None:
    problems = level_problems(["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"], severity_texts(telemetry))
    assert any("'WARNING' matches no run log record" in p for p in problems)
    assert any("'FATAL' cannot be selected" in p for p in problems)


# --- Loki ---------------------------------------------------------------------------------------------


def test_logql_names_are_index_labels_or_attributes_of_real_log_records(
    telemetry: CapturedTelemetry, loki_queries: list[str]
) -> None:
    run_records = [r for r in telemetry.logs if semconv.FLOW_RUN_ID in _attributes(r)]
    assert run_records, "get_run_logger() records carry the flow run id"
    present = {semconv.loki_name(k) for r in run_records for k in _attributes(r)}
    loki = load_yaml(LOKI)
    first = run_records[0]
    resource = dict((getattr(first, "resource", None) or _record(first).resource).attributes)
    index = {semconv.loki_name(a) for a in loki_index_attributes(loki) if a in resource}
    assert index == {"service_name"}, index
    problems = []
    for expr in loki_queries:
        selector, filters = logql_names(expr)
        for name in selector - index:
            problems.append(f"{name!r} is no index label made of a real resource attribute: {expr}")
        for name in filters - LOKI_RECORD_METADATA:
            if name not in present:
                problems.append(f"{name!r} is no attribute of the captured log records ({sorted(present)}): {expr}")
    assert problems == []
    task_records = [r for r in run_records if semconv.TASK_RUN_ID in _attributes(r)]
    assert task_records, "task run logs carry the task run id"
    # trace_id is what the Loki -> Jaeger derived field follows: run logs must be correlated to spans
    assert all(int(_record(r).trace_id or 0) != 0 for r in run_records)
    span_trace_ids = {s.context.trace_id for s in telemetry.spans}
    assert {int(_record(r).trace_id) for r in run_records} <= span_trace_ids

"""The run metrics are real: span metrics of the real Collector, scraped by a real Prometheus.

Three flow runs (two of ``examples/etl.py``, one that fails) go over OTLP to the Collector of
``collector/otelcol.yaml``; its ``span_metrics`` connector counts them, its ``prometheus`` exporter
exposes them, and Prometheus (built from its Go module, started with docker-compose.yml's flags and
``collector/prometheus.yml``) scrapes them. Every PromQL query of the dashboards, the README and the
docs is then asked of that Prometheus and must answer with the series and labels the runs make.

Besides addresses and ports, two intervals are shortened for the test (the connector's flush and the
scrape, 15 s -> 1 s); names and labels do not depend on them.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from stack_parts import (
    MAIN_CONFIG,
    Collector,
    Jaeger,
    LokiDoor,
    Prometheus,
    free_port,
    get_json,
    only_trace,
    run_flow,
    wait_until,
)
from stack_queries import dashboard_queries, datasources, documented_queries, grafana_expand

from otelflow import semconv

pytestmark = [pytest.mark.stack, pytest.mark.slow]

SERVICE = "etl"
FLOWS = {"etl"}  # the failing run's flow is named etl too
ETL_TASKS = {"extract", "transform", "validate", "load"}
# Grafana's variables as a user who picked the service and every flow would have them.
GRAFANA_VARIABLES = {
    "service": SERVICE,
    "flow": "etl",
    "__range": "1h",
    "__rate_interval": "5m",
    "__interval": "15s",
}


@dataclass
class MetricsStack:
    prometheus: Prometheus
    records: list[dict[str, Any]]


@pytest.fixture(scope="module")
def metrics(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MetricsStack]:
    workdir = tmp_path_factory.mktemp("metrics")
    jaeger = Jaeger(workdir / "jaeger", workdir / "badger").start()
    loki = LokiDoor().start()
    metrics_port, http_port = free_port(), free_port()
    collector = Collector(
        MAIN_CONFIG,
        workdir / "collector",
        {
            "0.0.0.0:4317": f"127.0.0.1:{free_port()}",
            "0.0.0.0:4318": f"127.0.0.1:{http_port}",
            "0.0.0.0:8889": f"127.0.0.1:{metrics_port}",
            "jaeger:4317": f"127.0.0.1:{jaeger.otlp_grpc_port}",
            "http://loki:3100/otlp": loki.endpoint,
            "/var/lib/otelcol/queue": str(workdir / "queue"),
            "metrics_flush_interval: 15s": "metrics_flush_interval: 1s",
        },
    ).start()
    prometheus = Prometheus(workdir / "prometheus", f"127.0.0.1:{metrics_port}").start()
    # As in production, Prometheus already scrapes the collector when runs come: the exemplars of runs
    # sent before its first scrape of a target are not kept (none were, in this test, without this wait).
    wait_until(prometheus.scraped_once, 30, "Prometheus's first scrape of the collector")
    try:
        endpoint = f"http://127.0.0.1:{http_port}"
        records = [
            run_flow(workdir, "etl", endpoint=endpoint),
            run_flow(workdir, "etl", endpoint=endpoint),
            run_flow(workdir, "fails", endpoint=endpoint),
        ]

        def all_counted() -> bool:
            selector = f'otelflow_run_type="flow", service_name="{SERVICE}"'
            found = prometheus.query(f"sum(otelflow_runs_calls_total{{{selector}}})")
            return bool(found) and float(found[0]["value"][1]) == 3

        wait_until(all_counted, 60, "the 3 flow runs in Prometheus")
        yield MetricsStack(prometheus, records)
    finally:
        prometheus.stop()
        collector.stop()
        loki.stop()
        jaeger.stop()


def series_labels(result: list[dict[str, Any]], *names: str) -> set[tuple[str, ...]]:
    return {tuple(r["metric"].get(n, "") for n in names) for r in result}


def grouping(expr: str) -> tuple[str, ...]:
    """The labels of the outer ``sum by (...)`` of a query, ``le`` aside."""
    found = re.search(r"\bby \(([^)]*)\)", expr)
    return tuple(n.strip() for n in found.group(1).split(",") if n.strip() != "le") if found else ()


def expected_groups(expr: str) -> set[tuple[str, ...]]:
    """What the three runs (etl twice, completed; etl once, failed in task broken) make a query return."""
    failed = "Failed|TimedOut|Crashed" in expr
    by = grouping(expr)
    if 'otelflow_run_type="task"' in expr:
        tasks = {"broken"} if failed else ETL_TASKS | {"broken"}
        if by == ("otelflow_flow_name", "otelflow_task_name"):
            return {("etl", t) for t in tasks}
        if by == ("otelflow_task_name",):
            return {(t,) for t in tasks}
        if by == ("otelflow_flow_name",):
            return {("etl",)}
    if 'otelflow_run_type="flow"' in expr:
        if by == ("otelflow_flow_name",):
            return {("etl",)}
        if by == ("otelflow_flow_name", "otelflow_run_state"):
            return {("etl", "Failed")} if failed else {("etl", "Completed"), ("etl", "Failed")}
    raise AssertionError(f"the test does not know what {expr!r} should return: add it to expected_groups")


def label_values(prometheus: Prometheus, expr: str) -> set[str]:
    """Grafana's ``label_values(selector, label)``, asked of Prometheus as Grafana does (/api/v1/label/...)."""
    found = re.fullmatch(r"label_values\((?:(.*),\s*)?(\w+)\)", expr.strip())
    assert found, expr
    selector, label = found.group(1), found.group(2)
    params = {"match[]": selector} if selector else {}
    doc = get_json(f"{prometheus.url}/api/v1/label/{label}/values?{urllib.parse.urlencode(params)}")
    return set(doc["data"])


def test_the_dashboard_variables_offer_the_services_and_flows_that_ran(metrics: MetricsStack) -> None:
    dashboard = [(w, e) for w, e in dashboard_queries("prometheus") if e.startswith("label_values(")]
    assert {w for w, _ in dashboard} == {"variable service", "variable flow"}
    documented = [(w, e) for w, e in documented_queries("prometheus") if e.startswith("label_values(")]
    for where, expr in dashboard + documented:
        values = label_values(metrics.prometheus, grafana_expand(expr, GRAFANA_VARIABLES))
        expected = {"service_name": {SERVICE}, "otelflow_flow_name": FLOWS}[expr.rstrip(") ").rsplit(",", 1)[1].strip()]
        assert values == expected, where


@pytest.mark.parametrize(
    ("where", "expr"),
    [
        q for q in dashboard_queries("prometheus") + documented_queries("prometheus")
        if not q[1].startswith("label_values(")
    ],
    ids=lambda v: v if not v.startswith(("sum", "hist", "label")) else None,
)
def test_every_promql_query_answers_with_the_series_the_runs_make(metrics: MetricsStack, where: str, expr: str) -> None:
    result = metrics.prometheus.query(grafana_expand(expr, GRAFANA_VARIABLES))
    assert series_labels(result, *grouping(expr)) == expected_groups(expr), (where, expr, result)
    for series in result:
        value = float(series["value"][1])
        assert value > 0 and value == value, (where, series)  # no 0 and no NaN (an empty histogram)


def test_counts_are_exact_and_pending_records_are_not_counted(metrics: MetricsStack) -> None:
    by_state = metrics.prometheus.query(
        'sum by (otelflow_flow_name, otelflow_task_name, otelflow_run_state) (otelflow_runs_calls_total)'
    )
    names = ("otelflow_flow_name", "otelflow_task_name", "otelflow_run_state")
    counts = {tuple(s["metric"].get(n, "") for n in names): float(s["value"][1]) for s in by_state}
    assert counts == {
        ("etl", "", "Completed"): 2,
        ("etl", "extract", "Completed"): 2,
        ("etl", "transform", "Completed"): 10,
        ("etl", "validate", "Completed"): 10,
        ("etl", "load", "Completed"): 2,
        ("etl", "", "Failed"): 1,
        ("etl", "broken", "Failed"): 1,
    }
    pending = sum(1 for r in metrics.records for s in r["spans"] if s["attributes"].get(semconv.SPAN_PENDING))
    assert pending >= 3  # each flow run sent a pending record, and none of them counted above


def test_prometheus_keeps_each_runs_trace_id_as_an_exemplar_of_its_duration(metrics: MetricsStack) -> None:
    """What Grafana's exemplar link (exemplarTraceIdDestinations) opens: the run's trace, from a duration panel.

    Every run but the first after the collector started: that one's exemplar was lost in 5 runs out of 5
    (the collector's exporter had no series yet; docs/production-stack.md, Exemplars).
    """
    (prometheus_ds,) = [d for d in datasources()["datasources"] if d["type"] == "prometheus"]
    (destination,) = prometheus_ds["jsonData"]["exemplarTraceIdDestinations"]
    assert destination["datasourceUid"] == "jaeger"
    runs = [only_trace(r) for r in metrics.records]
    found: set[str] = set()

    def later_runs_stored() -> bool:
        now = time.time()
        series = metrics.prometheus.exemplars(
            'otelflow_runs_duration_seconds_bucket{otelflow_run_type="flow"}', now - 3600, now + 60
        )
        found.update(e["labels"].get(destination["name"]) for s in series for e in s["exemplars"])
        return set(runs[1:]) <= found

    wait_until(later_runs_stored, 30, f"exemplars of the runs after the first, {runs[1:]}")
    assert found <= set(runs)

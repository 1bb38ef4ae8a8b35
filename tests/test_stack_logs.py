"""Run logs through the real Collector, up to Loki's door, and the LogQL users copy.

Loki cannot run here (AGPL, not to be used), so the test stands at its door: the real Collector's
``otlp_http/loki`` exporter of ``collector/otelcol.yaml`` delivers to a real OTLP/HTTP receiver at
Loki's OTLP path (``/otlp/v1/logs``). From the records that arrive, the test computes what Loki would
store, with Loki's own rules:

- index labels: the resource attributes ``collector/loki.yaml`` marks ``index_label`` (only
  ``service.name``), named by ``semconv.loki_name`` (Loki's ``pkg/loghttp/push/otlp.go`` names every
  attribute with ``otlptranslator.LabelNamer``; see ``loki_name``'s docstring);
- structured metadata: every other resource attribute and every log attribute, named the same way,
  plus the record's ``trace_id``, ``span_id`` and ``severity_text`` (otlp.go adds them).

Every LogQL query of the dashboards, the datasources, the README and the docs is then run against those
records (the label-filter subset of LogQL that they use) and must find the run's lines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from otlp_receiver import ReceivedLog
from stack_parts import Stack, flow_run_id, only_trace, open_stack, run_flow, wait_until
from stack_queries import dashboard_queries, datasources, documented_queries, grafana_expand

from otelflow import semconv

pytestmark = [pytest.mark.stack, pytest.mark.slow]

LOKI_CONFIG = Path(__file__).resolve().parent.parent / "collector" / "loki.yaml"
# What Loki's OTLP ingestion adds as structured metadata from the record itself (pkg/loghttp/push/otlp.go).
RECORD_FIELDS = ("trace_id", "span_id", "severity_text")
_MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with open_stack(tmp_path_factory.mktemp("stack")) as running:
        yield running


def index_attributes() -> set[str]:
    """Resource attributes collector/loki.yaml stores as index labels (Loki's defaults replaced)."""
    otlp = yaml.safe_load(LOKI_CONFIG.read_text())["limits_config"]["otlp_config"]["resource_attributes"]
    assert otlp.get("ignore_defaults") is True
    return {a for rule in otlp["attributes_config"] if rule["action"] == "index_label" for a in rule["attributes"]}


def as_loki_stores(record: ReceivedLog) -> tuple[dict[str, str], dict[str, str]]:
    """(index labels, structured metadata) Loki makes of one OTLP log record."""
    index = index_attributes()
    labels = {semconv.loki_name(k): _text(v) for k, v in record.resource.items() if k in index}
    metadata = {semconv.loki_name(k): _text(v) for k, v in record.resource.items() if k not in index}
    metadata |= {semconv.loki_name(k): _text(v) for k, v in record.attributes.items()}
    metadata |= {"trace_id": record.trace_id, "span_id": record.span_id, "severity_text": record.severity_text}
    return labels, metadata


def _text(value: Any) -> str:
    return value if isinstance(value, str) else str(value)


def _match(op: str, pattern: str) -> Callable[[str | None], bool]:
    if op == "=":
        return lambda v: (v or "") == pattern
    if op == "!=":
        return lambda v: (v or "") != pattern
    regex = re.compile(pattern)
    if op == "=~":
        return lambda v: regex.fullmatch(v or "") is not None
    return lambda v: regex.fullmatch(v or "") is None


def run_logql(expr: str, records: Iterable[ReceivedLog]) -> list[ReceivedLog]:
    """The records a LogQL query of the form ``{selector} | name op "value" | ...`` returns.

    The stream selector may only use index labels, the filters any label or structured metadata
    (a name that is neither makes Loki compare with an empty value, as here).
    """
    found = re.fullmatch(r"\s*\{([^}]*)\}((?:\s*\|\s*[A-Za-z_]\w*\s*(?:=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\")*)\s*", expr)
    assert found, f"not a label-filter LogQL query: {expr!r}"
    selector = [(n, _match(op, v)) for n, op, v in _MATCHER.findall(found.group(1))]
    filters = [(n, _match(op, v)) for n, op, v in _MATCHER.findall(found.group(2))]
    result = []
    for record in records:
        labels, metadata = as_loki_stores(record)
        for name, _ in selector:
            assert name in labels, f"{expr!r}: stream selector label {name!r} is no index label ({sorted(labels)})"
        if all(test(labels.get(n)) for n, test in selector) and all(
            test(labels.get(n, metadata.get(n))) for n, test in filters
        ):
            result.append(record)
    return result


def logql_queries() -> list[tuple[str, str]]:
    """Every LogQL query users copy: dashboards, datasource links, README and docs."""
    found = dashboard_queries("loki") + documented_queries("loki")
    for ds in datasources()["datasources"]:
        links = (ds.get("jsonData") or {}).get("tracesToLogsV2") or {}
        if links.get("query"):
            found.append((f"datasource {ds['name']} tracesToLogsV2", links["query"].replace("$${", "${")))
    return found


def test_every_logql_query_finds_the_runs_lines_at_lokis_door(stack: Stack, tmp_path: Path) -> None:
    """Two runs of flow etl, one failing: the error queries have ERROR lines to find."""
    failed = run_flow(tmp_path, "fails", endpoint=stack.http_endpoint)
    record = run_flow(tmp_path, "etl", endpoint=stack.http_endpoint)
    trace_id, run_id = only_trace(record), flow_run_id(record)
    traces = {trace_id, only_trace(failed)}
    logs_sent = sum(s["exported"] for r in (record, failed) for s in r["stats"] if s["signal"] == "logs")

    def arrived() -> list[ReceivedLog] | None:
        mine = [r for r in stack.loki.logs() if r.trace_id in traces]
        return mine if len(mine) >= logs_sent else None

    records = wait_until(arrived, 60, f"the {logs_sent} log records of the runs at Loki's door")
    assert len(records) == logs_sent
    values = {
        "service": "etl", "flow": "etl", "run": run_id, "level": "DEBUG|INFO|WARN|ERROR|FATAL",
        "__trace": trace_id,
    }
    queries = logql_queries()
    assert len(queries) >= 8
    for where, expr in queries:
        concrete = re.sub(r"<[^>]*run[ -]id[^>]*>", run_id, expr)
        concrete = re.sub(r"<[^>]*trace[ -]id[^>]*>", trace_id, concrete)
        concrete = concrete.replace("${__trace.traceId}", trace_id)
        concrete = grafana_expand(concrete, values)
        assert run_logql(concrete, records), f"{where}: {expr!r} finds none of the run's {len(records)} lines"


def test_the_logql_runner_finds_nothing_under_a_wrong_name_and_refuses_metadata_in_the_selector(
    stack: Stack, tmp_path: Path
) -> None:
    record = run_flow(tmp_path, "fails", endpoint=stack.http_endpoint)
    trace_id = only_trace(record)
    records = wait_until(lambda: [r for r in stack.loki.logs() if r.trace_id == trace_id], 60, "the run's logs")
    assert run_logql('{service_name="etl"} | otelflow_flow_name="etl"', records) == records
    # runs of `_` are one in Loki: this name is not Loki's, and finds nothing
    assert run_logql('{service_name="etl"} | otelflow_flow__name="etl"', records) == []
    with pytest.raises(AssertionError, match="no index label"):
        run_logql('{otelflow_flow_name="etl"}', records)

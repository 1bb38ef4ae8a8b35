"""Static checks of the production stack (issue 5): docker-compose.yml, collector/, loki/, prometheus/,
dashboards/. No Docker engine runs here, so everything is checked by parsing the files.

Every check is a small function that takes the parsed document and returns a list of problems; the
``test_*_rejects_*`` tests feed broken copies to prove each checker can fail.

Names the dashboards query are derived from ``otelflow.semconv`` (never copied as strings); the
cross-check against telemetry of a real run is tests/test_stack_contract.py.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelflow import semconv, states

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR_MAIN = ROOT / "collector" / "otelcol.yaml"
COLLECTOR_SPOOL = ROOT / "collector" / "otelcol-spool.yaml"
LOKI = ROOT / "loki" / "loki.yaml"
PROMETHEUS = ROOT / "prometheus" / "prometheus.yml"
DATASOURCES = ROOT / "dashboards" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = ROOT / "dashboards" / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD_DIR = ROOT / "dashboards" / "json"
RUNS_DASHBOARD = DASHBOARD_DIR / "otelflow-runs.json"

# --- the pinned Collector and its components ----------------------------------------------------------
#
# The component types this stack uses, checked to exist under these names in
# otel/opentelemetry-collector-contrib:0.162.0. Sources (looked up with the `search` tool):
# - distributions/otelcol-contrib/manifest.yaml of open-telemetry/opentelemetry-collector-releases
#   (builder manifest: otlpreceiver, otlpjsonfilereceiver, memorylimiterprocessor, batchprocessor,
#   otlpexporter, otlphttpexporter, prometheusexporter, healthcheckextension, storage/filestorage);
# - v0.144.0 core release notes: `otlp` exporter renamed `otlp_grpc`, `otlphttp` renamed `otlp_http`
#   (old names kept as deprecated aliases; collector PRs #14403, #14397, issue #14396, which also
#   lists memory_limiter, batch and the otlp receiver as keeping their names);
# - contrib PR #48728 (merged 2026-05-28, in releases >= 0.154): `otlpjsonfile` receiver renamed
#   `otlp_json_file`, deprecated alias kept (tracking issue contrib #45339);
# - configs validated against the 0.161/0.162 binaries using health_check, memory_limiter, batch,
#   otlp, otlp_grpc, otlp_http, prometheus (third-party guides pinning 0.162.0).
# Bump PINNED_COLLECTOR_VERSION only after re-checking this list against the new release notes.
PINNED_COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib"
PINNED_COLLECTOR_VERSION = "0.162.0"
PINNED_COMPONENTS: dict[str, frozenset[str]] = {
    "receivers": frozenset({"otlp", "otlp_json_file"}),
    "processors": frozenset({"memory_limiter", "batch"}),
    "exporters": frozenset({"otlp_grpc", "otlp_http", "prometheus", "debug"}),
    "extensions": frozenset({"health_check", "file_storage"}),
    "connectors": frozenset(),
}
# Old names: deprecated aliases (work, but log warnings) or removed components.
DEPRECATED_COMPONENTS: dict[str, dict[str, str]] = {
    "receivers": {"otlpjsonfile": "otlp_json_file"},
    "exporters": {"otlp": "otlp_grpc", "otlphttp": "otlp_http", "loki": "otlp_http to Loki's /otlp"},
}

# Images with no shell, wget or curl: a healthcheck exec'd inside them can never pass
# (collector: FROM scratch, releases repo distributions/otelcol-contrib/Dockerfile; jaeger: cmd/jaeger/
# Dockerfile copies one binary; loki 3.x: distroless). They are health-checked by a probe service that
# shares their network namespace.
SHELL_LESS_IMAGES = frozenset({PINNED_COLLECTOR_IMAGE, "jaegertracing/jaeger", "grafana/loki"})
# Programs a healthcheck may exec in the other images.
IMAGE_TOOLS: dict[str, frozenset[str]] = {
    "busybox": frozenset({"wget", "sh"}),
    "prom/prometheus": frozenset({"wget", "sh"}),  # quay.io/prometheus/busybox base
    "grafana/grafana": frozenset({"curl", "wget", "sh"}),
}

# Host ports the stack publishes, and what they are.
EXPECTED_PORTS = {
    4317: "collector",  # OTLP/gRPC
    4318: "collector",  # OTLP/HTTP
    16686: "jaeger",  # Jaeger UI
    3000: "grafana",  # Grafana
    9090: "prometheus",  # Prometheus UI (optional)
    3100: "loki",  # Loki API (optional)
}

# --- names derived from otelflow.semconv --------------------------------------------------------------

# OTel metric name -> (unit, is_counter, is_histogram)
METRICS: dict[str, tuple[str, bool, bool]] = {
    semconv.METRIC_RUN_DURATION: (semconv.METRIC_RUN_DURATION_UNIT, False, True),
    semconv.METRIC_RUNS: (semconv.METRIC_RUNS_UNIT, True, False),
}
# Attributes otelflow puts on its metric points (see semconv comments on METRIC_RUN_DURATION).
METRIC_ATTRIBUTE_KEYS = (semconv.RUN_TYPE, semconv.FLOW_NAME, semconv.TASK_NAME, semconv.RUN_STATE)
# Labels the collector's prometheus exporter adds itself: job (service.name), instance
# (service.instance.id), le (histogram bucket bound).
PROMETHEUS_BUILTIN_LABELS = frozenset({"job", "instance", "le"})
# Loki native OTLP ingestion: resource service.name -> index label; OTLP log record fields -> metadata.
LOKI_INDEX_LABELS = frozenset({semconv.loki_name("service.name")})
LOKI_RECORD_METADATA = frozenset({"trace_id", "span_id", "severity_text", "severity_number", "detected_level"})


def prometheus_series(otel_name: str) -> set[str]:
    """The Prometheus series names the collector's exporter makes of an otelflow metric."""
    unit, counter, histogram = METRICS[otel_name]
    base = semconv.prometheus_name(otel_name, unit, counter=counter)
    return {f"{base}_bucket", f"{base}_sum", f"{base}_count"} if histogram else {base}


def series_to_metric() -> dict[str, str]:
    """Prometheus series name -> the OTel metric name it comes from."""
    return {series: name for name in METRICS for series in prometheus_series(name)}


ALLOWED_SERIES = frozenset(series_to_metric())
ALLOWED_PROM_LABELS = frozenset(semconv.loki_name(k) for k in METRIC_ATTRIBUTE_KEYS) | PROMETHEUS_BUILTIN_LABELS
# Every run attribute a log record may carry, as Loki structured metadata.
ALLOWED_LOKI_METADATA = frozenset(semconv.loki_name(k) for k in semconv.ATTRIBUTE_KEYS) | LOKI_RECORD_METADATA
RUN_TYPES = frozenset({semconv.RUN_TYPE_FLOW, semconv.RUN_TYPE_TASK})
FINAL_STATE_NAMES = frozenset(
    s.name for s in (states.Completed(), states.Failed(), states.TimedOut(), states.Crashed(), states.Cancelled())
)


# --- loading ------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)


@pytest.fixture(scope="module")
def collector_main() -> dict[str, Any]:
    return load_yaml(COLLECTOR_MAIN)


@pytest.fixture(scope="module")
def collector_spool() -> dict[str, Any]:
    return load_yaml(COLLECTOR_SPOOL)


@pytest.fixture(scope="module")
def datasources() -> dict[str, Any]:
    return load_yaml(DATASOURCES)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_json(RUNS_DASHBOARD)


def all_dashboards() -> list[dict[str, Any]]:
    return [load_json(p) for p in sorted(DASHBOARD_DIR.glob("*.json"))]


# --- docker-compose checks ----------------------------------------------------------------------------


def image_repo_and_tag(image: str) -> tuple[str, str | None]:
    name = image.split("@", 1)[0]
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, None
    return repo, tag


def image_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    for name, svc in doc.get("services", {}).items():
        image = svc.get("image")
        if not image:
            problems.append(f"{name}: no image")
            continue
        repo, tag = image_repo_and_tag(image)
        if tag is None or tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
        if repo == PINNED_COLLECTOR_IMAGE and tag != PINNED_COLLECTOR_VERSION:
            problems.append(
                f"{name}: collector {tag} but PINNED_COMPONENTS was verified for {PINNED_COLLECTOR_VERSION}"
            )
    return problems


def _probe_for(doc: dict[str, Any], target: str) -> dict[str, Any] | None:
    for svc in doc.get("services", {}).values():
        if svc.get("network_mode") == f"service:{target}" and svc.get("healthcheck", {}).get("test"):
            return svc
    return None


def _healthcheck_program(test: Any) -> str | None:
    if isinstance(test, str):
        return "sh"
    if isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"):
        return "sh" if test[0] == "CMD-SHELL" else (test[1] if len(test) > 1 else None)
    return None


def healthcheck_problems(doc: dict[str, Any]) -> list[str]:
    """Every service is health-checked: by its own healthcheck, exec'ing a program its image has, or
    (shell-less images) by a probe service sharing its network namespace."""
    problems = []
    for name, svc in doc.get("services", {}).items():
        repo, _ = image_repo_and_tag(svc.get("image", ""))
        hc = svc.get("healthcheck")
        if hc and hc.get("disable"):
            problems.append(f"{name}: healthcheck disabled")
            continue
        test = (hc or {}).get("test")
        if repo in SHELL_LESS_IMAGES:
            if test:
                problems.append(f"{name}: {repo} has no shell/wget/curl, its healthcheck {test!r} cannot run")
            if _probe_for(doc, name) is None:
                problems.append(f"{name}: shell-less image and no probe service with network_mode service:{name}")
            continue
        if not test:
            problems.append(f"{name}: no healthcheck")
            continue
        program = _healthcheck_program(test)
        tools = IMAGE_TOOLS.get(repo)
        if tools is None:
            problems.append(f"{name}: unknown image {repo}: add its tools to IMAGE_TOOLS")
        elif program not in tools:
            problems.append(f"{name}: healthcheck runs {program!r}, not available in {repo}")
    return problems


def _volume_entries(svc: dict[str, Any]) -> Iterator[tuple[str, str, bool]]:
    """(source, target, read_only) of a service's volumes, short or long syntax."""
    for v in svc.get("volumes", []):
        if isinstance(v, str):
            # a ${VAR:-default} source may itself contain ':'
            head = ""
            if v.startswith("${"):
                end = v.index("}") + 1
                head, v = v[:end], v[end:]
            parts = v.split(":")
            parts[0] = head + parts[0]
            source, target = parts[0], parts[1] if len(parts) > 1 else parts[0]
            yield source, target, len(parts) > 2 and "ro" in parts[2].split(",")
        else:
            yield v.get("source", ""), v.get("target", ""), bool(v.get("read_only"))


def volume_problems(doc: dict[str, Any], root: Path = ROOT) -> list[str]:
    problems = []
    declared = set((doc.get("volumes") or {}).keys())
    used = set()
    for name, svc in doc.get("services", {}).items():
        for source, _target, _ro in _volume_entries(svc):
            if source.startswith(("./", "../")):
                if not (root / source).exists():
                    problems.append(f"{name}: mounts {source}, which does not exist in the repo")
            elif source.startswith(("/", "~", "$")):
                continue  # host paths (the spool folder) are the user's
            else:
                used.add(source)
                if source not in declared:
                    problems.append(f"{name}: named volume {source!r} is not declared")
    for unused in sorted(declared - used):
        problems.append(f"volume {unused!r} is declared but no service uses it")
    return problems


def published_ports(doc: dict[str, Any]) -> dict[int, str]:
    ports = {}
    for name, svc in doc.get("services", {}).items():
        for p in svc.get("ports", []):
            published = p.get("published") if isinstance(p, dict) else str(p).split(":")[-2]
            ports[int(published)] = name
    return ports


def port_problems(doc: dict[str, Any], raw_text: str) -> list[str]:
    problems = []
    ports = published_ports(doc)
    if ports != EXPECTED_PORTS:
        problems.append(f"published ports {sorted(ports.items())} != expected {sorted(EXPECTED_PORTS.items())}")
    for line in raw_text.splitlines():
        m = re.match(r'\s*-\s*"?(?:[\d.]+:)?(\d+):(\d+)"?\s*(#.*)?$', line)
        if m and not (m.group(3) or "").strip("# "):
            problems.append(f"port {m.group(1)} has no comment saying what it is")
    return problems


# --- collector checks ---------------------------------------------------------------------------------

KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")


def component_type(component_id: str) -> str:
    return component_id.split("/", 1)[0]


def collector_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    defined = {kind: set((doc.get(kind) or {}).keys()) for kind in KINDS}
    for kind in KINDS:
        for cid in sorted(defined[kind]):
            ctype = component_type(cid)
            if ctype in DEPRECATED_COMPONENTS.get(kind, {}):
                problems.append(f"{kind} {cid}: deprecated/removed name, use {DEPRECATED_COMPONENTS[kind][ctype]}")
            elif ctype not in PINNED_COMPONENTS[kind]:
                problems.append(f"{kind} {cid}: type {ctype!r} not in the {PINNED_COLLECTOR_VERSION} list")
    service = doc.get("service") or {}
    for ext in service.get("extensions", []):
        if ext not in defined["extensions"]:
            problems.append(f"service.extensions: {ext} is not defined")
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        problems.append("no pipelines")
    for pname, pipe in pipelines.items():
        for kind in ("receivers", "processors", "exporters"):
            for cid in pipe.get(kind) or []:
                if cid not in defined[kind] and cid not in defined["connectors"]:
                    problems.append(f"pipeline {pname}: {kind[:-1]} {cid} is not defined")
        if not pipe.get("receivers") or not pipe.get("exporters"):
            problems.append(f"pipeline {pname}: needs receivers and exporters")
        procs = [component_type(p) for p in pipe.get("processors") or []]
        if not procs or procs[0] != "memory_limiter":
            problems.append(f"pipeline {pname}: memory_limiter must be the first processor")
        if "batch" not in procs:
            problems.append(f"pipeline {pname}: no batch processor")
    return problems


def pipeline_exporters(doc: dict[str, Any], signal: str) -> list[dict[str, Any]]:
    pipe = doc["service"]["pipelines"][signal]
    return [{"id": e, **(doc["exporters"].get(e) or {})} for e in pipe["exporters"]]


# --- Loki / Prometheus checks -------------------------------------------------------------------------


def loki_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    limits = doc.get("limits_config") or {}
    if limits.get("allow_structured_metadata") is not True:
        problems.append("limits_config.allow_structured_metadata must be true (OTLP ingestion needs it)")
    configs = (doc.get("schema_config") or {}).get("configs") or []
    latest = max(configs, key=lambda c: str(c.get("from")), default={})
    if latest.get("schema") != "v13" or latest.get("store") != "tsdb":
        problems.append("the current schema must be v13 on tsdb (structured metadata)")
    otlp = limits.get("otlp_config") or {}
    for section in ("resource_attributes", "scope_attributes", "log_attributes"):
        block = otlp.get(section) or {}
        rules = block.get("attributes_config", []) if isinstance(block, dict) else block
        for rule in rules or []:
            names = [*rule.get("attributes", []), rule.get("regex", "")]
            if rule.get("action") == "index_label" and any(semconv.NAMESPACE in n for n in names):
                problems.append(f"otlp_config.{section}: otelflow attributes must not become index labels")
    return problems


# --- PromQL / LogQL name extraction -------------------------------------------------------------------

_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\$\{[^}]*\}|\$\w+")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|`[^`]*`)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_PROMQL_WORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless"}
    | {"offset", "inf", "nan"}
)


def promql_names(expr: str) -> tuple[set[str], set[str], list[tuple[str, str, str]]]:
    """(metric names, label names, (label, op, value) matchers) used by a PromQL (or label_values) query."""
    matchers = [(m.group(1), m.group(2), m.group(3)[1:-1]) for m in _MATCHER.finditer(expr)]
    labels = {name for name, _, _ in matchers}
    rest = _MATCHER.sub(" ", expr)
    for group in _GROUPING.findall(rest):
        labels |= {part.strip() for part in group.split(",") if part.strip()}
    rest = _GROUPING.sub(" ", rest)
    lv = re.search(r"label_values\s*\((?:.*,)?\s*([A-Za-z_]\w*)\s*\)", rest)
    if lv:  # label_values(metric{...}, label) / label_values(label)
        labels.add(lv.group(1))
        rest = rest[: lv.start(1)] + rest[lv.end(1) :]
    rest = _STRING.sub(" ", _GRAFANA_VAR.sub(" ", rest))
    rest = re.sub(r"\[[^\]]*\]", " ", rest)
    metrics = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)\b(?!\s*\()", rest):
        word = m.group(1)
        if word.lower() not in _PROMQL_WORDS and word != "label_values":
            metrics.add(word)
    return metrics, labels, matchers


def promql_problems(expr: str) -> list[str]:
    problems = []
    metrics, labels, matchers = promql_names(expr)
    if not metrics:
        problems.append(f"no metric in {expr!r}")
    for metric in sorted(metrics - ALLOWED_SERIES):
        problems.append(f"unknown metric {metric!r} (allowed, from semconv: {sorted(ALLOWED_SERIES)})")
    for label in sorted(labels - ALLOWED_PROM_LABELS):
        problems.append(f"unknown label {label!r} (allowed, from semconv: {sorted(ALLOWED_PROM_LABELS)})")
    for label, _op, value in matchers:
        if "$" in value:
            continue
        if label == semconv.loki_name(semconv.RUN_TYPE):
            for alt in value.split("|"):
                if alt not in RUN_TYPES:
                    problems.append(f"{label} value {alt!r} is not a run type")
        if label == semconv.loki_name(semconv.RUN_STATE):
            for alt in value.split("|"):
                if alt not in FINAL_STATE_NAMES:
                    problems.append(f"{label} value {alt!r} is not a final state name")
    return problems


def logql_names(expr: str) -> tuple[set[str], set[str]]:
    """(stream selector labels, label/structured-metadata filter names after the selector)."""
    clean = _GRAFANA_VAR.sub("VAR", expr.replace("$${", "${"))
    m = re.match(r"\s*\{([^}]*)\}", clean)
    if not m:
        return set(), set()
    selector = {name for name, _, _ in (x.groups() for x in _MATCHER.finditer(m.group(1)))}
    pipeline = clean[m.end() :]
    filters = {x.group(1) for x in _MATCHER.finditer(pipeline)}
    # any otelflow_* token in the pipeline (line formats, label formats...) counts too
    filters |= set(re.findall(rf"\b{semconv.NAMESPACE}_\w+", _STRING.sub(" ", pipeline)))
    return selector, filters


def logql_problems(expr: str) -> list[str]:
    problems = []
    selector, filters = logql_names(expr)
    if not selector:
        problems.append(f"no stream selector in {expr!r}")
    for label in sorted(selector - LOKI_INDEX_LABELS):
        problems.append(f"stream selector uses {label!r}: only {sorted(LOKI_INDEX_LABELS)} are index labels")
    for name in sorted(filters - ALLOWED_LOKI_METADATA):
        problems.append(
            f"unknown structured metadata {name!r} (allowed, from semconv: {sorted(ALLOWED_LOKI_METADATA)})"
        )
    return problems


# --- Grafana checks -----------------------------------------------------------------------------------


def _ds_uid(ds: Any) -> str | None:
    if isinstance(ds, dict):
        return ds.get("uid")
    return ds if isinstance(ds, str) and not ds.startswith("$") else None


def iter_queries(dash: dict[str, Any], ds_types: dict[str, str]) -> Iterator[tuple[str, str, str]]:
    """(where, datasource uid, expression) of every panel target and query variable."""

    def panels(items: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for p in items:
            yield p
            yield from panels(p.get("panels", []))

    for p in panels(dash.get("panels", [])):
        for t in p.get("targets", []):
            uid = _ds_uid(t.get("datasource")) or _ds_uid(p.get("datasource"))
            yield f"panel {p.get('title')!r} {t.get('refId')}", uid or "", t.get("expr", "")
    for v in dash.get("templating", {}).get("list", []):
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query", "") if isinstance(q, dict) else q or ""
            yield f"variable {v.get('name')}", _ds_uid(v.get("datasource")) or "", q


def datasource_uids(doc: dict[str, Any]) -> dict[str, str]:
    return {d["uid"]: d["type"] for d in doc.get("datasources", []) if "uid" in d}


def datasource_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    uids = datasource_uids(doc)
    if len(uids) != len(doc.get("datasources", [])):
        problems.append("every datasource needs a unique uid")
    for d in doc.get("datasources", []):
        jd = d.get("jsonData") or {}
        t2l = jd.get("tracesToLogsV2")
        if t2l is not None:
            target = t2l.get("datasourceUid")
            if uids.get(target) != "loki":
                problems.append(
                    f"{d.get('name')}: tracesToLogsV2.datasourceUid {target!r} is not a provisioned loki uid"
                )
            if not t2l.get("filterByTraceID"):
                problems.append(f"{d.get('name')}: tracesToLogsV2 must filter by trace id")
            if t2l.get("customQuery"):
                query = t2l.get("query", "")
                if "__trace.traceId" not in query or "trace_id" not in query:
                    problems.append(f"{d.get('name')}: tracesToLogsV2 query must select trace_id by the trace id")
                problems += [f"{d.get('name')} tracesToLogsV2: {p}" for p in logql_problems(query)]
        for field in jd.get("derivedFields") or []:
            target = field.get("datasourceUid")
            if uids.get(target) != "jaeger":
                problems.append(
                    f"{d.get('name')}: derived field datasourceUid {target!r} is not a provisioned jaeger uid"
                )
            if field.get("matcherType") != "label":
                problems.append(f"{d.get('name')}: derived field must read structured metadata (matcherType: label)")
            if field.get("matcherRegex") not in ALLOWED_LOKI_METADATA:
                problems.append(f"{d.get('name')}: derived field reads unknown field {field.get('matcherRegex')!r}")
    if not any(d.get("jsonData", {}).get("tracesToLogsV2") for d in doc.get("datasources", [])):
        problems.append("no datasource links traces to logs (tracesToLogsV2)")
    if not any(d.get("jsonData", {}).get("derivedFields") for d in doc.get("datasources", [])):
        problems.append("no datasource links logs to traces (derivedFields)")
    return problems


def dashboard_problems(dash: dict[str, Any], ds_doc: dict[str, Any]) -> list[str]:
    problems = []
    uids = datasource_uids(ds_doc)
    for where, uid, expr in iter_queries(dash, uids):
        if uid not in uids:
            problems.append(f"{where}: datasource uid {uid!r} is not provisioned")
            continue
        if not expr:
            problems.append(f"{where}: empty query")
        elif uids[uid] == "prometheus":
            problems += [f"{where}: {p}" for p in promql_problems(expr)]
        elif uids[uid] == "loki":
            problems += [f"{where}: {p}" for p in logql_problems(expr)]
    names = {v.get("name") for v in dash.get("templating", {}).get("list", [])}
    for required in ("service", "flow", "run", "level"):
        if required not in names:
            problems.append(f"missing template variable {required!r}")
    return problems


# === tests ============================================================================================


def test_all_config_files_parse() -> None:
    for path in (
        COMPOSE,
        COLLECTOR_MAIN,
        COLLECTOR_SPOOL,
        LOKI,
        PROMETHEUS,
        DATASOURCES,
        DASHBOARD_PROVIDERS,
    ):
        assert isinstance(load_yaml(path), dict), path
    assert all_dashboards(), "no dashboard JSON"


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    assert image_problems(compose) == []


def test_collector_image_is_the_version_the_component_list_was_made_for(compose: dict[str, Any]) -> None:
    collectors = [s["image"] for s in compose["services"].values() if s["image"].startswith(PINNED_COLLECTOR_IMAGE)]
    assert collectors, "no collector service"
    assert {image_repo_and_tag(i) for i in collectors} == {(PINNED_COLLECTOR_IMAGE, PINNED_COLLECTOR_VERSION)}


def test_every_service_is_health_checked(compose: dict[str, Any]) -> None:
    assert healthcheck_problems(compose) == []


def test_volumes_are_declared_and_mounted_files_exist(compose: dict[str, Any]) -> None:
    assert volume_problems(compose) == []
    assert compose.get("volumes"), "data lives in named volumes"


def test_only_the_expected_ports_are_published_each_with_a_comment(compose: dict[str, Any]) -> None:
    assert port_problems(compose, COMPOSE.read_text(encoding="utf-8")) == []


def test_compose_mounts_each_config_where_its_service_reads_it(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def mounts(name: str) -> dict[str, str]:
        return {target: source for source, target, _ in _volume_entries(services[name])}

    assert mounts("collector")["/etc/otelcol-contrib/config.yaml"] == "./collector/otelcol.yaml"
    assert mounts("collector-spool")["/etc/otelcol-contrib/config.yaml"] == "./collector/otelcol-spool.yaml"
    assert mounts("loki")["/etc/loki/loki.yaml"] == "./loki/loki.yaml"
    assert "-config.file=/etc/loki/loki.yaml" in services["loki"]["command"]
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./prometheus/prometheus.yml"
    assert mounts("grafana")["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    provider_path = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["options"]["path"]
    assert mounts("grafana")[provider_path] == "./dashboards/json"


def test_spool_profile_ships_the_local_spool_read_only(compose: dict[str, Any]) -> None:
    spool = compose["services"]["collector-spool"]
    assert spool["profiles"] == ["spool"]
    assert spool["image"] == compose["services"]["collector"]["image"]
    entries = {target: (source, ro) for source, target, ro in _volume_entries(spool)}
    source, read_only = entries["/spool"]
    assert source == "${OTELFLOW_HOME:-~/.otelflow}/spool"
    assert read_only
    assert all("spool" in s.get("profiles", []) for n, s in compose["services"].items() if "spool" in n)


@pytest.mark.parametrize("path", [COLLECTOR_MAIN, COLLECTOR_SPOOL], ids=["main", "spool"])
def test_collector_pipelines_reference_defined_components_of_the_pinned_version(path: Path) -> None:
    assert collector_problems(load_yaml(path)) == []


def test_main_collector_routes_each_signal_to_its_backend(collector_main: dict[str, Any]) -> None:
    (traces,) = pipeline_exporters(collector_main, "traces")
    assert component_type(traces["id"]) == "otlp_grpc" and traces["endpoint"] == "jaeger:4317"
    (logs,) = pipeline_exporters(collector_main, "logs")
    assert component_type(logs["id"]) == "otlp_http" and logs["endpoint"] == "http://loki:3100/otlp"
    (metrics,) = pipeline_exporters(collector_main, "metrics")
    assert component_type(metrics["id"]) == "prometheus"
    assert metrics.get("translation_strategy", "UnderscoreEscapingWithSuffixes") == "UnderscoreEscapingWithSuffixes"
    port = metrics["endpoint"].rsplit(":", 1)[1]
    scrape = load_yaml(PROMETHEUS)["scrape_configs"]
    targets = [t for job in scrape for sc in job.get("static_configs", []) for t in sc["targets"]]
    assert f"collector:{port}" in targets
    assert all(job.get("honor_labels") for job in scrape if f"collector:{port}" in str(job)), "keep job=service.name"
    assert set(collector_main["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "health_check" in collector_main["service"]["extensions"]


def test_spool_collector_reads_jsonl_spool_files_and_forwards_to_the_main_collector(
    collector_spool: dict[str, Any],
) -> None:
    receivers = collector_spool["receivers"]
    for signal in ("traces", "logs", "metrics"):
        (rid,) = collector_spool["service"]["pipelines"][signal]["receivers"]
        assert component_type(rid) == "otlp_json_file"
        for glob in receivers[rid]["include"]:
            assert glob.startswith("/spool/**/") and glob.endswith(".jsonl") and signal in glob
        assert receivers[rid]["start_at"] == "beginning"
        (exporter,) = pipeline_exporters(collector_spool, signal)
        assert exporter["endpoint"] == "collector:4317"


def test_loki_accepts_otlp_with_structured_metadata() -> None:
    assert loki_problems(load_yaml(LOKI)) == []


def test_datasources_link_traces_and_logs(datasources: dict[str, Any]) -> None:
    assert datasource_problems(datasources) == []
    assert set(datasource_uids(datasources).items()) >= {
        ("jaeger", "jaeger"),
        ("loki", "loki"),
        ("prometheus", "prometheus"),
    }


def test_dashboards_use_provisioned_datasources_and_semconv_names(datasources: dict[str, Any]) -> None:
    for dash in all_dashboards():
        assert dashboard_problems(dash, datasources) == [], dash.get("title")


def test_runs_dashboard_has_the_issue_panels(dashboard: dict[str, Any], datasources: dict[str, Any]) -> None:
    assert dashboard["title"] == "otelflow runs"
    uids = datasource_uids(datasources)
    exprs = [(uids[uid], expr) for _, uid, expr in iter_queries(dashboard, uids) if uid in uids]
    runs = prometheus_series(semconv.METRIC_RUNS)
    buckets = {s for s in prometheus_series(semconv.METRIC_RUN_DURATION) if s.endswith("_bucket")}
    flow_label = semconv.loki_name(semconv.FLOW_NAME)
    task_label = semconv.loki_name(semconv.TASK_NAME)
    prom = [e for t, e in exprs if t == "prometheus"]
    assert any(runs & promql_names(e)[0] and flow_label in promql_names(e)[1] for e in prom), "runs per flow"
    state = semconv.loki_name(semconv.RUN_STATE)
    assert any(any(label == state and "Failed" in v for label, _, v in promql_names(e)[2]) for e in prom), "failures"
    for q in ("0.5", "0.95"):
        quantiles = [e for e in prom if e.startswith(f"histogram_quantile({q},") and buckets & promql_names(e)[0]]
        assert any(task_label in promql_names(e)[1] for e in quantiles), f"p{q} per task"
        assert any(task_label not in promql_names(e)[1] for e in quantiles), f"p{q} per flow"
    logs = [e for t, e in exprs if t == "loki"]
    run_id = semconv.loki_name(semconv.FLOW_RUN_ID)
    assert any(run_id in logql_names(e)[1] and "severity_text" in logql_names(e)[1] for e in logs), "logs panel"


# --- the checkers can fail ----------------------------------------------------------------------------


def test_image_check_rejects_latest_and_untagged_and_other_collector_versions(
    compose: dict[str, Any],
) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["grafana"]["image"] = "grafana/grafana:latest"
    broken["services"]["loki"]["image"] = "grafana/loki"
    broken["services"]["collector"]["image"] = f"{PINNED_COLLECTOR_IMAGE}:0.150.0"
    problems = image_problems(broken)
    assert len(problems) == 3, problems


def test_healthcheck_check_rejects_missing_and_impossible_healthchecks(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    del broken["services"]["prometheus"]["healthcheck"]
    broken["services"]["loki"]["healthcheck"] = {"test": ["CMD", "wget", "-q", "http://127.0.0.1:3100/ready"]}
    del broken["services"]["jaeger-probe"]
    problems = healthcheck_problems(broken)
    assert any("prometheus: no healthcheck" in p for p in problems)
    assert any("loki:" in p and "cannot run" in p for p in problems)
    assert any("jaeger:" in p and "no probe" in p for p in problems)


def test_volume_check_rejects_undeclared_volumes_and_missing_files(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["grafana"]["volumes"].append("./dashboards/nope:/nope:ro")
    broken["services"]["loki"]["volumes"].append("loki-wal:/wal")
    problems = volume_problems(broken)
    assert any("nope" in p for p in problems) and any("loki-wal" in p for p in problems)


def test_port_check_rejects_extra_ports_and_uncommented_ports(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["collector"]["ports"].append("127.0.0.1:13133:13133")
    assert port_problems(broken, "")
    assert port_problems(compose, '    ports:\n      - "127.0.0.1:3000:3000"\n')


def test_collector_check_rejects_undefined_deprecated_and_unknown_components(
    collector_main: dict[str, Any],
) -> None:
    broken = copy.deepcopy(collector_main)
    broken["service"]["pipelines"]["traces"]["exporters"].append("otlp_grpc/tempo")
    broken["exporters"]["loki"] = {"endpoint": "http://loki:3100/loki/api/v1/push"}
    broken["exporters"]["otlphttp/old"] = {"endpoint": "http://loki:3100/otlp"}
    broken["processors"]["tail_sampling"] = {}
    broken["service"]["pipelines"]["logs"]["processors"] = ["batch", "memory_limiter"]
    problems = collector_problems(broken)
    for fragment in (
        "otlp_grpc/tempo is not defined",
        "exporters loki:",
        "otlphttp/old",
        "tail_sampling",
        "first",
    ):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_loki_check_rejects_missing_structured_metadata_old_schema_and_run_id_labels() -> None:
    broken = load_yaml(LOKI)
    broken["limits_config"]["allow_structured_metadata"] = False
    broken["schema_config"]["configs"][-1]["schema"] = "v12"
    broken["limits_config"]["otlp_config"] = {
        "log_attributes": [{"action": "index_label", "attributes": [semconv.FLOW_RUN_ID]}]
    }
    assert len(loki_problems(broken)) == 3


def test_datasource_check_rejects_dangling_uids(datasources: dict[str, Any]) -> None:
    broken = copy.deepcopy(datasources)
    for d in broken["datasources"]:
        jd = d.get("jsonData") or {}
        if "tracesToLogsV2" in jd:
            jd["tracesToLogsV2"]["datasourceUid"] = "loki-old"
        for field in jd.get("derivedFields") or []:
            field["datasourceUid"] = "tempo"
            field["matcherType"] = "regex"
    problems = datasource_problems(broken)
    assert any("loki-old" in p for p in problems)
    assert any("tempo" in p for p in problems)
    assert any("matcherType" in p for p in problems)


def test_dashboard_check_rejects_unknown_names_and_datasources(
    dashboard: dict[str, Any], datasources: dict[str, Any]
) -> None:
    broken = copy.deepcopy(dashboard)
    targets = [t for p in broken["panels"] for t in p.get("targets", [])]
    prom_target = next(t for t in targets if t["datasource"]["uid"] == "prometheus")
    prom_target["expr"] = prom_target["expr"].replace("otelflow_runs_total", "otelflow_run_total")
    loki_target = next(t for t in targets if t["datasource"]["uid"] == "loki")
    loki_target["expr"] = '{service_name="etl", otelflow_flow_run_id="x"} | otelflow_flowrun_id="y"'
    broken["templating"]["list"][0]["datasource"] = {"type": "prometheus", "uid": "prom"}
    problems = dashboard_problems(broken, datasources)
    assert any("otelflow_run_total" in p for p in problems)
    assert any("stream selector uses 'otelflow_flow_run_id'" in p for p in problems)
    assert any("otelflow_flowrun_id" in p for p in problems)
    assert any("'prom'" in p for p in problems)


def test_promql_check_rejects_unknown_labels_and_values() -> None:
    assert promql_problems('sum by (otelflow_flow) (otelflow_runs_total{otelflow_run_type="flows"})')
    assert promql_problems('otelflow_runs_total{otelflow_run_state=~"Failed|Errored"}')
    assert promql_problems("rate(otelflow_run_duration_bucket[5m])")
    good = "histogram_quantile(0.95, sum by (le) (rate(otelflow_run_duration_seconds_bucket[5m])))"
    assert promql_problems(good) == []

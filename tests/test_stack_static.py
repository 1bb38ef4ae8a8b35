"""Static checks of the production stack (issues 5 and 14): docker-compose.yml, collector/ (the configs of
the collector and of the backends it feeds: Loki, Prometheus) and dashboards/ (Grafana). No Docker engine
runs here, so everything is checked by parsing the files.

Every check is a small function that takes the parsed document and returns a list of problems; the
``test_*_rejects_*`` tests feed broken copies to prove each checker can fail.

Names the dashboards query are derived from the collector's own config (the spanmetrics connector's
namespace, unit and dimensions, translated the way the collector's Prometheus exporter names them) and
from ``otelflow.semconv`` (never copied as strings); the cross-check against telemetry of a real run is
tests/test_stack_contract.py.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from otelflow import semconv, states

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
COLLECTOR_DIR = ROOT / "collector"
COLLECTOR_MAIN = COLLECTOR_DIR / "otelcol.yaml"
COLLECTOR_SPOOL = COLLECTOR_DIR / "otelcol-spool.yaml"
LOKI = COLLECTOR_DIR / "loki.yaml"
PROMETHEUS = COLLECTOR_DIR / "prometheus.yml"
DATASOURCES = ROOT / "dashboards" / "provisioning" / "datasources" / "datasources.yaml"
DASHBOARD_PROVIDERS = ROOT / "dashboards" / "provisioning" / "dashboards" / "dashboards.yaml"
DASHBOARD_DIR = ROOT / "dashboards" / "json"
RUNS_DASHBOARD = DASHBOARD_DIR / "otelflow-runs.json"
DOCS = ROOT / "docs" / "production-stack.md"
README = ROOT / "README.md"

# --- the pinned Collector and its components ----------------------------------------------------------
#
# The component types this stack uses, checked to exist under these names in
# otel/opentelemetry-collector-contrib:0.162.0. Sources (looked up with the `search` tool; the newest
# stored upstream snapshots are v0.159.0 / v0.160.0-nightly, so 0.162 itself is covered by the release
# notes named here):
# - distributions/otelcol-contrib/manifest.yaml of open-telemetry/opentelemetry-collector-releases
#   (v0.159.0: otlpreceiver, otlpjsonfilereceiver, memorylimiterprocessor, filterprocessor,
#   resourceprocessor, spanmetricsconnector, otlpexporter, otlphttpexporter, prometheusexporter,
#   healthcheckextension, storage/filestorage);
# - v0.144.0 core release notes: `otlp` exporter renamed `otlp_grpc`, `otlphttp` renamed `otlp_http`
#   (old names kept as deprecated aliases; collector PRs #14403, #14397, issue #14396);
# - contrib PR #48728 (releases >= 0.154): `otlpjsonfile` receiver renamed `otlp_json_file`, deprecated
#   alias kept (tracking issue contrib #45339);
# - core docs/rfcs/batching-migration.md: the `batch` processor is deprecated in favour of exporter-side
#   batching (exporterhelper `sending_queue::batch`, exporter/exporterhelper/README.md and
#   internal/queuebatch/config.go: wait_for_result, sizer, queue_size, block_on_overflow, storage,
#   num_consumers, batch::{flush_timeout, min_size, max_size, sizer});
# - filter processor `trace_conditions` with OTTL context inference: contrib PR #44543, documented for
#   >= v0.146.0 (PR #45676); config.schema.yaml of processor/filterprocessor;
# - spanmetrics connector keys: connector/spanmetricsconnector/config.go (dimensions, histogram::unit,
#   histogram::explicit::buckets, namespace, resource_metrics_key_attributes, aggregation_temporality,
#   metrics_flush_interval); metric names `calls` / `duration` with the namespace as `<ns>.` prefix
#   (buildMetricName), the duration's unit is histogram::unit, `calls` has none.
# Bump PINNED_COLLECTOR_VERSION only after re-checking this list against the new release notes.
PINNED_COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib"
PINNED_COLLECTOR_VERSION = "0.162.0"
PINNED_COMPONENTS: dict[str, frozenset[str]] = {
    "receivers": frozenset({"otlp", "otlp_json_file"}),
    "processors": frozenset({"memory_limiter", "filter", "resource"}),
    "exporters": frozenset({"otlp_grpc", "otlp_http", "prometheus", "debug"}),
    "extensions": frozenset({"health_check", "file_storage"}),
    "connectors": frozenset({"spanmetrics"}),
}
# Old names: deprecated aliases (work, but log warnings) or removed components.
DEPRECATED_COMPONENTS: dict[str, dict[str, str]] = {
    "receivers": {"otlpjsonfile": "otlp_json_file"},
    "processors": {"batch": "exporter-side batching, sending_queue::batch (batching-migration.md)"},
    "exporters": {"otlp": "otlp_grpc", "otlphttp": "otlp_http", "loki": "otlp_http to Loki's /otlp"},
}
# Exporters that push (and so queue and batch); `prometheus` is scraped.
PUSH_EXPORTERS = frozenset({"otlp_grpc", "otlp_http"})

# Images with no shell, wget or curl and no health command: a healthcheck exec'd inside them can never
# pass (collector: FROM scratch, releases repo distributions/otelcol-contrib/Dockerfile). They are
# health-checked by a probe service that reaches them over the compose network.
SHELL_LESS_IMAGES = frozenset({PINNED_COLLECTOR_IMAGE})
# Programs a healthcheck may exec in the other images.
IMAGE_TOOLS: dict[str, frozenset[str]] = {
    "busybox": frozenset({"wget", "sh"}),
    "prom/prometheus": frozenset({"wget", "sh"}),  # quay.io/prometheus/busybox base
    "grafana/grafana": frozenset({"curl", "wget", "sh"}),
    # distroless, but `loki -health` GETs :3100/ready (grafana/loki PR #20313, cmd/loki/health.go, 3.7)
    "grafana/loki": frozenset({"/usr/bin/loki", "loki"}),
    # built on alpine (jaeger scripts/build/docker/base/Dockerfile, -b in build-all-in-one-image.sh)
    "jaegertracing/jaeger": frozenset({"wget", "sh"}),
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

# --- names: the collector's translations, semconv's attributes ------------------------------------------

# The run attributes the spanmetrics connector turns into metric dimensions (one series per combination).
RUN_DIMENSIONS = (semconv.RUN_TYPE, semconv.FLOW_NAME, semconv.TASK_NAME, semconv.RUN_STATE)
# The connector's own dimensions (connector.go: serviceNameKey, spanNameKey, spanKindKey, statusCodeKey,
# collectorInstanceKey; the last one behind the beta feature gate includeCollectorInstanceID).
SPANMETRICS_DEFAULT_DIMENSIONS = ("service.name", "span.name", "span.kind", "status.code", "collector.instance.id")
# Labels the collector's prometheus exporter / Prometheus add themselves: job and instance (the scrape
# target's, or service.name / service.instance.id of an application's own metrics), le (bucket bound).
PROMETHEUS_BUILTIN_LABELS = frozenset({"job", "instance", "le"})
# OTel duration units and the suffix the exporter appends (prometheus/otlptranslator unit map).
_UNIT_SUFFIXES = {"s": "seconds", "ms": "milliseconds"}
# OTel log severity texts (logs data model, "Displaying Severity"): what otelflow writes as severity_text.
OTEL_SEVERITY_TEXTS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")

# Loki 3.7 native OTLP ingestion: the default resource attributes stored as index labels
# (GlobalOTLPConfig.RegisterFlags, pkg/loghttp/push/otlp_config.go at v3.7.6).
LOKI_DEFAULT_INDEX_ATTRIBUTES = (
    "service.name",
    "service.namespace",
    "service.instance.id",
    "deployment.environment",
    "deployment.environment.name",
    "cloud.region",
    "cloud.availability_zone",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
    "container.name",
    "k8s.replicaset.name",
    "k8s.deployment.name",
    "k8s.statefulset.name",
    "k8s.daemonset.name",
    "k8s.cronjob.name",
    "k8s.job.name",
)
# OTLP log record fields Loki stores as structured metadata next to the record's attributes.
LOKI_RECORD_METADATA = frozenset({"trace_id", "span_id", "severity_text", "severity_number", "detected_level"})
# Every run attribute a log record may carry, as Loki structured metadata.
ALLOWED_LOKI_METADATA = frozenset(semconv.loki_name(k) for k in semconv.ATTRIBUTE_KEYS) | LOKI_RECORD_METADATA
RUN_TYPES = frozenset({semconv.RUN_TYPE_FLOW, semconv.RUN_TYPE_TASK})
FINAL_STATE_NAMES = frozenset(
    s.name for s in (states.Completed(), states.Failed(), states.TimedOut(), states.Crashed(), states.Cancelled())
)


def prometheus_label(attribute_key: str) -> str:
    """The label name the exporter (UnderscoreEscapingWithSuffixes) gives an attribute: ``a.b`` -> ``a_b``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", attribute_key)


def prometheus_metric(otel_name: str, unit: str, *, counter: bool) -> str:
    """The base name the exporter gives an OTel metric: escaped, unit suffix, ``_total`` for counters."""
    base = prometheus_label(otel_name)
    suffix = _UNIT_SUFFIXES.get(unit, "") if not unit.startswith("{") else ""
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    return f"{base}_total" if counter else base


def spanmetrics(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The (single) spanmetrics connector of a collector config."""
    (cid,) = [c for c in (doc.get("connectors") or {}) if component_type(c) == "spanmetrics"]
    return dict(doc["connectors"][cid] or {})


def run_metric_series(doc: Mapping[str, Any]) -> dict[str, str]:
    """Prometheus series of the run metrics -> ``calls`` / ``duration``, from the connector's config."""
    conn = spanmetrics(doc)
    namespace = conn.get("namespace", "traces.span.metrics")
    unit = (conn.get("histogram") or {}).get("unit", "s")
    calls = prometheus_metric(f"{namespace}.calls", "", counter=True)
    duration = prometheus_metric(f"{namespace}.duration", unit, counter=False)
    return {calls: "calls", **{f"{duration}_{part}": "duration" for part in ("bucket", "sum", "count")}}


def run_metric_labels(doc: Mapping[str, Any]) -> frozenset[str]:
    """Every label a run metric series can carry."""
    dims = [d["name"] for d in spanmetrics(doc).get("dimensions") or []]
    return frozenset(prometheus_label(k) for k in (*SPANMETRICS_DEFAULT_DIMENSIONS, *dims)) | PROMETHEUS_BUILTIN_LABELS


def duration_seconds(value: Any) -> float:
    """A Go duration string of the config (``250ms``, ``1m``, ``2500ms``, ``1h``) in seconds."""
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(value))
    if not m:
        raise ValueError(f"not a duration: {value!r}")
    return float(m.group(1)) * units[m.group(2)]


def byte_size(value: Any) -> int:
    """A stanza ByteSize (``64MiB``, ``1048576``) in bytes (pkg/stanza/operator/helper/bytesize.go)."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kKmMgG]i?[bB])?", str(value))
    if not m:
        raise ValueError(f"not a byte size: {value!r}")
    unit = (m.group(2) or "").lower()
    power = {"": 0, "k": 1, "m": 2, "g": 3}[unit[:1]]
    base = 1024 if "i" in unit else 1000
    return int(float(m.group(1)) * base**power)


# A small subset of OTTL conditions, enough for the filter this stack uses:
#   span.attributes["key"] == true | false | nil | "text" | 123   (also !=)
_OTTL_CONDITION = re.compile(r'^\s*span\.attributes\["([^"]+)"\]\s*(==|!=)\s*(true|false|nil|"[^"]*"|-?\d+)\s*$')


def ottl_drops(conditions: Iterable[str], attributes: Mapping[str, Any]) -> bool:
    """Whether the filter processor drops a span with these attributes (any condition true = dropped).

    Raises ValueError for a condition outside the subset above, so a new condition cannot slip past
    the tests unchecked.
    """
    for condition in conditions:
        m = _OTTL_CONDITION.match(condition)
        if not m:
            raise ValueError(f"OTTL condition not understood by this test: {condition!r}")
        key, op, literal = m.groups()
        expected: Any = {"true": True, "false": False, "nil": None}.get(literal, literal)
        if isinstance(expected, str) and literal.startswith('"'):
            expected = literal[1:-1]
        elif isinstance(expected, str):
            expected = int(literal)
        actual = attributes.get(key)
        equal = actual is expected if expected is None or isinstance(expected, bool) else actual == expected
        if equal == (op == "=="):
            return True
    return False


# --- loading ------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def load_json(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def main_collector() -> dict[str, Any]:
    """collector/otelcol.yaml: where the run metrics' names come from."""
    return load_yaml(COLLECTOR_MAIN)  # type: ignore[no-any-return]


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
    """A service whose healthcheck reaches ``target`` by its name on the compose network."""
    for svc in doc.get("services", {}).values():
        test = (svc.get("healthcheck") or {}).get("test") or []
        if any(f"://{target}:" in str(part) for part in test) and "network_mode" not in svc:
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
    (shell-less images) by a probe service that reaches it over the compose network. No sidecars sharing
    a network namespace: they lose their network when the parent restarts (docker/compose#6626)."""
    problems = []
    for name, svc in doc.get("services", {}).items():
        if str(svc.get("network_mode", "")).startswith(("service:", "container:")):
            problems.append(f"{name}: network_mode {svc['network_mode']} (a sidecar loses its network on restart)")
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
                problems.append(f"{name}: shell-less image and no probe service checking http://{name}:<port>")
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
    """Components of the pinned version, defined where used, memory_limiter first, no batch processor,
    and every push exporter batching out of a persistent queue."""
    problems = []
    defined = {kind: set((doc.get(kind) or {}).keys()) for kind in KINDS}
    for kind in KINDS:
        for cid in sorted(defined[kind]):
            ctype = component_type(cid)
            if ctype in DEPRECATED_COMPONENTS.get(kind, {}):
                problems.append(f"{kind} {cid}: deprecated/removed, use {DEPRECATED_COMPONENTS[kind][ctype]}")
            elif ctype not in PINNED_COMPONENTS[kind]:
                problems.append(f"{kind} {cid}: type {ctype!r} not in the {PINNED_COLLECTOR_VERSION} list")
    service = doc.get("service") or {}
    enabled_extensions = set(service.get("extensions") or [])
    for ext in sorted(enabled_extensions - defined["extensions"]):
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
    for cid, cfg in (doc.get("exporters") or {}).items():
        if component_type(cid) not in PUSH_EXPORTERS:
            continue
        queue = (cfg or {}).get("sending_queue")
        if not isinstance(queue, dict) or queue.get("enabled") is False:
            problems.append(f"exporters {cid}: no sending_queue")
            continue
        if not isinstance(queue.get("batch"), dict):
            problems.append(f"exporters {cid}: sending_queue has no batch (exporter-side batching)")
        storage = queue.get("storage")
        if storage is None:
            problems.append(f"exporters {cid}: in-memory queue, lost on a collector restart (set storage)")
        elif component_type(storage) != "file_storage" or storage not in enabled_extensions:
            problems.append(f"exporters {cid}: storage {storage!r} is not an enabled file_storage extension")
        if storage is not None and queue.get("wait_for_result"):
            problems.append(f"exporters {cid}: wait_for_result is not supported with a persistent queue")
    return problems


def pipeline_exporters(doc: dict[str, Any], pipeline: str) -> list[dict[str, Any]]:
    pipe = doc["service"]["pipelines"][pipeline]
    return [{"id": e, **(doc["exporters"].get(e) or {})} for e in pipe["exporters"] if e in doc["exporters"]]


def _pipelines_with(doc: Mapping[str, Any], kind: str, cid: str) -> dict[str, dict[str, Any]]:
    pipelines = (doc.get("service") or {}).get("pipelines") or {}
    return {name: pipe for name, pipe in pipelines.items() if cid in (pipe.get(kind) or [])}


def _filter_conditions(doc: Mapping[str, Any], processors: Iterable[str]) -> list[str]:
    conditions: list[str] = []
    for pid in processors:
        if component_type(pid) == "filter":
            conditions += (doc["processors"][pid] or {}).get("trace_conditions") or []
    return conditions


def run_metric_conditions(doc: Mapping[str, Any]) -> list[str]:
    """The filter conditions between the OTLP receiver and the spanmetrics connector."""
    (cid,) = [c for c in (doc.get("connectors") or {}) if component_type(c) == "spanmetrics"]
    feeding = _pipelines_with(doc, "exporters", cid)
    if len(feeding) != 1:
        raise AssertionError(f"one traces pipeline must feed {cid}, found {sorted(feeding)}")
    (pipe,) = feeding.values()
    return _filter_conditions(doc, pipe.get("processors") or [])


def run_metrics_problems(doc: dict[str, Any]) -> list[str]:
    """The run metrics: spanmetrics over finished run spans only, per service, seconds, buckets up to an hour."""
    problems = []
    try:
        conn = spanmetrics(doc)
    except ValueError:
        return ["no (or more than one) spanmetrics connector"]
    dims = tuple(d.get("name") for d in conn.get("dimensions") or [])
    if dims != RUN_DIMENSIONS:
        problems.append(f"spanmetrics dimensions {dims} != the run attributes {RUN_DIMENSIONS}")
    if any("default" in d for d in conn.get("dimensions") or []):
        problems.append("a dimension default would give flow runs a made-up task name")
    histogram = conn.get("histogram") or {}
    if histogram.get("unit") != "s":
        problems.append("histogram unit must be s (the dashboards show seconds)")
    buckets = [duration_seconds(b) for b in (histogram.get("explicit") or {}).get("buckets") or []]
    if not buckets or buckets != sorted(buckets) or buckets[0] > 0.001 or buckets[-1] < 3600:
        problems.append(f"duration buckets {buckets} must rise from 1 ms to at least an hour")
    if (
        conn.get("aggregation_temporality", "AGGREGATION_TEMPORALITY_CUMULATIVE")
        != "AGGREGATION_TEMPORALITY_CUMULATIVE"
    ):
        problems.append("the prometheus exporter needs cumulative run metrics")
    if conn.get("resource_metrics_key_attributes") != ["service.name"]:
        problems.append("resource_metrics_key_attributes must be [service.name]: one set of series per service")
    cid = next(c for c in doc["connectors"] if component_type(c) == "spanmetrics")
    feeding = _pipelines_with(doc, "exporters", cid)
    if len(feeding) != 1:
        return [*problems, f"one traces pipeline must feed {cid}, found {sorted(feeding)}"]
    ((feed_name, feed),) = feeding.items()
    if not feed_name.startswith("traces"):
        problems.append(f"{cid} is fed by {feed_name}, not a traces pipeline")
    conditions = _filter_conditions(doc, feed.get("processors") or [])
    try:
        if not ottl_drops(conditions, {semconv.SPAN_PENDING: True, semconv.RUN_TYPE: semconv.RUN_TYPE_TASK}):
            problems.append(f"pipeline {feed_name}: pending span records ({semconv.SPAN_PENDING}) are counted")
        if not ottl_drops(conditions, {semconv.CODE_FUNCTION_NAME: "helper"}):
            problems.append(f"pipeline {feed_name}: spans that are no runs (no {semconv.RUN_TYPE}) are counted")
        for run_type in sorted(RUN_TYPES):
            if ottl_drops(conditions, {semconv.RUN_TYPE: run_type, semconv.SPAN_PENDING: False}):
                problems.append(f"pipeline {feed_name}: finished {run_type} runs are dropped")
    except ValueError as exc:
        problems.append(str(exc))
    deletes_instance = any(
        component_type(pid) == "resource"
        and {"key": "service.instance.id", "action": "delete"}
        in ((doc["processors"][pid] or {}).get("attributes") or [])
        for pid in feed.get("processors") or []
    )
    if not deletes_instance:
        problems.append(f"pipeline {feed_name}: service.instance.id would give every process its own series")
    for name, pipe in _pipelines_with(doc, "receivers", "otlp").items():
        if name != feed_name and _filter_conditions(doc, pipe.get("processors") or []):
            problems.append(f"pipeline {name}: filters spans; Jaeger must get every span, pending records too")
    consumers = _pipelines_with(doc, "receivers", cid)
    if not any(component_type(e) == "prometheus" for pipe in consumers.values() for e in pipe["exporters"]):
        problems.append(f"no metrics pipeline takes {cid} to the prometheus exporter")
    return problems


# --- Loki checks --------------------------------------------------------------------------------------


def loki_index_attributes(doc: Mapping[str, Any]) -> set[str]:
    """Resource attributes Loki stores as index labels, with its defaults unless ignore_defaults."""
    otlp = (doc.get("limits_config") or {}).get("otlp_config") or {}
    resource = otlp.get("resource_attributes") or {}
    rules = list(resource.get("attributes_config") or [])
    if not resource.get("ignore_defaults"):
        rules.insert(0, {"action": "index_label", "attributes": list(LOKI_DEFAULT_INDEX_ATTRIBUTES)})
    index: set[str] = set()
    decided: set[str] = set()
    for rule in rules:  # first match wins (OTLPConfig.actionForAttribute)
        for attribute in rule.get("attributes") or []:
            if attribute not in decided and rule.get("action", "structured_metadata") == "index_label":
                index.add(attribute)
            decided.add(attribute)
    return index


def loki_index_labels(doc: Mapping[str, Any]) -> frozenset[str]:
    return frozenset(semconv.loki_name(a) for a in loki_index_attributes(doc))


def loki_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    limits = doc.get("limits_config") or {}
    if limits.get("allow_structured_metadata") is not True:
        problems.append("limits_config.allow_structured_metadata must be true (OTLP ingestion needs it)")
    configs = (doc.get("schema_config") or {}).get("configs") or []
    latest = max(configs, key=lambda c: str(c.get("from")), default={})
    if latest.get("schema") != "v13" or latest.get("store") != "tsdb":
        problems.append("the current schema must be v13 on tsdb (structured metadata)")
    index = loki_index_attributes(doc)
    if "service.name" not in index:
        problems.append("service.name must be an index label (the dashboards' stream selector)")
    if "service.instance.id" in index:
        problems.append("service.instance.id is an index label: one stream per process (set ignore_defaults)")
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


def promql_problems(expr: str, collector: Mapping[str, Any] | None = None) -> list[str]:
    """Metric and label names the collector's config produces, label values otelflow emits."""
    collector = collector if collector is not None else main_collector()
    allowed_series = set(run_metric_series(collector))
    allowed_labels = run_metric_labels(collector)
    problems = []
    metrics, labels, matchers = promql_names(expr)
    if not metrics:
        problems.append(f"no metric in {expr!r}")
    for metric in sorted(metrics - allowed_series):
        problems.append(f"unknown metric {metric!r} (the collector makes {sorted(allowed_series)})")
    for label in sorted(labels - allowed_labels):
        problems.append(f"unknown label {label!r} (the run metrics carry {sorted(allowed_labels)})")
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


def logql_problems(expr: str, loki: Mapping[str, Any] | None = None) -> list[str]:
    problems = []
    index_labels = loki_index_labels(loki if loki is not None else load_yaml(LOKI))
    selector, filters = logql_names(expr)
    if not selector:
        problems.append(f"no stream selector in {expr!r}")
    for label in sorted(selector - index_labels):
        problems.append(f"stream selector uses {label!r}: only {sorted(index_labels)} are index labels")
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
            # Grafana builds its own query only with a line filter on the log body (|= "<trace id>"), which
            # holds just the message for OTLP logs: a custom query selecting the trace_id structured
            # metadata is needed, and with it filterByTraceID / filterBySpanID do nothing.
            if not t2l.get("customQuery"):
                problems.append(f"{d.get('name')}: tracesToLogsV2 needs customQuery (trace_id is metadata)")
            else:
                for ignored in ("filterByTraceID", "filterBySpanID"):
                    if t2l.get(ignored):
                        problems.append(f"{d.get('name')}: tracesToLogsV2.{ignored} does nothing with customQuery")
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
    if "level" in names:
        query, options = level_values(dash)
        if query != options:
            problems.append(f"Level variable: query {query} and options {options} differ")
        for value in sorted(set(query) - set(OTEL_SEVERITY_TEXTS)):
            problems.append(f"Level variable: {value!r} is no OTel severity_text {OTEL_SEVERITY_TEXTS}")
    return problems


def level_values(dash: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The Level variable's values: (its custom query, its options without All)."""
    (var,) = [v for v in dash["templating"]["list"] if v.get("name") == "level"]
    query = [v.strip() for v in str(var.get("query", "")).split(",") if v.strip()]
    options = [o["value"] for o in var.get("options") or [] if o.get("value") != "$__all"]
    return query, options


# --- the docs' queries ----------------------------------------------------------------------------------


def readme_stack_section(text: str) -> str:
    """The README's "The production stack" section."""
    start = text.index("## The production stack")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def doc_queries(markdown: str) -> dict[str, list[str]]:
    """PromQL and LogQL a reader copies from the docs: ```promql / ```logql blocks and inline code."""
    queries: dict[str, list[str]] = {"prometheus": [], "loki": []}
    for lang, body in re.findall(r"```(promql|logql)\n(.*?)```", markdown, flags=re.S):
        kind = "prometheus" if lang == "promql" else "loki"
        queries[kind] += [line for line in body.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    prose = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    for code in re.findall(r"`([^`\n]+)`", prose):
        if code.startswith("{service_name"):
            queries["loki"].append(code)
        elif re.match(r"(sum|histogram_quantile|rate|increase)\(", code) and re.search(r"\w[{\[]", code):
            queries["prometheus"].append(code)  # a query, not a mention like `increase()`
    return queries


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


def test_the_stack_lives_in_collector_and_dashboards() -> None:
    """One place per piece: configs of the collector and its backends in collector/, Grafana's in dashboards/."""
    assert {p.name for p in COLLECTOR_DIR.iterdir()} >= {
        "otelcol.yaml",
        "otelcol-spool.yaml",
        "loki.yaml",
        "prometheus.yml",
    }
    assert not (ROOT / "loki").exists() and not (ROOT / "prometheus").exists()
    layout = README.read_text(encoding="utf-8")
    section = layout[layout.index("## Repository layout") :]
    for piece in ("collector/", "dashboards/", "docker-compose.yml", "otelflow/", "tests/"):
        assert piece in section, piece


def test_images_are_pinned(compose: dict[str, Any]) -> None:
    assert image_problems(compose) == []


def test_collector_image_is_the_version_the_component_list_was_made_for(compose: dict[str, Any]) -> None:
    collectors = [s["image"] for s in compose["services"].values() if s["image"].startswith(PINNED_COLLECTOR_IMAGE)]
    assert collectors, "no collector service"
    assert {image_repo_and_tag(i) for i in collectors} == {(PINNED_COLLECTOR_IMAGE, PINNED_COLLECTOR_VERSION)}


def test_every_service_is_health_checked_by_its_own_image_where_it_can(compose: dict[str, Any]) -> None:
    assert healthcheck_problems(compose) == []
    services = compose["services"]
    assert services["loki"]["healthcheck"]["test"] == ["CMD", "/usr/bin/loki", "-health"]
    assert "13133/status" in services["jaeger"]["healthcheck"]["test"][-1]
    probes = [name for name, svc in services.items() if svc["image"].startswith("busybox")]
    assert sorted(probes) == ["collector-probe", "collector-spool-probe"], "busybox only where nothing else works"


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
    assert mounts("loki")["/etc/loki/loki.yaml"] == "./collector/loki.yaml"
    assert "-config.file=/etc/loki/loki.yaml" in services["loki"]["command"]
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./collector/prometheus.yml"
    assert mounts("grafana")["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    provider_path = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["options"]["path"]
    assert mounts("grafana")[provider_path] == "./dashboards/json"


def test_persistent_queues_live_in_named_volumes(
    compose: dict[str, Any], collector_main: dict[str, Any], collector_spool: dict[str, Any]
) -> None:
    for service, doc in (("collector", collector_main), ("collector-spool", collector_spool)):
        svc = compose["services"][service]
        named = {target for source, target, _ in _volume_entries(svc) if not source.startswith((".", "/", "~", "$"))}
        for ext, cfg in doc["extensions"].items():
            if component_type(ext) == "file_storage":
                assert cfg["directory"] in named, f"{service}: {cfg['directory']} is not a named volume"
        # the image's user 10001 cannot write into a root-owned named volume
        assert svc.get("user") == "0:0", service


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
def test_collector_pipelines_use_the_pinned_components_and_exporter_side_batching(path: Path) -> None:
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
    assert all(job.get("honor_labels") for job in scrape if f"collector:{port}" in str(job)), "keep exporter labels"
    assert set(collector_main["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    assert "health_check" in collector_main["service"]["extensions"]


def test_run_metrics_come_from_finished_run_spans(collector_main: dict[str, Any]) -> None:
    assert run_metrics_problems(collector_main) == []
    assert sorted(run_metric_series(collector_main)) == [
        "otelflow_runs_calls_total",
        "otelflow_runs_duration_seconds_bucket",
        "otelflow_runs_duration_seconds_count",
        "otelflow_runs_duration_seconds_sum",
    ]


def test_spool_collector_reads_whole_jsonl_lines_and_forwards_them_to_the_main_collector(
    collector_spool: dict[str, Any], collector_main: dict[str, Any]
) -> None:
    receivers = collector_spool["receivers"]
    grpc_limit = collector_main["receivers"]["otlp"]["protocols"]["grpc"]["max_recv_msg_size_mib"] * 2**20
    for signal in ("traces", "logs", "metrics"):
        (rid,) = collector_spool["service"]["pipelines"][signal]["receivers"]
        assert component_type(rid) == "otlp_json_file"
        for glob in receivers[rid]["include"]:
            assert glob.startswith("/spool/**/") and glob.endswith(".jsonl") and signal in glob
        assert receivers[rid]["start_at"] == "beginning"
        # fileconsumer splits lines longer than max_log_size (default 1 MiB) into several "lines"
        assert 2**20 < byte_size(receivers[rid]["max_log_size"]) <= grpc_limit
        (exporter,) = pipeline_exporters(collector_spool, signal)
        assert exporter["endpoint"] == "collector:4317"
        batch = exporter["sending_queue"]["batch"]
        assert batch["sizer"] == "bytes" and batch["max_size"] < grpc_limit, "a batch the receiver accepts"


def test_loki_indexes_only_the_service_name() -> None:
    loki = load_yaml(LOKI)
    assert loki_problems(loki) == []
    assert loki_index_labels(loki) == {"service_name"}


def test_datasources_link_traces_and_logs(datasources: dict[str, Any]) -> None:
    assert datasource_problems(datasources) == []
    assert set(datasource_uids(datasources).items()) >= {
        ("jaeger", "jaeger"),
        ("loki", "loki"),
        ("prometheus", "prometheus"),
    }


def test_dashboards_use_provisioned_datasources_and_the_collectors_names(datasources: dict[str, Any]) -> None:
    for dash in all_dashboards():
        assert dashboard_problems(dash, datasources) == [], dash.get("title")


def test_runs_dashboard_has_the_issue_panels(
    dashboard: dict[str, Any], datasources: dict[str, Any], collector_main: dict[str, Any]
) -> None:
    assert dashboard["title"] == "otelflow runs"
    uids = datasource_uids(datasources)
    exprs = [(uids[uid], expr) for _, uid, expr in iter_queries(dashboard, uids) if uid in uids]
    series = run_metric_series(collector_main)
    calls = {s for s, kind in series.items() if kind == "calls"}
    buckets = {s for s, kind in series.items() if kind == "duration" and s.endswith("_bucket")}
    flow_label = prometheus_label(semconv.FLOW_NAME)
    task_label = prometheus_label(semconv.TASK_NAME)
    prom = [e for t, e in exprs if t == "prometheus"]
    assert any(calls & promql_names(e)[0] and flow_label in promql_names(e)[1] for e in prom), "runs per flow"
    state = prometheus_label(semconv.RUN_STATE)
    assert any(any(label == state and "Failed" in v for label, _, v in promql_names(e)[2]) for e in prom), "failures"
    for q in ("0.5", "0.95"):
        quantiles = [e for e in prom if e.startswith(f"histogram_quantile({q},") and buckets & promql_names(e)[0]]
        assert any(task_label in promql_names(e)[1] for e in quantiles), f"p{q} per task"
        assert any(task_label not in promql_names(e)[1] for e in quantiles), f"p{q} per flow"
    logs = [e for t, e in exprs if t == "loki"]
    run_id = semconv.loki_name(semconv.FLOW_RUN_ID)
    assert any(run_id in logql_names(e)[1] and "severity_text" in logql_names(e)[1] for e in logs), "logs panel"


def test_docs_and_readme_queries_use_the_stacks_names() -> None:
    for path, text in (
        (DOCS, DOCS.read_text(encoding="utf-8")),
        (README, readme_stack_section(README.read_text(encoding="utf-8"))),
    ):
        queries = doc_queries(text)
        assert queries["prometheus"] and queries["loki"], path
        problems = [p for q in queries["prometheus"] for p in promql_problems(q)]
        problems += [p for q in queries["loki"] for p in logql_problems(q)]
        for q in queries["loki"]:  # severity values a reader filters on
            for m in re.finditer(r'severity_text\s*=~?\s*"([^"]*)"', q):
                problems += [
                    f"{v!r} is no OTel severity_text" for v in m.group(1).split("|") if v not in OTEL_SEVERITY_TEXTS
                ]
        assert problems == [], path


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


def test_healthcheck_check_rejects_missing_impossible_and_sidecar_healthchecks(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    del broken["services"]["prometheus"]["healthcheck"]
    broken["services"]["collector"]["healthcheck"] = {"test": ["CMD", "wget", "-q", "http://127.0.0.1:13133/"]}
    broken["services"]["collector-probe"]["network_mode"] = "service:collector"
    broken["services"]["loki"]["healthcheck"] = {"test": ["CMD", "wget", "-q", "http://127.0.0.1:3100/ready"]}
    problems = healthcheck_problems(broken)
    assert any("prometheus: no healthcheck" in p for p in problems)
    assert any("collector:" in p and "cannot run" in p for p in problems)
    assert any("collector:" in p and "no probe" in p for p in problems)
    assert any("collector-probe: network_mode" in p for p in problems)
    assert any("loki:" in p and "'wget'" in p for p in problems)


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


def test_collector_check_rejects_undefined_deprecated_unknown_and_unqueued_components(
    collector_main: dict[str, Any],
) -> None:
    broken = copy.deepcopy(collector_main)
    broken["service"]["pipelines"]["traces"]["exporters"].append("otlp_grpc/tempo")
    broken["exporters"]["loki"] = {"endpoint": "http://loki:3100/loki/api/v1/push"}
    broken["exporters"]["otlphttp/old"] = {"endpoint": "http://loki:3100/otlp"}
    broken["processors"]["tail_sampling"] = {}
    broken["processors"]["batch"] = {}
    broken["service"]["pipelines"]["logs"]["processors"] = ["batch", "memory_limiter"]
    del broken["exporters"]["otlp_grpc/jaeger"]["sending_queue"]["storage"]
    del broken["exporters"]["otlp_http/loki"]["sending_queue"]["batch"]
    problems = collector_problems(broken)
    for fragment in (
        "otlp_grpc/tempo is not defined",
        "exporters loki:",
        "otlphttp/old",
        "tail_sampling",
        "processors batch: deprecated",
        "first",
        "otlp_grpc/jaeger: in-memory queue",
        "otlp_http/loki: sending_queue has no batch",
    ):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_run_metrics_check_rejects_counting_pending_spans_and_per_process_series(
    collector_main: dict[str, Any],
) -> None:
    broken = copy.deepcopy(collector_main)
    (filter_id,) = [p for p in broken["processors"] if component_type(p) == "filter"]
    broken["processors"][filter_id]["trace_conditions"] = [f'span.attributes["{semconv.RUN_TYPE}"] == nil']
    broken["service"]["pipelines"]["traces/runs"]["processors"] = ["memory_limiter", filter_id]
    broken["service"]["pipelines"]["traces"]["processors"] = ["memory_limiter", filter_id]
    broken["connectors"]["spanmetrics"]["histogram"]["unit"] = "ms"
    broken["connectors"]["spanmetrics"]["dimensions"].pop()
    problems = run_metrics_problems(broken)
    for fragment in ("pending span records", "service.instance.id", "Jaeger must get every span", "unit", "dimensions"):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_ottl_subset_reads_the_filters_conditions_and_refuses_others() -> None:
    pending = 'span.attributes["otelflow.span.pending"] == true'
    assert ottl_drops([pending], {"otelflow.span.pending": True})
    assert not ottl_drops([pending], {"otelflow.span.pending": False})
    assert not ottl_drops([pending], {})
    assert ottl_drops(['span.attributes["otelflow.run.type"] == nil'], {})
    assert ottl_drops(['span.attributes["otelflow.run.type"] != "flow"'], {"otelflow.run.type": "task"})
    with pytest.raises(ValueError, match="not understood"):
        ottl_drops(['IsMatch(span.name, "task .*")'], {})


def test_loki_check_rejects_default_index_labels_old_schema_and_run_id_labels() -> None:
    broken = load_yaml(LOKI)
    broken["limits_config"]["allow_structured_metadata"] = False
    broken["schema_config"]["configs"][-1]["schema"] = "v12"
    broken["limits_config"]["otlp_config"] = {
        "log_attributes": [{"action": "index_label", "attributes": [semconv.FLOW_RUN_ID]}]
    }
    problems = loki_problems(broken)
    assert len(problems) == 4, problems
    assert any("service.instance.id" in p for p in problems)
    assert "service_instance_id" in loki_index_labels(broken)


def test_datasource_check_rejects_dangling_uids_and_ignored_filters(datasources: dict[str, Any]) -> None:
    broken = copy.deepcopy(datasources)
    for d in broken["datasources"]:
        jd = d.get("jsonData") or {}
        if "tracesToLogsV2" in jd:
            jd["tracesToLogsV2"]["datasourceUid"] = "loki-old"
            jd["tracesToLogsV2"]["filterByTraceID"] = True
        for field in jd.get("derivedFields") or []:
            field["datasourceUid"] = "tempo"
            field["matcherType"] = "regex"
    problems = datasource_problems(broken)
    assert any("loki-old" in p for p in problems)
    assert any("tempo" in p for p in problems)
    assert any("matcherType" in p for p in problems)
    assert any("filterByTraceID does nothing" in p for p in problems)


def test_dashboard_check_rejects_unknown_names_datasources_and_levels(
    dashboard: dict[str, Any], datasources: dict[str, Any]
) -> None:
    broken = copy.deepcopy(dashboard)
    targets = [t for p in broken["panels"] for t in p.get("targets", [])]
    prom_target = next(t for t in targets if t["datasource"]["uid"] == "prometheus")
    prom_target["expr"] = prom_target["expr"].replace("otelflow_runs_calls_total", "otelflow_runs_total")
    loki_target = next(t for t in targets if t["datasource"]["uid"] == "loki")
    loki_target["expr"] = '{service_name="etl", otelflow_flow_run_id="x"} | otelflow_flowrun_id="y"'
    broken["templating"]["list"][0]["datasource"] = {"type": "prometheus", "uid": "prom"}
    (level,) = [v for v in broken["templating"]["list"] if v["name"] == "level"]
    level["query"] = level["query"].replace("WARN", "WARNING")
    problems = dashboard_problems(broken, datasources)
    assert any("otelflow_runs_total" in p for p in problems)
    assert any("stream selector uses 'otelflow_flow_run_id'" in p for p in problems)
    assert any("otelflow_flowrun_id" in p for p in problems)
    assert any("'prom'" in p for p in problems)
    assert any("'WARNING' is no OTel severity_text" in p for p in problems)


def test_promql_check_rejects_unknown_metrics_labels_and_values() -> None:
    assert promql_problems('sum by (otelflow_flow) (otelflow_runs_calls_total{otelflow_run_type="flows"})')
    assert promql_problems('otelflow_runs_calls_total{otelflow_run_state=~"Failed|Errored"}')
    assert promql_problems("rate(otelflow_run_duration_seconds_bucket[5m])")  # the retired in-process name
    assert promql_problems('otelflow_runs_calls_total{job="etl"}') == []  # job exists, it is just not the service
    good = "histogram_quantile(0.95, sum by (le) (rate(otelflow_runs_duration_seconds_bucket[5m])))"
    assert promql_problems(good) == []


def test_doc_query_extraction_finds_blocks_and_inline_queries() -> None:
    text = 'x `{service_name="etl"} | trace_id="1"`, `sum(rate(a[5m]))`, `rate()`\n```promql\n# c\nrate(b[1m])\n```\n'
    assert doc_queries(text) == {
        "prometheus": ["rate(b[1m])", "sum(rate(a[5m]))"],
        "loki": ['{service_name="etl"} | trace_id="1"'],
    }

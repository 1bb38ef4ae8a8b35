"""Static checks of the parts of the production stack that cannot run here (issues 5 and 14).

No Docker engine runs here, and neither Loki nor Grafana can be built, so these are checked by parsing
the files:

- docker-compose.yml: images pinned, health checks that can run in their images and reach the ports the
  configs open, named volumes declared and mounted files present, published ports bound to 127.0.0.1
  with a comment each, every config mounted where its service reads it, persistent queues and Jaeger's
  badger storage in named volumes, the spool profile;
- collector/loki.yaml: structured metadata on, schema v13, only service_name as an index label;
- the LogQL names of the dashboards, the datasources' links, the README and the docs: index labels Loki's
  config makes, structured metadata named after ``otelflow.semconv`` (never copied as strings);
- Grafana: datasources (uids, the trace <-> logs <-> metrics links, exemplars), dashboard structure
  (provisioned datasource uids, template variables, Level values that are OTel severity texts).

The Collector, Jaeger and Prometheus are checked for real, built from their Go modules and run with the
repository's configs: tests/test_stack_configs.py (validate and start with no deprecation, build
manifest, compose pins), tests/test_stack_traces.py (Collector -> Jaeger), tests/test_stack_metrics.py
(every PromQL query of the dashboards, README and docs answered by a real Prometheus) and
tests/test_stack_logs.py (LogQL names from what the real Collector delivers at Loki's OTLP door).

Every check is a small function that takes the parsed document and returns a list of problems; the
``test_*_rejects_*`` tests feed broken copies to prove each checker can fail. The cross-check of the
Level values and LogQL names against telemetry of a real run is tests/test_stack_contract.py.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from stack_parts import COLLECTOR_DIR, COMPOSE
from stack_parts import JAEGER_CONFIG as JAEGER
from stack_parts import MAIN_CONFIG as COLLECTOR_MAIN
from stack_parts import SPOOL_CONFIG as COLLECTOR_SPOOL
from stack_queries import (
    DASHBOARD_DIR,
    DATASOURCES,
    README,
    ROOT,
    STACK_DOC,
    dashboards,
    datasource_uids,
    datasources,
    doc_queries,
    documented_queries,
    iter_queries,
    readme_stack_section,
)

from otelflow import semconv

LOKI = COLLECTOR_DIR / "loki.yaml"
DASHBOARD_PROVIDERS = ROOT / "dashboards" / "provisioning" / "dashboards" / "dashboards.yaml"
RUNS_DASHBOARD = DASHBOARD_DIR / "otelflow-runs.json"

COLLECTOR_IMAGE = "otel/opentelemetry-collector-contrib"
# Images with no shell, wget or curl and no health command: a healthcheck exec'd inside them can never
# pass (collector: FROM scratch, releases repo distributions/otelcol-contrib/Dockerfile). They are
# health-checked by a probe service that reaches them over the compose network.
SHELL_LESS_IMAGES = frozenset({COLLECTOR_IMAGE})
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
# A single-machine stack: every published port listens on the host's loopback only.
PUBLISHED_HOST_IP = "127.0.0.1"

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

# The exemplar label the collector's prometheus exporter writes a data point's trace id under
# (otlptranslator.ExemplarTraceIDKey): what Grafana's exemplarTraceIdDestinations must name.
EXEMPLAR_TRACE_ID_LABEL = "trace_id"
# The run metrics Grafana's tracesToMetrics queries may ask for (their series and labels are checked
# against a real Prometheus in tests/test_stack_metrics.py).
TRACES_TO_METRICS_METRICS = frozenset({"otelflow_runs_calls_total", "otelflow_runs_duration_seconds_bucket"})


# --- loading ------------------------------------------------------------------------------------------


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(COMPOSE)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def datasource_doc() -> dict[str, Any]:
    return datasources()


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    (runs,) = [d for d in dashboards() if d.get("title") == "otelflow runs"]
    return runs


# --- docker-compose checks ----------------------------------------------------------------------------


def image_repo_and_tag(image: str) -> tuple[str, str | None]:
    name = image.split("@", 1)[0]
    repo, sep, tag = name.rpartition(":")
    if not sep or "/" in tag:
        return name, None
    return repo, tag


def image_problems(doc: dict[str, Any]) -> list[str]:
    """Every service runs a pinned image: a version tag, not ``latest`` and not none."""
    problems = []
    for name, svc in doc.get("services", {}).items():
        image = svc.get("image")
        if not image:
            problems.append(f"{name}: no image")
            continue
        _repo, tag = image_repo_and_tag(image)
        if tag is None or tag == "latest" or not re.search(r"\d", tag):
            problems.append(f"{name}: image {image!r} is not pinned to a version")
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


def _healthcheck_url(svc: Mapping[str, Any]) -> str:
    (url,) = [str(p) for p in (svc.get("healthcheck") or {}).get("test") or [] if "://" in str(p)]
    return url


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


def _named_volume_targets(svc: dict[str, Any]) -> set[str]:
    return {target for source, target, _ in _volume_entries(svc) if not source.startswith((".", "/", "~", "$"))}


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


def _port_entries(svc: Mapping[str, Any]) -> Iterator[tuple[str | None, int]]:
    """(host ip or None, published port) of a service's ports, short or long syntax."""
    for p in svc.get("ports", []):
        if isinstance(p, dict):
            yield p.get("host_ip"), int(p["published"])
        else:
            parts = str(p).split("/", 1)[0].split(":")
            yield (parts[0] if len(parts) == 3 else None), int(parts[-2])


def published_ports(doc: dict[str, Any]) -> dict[int, str]:
    return {port: name for name, svc in doc.get("services", {}).items() for _ip, port in _port_entries(svc)}


def port_problems(doc: dict[str, Any], raw_text: str) -> list[str]:
    """Only the expected ports, each bound to the host's loopback, each with a comment saying what it is."""
    problems = []
    ports = published_ports(doc)
    if ports != EXPECTED_PORTS:
        problems.append(f"published ports {sorted(ports.items())} != expected {sorted(EXPECTED_PORTS.items())}")
    for name, svc in doc.get("services", {}).items():
        for host_ip, port in _port_entries(svc):
            if host_ip != PUBLISHED_HOST_IP:
                bound = host_ip or "every interface"
                problems.append(f"{name}: port {port} is bound to {bound}, not {PUBLISHED_HOST_IP}")
    for line in raw_text.splitlines():
        m = re.match(r'\s*-\s*"?(?:[\d.]+:)?(\d+):(\d+)"?\s*(#.*)?$', line)
        if m and not (m.group(3) or "").strip("# "):
            problems.append(f"port {m.group(1)} has no comment saying what it is")
    return problems


def _port_of(endpoint: str) -> str:
    return endpoint.rstrip("/").rsplit(":", 1)[1].split("/", 1)[0]


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


# --- LogQL names --------------------------------------------------------------------------------------

_GRAFANA_VAR = re.compile(r"\$\{[^}]*\}|\$\$\{[^}]*\}|\$\w+")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|`[^`]*`')
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*(\"(?:[^\"\\]|\\.)*\"|`[^`]*`)")


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


def severity_problems(expr: str) -> list[str]:
    """severity_text values a LogQL query filters on that are no OTel severity text (WARNING, CRITICAL)."""
    return [
        f"{v!r} is no OTel severity_text {OTEL_SEVERITY_TEXTS}: {expr}"
        for m in re.finditer(r'severity_text\s*=~?\s*"([^"$]*)"', expr)
        for v in m.group(1).split("|")
        if v not in OTEL_SEVERITY_TEXTS
    ]


# --- Grafana checks -----------------------------------------------------------------------------------

_PROMQL_KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset"}
)


def metric_names(promql: str) -> set[str]:
    """The metric names of a Grafana link's PromQL: identifiers that are no function, keyword or label."""
    rest = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", _STRING.sub(" ", promql))  # matchers, ranges
    rest = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", rest)  # groupings
    names = re.findall(r"(?<![\w.$])([A-Za-z_:][\w:]*)\b(?!\s*\()", rest)
    return {n for n in names if n.lower() not in _PROMQL_KEYWORDS}


def _target_problems(uids: Mapping[str, str], where: str, target: Any, kind: str) -> list[str]:
    """A link's datasourceUid must name a provisioned datasource of ``kind``."""
    return [] if uids.get(target) == kind else [f"{where} {target!r} is not a provisioned {kind} uid"]


def datasource_problems(doc: dict[str, Any]) -> list[str]:
    problems = []
    uids = datasource_uids(doc)
    if len(uids) != len(doc.get("datasources", [])):
        problems.append("every datasource needs a unique uid")
    for d in doc.get("datasources", []):
        name = d.get("name")
        jd = d.get("jsonData") or {}
        t2l = jd.get("tracesToLogsV2")
        if t2l is not None:
            problems += _target_problems(
                uids, f"{name}: tracesToLogsV2.datasourceUid", t2l.get("datasourceUid"), "loki"
            )
            # Grafana builds its own query only with a line filter on the log body (|= "<trace id>"), which
            # holds just the message for OTLP logs: a custom query selecting the trace_id structured
            # metadata is needed, and with it filterByTraceID / filterBySpanID do nothing.
            if not t2l.get("customQuery"):
                problems.append(f"{name}: tracesToLogsV2 needs customQuery (trace_id is metadata)")
            else:
                for ignored in ("filterByTraceID", "filterBySpanID"):
                    if t2l.get(ignored):
                        problems.append(f"{name}: tracesToLogsV2.{ignored} does nothing with customQuery")
                query = t2l.get("query", "")
                if "__trace.traceId" not in query or "trace_id" not in query:
                    problems.append(f"{name}: tracesToLogsV2 query must select trace_id by the trace id")
                problems += [f"{name} tracesToLogsV2: {p}" for p in logql_problems(query)]
        t2m = jd.get("tracesToMetrics")
        if t2m is not None:
            problems += _target_problems(
                uids, f"{name}: tracesToMetrics.datasourceUid", t2m.get("datasourceUid"), "prometheus"
            )
            if not t2m.get("queries"):
                problems.append(f"{name}: tracesToMetrics has no queries")
            for q in t2m.get("queries") or []:
                found = metric_names(q.get("query", ""))
                if not found or found - TRACES_TO_METRICS_METRICS:
                    problems.append(
                        f"{name}: tracesToMetrics query {q.get('name')!r} names {sorted(found)}, "
                        f"not only the run metrics {sorted(TRACES_TO_METRICS_METRICS)}"
                    )
        for dest in jd.get("exemplarTraceIdDestinations") or []:
            if dest.get("name") != EXEMPLAR_TRACE_ID_LABEL:
                problems.append(
                    f"{name}: exemplar destination reads label {dest.get('name')!r}, "
                    f"the exporter writes the trace id as {EXEMPLAR_TRACE_ID_LABEL!r}"
                )
            problems += _target_problems(uids, f"{name}: exemplar datasourceUid", dest.get("datasourceUid"), "jaeger")
        for field in jd.get("derivedFields") or []:
            problems += _target_problems(
                uids, f"{name}: derived field datasourceUid", field.get("datasourceUid"), "jaeger"
            )
            if field.get("matcherType") != "label":
                problems.append(f"{name}: derived field must read structured metadata (matcherType: label)")
            if field.get("matcherRegex") not in ALLOWED_LOKI_METADATA:
                problems.append(f"{name}: derived field reads unknown field {field.get('matcherRegex')!r}")
    for key, link in (
        ("tracesToLogsV2", "traces to logs"),
        ("derivedFields", "logs to traces"),
        ("exemplarTraceIdDestinations", "metrics (exemplars) to traces"),
        ("tracesToMetrics", "traces to metrics"),
    ):
        if not any((d.get("jsonData") or {}).get(key) for d in doc.get("datasources", [])):
            problems.append(f"no datasource links {link} ({key})")
    return problems


def level_values(dash: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The Level variable's values: (its custom query, its options without All)."""
    (var,) = [v for v in dash["templating"]["list"] if v.get("name") == "level"]
    query = [v.strip() for v in str(var.get("query", "")).split(",") if v.strip()]
    options = [o["value"] for o in var.get("options") or [] if o.get("value") != "$__all"]
    return query, options


def dashboard_problems(dash: dict[str, Any], ds_doc: dict[str, Any]) -> list[str]:
    """Provisioned datasources, no empty query, LogQL names Loki makes, the four filters, OTel levels.

    The PromQL queries are asked of a real Prometheus in tests/test_stack_metrics.py.
    """
    problems = []
    uids = datasource_uids(ds_doc)
    for where, uid, expr in iter_queries(dash):
        if uid not in uids:
            problems.append(f"{where}: datasource uid {uid!r} is not provisioned")
            continue
        if not expr:
            problems.append(f"{where}: empty query")
        elif uids[uid] == "loki":
            problems += [f"{where}: {p}" for p in (*logql_problems(expr), *severity_problems(expr))]
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


def _grouping(expr: str) -> set[str]:
    found = re.search(r"\bby \(([^)]*)\)", expr)
    return {n.strip() for n in found.group(1).split(",")} if found else set()


# === tests ============================================================================================


def test_the_files_checked_here_parse() -> None:
    for path in (COMPOSE, LOKI, DATASOURCES, DASHBOARD_PROVIDERS):
        assert isinstance(load_yaml(path), dict), path
    assert dashboards(), "no dashboard JSON"


def test_the_stack_lives_in_collector_and_dashboards() -> None:
    """One place per piece: configs of the collector and its backends in collector/, Grafana's in dashboards/."""
    assert {p.name for p in COLLECTOR_DIR.iterdir()} >= {
        "otelcol.yaml",
        "otelcol-spool.yaml",
        "jaeger.yaml",
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


def test_every_service_is_health_checked_by_its_own_image_where_it_can(compose: dict[str, Any]) -> None:
    assert healthcheck_problems(compose) == []
    services = compose["services"]
    assert services["loki"]["healthcheck"]["test"] == ["CMD", "/usr/bin/loki", "-health"]
    probes = [name for name, svc in services.items() if svc["image"].startswith("busybox")]
    assert sorted(probes) == ["collector-probe", "collector-spool-probe"], "busybox only where nothing else works"


def test_health_checks_ask_the_ports_the_configs_open(compose: dict[str, Any]) -> None:
    """The health endpoints are relocated in the real-stack tests: only here is compose's URL checked."""
    services = compose["services"]
    for probe, config in (("collector-probe", COLLECTOR_MAIN), ("collector-spool-probe", COLLECTOR_SPOOL)):
        endpoint = load_yaml(config)["extensions"]["health_check"]["endpoint"]
        assert _healthcheck_url(services[probe]).endswith(f":{_port_of(endpoint)}/"), probe
    health = load_yaml(JAEGER)["extensions"]["healthcheckv2"]
    status_path = ((health["http"].get("status") or {}).get("path")) or "/status"  # healthcheckv2's default
    url = _healthcheck_url(services["jaeger"])
    assert url.endswith(f":{_port_of(health['http']['endpoint'])}{status_path}"), url


def test_volumes_are_declared_and_mounted_files_exist(compose: dict[str, Any]) -> None:
    assert volume_problems(compose) == []
    assert set(compose["volumes"]) >= {"collector-queue", "jaeger-data", "loki-data", "prometheus-data"}


def test_only_the_expected_ports_are_published_on_loopback_each_with_a_comment(compose: dict[str, Any]) -> None:
    assert port_problems(compose, COMPOSE.read_text(encoding="utf-8")) == []


def test_compose_mounts_each_config_where_its_service_reads_it(compose: dict[str, Any]) -> None:
    services = compose["services"]

    def mounts(name: str) -> dict[str, str]:
        return {target: source for source, target, _ in _volume_entries(services[name])}

    assert mounts("collector")["/etc/otelcol-contrib/config.yaml"] == "./collector/otelcol.yaml"
    assert mounts("collector-spool")["/etc/otelcol-contrib/config.yaml"] == "./collector/otelcol-spool.yaml"
    for collector in ("collector", "collector-spool"):
        assert "--config=/etc/otelcol-contrib/config.yaml" in services[collector]["command"], collector
    assert mounts("jaeger")["/etc/jaeger/config.yaml"] == "./collector/jaeger.yaml"
    assert "--config=/etc/jaeger/config.yaml" in services["jaeger"]["command"]
    assert mounts("loki")["/etc/loki/loki.yaml"] == "./collector/loki.yaml"
    assert "-config.file=/etc/loki/loki.yaml" in services["loki"]["command"]
    assert mounts("prometheus")["/etc/prometheus/prometheus.yml"] == "./collector/prometheus.yml"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert mounts("grafana")["/etc/grafana/provisioning"] == "./dashboards/provisioning"
    provider_path = load_yaml(DASHBOARD_PROVIDERS)["providers"][0]["options"]["path"]
    assert mounts("grafana")[provider_path] == "./dashboards/json"


def test_persistent_queues_and_traces_live_in_named_volumes(compose: dict[str, Any]) -> None:
    for service, config in (("collector", COLLECTOR_MAIN), ("collector-spool", COLLECTOR_SPOOL)):
        svc = compose["services"][service]
        named = _named_volume_targets(svc)
        storages = {e: c for e, c in load_yaml(config)["extensions"].items() if e.split("/", 1)[0] == "file_storage"}
        assert storages, service
        for cfg in storages.values():
            assert cfg["directory"] in named, f"{service}: {cfg['directory']} is not a named volume"
        # the image's user 10001 cannot write into a root-owned named volume
        assert svc.get("user") == "0:0", service
    # Jaeger's badger directories: under its named volume, so traces survive a restart of the container
    volumes = [PurePosixPath(t) for t in _named_volume_targets(compose["services"]["jaeger"])]
    backends = load_yaml(JAEGER)["extensions"]["jaeger_storage"]["backends"]
    directories = [d for b in backends.values() for d in b["badger"]["directories"].values()]
    assert directories
    for directory in directories:
        assert any(PurePosixPath(directory).is_relative_to(v) for v in volumes), f"jaeger: {directory} is in no volume"
    assert all(b["badger"].get("ephemeral") is False for b in backends.values())


def test_spool_profile_ships_the_local_spool_read_only(compose: dict[str, Any]) -> None:
    spool = compose["services"]["collector-spool"]
    assert spool["profiles"] == ["spool"]
    assert spool["image"] == compose["services"]["collector"]["image"]
    entries = {target: (source, ro) for source, target, ro in _volume_entries(spool)}
    source, read_only = entries["/spool"]
    assert source == "${OTELFLOW_HOME:-~/.otelflow}/spool"
    assert read_only
    assert all("spool" in s.get("profiles", []) for n, s in compose["services"].items() if "spool" in n)


def test_loki_indexes_only_the_service_name() -> None:
    loki = load_yaml(LOKI)
    assert loki_problems(loki) == []
    assert loki_index_labels(loki) == {"service_name"}


def test_datasources_link_traces_logs_and_metrics(datasource_doc: dict[str, Any]) -> None:
    assert datasource_problems(datasource_doc) == []
    assert set(datasource_uids(datasource_doc).items()) >= {
        ("jaeger", "jaeger"),
        ("loki", "loki"),
        ("prometheus", "prometheus"),
    }


def test_dashboards_use_provisioned_datasources_loki_names_and_otel_levels(datasource_doc: dict[str, Any]) -> None:
    for dash in dashboards():
        assert dashboard_problems(dash, datasource_doc) == [], dash.get("title")


def test_runs_dashboard_has_the_issue_panels(dashboard: dict[str, Any], datasource_doc: dict[str, Any]) -> None:
    """The panels issue 5 asks for are there (what they answer is tests/test_stack_metrics.py's)."""
    uids = datasource_uids(datasource_doc)
    exprs = [(uids[uid], expr) for _, uid, expr in iter_queries(dashboard) if uid in uids]
    prom = [e for t, e in exprs if t == "prometheus"]
    calls = [e for e in prom if "otelflow_runs_calls_total" in e and not e.startswith("label_values(")]
    assert any(_grouping(e) == {"otelflow_flow_name"} and "otelflow_run_state" not in e for e in calls), "runs"
    assert any("otelflow_run_state" in e and "Failed" in e for e in calls), "failures"
    for q in ("0.5", "0.95"):
        quantiles = [e for e in prom if e.startswith(f"histogram_quantile({q},") and "_bucket" in e]
        assert any("otelflow_task_name" in _grouping(e) for e in quantiles), f"p{q} per task"
        assert any("otelflow_task_name" not in _grouping(e) for e in quantiles), f"p{q} per flow"
    logs = [e for t, e in exprs if t == "loki"]
    run_id = semconv.loki_name(semconv.FLOW_RUN_ID)
    assert any(run_id in logql_names(e)[1] and "severity_text" in logql_names(e)[1] for e in logs), "logs panel"


def test_docs_and_readme_logql_uses_the_stacks_names() -> None:
    for path in ("README", STACK_DOC.relative_to(ROOT).as_posix()):
        queries = [q for where, q in documented_queries("loki") if where == path]
        assert queries, path
        problems = [p for q in queries for p in (*logql_problems(q), *severity_problems(q))]
        assert problems == [], path


# --- the checkers can fail ----------------------------------------------------------------------------


def test_image_check_rejects_latest_and_untagged(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["grafana"]["image"] = "grafana/grafana:latest"
    broken["services"]["loki"]["image"] = "grafana/loki"
    problems = image_problems(broken)
    assert len(problems) == 2, problems


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
    del broken["volumes"]["jaeger-data"]
    problems = volume_problems(broken)
    for fragment in ("nope", "loki-wal", "'jaeger-data' is not declared"):
        assert any(fragment in p for p in problems), (fragment, problems)
    assert any("jaeger.yaml" in p for p in volume_problems(compose, ROOT / "dashboards"))


def test_port_check_rejects_extra_unbound_and_uncommented_ports(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["collector"]["ports"].append("127.0.0.1:13133:13133")
    assert port_problems(broken, "")
    unbound = copy.deepcopy(compose)
    unbound["services"]["collector"]["ports"][0] = "4317:4317"
    unbound["services"]["grafana"]["ports"][0] = {"target": 3000, "published": 3000, "host_ip": "0.0.0.0"}
    problems = port_problems(unbound, "")
    assert any("port 4317 is bound to every interface" in p for p in problems), problems
    assert any("port 3000 is bound to 0.0.0.0" in p for p in problems), problems
    assert port_problems(compose, '    ports:\n      - "127.0.0.1:3000:3000"\n')


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


def test_datasource_check_rejects_dangling_uids_ignored_filters_and_foreign_metrics(
    datasource_doc: dict[str, Any],
) -> None:
    broken = copy.deepcopy(datasource_doc)
    for d in broken["datasources"]:
        jd = d.get("jsonData") or {}
        if "tracesToLogsV2" in jd:
            jd["tracesToLogsV2"]["datasourceUid"] = "loki-old"
            jd["tracesToLogsV2"]["filterByTraceID"] = True
        if "tracesToMetrics" in jd:
            jd["tracesToMetrics"]["datasourceUid"] = "prom"
            jd["tracesToMetrics"]["queries"][0]["query"] = "sum(rate(traces_spanmetrics_calls_total{$$__tags}[5m]))"
        for dest in jd.get("exemplarTraceIdDestinations") or []:
            dest["name"] = "traceID"
            dest["datasourceUid"] = "tempo"
        for field in jd.get("derivedFields") or []:
            field["datasourceUid"] = "tempo"
            field["matcherType"] = "regex"
    problems = datasource_problems(broken)
    for fragment in (
        "loki-old",
        "derived field datasourceUid 'tempo'",
        "matcherType",
        "filterByTraceID does nothing",
        "tracesToMetrics.datasourceUid 'prom'",
        "names ['traces_spanmetrics_calls_total']",
        "exemplar destination reads label 'traceID'",
        "exemplar datasourceUid 'tempo'",
    ):
        assert any(fragment in p for p in problems), (fragment, problems)
    for d in broken["datasources"]:
        (d.get("jsonData") or {}).pop("exemplarTraceIdDestinations", None)
        (d.get("jsonData") or {}).pop("tracesToMetrics", None)
    problems = datasource_problems(broken)
    assert any("(exemplarTraceIdDestinations)" in p for p in problems), problems
    assert any("(tracesToMetrics)" in p for p in problems), problems


def test_metric_names_of_a_link_query_leave_out_functions_labels_and_keywords() -> None:
    query = "histogram_quantile(0.95, sum by (le) (rate(otelflow_runs_duration_seconds_bucket{$__tags}[5m]))) * 60"
    assert metric_names(query) == {"otelflow_runs_duration_seconds_bucket"}
    assert metric_names('a_total{x="y"} / on (job) b_total offset 5m') == {"a_total", "b_total"}


def test_dashboard_check_rejects_unknown_loki_names_datasources_and_levels(
    dashboard: dict[str, Any], datasource_doc: dict[str, Any]
) -> None:
    broken = copy.deepcopy(dashboard)
    targets = [t for p in broken["panels"] for t in p.get("targets", [])]
    loki_target = next(t for t in targets if t["datasource"]["uid"] == "loki")
    loki_target["expr"] = '{service_name="etl", otelflow_flow_run_id="x"} | otelflow_flowrun_id="y"'
    loki_target["expr"] += ' | severity_text="WARNING"'
    broken["templating"]["list"][0]["datasource"] = {"type": "prometheus", "uid": "prom"}
    (level,) = [v for v in broken["templating"]["list"] if v["name"] == "level"]
    level["query"] = level["query"].replace("WARN", "WARNING")
    broken["templating"]["list"] = [v for v in broken["templating"]["list"] if v["name"] != "run"]
    problems = dashboard_problems(broken, datasource_doc)
    for fragment in (
        "stream selector uses 'otelflow_flow_run_id'",
        "otelflow_flowrun_id",
        "'prom'",
        "'WARNING' is no OTel severity_text",
        "Level variable: 'WARNING' is no OTel severity_text",
        "missing template variable 'run'",
    ):
        assert any(fragment in p for p in problems), (fragment, problems)


def test_doc_query_extraction_finds_blocks_and_inline_queries() -> None:
    text = 'x `{service_name="etl"} | trace_id="1"`, `sum(rate(a[5m]))`, `rate()`\n```promql\n# c\nrate(b[1m])\n```\n'
    assert doc_queries(text) == {
        "prometheus": ["rate(b[1m])", "sum(rate(a[5m]))"],
        "loki": ['{service_name="etl"} | trace_id="1"'],
    }
    assert "## The production stack" in readme_stack_section(README.read_text(encoding="utf-8"))

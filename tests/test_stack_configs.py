"""The stack's configs are accepted by the real Collector and the real Jaeger, with no deprecation.

The binaries are built from their Go modules (``tools/stack/``); the configs are the repository's own,
with only addresses, ports and directories replaced (``stack_parts.relocated``). docker-compose.yml pins
the images of the same releases.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from stack_parts import (
    COLLECTOR_DIR,
    JAEGER_CONFIG,
    ROOT,
    Collector,
    Jaeger,
    binary,
    compose_service,
    deprecation_lines,
    free_port,
    relocated,
    validate,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]

MANIFEST = ROOT / "tools" / "stack" / "otelcol" / "manifest.yaml"
KINDS = ("receivers", "processors", "exporters", "extensions", "connectors")
COLLECTOR_CONFIGS = sorted(COLLECTOR_DIR.glob("otelcol*.yaml"))

# Jaeger tags each release twice: v1.N of the Go module is the v2.(N - 63) image (v1.74.0 / v2.11.0 in
# the module's CHANGELOG.md).
JAEGER_V2_OFFSET = 63


def _relocations(config: Path, tmp: Path) -> dict[str, str]:
    """Every address, port and directory of a collector config, moved to loopback and ``tmp``."""
    text = config.read_text()
    moves = {
        "0.0.0.0:4317": f"127.0.0.1:{free_port()}",
        "0.0.0.0:4318": f"127.0.0.1:{free_port()}",
        "0.0.0.0:8889": f"127.0.0.1:{free_port()}",
        "jaeger:4317": f"127.0.0.1:{free_port()}",
        "collector:4317": f"127.0.0.1:{free_port()}",
        "http://loki:3100/otlp": f"http://127.0.0.1:{free_port()}/otlp",
        "/var/lib/otelcol/queue": str(tmp / "queue"),
        "/var/lib/otelcol/spool-offsets": str(tmp / "offsets"),
        "/spool/": f"{tmp / 'spool'}/",
    }
    return {old: new for old, new in moves.items() if old in text}


def _components(doc: dict[str, Any]) -> dict[str, set[str]]:
    """Component types a config uses, by kind (``otlp_grpc/jaeger`` -> ``otlp_grpc``)."""
    return {kind: {cid.split("/", 1)[0] for cid in doc.get(kind) or {}} for kind in KINDS}


def _built_components() -> dict[str, set[str]]:
    """Component types the built Collector has (its ``components`` command)."""
    out = subprocess.run(
        [str(binary("otelcol")), "components"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    doc = yaml.safe_load(out)
    return {kind: {str(c["name"]) for c in doc.get(kind) or []} for kind in KINDS}


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_each_collector_config_passes_the_real_collectors_validate_with_no_deprecation(
    config: Path, tmp_path: Path
) -> None:
    moved = relocated(config, _relocations(config, tmp_path), tmp_path / config.name)
    result = validate(binary("otelcol"), moved)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert deprecation_lines(output) == []


def started_log(config: Path, tmp: Path) -> str:
    """The log of the Collector started with ``config`` (relocated), up to its health check answering."""
    collector = Collector(config, tmp, _relocations(config, tmp)).start()
    try:
        return collector.process.log_text()
    finally:
        assert collector.stop() == 0, collector.process.log_tail()


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=lambda p: p.name)
def test_each_collector_config_starts_with_no_deprecation_warning(config: Path, tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    log = started_log(config, tmp_path)
    assert "Everything is ready" in log, log
    assert deprecation_lines(log) == []


def test_the_real_collector_catches_what_the_old_static_checks_let_through(tmp_path: Path) -> None:
    """An unknown key fails validate; the deprecated `spanmetrics` alias warns at every start."""
    text = (COLLECTOR_DIR / "otelcol.yaml").read_text()

    typo = tmp_path / "typo" / "otelcol.yaml"
    typo.parent.mkdir()
    typo.write_text(text.replace("metrics_flush_interval:", "metrics_flush_intervall:"))
    refused = validate(binary("otelcol"), relocated(typo, _relocations(typo, tmp_path), tmp_path / "typo.yaml"))
    assert refused.returncode != 0
    assert "metrics_flush_intervall" in refused.stdout + refused.stderr

    old_name = tmp_path / "old" / "otelcol.yaml"
    old_name.parent.mkdir()
    old_name.write_text(re.sub(r"\bspan_metrics\b", "spanmetrics", text))
    warnings = deprecation_lines(started_log(old_name, tmp_path / "run"))
    assert any('"spanmetrics" alias is deprecated' in line for line in warnings), warnings


def test_jaeger_config_passes_jaegers_validate_and_starts_with_no_deprecation(tmp_path: Path) -> None:
    moved = relocated(
        JAEGER_CONFIG,
        {"/tmp/jaeger/keys": str(tmp_path / "keys"), "/tmp/jaeger/values": str(tmp_path / "values")},
        tmp_path / "jaeger.yaml",
    )
    result = validate(binary("jaeger"), moved)
    assert result.returncode == 0, result.stdout + result.stderr
    jaeger = Jaeger(tmp_path / "run", tmp_path / "badger").start()
    try:
        log = jaeger.process.log_text()
    finally:
        assert jaeger.stop() == 0
    assert "Everything is ready" in log, log
    assert deprecation_lines(log) == []


def test_the_build_manifest_has_exactly_the_components_the_configs_use() -> None:
    used: dict[str, set[str]] = {kind: set() for kind in KINDS}
    for config in COLLECTOR_CONFIGS:
        for kind, types in _components(yaml.safe_load(config.read_text())).items():
            used[kind] |= types
    assert _built_components() == used


def test_one_release_for_every_collector_module_and_compose_pins_it() -> None:
    manifest = yaml.safe_load(MANIFEST.read_text())
    versions = {
        entry["gomod"].split()[1] for kind in KINDS for entry in manifest.get(kind) or []
    }
    assert versions == {"v" + manifest["dist"]["version"]}
    builder = re.search(r"go.opentelemetry.io/collector/cmd/builder (v\S+)", (MANIFEST.parent / "go.mod").read_text())
    assert builder is not None and builder.group(1) == "v" + manifest["dist"]["version"]
    for service in ("collector", "collector-spool"):
        image = compose_service(service)["image"]
        assert image == f"otel/opentelemetry-collector-contrib:{manifest['dist']['version']}"


def test_compose_pins_the_jaeger_and_prometheus_the_suite_runs() -> None:
    jaeger_mod = (ROOT / "tools" / "stack" / "jaeger" / "go.mod").read_text()
    found = re.search(r"github.com/jaegertracing/jaeger v1\.(\d+)\.(\d+)", jaeger_mod)
    assert found is not None
    minor, patch = int(found.group(1)), int(found.group(2))
    assert compose_service("jaeger")["image"] == f"jaegertracing/jaeger:2.{minor - JAEGER_V2_OFFSET}.{patch}"

    prometheus_mod = (ROOT / "tools" / "stack" / "prometheus" / "go.mod").read_text()
    found = re.search(r"github.com/prometheus/prometheus v0\.3(\d\d)\.(\d+)", prometheus_mod)
    assert found is not None  # Prometheus 3.x publishes v3.M.P as Go module v0.3MM.P
    assert compose_service("prometheus")["image"] == f"prom/prometheus:v3.{int(found.group(1))}.{found.group(2)}"

"""The real production stack for tests: the Collector, Jaeger and Prometheus, run as processes.

The binaries are built from their Go modules by ``tools/stack/build.py`` (once per machine, cached
outside the repo; ``scripts/test`` builds them before pytest starts). Each part runs on loopback with the
repository's own config file, of which only addresses, ports and directories are replaced
(:func:`relocated` fails when a replaced text is no longer in the file, so a config change cannot
silently escape the test). Loki cannot be built here; :class:`LokiDoor` is a real OTLP/HTTP receiver at
Loki's OTLP path that records what the Collector delivers.

A part that does not build or start fails the test with its log: never a skip.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pytest
import yaml
from otlp_receiver import OTLPReceiver

from otelflow import semconv

ROOT = Path(__file__).resolve().parent.parent
TESTS_DIR = ROOT / "tests"
COLLECTOR_DIR = ROOT / "collector"
MAIN_CONFIG = COLLECTOR_DIR / "otelcol.yaml"
SPOOL_CONFIG = COLLECTOR_DIR / "otelcol-spool.yaml"
JAEGER_CONFIG = COLLECTOR_DIR / "jaeger.yaml"
PROMETHEUS_CONFIG = COLLECTOR_DIR / "prometheus.yml"
COMPOSE = ROOT / "docker-compose.yml"

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
T = TypeVar("T")


# --- building ------------------------------------------------------------------------------------------


@cache
def _toolchain() -> tuple[ModuleType, str, str]:
    """tools/stack/build.py as a module, the ``go`` command and its version: looked up once per session."""
    spec = importlib.util.spec_from_file_location("_otelflow_stack_build", ROOT / "tools" / "stack" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        go = module.go_executable()
    except SystemExit as failure:
        pytest.fail(f"the stack cannot be built: {failure}", pytrace=False)
    return module, go, module.go_version(go)


@cache
def binary(name: str) -> Path:
    """Path of the built ``otelcol``, ``jaeger`` or ``prometheus``; builds it if missing.

    A failed build fails the calling test with the end of the build log.
    """
    build, go, go_version = _toolchain()
    (part,) = [p for p in build.PARTS if p.name == name]
    try:
        path: Path = build.ensure(part, go, go_version)
    except SystemExit as failure:
        pytest.fail(f"{name} did not build: {failure}", pytrace=False)
    return path


# --- helpers -------------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def relocated(source: Path, replacements: Mapping[str, str], dest: Path) -> Path:
    """Copy ``source`` to ``dest`` with each key of ``replacements`` replaced by its value.

    Only addresses, ports and directories are meant to be replaced; every key must occur in the file.
    """
    text = source.read_text()
    for old, new in replacements.items():
        if old not in text:
            raise AssertionError(f"{source.relative_to(ROOT)} no longer contains {old!r}: update the test's relocation")
        text = text.replace(old, new)
    dest.write_text(text)
    return dest


def wait_until(predicate: Callable[[], T | None], timeout: float, what: str, *, every: float = 0.1) -> T:
    """Poll ``predicate`` until it returns a truthy value; fail with ``what`` after ``timeout`` seconds.

    For state held by another process (a backend's query API), which can only be polled.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def get(url: str, *, timeout: float = 10.0) -> tuple[int, bytes]:
    """HTTP GET: (status, body); connection errors give status 0."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as error:
        return int(error.code), error.read()
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0, b""


def get_json(url: str, *, timeout: float = 10.0) -> Any:
    """HTTP GET of a JSON document that must answer 200."""
    status, body = get(url, timeout=timeout)
    if status != 200:
        raise AssertionError(f"GET {url} answered {status}: {body[:500]!r}")
    return json.loads(body)


_running: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_leftovers() -> None:
    """A test process that ends without its teardown (an interrupted run) leaves no backend running."""
    for proc in list(_running):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


class Process:
    """A started binary, its log file, and a readiness probe."""

    def __init__(self, name: str, argv: list[str], log: Path, ready: Callable[[], bool]) -> None:
        self.name = name
        self.argv = argv
        self.log = log
        self._ready = ready
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        """Start the process and wait until it is ready (fails with its log if it exits or never is)."""
        with open(self.log, "ab") as out:
            self._proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        _running.add(self._proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self._proc.poll() is not None:
                raise AssertionError(f"{self.name} exited with {self._proc.returncode} at start:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"{self.name} not ready after {START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")
            time.sleep(0.1)
        return self

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after ``STOP_TIMEOUT_S``; returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        _running.discard(proc)
        return proc.returncode

    def log_text(self) -> str:
        """Everything the process wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def log_tail(self, lines: int = 60) -> str:
        """The end of the log, for failure messages."""
        return "\n".join(self.log_text().splitlines()[-lines:])


def internal_metrics_overlay(workdir: Path) -> Path:
    """A second config file that moves a Collector's own metrics endpoint (default localhost:8888).

    Every Collector and Jaeger process serves its internal telemetry there; in compose each container
    has its own, on one test machine they would collide. The Collector merges ``--config`` files.
    """
    overlay = workdir / "internal-telemetry.yaml"
    reader = {"pull": {"exporter": {"prometheus": {"host": "127.0.0.1", "port": free_port()}}}}
    overlay.write_text(yaml.safe_dump({"service": {"telemetry": {"metrics": {"readers": [reader]}}}}))
    return overlay


def _healthy(url: str) -> Callable[[], bool]:
    return lambda: get(url, timeout=2)[0] == 200


def deprecation_lines(text: str) -> list[str]:
    """Lines of a Collector/Jaeger log that warn about something deprecated."""
    return [line for line in text.splitlines() if "deprecat" in line.lower()]


# --- the parts -----------------------------------------------------------------------------------------


def validate(binary: Path, config: Path) -> subprocess.CompletedProcess[str]:
    """``<binary> validate --config <config>``: the Collector's own check of a config file."""
    return subprocess.run(
        [str(binary), "validate", f"--config={config}"], capture_output=True, text=True, timeout=120, check=False
    )


class Jaeger:
    """Jaeger v2 with ``collector/jaeger.yaml`` (badger storage in ``data_dir``) on loopback ports."""

    def __init__(self, workdir: Path, data_dir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.otlp_grpc_port = free_port()
        self.query_port = free_port()
        self.health_port = free_port()
        self.config = relocated(
            JAEGER_CONFIG,
            {
                "0.0.0.0:13133": f"127.0.0.1:{self.health_port}",
                "0.0.0.0:16686": f"127.0.0.1:{self.query_port}",
                "0.0.0.0:16685": f"127.0.0.1:{free_port()}",
                "0.0.0.0:4317": f"127.0.0.1:{self.otlp_grpc_port}",
                "0.0.0.0:4318": f"127.0.0.1:{free_port()}",
                "/tmp/jaeger/keys": str(data_dir / "keys"),
                "/tmp/jaeger/values": str(data_dir / "values"),
            },
            workdir / "jaeger.yaml",
        )
        self.process = Process(
            "jaeger",
            [str(binary("jaeger")), f"--config={self.config}", f"--config={internal_metrics_overlay(workdir)}"],
            workdir / "jaeger.log",
            _healthy(f"http://127.0.0.1:{self.health_port}/status"),
        )

    @property
    def query_url(self) -> str:
        """Base URL of the query API (what Grafana's Jaeger datasource points at)."""
        return f"http://127.0.0.1:{self.query_port}"

    def start(self) -> Jaeger:
        """Start and wait for its health check."""
        self.process.start()
        return self

    def stop(self) -> int | None:
        """Stop it (SIGTERM): badger closes its files."""
        return self.process.stop()

    def trace_v3(self, trace_id: str) -> list[dict[str, Any]]:
        """The spans of a trace from ``/api/v3/traces/{id}`` (OTLP JSON), each with its resource.

        Returns [] while Jaeger does not know the trace.
        """
        status, body = get(f"{self.query_url}/api/v3/traces/{trace_id}")
        if status == 404:
            return []
        if status != 200:
            raise AssertionError(f"/api/v3/traces/{trace_id} answered {status}: {body[:300]!r}")
        spans: list[dict[str, Any]] = []
        for chunk in _json_stream(body):
            result = chunk.get("result", chunk)
            for resource_spans in result.get("resourceSpans", []):
                resource = {a["key"]: a["value"] for a in resource_spans.get("resource", {}).get("attributes", [])}
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        spans.append({**span, "resource": resource})
        return spans

    def find(self, service: str, tags: Mapping[str, str], *, limit: int = 20) -> list[dict[str, Any]]:
        """Traces found by tags through ``/api/traces`` (the search Jaeger's UI and Grafana use)."""
        query = urllib.parse.urlencode({"service": service, "tags": json.dumps(dict(tags)), "limit": str(limit)})
        return list(get_json(f"{self.query_url}/api/traces?{query}").get("data") or [])

    def services(self) -> list[str]:
        """Services Jaeger has spans of."""
        return list(get_json(f"{self.query_url}/api/services").get("data") or [])


def _json_stream(body: bytes) -> Iterable[dict[str, Any]]:
    """Documents of a response that is one JSON document or several concatenated (a gRPC-gateway stream)."""
    decoder = json.JSONDecoder()
    text = body.decode()
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return
        doc, at = decoder.raw_decode(text, at)
        yield doc


class LokiDoor(OTLPReceiver):
    """A real OTLP/HTTP receiver at Loki's OTLP path (``/otlp/v1/logs``): what the Collector delivers to Loki."""

    def __init__(self) -> None:
        super().__init__(path_prefix="/otlp")


class Collector:
    """The Collector with one of the repo's configs, its addresses, ports and directories replaced."""

    def __init__(
        self, config: Path, workdir: Path, replacements: Mapping[str, str], *, name: str = "collector"
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.health_port = free_port()
        self.config = relocated(
            config, {"0.0.0.0:13133": f"127.0.0.1:{self.health_port}", **replacements}, workdir / config.name
        )
        leftover = [v for v in _strings(yaml.safe_load(self.config.read_text())) if _COMPOSE_ADDRESS.search(v)]
        assert not leftover, f"{config.name}: addresses left unrelocated: {leftover}"
        self.process = Process(
            name,
            [str(binary("otelcol")), f"--config={self.config}", f"--config={internal_metrics_overlay(workdir)}"],
            workdir / f"{name}.log",
            _healthy(f"http://127.0.0.1:{self.health_port}/"),
        )

    def start(self) -> Collector:
        """Start and wait for its health check."""
        self.process.start()
        return self

    def stop(self) -> int | None:
        """Stop it (SIGTERM: it drains what it holds)."""
        return self.process.stop()


_COMPOSE_ADDRESS = re.compile(r"0\.0\.0\.0|\b(?:jaeger|loki|collector|prometheus):\d")


def _strings(doc: Any) -> Iterable[str]:
    """Every string value of a parsed YAML document."""
    if isinstance(doc, str):
        yield doc
    elif isinstance(doc, dict):
        for value in doc.values():
            yield from _strings(value)
    elif isinstance(doc, list):
        for value in doc:
            yield from _strings(value)


class Prometheus:
    """Prometheus with ``collector/prometheus.yml`` and the command-line flags of docker-compose.yml."""

    def __init__(self, workdir: Path, collector_metrics: str, *, scrape_interval: str = "1s") -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = relocated(
            PROMETHEUS_CONFIG,
            {
                "collector:8889": collector_metrics,
                # The one change that is not an address: scraping every second instead of every 15 s
                # keeps the test short; names and labels do not depend on it.
                "scrape_interval: 15s": f"scrape_interval: {scrape_interval}",
            },
            workdir / "prometheus.yml",
        )
        argv = [str(binary("prometheus"))]
        for flag in compose_service("prometheus")["command"]:
            if flag.startswith("--config.file="):
                flag = f"--config.file={self.config}"
            elif flag.startswith("--storage.tsdb.path="):
                flag = f"--storage.tsdb.path={workdir / 'data'}"
            argv.append(flag)
        argv.append(f"--web.listen-address=127.0.0.1:{self.port}")
        self.process = Process("prometheus", argv, workdir / "prometheus.log", _healthy(f"{self.url}/-/ready"))

    @property
    def url(self) -> str:
        """Base URL of the HTTP API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Prometheus:
        """Start and wait for /-/ready."""
        self.process.start()
        return self

    def stop(self) -> int | None:
        """Stop it."""
        return self.process.stop()

    def exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """Exemplars of the series ``expr`` selects between ``start`` and ``end`` (/api/v1/query_exemplars)."""
        params = {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}"}
        doc = get_json(f"{self.url}/api/v1/query_exemplars?{urllib.parse.urlencode(params)}")
        assert doc.get("status") == "success", doc
        return list(doc["data"])

    def scraped_once(self) -> bool:
        """True once Prometheus has scraped its target successfully (``up`` is 1)."""
        up = self.query("up")
        return bool(up) and up[0]["value"][1] == "1"

    def query(self, expr: str, *, at: float | None = None) -> list[dict[str, Any]]:
        """An instant PromQL query: the result vector (fails on a query error)."""
        params = {"query": expr}
        if at is not None:
            params["time"] = f"{at:.3f}"
        doc = get_json(f"{self.url}/api/v1/query?{urllib.parse.urlencode(params)}")
        assert doc.get("status") == "success", doc
        return list(doc["data"]["result"])


@cache
def compose_doc() -> dict[str, Any]:
    """docker-compose.yml, parsed."""
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def compose_service(name: str) -> dict[str, Any]:
    """One service of docker-compose.yml."""
    service = compose_doc()["services"][name]
    assert isinstance(service, dict)
    return service


# --- the whole stack, and flows run against it ---------------------------------------------------------

MAIN_SERVICE = "etl"


@dataclass
class Stack:
    """Jaeger behind the main Collector, and the door the Collector's logs go to."""

    jaeger: Jaeger
    collector: Collector
    loki: LokiDoor
    http_endpoint: str
    grpc_endpoint: str
    workdir: Path


def start_main_collector(workdir: Path, jaeger: Jaeger, loki: LokiDoor, **extra: str) -> tuple[Collector, str, str]:
    """The main Collector in front of ``jaeger`` and ``loki``: (collector, OTLP/HTTP URL, OTLP/gRPC URL)."""
    http_port, grpc_port = free_port(), free_port()
    collector = Collector(
        MAIN_CONFIG,
        workdir,
        {
            "0.0.0.0:4317": f"127.0.0.1:{grpc_port}",
            "0.0.0.0:4318": f"127.0.0.1:{http_port}",
            "0.0.0.0:8889": f"127.0.0.1:{free_port()}",
            "jaeger:4317": f"127.0.0.1:{jaeger.otlp_grpc_port}",
            "http://loki:3100/otlp": loki.endpoint,
            "/var/lib/otelcol/queue": str(workdir / "queue"),
            **extra,
        },
    ).start()
    return collector, f"http://127.0.0.1:{http_port}", f"http://127.0.0.1:{grpc_port}"


@contextmanager
def open_stack(workdir: Path) -> Iterator[Stack]:
    """Jaeger, Loki's door and the main Collector in front of them, stopped on exit."""
    jaeger = Jaeger(workdir / "jaeger", workdir / "badger").start()
    loki = LokiDoor().start()
    collector, http_endpoint, grpc_endpoint = start_main_collector(workdir / "collector", jaeger, loki)
    try:
        yield Stack(jaeger, collector, loki, http_endpoint, grpc_endpoint, workdir)
    finally:
        collector.stop()
        loki.stop()
        jaeger.stop()


def _flow_env(**extra: str) -> dict[str, str]:
    from conftest import subprocess_env  # the suite's child-process environment (no inherited OTEL_*)

    return subprocess_env(**extra)


def run_flow(
    workdir: Path, scenario: str, *, endpoint: str | None, protocol: str = "http/protobuf", arg: str = "",
    home: Path | None = None, service: str = MAIN_SERVICE,
) -> dict[str, Any]:
    """Run a scenario of stack_flows.py in a fresh process; return its record (spans and export stats)."""
    record = workdir / f"record-{scenario}-{protocol.replace('/', '-')}-{free_port()}.json"
    extra = {
        "OTEL_SERVICE_NAME": service,
        "OTELFLOW_HOME": str(home or workdir / "home"),
        "OTELFLOW_LOGGING_TO_CONSOLE": "false",
    }
    if endpoint is not None:
        extra |= {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": protocol}
    done = subprocess.run(
        [sys.executable, str(TESTS_DIR / "stack_flows.py"), scenario, str(record), arg],
        env=_flow_env(**extra), capture_output=True, text=True, timeout=600, check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(record.read_text())
    return result


def exported_everything(record: dict[str, Any]) -> None:
    """The process itself says every span and log record left it (nothing dropped, nothing left)."""
    assert record["flushed"] is True, record["stats"]
    for item in record["stats"]:
        assert item["dropped"] == 0 and item["unaccounted"] == 0 and item["queued"] == item["exported"], item


def only_trace(record: dict[str, Any]) -> str:
    trace_ids = {span["trace_id"] for span in record["spans"]}
    assert len(trace_ids) == 1, trace_ids
    return trace_ids.pop()


def flow_run_id(record: dict[str, Any]) -> str:
    roots = [s for s in record["spans"] if s["attributes"].get(semconv.RUN_TYPE) == semconv.RUN_TYPE_FLOW]
    assert roots, "no flow run span"
    return str(roots[0]["attributes"][semconv.FLOW_RUN_ID])

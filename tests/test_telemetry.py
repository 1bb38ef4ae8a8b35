"""Telemetry setup, end to end: real OTLP over loopback, the spool default, OTEL_* variables, a dead collector.

Each scenario runs in a fresh Python process (global OTel providers can be set once per process), exporting
to a real receiver the test started (decoded with opentelemetry-proto).
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import textwrap
import time
from pathlib import Path

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from google.protobuf import json_format
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from otlp_receiver import MAX_GRPC_MESSAGE_BYTES, OTLPGrpcReceiver, OTLPReceiver

from otelflow import semconv as sc

PIPELINE = textwrap.dedent(
    """
    import sys
    from otelflow import flow, task, tags, get_run_logger
    from otelflow.utilities.annotations import unmapped

    @task(retries=2, retry_delay_seconds=0.01)
    def process_item(item, config, multiplier):
        get_run_logger().info("item %s", item)
        return item * config["factor"] * multiplier

    @flow
    def pipeline(n: int = 3):
        with tags("critical", "production"):
            futures = process_item.map(list(range(1, n + 1)), unmapped({"factor": 10}), unmapped(2))
        return [f.result() for f in futures]

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    print(sum(pipeline(n)))
    """
)


def final(spans: list) -> list:  # type: ignore[type-arg]
    """Received spans without the pending records long runs export when they start."""
    return [s for s in spans if not s.attributes.get(sc.SPAN_PENDING)]


def run_script(code: str, *args: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-c", code, *args], env=subprocess_env(**env), capture_output=True, text=True, timeout=timeout,
        cwd=REPO_ROOT,
    )


def check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_otlp_http_export_with_resource_from_env(otlp_receiver, tmp_path):  # type: ignore[no-untyped-def]
    proc = check(run_script(
        PIPELINE,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint,
        OTEL_SERVICE_NAME="etl-test",
        OTEL_RESOURCE_ATTRIBUTES="deployment.environment=ci,team=data",
        OTEL_METRIC_EXPORT_INTERVAL="60000",
        OTELFLOW_HOME=str(tmp_path),
    ))
    assert proc.stdout.strip() == "120"
    spans = otlp_receiver.wait_for(lambda: len(final(otlp_receiver.spans())) == 4 and final(otlp_receiver.spans()))
    (flow_span,) = [s for s in spans if s.name == "flow pipeline"]
    tasks = [s for s in spans if s.name == "task process_item"]
    assert len(tasks) == 3
    assert {s.trace_id for s in spans} == {flow_span.trace_id}
    assert {s.parent_span_id for s in tasks} == {flow_span.span_id}
    assert flow_span.parent_span_id == ""
    for span in spans:
        assert span.resource["service.name"] == "etl-test"
        assert span.resource["deployment.environment"] == "ci"
        assert span.resource["team"] == "data"
        assert span.scope_name == "otelflow"
    assert sorted(s.attributes[sc.TASK_MAP_INDEX] for s in tasks) == [0, 1, 2]
    assert all(s.attributes[sc.TAGS] == ["critical", "production"] for s in tasks)
    assert flow_span.attributes[sc.RUN_STATE] == "Completed"

    # otelflow records no metrics in-process: the Collector derives run metrics from these spans (spanmetrics).
    assert otlp_receiver.metric_requests == []
    # Nothing went to the spool when an endpoint is configured.
    assert not list((tmp_path / "spool").glob("*.jsonl"))


def test_otlp_grpc_when_asked(otlp_grpc_receiver, tmp_path):  # type: ignore[no-untyped-def]
    check(run_script(
        PIPELINE, "2",
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp_grpc_receiver.endpoint,
        OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
        OTEL_EXPORTER_OTLP_INSECURE="true",
        OTEL_SERVICE_NAME="grpc-test",
        OTELFLOW_HOME=str(tmp_path),
    ))
    spans = otlp_grpc_receiver.wait_for(
        lambda: len(final(otlp_grpc_receiver.spans())) == 3 and otlp_grpc_receiver.spans())
    assert {s.resource["service.name"] for s in spans} == {"grpc-test"}


def test_collector_errors_are_retried_without_loss(otlp_receiver, tmp_path):  # type: ignore[no-untyped-def]
    otlp_receiver.fail_next(2, status=503)
    check(run_script(PIPELINE, "5", OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint, OTELFLOW_HOME=str(tmp_path),
                     OTEL_METRICS_EXPORTER="none"))
    spans = otlp_receiver.wait_for(lambda: len(final(otlp_receiver.spans())) == 6 and final(otlp_receiver.spans()))
    assert len({s.span_id for s in spans}) == 6


def _closed_port(containing: str = "") -> int:
    """A loopback port nothing listens on (one whose number contains ``containing``, when given)."""
    candidates = [0] if not containing else [p for p in range(1024, 65536) if containing in str(p)]
    for candidate in candidates:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise AssertionError(f"no free port containing {containing!r}")


# "413": was, a dead collector on a port such as 41347 read as "message too large" (the port is in the
# exporter's "Connection refused" message), so batches were halved and single spans dropped as unsendable.
@pytest.mark.parametrize("port_digits", ["", "413"])
def test_dead_collector_never_hangs_the_script_and_keeps_telemetry_on_disk(tmp_path, port_digits):  # type: ignore[no-untyped-def]
    port = _closed_port(port_digits)
    started = time.monotonic()
    proc = check(run_script(
        PIPELINE, "50",
        OTEL_EXPORTER_OTLP_ENDPOINT=f"http://127.0.0.1:{port}",
        OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS="2",
        OTELFLOW_HOME=str(tmp_path),
        timeout=60,
    ))
    assert time.monotonic() - started < 15  # interpreter start + imports + the 2 s bound, on a busy machine
    assert proc.stdout.strip() == str(sum(i * 20 for i in range(1, 51)))
    report = [line for line in proc.stderr.splitlines() if line.startswith("otelflow: traces:") and "kept" in line]
    assert len(report) == 1, proc.stderr
    assert "52 item(s) kept on disk" in report[0]  # 51 spans and the flow's pending record
    assert str(tmp_path / "buffer") in report[0]
    assert "connection refused" in report[0]
    assert "dropped" not in report[0]
    assert sorted((tmp_path / "buffer").glob("traces-*.jsonl"))


def _spool_files(home: Path, signal: str) -> list[Path]:
    return sorted((home / "spool").glob(f"{signal}-*.jsonl"))


def _hex_ids_to_base64(node: object) -> object:
    """OTLP/JSON uses hex ids; protobuf's JSON parser expects base64 for bytes. Convert to validate the rest."""
    if isinstance(node, dict):
        return {
            k: base64.b64encode(bytes.fromhex(v)).decode() if k in {"traceId", "spanId", "parentSpanId"}
            else _hex_ids_to_base64(v)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [_hex_ids_to_base64(v) for v in node]
    return node


def test_embedded_default_writes_otlp_json_lines_and_cli_reads_them(tmp_path):  # type: ignore[no-untyped-def]
    check(run_script(PIPELINE, OTELFLOW_HOME=str(tmp_path)))
    (trace_file,) = _spool_files(tmp_path, "traces")
    lines = trace_file.read_text().splitlines()
    assert lines
    span_count = 0
    for line in lines:
        # Every line is a valid ExportTraceServiceRequest in the OTLP/JSON mapping (unknown fields would raise).
        raw = json.loads(line)
        request = json_format.Parse(json.dumps(_hex_ids_to_base64(raw)), ExportTraceServiceRequest())
        for rs in request.resource_spans:
            for ss in rs.scope_spans:
                span_count += len(ss.spans)
        for rs in raw["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
                    assert len(span["spanId"]) == 16
    assert span_count == 5  # 4 runs and the flow's pending record
    for log_file in _spool_files(tmp_path, "logs"):
        for line in log_file.read_text().splitlines():
            json_format.Parse(json.dumps(_hex_ids_to_base64(json.loads(line))), ExportLogsServiceRequest())

    runs = check(subprocess.run([PYTHON, "-m", "otelflow", "runs", "--json"], env=subprocess_env(
        OTELFLOW_HOME=str(tmp_path)), capture_output=True, text=True, timeout=60))
    (run,) = [json.loads(line) for line in runs.stdout.splitlines()]
    assert run["flow"] == "pipeline" and run["state"] == "Completed"
    shown = check(subprocess.run([PYTHON, "-m", "otelflow", "show", run["flow_run_id"], "--expand"], env=subprocess_env(
        OTELFLOW_HOME=str(tmp_path)), capture_output=True, text=True, timeout=60)).stdout
    assert f"trace {run['trace_id']}" in shown
    assert shown.count("task process_item") == 3
    assert "[map 2]" in shown and "tags=critical,production" in shown
    missing = subprocess.run([PYTHON, "-m", "otelflow", "show", "no-such-run"], env=subprocess_env(
        OTELFLOW_HOME=str(tmp_path)), capture_output=True, text=True, timeout=60)
    assert missing.returncode == 1 and "otelflow runs" in missing.stderr


def test_application_providers_are_used_and_nothing_replaced(tmp_path):  # type: ignore[no-untyped-def]
    code = textwrap.dedent(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(provider)

        from otelflow import flow, task

        @task
        def t():
            return 1

        @flow
        def f():
            with trace.get_tracer("app").start_as_current_span("app span"):
                return t()

        f()
        assert trace.get_tracer_provider() is provider
        print(json.dumps(sorted(s.name for s in exporter.get_finished_spans()
                                if not s.attributes.get("otelflow.span.pending"))))
        """
    )
    proc = check(run_script(code, OTELFLOW_HOME=str(tmp_path)))
    assert json.loads(proc.stdout) == ["app span", "flow f", "task t"]
    assert not _spool_files(tmp_path, "traces")


def test_sdk_disabled_runs_flows_without_telemetry(tmp_path):  # type: ignore[no-untyped-def]
    proc = check(run_script(PIPELINE, OTEL_SDK_DISABLED="true", OTELFLOW_HOME=str(tmp_path)))
    assert proc.stdout.strip() == "120"
    assert not (tmp_path / "spool").exists()


def test_sampler_and_attribute_limits_come_from_env(tmp_path, otlp_receiver):  # type: ignore[no-untyped-def]
    check(run_script(PIPELINE, OTEL_TRACES_SAMPLER="always_off", OTELFLOW_HOME=str(tmp_path)))
    assert not _spool_files(tmp_path, "traces")

    check(run_script(PIPELINE, OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT="5", OTELFLOW_HOME=str(tmp_path),
                     OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint, OTEL_METRICS_EXPORTER="none"))
    spans = otlp_receiver.wait_for(lambda: len(final(otlp_receiver.spans())) == 4 and final(otlp_receiver.spans()))
    assert all(len(s.attributes[sc.RUN_NAME]) <= 5 for s in spans)


@pytest.mark.parametrize("signal", ["traces", "logs"])
def test_exporter_none_turns_a_signal_off(tmp_path, signal):  # type: ignore[no-untyped-def]
    check(run_script(PIPELINE, OTELFLOW_HOME=str(tmp_path), **{f"OTEL_{signal.upper()}_EXPORTER": "none"}))
    assert not _spool_files(tmp_path, signal)
    other = "logs" if signal == "traces" else "traces"
    assert _spool_files(tmp_path, other)


def test_an_application_processor_that_raises_never_breaks_the_run(tmp_path):  # type: ignore[no-untyped-def]
    code = textwrap.dedent(
        """
        import json
        from opentelemetry import trace
        from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        class Broken(SpanProcessor):
            def on_start(self, span, parent_context=None):
                raise RuntimeError("on_start bug")

            def on_end(self, span):
                raise ValueError("on_end bug")

        exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(Broken())
        provider.add_span_processor(SimpleSpanProcessor(exporter))  # added after the bad one
        trace.set_tracer_provider(provider)

        from otelflow import flow, task, telemetry

        @task
        def double(x):
            return 2 * x

        @flow
        def f():
            return sum(double(i) for i in range(3))

        state = f(return_state=True)
        errors = {(e["method"], e["errors"]) for e in telemetry.processor_errors()}
        print(json.dumps({"result": state.result(), "state": state.name, "errors": sorted(errors),
                          "spans": sorted(s.name for s in exporter.get_finished_spans()
                                          if not s.attributes.get("otelflow.span.pending"))}))
        """
    )
    proc = check(run_script(code, OTELFLOW_HOME=str(tmp_path)))
    out = json.loads(proc.stdout)
    assert out["result"] == 6 and out["state"] == "Completed"
    assert out["spans"] == ["flow f", "task double", "task double", "task double"]
    assert out["errors"] == [["on_end", 5], ["on_start", 5]]  # 4 runs and the flow's pending record
    # Reported once per processor and method, on stderr.
    assert proc.stderr.count("raised in on_start (RuntimeError: on_start bug)") == 1, proc.stderr
    assert proc.stderr.count("raised in on_end (ValueError: on_end bug)") == 1, proc.stderr


def test_a_raising_log_processor_never_breaks_the_run(tmp_path):  # type: ignore[no-untyped-def]
    code = textwrap.dedent(
        """
        from opentelemetry import _logs
        from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor

        class Broken(LogRecordProcessor):
            def on_emit(self, record):
                raise ValueError("log bug")
            def shutdown(self):
                pass
            def force_flush(self, timeout_millis=30000):
                return True

        provider = LoggerProvider()
        provider.add_log_record_processor(Broken())
        _logs.set_logger_provider(provider)

        from otelflow import flow, get_run_logger

        @flow
        def f():
            get_run_logger().info("hello")
            return 1

        print(f())
        """
    )
    proc = check(run_script(code, OTELFLOW_HOME=str(tmp_path)))
    assert proc.stdout.strip() == "1"
    assert proc.stderr.count("raised in on_emit (ValueError: log bug)") == 1, proc.stderr


def test_a_concurrent_multi_processor_is_protected_too():  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otelflow import flow, telemetry

    class Broken(SpanProcessor):
        def on_end(self, span):  # type: ignore[no-untyped-def]
            raise KeyError("concurrent bug")

    exporter = InMemorySpanExporter()
    provider = TracerProvider(active_span_processor=ConcurrentMultiSpanProcessor(2), shutdown_on_exit=False)
    provider.add_span_processor(Broken())
    provider.add_span_processor(SimpleSpanProcessor(exporter))

    @flow
    def f() -> int:
        return 42

    with telemetry.use_providers(provider):
        assert f() == 42
    assert "flow f" in {s.name for s in exporter.get_finished_spans()}
    assert any(e["method"] == "on_end" and "concurrent bug" in e["first_error"] for e in telemetry.processor_errors())


def test_protected_multi_processors_report_a_raising_shutdown_or_flush(monkeypatch):  # type: ignore[no-untyped-def]
    from opentelemetry.sdk._logs import LoggerProvider, LogRecordProcessor
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

    from otelflow import telemetry
    from otelflow._internal.export import protection

    monkeypatch.setattr(protection, "_processor_errors", {})  # this test's errors stay out of the others' counts

    class BrokenSpans(SpanProcessor):
        def shutdown(self) -> None:
            raise RuntimeError("span shutdown bug")

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            raise RuntimeError("span flush bug")

    class BrokenLogs(LogRecordProcessor):
        def on_emit(self, log_record):  # type: ignore[no-untyped-def]
            pass

        def shutdown(self) -> None:
            raise RuntimeError("log shutdown bug")

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            raise RuntimeError("log flush bug")

    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BrokenSpans())
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BrokenLogs())
    for provider in (tracer_provider, logger_provider):
        protection.protect(provider)
        assert provider.force_flush(1000) is False  # reported, not raised
        provider.shutdown()
    errors = {(e["processor"].rsplit(".", 1)[-1], e["method"]) for e in telemetry.processor_errors()}
    assert {("BrokenSpans", "shutdown"), ("BrokenLogs", "shutdown")} <= errors
    assert {("SafeMultiSpanProcessor", "force_flush"), ("SafeMultiLogRecordProcessor", "force_flush")} <= errors


SET_UP_BEFORE_THE_RUN = textwrap.dedent(
    """
    import json, sys, time
    from otelflow import flow, task, telemetry
    from otelflow.context import FlowRunContext, TaskRunContext
    from otelflow.logging import configuration

    finished = {}

    def stamped(module, name):  # note when a one-time set-up step has finished
        original = getattr(module, name)

        def wrapper(*args, **kwargs):
            try:
                return original(*args, **kwargs)
            finally:
                finished.setdefault(name, time.time_ns())

        setattr(module, name, wrapper)

    stamped(telemetry, "configure")
    stamped(configuration, "setup_logging")

    @task
    def step():
        return TaskRunContext.get().span.start_time

    @flow
    def pipeline():
        return FlowRunContext.get().span.start_time

    start = pipeline() if sys.argv[1] == "flow" else step()
    print(json.dumps({"span_start": start, **finished}))
    """
)


@pytest.mark.parametrize("first_run", ["flow", "task"])
def test_a_process_first_run_span_starts_after_otelflow_set_up(tmp_path, first_run):  # type: ignore[no-untyped-def]
    """Was: a process's first flow run spent ~70 ms of its span configuring telemetry and logging (a script runs
    one flow: every flow run's duration included it). The span starts once set-up has finished."""
    out = json.loads(check(run_script(SET_UP_BEFORE_THE_RUN, first_run, OTELFLOW_HOME=str(tmp_path))).stdout)
    assert out["span_start"] >= out["configure"], out
    if first_run == "flow":  # the flow run logs "Beginning flow run": logging is set up before it starts
        assert out["span_start"] >= out["setup_logging"], out


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_the_otlp_stage_names_the_real_cause_from_the_transport(protocol: str) -> None:
    """Causes come from the transport's exception or status, one request per export (no log text, no retries)."""
    from opentelemetry.sdk.trace import TracerProvider

    from otelflow._internal.export.otlp import OtlpSender
    from otelflow._internal.export.pipeline import ExportError

    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        pass
    grpc = protocol == "grpc"
    path = "" if grpc else "/v1/traces"
    refused = OtlpSender("traces", protocol, endpoint=f"http://127.0.0.1:{_closed_port()}{path}", timeout=5)
    with pytest.raises(ExportError) as failed:
        refused.export([span])
    assert failed.value.cause == "connection refused" and not failed.value.too_large
    refused.shutdown()

    with (OTLPGrpcReceiver() if grpc else OTLPReceiver()) as receiver:
        sender = OtlpSender("traces", protocol, endpoint=receiver.endpoint + path, timeout=5, headers={"x-tenant": "a"})
        assert sender.export([span]) is True
        if grpc:  # a real gRPC size limit (the receiver's, like the Collector's 4 MiB default)
            with TracerProvider().get_tracer("t").start_as_current_span("big") as big:
                big.set_attribute("blob", "b" * (MAX_GRPC_MESSAGE_BYTES + 1024))
            with pytest.raises(ExportError) as too_large:
                sender.export([big])
        else:
            receiver.fail_next(1, status=413)
            with pytest.raises(ExportError) as too_large:
                sender.export([span])
        receiver.fail_next(1, status=503)
        with pytest.raises(ExportError) as unavailable:
            sender.export([span])
        assert receiver.attempts == (2 if grpc else 3)  # one request per export (the too-large one never arrives)
        sender.shutdown()
    assert too_large.value.too_large
    assert not unavailable.value.too_large and unavailable.value.cause != "exporter reported failure"

    with socket.socket() as silent:  # accepts the connection, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        stalled = OtlpSender("traces", protocol, endpoint=f"http://127.0.0.1:{port}{path}", timeout=0.5)
        with pytest.raises(ExportError) as timed_out:
            stalled.export([span])
        stalled.shutdown()
    assert timed_out.value.cause in {"collector did not answer in time", "collector unavailable"}


def test_the_reachability_check_connects_to_the_endpoint(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from collections.abc import Callable

    from otelflow._internal.export.otlp import OtlpSender

    def _reachability_check(signal: str, protocol: str) -> Callable[[], str | None] | None:
        return OtlpSender(signal, "grpc" if protocol == "grpc" else "http").reachability_check()

    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "GRPC_PROXY", "https_proxy", "http_proxy", "all_proxy",
                 "grpc_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
        check = _reachability_check("traces", "http/protobuf")
        assert check is not None and check() is None
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{_closed_port()}/v1/traces")
        signal_specific = _reachability_check("traces", "http/protobuf")
        assert signal_specific is not None and signal_specific() == "connection refused"
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"127.0.0.1:{port}")  # gRPC style, no scheme
        grpc = _reachability_check("traces", "grpc")
        assert grpc is not None and grpc() is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "unix:///run/otel.sock")
    assert _reachability_check("traces", "grpc") is None  # a TCP connect would not tell
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    assert _reachability_check("traces", "http/protobuf") is None  # the proxy, not the collector, would answer


def test_what_a_collector_says_in_a_failure_reaches_stderr_as_text() -> None:
    """A reason phrase is the server's text: its escape sequences are shown, never sent to the terminal."""
    import http.server
    import threading

    from opentelemetry.sdk.trace import TracerProvider

    from otelflow._internal.export.otlp import OtlpSender
    from otelflow._internal.export.pipeline import ExportError

    class Hostile(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(503, "Busy\x1b]0;pwned\x07\x1b[2J")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Hostile)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
            pass
        sender = OtlpSender("traces", "http", endpoint=f"http://127.0.0.1:{server.server_port}/v1/traces", timeout=5)
        with pytest.raises(ExportError) as failed:
            sender.export([span])
        sender.shutdown()
    finally:
        server.shutdown()
    assert "\x1b" not in failed.value.cause and "\x07" not in failed.value.cause
    assert failed.value.cause.startswith("collector answered HTTP 503 Busy\\x1b]0;pwned\\x07")

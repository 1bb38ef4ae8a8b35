"""Telemetry setup: the tracer, logger and meter providers otelflow emits through.

Rules, in order:

1. ``OTEL_SDK_DISABLED=true``: nothing is built; runs still run, spans are no-ops.
2. If the application already set global OTel providers, otelflow uses them and replaces nothing.
3. Otherwise otelflow builds SDK providers from the standard ``OTEL_*`` variables (``OTEL_SERVICE_NAME``,
   ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
   ``OTEL_EXPORTER_OTLP_*``, ``OTEL_{TRACES,LOGS,METRICS}_EXPORTER``...) and sets them as the globals,
   so the user's own OTel instrumentation lands in the same traces.
   - an OTLP endpoint configured (or ``OTEL_*_EXPORTER=otlp``): OTLP, over HTTP/protobuf by default,
     gRPC with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``; run metrics are exported too;
   - no endpoint: the embedded default, OTLP-JSON lines in ``$OTELFLOW_HOME/spool`` (read by
     ``otelflow show`` and by the Collector's ``otlpjsonfile`` receiver); no metrics (zero cost).

Exporters are imported only when chosen. Export never blocks a run for long (see
:mod:`otelflow._internal.batching`), and the flush at exit is bounded by
``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``; anything not exported is counted and reported on stderr.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from otelflow import semconv

__all__ = [
    "RunInstruments",
    "configure",
    "describe",
    "flush",
    "get_logger_provider",
    "get_tracer",
    "run_instruments",
    "shutdown",
    "use_providers",
]

_VERSION = "0.1.0"
_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
                     300.0, 600.0, 1800.0, 3600.0)


@dataclass(slots=True)
class RunInstruments:
    """The run metrics: duration histogram (seconds) and finished-run counter."""

    duration: Any
    runs: Any


@dataclass
class _State:
    tracer: trace.Tracer
    logger_provider: Any = None  # opentelemetry._logs.LoggerProvider or None (no run logs exported)
    instruments: RunInstruments | None = None
    processors: list[Any] = field(default_factory=list)  # our BatchProcessors, for flush/stats
    owned: list[Any] = field(default_factory=list)  # providers we built (we shut them down)
    description: str = ""


_state: _State | None = None
_lock = threading.RLock()
_overrides: list[_State] = []


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _sdk_disabled() -> bool:
    return _env("OTEL_SDK_DISABLED").lower() == "true"


def _exporter_kind(signal: str) -> str:
    """``otlp``, ``console``, ``none`` or ``spool`` for ``traces``/``logs``/``metrics``."""
    explicit = _env(f"OTEL_{signal.upper()}_EXPORTER").lower().split(",")[0].strip()
    if explicit in {"otlp", "console", "none"}:
        return explicit
    if _env("OTEL_EXPORTER_OTLP_ENDPOINT") or _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT"):
        return "otlp"
    return "spool"


def _protocol(signal: str) -> str:
    return (
        _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).lower()


def _int_env(name: str, default: int) -> int:
    try:
        return int(_env(name)) if _env(name) else default
    except ValueError:
        return default


def _resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        # No OTEL_SERVICE_NAME: "otelflow" is more useful in Jaeger/Loki than "unknown_service".
        resource = resource.merge(Resource({SERVICE_NAME: "otelflow"}))
    return resource


class _UrandomIdGenerator:
    """Trace/span ids from ``os.urandom``.

    The SDK's default draws from the ``random`` module, so a script that calls ``random.seed(7)`` (common in
    data pipelines) would emit the same trace ids on every run and merge unrelated runs in Jaeger.
    """

    def generate_span_id(self) -> int:
        return int.from_bytes(os.urandom(8)) or 1

    def generate_trace_id(self) -> int:
        return int.from_bytes(os.urandom(16)) or 1

    def is_trace_id_random(self) -> bool:
        return True


def _batch(export: Any, shutdown_exporter: Any, signal: str, env_prefix: str) -> Any:
    from otelflow._internal.batching import BatchProcessor

    return BatchProcessor(
        export,
        shutdown_exporter,
        signal=signal,
        max_queue_size=_int_env(f"OTEL_{env_prefix}_MAX_QUEUE_SIZE", 8192),
        max_export_batch_size=_int_env(f"OTEL_{env_prefix}_MAX_EXPORT_BATCH_SIZE", 512),
        schedule_delay_seconds=_int_env(f"OTEL_{env_prefix}_SCHEDULE_DELAY", 1000) / 1000,
    )


# Exporter classes per signal, as "module:Class", imported only when chosen (exporters are slow to import).
_EXPORTERS: dict[str, dict[str, str]] = {
    "traces": {
        "console": "opentelemetry.sdk.trace.export:ConsoleSpanExporter",
        "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter:OTLPSpanExporter",
        "http": "opentelemetry.exporter.otlp.proto.http.trace_exporter:OTLPSpanExporter",
        "encoder": "encode_spans",
    },
    "logs": {
        "console": "opentelemetry.sdk._logs.export:ConsoleLogRecordExporter",
        "grpc": "opentelemetry.exporter.otlp.proto.grpc._log_exporter:OTLPLogExporter",
        "http": "opentelemetry.exporter.otlp.proto.http._log_exporter:OTLPLogExporter",
        "encoder": "encode_logs",
    },
}


def _exporter(signal: str, kind: str) -> tuple[Any, Any, str]:
    """``(export(batch) -> bool, shutdown(), description)`` for ``traces`` or ``logs``."""
    import importlib

    table = _EXPORTERS[signal]
    if kind == "spool":
        from otelflow._internal import spool
        from otelflow.settings import get_settings

        writer = spool.SpoolWriter(get_settings().spool_dir, signal)
        encode = getattr(spool, table["encoder"])

        def export_spool(batch: Sequence[Any]) -> bool:
            writer.write(encode(batch))
            return True

        return export_spool, writer.close, f"spool {writer.directory}"
    protocol = _protocol(signal)
    choice = "console" if kind == "console" else ("grpc" if protocol == "grpc" else "http")
    module, _, name = table[choice].partition(":")
    exporter = getattr(importlib.import_module(module), name)()

    def export(batch: Sequence[Any]) -> bool:
        # SpanExportResult / LogExportResult: both enums name success SUCCESS.
        return getattr(exporter.export(batch), "name", "") == "SUCCESS"

    return export, exporter.shutdown, f"{kind} {protocol}"


def _span_processor(batch: Any) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor

    class _Processor(SpanProcessor):
        def on_end(self, span: Any) -> None:
            if span.context.trace_flags.sampled:
                batch.emit(span)

        def shutdown(self) -> None:
            batch.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(batch.force_flush(timeout_millis / 1000))

    return _Processor()


def _log_processor(batch: Any) -> Any:
    from opentelemetry.sdk._logs import LogRecordProcessor

    class _Processor(LogRecordProcessor):
        def on_emit(self, log_record: Any) -> None:
            batch.emit(log_record)

        emit = on_emit  # older SDKs call emit()

        def shutdown(self) -> None:
            batch.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return bool(batch.force_flush(timeout_millis / 1000))

    return _Processor()


def _make_instruments(meter_provider: Any) -> RunInstruments:
    meter = meter_provider.get_meter(semconv.INSTRUMENTATION_NAME, _VERSION)
    return RunInstruments(
        duration=meter.create_histogram(
            semconv.METRIC_RUN_DURATION,
            unit=semconv.METRIC_RUN_DURATION_UNIT,
            description="Duration of otelflow flow and task runs, from start to final state.",
            # The SDK's default buckets are made for milliseconds; runs are measured in seconds.
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        ),
        runs=meter.create_counter(
            semconv.METRIC_RUNS, unit=semconv.METRIC_RUNS_UNIT, description="Finished otelflow runs by final state."
        ),
    )


def _build() -> _State:
    from opentelemetry import _logs, metrics

    if _sdk_disabled():
        return _State(tracer=trace.NoOpTracer(), description="OTEL_SDK_DISABLED=true: telemetry off")

    state = _State(tracer=trace.NoOpTracer())
    parts = []

    # Traces
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        kind = _exporter_kind("traces")
        from opentelemetry.sdk.trace import TracerProvider

        resource = _resource()
        provider = TracerProvider(resource=resource, shutdown_on_exit=False, id_generator=_UrandomIdGenerator())
        if kind != "none":
            export, stop, desc = _exporter("traces", kind)
            batch = _batch(export, stop, "traces", "BSP")
            provider.add_span_processor(_span_processor(batch))
            state.processors.append(batch)
            parts.append(f"traces -> {desc}")
        trace.set_tracer_provider(provider)
        state.owned.append(provider)
    else:
        resource = getattr(provider, "resource", None)
        parts.append("traces -> application's tracer provider")
    state.tracer = provider.get_tracer(semconv.INSTRUMENTATION_NAME, _VERSION)

    # Logs
    logger_provider = _logs.get_logger_provider()
    if type(logger_provider).__name__ in {"ProxyLoggerProvider", "NoOpLoggerProvider"}:
        kind = _exporter_kind("logs")
        if kind != "none":
            from opentelemetry.sdk._logs import LoggerProvider

            logger_provider = LoggerProvider(resource=resource or _resource(), shutdown_on_exit=False)
            export, stop, desc = _exporter("logs", kind)
            batch = _batch(export, stop, "logs", "BLRP")
            logger_provider.add_log_record_processor(_log_processor(batch))
            state.processors.append(batch)
            _logs.set_logger_provider(logger_provider)
            state.owned.append(logger_provider)
            state.logger_provider = logger_provider
            parts.append(f"logs -> {desc}")
    else:
        state.logger_provider = logger_provider
        parts.append("logs -> application's logger provider")

    # Metrics: only when they can go somewhere (OTLP), or the application set its own provider.
    meter_provider = metrics.get_meter_provider()
    if type(meter_provider).__name__ in {"_ProxyMeterProvider", "NoOpMeterProvider"}:
        if _exporter_kind("metrics") == "otlp":
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            if _protocol("metrics") == "grpc":
                from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
                    OTLPMetricExporter as MetricExp,
                )
            else:
                from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                    OTLPMetricExporter as MetricExp,
                )
            reader = PeriodicExportingMetricReader(MetricExp())
            meter_provider = MeterProvider(
                resource=resource or _resource(), metric_readers=[reader], shutdown_on_exit=False
            )
            metrics.set_meter_provider(meter_provider)
            state.owned.append(meter_provider)
            state.instruments = _make_instruments(meter_provider)
            parts.append("metrics -> otlp")
    else:
        state.instruments = _make_instruments(meter_provider)
        parts.append("metrics -> application's meter provider")

    state.description = "; ".join(parts)
    return state


def configure() -> None:
    """Build (or adopt) the providers. Idempotent and thread-safe; runs call it on first use."""
    global _state
    if _state is not None:
        return
    with _lock:
        if _state is None:
            _state = _build()
            atexit.register(_at_exit)


def _current() -> _State:
    if _overrides:
        return _overrides[-1]
    if _state is None:
        configure()
    assert _state is not None
    return _state


def get_tracer() -> trace.Tracer:
    """otelflow's tracer (configuring telemetry on first use)."""
    return _current().tracer


def get_logger_provider() -> Any:
    """The logger provider run logs go to, or ``None`` when log export is off."""
    return _current().logger_provider


def run_instruments() -> RunInstruments | None:
    """The run metric instruments, or ``None`` when no meter provider is configured (no cost)."""
    return _current().instruments


def describe() -> str:
    """Where telemetry goes, in one line (``otelflow`` prints it after a run)."""
    return _current().description


def stats() -> list[dict[str, Any]]:
    """Counters of otelflow's export processors (queued, exported, dropped, failures)."""
    return [p.describe() for p in _current().processors]


def flush(timeout_seconds: float = 10.0) -> bool:
    """Export everything recorded so far; True if it all went out within the timeout."""
    state = _current()
    ok = True
    for processor in state.processors:
        ok = processor.force_flush(timeout_seconds) and ok
    for provider in state.owned:
        if type(provider).__name__ == "MeterProvider":
            with contextlib.suppress(Exception):
                ok = bool(provider.force_flush(int(timeout_seconds * 1000))) and ok
    return ok


def shutdown(timeout_seconds: float | None = None) -> None:
    """Flush (bounded by ``timeout_seconds``, default ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``) and stop exporting.

    Reports on stderr anything that could not be exported.
    """
    global _state
    import time

    with _lock:
        state, _state = _state, None
    if state is None:
        return
    if timeout_seconds is None:
        from otelflow.settings import get_settings

        timeout_seconds = get_settings().shutdown_timeout_seconds
    deadline = time.monotonic() + timeout_seconds
    for processor in state.processors:
        processor.shutdown(max(0.0, deadline - time.monotonic()))
    for provider in state.owned:
        if type(provider).__name__ == "MeterProvider":
            with contextlib.suppress(Exception):
                provider.shutdown(timeout_millis=max(0.0, deadline - time.monotonic()) * 1000)
    lost = [p.describe() for p in state.processors if p.stats.dropped]
    for item in lost:
        print(
            f"otelflow: {item['dropped']} {item['signal']} item(s) could not be exported "
            f"(last error: {item['last_error'] or 'flush deadline reached'}).",
            file=sys.stderr,
        )


def _at_exit() -> None:
    with contextlib.suppress(Exception):
        shutdown()


@contextlib.contextmanager
def use_providers(
    tracer_provider: Any, logger_provider: Any = None, meter_provider: Any = None
) -> Iterator[None]:
    """Send otelflow's telemetry to these providers inside the block (used by :mod:`otelflow.testing`)."""
    state = _State(
        tracer=tracer_provider.get_tracer(semconv.INSTRUMENTATION_NAME, _VERSION),
        logger_provider=logger_provider,
        instruments=_make_instruments(meter_provider) if meter_provider is not None else None,
        description="test providers",
    )
    with _lock:
        _overrides.append(state)
    try:
        yield
    finally:
        with _lock:
            _overrides.remove(state)


def _reset_for_tests() -> None:
    """Forget the configured state without shutting anything down (tests re-read the environment)."""
    global _state
    with _lock:
        _state = None

"""Telemetry setup: the tracer and logger providers otelflow emits through.

Rules, in order:

1. ``OTEL_SDK_DISABLED=true``: nothing is built; runs still run, spans are no-ops.
2. If the application already set global OTel providers, otelflow uses them and replaces nothing.
3. Otherwise otelflow builds SDK providers from the standard ``OTEL_*`` variables (``OTEL_SERVICE_NAME``,
   ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``, ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``,
   ``OTEL_EXPORTER_OTLP_*``, ``OTEL_{TRACES,LOGS}_EXPORTER``...) and sets them as the globals,
   so the user's own OTel instrumentation lands in the same traces.
   - an OTLP endpoint configured (or ``OTEL_*_EXPORTER=otlp``): OTLP, over HTTP/protobuf by default,
     gRPC with ``OTEL_EXPORTER_OTLP_PROTOCOL=grpc``. Batches the collector cannot take go to the outage
     buffer (``$OTELFLOW_HOME/buffer``) and are re-sent when it answers again, by this process or the next;
   - no endpoint: the embedded default, OTLP-JSON lines in ``$OTELFLOW_HOME/spool`` (read by
     ``otelflow show`` and by the Collector's ``otlpjsonfile`` receiver).

otelflow emits no metrics itself: run metrics are derived from the spans in the Collector (``span_metrics``).

Exporters are imported only when chosen. Export never blocks a run for long (see
:mod:`otelflow._internal.export.pipeline`), requests are split under the receiver's size limit, and the flush at
exit is bounded by ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``; what is kept on disk or dropped is reported once
on stderr. An application span/log processor that raises is caught, counted and reported once: telemetry
never breaks a run.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from otelflow import semconv
from otelflow._internal.export import build
from otelflow._internal.export.protection import processor_errors, protect

__all__ = [
    "configure",
    "describe",
    "flush",
    "get_logger_provider",
    "get_tracer",
    "processor_errors",
    "shutdown",
    "stats",
    "use_providers",
]

from otelflow._version import __version__ as _VERSION


@dataclass
class _State:
    tracer: trace.Tracer
    logger_provider: Any = None  # opentelemetry._logs.LoggerProvider or None (no run logs exported)
    processors: list[Any] = field(default_factory=list)  # our BatchProcessors, for flush/stats
    owned: list[Any] = field(default_factory=list)  # providers we built (we shut them down)
    reshippers: list[Any] = field(default_factory=list)  # background re-send of earlier processes' buffers
    reship: dict[str, str] = field(default_factory=dict)  # signal -> OTLP protocol, for buffers left by others
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


def _resource() -> Any:
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource

    resource = Resource.create({})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        # No OTEL_SERVICE_NAME: "otelflow" is more useful in Jaeger/Loki than "unknown_service".
        resource = resource.merge(Resource({SERVICE_NAME: "otelflow"}))
    return resource


def _id_generator() -> Any:
    """Trace/span ids from a private ``random.Random`` seeded from ``os.urandom`` and re-seeded after fork.

    The SDK's default draws from the ``random`` module's global state, so a script that calls
    ``random.seed(7)`` (common in data pipelines) would emit the same trace ids on every run and merge
    unrelated runs in Jaeger. ``os.urandom`` per id would avoid that at ~2.6 us per span (a system call); a
    private generator costs ~0.05 us and is immune to ``random.seed()``.
    """
    import random

    from opentelemetry.sdk.trace.id_generator import IdGenerator

    rng = random.Random(os.urandom(32))
    if hasattr(os, "register_at_fork"):
        # Parent and child must never produce the same ids.
        os.register_at_fork(after_in_child=lambda: rng.seed(os.urandom(32)))
    bits = rng.getrandbits

    class PrivateRandomIdGenerator(IdGenerator):
        def generate_span_id(self) -> int:
            return bits(64) or 1

        def generate_trace_id(self) -> int:
            return bits(128) or 1

        def is_trace_id_random(self) -> bool:
            return True

    return PrivateRandomIdGenerator()


def _build() -> _State:
    from opentelemetry import _logs

    if _sdk_disabled():
        return _State(tracer=trace.NoOpTracer(), description="OTEL_SDK_DISABLED=true: telemetry off")

    state = _State(tracer=trace.NoOpTracer())
    parts = []
    reship: dict[str, str] = {}  # signal -> exporter choice, for earlier processes' outage buffers

    # Traces
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        kind = _exporter_kind("traces")
        from opentelemetry.sdk.trace import TracerProvider

        resource = _resource()
        provider = TracerProvider(
            resource=resource, shutdown_on_exit=False, id_generator=_id_generator()
        )
        if kind != "none":
            export, stop, desc, options = build.exporter("traces", kind)
            batch = build.batch(export, stop, "traces", "BSP", **options)
            provider.add_span_processor(build.span_processor(batch))
            state.processors.append(batch)
            parts.append(f"traces -> {desc}")
            if "buffer" in options:
                reship["traces"] = "grpc" if build.protocol("traces") == "grpc" else "http"
        trace.set_tracer_provider(provider)
        state.owned.append(provider)
    else:
        resource = getattr(provider, "resource", None)
        parts.append("traces -> application's tracer provider")
    protect(provider)
    state.tracer = provider.get_tracer(semconv.INSTRUMENTATION_NAME, _VERSION)

    # Logs
    logger_provider = _logs.get_logger_provider()
    if type(logger_provider).__name__ in {"ProxyLoggerProvider", "NoOpLoggerProvider"}:
        kind = _exporter_kind("logs")
        if kind != "none":
            from opentelemetry.sdk._logs import LoggerProvider

            logger_provider = LoggerProvider(resource=resource or _resource(), shutdown_on_exit=False)
            export, stop, desc, options = build.exporter("logs", kind)
            batch = build.batch(export, stop, "logs", "BLRP", **options)
            logger_provider.add_log_record_processor(build.log_processor(batch))
            state.processors.append(batch)
            _logs.set_logger_provider(logger_provider)
            state.owned.append(logger_provider)
            state.logger_provider = logger_provider
            parts.append(f"logs -> {desc}")
            if "buffer" in options:
                reship["logs"] = "grpc" if build.protocol("logs") == "grpc" else "http"
    else:
        state.logger_provider = logger_provider
        parts.append("logs -> application's logger provider")
    if state.logger_provider is not None:
        protect(state.logger_provider)

    state.reship = reship
    if reship:
        from otelflow.settings import get_settings

        buffer_dir = get_settings().buffer_dir
        if buffer_dir.is_dir():
            state.reshippers = [build.Reshipper(signal, choice, buffer_dir).start()
                                for signal, choice in reship.items()]

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


def describe() -> str:
    """Where telemetry goes, in one line (``otelflow`` prints it after a run)."""
    return _current().description


def stats() -> list[dict[str, Any]]:
    """Counters of otelflow's export processors, one dict per signal.

    Keys: ``signal``, ``queued``, ``exported``, ``dropped`` (each item once), ``drop_cause`` (the first real
    cause), ``buffered``/``on_disk``/``resent`` (outage buffer), ``failed_exports``, ``first_error``,
    ``last_error``, ``buffer`` (its folder), ``reshipped`` (items of earlier processes' buffers re-sent), and
    ``processor_errors`` (exceptions of application processors, swallowed).
    """
    state = _current()
    errors = processor_errors()
    out = []
    for processor in state.processors:
        entry = processor.describe()
        entry["reshipped"] = sum(r.items_sent for r in state.reshippers if r.signal == entry["signal"])
        entry["processor_errors"] = errors
        out.append(entry)
    return out


def flush(timeout_seconds: float = 10.0) -> bool:
    """Export everything recorded so far; True if it all went out within the timeout."""
    state = _current()
    ok = True
    for processor in state.processors:
        ok = processor.force_flush(timeout_seconds) and ok
    return ok


def shutdown(timeout_seconds: float | None = None) -> None:
    """Flush (bounded by ``timeout_seconds``, default ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``) and stop exporting.

    What the collector could not take is kept on disk (OTLP with the outage buffer); one line per signal on
    stderr says how much was kept and where, and how much was dropped, with the first real cause.
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
    if len(state.processors) > 1:
        # Signals shut down side by side: each may need its whole budget to write to disk.
        threads = [threading.Thread(target=p.shutdown, args=(max(0.0, deadline - time.monotonic()),), daemon=True)
                   for p in state.processors]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()) + 0.5)
    else:
        for processor in state.processors:
            processor.shutdown(max(0.0, deadline - time.monotonic()))
    collector_down = any(not p.healthy for p in state.processors)
    for reshipper in state.reshippers:
        # Earlier processes' buffers: a re-send under way may finish within the same bound, unless the collector
        # is down (then it is only waiting out its exporter's retries; the next process resumes it).
        reshipper.finish(0.05 if collector_down else max(0.0, deadline - time.monotonic()))
    if not collector_down:
        _ship_what_children_left(state, deadline)
    for item in (p.describe() for p in state.processors):
        line = _exit_report(item)
        if line:
            print(line, file=sys.stderr)


def _ship_what_children_left(state: _State, deadline: float) -> None:
    """At exit, send what child processes (Pool workers ended by ``terminate()``...) left in the outage buffer.

    A child writes each item to the buffer as it is made; one that ends before its sender sent them leaves them
    there, in files no process holds any more. The parent sends them now, within the exit's time budget (the rest
    waits for the next process, or ``otelflow spool ship``). Not in a child (a process whose pipeline writes
    through, forked or started by ``multiprocessing``): its parent does it.
    """
    import time

    if not state.reship or any(p.write_through for p in state.processors):
        return
    from otelflow.settings import get_settings

    buffer_dir = get_settings().buffer_dir
    signals = [s for s in state.reship if any(buffer_dir.glob(f"{s}-*.jsonl"))] if buffer_dir.is_dir() else []
    shippers = [build.Reshipper(signal, state.reship[signal], buffer_dir).start() for signal in signals]
    for shipper in shippers:
        shipper.finish(max(0.0, deadline - time.monotonic()))
    state.reshippers.extend(shippers)


def _exit_report(item: dict[str, Any]) -> str | None:
    """One line about a signal that did not all reach its exporter, or None."""
    parts = []
    cause = item["first_error"] or item["drop_cause"]
    if item["on_disk"]:
        parts.append(
            f"{item['on_disk']} item(s) kept on disk in {item['buffer']} ({cause or 'collector not reached'}); "
            "the next otelflow process exporting over OTLP re-sends them (or now: otelflow spool ship --endpoint URL)"
        )
    if item["dropped"]:
        parts.append(f"{item['dropped']} item(s) could not be exported and were dropped ({item['drop_cause']})")
    if not parts:
        return None
    return f"otelflow: {item['signal']}: " + "; ".join(parts) + "."


def _at_exit() -> None:
    with contextlib.suppress(Exception):
        shutdown()


@contextlib.contextmanager
def use_providers(
    tracer_provider: Any, logger_provider: Any = None, meter_provider: Any = None
) -> Iterator[None]:
    """Send otelflow's telemetry to these providers inside the block (used by :mod:`otelflow.testing`).

    ``meter_provider`` is accepted for compatibility and ignored: otelflow records no metrics in-process.
    """
    del meter_provider
    protect(tracer_provider)
    if logger_provider is not None:
        protect(logger_provider)
    state = _State(
        tracer=tracer_provider.get_tracer(semconv.INSTRUMENTATION_NAME, _VERSION),
        logger_provider=logger_provider,
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

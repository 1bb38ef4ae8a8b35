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

otelflow emits no metrics itself: run metrics are derived from the spans in the Collector (``spanmetrics``).

Exporters are imported only when chosen. Export never blocks a run for long (see
:mod:`otelflow._internal.export.pipeline`), requests are split under the receiver's size limit, and the flush at
exit is bounded by ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``; what is kept on disk or dropped is reported once
on stderr. An application span/log processor that raises is caught, counted and reported once: telemetry
never breaks a run.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace

from otelflow import semconv

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


# --- protecting runs from application processors ---------------------------------------------------------

_processor_errors: dict[tuple[str, str], dict[str, Any]] = {}
_processor_errors_lock = threading.Lock()


def _processor_failed(processor: Any, method: str, exc: BaseException) -> None:
    """Count a processor's exception; the first one of each processor/method is reported on stderr."""
    name = f"{type(processor).__module__}.{type(processor).__qualname__}"
    with _processor_errors_lock:
        entry = _processor_errors.get((name, method))
        first = entry is None
        if entry is None:
            entry = _processor_errors[(name, method)] = {"processor": name, "method": method, "errors": 0,
                                                          "first_error": f"{type(exc).__name__}: {exc}"}
        entry["errors"] += 1
    if first:
        with contextlib.suppress(Exception):
            print(
                f"otelflow: telemetry processor {name} raised in {method} ({type(exc).__name__}: {exc}); "
                "ignored, the run is unaffected (further errors are counted in otelflow.telemetry.stats()).",
                file=sys.stderr,
            )


def processor_errors() -> list[dict[str, Any]]:
    """Exceptions raised by span/log processors and swallowed to protect runs: one entry per processor/method."""
    with _processor_errors_lock:
        return [dict(entry) for entry in _processor_errors.values()]


def _safe_call(processor: Any, method: str, *args: Any, **kwargs: Any) -> Any:
    try:
        return getattr(processor, method)(*args, **kwargs)
    except Exception as exc:
        _processor_failed(processor, method, exc)
        return None


def _shutdown_each(processors: Sequence[Any]) -> None:
    """Shut every processor down; one raising is reported and the others still shut down."""
    for processor in processors:
        _safe_call(processor, "shutdown")


def _safe_flush(multi: Any, flush: Callable[[int], Any], timeout_millis: int) -> bool:
    """A safe multi-processor's ``force_flush``: the SDK's own, with a processor's exception reported, not raised."""
    try:
        return bool(flush(timeout_millis))
    except Exception as exc:
        _processor_failed(multi, "force_flush", exc)
        return False


@functools.cache  # one class each: _protect swaps the SDK's instances to it
def _safe_span_multi() -> type:
    from opentelemetry.sdk.trace import SynchronousMultiSpanProcessor

    class SafeMultiSpanProcessor(SynchronousMultiSpanProcessor):
        """The SDK's sequential multi-processor, but one processor raising never reaches the run."""

        # on_start/on_end run for every span: the loop is inlined rather than calling _safe_call.
        def on_start(self, span: Any, parent_context: Any = None) -> None:
            for sp in self._span_processors:
                try:
                    sp.on_start(span, parent_context=parent_context)
                except Exception as exc:
                    _processor_failed(sp, "on_start", exc)

        def _on_ending(self, span: Any) -> None:
            for sp in self._span_processors:
                try:
                    sp._on_ending(span)
                except Exception as exc:
                    _processor_failed(sp, "_on_ending", exc)

        def on_end(self, span: Any) -> None:
            for sp in self._span_processors:
                try:
                    sp.on_end(span)
                except Exception as exc:
                    _processor_failed(sp, "on_end", exc)

        def shutdown(self) -> None:
            _shutdown_each(self._span_processors)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return _safe_flush(self, super().force_flush, timeout_millis)

    return SafeMultiSpanProcessor


@functools.cache  # one class each: _protect swaps the SDK's instances to it
def _safe_concurrent_span_multi() -> type:
    from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor

    class SafeConcurrentMultiSpanProcessor(ConcurrentMultiSpanProcessor):
        """The SDK's thread-pool multi-processor, but one processor raising never reaches the run."""

        def _submit_and_await(self, func: Any, *args: Any, **kwargs: Any) -> None:
            futures = [(sp, self._executor.submit(func(sp), *args, **kwargs)) for sp in self._span_processors]
            for sp, future in futures:
                try:
                    future.result()
                except Exception as exc:
                    _processor_failed(sp, getattr(func(sp), "__name__", "call"), exc)

    return SafeConcurrentMultiSpanProcessor


@functools.cache  # one class each: _protect swaps the SDK's instances to it
def _safe_log_multi() -> type:
    from opentelemetry.sdk._logs._internal import SynchronousMultiLogRecordProcessor

    class SafeMultiLogRecordProcessor(SynchronousMultiLogRecordProcessor):
        """The SDK's sequential multi log processor, but one processor raising never reaches the caller."""

        def on_emit(self, log_record: Any) -> None:
            for lp in self._log_record_processors:
                try:
                    lp.on_emit(log_record)
                except Exception as exc:
                    _processor_failed(lp, "on_emit", exc)

        def shutdown(self) -> None:
            _shutdown_each(self._log_record_processors)

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return _safe_flush(self, super().force_flush, timeout_millis)

    return SafeMultiLogRecordProcessor


def _protect(provider: Any) -> None:
    """Make a provider's multi-processor catch per-processor exceptions (in place: tracers already made keep it).

    Only the SDK's own multi-processors are swapped (their subclasses add behaviour, no state); a custom one is
    left alone.
    """
    with contextlib.suppress(Exception):
        from opentelemetry.sdk._logs._internal import SynchronousMultiLogRecordProcessor
        from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, SynchronousMultiSpanProcessor

        span_multi = getattr(provider, "_active_span_processor", None)
        if type(span_multi) is SynchronousMultiSpanProcessor:
            span_multi.__class__ = _safe_span_multi()
        elif type(span_multi) is ConcurrentMultiSpanProcessor:
            span_multi.__class__ = _safe_concurrent_span_multi()
        log_multi = getattr(provider, "_multi_log_record_processor", None)
        if type(log_multi) is SynchronousMultiLogRecordProcessor:
            log_multi.__class__ = _safe_log_multi()



# --- exporters -------------------------------------------------------------------------------------------


def _batch(export: Any, shutdown_exporter: Any, signal: str, env_prefix: str, **extra: Any) -> Any:
    from otelflow._internal.export.pipeline import BatchProcessor

    return BatchProcessor(
        export,
        shutdown_exporter,
        signal=signal,
        max_queue_size=_int_env(f"OTEL_{env_prefix}_MAX_QUEUE_SIZE", 8192),
        max_export_batch_size=_int_env(f"OTEL_{env_prefix}_MAX_EXPORT_BATCH_SIZE", 512),
        schedule_delay_seconds=_int_env(f"OTEL_{env_prefix}_SCHEDULE_DELAY", 1000) / 1000,
        **extra,
    )


# The SDK's console exporters, imported only when chosen; encoders for the spool and the outage buffer.
_CONSOLE = {
    "traces": "opentelemetry.sdk.trace.export:ConsoleSpanExporter",
    "logs": "opentelemetry.sdk._logs.export:ConsoleLogRecordExporter",
}
_ENCODERS = {"traces": "encode_spans", "logs": "encode_logs"}


def _exporter(signal: str, kind: str) -> tuple[Any, Any, str, dict[str, Any]]:
    """``(export(batch) -> bool, shutdown(), description, processor options)`` for ``traces`` or ``logs``."""
    from otelflow._internal.export.limits import get_limits, split_batch
    from otelflow._internal.spool import otlp_json
    from otelflow._internal.spool.writer import SpoolWriter
    from otelflow.settings import get_settings

    settings = get_settings()
    encode = getattr(otlp_json, _ENCODERS[signal])
    limits = get_limits()

    def split(batch: list[Any]) -> list[list[Any]]:
        return split_batch(batch, limits)

    if kind == "spool":
        writer = SpoolWriter(settings.spool_dir, signal, mark_alive=True)

        def export_spool(batch: Sequence[Any]) -> bool:
            writer.write(encode(batch))
            return True

        return export_spool, writer.close, f"spool {writer.directory}", {"split": split}
    protocol = _protocol(signal)
    if kind == "console":
        import importlib

        module, _, name = _CONSOLE[signal].partition(":")
        exporter = getattr(importlib.import_module(module), name)()

        def export_console(batch: Sequence[Any]) -> bool:
            return getattr(exporter.export(batch), "name", "") == "SUCCESS"

        return export_console, exporter.shutdown, f"{kind} {protocol}", {}
    from otelflow._internal.export.otlp import OtlpSender

    sender = OtlpSender(signal, "grpc" if protocol == "grpc" else "http")
    export = sender.export
    options: dict[str, Any] = {"split": split}
    description = f"{kind} {protocol}"
    if settings.buffer_max_bytes > 0:
        from otelflow._internal.export.outage import OutageBuffer

        buffer_dir = settings.buffer_dir
        options["buffer"] = OutageBuffer(buffer_dir, signal, encode, max_bytes=settings.buffer_max_bytes)

        def on_unhealthy(cause: str) -> None:
            print(
                f"otelflow: {signal}: the collector is not taking telemetry ({cause}); keeping it on disk in "
                f"{buffer_dir} and re-sending it when the collector is back.",
                file=sys.stderr,
            )

        options["on_unhealthy"] = on_unhealthy
        options["reachable"] = _reachability_check(signal, protocol)
        description += f" (outage buffer {buffer_dir})"
    return export, sender.shutdown, description, options


_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "grpc_proxy")


def _reachability_check(signal: str, protocol: str) -> Callable[[], str | None] | None:
    """A TCP connect to the collector's host and port: None when it answers, else why not.

    Made before the first export and before each probe while the collector looks down. None (no check) where a
    TCP connect to the endpoint would not tell: a proxy in between, or a Unix socket.
    """
    import socket
    import urllib.parse

    if any(_env(name) or _env(name.upper()) for name in _PROXY_VARIABLES):
        return None
    grpc = protocol == "grpc"
    endpoint = (_env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_ENDPOINT") or _env("OTEL_EXPORTER_OTLP_ENDPOINT")
                or ("http://localhost:4317" if grpc else "http://localhost:4318"))
    try:
        parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
        host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not host:
        return None

    def check() -> str | None:
        try:
            socket.create_connection((host, port), timeout=1.0).close()
        except ConnectionRefusedError:
            return "connection refused"
        except TimeoutError:
            return "collector did not answer in time"
        except socket.gaierror:
            return "collector unavailable (name or service not known)"
        except OSError as exc:
            return f"collector unavailable ({exc.strerror or exc})"
        return None

    return check


class _Reshipper:
    """Re-sends, in the background, the outage buffers earlier processes left behind (never delays a run)."""

    def __init__(self, signal: str, choice: str, directory: Any) -> None:
        self.signal = signal
        self.stop_event = threading.Event()
        self.items_sent = 0
        self.lines_sent = 0
        self.error: str | None = None
        self.backing_off = False
        self._choice = choice
        self._directory = directory
        self._thread = threading.Thread(target=self._run, name=f"otelflow-reship-{signal}", daemon=True)

    def start(self) -> _Reshipper:
        self._thread.start()
        return self

    def _run(self) -> None:
        from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, attach, set_value

        from otelflow._internal.export.limits import get_limits, split_batch
        from otelflow._internal.export.ship import ship_directory

        attach(set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
        from otelflow._internal.export.otlp import OtlpSender

        try:
            exporter = OtlpSender(self.signal, self._choice)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            return
        send = exporter.export
        limits = get_limits()

        def export(batch: Sequence[Any]) -> bool:
            return all(send(piece) for piece in split_batch(list(batch), limits))

        backoff = 1.0
        try:
            while not self.stop_event.is_set():
                result = ship_directory(self._directory, self.signal, export, delete_shipped=True,
                                        should_stop=self.stop_event.is_set)
                self.items_sent += result.items_sent
                self.lines_sent += result.lines_sent
                if not result.failed:
                    return
                self.error = result.error
                self.backing_off = True
                self.stop_event.wait(backoff)
                self.backing_off = False
                backoff = min(60.0, backoff * 2)
        finally:
            with contextlib.suppress(Exception):
                exporter.shutdown()

    def finish(self, timeout: float) -> None:
        """Give a re-send under way ``timeout`` seconds more, then stop it (it resumes in the next process)."""
        if self.backing_off:  # the collector is down: nothing to wait for
            self.stop_event.set()
        self._thread.join(max(0.0, timeout))
        self.stop_event.set()


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
            export, stop, desc, options = _exporter("traces", kind)
            batch = _batch(export, stop, "traces", "BSP", **options)
            provider.add_span_processor(_span_processor(batch))
            state.processors.append(batch)
            parts.append(f"traces -> {desc}")
            if "buffer" in options:
                reship["traces"] = "grpc" if _protocol("traces") == "grpc" else "http"
        trace.set_tracer_provider(provider)
        state.owned.append(provider)
    else:
        resource = getattr(provider, "resource", None)
        parts.append("traces -> application's tracer provider")
    _protect(provider)
    state.tracer = provider.get_tracer(semconv.INSTRUMENTATION_NAME, _VERSION)

    # Logs
    logger_provider = _logs.get_logger_provider()
    if type(logger_provider).__name__ in {"ProxyLoggerProvider", "NoOpLoggerProvider"}:
        kind = _exporter_kind("logs")
        if kind != "none":
            from opentelemetry.sdk._logs import LoggerProvider

            logger_provider = LoggerProvider(resource=resource or _resource(), shutdown_on_exit=False)
            export, stop, desc, options = _exporter("logs", kind)
            batch = _batch(export, stop, "logs", "BLRP", **options)
            logger_provider.add_log_record_processor(_log_processor(batch))
            state.processors.append(batch)
            _logs.set_logger_provider(logger_provider)
            state.owned.append(logger_provider)
            state.logger_provider = logger_provider
            parts.append(f"logs -> {desc}")
            if "buffer" in options:
                reship["logs"] = "grpc" if _protocol("logs") == "grpc" else "http"
    else:
        state.logger_provider = logger_provider
        parts.append("logs -> application's logger provider")
    if state.logger_provider is not None:
        _protect(state.logger_provider)

    if reship:
        from otelflow.settings import get_settings

        buffer_dir = get_settings().buffer_dir
        if buffer_dir.is_dir():
            state.reshippers = [_Reshipper(signal, choice, buffer_dir).start() for signal, choice in reship.items()]

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
    for item in (p.describe() for p in state.processors):
        line = _exit_report(item)
        if line:
            print(line, file=sys.stderr)


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
    _protect(tracer_provider)
    if logger_provider is not None:
        _protect(logger_provider)
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

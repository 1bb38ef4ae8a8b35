"""Building one signal's export pipeline from the standard ``OTEL_*`` settings (see :mod:`otelflow.telemetry`).

``exporter(signal, kind)`` chooses the last stage (the spool writer, the console, or the OTLP stage with the
outage buffer behind it), ``batch(...)`` the batching stage in front of it, and ``span_processor`` /
``log_processor`` plug the pipeline into the SDK providers. ``Reshipper`` re-sends, in the background, the
outage buffers earlier processes left behind.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["Reshipper", "batch", "exporter", "log_processor", "protocol", "span_processor"]


def _env(name: str) -> str:
    return os.environ.get(name, "").strip()


def _int_env(name: str, default: int) -> int:
    try:
        return int(_env(name)) if _env(name) else default
    except ValueError:
        return default


def protocol(signal: str) -> str:
    """The OTLP protocol chosen for ``signal``: ``http/protobuf`` (default) or ``grpc``."""
    return (
        _env(f"OTEL_EXPORTER_OTLP_{signal.upper()}_PROTOCOL") or _env("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).lower()



# The local spool's batches wait at most this long (OTEL_BSP_/OTEL_BLRP_SCHEDULE_DELAY still win): `otelflow logs
# --follow` shows a record that much later. A spool write is one local append, so 5 a second cost nothing a run
# notices (bench/README.md, CLI section); the SDK's 1 s stays for the network exporters.
SPOOL_SCHEDULE_DELAY_MS = 200


def batch(export: Any, shutdown_exporter: Any, signal: str, env_prefix: str, *, default_delay_ms: int = 1000,
          **extra: Any) -> Any:
    from otelflow._internal.export.pipeline import BatchProcessor

    return BatchProcessor(
        export,
        shutdown_exporter,
        signal=signal,
        max_queue_size=_int_env(f"OTEL_{env_prefix}_MAX_QUEUE_SIZE", 8192),
        max_export_batch_size=_int_env(f"OTEL_{env_prefix}_MAX_EXPORT_BATCH_SIZE", 512),
        schedule_delay_seconds=_int_env(f"OTEL_{env_prefix}_SCHEDULE_DELAY", default_delay_ms) / 1000,
        **extra,
    )


# The SDK's console exporters, imported only when chosen; encoders for the spool and the outage buffer.
_CONSOLE = {
    "traces": "opentelemetry.sdk.trace.export:ConsoleSpanExporter",
    "logs": "opentelemetry.sdk._logs.export:ConsoleLogRecordExporter",
}
_ENCODERS = {"traces": "encode_spans", "logs": "encode_logs"}


def exporter(signal: str, kind: str) -> tuple[Any, Any, str, dict[str, Any]]:
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

        def split_spool(batch: list[Any]) -> list[list[Any]]:
            # Each item encoded once, and the lines cut by the exact size of that encoding (split_batch's
            # estimate cost a third of the encoding); every piece carries its line to export_spool.
            return otlp_json.split_encoded(batch, signal, limits)

        def export_spool(batch: Sequence[Any]) -> bool:
            # A piece without its line: half of one, or a child process's single item.
            writer.write(batch.line if isinstance(batch, otlp_json.EncodedPiece) else encode(batch))
            return True

        return (export_spool, writer.close, f"spool {writer.directory}",
                {"split": split_spool, "default_delay_ms": SPOOL_SCHEDULE_DELAY_MS})
    chosen = protocol(signal)
    if kind == "console":
        import importlib

        module, _, name = _CONSOLE[signal].partition(":")
        exporter = getattr(importlib.import_module(module), name)()

        def export_console(batch: Sequence[Any]) -> bool:
            return getattr(exporter.export(batch), "name", "") == "SUCCESS"

        return export_console, exporter.shutdown, f"{kind} {chosen}", {}
    from otelflow._internal.export.otlp import OtlpSender

    sender = OtlpSender(signal, "grpc" if chosen == "grpc" else "http")
    export = sender.export
    options: dict[str, Any] = {"split": split}
    description = f"{kind} {chosen}"
    if settings.buffer_max_bytes > 0:
        from otelflow._internal.export.outage import OutageBuffer

        buffer_dir = settings.buffer_dir
        options["buffer"] = OutageBuffer(buffer_dir, signal, encode, max_bytes=settings.buffer_max_bytes)

        def on_unhealthy(cause: str, disk_refusal: str | None) -> None:
            if disk_refusal is None:
                then = f"keeping it on disk in {buffer_dir} and re-sending it when the collector is back."
            else:
                then = (f"the outage buffer cannot keep it either ({disk_refusal}): what neither takes is "
                        "dropped, counted.")
            print(f"otelflow: {signal}: the collector is not taking telemetry ({cause}); {then}", file=sys.stderr)

        options["on_unhealthy"] = on_unhealthy
        options["reachable"] = sender.reachability_check()
        description += f" (outage buffer {buffer_dir})"
    return export, sender.shutdown, description, options


class Reshipper:
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

    def start(self) -> Reshipper:
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


def span_processor(batch: Any) -> Any:
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


def log_processor(batch: Any) -> Any:
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

"""The benchmarks' telemetry baseline: the application's global SDK providers, each batching into an exporter that
discards, set before otelflow is imported (otelflow adopts them), so both sides of a ratio pay the same SDK."""

from __future__ import annotations

from typing import Any


def discarding_providers() -> tuple[Any, Any]:
    """Install and return ``(tracer_provider, logger_provider)``: batch processors feeding exporters that discard."""
    from opentelemetry import _logs, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class DiscardSpans(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    class DiscardLogs(LogRecordExporter):
        def export(self, batch: Any) -> LogRecordExportResult:
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(DiscardSpans(), max_queue_size=1 << 16))
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(DiscardLogs(), max_queue_size=1 << 16))
    trace.set_tracer_provider(tracer_provider)
    _logs.set_logger_provider(logger_provider)
    return tracer_provider, logger_provider

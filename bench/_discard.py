"""The benchmarks' telemetry baseline: the application's global SDK providers, each batching into an exporter that
discards, set before otelflow is imported (otelflow adopts them), so both sides of a ratio pay the same SDK."""

from __future__ import annotations

from typing import Any

QUEUE = 1 << 20  # the batch processors' queues: big enough that nothing is dropped while a benchmark runs


def discarding_providers(queue: int = QUEUE) -> tuple[Any, Any]:
    """Install and return ``(tracer_provider, logger_provider)``: batch processors feeding exporters that discard.

    What a user's application has: also a global ``MeterProvider`` (with no reader: otelflow records no metrics
    itself, the Collector derives them from spans), all set before otelflow is imported."""
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
    tracer_provider.add_span_processor(BatchSpanProcessor(DiscardSpans(), max_queue_size=queue))
    logger_provider = LoggerProvider(shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(DiscardLogs(), max_queue_size=queue))
    trace.set_tracer_provider(tracer_provider)
    _logs.set_logger_provider(logger_provider)
    from opentelemetry import metrics
    from opentelemetry.sdk.metrics import MeterProvider

    metrics.set_meter_provider(MeterProvider(shutdown_on_exit=False))
    return tracer_provider, logger_provider

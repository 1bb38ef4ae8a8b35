"""Test helpers for users' own suites: capture the spans, logs and metrics their flows emit.

Example (pytest; the ``otelflow_telemetry`` fixture is registered by the ``otelflow.testing`` plugin)::

    # conftest.py
    pytest_plugins = ["otelflow.testing"]

    # test_pipeline.py
    def test_pipeline_traces(otelflow_telemetry):
        pipeline()
        assert [s.name for s in otelflow_telemetry.spans] == ["task extract", "flow pipeline"]
        assert otelflow_telemetry.logs[0].log_record.body == "extracted 3 rows"

Or without pytest::

    with capture_telemetry() as captured:
        pipeline()

To run a whole suite against a throwaway otelflow home, store and spool (Prefect's ``prefect_test_harness``),
see :func:`otelflow.testing.utilities.otelflow_test_harness`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, cast

from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otelflow import semconv, telemetry

__all__ = ["CapturedTelemetry", "capture_telemetry", "otelflow_telemetry"]


class CapturedTelemetry:
    """What otelflow emitted inside :func:`capture_telemetry`: ``spans``, ``logs``, metrics."""

    def __init__(self, resource: Resource | None = None) -> None:
        self.resource = resource or Resource.create({"service.name": "otelflow-test"})
        self._span_exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider(resource=self.resource, shutdown_on_exit=False)
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self._span_exporter))
        self._log_exporter = cast(Any, InMemoryLogRecordExporter)()
        self.logger_provider = LoggerProvider(resource=self.resource, shutdown_on_exit=False)
        self.logger_provider.add_log_record_processor(SimpleLogRecordProcessor(self._log_exporter))
        self._metric_reader = InMemoryMetricReader()
        self.meter_provider = MeterProvider(
            resource=self.resource, metric_readers=[self._metric_reader], shutdown_on_exit=False
        )

    @property
    def spans(self) -> list[ReadableSpan]:
        """Finished spans, in the order they ended (pending records of running runs left out: see ``pending_spans``)."""
        return [s for s in self._span_exporter.get_finished_spans() if not _is_pending(s)]

    @property
    def pending_spans(self) -> list[ReadableSpan]:
        """The early zero-duration records exported when long runs start (``otelflow.span.pending``)."""
        return [s for s in self._span_exporter.get_finished_spans() if _is_pending(s)]

    @property
    def logs(self) -> list[Any]:
        """Emitted log records (SDK ``ReadableLogRecord``; the OTel record is ``.log_record``)."""
        return list(self._log_exporter.get_finished_logs())

    def spans_named(self, name: str) -> list[ReadableSpan]:
        """Finished spans with this name (``"flow pipeline"``, ``"task extract"``)."""
        return [s for s in self.spans if s.name == name]

    def flow_spans(self) -> list[ReadableSpan]:
        """Spans of flow runs."""
        return [s for s in self.spans if (s.attributes or {}).get(semconv.RUN_TYPE) == semconv.RUN_TYPE_FLOW]

    def task_spans(self) -> list[ReadableSpan]:
        """Spans of task runs."""
        return [s for s in self.spans if (s.attributes or {}).get(semconv.RUN_TYPE) == semconv.RUN_TYPE_TASK]

    def metrics(self) -> list[Any]:
        """All metric points collected so far, as SDK ``Metric`` objects."""
        data = self._metric_reader.get_metrics_data()
        if data is None:
            return []
        return [m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics]

    def metric_names(self) -> set[str]:
        """Names of the metrics otelflow recorded."""
        return {m.name for m in self.metrics()}

    def metric_attribute_keys(self, name: str) -> set[str]:
        """Attribute keys seen on the data points of one metric."""
        return {key for m in self.metrics() if m.name == name for p in m.data.data_points for key in p.attributes}

    def clear(self) -> None:
        """Forget what was captured so far (metrics are cumulative and are not cleared)."""
        self._span_exporter.clear()
        self._log_exporter.clear()


def _is_pending(span: ReadableSpan) -> bool:
    return bool((span.attributes or {}).get(semconv.SPAN_PENDING))


@contextlib.contextmanager
def capture_telemetry(resource: Resource | None = None) -> Iterator[CapturedTelemetry]:
    """Send otelflow's telemetry to in-memory exporters inside the block."""
    captured = CapturedTelemetry(resource)
    with telemetry.use_providers(captured.tracer_provider, captured.logger_provider, captured.meter_provider):
        yield captured


try:
    import pytest
except ImportError:  # pragma: no cover - pytest is optional for users
    pass
else:

    @pytest.fixture
    def otelflow_telemetry() -> Iterator[CapturedTelemetry]:
        """The spans, logs and metrics otelflow emits during the test."""
        with capture_telemetry() as captured:
            yield captured

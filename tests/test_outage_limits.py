"""No record can poison a batch: texts truncated with a visible marker, requests split under the receiver's limit."""

from __future__ import annotations

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as proto_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otelflow import flow, get_run_logger
from otelflow._internal.export.limits import Limits, get_limits, split_batch, truncate_stacktrace, truncate_text


def test_truncate_text_keeps_within_the_limit_with_a_visible_marker():  # type: ignore[no-untyped-def]
    text = truncate_text("E" * 5_000_000, 8192)
    assert len(text) <= 8192 and text.endswith(f"...[truncated {5_000_000 - text.index('.')} chars]")
    assert truncate_text("short", 8192) == "short"
    trace = "Traceback (most recent call last):\n" + "x" * 100_000 + "\nValueError: the real error"
    cut = truncate_stacktrace(trace, 4096)
    assert len(cut) <= 4096 and cut.startswith("Traceback") and cut.endswith("ValueError: the real error")
    assert "...[truncated" in cut


def test_limits_honour_otel_attribute_value_length_limit(monkeypatch, settings_env):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "1000")
    settings_env(EXCEPTION_MESSAGE_MAX_LENGTH="500")
    limits = get_limits()
    assert limits.attribute_value == 1000 and limits.exception_message == 500
    settings_env(ATTRIBUTE_VALUE_MAX_LENGTH="2000")
    assert get_limits().attribute_value == 2000  # otelflow's own setting wins


def _spans(count: int, huge_index: int | None = None, size: int = 0) -> list:  # type: ignore[type-arg]
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("t")
    for i in range(count):
        with tracer.start_as_current_span(f"task {i}", attributes={"payload": "p" * 20_000}) as span:
            if i == huge_index:
                message = "E" * size
                span.set_status(StatusCode.ERROR, message)
                span.add_event("exception", {"exception.message": message, "exception.stacktrace": message})
    return list(exporter.get_finished_spans())


def test_split_batch_keeps_every_request_under_the_limit_and_every_span():  # type: ignore[no-untyped-def]
    limits = Limits(max_request_bytes=256 * 1024)
    spans = _spans(100, huge_index=42, size=5_000_000)
    batches = split_batch(spans, limits)
    assert len(batches) > 1
    assert [s.context.span_id for b in batches for s in b] == [s.context.span_id for s in spans]  # order, all
    for batch in batches:
        assert proto_spans(batch).ByteSize() < limits.max_request_bytes
    (huge,) = [s for b in batches for s in b if s.name == "task 42"]
    assert "...[truncated" in huge.status.description


def test_run_logs_truncate_extra_values_and_exception_texts(captured):  # type: ignore[no-untyped-def]
    @flow
    def noisy() -> None:
        logger = get_run_logger()
        logger.info("payload", extra={"blob": "B" * 3_000_000, "small": "ok", "nested": {"x": "N" * 100_000}})
        try:
            raise ValueError("E" * 5_000_000)
        except ValueError:
            logger.exception("failed")

    noisy()
    records = {r.log_record.body: r.log_record for r in captured.logs}
    attrs = records["payload"].attributes
    assert len(attrs["blob"]) <= get_limits().attribute_value and "...[truncated" in attrs["blob"]
    assert attrs["small"] == "ok"
    assert len(attrs["nested"]["x"]) <= get_limits().attribute_value
    failed = records["failed"].attributes
    assert len(failed["exception.message"]) <= get_limits().exception_message
    assert len(failed["exception.stacktrace"]) <= get_limits().stacktrace
    assert "...[truncated" in failed["exception.stacktrace"]


def test_a_5_mb_exception_no_longer_grows_the_spool_by_megabytes(tmp_path):  # type: ignore[no-untyped-def]
    """Was: the message rode on the span three times and the spool grew 25 MB."""
    import subprocess
    import textwrap

    from conftest import PYTHON, REPO_ROOT, subprocess_env

    code = textwrap.dedent(
        """
        from otelflow import flow, task

        @task
        def explode() -> None:
            raise ValueError("E" * 5_000_000)

        @flow
        def big_error() -> str:
            return explode(return_state=True).name

        print(big_error())
        """
    )
    proc = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=subprocess_env(OTELFLOW_HOME=str(tmp_path)))
    assert proc.returncode == 0, proc.stderr
    size = sum(p.stat().st_size for p in (tmp_path / "spool").glob("*.jsonl"))
    assert 0 < size < 1_000_000, size

"""The spool export thread's work per item: cutting a batch into lines and encoding it as OTLP/JSON. Not a test.

    python bench/bench_spool_encoding.py                  # this checkout
    PYTHONPATH=/path/to/older/checkout python bench/bench_spool_encoding.py   # an older one, for a before/after

The spool is otelflow's default exporter and its worker shares the GIL with the runs, so every microsecond here is
paid by a run. The items are real: the task-run spans and run log records of a 512-task flow (tags, two parameters,
one ``get_run_logger().info()`` each), captured in memory. Best of 5 rounds of 5 passes, µs per item:

- ``split_batch`` / ``encode_*``: the OTLP path's size estimate and the encoder alone;
- ``split_encoded``: the spool's path, each item encoded once and the lines cut by the size of that encoding
  (absent from checkouts older than 0100ff9, whose spool ran ``split_batch`` then ``encode_*``).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from typing import Any

ITEMS = 512


def _real_items() -> tuple[list[Any], list[Any]]:
    """The task-run spans and log records of one 512-task flow, from in-memory exporters."""
    from opentelemetry import _logs, trace
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    spans_out, logs_out = InMemorySpanExporter(), InMemoryLogRecordExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans_out))
    trace.set_tracer_provider(tracer_provider)
    logger_provider = LoggerProvider()
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(logs_out))
    _logs.set_logger_provider(logger_provider)

    from otelflow import flow, get_run_logger, tags, task

    @task
    def work(x: int, config: dict[str, int]) -> int:
        get_run_logger().info("item %s", x)
        return x * config["factor"]

    @flow
    def pipeline() -> list[int]:
        with tags("bench"):
            return [work(i, {"factor": 2}) for i in range(ITEMS)]

    pipeline()
    spans = [s for s in spans_out.get_finished_spans() if (s.attributes or {}).get("otelflow.run.type") == "task"]
    return spans[:ITEMS], list(logs_out.get_finished_logs())[:ITEMS]


def main() -> None:
    spans, logs = _real_items()
    from otelflow._internal.export.limits import get_limits, split_batch
    from otelflow._internal.spool import otlp_json

    limits = get_limits()
    cases: list[tuple[str, Callable[[], object]]] = [
        ("split_batch, spans (OTLP path)", lambda: split_batch(spans, limits)),
        ("encode_spans", lambda: otlp_json.encode_spans(spans)),
        ("split_batch, log records (OTLP path)", lambda: split_batch(logs, limits)),
        ("encode_logs", lambda: otlp_json.encode_logs(logs)),
    ]
    split_encoded = getattr(otlp_json, "split_encoded", None)
    if split_encoded is not None:
        cases += [("split_encoded, spans (the spool)", lambda: split_encoded(spans, "traces", limits)),
                  ("split_encoded, log records (the spool)", lambda: split_encoded(logs, "logs", limits))]
    print(f"µs per item ({len(spans)} task-run spans, {len(logs)} log records; best of 5 rounds of 5)")
    for name, fn in cases:
        best = min(timeit.repeat(fn, number=5, repeat=5)) / 5 / ITEMS * 1e6
        print(f"  {name:40} {best:7.2f}")


if __name__ == "__main__":
    main()

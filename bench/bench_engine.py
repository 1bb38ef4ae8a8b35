"""Engine benchmarks (issue 2). Not a test: prints figures and ratios measured in one run.

    python bench/bench_engine.py                 # everything
    python bench/bench_engine.py --only task     # per-task overhead vs the raw OTel SDK
    python bench/bench_engine.py --only map      # .map throughput
    python bench/bench_engine.py --only import   # import time
    python bench/bench_engine.py --only soak     # 100k task runs: RSS and export completeness

Fairness: for ``task`` and ``map`` both sides emit through the *same* SDK TracerProvider, processor and
exporter (a BatchSpanProcessor feeding an exporter that discards); otelflow adopts the application's
provider, so only the engine differs. The raw side emits the same span: same name, same attributes
(run ids, names, tags, code location, parameter types), the same two state events and final attributes.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _null_provider():  # type: ignore[no-untyped-def]
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def __init__(self) -> None:
            self.count = 0

        def export(self, spans):  # type: ignore[no-untyped-def]
            self.count += len(spans)
            return SpanExportResult.SUCCESS

    exporter = Discard()
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(exporter, max_queue_size=1 << 16))
    return provider, exporter


def _raw_task_span(tracer: Any, fn: Any, i: int, flow_run_id: str, extra: dict[str, Any]) -> Any:
    """What one otelflow task run emits, written by hand with the raw SDK: the baseline of the ratios."""
    from otelflow import semconv

    code = fn.__code__
    name = fn.__name__
    attrs = {
        semconv.RUN_TYPE: "task", semconv.CODE_FUNCTION_NAME: name, semconv.CODE_FILE_PATH: code.co_filename,
        semconv.CODE_LINE_NUMBER: code.co_firstlineno, semconv.TASK_NAME: name, semconv.RUN_ID: str(uuid.uuid4()),
        semconv.RUN_NAME: f"{name}-{i % 4096:03x}", semconv.FLOW_RUN_ID: flow_run_id, semconv.FLOW_NAME: "raw",
        semconv.PARAMETER_PREFIX + "x": type(i).__name__, **extra,
    }
    with tracer.start_as_current_span(f"task {name}", attributes=attrs) as span:
        span.add_event("Running")
        result = fn(i)
        span.set_attributes({semconv.RUN_STATE: "Completed", semconv.RUN_ATTEMPT: 1})
        span.add_event("Completed")
    return result


def bench_task(n: int, repeats: int) -> dict[str, float]:
    """Sequential task calls inside a flow vs raw spans doing the same."""
    from opentelemetry import trace

    provider, _ = _null_provider()
    trace.set_tracer_provider(provider)

    from otelflow import flow, semconv, tags, task

    @task
    def work(x: int) -> int:
        return x + 1

    @flow
    def sequential(count: int) -> int:
        total = 0
        with tags("bench"):
            for i in range(count):
                total += work(i)
        return total

    tracer = provider.get_tracer("raw")
    flow_run_id = str(uuid.uuid4())

    def raw(count: int) -> int:
        total = 0
        with tracer.start_as_current_span("flow raw"):
            for i in range(count):
                total += _raw_task_span(tracer, work.fn, i, flow_run_id, {semconv.TAGS: ["bench"]})
        return total

    def timed(fn, count):  # type: ignore[no-untyped-def]
        gc.collect()
        start = time.perf_counter()
        fn(count)
        elapsed = time.perf_counter() - start
        provider.force_flush()
        return elapsed / count * 1e6

    sequential(200)
    raw(200)  # warm up
    raw_us, of_us = [], []
    for _ in range(repeats):  # interleaved, so drift affects both sides alike
        raw_us.append(timed(raw, n))
        of_us.append(timed(sequential, n))
    r, o = statistics.median(raw_us), statistics.median(of_us)
    return {"raw_us_per_span": r, "otelflow_us_per_task_run": o, "ratio": o / r}


def _mapped_flow() -> tuple[Any, Any]:
    """The ``.map`` workload both map benches time: a flow mapping a trivial task over ``count`` items."""
    from otelflow import flow, task

    @task
    def inc(x: int) -> int:
        return x + 1

    @flow
    def mapped(count: int) -> int:
        return len(inc.map(range(count)).result())

    return inc, mapped


def _rate(fn: Any, n: int) -> float:
    """Items per second of one ``fn(n)`` call (which must return n)."""
    gc.collect()
    start = time.perf_counter()
    assert fn(n) == n
    return n / (time.perf_counter() - start)


def bench_map(n: int, repeats: int) -> dict[str, float]:
    """``task.map`` over n items in a flow (thread pool), task runs per second."""
    from opentelemetry import trace

    provider, _ = _null_provider()
    trace.set_tracer_provider(provider)
    inc, mapped = _mapped_flow()

    import concurrent.futures
    import contextvars

    from otelflow import semconv

    tracer = provider.get_tracer("raw")
    workers = min(32, (os.cpu_count() or 1) + 4)

    def raw_task(i: int, flow_run_id: str) -> int:
        return _raw_task_span(tracer, inc.fn, i, flow_run_id, {semconv.TASK_MAP_INDEX: i})

    def raw_mapped(count: int) -> int:
        # The hand-written equivalent: a thread pool, the context copied into each job, the same spans.
        with tracer.start_as_current_span("flow raw"), concurrent.futures.ThreadPoolExecutor(workers) as pool:
            flow_run_id = str(uuid.uuid4())
            futures = [pool.submit(contextvars.copy_context().run, raw_task, i, flow_run_id) for i in range(count)]
            return len([f.result() for f in futures])

    mapped(500)
    raw_mapped(500)
    rates, raw_rates = [], []
    for _ in range(repeats):
        for fn, out in ((raw_mapped, raw_rates), (mapped, rates)):
            out.append(_rate(fn, n))
            provider.force_flush()
    r, o = statistics.median(raw_rates), statistics.median(rates)
    return {"raw_threadpool_spans_per_s": r, "otelflow_task_runs_per_s": o, "best": max(rates),
            "ratio_raw_over_otelflow": r / o, "items": n}


def bench_map_engine_only(n: int, repeats: int) -> dict[str, float]:
    """``task.map`` with OTEL_SDK_DISABLED=true: the engine and thread pool alone, no span work."""
    os.environ["OTEL_SDK_DISABLED"] = "true"
    _, mapped = _mapped_flow()
    mapped(500)
    rates = [_rate(mapped, n) for _ in range(repeats)]
    return {"task_runs_per_s": statistics.median(rates), "items": n}


def bench_import(repeats: int) -> dict[str, float]:
    """Wall time of ``import otelflow`` in a fresh interpreter, minus a bare interpreter start."""

    def run(code: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
        return time.perf_counter() - start

    base = statistics.median(run("pass") for _ in range(repeats))
    imp = statistics.median(run("import otelflow") for _ in range(repeats))
    return {"import_ms": (imp - base) * 1e3, "interpreter_ms": base * 1e3}


SOAK = textwrap.dedent(
    """
    import json, os, sys, time
    from otelflow import flow, task, telemetry

    def rss_mb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    @task
    def work(x):
        return x

    samples = []

    @flow
    def soak(n: int):
        for i in range(n):
            work(i)
            if i % 10_000 == 0:
                samples.append(round(rss_mb(), 1))
        return n

    start = time.perf_counter()
    soak(int(sys.argv[1]))
    elapsed = time.perf_counter() - start
    telemetry.shutdown(60)
    print(json.dumps({"seconds": elapsed, "rss_samples_mb": samples, "final_rss_mb": round(rss_mb(), 1),
                      "stats": [dict(s) for s in []]}))
    """
)


def bench_soak(n: int) -> dict[str, object]:
    """n sequential task runs in one flow, exported to the spool: RSS over time and spans exported."""
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        env.update(OTELFLOW_HOME=home, OTELFLOW_LOGGING_TO_CONSOLE="false")
        proc = subprocess.run([sys.executable, "-c", SOAK, str(n)], env=env, capture_output=True, text=True,
                              cwd=ROOT, check=True)
        result = json.loads(proc.stdout)
        spans = 0
        for path in Path(home, "spool").glob("traces-*.jsonl"):
            for line in path.read_text().splitlines():
                for rs in json.loads(line)["resourceSpans"]:
                    for ss in rs["scopeSpans"]:
                        spans += len(ss["spans"])
        result.pop("stats")
        result.update(spans_exported=spans, spans_expected=n + 1, stderr=proc.stderr.strip()[-300:])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["task", "map", "import", "soak"])
    parser.add_argument("--tasks", type=int, default=20_000, help="sequential task runs per repeat")
    parser.add_argument("--map-items", type=int, default=10_000)
    parser.add_argument("--soak-runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("OTELFLOW_LOGGING_TO_CONSOLE", "false")
    results: dict[str, object] = {}
    # task and map adopt a global provider, which can be set once per process: each runs in its own child.
    for name in ("task", "map", "map_engine_only"):
        if args.only in (None, name) or (args.only == "map" and name == "map_engine_only"):
            proc = subprocess.run(
                [sys.executable, __file__, "--_child", name, str(args.tasks if name == "task" else args.map_items),
                 str(args.repeats)], capture_output=True, text=True, check=True, cwd=ROOT,
            )
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.only in (None, "import"):
        results["import"] = bench_import(args.repeats * 2)
    if args.only in (None, "soak"):
        results["soak"] = bench_soak(args.soak_runs)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    for name, figures in results.items():
        print(f"\n[{name}]")
        for key, value in figures.items():  # type: ignore[attr-defined]
            print(f"  {key:28} {value:.2f}" if isinstance(value, float) else f"  {key:28} {value}")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        kind, count, repeats = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        os.environ.setdefault("OTELFLOW_LOGGING_TO_CONSOLE", "false")
        bench = {"task": bench_task, "map": bench_map, "map_engine_only": bench_map_engine_only}[kind]
        out = bench(count, repeats)
        print(json.dumps(out))
    else:
        main()

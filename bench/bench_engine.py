"""Engine benchmarks. Not a test: prints figures and ratios measured in one run.

    python bench/bench_engine.py                 # everything
    python bench/bench_engine.py --only task     # per task run vs the raw OTel SDK
    python bench/bench_engine.py --only map      # .map throughput
    python bench/bench_engine.py --only console  # console rendering cost per run log record
    python bench/bench_engine.py --only import   # import time
    python bench/bench_engine.py --only soak     # 100k task runs: RSS and export completeness

Fairness: ``task`` and ``map`` set the application's global SDK providers *before otelflow is imported*, as a
user's application does: ``TracerProvider`` + ``BatchSpanProcessor`` and ``LoggerProvider`` +
``BatchLogRecordProcessor`` feeding exporters that discard (1M-item queues), and a ``MeterProvider``; otelflow
adopts them, so both sides pay the same SDK, and otelflow pays for the run log records it exports (Prefect's
engine lines) as a user does. ``map`` runs N = 3,000 and 10,000. Each baseline does exactly what a careful
hand-instrumenter would with the raw SDK, nothing more:

- ``bare``: the current span with one attribute around the function call;
- ``same content``: the span otelflow emits for a task run (same name, the same ~12 attributes, run id made
  the way otelflow makes it), still nothing else;
- ``contract by hand``: everything the telemetry contract exports for a default task run, written with the raw
  SDK and no engine: the same-content span, plus the run log record of Prefect's closing line ("Finished in
  state Completed()") with the run's attributes, through the SDK logger. It is the floor of what any
  implementation of the contract pays: its ratio to ``bare`` is what the contract alone costs against the
  issue's baseline, and otelflow's ratio to it is what the engine adds.

Rounds are interleaved (drift hits every side alike) and the median is reported.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
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
    """The application's global SDK providers, set before otelflow is imported, as a user's application has them:
    ``TracerProvider`` + ``BatchSpanProcessor`` and ``LoggerProvider`` + ``BatchLogRecordProcessor`` (exporters that
    discard, 1M-item queues) and a ``MeterProvider``. Without the logger provider the engine's run log records
    (Prefect's "Finished in state Completed()" of every task run) cost nothing here, and the figures flattered
    otelflow against a user's real setup (issue 27: `.map` read 1.12x here, 0.63-0.71x there)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from _discard import discarding_providers

    tracer_provider, logger_provider = discarding_providers()

    class Providers:
        def get_tracer(self, name: str) -> Any:
            return tracer_provider.get_tracer(name)

        def force_flush(self) -> None:
            tracer_provider.force_flush()
            logger_provider.force_flush()

    return Providers(), None


def _per_call_us(provider: Any, fn: Any, count: int) -> float:
    """Microseconds per item of one ``fn(count)`` call; the spans are exported (outside the timing) after."""
    gc.collect()
    start = time.perf_counter()
    fn(count)
    elapsed = time.perf_counter() - start
    provider.force_flush()
    return elapsed / count * 1e6


class _ContractByHand:
    """A default task run's telemetry, as the contract defines it, with the raw SDK and no engine.

    The span otelflow emits (the same name and attributes, the run id made as otelflow makes it) and the run log
    record of Prefect's closing line with the run's attributes (each value once, as exported), emitted through
    the application's SDK logger inside the span."""

    def __init__(self, provider: Any, static: dict[str, Any], task_name: str) -> None:
        from opentelemetry._logs import SeverityNumber, get_logger_provider

        from otelflow import semconv

        self.tracer = provider.get_tracer("raw")
        self.logger = get_logger_provider().get_logger("raw")
        self.static, self.task_name, self.sc = static, task_name, semconv
        self.info = SeverityNumber.INFO
        self.rng = random.Random(7)
        self.flow_run_id = self.new_id()

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128)))

    def run(self, fn: Any, i: int, record: bool = True) -> Any:
        """One task run's telemetry around ``fn(i)``; without the closing ``record``, the span alone (the "same
        content" side)."""
        sc = self.sc
        run_id, run_name = self.new_id(), f"{self.task_name}-{i & 4095:03x}"
        attrs = dict(self.static)
        attrs[sc.RUN_ID] = run_id
        attrs[sc.RUN_NAME] = run_name
        attrs[sc.FLOW_RUN_ID] = self.flow_run_id
        attrs[sc.FLOW_NAME] = "raw"
        attrs[sc.PARAMETER_PREFIX + "x"] = "int"
        with self.tracer.start_as_current_span(f"task {self.task_name}", attributes=attrs) as span:
            result = fn(i)
            span.set_attribute(sc.RUN_STATE, "Completed")  # known at the end only
            if record:
                self.logger.emit(severity_number=self.info, severity_text="INFO",
                                 body="Finished in state Completed()",
                                 attributes={sc.FLOW_RUN_ID: self.flow_run_id, sc.FLOW_RUN_NAME: "calm-otter",
                                             sc.FLOW_NAME: "raw", sc.TASK_RUN_ID: run_id, sc.TASK_RUN_NAME: run_name,
                                             sc.TASK_NAME: self.task_name})
        return result


def bench_task(n: int, repeats: int) -> dict[str, float]:
    """Sequential task calls inside a flow vs raw spans around the same function."""
    provider, _ = _null_provider()

    from otelflow import flow, semconv, task

    @task
    def work(x: int) -> int:
        return x + 1

    @flow
    def sequential(count: int) -> int:
        total = 0
        for i in range(count):
            total += work(i)
        return total

    tracer = provider.get_tracer("raw")
    fn = work.fn
    bare_attrs = {semconv.TASK_NAME: "work"}

    def bare(count: int) -> int:
        total = 0
        with tracer.start_as_current_span("flow raw"):
            for i in range(count):
                with tracer.start_as_current_span("task work", attributes=bare_attrs):
                    total += fn(i)
        return total

    by_hand = _ContractByHand(provider, dict(work.static_attributes), "work")

    def by_hand_runs(count: int, record: bool) -> int:
        total = 0
        with tracer.start_as_current_span("flow raw"):
            for i in range(count):
                total += by_hand.run(fn, i, record)
        return total

    def same_content(count: int) -> int:
        return by_hand_runs(count, False)

    def contract(count: int) -> int:
        return by_hand_runs(count, True)

    sides = {"bare": bare, "same_content": same_content, "contract": contract, "otelflow": sequential}
    for side in sides.values():  # warm up
        side(500)
    samples: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            samples[name].append(_per_call_us(provider, side, n))
    med = {name: statistics.median(values) for name, values in samples.items()}
    return {
        "bare_span_us": med["bare"], "same_content_span_us": med["same_content"],
        "contract_by_hand_us": med["contract"], "otelflow_task_run_us": med["otelflow"],
        "ratio_vs_bare": med["otelflow"] / med["bare"], "ratio_vs_same_content": med["otelflow"] / med["same_content"],
        "contract_by_hand_vs_bare": med["contract"] / med["bare"],
        "ratio_vs_contract_by_hand": med["otelflow"] / med["contract"],
    }


def bench_pending(n: int, repeats: int) -> dict[str, float]:
    """The pending record a flow run exports at start (and a task run after the threshold), and a flow run's cost.

    A pending record is one extra zero-duration span with the run's attributes; it is paid once per flow run and
    once per task run that is still running after OTELFLOW_PENDING_SPAN_AFTER_SECONDS (short task runs pay a
    dict insert and pop).
    """
    provider, _ = _null_provider()

    from otelflow import engine, flow, semconv, telemetry

    @flow
    def empty() -> None:
        return None

    tracer = telemetry.get_tracer()
    attrs = {semconv.RUN_TYPE: "flow", semconv.FLOW_NAME: "empty", semconv.RUN_ID: str(uuid.uuid4()),
             semconv.RUN_NAME: "calm-otter", semconv.FLOW_RUN_ID: str(uuid.uuid4()),
             semconv.CODE_FUNCTION_NAME: "empty", semconv.CODE_FILE_PATH: __file__, semconv.CODE_LINE_NUMBER: 1}

    def pending_records(count: int) -> None:
        with tracer.start_as_current_span("flow empty") as span:
            start = time.time_ns()
            for _ in range(count):
                engine._emit_pending(span, "flow empty", attrs, start)

    def flow_runs(count: int) -> None:
        for _ in range(count):
            empty()

    os.environ["OTELFLOW_LOG_RUN_EVENTS"] = "false"
    pending_records(100)
    flow_runs(100)
    pending = statistics.median(_per_call_us(provider, pending_records, n) for _ in range(repeats))
    flows = statistics.median(_per_call_us(provider, flow_runs, max(1, n // 10)) for _ in range(repeats))
    return {"pending_record_us": pending, "empty_flow_run_us": flows, "pending_share_of_flow_run": pending / flows}


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
    """``task.map`` over n items in a flow vs a thread pool running the function under a bare span."""
    provider, _ = _null_provider()
    inc, mapped = _mapped_flow()

    import concurrent.futures
    import contextvars

    from otelflow import semconv

    tracer = provider.get_tracer("raw")
    workers = min(32, (os.cpu_count() or 1) + 4)  # the same default as otelflow's pool
    fn = inc.fn
    bare_attrs = {semconv.TASK_NAME: "inc"}

    def raw_task(i: int) -> int:
        with tracer.start_as_current_span("task inc", attributes=bare_attrs):
            return fn(i)

    def raw_mapped(count: int, job: Any = raw_task) -> int:
        # The hand-written equivalent: a thread pool, the context copied into each job, a bare span each.
        with tracer.start_as_current_span("flow raw"), concurrent.futures.ThreadPoolExecutor(workers) as pool:
            futures = [pool.submit(contextvars.copy_context().run, job, i) for i in range(count)]
            return len([f.result() for f in futures])

    by_hand = _ContractByHand(provider, dict(inc.static_attributes), "inc")

    def contract_task(i: int) -> int:
        return by_hand.run(fn, i)  # type: ignore[no-any-return]

    def contract_mapped(count: int) -> int:
        # The same pool, each job emitting the contract's telemetry by hand (span and closing record).
        return raw_mapped(count, contract_task)

    sides = {"raw": raw_mapped, "contract": contract_mapped, "otelflow": mapped}
    for side in sides.values():
        side(500)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, side in sides.items():
            rates[name].append(_rate(side, n))
            provider.force_flush()
    r, c, o = (statistics.median(rates[name]) for name in sides)
    return {"threadpool_bare_spans_per_s": r, "threadpool_contract_by_hand_per_s": c,
            "otelflow_task_runs_per_s": o, "ratio_otelflow_over_raw": o / r, "contract_by_hand_over_raw": c / r,
            "ratio_otelflow_over_contract_by_hand": o / c, "items": n}


def bench_map_engine_only(n: int, repeats: int) -> dict[str, float]:
    """``task.map`` with OTEL_SDK_DISABLED=true: the engine and thread pool alone, no span work."""
    os.environ["OTEL_SDK_DISABLED"] = "true"
    _, mapped = _mapped_flow()
    mapped(500)
    rates = [_rate(mapped, n) for _ in range(repeats)]
    return {"task_runs_per_s": statistics.median(rates), "items": n}


CONSOLE = textwrap.dedent(
    """
    import io, json, sys, time
    from otelflow import flow, get_run_logger, task

    @task
    def chatty(count):
        logger = get_run_logger()
        start = time.perf_counter()
        for i in range(count):
            logger.info("processing item %s", i)
        return (time.perf_counter() - start) / count * 1e6

    @flow
    def f(count, repeats):
        return min(chatty(count) for _ in range(repeats))

    sink = io.StringIO()
    real, sys.stderr = sys.stderr, sink  # the console's output, kept off the terminal
    try:
        us = f(int(sys.argv[1]), int(sys.argv[2]))
    finally:
        sys.stderr = real
    print(json.dumps(us))
    """
)


def bench_console(repeats: int, count: int = 3000) -> dict[str, float]:
    """One run log record with the console on (the default) vs off; OTel export off on both sides."""
    out = {}
    for console in ("true", "false"):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))}
        env.update(OTELFLOW_LOGGING_TO_CONSOLE=console, OTEL_SDK_DISABLED="true", PYTHONPATH=str(ROOT))
        proc = subprocess.run([sys.executable, "-c", CONSOLE, str(count), str(repeats)], env=env,
                              capture_output=True, text=True, check=True, cwd=ROOT)
        out[console] = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"record_console_on_us": out["true"], "record_console_off_us": out["false"],
            "console_rendering_us": out["true"] - out["false"]}


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
        # n task spans, the flow span and the flow's pending record
        result.update(spans_exported=spans, spans_expected=n + 2, stderr=proc.stderr.strip()[-300:])
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["task", "map", "pending", "console", "import", "soak"])
    parser.add_argument("--tasks", type=int, default=20_000, help="sequential task runs per repeat")
    parser.add_argument("--map-items", default="3000,10000", help="items of each .map measured (comma-separated)")
    parser.add_argument("--soak-runs", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    os.environ.setdefault("OTELFLOW_LOGGING_TO_CONSOLE", "false")
    results: dict[str, object] = {}
    # task and map adopt a global provider, which can be set once per process: each runs in its own child.
    for name in ("task", "map", "map_engine_only", "pending"):
        if args.only in (None, name) or (args.only == "map" and name == "map_engine_only"):
            sizes = [int(n) for n in args.map_items.split(",")] if name.startswith("map") else [args.tasks]
            for size in sizes:
                proc = subprocess.run(
                    [sys.executable, __file__, "--_child", name, str(size), str(args.repeats)],
                    capture_output=True, text=True, check=True, cwd=ROOT,
                )
                key = f"{name} {size}" if len(sizes) > 1 else name
                results[key] = json.loads(proc.stdout.strip().splitlines()[-1])
    if args.only in (None, "console"):
        results["console"] = bench_console(args.repeats)
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
        bench = {"task": bench_task, "map": bench_map, "map_engine_only": bench_map_engine_only,
                 "pending": bench_pending}[kind]
        out = bench(count, repeats)
        print(json.dumps(out))
    else:
        main()

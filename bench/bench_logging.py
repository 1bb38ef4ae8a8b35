"""Run-log benchmarks (not a test).

(a) Overhead, in one process, the same providers for both sides: the application's global SDK
    ``TracerProvider`` + ``BatchSpanProcessor`` and ``LoggerProvider`` + ``BatchLogRecordProcessor``, each in front
    of an exporter that discards, set before otelflow is imported (otelflow adopts them); console output off:
      baseline   raw OTel span (start_as_current_span, 1 attribute) + one record through opentelemetry-
                 instrumentation-logging's LoggingHandler on a stdlib logger
      otelflow   one task run (called inside a flow) that makes one get_run_logger().info() call
    plus, to show where the time goes, the same two without the log record.
(b) Loss: 100k run-log records from one flow, exported to the embedded spool (child process, clean
    environment); records are counted in the spool files.

    python bench/bench_logging.py                 # both
    python bench/bench_logging.py --only overhead --n 20000 --rounds 7
    python bench/bench_logging.py --only loss --records 100000
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


# --- (a) overhead -----------------------------------------------------------------------------------------


def _providers() -> tuple[Any, Any, list[Any]]:
    """The application's global SDK providers, each batching into an exporter that discards."""
    from _discard import discarding_providers

    tracer_provider, logger_provider = discarding_providers()
    return tracer_provider, logger_provider, [tracer_provider, logger_provider]


def overhead(n: int, rounds: int) -> dict[str, Any]:
    os.environ["OTELFLOW_LOGGING_TO_CONSOLE"] = "false"
    tracer_provider, logger_provider, processors = _providers()  # before otelflow is imported

    from opentelemetry.instrumentation.logging.handler import LoggingHandler

    from otelflow import flow, get_run_logger, task
    tracer = tracer_provider.get_tracer("bench")
    raw_logger = logging.getLogger("bench.raw")
    raw_logger.propagate = False
    raw_logger.setLevel(logging.INFO)
    raw_logger.addHandler(LoggingHandler(logger_provider=logger_provider))

    def raw_span_and_record() -> None:
        for i in range(n):
            with tracer.start_as_current_span("task work", attributes={"task.name": "work"}):
                raw_logger.info("processing %s", i)

    # The same wire content as otelflow's: a span with a task span's attributes, a record with the run's.
    from otelflow import semconv as sc

    run_attrs = {
        sc.FLOW_RUN_ID: "0b6c1e8a-3f2d-4a59-9a43-2f7c1d0e5b11",
        sc.FLOW_RUN_NAME: "calm-otter",
        sc.FLOW_NAME: "bench",
        sc.TASK_RUN_ID: "5d1f0c2e-8b7a-4c3d-9e6f-1a2b3c4d5e6f",
        sc.TASK_RUN_NAME: "logs_once-3f1",
        sc.TASK_NAME: "logs_once",
    }
    span_attrs = {
        **run_attrs,
        sc.RUN_ID: run_attrs[sc.TASK_RUN_ID],
        sc.RUN_NAME: "logs_once-3f1",
        sc.RUN_TYPE: "task",
        sc.PARAMETER_PREFIX + "i": "int",
        sc.CODE_FUNCTION_NAME: "logs_once",
        sc.CODE_FILE_PATH: __file__,
        sc.CODE_LINE_NUMBER: 1,
        sc.RUN_ATTEMPT: 1,
    }

    def raw_span_and_record_same_content() -> None:
        for i in range(n):
            with tracer.start_as_current_span("task logs_once", attributes=span_attrs) as span:
                raw_logger.info("processing %s", i, extra=run_attrs)
                span.set_attribute(sc.RUN_STATE, "Completed")

    from opentelemetry._logs import SeverityNumber

    sdk_logger = logger_provider.get_logger("raw")

    def contract_by_hand() -> None:
        # Everything the telemetry contract exports for this run, with the raw SDK and no engine: the same-content
        # span and record, plus the run log record of Prefect's closing line ("Finished in state Completed()").
        for i in range(n):
            with tracer.start_as_current_span("task logs_once", attributes=span_attrs) as span:
                raw_logger.info("processing %s", i, extra=run_attrs)
                span.set_attribute(sc.RUN_STATE, "Completed")
                sdk_logger.emit(severity_number=SeverityNumber.INFO, severity_text="INFO",
                                body="Finished in state Completed()", attributes=run_attrs)

    def raw_span() -> None:
        for _ in range(n):
            with tracer.start_as_current_span("task work", attributes={"task.name": "work"}):
                pass

    @task
    def logs_once(i: int) -> int:
        get_run_logger().info("processing %s", i)
        return i

    @task
    def silent(i: int) -> int:
        return i

    @flow
    def task_runs_with_log() -> None:
        for i in range(n):
            logs_once(i)

    @flow
    def task_runs_without_log() -> None:
        for i in range(n):
            silent(i)

    variants: dict[str, Callable[[], None]] = {
        "raw span + 1 record (instrumentation-logging)": raw_span_and_record,
        "otelflow task run + 1 run-log call": task_runs_with_log,
        "raw span + 1 record, otelflow's attributes/events": raw_span_and_record_same_content,
        "the contract by hand (+ Prefect's closing record)": contract_by_hand,
        "raw span only": raw_span,
        "otelflow task run only": task_runs_without_log,
    }
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(rounds):
        for name, fn in variants.items():  # interleaved, so drift hits every variant alike
            start = time.perf_counter()
            fn()
            samples[name].append((time.perf_counter() - start) / n * 1e6)
            for p in processors:
                p.force_flush(30_000)
    return {name: {"best_us": min(v), "median_us": statistics.median(v)} for name, v in samples.items()}


def print_overhead(result: dict[str, Any], n: int, rounds: int) -> None:
    print(f"\n(a) overhead per run, µs  (n={n} per round, {rounds} rounds, best / median)")
    width = max(len(k) for k in result)
    for name, r in result.items():
        print(f"  {name:<{width}}  {r['best_us']:8.1f}  {r['median_us']:8.1f}")
    base = result["raw span + 1 record (instrumentation-logging)"]
    ours = result["otelflow task run + 1 run-log call"]
    print(
        f"  ratio task run + log / raw span + record: best {ours['best_us'] / base['best_us']:.2f}x, "
        f"median {ours['median_us'] / base['median_us']:.2f}x  (target <= 1.6x)"
    )
    same = result["raw span + 1 record, otelflow's attributes/events"]
    print(
        f"  ratio vs raw span + record carrying the same attributes/events: "
        f"median {ours['median_us'] / same['median_us']:.2f}x"
    )
    floor = result["the contract by hand (+ Prefect's closing record)"]
    print(
        f"  the contract by hand / raw span + record: median {floor['median_us'] / base['median_us']:.2f}x "
        f"(what the contract's telemetry costs with no engine); otelflow / the contract by hand: "
        f"median {ours['median_us'] / floor['median_us']:.2f}x"
    )
    record_raw = base["median_us"] - result["raw span only"]["median_us"]
    record_ours = ours["median_us"] - result["otelflow task run only"]["median_us"]
    print(
        f"  cost of the log record alone (median difference): raw handler {record_raw:.1f} µs, "
        f"otelflow run log {record_ours:.1f} µs ({record_ours / record_raw:.2f}x)"
    )


# --- (c) the application's own default batch processors, with the console on -----------------------------

STARVE = """
import json, sys
from opentelemetry import _logs, trace
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

counts = {"spans": 0, "logs": 0}

class Spans(SpanExporter):
    def export(self, spans):
        counts["spans"] += len(spans)
        return SpanExportResult.SUCCESS

class Logs(LogRecordExporter):
    def export(self, batch):
        counts["logs"] += len(batch)
        return LogRecordExportResult.SUCCESS
    def shutdown(self):
        pass
    def force_flush(self, timeout_millis=0):
        return True

tracer_provider = TracerProvider()
tracer_provider.add_span_processor(BatchSpanProcessor(Spans()))  # the SDK's defaults: a 2048-item queue
trace.set_tracer_provider(tracer_provider)
logger_provider = LoggerProvider()
logger_provider.add_log_record_processor(BatchLogRecordProcessor(Logs()))
_logs.set_logger_provider(logger_provider)

from otelflow import flow, get_run_logger, task

@task
def item(i):
    get_run_logger().info("item %s", i)
    return i

@flow
def five_k(n):
    for i in range(n):
        item(i)

n = int(sys.argv[1])
five_k(n)
tracer_provider.force_flush()
logger_provider.force_flush()
print(json.dumps({"spans": counts["spans"], "logs": counts["logs"], "runs": n + 1}))
"""


def starve(tasks: int, repeats: int) -> list[dict[str, int]]:
    """A flow of ``tasks`` task runs logging once each, console on (stderr to /dev/null), application providers."""
    results = []
    for _ in range(repeats):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))}
        env.update(PYTHONPATH=str(REPO))
        proc = subprocess.run([sys.executable, "-c", STARVE, str(tasks)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, check=True)
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return results


def print_starve(results: list[dict[str, int]], tasks: int) -> None:
    print(f"\n(c) {tasks}-task flow, one log line per task, console on, the application's default batch processors")
    for r in results:
        print(f"  spans exported {r['spans']} (expected {r['runs'] + 1} with the pending record), "
              f"records exported {r['logs']} (expected {r['runs'] + 1} with the engine's lines)")


# --- (b) loss ---------------------------------------------------------------------------------------------


def _loss_child(records: int) -> None:
    from otelflow import flow, get_run_logger, telemetry

    @flow
    def chatty() -> None:
        logger = get_run_logger()
        for i in range(records):
            logger.info("record %d", i, extra={"i": i})

    start = time.perf_counter()
    chatty()
    logged = time.perf_counter() - start
    ok = telemetry.flush(120)
    stats = telemetry.stats()
    print(json.dumps({"seconds": logged, "flushed": ok, "stats": stats}))


def loss(records: int) -> dict[str, Any]:
    from otelflow._internal.spool.reader import iter_spool

    with tempfile.TemporaryDirectory(prefix="otelflow-bench-") as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))}
        # Lifecycle records of the engine (flow begin/finish) are off so the spool holds exactly the records logged.
        env.update(OTELFLOW_HOME=home, OTELFLOW_LOGGING_TO_CONSOLE="false", OTELFLOW_LOG_RUN_EVENTS="false",
                   PYTHONPATH=str(REPO))
        proc = subprocess.run(
            [sys.executable, __file__, "--loss-child", str(records)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        child = json.loads(proc.stdout.strip().splitlines()[-1])
        spool = Path(home) / "spool"
        indices = set()
        exported = 0
        for _resource, item in iter_spool(spool, "logs"):
            exported += 1
            for kv in item.get("attributes", []):
                if kv["key"] == "i":
                    indices.add(int(kv["value"]["intValue"]))
    logs_stats = next(s for s in child["stats"] if s["signal"] == "logs")
    return {
        "logged": records,
        "in_spool": exported,
        "distinct": len(indices),
        "dropped": logs_stats["dropped"],
        "seconds": child["seconds"],
        "flushed": child["flushed"],
    }


def print_loss(result: dict[str, Any]) -> None:
    print("\n(b) 100k-record flow -> spool")
    print(
        f"  logged {result['logged']}, in spool {result['in_spool']} ({result['distinct']} distinct), "
        f"dropped {result['dropped']}, lost {result['logged'] - result['distinct']}; "
        f"{result['seconds']:.1f} s in the flow ({result['logged'] / result['seconds']:,.0f} records/s), "
        f"flush ok: {result['flushed']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", choices=["overhead", "loss", "starve"])
    parser.add_argument("--n", type=int, default=20_000, help="task runs per round (overhead)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--records", type=int, default=100_000, help="run-log records (loss)")
    parser.add_argument("--loss-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loss_child is not None:
        _loss_child(args.loss_child)
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    if args.only in (None, "overhead"):
        print_overhead(overhead(args.n, args.rounds), args.n, args.rounds)
    if args.only in (None, "loss"):
        print_loss(loss(args.records))
    if args.only in (None, "starve"):
        print_starve(starve(5000, 3), 5000)


if __name__ == "__main__":
    main()

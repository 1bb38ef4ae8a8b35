"""Telemetry under a collector outage (issue 11). Not a test: prints figures measured in one run.

    python bench/bench_outage.py                  # 20k-task flow: spool vs dead collector; re-ship 100k spans
    python bench/bench_outage.py -n 5000 --reship 20000
    python bench/bench_outage.py --only flow      # or --only reship, --only recover

``flow``: the same flow of ``n`` sequential task runs, each in a fresh process, (a) with the embedded spool
exporter and (b) with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing at a closed port (a dead collector: batches go
to the outage buffer). Reports the flow's own wall time (measured inside the process), the process's total
time (exit included, bounded by ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``), and the ratio dead/spool
(target <= 1.2x), plus the exit line and the counts (every span either exported, on disk or dropped).

``reship``: writes ``--reship`` spans to an outage-buffer folder (512-span lines, as the processor writes them),
then times :func:`otelflow._internal.export.ship.ship_directory` sending them over OTLP/HTTP to the loopback test
receiver (tests/otlp_receiver.py, decoding every request with opentelemetry-proto).

``recover``: ``--lines`` one-span lines in an outage buffer (a slow flow's outage), re-sent by the processor once
the collector is back (lines joined into batches) against a request per line, both to the loopback receiver.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

FLOW = ROOT / "tests" / "many_steps_flow.py"  # shared with test_outage.py


def _env(home: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))}
    env.update(PYTHONPATH=str(ROOT), OTELFLOW_HOME=home, OTELFLOW_LOGGING_TO_CONSOLE="false",
               OTELFLOW_LOG_RUN_EVENTS="false", **extra)
    return env


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(n: int, **extra: str) -> tuple[float, float, str, list[dict[str, object]]]:
    with tempfile.TemporaryDirectory() as home:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, str(FLOW), str(n), "--stats"], env=_env(home, **extra),
                              capture_output=True, text=True, timeout=600)
        total = time.perf_counter() - started
    if proc.returncode:
        raise SystemExit(proc.stderr)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    flow_s = next(x["flow_s"] for x in lines if "flow_s" in x)
    stats = next((x["stats"] for x in lines if "stats" in x), [])
    report = " | ".join(line for line in proc.stderr.splitlines() if line.startswith("otelflow:"))
    return flow_s, total, report, stats


def bench_flow(n: int, repeats: int, shutdown: float) -> None:
    print(f"flow of {n} sequential task runs (best of {repeats}); OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS={shutdown:g}")
    results = {}
    for name, extra in (
        ("spool (embedded default)", {}),
        ("dead collector (outage buffer)", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}),
    ):
        runs = [_run(n, OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS=str(shutdown), **extra) for _ in range(repeats)]
        best = min(runs, key=lambda r: r[0])
        results[name] = best
        print(f"  {name:32s} flow {best[0]:6.2f} s   process total {max(r[1] for r in runs):6.2f} s (worst)")
        if best[2]:
            print(f"    stderr: {best[2]}")
        for signal in best[3]:
            s = dict(signal)
            print(f"    {s['signal']}: queued {s['queued']}, exported {s['exported']}, on disk {s['on_disk']}, "
                  f"dropped {s['dropped']}")
    spool, dead = (results[k][0] for k in results)
    print(f"  ratio dead/spool: {dead / spool:.2f}x (target <= 1.2x)")


def _task_spans(count: int) -> list[object]:
    """``count`` finished spans with a task run's attributes."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "bench"}), shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("otelflow", "0.1.0")
    attrs = {"otelflow.run.type": "task", "otelflow.task.name": "step", "otelflow.run.state": "Completed",
             "otelflow.flow.name": "many", "otelflow.run.id": "0" * 36, "otelflow.flow_run.id": "1" * 36}
    for i in range(count):
        tracer.start_span("task step", attributes={**attrs, "otelflow.run.attempt": 1, "i": i}).end()
    return list(memory.get_finished_spans())


def _received_spans(receiver: object) -> int:
    return sum(len(ss.spans) for r in receiver.trace_requests for rs in r.resource_spans  # type: ignore[attr-defined]
               for ss in rs.scope_spans)


def bench_recover(lines: int) -> None:
    """A slow flow's outage leaves a line of one span per worker wake-up: how fast the processor re-sends them
    once the collector is back (lines joined into batches), against a request per line (what it did before, and
    what `ship_directory` still does with a spool's 512-span lines). Both over real OTLP/HTTP to the loopback
    receiver, from the same buffer."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from otlp_receiver import OTLPReceiver

    from otelflow._internal.export.outage import OutageBuffer
    from otelflow._internal.export.pipeline import BatchProcessor
    from otelflow._internal.export.ship import exporter_callable, ship_directory
    from otelflow._internal.spool.otlp_json import encode_spans

    spans = _task_spans(lines)
    figures = {}
    for variant in ("joined", "a request per line"):
        with tempfile.TemporaryDirectory() as folder, OTLPReceiver() as receiver:
            buffer = OutageBuffer(Path(folder), "traces", encode_spans, max_bytes=1 << 30)
            for span in spans:
                buffer.append([span])
            exporter = OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces")
            if variant == "joined":
                started = time.perf_counter()
                processor = BatchProcessor(exporter_callable(exporter), exporter.shutdown, signal="traces",
                                           buffer=buffer)
                while processor.on_disk:
                    processor.force_flush(1)
                elapsed = time.perf_counter() - started
                processor.shutdown(5)
                requests = len(receiver.trace_requests)
            else:
                buffer.close()  # its lines stay on disk, as an outage at exit leaves them
                started = time.perf_counter()
                result = ship_directory(Path(folder), "traces", exporter, delete_shipped=True)
                elapsed = time.perf_counter() - started
                exporter.shutdown()
                requests = result.lines_sent
            figures[variant] = elapsed
            print(f"re-send {lines} one-span lines, {variant}: {elapsed:.3f} s in {requests} request(s); "
                  f"received {_received_spans(receiver)}")
    print(f"joined: {figures['a request per line'] / figures['joined']:.1f}x faster than a request per line")


def bench_reship(count: int) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from otlp_receiver import OTLPReceiver

    from otelflow._internal.export.ship import ship_directory
    from otelflow._internal.spool.writer import SpoolWriter, encode_spans

    spans = _task_spans(count)
    with tempfile.TemporaryDirectory() as folder, OTLPReceiver() as receiver:
        writer = SpoolWriter(Path(folder), "traces")
        for start in range(0, count, 512):
            writer.write(encode_spans(spans[start:start + 512]))
        writer.close()
        size = sum(p.stat().st_size for p in Path(folder).glob("*.jsonl"))
        exporter = OTLPSpanExporter(endpoint=receiver.endpoint + "/v1/traces")
        started = time.perf_counter()
        result = ship_directory(Path(folder), "traces", exporter, delete_shipped=True)
        elapsed = time.perf_counter() - started
        exporter.shutdown()
        received = _received_spans(receiver)
    print(f"re-ship {count} buffered spans ({size / 2**20:.1f} MiB on disk, {result.lines_sent} lines) over "
          f"OTLP/HTTP: {elapsed:.2f} s = {count / elapsed:,.0f} spans/s; received {received}, failed={result.failed}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="task runs in the flow")
    parser.add_argument("-r", "--repeats", type=int, default=2, help="repeats per variant (best flow time)")
    parser.add_argument("--shutdown", type=float, default=5.0, help="OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS")
    parser.add_argument("--reship", type=int, default=100_000, help="spans to re-ship from the buffer")
    parser.add_argument("--lines", type=int, default=2_000, help="one-span buffer lines to recover")
    parser.add_argument("--only", choices=["flow", "reship", "recover"])
    args = parser.parse_args()
    if args.only in (None, "flow"):
        bench_flow(args.n, args.repeats, args.shutdown)
    if args.only in (None, "reship"):
        bench_reship(args.reship)
    if args.only in (None, "recover"):
        bench_recover(args.lines)


if __name__ == "__main__":
    main()

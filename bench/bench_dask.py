"""DaskTaskRunner overhead (issue 4). Not a test: prints figures and ratios measured in one run.

    python bench/bench_dask.py                       # 400 tasks x 3 repeats, 2 worker processes, OTLP export
    python bench/bench_dask.py -n 1000 --workers 2 --export none

One ``LocalCluster(processes=True, threads_per_worker=1)`` serves every variant, so only the submission path
differs:

- ``plain``: ``client.gather(client.map(inc, range(n), pure=False))``, the same function without otelflow.
- ``otelflow``: a flow with ``DaskTaskRunner(cluster=cluster)`` running ``inc.map(range(n)).result()``:
  per task a span on the worker (child of the flow span, hydrated from the carrier), and a telemetry
  flush before returning (``flush_telemetry=True``, the default).
- ``otelflow, no flush``: the same with ``flush_telemetry=False`` (spans leave on the batch schedule).

``--export otlp`` (default) points the flow process and the workers at an in-process OTLP/HTTP receiver
(tests/otlp_receiver.py), so the flush does real export round trips; ``--export none`` turns export off.
Best-of-repeats wall time per variant; per-task overhead = (variant - plain) / n.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def inc(x: int) -> int:
    return x + 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=400, help="tasks per repeat")
    parser.add_argument("-r", "--repeats", type=int, default=3, help="repeats (best is reported)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (1 thread each)")
    parser.add_argument("--export", choices=["otlp", "none"], default="otlp")
    args = parser.parse_args()

    receiver = None
    if args.export == "otlp":
        sys.path.insert(0, str(ROOT / "tests"))
        from otlp_receiver import OTLPReceiver

        receiver = OTLPReceiver().start()
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = receiver.endpoint
    else:
        for signal in ("TRACES", "LOGS"):
            os.environ[f"OTEL_{signal}_EXPORTER"] = "none"
    os.environ["OTEL_METRICS_EXPORTER"] = "none"
    os.environ.setdefault("OTEL_SERVICE_NAME", "bench-dask")
    os.environ.setdefault("OTELFLOW_LOGGING_TO_CONSOLE", "false")

    # Environment first: the workers inherit it when the cluster starts.
    from distributed import Client, LocalCluster

    from otelflow import flow, task
    from otelflow.integrations.dask import DaskTaskRunner

    inc_task = task(inc, name="inc")
    n, repeats = args.n, args.repeats

    cluster_kwargs = {"n_workers": args.workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}
    with LocalCluster(**cluster_kwargs) as cluster, Client(cluster) as client:

        def plain() -> float:
            start = time.perf_counter()
            results = client.gather(client.map(inc, range(n), pure=False))
            elapsed = time.perf_counter() - start
            assert results == [x + 1 for x in range(n)]
            return elapsed

        def with_otelflow(flush: bool) -> float:
            @flow(name="bench_dask", task_runner=DaskTaskRunner(cluster=cluster, flush_telemetry=flush))
            def bench_flow() -> list[int]:
                return inc_task.map(range(n)).result()

            start = time.perf_counter()
            results = bench_flow()
            elapsed = time.perf_counter() - start
            assert results == [x + 1 for x in range(n)]
            return elapsed

        variants = {
            "plain client.map": plain,
            "otelflow DaskTaskRunner": lambda: with_otelflow(True),
            "otelflow, flush_telemetry=False": lambda: with_otelflow(False),
        }
        for fn in variants.values():  # warm-up: worker imports, function caches, first telemetry setup
            fn()
        best = {name: min(fn() for _ in range(repeats)) for name, fn in variants.items()}

    if receiver is not None:
        receiver.stop()
    base = best["plain client.map"]
    print(f"{n} tasks, {args.workers} worker processes x 1 thread, export={args.export}, best of {repeats}")
    print(f"{'variant':<34}{'total s':>9}{'ms/task':>10}{'overhead ms/task':>18}{'ratio':>8}")
    for name, elapsed in best.items():
        print(f"{name:<34}{elapsed:>9.3f}{elapsed / n * 1e3:>10.3f}{(elapsed - base) / n * 1e3:>18.3f}"
              f"{elapsed / base:>8.2f}x")
    flush_cost = (best["otelflow DaskTaskRunner"] - best["otelflow, flush_telemetry=False"]) / n * 1e3
    print(f"\nper-task cost of the worker flush: {flush_cost:.3f} ms (wall, {args.workers} workers in parallel)")


if __name__ == "__main__":
    main()

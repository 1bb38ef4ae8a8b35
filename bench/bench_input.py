"""Flow run input wake-up latency (not a test): from ``send_input`` returning to the waiting flow resuming.

A flow in a child process waits in ``receive_input(dict, key_prefix="bench", poll_interval=10)`` (Prefect's
default poll interval); this process sends one input at a time with ``send_input`` and notes the wall-clock
time when the call returns; the child notes when ``next()`` hands it the value (same machine, same clock).
Before each send the child is back in its wait (it has printed the previous value, and we pause 20-60 ms).

    python bench/bench_input.py                 # both stores, 200 inputs each
    python bench/bench_input.py --n 500 --only redis
"""

from __future__ import annotations

import argparse
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

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

_WAITER = textwrap.dedent("""
    import sys, time
    from otelflow import flow
    from otelflow.context import FlowRunContext
    from otelflow.input import receive_input

    @flow
    def waiter(n: int) -> None:
        print(FlowRunContext.get().flow_run.id, flush=True)
        handler = receive_input(dict, timeout=120, poll_interval=10, key_prefix="bench")
        for _ in range(n):
            item = handler.next()
            print(item["i"], repr(time.time()), flush=True)

    waiter(int(sys.argv[1]))
""")


def measure(url: str, n: int, workdir: str) -> list[float]:
    """Latencies in milliseconds, one per input."""
    from otelflow.input import send_input
    from otelflow.stores import reset_stores

    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env.update(OTELFLOW_STORE_URL=url, OTELFLOW_HOME=workdir, OTELFLOW_LOGGING_TO_CONSOLE="false",
               PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", _WAITER, str(n)], stdout=subprocess.PIPE, text=True, env=env)
    assert child.stdout is not None
    try:
        flow_run_id = uuid.UUID(child.stdout.readline().strip())
        latencies = []
        for i in range(n):
            # Let the waiter get back into its wait; a random pause so that sends do not fall in step with
            # sqlite's 25 ms change check (which would make its latency look constant).
            time.sleep(random.uniform(0.02, 0.06))
            send_input({"i": i}, flow_run_id, sender="bench", key_prefix="bench")
            sent = time.time()
            index, received = child.stdout.readline().split()
            assert int(index) == i
            latencies.append((float(received) - sent) * 1000)
        child.wait(60)
        return latencies
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)
        reset_stores()


def report(title: str, latencies: list[float]) -> None:
    q = statistics.quantiles(latencies, n=100)
    print(f"{title:10s} n={len(latencies)}  p50 {q[49]:7.2f} ms   p95 {q[94]:7.2f} ms   "
          f"min {min(latencies):6.2f} ms   max {max(latencies):7.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--only", choices=["sqlite", "redis"])
    args = parser.parse_args()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cpus; receive_input(poll_interval=10)")
    with tempfile.TemporaryDirectory(prefix="otelflow-bench-input-") as workdir:
        os.environ["OTELFLOW_HOME"] = workdir
        if args.only in (None, "sqlite"):
            from otelflow.stores.sqlite import sqlite_url

            url = sqlite_url(Path(workdir) / "store.sqlite3")
            os.environ["OTELFLOW_STORE_URL"] = url
            _reset_settings()
            report("sqlite", measure(url, args.n, workdir))
        if args.only in (None, "redis"):
            import importlib

            # tests/redis_server.py: a throwaway redis-server (on sys.path above; imported by name for mypy's sake)
            redis_server = importlib.import_module("redis_server")
            _stop, start_redis_server = redis_server._stop, redis_server.start_redis_server

            process, url = start_redis_server(workdir)
            try:
                os.environ["OTELFLOW_STORE_URL"] = url
                _reset_settings()
                report("redis", measure(url, args.n, workdir))
            finally:
                _stop(process)


def _reset_settings() -> None:
    from otelflow.settings import reset_settings

    reset_settings()


if __name__ == "__main__":
    main()

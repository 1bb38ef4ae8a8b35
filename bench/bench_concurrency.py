"""µs to acquire + release one uncontended global concurrency slot: otelflow on sqlite and Redis vs Prefect 3.9.1.

    .venv/bin/python bench/bench_concurrency.py [--runs N]

otelflow: ``with concurrency("bench"):`` against a fresh sqlite file and a throwaway ``redis-server``.
Prefect: the same loop with ``prefect.concurrency.sync.concurrency`` run by ``/root/prefect-venv/bin/python`` in a
fresh process with a fresh ``PREFECT_HOME`` (its default: an ephemeral local API server on sqlite). The script
re-runs itself under Prefect's interpreter with ``--prefect``. Also: the cost of the tag-limit hook when no tag
limits exist (what every task run pays).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PREFECT_PYTHON = "/root/prefect-venv/bin/python"


def _time_loop(runs: int, body: object) -> float:
    assert callable(body)
    for _ in range(max(10, runs // 20)):  # warm up
        body()
    start = time.perf_counter()
    for _ in range(runs):
        body()
    return (time.perf_counter() - start) / runs * 1e6


def _prefect(runs: int) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.concurrency.sync import concurrency

    with get_client(sync_client=True) as client:
        client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name="bench", limit=1000))

    def body() -> None:
        with concurrency("bench"):
            pass

    print(json.dumps({"prefect_us": _time_loop(runs, body)}))


def _otelflow(url: str, runs: int) -> tuple[float, float]:
    from otelflow.concurrency import limits
    from otelflow.concurrency.sync import concurrency
    from otelflow.stores import get_store

    store = get_store(url)
    limits.create_global_concurrency_limit("bench", 1000, store=store)

    def body() -> None:
        with concurrency("bench", store=store):
            pass

    def hook() -> None:
        with limits.acquire_tag_slots(["etl", "nightly"], "run", store=store):
            pass

    return _time_loop(runs, body), _time_loop(runs * 10, hook)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--prefect", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.prefect:
        _prefect(args.runs)
        return
    from otelflow.stores.sqlite import sqlite_url

    results: dict[str, tuple[float, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["sqlite"] = _otelflow(sqlite_url(Path(tmp) / "bench.sqlite3"), args.runs)
        if shutil.which("redis-server"):
            port = _free_port()
            server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no",
                                       "--dir", tmp], stdout=subprocess.DEVNULL)
            try:
                time.sleep(0.3)
                results["redis"] = _otelflow(f"redis://127.0.0.1:{port}/0", args.runs)
            finally:
                server.terminate()
                server.wait(10)
        prefect_us = None
        if Path(PREFECT_PYTHON).exists():
            env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "OTEL"))}
            env.update(PREFECT_HOME=str(Path(tmp) / "prefect-home"), PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true")
            out = subprocess.run([PREFECT_PYTHON, __file__, "--prefect", "--runs", str(max(50, args.runs // 5))],
                                 env=env, capture_output=True, text=True, timeout=900)
            lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
            if lines:
                prefect_us = float(json.loads(lines[-1])["prefect_us"])
            else:
                print("Prefect run failed:", out.stderr[-2000:], file=sys.stderr)
    print("acquire + release one uncontended slot (with concurrency('bench'): pass)")
    for backend, (us, _) in results.items():
        ratio = f"  ({prefect_us / us:.0f}x faster than Prefect)" if prefect_us else ""
        print(f"  otelflow {backend:<7} {us:10.1f} us{ratio}")
    if prefect_us is not None:
        print(f"  prefect 3.9.1    {prefect_us:10.1f} us  (ephemeral local API server, sqlite)")
    print("tag-limit hook, no tag limits (acquire_tag_slots on a plain task run)")
    for backend, (_, hook_us) in results.items():
        print(f"  otelflow {backend:<7} {hook_us:10.2f} us")


if __name__ == "__main__":
    main()

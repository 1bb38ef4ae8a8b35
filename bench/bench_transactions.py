"""Transaction overhead against the bare store write (not a test).

For each store (a sqlite file; a throwaway local redis-server):
  direct     the same store write done directly: one ``INSERT OR REPLACE`` (autocommit, WAL) / one ``SET``
  empty      ``with Transaction(key=<new key>): pass`` -- span, context, one conditional record write
  one-task   ``with Transaction(key=<new key>): task(1)`` -- plus a task run, its record lookup and staging
  lock       (redis) ``try_lock`` + ``release_lock``: round trips counted by the server (INFO commandstats)

Spans go through the SDK (TracerProvider + BatchSpanProcessor) into a discarding exporter.

    python bench/bench_transactions.py                  # both stores
    python bench/bench_transactions.py --n 2000 --rounds 5 --only sqlite
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def _interleaved(fns: dict[str, Callable[[int], None]], n: int, rounds: int) -> list[dict[str, float]]:
    """Per round, µs per operation of each function, run back to back: a ratio inside one round compares
    the two sides under the same machine load (this machine is shared and noisy)."""
    for fn in fns.values():
        fn(max(n // 10, 10))  # warm-up (script loading, connections, imports)
    results = []
    for _ in range(rounds):
        row = {}
        for name, fn in fns.items():
            started = time.perf_counter()
            fn(n)
            row[name] = (time.perf_counter() - started) / n * 1e6
        results.append(row)
    return results


def _direct_sqlite(path: Path) -> Callable[[int], None]:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    from otelflow.stores.sqlite import _SCHEMA

    for statement in _SCHEMA:  # the store's own table: the very write a commit does, done by hand
        conn.execute(statement)
    value = '{"version":1,"tasks":{}}'

    def run(n: int) -> None:
        for _ in range(n):
            conn.execute("INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)",
                         ("txn", uuid.uuid4().hex, value))

    return run


def _direct_redis(url: str) -> Callable[[int], None]:
    import redis

    client = redis.Redis.from_url(url)
    value = '{"version":1,"tasks":{}}'

    def run(n: int) -> None:
        for _ in range(n):
            client.set(f"direct:{uuid.uuid4().hex}", value)

    return run


def _transactions(url: str) -> tuple[Callable[[int], None], Callable[[int], None]]:
    from otelflow import task
    from otelflow.transactions import Transaction

    @task
    def one(x: int) -> int:
        return x

    def empty(n: int) -> None:
        for _ in range(n):
            with Transaction(key=uuid.uuid4().hex, store=url):
                pass

    def one_task(n: int) -> None:
        for _ in range(n):
            with Transaction(key=uuid.uuid4().hex, store=url):
                one(1)

    return empty, one_task


def _raw_span() -> Callable[[int], None]:
    """A hand-written span with the transaction span's content (4 attributes, the commit event, the outcome)."""
    from otelflow import semconv, telemetry

    tracer = telemetry.get_tracer()

    def run(n: int) -> None:
        for _ in range(n):
            span = tracer.start_span("transaction k", attributes={
                semconv.TRANSACTION_KEY: "k", semconv.TRANSACTION_ISOLATION_LEVEL: "READ_COMMITTED",
                semconv.TRANSACTION_COMMIT_MODE: "LAZY", semconv.STORE_BACKEND: "sqlite"})
            span.add_event(semconv.EVENT_TRANSACTION_COMMIT)
            span.set_attribute(semconv.TRANSACTION_OUTCOME, "committed")
            span.end()

    return run


def _bare_task() -> Callable[[int], None]:
    from otelflow import task

    @task
    def one(x: int) -> int:
        return x

    def run(n: int) -> None:
        for _ in range(n):
            one(1)

    return run


def _lock_round_trips(url: str, pairs: int) -> tuple[float, float, float]:
    """Commands per acquire+release (each is one round trip: nothing is pipelined), µs per pair, µs per PING."""
    import redis

    from otelflow.stores import get_store

    store = get_store(url)
    store.try_lock("bench-warm", "h", 5)
    store.release_lock("bench-warm", "h")
    client = redis.Redis.from_url(url)

    client.config_resetstat()
    started = time.perf_counter()
    for i in range(pairs):
        store.try_lock(f"bench-{i}", "holder", 30)
        store.release_lock(f"bench-{i}", "holder")
    elapsed = time.perf_counter() - started
    # Commands the client sent (the GET/SET/DEL inside the Lua scripts are counted separately, as script calls).
    stats = client.info("commandstats")
    commands = sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval",
                                                                "cmdstat_script|load"))
    started = time.perf_counter()
    for _ in range(pairs):
        client.ping()
    ping = time.perf_counter() - started
    return commands / pairs, elapsed / pairs * 1e6, ping / pairs * 1e6


def _report(title: str, rows: list[dict[str, float]]) -> None:
    def med(name: str) -> float:
        return statistics.median(row[name] for row in rows)

    def ratio(name: str) -> float:
        return statistics.median(row[name] / row["direct"] for row in rows)

    print(f"\n{title}   (median of {len(rows)} rounds; ratios taken within each round)")
    print(f"  direct write             {med('direct'):9.1f} µs")
    print(f"  empty transaction        {med('empty'):9.1f} µs   {ratio('empty'):5.2f}x direct   (target <= 2x)")
    print(f"  1-task transaction       {med('one_task'):9.1f} µs   {ratio('one_task'):5.2f}x direct")
    print(f"  raw span, same content   {med('raw_span'):9.1f} µs   {ratio('raw_span'):5.2f}x direct   "
          "(the span alone; direct write + raw span = "
          f"{statistics.median((row['direct'] + row['raw_span']) / row['direct'] for row in rows):.2f}x)")
    extra = statistics.median(row["one_task"] - row["bare_task"] for row in rows)
    print(f"  bare task run (no txn)   {med('bare_task'):9.1f} µs   (1-task txn - bare task: {extra:.1f} µs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", choices=["sqlite", "redis"])
    args = parser.parse_args()

    os.environ.setdefault("OTELFLOW_LOGGING_TO_CONSOLE", "false")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    from otelflow import telemetry

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
    print(f"n={args.n} per round; Python {sys.version.split()[0]}, {os.cpu_count()} cpus")
    with tempfile.TemporaryDirectory(prefix="otelflow-bench-") as workdir, telemetry.use_providers(provider):
        os.environ["OTELFLOW_HOME"] = workdir
        if args.only in (None, "sqlite"):
            from otelflow.stores.sqlite import sqlite_url

            empty, one_task = _transactions(sqlite_url(Path(workdir) / "store.sqlite3"))
            rows = _interleaved({"direct": _direct_sqlite(Path(workdir) / "direct.sqlite3"), "empty": empty,
                                 "one_task": one_task, "bare_task": _bare_task(), "raw_span": _raw_span()},
                                args.n, args.rounds)
            _report("sqlite (file, WAL, synchronous=NORMAL)", rows)
        if args.only in (None, "redis"):
            import importlib

            # tests/redis_server.py: a throwaway redis-server (on sys.path above; imported by name for mypy's sake)
            redis_server = importlib.import_module("redis_server")
            _stop, start_redis_server = redis_server._stop, redis_server.start_redis_server

            process, url = start_redis_server(workdir)
            try:
                empty, one_task = _transactions(url)
                rows = _interleaved({"direct": _direct_redis(url), "empty": empty, "one_task": one_task,
                                     "bare_task": _bare_task(), "raw_span": _raw_span()}, args.n, args.rounds)
                _report("redis (local redis-server, loopback)", rows)
                per_pair, pair_us, ping_us = _lock_round_trips(url, args.n)
                print(f"  lock acquire+release     {pair_us:9.1f} µs   {per_pair:.2f} round trips "
                      f"(target <= 2); one PING round trip {ping_us:.1f} µs")
            finally:
                _stop(process)
    provider.shutdown()


if __name__ == "__main__":
    main()

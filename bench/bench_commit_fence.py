"""What the now-or-never record write costs a commit on Redis (not a test).

Paired A/B in one process against a throwaway local redis-server: "old" is the commit's record write as the plain
``HSETNX`` it was, "new" the now-or-never put (a Lua script that checks a deadline against the server's ``TIME``).
Blocks of ``--block`` operations alternate old/new ``--pairs`` times, so both sides see the same machine load; the
figure to read is the median of the per-pair differences.

    python bench/bench_commit_fence.py
    python bench/bench_commit_fence.py --block 50 --pairs 300
"""

from __future__ import annotations

import argparse
import os
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
os.environ.setdefault("OTELFLOW_LOGGING_TO_CONSOLE", "false")

RECORD = '{"version":1,"key":"k","committed_at":1.0,"flow_run_id":null,"value":null,"tasks":{}}'


def _paired(old: Callable[[], None], new: Callable[[], None], block: int, pairs: int) -> tuple[float, float, float]:
    def timed(fn: Callable[[], None]) -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) / block * 1e6

    old()
    new()  # warm-up: connections, scripts, the server clock sample
    olds, news = [], []
    for i in range(pairs):
        if i % 2:
            a, b = timed(old), timed(new)
        else:
            b, a = timed(new), timed(old)
        olds.append(a)
        news.append(b)
    return (statistics.median(olds), statistics.median(news),
            statistics.median(n - o for o, n in zip(olds, news, strict=True)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--block", type=int, default=50, help="operations per timed block")
    parser.add_argument("--pairs", type=int, default=300, help="old/new block pairs")
    options = parser.parse_args()

    from redis_server import start_redis_server

    from otelflow.stores import get_store
    from otelflow.stores.redis import RedisStore
    from otelflow.transactions import Transaction

    with tempfile.TemporaryDirectory() as workdir:
        process, url = start_redis_server(workdir)
        try:
            store = get_store(url)
            assert isinstance(store, RedisStore)

            def puts(fenced: bool) -> Callable[[], None]:
                def run() -> None:
                    for _ in range(options.block):
                        store.put("txn", uuid.uuid4().hex, RECORD, if_absent=True, notify=False, now_or_never=fenced)
                return run

            def unfenced(*args: Any, now_or_never: bool = False, **kwargs: Any) -> bool:
                return RedisStore.put(store, *args, **kwargs)

            def transactions(fenced: bool) -> Callable[[], None]:
                def run() -> None:
                    if fenced:
                        store.__dict__.pop("put", None)
                    else:
                        store.put = unfenced  # type: ignore[method-assign]
                    try:
                        for _ in range(options.block):
                            with Transaction(key=uuid.uuid4().hex, store=url):
                                pass
                    finally:
                        store.__dict__.pop("put", None)
                return run

            python = sys.version.split()[0]
            print(f"block={options.block} pairs={options.pairs}; Python {python}, {os.cpu_count()} cpus")
            for label, old, new in (("store.put of a record", puts(False), puts(True)),
                                    ("empty transaction", transactions(False), transactions(True))):
                o, n, d = _paired(old, new, options.block, options.pairs)
                print(f"  {label:24s} old {o:7.1f} µs   new {n:7.1f} µs   median paired difference {d:+6.1f} µs")
            client = store._client
            started = time.perf_counter()
            for _ in range(1000):
                client.ping()
            print(f"  one PING round trip      {(time.perf_counter() - started) * 1000:7.1f} µs")
        finally:
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()

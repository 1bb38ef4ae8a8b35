"""Task cache benchmarks (``@task(cache_policy=INPUTS)``). Not a test: prints figures and ratios measured in one run.

    python bench/bench_caching.py                          # everything but --before
    python bench/bench_caching.py --before 23c7df5         # also the plain task run with the code at 23c7df5
    python bench/bench_caching.py --only hit               # hits, plain runs and raw store reads, in one process
    python bench/bench_caching.py --only plain|miss|prefect|before
    python bench/bench_caching.py --only hit --profile     # and cProfile of the hit loop (top otelflow functions)

In one process (``hit``, ``plain``, ``miss``), µs per task run, each side a flow calling a task N times (timed
inside the flow body), on the sqlite store (the default, ``$OTELFLOW_HOME/store.sqlite3``) and on a throwaway
``redis-server`` started for the run (``OTELFLOW_STORE_URL=redis://...``):

- ``plain``: ``@task`` with no cache options (it reads no store: one figure for both columns);
- ``store read``: the raw read a hit makes at least once, ``get_store(url).get("cache", key)`` of one cache entry
  (small JSON), the store fetched once before the loop -- what a careful hand-written cache lookup would do;
- ``hit, from storage``: N distinct inputs, all cached beforehand; the process's memory of results (Prefect's
  in-memory result cache, the newest 1000) is emptied before the round, so each hit reads its result file, as
  the first hit of a new process does;
- ``hit, in memory``: the same, over 500 inputs whose results this process already holds (read before the round);
- ``miss + write``: new inputs on every call (the result file and the cache entry are written), for information.

The issue's target is ``hit / (plain + store read) < 1.0``: a hit costs less than a plain run plus a store read.
Fairness as in ``bench_engine.py``: the application's global SDK ``TracerProvider`` + ``BatchSpanProcessor`` and
``LoggerProvider`` + ``BatchLogRecordProcessor``, each feeding an exporter that discards, are set *before*
otelflow is imported (otelflow adopts them); console output is off. The run logs are the defaults
(``OTELFLOW_LOG_RUN_EVENTS``: a ``Finished in state ...`` record per task run, as Prefect logs) and, in a second
block, off. Rounds are interleaved and the median is reported; ratios are taken within each round.

``prefect``: Prefect 3.9.1's cache hit on its default setup (ephemeral API server, ``$PREFECT_HOME/storage``),
the same script for both sides (``s/prefect/otelflow/``), each in a fresh process with a fresh home, on each
tool's default telemetry (otelflow: the local spool; console output on, discarded, as ``bench_prefect.py``).
Timed inside the flow body: a warm-up flow, a flow of misses that fills the cache, then rounds of a plain flow and
a hit flow.

``before REF``: the plain task run with the otelflow code at git ref REF (exported with ``git archive`` into a
temporary folder, run with ``PYTHONPATH`` pointing at it and the same virtualenv) against the current code, each
in a fresh process measured the same way, alternating.
"""

from __future__ import annotations

import argparse
import gc
import io
import itertools
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PREFECT_VENV_PYTHON = Path("/root/prefect-venv/bin/python")
MEMORY_INPUTS = 500  # below the 1000 results a process keeps in memory
BASES = {"plain": 0, "sqlite": 1_000_000, "redis": 3_000_000}  # disjoint inputs: INPUTS keys ignore the task
MISS_BASES = {"sqlite": 10_000_000, "redis": 20_000_000}


# --- setup ------------------------------------------------------------------------------------------------


def _providers() -> list[Any]:
    """The application's global SDK providers, each batching into an exporter that discards (before otelflow)."""
    from _discard import discarding_providers

    return list(discarding_providers())


def _configure(store_url: str | None, events: bool) -> None:
    """Select the store (None: the default sqlite file) and the run logs; settings are re-read."""
    from otelflow.settings import get_settings, reset_settings

    if store_url is None:
        os.environ.pop("OTELFLOW_STORE_URL", None)
    else:
        os.environ["OTELFLOW_STORE_URL"] = store_url
    os.environ["OTELFLOW_LOG_RUN_EVENTS"] = "true" if events else "false"
    reset_settings()
    get_settings()  # parsed here, not inside the timing


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(workdir: str) -> tuple[subprocess.Popen[bytes] | None, str]:
    """A throwaway ``redis-server`` (no persistence) on a free port: (process, url), or (None, why not)."""
    binary = shutil.which("redis-server")
    if binary is None:
        return None, "redis-server is not installed (e.g. apt-get install redis-server): redis figures skipped"
    try:
        import redis
    except ImportError:
        return None, "the redis client is not installed (pip install 'otelflow[redis]'): redis figures skipped"
    for _ in range(3):  # the port was free a moment ago; another process may take it first
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no", "--dir", workdir, "--loglevel", "warning"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir)
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while process.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    client.close()
                    return process, url
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)  # not listening yet; bounded by the deadline
        client.close()
        _stop(process)
    return None, "redis-server did not start (3 attempts): redis figures skipped"


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


# --- in one process -----------------------------------------------------------------------------------------


class Side:
    """One measured loop: ``prepare()`` (untimed: settings, memory), then ``run()`` -> µs per operation."""

    def __init__(self, prepare: Callable[[], None], run: Callable[[], float]) -> None:
        self.prepare = prepare
        self.run = run


def _flows(with_cache: bool) -> tuple[Any, dict[str, Any]]:
    """The flow every side times (inside its body) and the tasks it calls."""
    from otelflow import flow, task

    @task
    def plain(x: int) -> int:
        return x * 2

    tasks: dict[str, Any] = {"plain": plain}
    if with_cache:
        from otelflow.cache_policies import INPUTS

        @task(cache_policy=INPUTS)
        def cached(x: int) -> int:
            return x * 2

        tasks["cached"] = cached

    @flow
    def calls(kind: str, base: int, distinct: int, count: int) -> float:
        fn = tasks[kind]
        start = time.perf_counter()
        for i in range(count):
            fn(base + i % distinct)
        return (time.perf_counter() - start) / count * 1e6

    return calls, tasks


def _rounds(sides: dict[str, Side], rounds: int, providers: list[Any]) -> list[dict[str, float]]:
    """Per round, µs per operation of every side, back to back (drift hits every side alike)."""
    rows = []
    for _ in range(rounds):
        row = {}
        for name, side in sides.items():
            side.prepare()
            gc.collect()
            row[name] = side.run()
            for provider in providers:  # export outside the timing
                provider.force_flush()
        rows.append(row)
    return rows


def plain_sides(calls: Any, n: int) -> dict[str, Side]:
    """The plain task run with the run logs on (the default) and off."""
    sides = {}
    for events in (True, False):
        def prepare(events: bool = events) -> None:
            _configure(None, events)

        sides[f"plain/{'on' if events else 'off'}"] = Side(prepare, lambda: calls("plain", BASES["plain"], n, n))
    return sides


def _reader(store: Any, keys: list[str]) -> Any:
    """A plain task whose function does the raw store read: a hand-written cache lookup in a task."""
    from otelflow import task

    get, count = store.get, len(keys)

    @task
    def plain_read(x: int) -> str | None:
        return get("cache", keys[x % count])  # type: ignore[no-any-return]

    return plain_read


def cache_sides(calls: Any, tasks: dict[str, Any], backends: dict[str, str | None], n: int, what: set[str],
                n_miss: int) -> dict[str, Side]:
    """Hits, raw store reads and misses on each backend (the cache entries are written here, untimed)."""
    from otelflow import flow
    from otelflow.results import _memory
    from otelflow.stores import get_store

    @flow
    def fill(base: int, count: int) -> None:
        # Writing results fsyncs each file: threads (.map) wait on the disk together. Untimed.
        tasks["cached"].map([base + i for i in range(count)]).result()

    sides: dict[str, Side] = {}
    for backend, url in backends.items():
        base, mem_base = BASES[backend], BASES[backend] + 1_000_000
        if "hit" in what:
            _configure(url, True)
            fill(base, n)  # the N inputs, and the 500 kept in memory
            fill(mem_base, MEMORY_INPUTS)
            calls("cached", base, 50, 50)  # warm the hit path
            store = get_store(url)
            keys = [item.key for item in store.items("cache")]
            assert len(keys) == n + MEMORY_INPUTS, (backend, len(keys))

            def read(store: Any = store, keys: list[str] = keys) -> float:
                get, count = store.get, len(keys)
                start = time.perf_counter()
                for i in range(n):
                    get("cache", keys[i % count])
                return (time.perf_counter() - start) / n * 1e6

            def from_storage(url: str | None = url, events: bool = True) -> None:
                _configure(url, events)
                _memory.clear()  # as in a new process: each hit reads its result file

            def in_memory(url: str | None = url, mem_base: int = mem_base) -> None:
                _configure(url, True)
                calls("cached", mem_base, MEMORY_INPUTS, MEMORY_INPUTS)  # the results are in this process's memory

            tasks[f"plainread/{backend}"] = _reader(store, keys)
            sides[f"read/{backend}"] = Side(lambda url=url: _configure(url, True), read)
            sides[f"plainread/{backend}"] = Side(
                lambda url=url: _configure(url, True), lambda b=backend, base=base: calls(f"plainread/{b}", base, n, n))
            sides[f"hit/{backend}/on"] = Side(from_storage, lambda base=base: calls("cached", base, n, n))
            sides[f"hitmem/{backend}/on"] = Side(
                in_memory, lambda mem_base=mem_base: calls("cached", mem_base, MEMORY_INPUTS, n))
            sides[f"hit/{backend}/off"] = Side(lambda url=url: from_storage(url, False),
                                               lambda base=base: calls("cached", base, n, n))
        if "miss" in what:
            fresh = itertools.count(MISS_BASES[backend], n_miss)

            def miss(fresh: Any = fresh) -> float:
                return float(calls("cached", next(fresh), n_miss, n_miss))  # new inputs every call

            sides[f"miss/{backend}"] = Side(lambda url=url: _configure(url, True), miss)
            _configure(url, True)
            calls("cached", MISS_BASES[backend] // 2, 50, 50)  # warm the miss path (other inputs)
    return sides


def check_hits(calls: Any, tasks: dict[str, Any], backends: dict[str, str | None], n: int) -> dict[str, str]:
    """The state of a hit on each backend (must be Cached: else the benchmark measures something else)."""
    from otelflow import flow

    @flow
    def one(x: int) -> str:
        return str(tasks["cached"](x, return_state=True).name)

    names = {}
    for backend, url in backends.items():
        _configure(url, True)
        names[backend] = one(BASES[backend] + n - 1)
    return names


def in_process(args: argparse.Namespace, what: set[str], redis_url: str | None, providers: list[Any]
               ) -> tuple[list[dict[str, float]], dict[str, str]]:
    calls, tasks = _flows(with_cache=bool(what & {"hit", "miss"}))
    backends: dict[str, str | None] = {"sqlite": None}
    if redis_url is not None:
        backends["redis"] = redis_url
    sides: dict[str, Side] = {}
    if what & {"hit", "plain"}:
        sides.update(plain_sides(calls, args.n))
    if what & {"hit", "miss"}:
        sides.update(cache_sides(calls, tasks, backends, args.n, what, max(args.n // 4, 1)))
    for name, side in sides.items():  # warm up (imports, connections, first-call caches); hits and misses above
        if not name.startswith(("hit", "miss")):
            side.prepare()
            side.run()
    states = check_hits(calls, tasks, backends, args.n) if "hit" in what else {}
    return _rounds(sides, args.rounds, providers), states


def report_in_process(rows: list[dict[str, float]], states: dict[str, str], n: int, backends: list[str]) -> None:
    have = rows[0]

    def figure(key: Callable[[str], str]) -> Callable[[str], float]:
        return lambda b: statistics.median(row[key(b)] for row in rows)

    def ratio(num: Callable[[str], str], *den: Callable[[str], str]) -> Callable[[str], float]:
        return lambda b: statistics.median(row[num(b)] / sum(row[d(b)] for d in den) for row in rows)

    def line(label: str, keys: list[Callable[[str], str]], value: Callable[[str], float], unit: str = " µs",
             note: str = "") -> None:
        if all(k(b) in have for k in keys for b in backends):
            width = 12 - len(unit)
            print(f"  {label:46}" + "".join(f"{value(b):{width}.{1 if unit else 2}f}{unit}" for b in backends) + note)

    def hit(events: str) -> Callable[[str], str]:
        return lambda b: f"hit/{b}/{events}"

    def hitmem(b: str) -> str:
        return f"hitmem/{b}/on"

    def read(b: str) -> str:
        return f"read/{b}"

    def plainread(b: str) -> str:
        return f"plainread/{b}"

    def miss(b: str) -> str:
        return f"miss/{b}"

    def plain(events: str) -> Callable[[str], str]:
        return lambda b: f"plain/{events}"

    print(f"\nin one process: µs per task run, n={n} task runs per flow (timed inside the flow body), median of "
          f"{len(rows)} interleaved rounds, ratios taken within each round; discarding SDK exporters, console off")
    if states:
        print(f"  state of a hit: {', '.join(f'{b} {s}' for b, s in states.items())}")
    print(f"  {'':46}" + "".join(f"{b:>12}" for b in backends))
    print("  run logs on (the default: a 'Finished in state ...' record per task run)")
    line("plain task run (@task, no cache options)", [plain("on")], figure(plain("on")))
    line("raw store read, get('cache', key), tight loop", [read], figure(read))
    line("plain task run whose function does that read", [plainread], figure(plainread))
    line("hit, result read from storage", [hit("on")], figure(hit("on")))
    line(f"hit, result in process memory ({MEMORY_INPUTS} inputs)", [hitmem], figure(hitmem))
    line("hit from storage / (plain + store read)", [hit("on"), plain("on"), read],
         ratio(hit("on"), plain("on"), read), "", "   target < 1.0")
    line("hit in memory / (plain + store read)", [hitmem, plain("on"), read], ratio(hitmem, plain("on"), read), "",
         "   target < 1.0")
    line("hit from storage / plain task doing the read", [hit("on"), plainread], ratio(hit("on"), plainread), "")
    line("hit in memory / plain task doing the read", [hitmem, plainread], ratio(hitmem, plainread), "")
    line("miss + write (new inputs; n/4 per flow)", [miss], figure(miss))
    if "plain/off" in have:
        print("  OTELFLOW_LOG_RUN_EVENTS=false")
        line("plain task run", [plain("off")], figure(plain("off")))
        line("hit, result read from storage", [hit("off")], figure(hit("off")))
        line("hit from storage / (plain + store read)", [hit("off"), plain("off"), read],
             ratio(hit("off"), plain("off"), read), "")
        line("hit from storage / plain", [hit("off"), plain("off")], ratio(hit("off"), plain("off")), "")


def profile_hits(n: int) -> None:
    """cProfile of the hit loop (sqlite, results read from storage, run logs on): the top 10 otelflow functions by
    cumulative time among those called at least once per hit."""
    import cProfile
    import pstats

    from otelflow.results import _memory

    calls, _ = _flows(with_cache=True)
    _configure(None, True)
    calls("cached", BASES["sqlite"], n, n)  # cached already, unless --only selected no hits
    _memory.clear()
    profiler = cProfile.Profile()
    profiler.enable()
    calls("cached", BASES["sqlite"], n, n)
    profiler.disable()
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in stats.values())
    prefix = str(ROOT / "otelflow")
    rows = [(ct, nc, tt, f"{Path(file).relative_to(ROOT)}:{line}({func})")
            for (file, line, func), (_, nc, tt, ct, _) in stats.items() if file.startswith(prefix) and nc >= n]
    rows.sort(reverse=True)
    whole = [name for ct, _, _, name in rows if ct >= 0.9 * rows[0][0]]  # what encloses the whole task run
    print(f"\ncProfile of {n} hits (sqlite, from storage, run logs on): {total / n * 1e6:.0f} µs per hit under the "
          "profiler; the top 10 otelflow functions called at least once per hit, by cumulative time, after those "
          f"enclosing the whole run ({', '.join(name.split('(')[1].rstrip(')') for name in whole)})")
    print(f"  {'cum µs/hit':>10} {'self µs/hit':>11} {'calls/hit':>9}  function")
    for ct, nc, tt, name in rows[len(whole):len(whole) + 10]:
        print(f"  {ct / n * 1e6:10.1f} {tt / n * 1e6:11.1f} {nc / n:9.1f}  {name}")


# --- fresh processes ----------------------------------------------------------------------------------------

PLAIN_CHILD = textwrap.dedent(
    """
    import json, os, statistics, sys
    sys.path.insert(0, sys.argv[1])  # this script's folder: its helpers, not its otelflow
    import bench_caching as b

    providers = b._providers()  # before otelflow is imported
    import otelflow

    expected = os.environ["PYTHONPATH"]
    assert otelflow.__file__.startswith(expected), (otelflow.__file__, expected)
    n, repeats = int(sys.argv[2]), int(sys.argv[3])
    calls, _ = b._flows(with_cache=False)
    sides = b.plain_sides(calls, n)
    for side in sides.values():
        side.prepare()
        side.run()
    rows = b._rounds(sides, repeats, providers)
    print("RESULT " + json.dumps({name: statistics.median(r[name] for r in rows) for name in sides}))
    """
)


def _result(proc: subprocess.CompletedProcess[str], what: str) -> dict[str, Any]:
    if proc.returncode != 0:
        raise SystemExit(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))  # type: ignore[no-any-return]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_", "PREFECT_"))}
    env.update(extra)
    return env


def export_ref(ref: str, into: Path) -> str:
    """The otelflow package at git ref ``ref``, exported into ``into``; returns the commit's short id."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", ref], capture_output=True, text=True,
                            check=True).stdout.strip()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", commit, "otelflow"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return commit


def bench_before(ref: str, n: int, rounds: int) -> None:
    """The plain task run, code at ``ref`` vs now: a fresh process each, alternating, median of ``rounds``."""
    with tempfile.TemporaryDirectory(prefix="otelflow-before-") as tmp:
        commit = export_ref(ref, Path(tmp) / "src")
        paths = {commit: str(Path(tmp) / "src"), "now": str(ROOT)}
        samples: dict[str, list[dict[str, float]]] = {label: [] for label in paths}
        for i in range(rounds):
            order = list(paths) if i % 2 == 0 else list(paths)[::-1]
            for label in order:
                home = Path(tmp) / f"home-{label}-{i}"
                env = _clean_env(PYTHONPATH=paths[label], OTELFLOW_HOME=str(home),
                                 OTELFLOW_LOGGING_TO_CONSOLE="false")
                proc = subprocess.run([sys.executable, "-c", PLAIN_CHILD, str(Path(__file__).parent), str(n), "2"],
                                      env=env, capture_output=True, text=True, cwd=tmp, timeout=600)
                samples[label].append(_result(proc, f"plain task run at {label}"))
    name = commit if ref == commit else f"{commit} ({ref})"
    print(f"\nplain task run, otelflow at {name} vs the current working tree: a fresh process each (discarding "
          f"SDK exporters, console off), alternating, median of {rounds} processes (each the median of "
          f"2 flows of {n} task runs)")
    print(f"  {'µs per task run':32}{commit:>12}{'now':>12}{'now / before':>14}")
    for key, label in (("plain/on", "run logs on (default)"), ("plain/off", "OTELFLOW_LOG_RUN_EVENTS=false")):
        before = statistics.median(s[key] for s in samples[commit])
        now = statistics.median(s[key] for s in samples["now"])
        ratio = statistics.median(a[key] / b[key] for a, b in zip(samples["now"], samples[commit], strict=True))
        print(f"  {label:32}{before:12.1f}{now:12.1f}{ratio:14.2f}")


COMPARE = textwrap.dedent(
    """
    import json, statistics, sys, time
    from prefect import flow, task
    from prefect.cache_policies import INPUTS

    timings = {"warm-up": [], "miss": [], "plain": [], "hit": []}

    @task(cache_policy=INPUTS)
    def cached(x):
        return x * 2

    @task
    def plain(x):
        return x * 2

    @flow
    def calls(kind: str, n: int):
        fn = cached if kind in ("miss", "hit") else plain
        start = time.perf_counter()
        for i in range(n):
            fn(i)
        timings[kind].append((time.perf_counter() - start) / n * 1e6)

    @flow
    def state_of_a_hit():
        return cached(0, return_state=True).name

    n, rounds = int(sys.argv[1]), int(sys.argv[2])
    calls("warm-up", min(n, 50))
    calls("miss", n)  # fills the cache
    for _ in range(rounds):
        calls("plain", n)
        calls("hit", n)
    out = {k: statistics.median(v) for k, v in timings.items()}
    out["state"] = state_of_a_hit()
    print("RESULT " + json.dumps(out))
    """
)


def prefect_python(option: str | None) -> str:
    if option:
        return option
    if PREFECT_VENV_PYTHON.exists():
        return str(PREFECT_VENV_PYTHON)
    from bench_prefect import DEFAULT_VENV, ensure_prefect  # this folder is sys.path[0]

    return ensure_prefect(DEFAULT_VENV)


def bench_prefect(python: str, n: int, rounds: int) -> None:
    """Prefect's and otelflow's cache hit, each on its default setup in a fresh process, same script."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="otelflow-vs-prefect-") as tmp:
        prefect_env = _clean_env(PREFECT_HOME=str(Path(tmp) / "prefect"), PREFECT_SERVER_ALLOW_EPHEMERAL_MODE="true")
        version = subprocess.run([python, "-c", "import prefect; print(prefect.__version__)"], capture_output=True,
                                 text=True, env=prefect_env, check=True).stdout.strip()
        runs = (("prefect", python, COMPARE, prefect_env),
                ("otelflow", sys.executable, COMPARE.replace("prefect", "otelflow"),
                 _clean_env(OTELFLOW_HOME=str(Path(tmp) / "otelflow"), PYTHONPATH=str(ROOT))))
        for name, interpreter, code, env in runs:
            started = time.perf_counter()
            proc = subprocess.run([interpreter, "-c", code, str(n), str(rounds)], env=env, capture_output=True,
                                  text=True, cwd=tmp, timeout=1200)
            results[name] = _result(proc, name)
            results[name]["wall"] = time.perf_counter() - started
    p, o = results["prefect"], results["otelflow"]
    print(f"\nprefect {version} vs otelflow, each on its default setup in a fresh process (same script, "
          f"s/prefect/otelflow/), timed inside the flow body: {n} task runs per flow, median of {rounds} flows; "
          f"state of a hit: prefect {p['state']}, otelflow {o['state']}; process wall time "
          f"{p['wall']:.1f} s / {o['wall']:.1f} s")
    print(f"  {'µs per task run':40}{'prefect':>10}{'otelflow':>10}{'otelflow faster':>17}")
    for key, label in (("hit", "cache hit (INPUTS)"), ("plain", "plain task run"),
                       ("miss", "miss + write (one flow, after warm-up)")):
        print(f"  {label:40}{p[key]:10.0f}{o[key]:10.1f}{p[key] / o[key]:16.1f}x")
    print(f"  {'hit / plain':40}{p['hit'] / p['plain']:10.2f}{o['hit'] / o['plain']:10.2f}")


# --- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["hit", "plain", "miss", "prefect", "before"])
    parser.add_argument("--n", type=int, default=2000, help="task runs per flow in one process (misses: n/4)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", metavar="REF", help="also measure the plain task run with the code at git REF")
    parser.add_argument("--prefect-python", help=f"interpreter with prefect installed (default {PREFECT_VENV_PYTHON} "
                        "if it exists, else the virtualenv bench_prefect.py makes)")
    parser.add_argument("--prefect-n", type=int, default=200, help="task runs per flow in the Prefect comparison")
    parser.add_argument("--profile", action="store_true", help="cProfile the hit loop (top otelflow functions)")
    args = parser.parse_args()
    if args.only == "before" and not args.before:
        parser.error("--only before needs --before REF")
    what = {args.only} if args.only else {"hit", "plain", "miss", "prefect"} | ({"before"} if args.before else set())
    started = time.perf_counter()
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} cpus, load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} at start")
    if what & {"hit", "plain", "miss"} or args.profile:
        with tempfile.TemporaryDirectory(prefix="otelflow-bench-cache-") as home:
            os.environ["OTELFLOW_HOME"] = home
            os.environ.setdefault("OTELFLOW_LOGGING_TO_CONSOLE", "false")
            providers = _providers()  # before otelflow is imported
            process, redis_url = (start_redis(home) if what & {"hit", "miss"} else (None, "not needed"))
            if process is None:
                if what & {"hit", "miss"}:
                    print(f"  NOTE: {redis_url}")
                redis_url = None
            try:
                if what & {"hit", "plain", "miss"}:
                    rows, states = in_process(args, what, redis_url, providers)
                    backends = ["sqlite"] + (["redis"] if redis_url else [])
                    report_in_process(rows, states, args.n, backends)
                if args.profile:
                    profile_hits(args.n)
            finally:
                if process is not None:
                    _stop(process)
                from otelflow.stores import reset_stores

                reset_stores()
    if "before" in what:
        bench_before(args.before, args.n, args.rounds)
    if "prefect" in what:
        bench_prefect(prefect_python(args.prefect_python), args.prefect_n, args.rounds)
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()

"""otelflow vs Prefect on the same pipeline code (the script below, with s/prefect/otelflow/). Not a test.

Prefect is not a dependency: install it in a separate virtualenv and point this bench at its interpreter:

    python3 -m venv /tmp/prefect-venv && /tmp/prefect-venv/bin/pip install 'prefect==3.4.*'
    python bench/bench_prefect.py --prefect-python /tmp/prefect-venv/bin/python

Each side runs in a fresh process, on its embedded default (otelflow: the local spool; Prefect: its ephemeral
local API server with SQLite). Timed: sequential task calls in one flow, and ``.map`` over N items, after one
warm-up flow run (so Prefect's server start-up and otelflow's telemetry set-up are not counted).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from prefect import flow, task, tags, get_run_logger
    from prefect.utilities.annotations import unmapped

    @task
    def work(x, config):
        return x * config["factor"]

    @task
    def logged(x):
        get_run_logger().info("item %s", x)
        return x

    @flow
    def sequential(n: int):
        with tags("bench"):
            return sum(work(i, {"factor": 2}) for i in range(n))

    @flow
    def mapped(n: int):
        return sum(work.map(range(n), unmapped({"factor": 2})).result())

    @flow
    def with_logs(n: int):
        return sum(logged(i) for i in range(n))

    n_seq, n_map = int(sys.argv[1]), int(sys.argv[2])
    sequential(5); mapped(5); with_logs(5)  # warm-up: server/telemetry start-up not counted
    out = {}
    for name, fn, n in (("sequential", sequential, n_seq), ("map", mapped, n_map), ("logged", with_logs, n_seq)):
        start = time.perf_counter()
        fn(n)
        out[name] = (time.perf_counter() - start) / n * 1e6
    print("RESULT " + json.dumps(out))
    """
)


def run(python: str, code: str, n_seq: int, n_map: int, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([python, "-c", code, str(n_seq), str(n_map)], env=env, capture_output=True, text=True,
                          cwd=ROOT, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"{python} failed:\n{proc.stderr[-3000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefect-python", required=True, help="interpreter of a virtualenv with prefect installed")
    parser.add_argument("--sequential", type=int, default=500)
    parser.add_argument("--map", type=int, default=1000)
    args = parser.parse_args()
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_", "PREFECT_"))}
    with tempfile.TemporaryDirectory() as home:
        prefect_env = dict(base_env, PREFECT_HOME=home, PREFECT_LOGGING_LEVEL="WARNING")
        prefect = run(args.prefect_python, SCRIPT, args.sequential, args.map, prefect_env)
        version = subprocess.run([args.prefect_python, "-c", "import prefect; print(prefect.__version__)"],
                                 capture_output=True, text=True, env=prefect_env).stdout.strip()
    with tempfile.TemporaryDirectory() as home:
        otelflow_env = dict(base_env, OTELFLOW_HOME=home, OTELFLOW_LOGGING_TO_CONSOLE="false")
        otelflow = run(sys.executable, SCRIPT.replace("prefect", "otelflow"), args.sequential, args.map,
                       otelflow_env)
    print(f"prefect {version} vs otelflow (same script, s/prefect/otelflow/); microseconds per task run")
    print(f"  {'workload':12} {'prefect':>10} {'otelflow':>10} {'speed-up':>9}")
    for key in ("sequential", "map", "logged"):
        print(f"  {key:12} {prefect[key]:>10.0f} {otelflow[key]:>10.0f} {prefect[key] / otelflow[key]:>8.1f}x")


if __name__ == "__main__":
    main()

"""otelflow vs Prefect 3 on the same pipeline code (the script below, with s/prefect/otelflow/). Not a test.

    python bench/bench_prefect.py                      # makes /tmp/otelflow-bench-prefect (Prefect 3.9.1) if missing
    python bench/bench_prefect.py --prefect-python /path/to/venv/bin/python

Prefect is not a dependency of otelflow: the script makes its own virtualenv (``pip install prefect==3.9.1``).

Each side runs the script in a fresh process on its *default* setup: Prefect with its ephemeral local API
server and SQLite, its console logging as shipped; otelflow with the local spool and its console output (both
sides' stderr is discarded). Timed inside the flow body, so interpreter and server start-up are not counted:

- ``sequential``: the first flow run of the process, N sequential task calls (the headline figure);
- ``2nd flow`` / ``3rd flow``: the same flow run again in the same process (Prefect slows down flow after flow);
- ``map``: one flow mapping a task over M items; ``logged``: N task calls that each log one line.
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
DEFAULT_VENV = Path(tempfile.gettempdir()) / "otelflow-bench-prefect"
PREFECT_VERSION = "3.9.1"

SCRIPT = textwrap.dedent(
    """
    import json, sys, time
    from prefect import flow, task, tags, get_run_logger
    from prefect.utilities.annotations import unmapped

    timings = []

    @task
    def work(x, config):
        return x * config["factor"]

    @task
    def logged(x):
        get_run_logger().info("item %s", x)
        return x

    @flow
    def sequential(n: int):
        start = time.perf_counter()
        with tags("bench"):
            total = sum(work(i, {"factor": 2}) for i in range(n))
        timings.append((time.perf_counter() - start) / n * 1e6)
        return total

    @flow
    def mapped(n: int):
        start = time.perf_counter()
        total = sum(work.map(range(n), unmapped({"factor": 2})).result())
        timings.append((time.perf_counter() - start) / n * 1e6)
        return total

    @flow
    def with_logs(n: int):
        start = time.perf_counter()
        total = sum(logged(i) for i in range(n))
        timings.append((time.perf_counter() - start) / n * 1e6)
        return total

    n_seq, n_map = int(sys.argv[1]), int(sys.argv[2])
    for _ in range(3):
        sequential(n_seq)
    mapped(n_map)
    with_logs(n_seq)
    keys = ("sequential", "2nd flow", "3rd flow", "map", "logged")
    print("RESULT " + json.dumps(dict(zip(keys, timings))))
    """
)


def ensure_prefect(venv: Path) -> str:
    """The interpreter of a virtualenv with Prefect installed (made on first use)."""
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"prefect=={PREFECT_VERSION}"], check=True)
    return str(python)


def run(python: str, code: str, n_seq: int, n_map: int, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run([python, "-c", code, str(n_seq), str(n_map)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True, cwd=ROOT, timeout=3600)
    if proc.returncode != 0:
        raise SystemExit(f"{python} failed (exit {proc.returncode}); run the script by hand to see why")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefect-python", help="interpreter of a virtualenv with prefect installed")
    parser.add_argument("--sequential", type=int, default=300)
    parser.add_argument("--map", type=int, default=300)
    args = parser.parse_args()
    prefect_python = args.prefect_python or ensure_prefect(DEFAULT_VENV)
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_", "PREFECT_"))}
    with tempfile.TemporaryDirectory() as home:
        prefect_env = dict(base_env, PREFECT_HOME=home)
        version = subprocess.run([prefect_python, "-c", "import prefect; print(prefect.__version__)"],
                                 capture_output=True, text=True, env=prefect_env, check=True).stdout.strip()
        prefect = run(prefect_python, SCRIPT, args.sequential, args.map, prefect_env)
    with tempfile.TemporaryDirectory() as home:
        otelflow_env = dict(base_env, OTELFLOW_HOME=home, PYTHONPATH=str(ROOT))
        otelflow = run(sys.executable, SCRIPT.replace("prefect", "otelflow"), args.sequential, args.map,
                       otelflow_env)
    print(f"prefect {version} vs otelflow, each on its default setup (same script, s/prefect/otelflow/)")
    print(f"  {'us per task run':16} {'prefect':>10} {'otelflow':>10} {'otelflow faster':>16}")
    for key in ("sequential", "2nd flow", "3rd flow", "map", "logged"):
        print(f"  {key:16} {prefect[key]:>10.0f} {otelflow[key]:>10.1f} {prefect[key] / otelflow[key]:>15.0f}x")


if __name__ == "__main__":
    main()

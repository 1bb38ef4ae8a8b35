"""`otelflow ui` on a big spool (not a test): is the page usable within one second?

The spool is made by real flow runs (otelflow's engine, the embedded spool exporter): 1,000 flow runs of a small
ETL flow (five task runs each, one log record each, every 25th run failing), then one flow run mapping a task
over 10,000 items (10,000 task runs, one log record each), and one calling a task 10,000 times in a loop (no
map: 10,000 rows that cannot be folded).

`otelflow ui` runs as a user runs it (a subprocess, on loopback). Measured, median of ``--repeat`` rounds:

    api runs            GET /api/runs (the runs page's data, 200 newest); the first call of the server builds
                        the run index of the whole spool: reported apart as "cold"
    api run 10k map    GET /api/runs/<10k map run> (header, waterfall with the map folded): first call (tree
                        built) and again (unchanged: from the server's cache)
    api group 10k       GET .../group (the 10,000 rows of the expanded map)
    api logs            GET .../logs (the first page of 500 records)
    page runs           headless Chromium: from navigation to the runs table drawn (1,000 runs in the spool)
    page run 10k map    from navigation to the waterfall drawn
    page expand 10k     from the click on the map's row to its runs drawn
    page run 10k loop   from navigation to the waterfall of the 10,000-call run drawn

    python bench/bench_ui.py                   # make the spool in a temp folder, measure, delete it
    python bench/bench_ui.py --keep /tmp/ui-bench --repeat 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

REPO = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

FLOWS = """
import sys
from otelflow import flow, get_run_logger, task, telemetry

@task
def extract(i: int) -> list[int]:
    get_run_logger().info("extracted %d", i)
    return list(range(i % 7))

@task
def transform(rows: list[int], i: int) -> int:
    get_run_logger().info("transformed %d rows", len(rows))
    if i % 25 == 0:
        raise ValueError(f"bad batch {i}")
    return sum(rows)

@task
def load(total: int) -> int:
    get_run_logger().info("loaded %d", total)
    return total

@flow
def etl(i: int) -> int:
    rows = extract(i)
    total = transform(rows, i)
    load(total)
    load(total + 1)
    return load(total + 2)

@task
def item(x: int) -> int:
    get_run_logger().info("item %d", x)
    return x * 2

@flow
def big_map(n: int) -> int:
    return sum(f.result() for f in item.map(range(n)))

@flow
def big_loop(n: int) -> int:
    return sum(item(x) for x in range(n))

if __name__ == "__main__":
    runs, size = int(sys.argv[1]), int(sys.argv[2])
    for i in range(runs):
        etl(i, return_state=True)
    big_map(size)
    big_loop(size)
    telemetry.flush()
"""


def make_spool(home: Path, runs: int, size: int) -> float:
    """Run the flows into ``home``'s spool; seconds it took."""
    script = home / "flows.py"
    script.write_text(FLOWS)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))}
    env.update(OTELFLOW_HOME=str(home), OTELFLOW_LOGGING_TO_CONSOLE="false", PYTHONPATH=str(REPO))
    began = time.perf_counter()
    subprocess.run([sys.executable, str(script), str(runs), str(size)], check=True, env=env, cwd=REPO)
    return time.perf_counter() - began


def _get(url: str) -> tuple[float, Any]:
    began = time.perf_counter()
    with urllib.request.urlopen(url, timeout=120) as response:
        body = response.read()
    return time.perf_counter() - began, json.loads(body)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def measure(home: Path, repeat: int) -> dict[str, float]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OTELFLOW_"))}
    env["PYTHONPATH"] = str(REPO)
    from otelflow._internal.spool.index import index_path_for

    index = index_path_for(home / "spool")
    for suffix in ("", "-wal", "-shm"):  # the first call builds it: measured as "cold"
        Path(f"{index}{suffix}").unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "otelflow", "ui", "--port", "0", "--home", str(home)], env=env,
                            stdout=subprocess.PIPE, text=True, cwd=REPO)
    out: dict[str, float] = {}
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().split()[2]
        out["api runs (cold: index built)"], runs = _get(f"{url}/api/runs")
        out["api runs"] = _median([_get(f"{url}/api/runs")[0] for _ in range(repeat)])
        by_flow = {r["flow"]: r for r in runs["runs"]}
        big, loop = by_flow["big-map"]["flow_run_id"], by_flow["big-loop"]["flow_run_id"]
        out["api run 10k map (tree built)"], run = _get(f"{url}/api/runs/{big}")
        out["api run 10k map (cached)"] = _median([_get(f"{url}/api/runs/{big}")[0] for _ in range(repeat)])
        group = next(r for r in run["rows"] if r["kind"] == "group")
        query = f"parent={group['parent_span_id']}&name={group['name']}&limit=10000"
        out["api group 10k"] = _median([_get(f"{url}/api/runs/{big}/group?{query}")[0] for _ in range(repeat)])
        out["api logs (first 500)"] = _median([_get(f"{url}/api/runs/{big}/logs")[0] for _ in range(repeat)])
        out["api run 10k loop (tree built)"], _ = _get(f"{url}/api/runs/{loop}")
        out.update(_browser(url, big, loop, repeat))
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    return out


def _browser(url: str, big: str, loop: str, repeat: int) -> dict[str, float]:
    from playwright.sync_api import sync_playwright

    times: dict[str, list[float]] = {"page runs (1,000 runs)": [], "page run 10k map": [], "page expand 10k map": [],
                                     "page run 10k loop": []}
    with sync_playwright() as pw:
        user_data = tempfile.mkdtemp(prefix="otelflow-bench-chromium-")
        try:
            context = pw.chromium.launch_persistent_context(
                user_data, executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True,
                viewport={"width": 1280, "height": 800})
            page = context.new_page()

            def timed(name: str, action: Callable[[], None], selector: str) -> None:
                began = time.perf_counter()
                action()
                page.wait_for_selector(selector, timeout=60_000)
                times[name].append(time.perf_counter() - began)

            for _ in range(repeat):
                timed("page runs (1,000 runs)", lambda: page.goto(f"{url}/"), "tr.run")
                timed("page run 10k map", lambda: page.goto(f"{url}/runs/{big}"), ".wf-row[data-kind=group]")
                timed("page expand 10k map", lambda: page.click(".wf-row[data-kind=group] .wf-expand"),
                      ".wf-row[data-kind=run] >> nth=5")
                timed("page run 10k loop", lambda: page.goto(f"{url}/runs/{loop}"), ".wf-row >> nth=20")
            context.close()
        finally:
            shutil.rmtree(user_data, ignore_errors=True)
    return {name: _median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="Make (or reuse) the spool in this folder and keep it.")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="otelflow-bench-ui-"))
    try:
        if not (home / "spool").is_dir():
            home.mkdir(parents=True, exist_ok=True)
            took = make_spool(home, args.runs, args.size)
            print(f"spool: {args.runs} etl runs + a {args.size}-item map + a {args.size}-call loop in {took:.1f} s "
                  f"({sum(p.stat().st_size for p in (home / 'spool').glob('*.jsonl')) / 1e6:.0f} MB)")
        results = measure(home, args.repeat)
        width = max(len(name) for name in results)
        for name, seconds in results.items():
            print(f"{name:{width}}  {seconds * 1000:8.1f} ms")
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

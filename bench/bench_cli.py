"""CLI speed on a large spool (not a test): `otelflow runs` and `otelflow show` on a generated ~100 MB spool.

The spool is written with otelflow's own encoder (``encode_spans`` / ``encode_logs`` of SDK span and log
objects shaped like the engine's: run attributes, tags, parameters, code location, state events, one log
record per task run), in batches of 512 items per line like the export processor, spread over several
"process" files. It holds many flow runs of 50 task runs each, plus one flow run with 10,000 mapped task runs.

Every command runs in a fresh Python process (wall time, and its peak RSS from /proc, so Linux only):

    runs (cold)     the first call: builds the run index from the whole spool
    runs (warm)     the index is up to date: one stat per spool file, one query           target < 0.5 s
    runs (append)   after another process appended a flow run: only the new lines are read
    show 10k        the 10k-task trace (mapped runs collapsed)                            target < 1 s
    full parse      for reference: one pass of the spool reader over every line (what `runs` did before)

    python bench/bench_cli.py                      # generate ~100 MB in a temp folder, measure, delete
    python bench/bench_cli.py --mb 100 --keep /tmp/spool-home

Scale (issue 25), each in its own spool, each command in a fresh process (wall time, peak RSS):

    logs 1M         `otelflow logs latest` piped (read to the end, as `| tail` does) of a flow run with
                    1,000,000 log records (100 task runs of 10,000 records; two "processes" write in turn);
                    also when its first line came out
    show 1M         `otelflow show` of that run (each run's log lines capped, the rest counted)
    show 100k       `otelflow show` of a flow run with 100,000 mapped task runs (one log record each)
                                                                                           target < 2 s, < 300 MB

    python bench/bench_cli.py --scale-only         # only the scale part
    python bench/bench_cli.py --scale-only --repo /tmp/before   # the CLI of another checkout (before/after)

`logs --follow` lag (a flow logging every 100 ms; seconds from the log call to the line out of the follower), with
this checkout and another; and what the spool's schedule delay costs a run (wall and CPU time, 1000 vs 200 ms):

    python bench/bench_cli.py --lag --lag-before /tmp/before --repeat 3
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
_BATCH = 512


def _span_factory() -> Any:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

    resource = Resource({"service.name": "bench", "service.instance.id": str(uuid.uuid4())})
    scope = InstrumentationScope("otelflow")

    def make(trace_id: int, span_id: int, parent: int | None, name: str, start: int, end: int,
             attrs: dict[str, Any], failed: bool = False) -> Any:
        state = "Failed" if failed else "Completed"
        attrs = {**attrs, "otelflow.run.state": state, "otelflow.run.attempt": 1}
        return ReadableSpan(
            name=name, context=SpanContext(trace_id, span_id, False, TraceFlags(1)),
            parent=SpanContext(trace_id, parent, False, TraceFlags(1)) if parent else None,
            resource=resource, attributes=attrs, events=[Event("Running", {}, start), Event(state, {}, end)],
            status=Status(StatusCode.ERROR, "ValueError: bad row") if failed else Status(StatusCode.UNSET),
            start_time=start, end_time=end, instrumentation_scope=scope,
        )

    return make


def _log_factory() -> Any:
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.context import Context
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope
    from opentelemetry.trace import TraceFlags

    resource = Resource({"service.name": "bench"})
    scope = InstrumentationScope("otelflow.task_runs")

    def make(trace_id: int, span_id: int, when: int, message: str, attrs: dict[str, Any]) -> Any:
        record = LogRecord(timestamp=when, observed_timestamp=when, context=Context({"bench": True}),
                           severity_text="INFO", severity_number=SeverityNumber.INFO, body=message,
                           attributes=attrs)
        record.trace_id, record.span_id, record.trace_flags = trace_id, span_id, TraceFlags(1)
        return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=scope)

    return make


def _flow_run(make_span: Any, make_log: Any, start: int, tasks: int, flow: str) -> tuple[list[Any], list[Any]]:
    trace_id, root = random.getrandbits(128), random.getrandbits(64)
    run_id, name = str(uuid.uuid4()), f"bench-{random.getrandbits(32):08x}"
    common = {"otelflow.flow_run.id": run_id, "otelflow.flow.name": flow}
    spans, logs = [], []
    t = start + 1_000_000
    for i in range(tasks):
        span_id, task_run = random.getrandbits(64), f"transform-{random.getrandbits(16):04x}"
        attrs = {"otelflow.run.type": "task", "code.function.name": "transform", "code.file.path": "/app/etl.py",
                 "code.line.number": 42, "otelflow.task.name": "transform", "otelflow.run.id": str(uuid.uuid4()),
                 "otelflow.run.name": task_run, **common, "otelflow.task.map_index": i, "otelflow.tags": ["bench"],
                 "otelflow.parameter.row": "dict"}
        spans.append(make_span(trace_id, span_id, root, "task transform", t, t + 150_000, attrs, failed=i == 7))
        logs.append(make_log(trace_id, span_id, t + 50_000, f"Converted row {i}",
                             {"row": i, **common, "otelflow.task_run.name": task_run,
                              "otelflow.task.name": "transform"}))
        t += 200_000
    flow_attrs = {"otelflow.run.type": "flow", "code.function.name": flow, "otelflow.flow.name": flow,
                  "otelflow.run.id": run_id, "otelflow.run.name": name, "otelflow.flow_run.id": run_id,
                  "otelflow.flow_run.name": name, "otelflow.parameter.n": "int"}
    spans.append(make_span(trace_id, root, None, f"flow {flow}", start, t + 1_000_000, flow_attrs))
    return spans, logs


def generate(home: Path, megabytes: float) -> dict[str, Any]:
    """Write a spool of about ``megabytes`` MB under ``home``; returns what is in it."""
    from otelflow._internal.spool.otlp_json import encode_logs, encode_spans

    spool = home / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    make_span, make_log = _span_factory(), _log_factory()
    random.seed(7)
    files = [(open(spool / f"traces-20261124-{pid}-1-0.jsonl", "w"),  # noqa: SIM115
              open(spool / f"logs-20261124-{pid}-1-0.jsonl", "w")) for pid in range(1000, 1008)]  # noqa: SIM115
    target = int(megabytes * 1e6)
    written, flows, spans_total = 0, 0, 0
    start = time.time_ns() - 3 * 86400 * 10**9
    big_trace = ""
    pending_spans: list[list[Any]] = [[] for _ in files]
    pending_logs: list[list[Any]] = [[] for _ in files]

    def flush(i: int, force: bool = False) -> int:
        size = 0
        traces, logs = files[i]
        while pending_spans[i] and (force or len(pending_spans[i]) >= _BATCH):
            chunk, pending_spans[i][:] = pending_spans[i][:_BATCH], pending_spans[i][_BATCH:]
            line = encode_spans(chunk) + "\n"
            traces.write(line)
            size += len(line)
        while pending_logs[i] and (force or len(pending_logs[i]) >= _BATCH):
            chunk, pending_logs[i][:] = pending_logs[i][:_BATCH], pending_logs[i][_BATCH:]
            line = encode_logs(chunk) + "\n"
            logs.write(line)
            size += len(line)
        return size

    while written < target:
        i = flows % len(files)
        tasks = 10_000 if flows == 20 else 50
        spans, logs = _flow_run(make_span, make_log, start, tasks, "big" if tasks > 50 else "etl")
        if tasks > 50:
            big_trace = f"{spans[-1].context.trace_id:032x}"
        pending_spans[i].extend(spans)
        pending_logs[i].extend(logs)
        written += flush(i)
        flows += 1
        spans_total += len(spans)
        start += 60 * 10**9
    for i in range(len(files)):
        written += flush(i, force=True)
        files[i][0].close()
        files[i][1].close()
    return {"flows": flows, "spans": spans_total, "bytes": written, "big_trace": big_trace, "last_start": start}


# The CLI in a fresh process that reports its own peak RSS (VmHWM of its own address space: wait4's ru_maxrss
# would count the pages of the forking benchmark process too).
_WRAPPER = """
import atexit, os, sys
def report():
    with open('/proc/self/status') as status, open(os.environ['BENCH_RSS_FILE'], 'w') as out:
        out.write(next(line.split()[1] for line in status if line.startswith('VmHWM')))
atexit.register(report)
sys.argv = ['otelflow', *sys.argv[1:]]
from otelflow.cli import main
main()
"""


CLI_REPO = REPO  # whose otelflow the commands run (--repo: another checkout, for before/after figures)


def _cli_env(home: Path) -> tuple[dict[str, str], Path]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL")}
    rss_file = home / ".bench-rss"
    env.update(OTELFLOW_HOME=str(home), PYTHONPATH=str(CLI_REPO), BENCH_RSS_FILE=str(rss_file))
    return env, rss_file


def timed_rss(home: Path, *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of the ``otelflow ARGS`` command in a fresh process."""
    env, rss_file = _cli_env(home)
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], env=env, cwd=CLI_REPO, capture_output=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"otelflow {' '.join(args)} failed: {proc.stderr.decode()}")
    return wall, int(rss_file.read_text()) / 1024, proc.stdout.decode()


def piped_rss(home: Path, *args: str) -> tuple[float, float, float, int, str]:
    """``otelflow ARGS | tail``: (wall s, peak RSS MiB, s to the first output byte, output lines, last line).

    The output is read as it comes and dropped (only the last line kept), as a pipe into ``tail`` would.
    """
    env, rss_file = _cli_env(home)
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", _WRAPPER, *args], env=env, cwd=CLI_REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    first = float("nan")
    lines, tail = 0, b""
    while True:
        chunk = proc.stdout.read1(1 << 16)
        if not chunk:
            break
        if first != first:
            first = time.perf_counter() - began
        lines += chunk.count(b"\n")
        tail = (tail + chunk)[-4096:]
    err = proc.stderr.read()
    if proc.wait() != 0:
        raise SystemExit(f"otelflow {' '.join(args)} failed: {err.decode()}")
    wall = time.perf_counter() - began
    last = tail.rstrip(b"\n").rsplit(b"\n", 1)[-1].decode(errors="replace")
    return wall, int(rss_file.read_text()) / 1024, first, lines, last


def full_parse(home: Path) -> float:
    """Seconds for one pass of the spool reader over every trace line (the old `runs`)."""
    sys.path.insert(0, str(REPO))
    from otelflow._internal.spool.reader import iter_spool

    began = time.perf_counter()
    count = sum(1 for _ in iter_spool(home / "spool", "traces"))
    assert count > 0
    return time.perf_counter() - began


def generate_many_logs(home: Path, records: int, tasks: int = 100) -> str:
    """One flow run with ``records`` log records spread over ``tasks`` task runs; returns its flow run id.

    Two "processes" run the task runs in turn (even ones in the first, odd ones in the second), so their spool
    lines overlap in time, as with a process pool; 512 records per line, as the export processor writes them.
    """
    from otelflow._internal.spool.otlp_json import encode_logs, encode_spans

    spool = home / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    make_span, make_log = _span_factory(), _log_factory()
    trace_id, root = random.getrandbits(128), random.getrandbits(64)
    run_id, name = str(uuid.uuid4()), f"chatty-{random.getrandbits(32):08x}"
    common = {"otelflow.flow_run.id": run_id, "otelflow.flow.name": "chatty", "otelflow.flow_run.name": name}
    start = time.time_ns() - 3600 * 10**9
    per_task = records // tasks
    step = 1_000  # ns between two records of one worker
    spans: list[Any] = []
    workers = [(open(spool / f"logs-20261124-{pid}-1-0.jsonl", "w"), pid) for pid in (3000, 3001)]  # noqa: SIM115
    task_ids = [random.getrandbits(64) for _ in range(tasks)]
    for first in range(0, tasks, 2):  # two task runs at a time, one per worker
        pending: list[list[Any]] = [[], []]
        t0 = start + 1_000_000 + (first // 2) * (per_task * step + 1_000_000)
        for w in (0, 1):
            i = first + w
            if i >= tasks:
                continue
            attrs = {"otelflow.run.type": "task", "otelflow.task.name": "talk", "otelflow.run.id": str(uuid.uuid4()),
                     "otelflow.run.name": f"talk-{i}", **common, "otelflow.task.map_index": i}
            spans.append(make_span(trace_id, task_ids[i], root, "task talk", t0, t0 + per_task * step, attrs))
        for n in range(per_task):
            for w in (0, 1):
                i = first + w
                if i >= tasks:
                    continue
                when = t0 + n * step + w * (step // 2)
                pending[w].append(make_log(trace_id, task_ids[i], when, f"talk {i} line {n}",
                                           {"n": n, **common, "otelflow.task_run.name": f"talk-{i}",
                                            "otelflow.task.name": "talk"}))
                if len(pending[w]) >= _BATCH:
                    workers[w][0].write(encode_logs(pending[w]) + "\n")
                    pending[w] = []
        for w in (0, 1):
            if pending[w]:
                workers[w][0].write(encode_logs(pending[w]) + "\n")
    end = start + 2_000_000 + ((tasks + 1) // 2) * (per_task * step + 1_000_000)
    flow_attrs = {"otelflow.run.type": "flow", "otelflow.flow.name": "chatty", "otelflow.run.id": run_id,
                  "otelflow.run.name": name, "otelflow.flow_run.id": run_id, "otelflow.flow_run.name": name}
    spans.append(make_span(trace_id, root, None, "flow chatty", start, end, flow_attrs))
    with open(spool / "traces-20261124-3000-1-0.jsonl", "w") as traces:
        for i in range(0, len(spans), _BATCH):
            traces.write(encode_spans(spans[i:i + _BATCH]) + "\n")
    for handle, _ in workers:
        handle.close()
    return run_id


def generate_many_tasks(home: Path, tasks: int) -> str:
    """One flow run with ``tasks`` mapped task runs (one log record each); returns its flow run id."""
    from otelflow._internal.spool.otlp_json import encode_logs, encode_spans

    spool = home / "spool"
    spool.mkdir(parents=True, exist_ok=True)
    spans, logs = _flow_run(_span_factory(), _log_factory(), time.time_ns() - 3600 * 10**9, tasks, "huge")
    with open(spool / "traces-20261124-4000-1-0.jsonl", "w") as handle:
        for i in range(0, len(spans), _BATCH):
            handle.write(encode_spans(spans[i:i + _BATCH]) + "\n")
    with open(spool / "logs-20261124-4000-1-0.jsonl", "w") as handle:
        for i in range(0, len(logs), _BATCH):
            handle.write(encode_logs(logs[i:i + _BATCH]) + "\n")
    return str(spans[-1].attributes["otelflow.run.id"])


def scale(root: Path, records: int, tasks: int, repeat: int) -> None:
    """The scale figures (issue 25): `logs` and `show` of a run with ``records`` log records, `show` of one with
    ``tasks`` task runs; each spool's index is built first (its own line)."""
    results: list[tuple[str, float, float, str]] = []
    random.seed(25)
    chatty_home, huge_home = root / "many-logs", root / "many-tasks"
    began = time.perf_counter()
    generate_many_logs(chatty_home, records)
    size = sum(p.stat().st_size for p in (chatty_home / "spool").glob("*.jsonl"))
    print(f"generated {records:,} log records ({size / 1e6:.0f} MB) in {time.perf_counter() - began:.1f} s")
    began = time.perf_counter()
    generate_many_tasks(huge_home, tasks)
    size = sum(p.stat().st_size for p in (huge_home / "spool").glob("*.jsonl"))
    print(f"generated a flow run of {tasks:,} task runs ({size / 1e6:.0f} MB) in {time.perf_counter() - began:.1f} s")

    for stale in [*chatty_home.glob("spool-index.sqlite*"), *huge_home.glob("spool-index.sqlite*")]:
        stale.unlink()  # a kept home: the first call builds the index again
    wall, rss, _ = timed_rss(chatty_home, "runs")
    results.append((f"runs, first call: indexes the {records:,} records", wall, rss, ""))
    runs = []
    for _ in range(repeat):
        runs.append(piped_rss(chatty_home, "logs", "latest"))
    wall, _, first, lines, _ = sorted(runs)[len(runs) // 2]
    results.append((f"logs latest | tail ({records:,} records; median of {repeat})", wall,
                    max(r[1] for r in runs), f"first line after {first:.2f} s; {lines:,} lines"))
    shows = sorted(timed_rss(chatty_home, "show") for _ in range(repeat))
    results.append((f"show ({records:,} log records; median of {repeat})", shows[len(shows) // 2][0],
                    max(s[1] for s in shows), f"{shows[0][2].count(chr(10)):,} lines printed"))

    wall, rss, _ = timed_rss(huge_home, "runs")
    results.append((f"runs, first call: indexes the {tasks:,} task runs", wall, rss, ""))
    shows = sorted(timed_rss(huge_home, "show") for _ in range(repeat))
    results.append((f"show ({tasks:,} task runs; median of {repeat})", shows[len(shows) // 2][0],
                    max(s[1] for s in shows), f"{shows[0][2].count(chr(10)):,} lines printed"))
    shows = sorted(timed_rss(huge_home, "show", "--json") for _ in range(max(1, repeat // 2)))
    results.append((f"show --json ({tasks:,} task runs)", shows[len(shows) // 2][0],
                    max(s[1] for s in shows), f"{len(shows[0][2]) / 1e6:.0f} MB of JSON"))
    print(f"CLI of {CLI_REPO}")
    print(f"{'command':56} {'wall s':>8} {'max RSS MiB':>12}")
    for name, wall, rss, note in results:
        print(f"{name:56} {wall:8.2f} {rss:12.1f}  {note}")


# --- how far `logs --follow` lags behind a run ------------------------------------------------------------------

_TICKER = """
import sys, time
from otelflow import flow, get_run_logger, task, telemetry

@task
def step(i: int) -> int:
    get_run_logger().info("step %d", i)
    return i

@flow
def ticker(n: int, every: float, tasks: int) -> None:
    log = get_run_logger()
    for i in range(n):
        log.info("tick %d at %d", i, time.time_ns())
        time.sleep(every)
    for i in range(tasks):
        step(i)

if __name__ == "__main__":
    ticker(int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]))
    telemetry.flush()
"""


def _flow_env(home: Path, repo: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL", "OTELFLOW"))}
    env.update(OTELFLOW_HOME=str(home), PYTHONPATH=str(repo), OTELFLOW_LOGGING_TO_CONSOLE="false", **extra)
    return env


def follow_lag(home: Path, repo: Path, ticks: int = 80, every: float = 0.1) -> list[float]:
    """Seconds from each of a running flow's log calls to its line out of `otelflow logs --follow` (both processes
    with ``repo``'s otelflow and default settings)."""
    import re

    home.mkdir(parents=True, exist_ok=True)
    script = home / "ticker.py"
    script.write_text(_TICKER)
    env = _flow_env(home, repo)
    flow = subprocess.Popen([sys.executable, str(script), str(ticks), str(every), "0"], env=env, cwd=repo,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # the run is in the spool (its pending record): follow it
            out = subprocess.run([sys.executable, "-m", "otelflow", "runs", "--json"], env=env, cwd=repo,
                                 capture_output=True, text=True).stdout
            if '"Running"' in out:
                break
            time.sleep(0.05)
        follower = subprocess.Popen([sys.executable, "-m", "otelflow", "logs", "--follow"], env=env, cwd=repo,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        began = time.time_ns()
        lags = []
        assert follower.stdout is not None
        for line in follower.stdout:
            arrived = time.time_ns()
            match = re.search(r"tick (\d+) at (\d+)", line)
            if match and int(match.group(2)) > began + 10**9:  # steady state: logged after the follower began
                lags.append((arrived - int(match.group(2))) / 1e9)
        follower.wait(timeout=60)
    finally:
        flow.wait(timeout=120)
    return lags


def flow_cost(home: Path, delay_ms: int | None, tasks: int, ticks: int, every: float) -> tuple[float, float]:
    """(wall s, CPU s) of a flow run exporting to the spool; ``delay_ms`` sets both schedule delays (None: default)."""
    home.mkdir(parents=True, exist_ok=True)
    script = home / "ticker.py"
    script.write_text(_TICKER)
    extra = {} if delay_ms is None else {"OTEL_BSP_SCHEDULE_DELAY": str(delay_ms),
                                         "OTEL_BLRP_SCHEDULE_DELAY": str(delay_ms)}
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(script), str(ticks), str(every), str(tasks)],
                            env=_flow_env(home, REPO, **extra), cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0
    return time.perf_counter() - began, usage.ru_utime + usage.ru_stime


def lag_report(root: Path, before: Path | None, rounds: int) -> None:
    """`logs --follow` lag (this checkout, and ``before``), and what the spool's shorter schedule delay costs."""
    import statistics

    def summary(lags: list[float]) -> str:
        lags = sorted(lags)
        return (f"mean {statistics.mean(lags):.2f} s, p50 {lags[len(lags) // 2]:.2f} s, "
                f"p95 {lags[int(len(lags) * 0.95)]:.2f} s, max {lags[-1]:.2f} s ({len(lags)} records)")

    for name, repo in (("before", before), ("after", REPO)):
        if repo is not None:
            print(f"logs --follow lag, {name} ({repo}): {summary(follow_lag(root / f'lag-{name}', repo.resolve()))}")
    for label, tasks, ticks, every in (("2,000 task runs, a record each", 2000, 0, 0.0),
                                       ("a record every 50 ms for 5 s", 0, 100, 0.05)):
        figures: dict[str, list[tuple[float, float]]] = {"1000 ms": [], "200 ms (default)": []}
        for i in range(rounds):
            for key, delay in (("1000 ms", 1000), ("200 ms (default)", None)):
                figures[key].append(flow_cost(root / f"cost-{i}-{delay}", delay, tasks, ticks, every))
        for key, values in figures.items():
            print(f"spool schedule delay {key:17} {label:32} wall {statistics.median(v[0] for v in values):6.2f} s"
                  f"  CPU {statistics.median(v[1] for v in values):6.2f} s  (median of {rounds})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="spool size to generate (MB)")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    parser.add_argument("--repeat", type=int, default=5, help="warm calls to time (median reported)")
    parser.add_argument("--scale-only", action="store_true", help="only the scale part (1M log records, 100k tasks)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale part")
    parser.add_argument("--records", type=int, default=1_000_000, help="log records of the chatty run")
    parser.add_argument("--tasks", type=int, default=100_000, help="task runs of the huge run")
    parser.add_argument("--scale-repeat", type=int, default=3, help="calls to time in the scale part (median)")
    parser.add_argument("--repo", type=Path, default=REPO,
                        help="run the CLI of this checkout (its otelflow package), e.g. an older one")
    parser.add_argument("--lag", action="store_true",
                        help="only: how far `logs --follow` lags behind a run, and the spool schedule delay's cost")
    parser.add_argument("--lag-before", type=Path, help="with --lag: also measure the lag with this checkout")
    args = parser.parse_args()
    global CLI_REPO
    CLI_REPO = args.repo.resolve()
    home = args.keep or Path(tempfile.mkdtemp(prefix="otelflow-bench-cli-"))
    try:
        if args.lag:
            lag_report(home / "lag", args.lag_before, args.repeat)
            return
        if not args.no_scale:
            scale(home / "scale", args.records, args.tasks, args.scale_repeat)
        if args.scale_only:
            return
        began = time.perf_counter()
        info = generate(home, args.mb)
        print(f"generated {info['bytes'] / 1e6:.1f} MB: {info['flows']} flow runs, {info['spans']} spans "
              f"in {time.perf_counter() - began:.1f} s ({home})")
        results: list[tuple[str, float, float]] = []
        wall, rss, _ = timed_rss(home, "runs")
        results.append(("runs (cold: builds the index)", wall, rss))
        warm = sorted(timed_rss(home, "runs") for _ in range(args.repeat))
        results.append((f"runs (warm, median of {args.repeat})", warm[len(warm) // 2][0],
                        max(w[1] for w in warm)))
        # another process appends one flow run: only its lines are read
        from otelflow._internal.spool.otlp_json import encode_logs, encode_spans

        spans, logs = _flow_run(_span_factory(), _log_factory(), info["last_start"], 50, "etl")
        with open(home / "spool" / "traces-20261124-2000-1-0.jsonl", "w") as handle:
            handle.write(encode_spans(spans) + "\n")
        with open(home / "spool" / "logs-20261124-2000-1-0.jsonl", "w") as handle:
            handle.write(encode_logs(logs) + "\n")
        wall, rss, out = timed_rss(home, "runs", "-n", "1")
        assert "etl" in out
        results.append(("runs (after an append)", wall, rss))
        shows = sorted(timed_rss(home, "show", info["big_trace"]) for _ in range(args.repeat))
        results.append((f"show 10k-span trace (median of {args.repeat})", shows[len(shows) // 2][0],
                        max(s[1] for s in shows)))
        lines = shows[0][2].count("\n")
        wall, rss, _ = timed_rss(home, "logs", info["big_trace"])
        results.append(("logs of the 10k-span trace (10k records)", wall, rss))
        results.append(("full parse of the spool (reference)", full_parse(home), float("nan")))
        index = home / "spool-index.sqlite"
        print(f"index: {index.stat().st_size / 1e6:.1f} MB; `show` of the 10k-span trace printed {lines} lines")
        print(f"{'command':48} {'wall s':>8} {'max RSS MiB':>12}")
        for name, wall, rss in results:
            print(f"{name:48} {wall:8.3f} {rss:12.1f}")
    finally:
        if args.keep is None:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()

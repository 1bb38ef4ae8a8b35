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


def timed_rss(home: Path, *args: str) -> tuple[float, float, str]:
    """(wall seconds, peak RSS MiB, stdout) of the ``otelflow ARGS`` command in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL")}
    rss_file = home / ".bench-rss"
    env.update(OTELFLOW_HOME=str(home), PYTHONPATH=str(REPO), BENCH_RSS_FILE=str(rss_file))
    began = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _WRAPPER, *args], env=env, cwd=REPO, capture_output=True)
    wall = time.perf_counter() - began
    if proc.returncode != 0:
        raise SystemExit(f"otelflow {' '.join(args)} failed: {proc.stderr.decode()}")
    return wall, int(rss_file.read_text()) / 1024, proc.stdout.decode()


def full_parse(home: Path) -> float:
    """Seconds for one pass of the spool reader over every trace line (the old `runs`)."""
    sys.path.insert(0, str(REPO))
    from otelflow._internal.spool.reader import iter_spool

    began = time.perf_counter()
    count = sum(1 for _ in iter_spool(home / "spool", "traces"))
    assert count > 0
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=float, default=100.0, help="spool size to generate (MB)")
    parser.add_argument("--keep", type=Path, help="generate into this folder and keep it")
    parser.add_argument("--repeat", type=int, default=5, help="warm calls to time (median reported)")
    args = parser.parse_args()
    home = args.keep or Path(tempfile.mkdtemp(prefix="otelflow-bench-cli-"))
    try:
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

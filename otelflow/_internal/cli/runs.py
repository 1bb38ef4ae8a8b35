"""What the run commands share (``otelflow runs``, ``show``, ``logs``, ``spool``): finding the spool and its index,
picking a run from what the user typed, nesting subflows under their parents, log levels.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from otelflow._internal.cli.support import fail as _fail
from otelflow._internal.terminal import terminal_safe

if TYPE_CHECKING:
    from otelflow._internal.cli.tracetree import Node
    from otelflow._internal.spool.index import RunIndex, RunRow
    from otelflow._internal.spool.reader import LogRecord, Skipped

_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


home_option = click.option(
    "--home", envvar="OTELFLOW_HOME", default=None,
    help="otelflow home folder (default: $OTELFLOW_HOME or ~/.otelflow).",
)


def spool_dir(home: str | None) -> Path:
    if home:
        return Path(home).expanduser() / "spool"
    from otelflow.settings import get_settings

    return get_settings().spool_dir


@contextmanager
def index(home: str | None) -> Iterator[RunIndex]:
    """The spool's run index, brought up to date; warns once about malformed lines met on the way."""
    from otelflow._internal.spool.index import RunIndex

    with RunIndex(spool_dir(home)) as index:
        index.refresh()
        try:
            yield index
        finally:
            warn_skipped(index)


def warn_skipped(index: RunIndex) -> None:
    """Say (on stderr) how many malformed or damaged spool records were met, and where the first one is."""
    skipped = index.skipped
    if skipped.count:
        click.echo(
            f"otelflow: warning: skipped {skipped.count} malformed spool record(s) (first at "
            f"{terminal_safe(_place(index.spool, skipped))}); the rest of the spool was read.",
            err=True,
        )
        skipped.reset()


def _place(spool: Path, skipped: Skipped) -> str:
    """``file line N`` of the first record skipped (its line number counted now: only the first one's)."""
    where = skipped.first_location()
    if where is None:
        return str(skipped.first)
    name, offset = where
    try:
        with open(spool / name, "rb") as handle:
            newlines, left = 0, offset
            while left > 0:
                chunk = handle.read(min(left, 1 << 20))
                if not chunk:
                    break
                newlines += chunk.count(b"\n")
                left -= len(chunk)
    except OSError:
        return f"{name} byte {offset}"
    return f"{name} line {newlines + 1}"


def now() -> int:
    return time.time_ns()


def parse_since(value: str) -> int:
    """``30s``/``15m``/``1h``/``2d``/``1w`` ago, or a local date/time (``2026-11-24``, ``2026-11-24T10:00``)."""
    match = _SINCE.match(value)
    if match:
        nanos = now() - int(float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()] * 1e9)
    else:
        try:
            nanos = int(_dt.datetime.fromisoformat(value.strip()).timestamp() * 1e9)
        except (ValueError, OverflowError, OSError):
            raise click.BadParameter(
                f"{value!r} is neither a duration (30s, 15m, 1h, 2d, 1w) nor a date/time (2026-11-24T10:00)."
            ) from None
    return min(max(nanos, 0), 2**63 - 1)


def parent_runs(index: RunIndex, rows: list[RunRow]) -> dict[tuple[str, str], RunRow]:
    """For each subflow row, the flow run it ran in (its nearest flow ancestor)."""
    parents: dict[tuple[str, str], RunRow] = {}
    by_trace: dict[str, list[RunRow]] = {}
    for row in rows:
        if row.parent_id is None:
            continue
        flows = by_trace.get(row.trace_id)
        if flows is None:
            flows = by_trace[row.trace_id] = [f for f in index.trace_runs(row.trace_id)]
        direct = next((f for f in flows if f.span_id == row.parent_id), None)
        if direct is None:
            # Called from inside a task: its parent span is the task's. The task ran within the innermost
            # flow run whose time span contains the subflow's.
            containing = [f for f in flows if f.span_id != row.span_id and f.start <= row.start
                          and (f.running or f.end >= row.end)]
            direct = max(containing, key=lambda f: f.start, default=None)
        if direct is not None:
            parents[(row.trace_id, row.span_id)] = direct
    return parents


def nested(rows: list[RunRow], parents: dict[tuple[str, str], RunRow]) -> list[tuple[RunRow, int, str | None]]:
    """Rows newest first, each subflow right under its parent run (when listed), oldest child first."""
    listed = {(r.trace_id, r.span_id) for r in rows}
    children: dict[tuple[str, str], list[RunRow]] = {}
    top: list[RunRow] = []
    for row in rows:
        parent = parents.get((row.trace_id, row.span_id))
        if parent is not None and (parent.trace_id, parent.span_id) in listed:
            children.setdefault((parent.trace_id, parent.span_id), []).append(row)
        else:
            top.append(row)
    out: list[tuple[RunRow, int, str | None]] = []

    def place(row: RunRow, level: int) -> None:
        parent = parents.get((row.trace_id, row.span_id))
        orphan = parent.run_name if parent is not None and level == 0 else None
        out.append((row, level, orphan))
        for child in sorted(children.get((row.trace_id, row.span_id), []), key=lambda r: r.start):
            place(child, level + 1)

    for row in top:
        place(row, 0)
    return out


def run_json(row: RunRow, parent: RunRow | None, now: int) -> dict[str, Any]:
    return {
        "flow": row.flow_name, "flow_run_id": row.run_id, "flow_run_name": row.run_name, "state": row.state,
        "running": row.running,
        "start": _dt.datetime.fromtimestamp(row.start / 1e9).astimezone().isoformat(timespec="milliseconds"),
        "start_unix_nano": row.start,
        "duration_ms": round(((now if row.running else row.end) - row.start) / 1e6, 3),
        "trace_id": row.trace_id, "span_id": row.span_id,
        "parent_flow_run_id": parent.run_id if parent is not None else None,
        "tags": row.tags, "service": row.service,
        "task_runs": row.task_runs, "task_runs_not_completed": row.task_runs_not_completed,
    }


# --- picking a run ---


def describe(row: RunRow) -> str:
    start = _dt.datetime.fromtimestamp(row.start / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    return terminal_safe(  # what the spool says is printed as text
        f"  {row.run_id}  {row.run_name:24}  {row.flow_name:20}  {start}  {row.state}  trace {row.trace_id}")


def pick(index: RunIndex, ident: str | None) -> RunRow:
    """The one flow run ``ident`` names, or exit non-zero with a message listing what it could mean."""
    if ident is None or ident.strip().lower() == "latest":
        rows = index.runs(limit=200)
        roots = [r for r in rows if r.parent_id is None] or rows
        if not roots:
            _fail(f"No flow runs in {index.spool}. Run a flow first (telemetry goes there when no OTLP endpoint "
                  "is set).")
        return roots[0]
    found = index.find(ident)
    if not found:
        _fail(f"No flow run matching {ident!r} in {index.spool} (looked for a flow run id or prefix, a flow run "
              "name and a trace id or prefix). `otelflow runs` lists what is there.")
    if len(found) > 1:
        lines = [f"{ident!r} matches {len(found)} flow runs; give more of a run id or trace id:"]
        lines += [describe(r) for r in found[:20]]
        if len(found) > 20:
            lines.append(f"  ... and {len(found) - 20} more")
        _fail("\n".join(lines))
    return found[0]


def load(index: RunIndex, row: RunRow, with_logs: bool = True) -> tuple[list[Node], list[Node], int]:
    """(trace roots, the runs to show, span count): the whole trace for a root run, the subtree for a subflow.

    A run's log records are read when first asked for (``Node.logs``), with the runs sharing their spool lines:
    a folded map's records are never read, only counted. Each run keeps some of them (the first ones and the
    warnings: ``tracetree.SHOW_LOG_CAP``) and counts the others (``Node.logs_omitted``): a run logging a million
    lines is shown in bounded memory.
    """
    from otelflow._internal.cli.tracetree import SHOW_LOG_CAP, LazyLogs, build_tree, subtree
    from otelflow._internal.spool.index import LogStream, no_gc

    trace_id = row.trace_id

    def read(lines: Collection[int]) -> Iterator[LogRecord]:
        return LogStream(index, trace_id).read(lines)

    with no_gc():
        spans = index.read_spans(trace_id)
        lazy = LazyLogs(index.log_lines(trace_id), read) if with_logs else LazyLogs([], read)
        roots = build_tree(spans, index.iter_logs(trace_id), index.writer_gone_at, cap=SHOW_LOG_CAP, lazy=lazy)
        del spans
    node = subtree(roots, row.span_id) if row.parent_id is not None else None
    shown = roots if node is None else [node]
    return roots, shown, sum(n.size() for n in shown)


def level(value: str | None) -> int:
    if value is None:
        return 0
    try:
        from otelflow._internal.cli.tracetree import LEVELS

        return LEVELS[value.strip().lower()]
    except KeyError:
        raise click.BadParameter(f"{value!r}: use one of debug, info, warning, error, critical.") from None


def who(log: LogRecord) -> str:
    from otelflow import semconv

    attrs = log.attributes
    return str(attrs.get(semconv.TASK_RUN_NAME) or attrs.get(semconv.FLOW_RUN_NAME) or "")



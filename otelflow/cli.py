"""The ``otelflow`` command: look at runs recorded in the local spool (the embedded telemetry default).

    otelflow runs [--flow NAME] [--state failed] [--since 1h] [--limit N] [--json]
    otelflow show [RUN_ID|RUN_NAME|TRACE_ID|latest] [--json] [--traceback] [--depth N] [--expand] [--state S] [--task T]
    otelflow logs [RUN_ID|RUN_NAME|TRACE_ID|latest] [--level warning] [--task NAME] [--follow] [--json]
    otelflow spool path | prune --older-than DAYS | ship --endpoint URL
    otelflow cache ls [--task NAME] [--older-than AGE] [--expired] [--json] | inspect KEY [--value] | clear [--all]
    otelflow artifacts ls [--key K] [--flow NAME] | show KEY|ID;  otelflow variable ls | get | set | unset
    otelflow gcl create NAME --limit N | ls | inspect | update | enable | disable | delete   (global-concurrency-limit)
    otelflow concurrency-limit create TAG N | ls | inspect TAG | reset TAG | delete TAG

The commands read a small index of the spool (``runindex``), brought up to date on every call, so they stay
fast on a large spool. Nothing imports this module; it never configures telemetry. Heavy modules (rich, the
index, the SDK for ``ship``) are imported inside the commands: ``otelflow --help`` stays quick.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from otelflow._internal.cli.tracetree import Node
    from otelflow._internal.spool.index import RunIndex, RunRow
    from otelflow._internal.spool.reader import LogRecord

__all__ = ["main"]

_LEVELS = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17, "critical": 21, "fatal": 21}
_SINCE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


# Command groups built elsewhere, imported only when used (`otelflow runs` does not pay for them):
# name -> (module, attribute). Registration point for other otelflow CLIs.
_LAZY_COMMANDS = {"input": ("otelflow.input.cli", "input_group"),
                  "cache": ("otelflow._internal.cli.cache", "cache_group"),
                  "artifacts": ("otelflow._internal.cli.artifacts", "artifact_group"),
                  "variable": ("otelflow._internal.cli.variables", "variable_group"),
                  "global-concurrency-limit": ("otelflow._internal.cli.concurrency", "gcl_group"),
                  "gcl": ("otelflow._internal.cli.concurrency", "gcl_group"),
                  "concurrency-limit": ("otelflow._internal.cli.concurrency", "tag_limit_group")}


class _Main(click.Group):
    """The top-level group: its own commands plus the lazily imported ones that are installed."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        here = Path(__file__).parent
        lazy = [name for name, (module, _) in _LAZY_COMMANDS.items()
                if (here.parent / (module.replace(".", "/") + ".py")).exists()]
        return sorted({*super().list_commands(ctx), *lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is None and cmd_name in _LAZY_COMMANDS:
            import importlib

            module, attribute = _LAZY_COMMANDS[cmd_name]
            try:
                found = getattr(importlib.import_module(module), attribute)
            except (ImportError, AttributeError):
                return None  # not installed in this build: the other commands work without it
            command = found if isinstance(found, click.Command) else None
        return command


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="otelflow")
def main() -> None:
    """otelflow: Prefect-style flows on OpenTelemetry. Inspect runs recorded in the local spool."""


_home_option = click.option(
    "--home", envvar="OTELFLOW_HOME", default=None,
    help="otelflow home folder (default: $OTELFLOW_HOME or ~/.otelflow).",
)


def _spool_dir(home: str | None) -> Path:
    if home:
        return Path(home).expanduser() / "spool"
    from otelflow.settings import get_settings

    return get_settings().spool_dir


@contextmanager
def _index(home: str | None) -> Iterator[RunIndex]:
    """The spool's run index, brought up to date; warns once about malformed lines met on the way."""
    from otelflow._internal.spool.index import RunIndex

    with RunIndex(_spool_dir(home)) as index:
        index.refresh()
        try:
            yield index
        finally:
            _warn_skipped(index)


def _warn_skipped(index: RunIndex) -> None:
    skipped = index.skipped
    if skipped.count:
        click.echo(
            f"otelflow: warning: skipped {skipped.count} malformed spool record(s) (first at {skipped.first}); "
            "the rest of the spool was read.",
            err=True,
        )
        skipped.count, skipped.first = 0, None


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


def _now() -> int:
    return time.time_ns()


def _parse_since(value: str) -> int:
    """``30s``/``15m``/``1h``/``2d``/``1w`` ago, or a local date/time (``2026-11-24``, ``2026-11-24T10:00``)."""
    match = _SINCE.match(value)
    if match:
        nanos = _now() - int(float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()] * 1e9)
    else:
        try:
            nanos = int(_dt.datetime.fromisoformat(value.strip()).timestamp() * 1e9)
        except (ValueError, OverflowError, OSError):
            raise click.BadParameter(
                f"{value!r} is neither a duration (30s, 15m, 1h, 2d, 1w) nor a date/time (2026-11-24T10:00)."
            ) from None
    return min(max(nanos, 0), 2**63 - 1)


# --- runs ---------------------------------------------------------------------------------------------


def _parent_runs(index: RunIndex, rows: list[RunRow]) -> dict[tuple[str, str], RunRow]:
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


def _nested(rows: list[RunRow], parents: dict[tuple[str, str], RunRow]) -> list[tuple[RunRow, int, str | None]]:
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


def _run_json(row: RunRow, parent: RunRow | None, now: int) -> dict[str, Any]:
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


@main.command()
@_home_option
@click.option("--flow", "flow", metavar="NAME", help="Only runs of this flow.")
@click.option("--state", "states", metavar="STATE", multiple=True,
              help="Only runs in this final state (failed, completed, crashed, running...); repeat or comma-separate.")
@click.option("--since", metavar="WHEN", help="Only runs started since: 30m, 1h, 2d, 1w, or a date/time.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=20, show_default=True,
              help="How many flow runs to list (at least 1).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run (JSON lines) instead of a table.")
def runs(home: str | None, flow: str | None, states: tuple[str, ...], since: str | None, limit: int,
         as_json: bool) -> None:
    """List flow runs recorded in the local spool, newest first; subflows sit under their parent run."""
    wanted = [s.strip() for value in states for s in value.split(",") if s.strip()]
    since_ns = _parse_since(since) if since else None
    with _index(home) as index:
        rows = index.runs(flow=flow, states=wanted, since=since_ns, limit=limit)
        now = _now()
        if not rows:
            total = index.count_runs()
            if total:
                message = f"No flow runs match these filters ({total} flow run(s) in {index.spool})."
            else:
                message = (f"No flow runs in {index.spool}. Run a flow first "
                           "(telemetry goes there when no OTLP endpoint is set).")
            click.echo(message, err=as_json)  # --json: stdout stays valid JSON lines (none)
            return
        parents = _parent_runs(index, rows)
        nested = _nested(rows, parents)
        if as_json:
            for row, _, _ in nested:
                click.echo(json.dumps(_run_json(row, parents.get((row.trace_id, row.span_id)), now)))
            return
        from otelflow._internal.cli.render import make_console, render_runs

        render_runs(make_console(), nested, now)


# --- picking a run ------------------------------------------------------------------------------------


def _describe(row: RunRow) -> str:
    start = _dt.datetime.fromtimestamp(row.start / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    return f"  {row.run_id}  {row.run_name:24}  {row.flow_name:20}  {start}  {row.state}  trace {row.trace_id}"


def _pick(index: RunIndex, ident: str | None) -> RunRow:
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
        lines += [_describe(r) for r in found[:20]]
        if len(found) > 20:
            lines.append(f"  ... and {len(found) - 20} more")
        _fail("\n".join(lines))
    return found[0]


def _load(index: RunIndex, row: RunRow, with_logs: bool = True) -> tuple[list[Node], list[Node], int]:
    """(trace roots, the runs to show, span count): the whole trace for a root run, the subtree for a subflow."""
    from otelflow._internal.cli.tracetree import build_tree, subtree

    spans = index.read_spans(row.trace_id)
    logs = index.read_logs(row.trace_id) if with_logs else []
    roots = build_tree(spans, logs, index.writer_gone_at)
    node = subtree(roots, row.span_id)
    shown = roots if node is None or row.parent_id is None else [node]
    return roots, shown, sum(len(n.walk()) for n in shown)


# --- show ---------------------------------------------------------------------------------------------


@main.command()
@_home_option
@click.argument("ident", required=False, metavar="[RUN_ID|RUN_NAME|TRACE_ID|latest]")
@click.option("--json", "as_json", is_flag=True, help="The runs as JSON (one object, every span with its logs).")
@click.option("--traceback", is_flag=True, help="Print stored stack traces of failures.")
@click.option("--depth", type=click.IntRange(min=0), default=None, help="Show N levels of runs below the top.")
@click.option("--expand", is_flag=True, help="Show every mapped run instead of one summary line per mapped task.")
@click.option("--state", "states", metavar="STATE", multiple=True,
              help="Only runs in this state (failed, notready, running...) and the runs they sit in; repeat or "
                   "comma-separate.")
@click.option("--task", "task", metavar="NAME", help="Only runs of this task (task name or task run name).")
def show(home: str | None, ident: str | None, as_json: bool, traceback: bool, depth: int | None,
         expand: bool, states: tuple[str, ...], task: str | None) -> None:
    """Show a flow run as a waterfall: its runs as a tree with start offsets, durations and logs.

    IDENT is a flow run id (or prefix), a flow run name, a trace id (or prefix) or `latest` (the default).
    A subflow's id shows that subflow only. Mapped runs of a task are summarised on one line unless --expand.
    """
    with _index(home) as index:
        row = _pick(index, ident)
        _, shown, count = _load(index, row)
        now = _now()
        if not shown:
            _fail(f"The spans of flow run {row.run_name!r} (trace {row.trace_id}) are no longer in the spool.")
        keep = None
        wanted = {v.strip().lower() for value in states for v in value.split(",") if v.strip()}
        if wanted or task is not None:
            from otelflow._internal.cli.tracetree import matching

            keep = matching(shown, wanted, task)
            if not keep:
                _fail(f"No run in flow run {row.run_name!r} matches these filters.")
        if as_json:
            from otelflow._internal.cli.tracetree import node_json

            spans = [node_json(n, now) for top in shown for n in top.walk() if keep is None or id(n) in keep]
            click.echo(json.dumps({"trace_id": row.trace_id, "flow_run_id": row.run_id,
                                   "flow_run_name": row.run_name, "spans": spans}, default=str))
            return
        from otelflow._internal.cli.render import make_console, render_trace

        service = str(shown[0].span.resource.get("service.name", "?"))
        render_trace(make_console(), shown, trace_id=row.trace_id, service=service, span_count=count, now=now,
                     expand=expand, traceback=traceback, depth=depth, keep=keep)


# --- logs ---------------------------------------------------------------------------------------------


def _level(value: str | None) -> int:
    if value is None:
        return 0
    try:
        return _LEVELS[value.strip().lower()]
    except KeyError:
        raise click.BadParameter(f"{value!r}: use one of debug, info, warning, error, critical.") from None


def _severity(log: LogRecord) -> int:
    return log.severity_number or _LEVELS.get(log.severity_text.lower(), 0)


def _who(log: LogRecord) -> str:
    from otelflow import semconv

    attrs = log.attributes
    return str(attrs.get(semconv.TASK_RUN_NAME) or attrs.get(semconv.FLOW_RUN_NAME) or "")


@main.command()
@_home_option
@click.argument("ident", required=False, metavar="[RUN_ID|RUN_NAME|TRACE_ID|latest]")
@click.option("--level", "level_name", metavar="LEVEL", help="Only records at this level or above (warning...).")
@click.option("--task", "task", metavar="NAME", help="Only records of this task (task name or task run name).")
@click.option("--follow", "-f", is_flag=True, help="Keep printing new records until the flow run ends (Ctrl-C stops).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record (JSON lines).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.5, hidden=True)
def logs(home: str | None, ident: str | None, level_name: str | None, task: str | None, follow: bool,
         as_json: bool, interval: float) -> None:
    """Print a flow run's logs (its tasks' and subflows' too) in time order.

    IDENT is a flow run id (or prefix), a flow run name, a trace id (or prefix) or `latest` (the default).
    """
    from otelflow import semconv

    threshold = _level(level_name)
    with _index(home) as index:
        row = _pick(index, ident)
        roots, shown, _ = _load(index, row, with_logs=False)
        whole_trace = shown is roots
        span_ids = {n.span.span_id for top in shown for n in top.walk()}
        console: Any = None
        if not as_json:
            from otelflow._internal.cli.render import log_line, make_console, print_lines

            console = make_console()

        def wanted(log: LogRecord) -> bool:
            if not whole_trace and log.span_id not in span_ids and (
                    log.attributes.get(semconv.FLOW_RUN_ID) != row.run_id):
                return False
            if threshold and _severity(log) < threshold:
                return False
            if task is not None:
                names = {log.attributes.get(semconv.TASK_NAME), log.attributes.get(semconv.TASK_RUN_NAME)}
                if task not in names:
                    return False
            return True

        def emit(records: list[LogRecord]) -> None:
            chosen = [log for log in sorted(records, key=lambda r: r.time) if wanted(log)]
            if as_json:
                from otelflow._internal.cli.tracetree import log_json

                sys.stdout.write("".join(json.dumps(log_json(log), default=str) + "\n" for log in chosen))
            else:
                print_lines(console, [log_line(log, who=_who(log)) for log in chosen])
            sys.stdout.flush()

        seen: set[tuple[str, int]] = set()
        emit(index.read_logs(row.trace_id, after=seen))
        if not follow or not row.running:
            return  # nothing more will come for a run that has ended
        running = True
        grace = 0
        try:
            # Logs and spans are exported by separate batch processors: after the run's span lands, read
            # a few more times so records flushed just after it are printed too.
            while running or grace < 3:
                time.sleep(interval)
                index.refresh()
                _warn_skipped(index)
                emit(index.read_logs(row.trace_id, after=seen))
                if running:
                    running = not any(r.span_id == row.span_id and not r.running
                                      for r in index.trace_runs(row.trace_id))
                else:
                    grace += 1
        except KeyboardInterrupt:
            return


# --- spool --------------------------------------------------------------------------------------------


@main.group()
def spool() -> None:
    """Manage the local spool (the embedded telemetry default)."""


@spool.command("path")
@_home_option
def spool_path(home: str | None) -> None:
    """Print the spool folder (mount it into the Collector's `otlp_json_file` receiver to ship it)."""
    click.echo(str(_spool_dir(home)))


@spool.command("prune")
@_home_option
@click.option("--older-than", "days", type=click.FloatRange(min=0), required=True,
              help="Delete spool files last written more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
def spool_prune(home: str | None, days: float, dry_run: bool) -> None:
    """Delete old spool files. Files of running processes are kept: they were written recently."""
    folder = _spool_dir(home)
    cutoff = time.time() - days * 86400
    doomed = [p for p in sorted(folder.glob("*.jsonl")) if p.stat().st_mtime < cutoff] if folder.is_dir() else []
    freed = sum(p.stat().st_size for p in doomed)
    for path in doomed:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {path.name}")
        if not dry_run:
            path.unlink(missing_ok=True)
            # its `spool ship` progress file goes with it
            path.with_name(path.name + ".shipped").unlink(missing_ok=True)
    if not dry_run:
        from otelflow._internal.spool.liveness import orphaned_locks

        for lock in orphaned_locks(folder):  # an ended process's liveness lock, once its last file is gone
            lock.unlink(missing_ok=True)
    click.echo(f"{len(doomed)} file(s), {freed / 2**20:.1f} MiB {'to free' if dry_run else 'freed'} in {folder}.")


def _exporters(endpoint: str, protocol: str, timeout: float, headers: dict[str, str]) -> tuple[Any, Any]:
    """OTLP senders for spans and logs to a collector base URL (``http://host:4318`` / ``http://host:4317``).

    Each export is one request; a failure says why (connection refused, HTTP 413...), from the transport itself.
    """
    from otelflow._internal.export.otlp import OtlpSender

    base = endpoint.rstrip("/")
    kind = "grpc" if protocol == "grpc" else "http"
    if kind == "http":
        for suffix in ("/v1/traces", "/v1/logs"):
            base = base.removesuffix(suffix)
    path = {"traces": "", "logs": ""} if kind == "grpc" else {"traces": "/v1/traces", "logs": "/v1/logs"}
    return tuple(OtlpSender(signal, kind, endpoint=base + path[signal], timeout=timeout, headers=headers)
                 for signal in ("traces", "logs"))  # type: ignore[return-value]


@spool.command("ship")
@_home_option
@click.option("--endpoint", envvar="OTEL_EXPORTER_OTLP_ENDPOINT", required=True, metavar="URL",
              help="Collector base URL: http://host:4318 (http/protobuf) or http://host:4317 (grpc). "
                   "Default: $OTEL_EXPORTER_OTLP_ENDPOINT.")
@click.option("--protocol", envvar="OTEL_EXPORTER_OTLP_PROTOCOL", default="http/protobuf", show_default=True,
              type=click.Choice(["http/protobuf", "grpc"]), help="OTLP transport.")
@click.option("--header", "header_values", multiple=True, metavar="KEY=VALUE", help="Extra request header.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds per export request.")
def spool_ship(home: str | None, endpoint: str, protocol: str, header_values: tuple[str, ...],
               timeout: float) -> None:
    """Send the spooled runs (made offline), and the outage buffer, to a collector over OTLP.

    What was shipped is remembered (a `.shipped` progress file next to each spool file), so running it again
    sends only what is new; an interrupted or failed ship resumes where it stopped. The outage buffer (batches
    an OTLP exporter could not deliver, `$OTELFLOW_HOME/buffer/`) is sent after the spool and its files are
    deleted once sent.
    """
    from otelflow._internal.export.ship import ship_directory

    headers: dict[str, str] = {}
    for value in header_values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE.", param_hint="--header")
        headers[key.strip()] = val.strip()
    folder = _spool_dir(home)
    buffer = folder.parent / "buffer"
    span_exporter, log_exporter = _exporters(endpoint, protocol, timeout, headers)
    totals: dict[tuple[str, str], Any] = {}
    failed: str | None = None
    try:
        for source, directory, delete in (("spool", folder, False), ("buffer", buffer, True)):
            for signal, exporter in (("traces", span_exporter), ("logs", log_exporter)):
                try:
                    result = ship_directory(directory, signal, exporter, delete_shipped=delete)
                except OSError as exc:  # a folder or file that cannot be read: stop, say why, lose nothing
                    failed = f"cannot read {exc.filename or directory}: {exc.strerror or exc}"
                    break
                totals[source, signal] = result
                if result.failed:
                    failed = result.error or "the collector did not accept the data"
                    break
            if failed:
                break
    finally:
        span_exporter.shutdown()
        log_exporter.shutdown()

    def sent(source: str, signal: str) -> int:
        return int(totals[source, signal].items_sent) if (source, signal) in totals else 0

    spans, records = sent("spool", "traces"), sent("spool", "logs")
    skipped = sum(r.lines_skipped for r in totals.values())
    busy = sum(r.files_locked for r in totals.values())
    click.echo(f"shipped {spans} span(s) and {records} log record(s) from {folder} to {endpoint} ({protocol}).")
    buffered = sent("buffer", "traces") + sent("buffer", "logs")
    if buffered:
        click.echo(f"shipped {buffered} item(s) from the outage buffer {buffer}.")
    damaged = [path for r in totals.values() for path in r.files_damaged]
    if skipped:
        click.echo(f"otelflow: warning: skipped {skipped} unreadable line(s) (not sent).", err=True)
    if damaged:
        names = ", ".join(str(path) for path in damaged)
        click.echo(f"otelflow: warning: kept {len(damaged)} file(s) holding them, for inspection: {names}", err=True)
    if busy:
        click.echo(f"{busy} file(s) in use by another process (or another ship) were left for later.")
    if failed:
        _fail(f"Stopped: {failed}. Nothing was lost: run `otelflow spool ship` again to resume from there.")

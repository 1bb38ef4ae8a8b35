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

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from otelflow._internal.cli import runs as _shared
from otelflow._internal.cli.support import fail as _fail

if TYPE_CHECKING:
    from otelflow._internal.spool.reader import LogRecord

__all__ = ["main"]



# Command groups built elsewhere, imported only when used (`otelflow runs` does not pay for them):
# name -> (module, attribute). Registration point for other otelflow CLIs.
_LAZY_COMMANDS = {"input": ("otelflow.input.cli", "input_group"),
                  "spool": ("otelflow._internal.cli.spool", "spool_group"),
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


# --- runs ---------------------------------------------------------------------------------------------


@main.command()
@_shared.home_option
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
    since_ns = _shared.parse_since(since) if since else None
    with _shared.index(home) as index:
        rows = index.runs(flow=flow, states=wanted, since=since_ns, limit=limit)
        now = _shared.now()
        if not rows:
            total = index.count_runs()
            if total:
                message = f"No flow runs match these filters ({total} flow run(s) in {index.spool})."
            else:
                message = (f"No flow runs in {index.spool}. Run a flow first "
                           "(telemetry goes there when no OTLP endpoint is set).")
            click.echo(message, err=as_json)  # --json: stdout stays valid JSON lines (none)
            return
        parents = _shared.parent_runs(index, rows)
        nested = _shared.nested(rows, parents)
        if as_json:
            for row, _, _ in nested:
                click.echo(json.dumps(_shared.run_json(row, parents.get((row.trace_id, row.span_id)), now)))
            return
        from otelflow._internal.cli.render import make_console, render_runs

        render_runs(make_console(), nested, now)


# --- show ---------------------------------------------------------------------------------------------


@main.command()
@_shared.home_option
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
    with _shared.index(home) as index:
        row = _shared.pick(index, ident)
        _, shown, count = _shared.load(index, row)
        now = _shared.now()
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


@main.command()
@_shared.home_option
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

    threshold = _shared.level(level_name)
    with _shared.index(home) as index:
        row = _shared.pick(index, ident)
        roots, shown, _ = _shared.load(index, row, with_logs=False)
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
            if threshold and _shared.severity(log) < threshold:
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
                print_lines(console, [log_line(log, who=_shared.who(log)) for log in chosen])
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
                _shared.warn_skipped(index)
                emit(index.read_logs(row.trace_id, after=seen))
                if running:
                    running = not any(r.span_id == row.span_id and not r.running
                                      for r in index.trace_runs(row.trace_id))
                else:
                    grace += 1
        except KeyboardInterrupt:
            return


# --- spool --------------------------------------------------------------------------------------------



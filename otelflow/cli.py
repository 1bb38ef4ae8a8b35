"""The ``otelflow`` command: look at runs recorded in the local spool (the embedded telemetry default).

    otelflow runs [--flow NAME] [--state failed] [--since 1h] [--limit N] [--json]
    otelflow show [RUN_ID|RUN_NAME|TRACE_ID|latest] [--json] [--traceback] [--depth N] [--expand] [--state S] [--task T]
    otelflow logs [RUN_ID|RUN_NAME|TRACE_ID|latest] [--level warning] [--task NAME] [--follow] [--json]
    otelflow spool path | prune --older-than DAYS | ship --endpoint URL
    otelflow cache ls [--task NAME] [--older-than AGE] [--expired] [--json] | inspect KEY [--value] | clear [--all]
    otelflow artifacts ls [--key K] [--flow NAME] | show KEY|ID;  otelflow variable ls | get | set | unset
    otelflow gcl create NAME --limit N | ls | inspect | update | enable | disable | delete   (global-concurrency-limit)
    otelflow concurrency-limit create TAG N | ls | inspect TAG | reset TAG | delete TAG
    otelflow ui [--host 127.0.0.1] [--port 4200] [--open]      (a web page of the same runs, traces and logs)

The commands read a small index of the spool (``runindex``), brought up to date on every call, so they stay
fast on a large spool. Nothing imports this module; it never configures telemetry. Heavy modules (rich, the
index, the SDK for ``ship``) are imported inside the commands: ``otelflow --help`` stays quick.
"""

from __future__ import annotations

import difflib
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from otelflow._internal.cli import runs as _shared
from otelflow._internal.cli.support import fail as _fail
from otelflow._internal.terminal import terminal_safe as shown_text

if TYPE_CHECKING:
    from otelflow._internal.spool.index import RunIndex, RunRow

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
                  "concurrency-limit": ("otelflow._internal.cli.concurrency", "tag_limit_group"),
                  "ui": ("otelflow._internal.cli.ui", "ui_command")}


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
    since_ns = _shared.parse_since(since) if since else None
    with _shared.index(home) as index:
        wanted = _states_option(states, lambda: {r.state for r in index.runs()}, "--state")
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
@click.option("--flow", "flow", metavar="NAME", help="The latest run of this flow (instead of IDENT).")
def show(home: str | None, ident: str | None, as_json: bool, traceback: bool, depth: int | None,
         expand: bool, states: tuple[str, ...], task: str | None, flow: str | None) -> None:
    """Show a flow run as a waterfall: its runs as a tree with start offsets, durations and logs.

    IDENT is a flow run id (or prefix), a flow run name, a trace id (or prefix) or `latest` (the default);
    `--flow NAME` picks the latest run of that flow. A subflow's id shows that subflow only. Mapped runs of a
    task are summarised on one line unless --expand.
    """
    with _shared.index(home) as index:
        row = _latest_of_flow(index, flow, ident) if flow is not None else _shared.pick(index, ident)
        _, shown, count = _shared.load(index, row)
        now = _shared.now()
        if not shown:
            _fail(f"The spans of flow run {shown_text(row.run_name)!r} (trace {shown_text(row.trace_id)}) are no "
                  "longer in the spool.")
        keep = None
        wanted = {v.lower() for v in _states_option(
            states, lambda: {n.state for top in shown for n in top.walk()}, "--state")}
        if wanted or task is not None:
            from otelflow._internal.cli.tracetree import matching

            keep = matching(shown, wanted, task)
            if not keep:
                _fail(f"No run in flow run {shown_text(row.run_name)!r} matches these filters.")
        if as_json:
            from otelflow._internal.cli.tracetree import node_json

            # One JSON document, written a span at a time: a 100k-run trace is never one string in memory.
            head = json.dumps({"trace_id": row.trace_id, "flow_run_id": row.run_id, "flow_run_name": row.run_name})
            out = sys.stdout
            out.write(head[:-1] + ', "spans": [')
            first = True
            for top in shown:
                for n in top.walk():
                    if keep is None or id(n) in keep:
                        out.write(("" if first else ", ") + json.dumps(node_json(n, now), default=str))
                        first = False
            out.write("]}\n")
            out.flush()
            return
        from otelflow._internal.cli.render import make_console, render_trace

        service = str(shown[0].span.resource.get("service.name", "?"))
        render_trace(make_console(), shown, trace_id=row.trace_id, service=service, span_count=count, now=now,
                     expand=expand, traceback=traceback, depth=depth, keep=keep)


def _latest_of_flow(index: RunIndex, flow: str, ident: str | None) -> RunRow:
    """The newest flow run of ``flow`` (a subflow run too, when the flow only ever ran as a subflow)."""
    if ident is not None and ident.strip().lower() != "latest":
        raise click.UsageError("Give a run (IDENT) or --flow NAME, not both.")
    rows = index.runs(flow=flow, limit=1)
    if not rows:
        names = sorted({r.flow_name for r in index.runs(limit=500)})
        near = difflib.get_close_matches(flow, names, n=3)
        hint = f" Did you mean {', '.join(repr(shown_text(n)) for n in near)}?" if near else ""
        _fail(f"No run of flow {shown_text(flow)!r} in {index.spool}.{hint} `otelflow runs` lists what is there.")
    return rows[0]


# Prefect's state names (and otelflow's NotReady, Cached): what --state accepts, with any name the spool holds.
KNOWN_STATES = ("Scheduled", "Late", "AwaitingRetry", "AwaitingConcurrencySlot", "Pending", "NotReady", "Running",
                "Retrying", "Paused", "Suspended", "Completed", "Cached", "Failed", "TimedOut", "Crashed",
                "Cancelling", "Cancelled", "RolledBack")


def _states_option(values: tuple[str, ...], present: Callable[[], Iterable[str]], option: str) -> list[str]:
    """The state names of a repeated/comma-separated option, checked: a misspelt name (``faild``) is an error
    that names the valid ones, not an empty result. Case-insensitive; custom state names found in the spool
    (``Completed(name="Skipped")``) are valid too."""
    wanted = [v.strip() for value in values for v in value.split(",") if v.strip()]
    valid = {name.lower(): name for name in KNOWN_STATES}
    if any(name.lower() not in valid for name in wanted):
        valid.update((name.lower(), name) for name in present() if name)  # custom names: only asked when needed
    for name in wanted:
        if name.lower() not in valid:
            near = difflib.get_close_matches(name.lower(), list(valid), n=1)
            hint = f" Did you mean {valid[near[0]]!r}?" if near else ""
            raise click.BadParameter(
                f"{shown_text(name)!r} is not a state.{hint} Use one of: "
                f"{', '.join(sorted({n.lower() for n in valid.values()}))}.", param_hint=option)
    return wanted


# --- logs ---------------------------------------------------------------------------------------------


@main.command()
@_shared.home_option
@click.argument("ident", required=False, metavar="[RUN_ID|RUN_NAME|TRACE_ID|latest]")
@click.option("--level", "level_name", metavar="LEVEL", help="Only records at this level or above (warning...).")
@click.option("--task", "task", metavar="NAME", help="Only records of this task (task name or task run name).")
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new records until the flow run ends (Ctrl-C stops); exit with its outcome.")
@click.option("--exit-status", is_flag=True, help="Exit with the run's outcome (as --follow does; 3: not ended).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per record (JSON lines).")
@click.option("--interval", type=click.FloatRange(min=0.05), default=0.1, hidden=True)
def logs(home: str | None, ident: str | None, level_name: str | None, task: str | None, follow: bool,
         exit_status: bool, as_json: bool, interval: float) -> None:
    """Print a flow run's logs (its tasks' and subflows' too) in time order, as they are read.

    IDENT is a flow run id (or prefix), a flow run name, a trace id (or prefix) or `latest` (the default). With
    --follow, `latest` is the newest flow run still running; with none running, the next one to start.

    \b
    Exit status with --follow or --exit-status: the run's outcome.
      0  it ended Completed
      1  it ended Failed, Crashed, TimedOut, Cancelled (or NotReady); also: no run matches IDENT
      3  it has not ended (--exit-status without --follow)
      130  Ctrl-C
    """
    from otelflow._internal.cli.logs import show_logs

    sys.exit(show_logs(home, ident, level_name=level_name, task=task, follow=follow, as_json=as_json,
                       interval=interval, exit_status=exit_status))


# --- spool --------------------------------------------------------------------------------------------



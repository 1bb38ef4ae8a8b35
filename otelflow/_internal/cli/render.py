"""Terminal rendering for the CLI: the runs table, the trace waterfall, log lines.

On a terminal: colours, duration bars, lines fitted to the width. Piped: plain text, nothing cut, no bars.
``NO_COLOR`` is honoured (rich reads it). ``rich`` is imported here only, so ``otelflow --help`` stays fast.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Sequence
from typing import IO, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from otelflow import semconv
from otelflow._internal.cli.support import terminal_safe
from otelflow._internal.cli.tracetree import Group, Node, group_children
from otelflow._internal.spool.index import RunRow
from otelflow._internal.spool.reader import LogRecord

__all__ = [
    "CACHED_MARK",
    "STATE_STYLES",
    "format_duration",
    "log_line",
    "make_console",
    "print_lines",
    "render_runs",
    "render_trace",
]

STATE_STYLES = {
    "Completed": "green", "Failed": "red", "Crashed": "bold red", "TimedOut": "red", "Cancelled": "yellow",
    "NotReady": "magenta", "Running": "cyan", "Pending": "cyan", "Retrying": "yellow", "Paused": "yellow",
    "Cached": "dim cyan",
}
CACHED_MARK: Final = "↺ cached"  # after the state of a run that returned a cached result (readable without colour)
_LEVEL_STYLES = {"TRACE": "dim", "DEBUG": "blue", "INFO": "green", "WARN": "yellow", "WARNING": "yellow",
                 "ERROR": "red", "CRITICAL": "bold red", "FATAL": "bold red"}
_HIDDEN_LOG_PREFIXES = (f"{semconv.NAMESPACE}.", "code.", "exception.")
# Run identity shown elsewhere on the line (Prefect-style record extras some handlers copy into attributes).
_HIDDEN_LOG_KEYS = frozenset({"flow_run_id", "flow_run_name", "flow_name", "task_run_id", "task_run_name",
                              "task_name"})


def make_console(file: IO[str] | None = None) -> Console:
    """A console for stdout: width-aware on a terminal; unbounded plain text when piped."""
    stream = file if file is not None else sys.stdout
    tty = stream.isatty()
    if tty:
        return Console(file=stream, highlight=False, emoji=False)
    return Console(file=stream, highlight=False, emoji=False, width=100_000, color_system=None)


def format_duration(ns: int) -> str:
    """``850µs``, ``12.3ms``, ``1.23s``, ``2m03s``, ``1h02m``."""
    s = ns / 1e9
    if s < 0.001:
        return f"{ns / 1e3:.0f}µs"
    if s < 1:
        return f"{s * 1e3:.1f}ms"
    if s < 60:
        return f"{s:.2f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"


def _offset(ns: int) -> str:
    return "+" + (f"{ns / 1e9:.3f}s" if ns < 60e9 else format_duration(ns))


def _local(ns: int, fmt: str) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9).strftime(fmt)


def _state(state: str, suffix: str = "") -> Text:
    return Text(state + suffix, style=STATE_STYLES.get(state, ""))


# --- runs ---------------------------------------------------------------------------------------------


_MIN_NAME_WIDTH: Final = 8  # run and flow names are cut to no less (``RUN NAME`` itself is 8 wide)


def render_runs(console: Console, rows: Sequence[tuple[RunRow, int, str | None]], now: int) -> None:
    """The runs table. ``rows``: (run, nesting level, name of its parent run when not listed above it).

    Piped: every column, whole. On a terminal narrower than 150 columns: no trace id, the run id's first 8
    characters (a prefix `show` and `logs` accept), a shorter start time; narrower still, the trace ids, the
    task counts, the durations, then the start times go, before run names, then flow names, are cut (to no less
    than 8 columns, with an ellipsis); states and run ids are never cut while the terminal has room for them.
    """
    tty = console.is_terminal
    wide = not tty or console.width >= 150
    columns: list[tuple[str, list[Text], str]] = [  # header, cells, justify
        ("START", [], "left"), ("FLOW", [], "left"), ("RUN NAME", [], "left"), ("STATE", [], "left"),
        ("DURATION", [], "right"), ("TASKS", [], "right"), ("RUN ID", [], "left"),
    ]
    if wide:
        columns.append(("TRACE ID", [], "left"))
    for run, level, orphan_of in rows:
        name = Text("  " * max(0, level - 1) + ("└ " if level else "")) + Text(run.run_name)
        if orphan_of:
            name.append(f" (in {orphan_of})", style="dim")
        duration = format_duration((now if run.running else run.end) - run.start)
        cells = [
            Text(_local(run.start, "%Y-%m-%d %H:%M:%S" if wide else "%m-%d %H:%M:%S")), Text(run.flow_name), name,
            _state(run.state), Text(duration + ("…" if run.running else "")), _tasks(run, wide),
            Text(run.run_id if wide else run.run_id[:8]),
        ]
        if wide:
            cells.append(Text(run.trace_id))
        for (_, column, _), cell in zip(columns, cells, strict=True):
            column.append(cell)
    widths: dict[str, int] = {}  # on a terminal: the width of each column shown (flow names at most 30)
    if tty:
        widths = {header: max([len(header), *(c.cell_len for c in cells)]) for header, cells, _ in columns}
        widths["FLOW"] = min(widths["FLOW"], 30)

        def excess() -> int:
            return sum(widths.values()) + 2 * (len(widths) - 1) - console.width

        for droppable in ("TRACE ID", "TASKS", "DURATION", "START"):
            if excess() <= 0:
                break
            widths.pop(droppable, None)
        columns = [c for c in columns if c[0] in widths]
        for name_column in ("RUN NAME", "FLOW"):  # still too wide: cut run names, then flow names (never ids)
            widths[name_column] -= max(0, min(excess(), widths[name_column] - _MIN_NAME_WIDTH))
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", show_header=True,
                  padding=(0, 2, 0, 0))
    for header, _, justify in columns:
        squeezable = header in ("FLOW", "RUN NAME")
        table.add_column(header, no_wrap=True, justify=justify,  # type: ignore[arg-type]
                         overflow="ellipsis" if squeezable else "crop",
                         min_width=_MIN_NAME_WIDTH if squeezable else None,
                         max_width=widths[header] if squeezable and tty else None)
    for i in range(len(rows)):
        table.add_row(*(cells[i] for _, cells, _ in columns))
    console.print(table, soft_wrap=not tty)


def _tasks(run: RunRow, wide: bool) -> Text:
    """``12`` task runs, or ``12 (3 not completed)`` (``12 (3 not ok)`` when narrow)."""
    text = Text(str(run.task_runs))
    if run.task_runs_not_completed:
        what = "not completed" if wide else "not ok"
        text.append(f" ({run.task_runs_not_completed} {what})", style="red")
    return text


# --- logs ---------------------------------------------------------------------------------------------


def log_line(log: LogRecord, *, prefix: str = "", who: str | None = None, traceback: bool = False) -> Text:
    """``12:00:01.234 INFO    message  key=value`` (with the exception under it)."""
    severity = log.severity_text or (str(log.severity_number) if log.severity_number else "")
    text = Text(prefix)
    text.append(_local(log.time, "%H:%M:%S.%f")[:-3], style="dim")
    text.append(" ")
    text.append(f"{severity:7}", style=_LEVEL_STYLES.get(severity.upper(), ""))
    text.append(" ")
    if who:
        text.append(who, style="cyan")
        text.append(" | ", style="dim")
    # continuation lines of a multi-line message stay under the message, inside the tree
    text.append(log.body.rstrip("\n").replace("\n", "\n" + prefix + " " * 21))
    extras = " ".join(f"{k}={v}" for k, v in log.attributes.items()
                      if not k.startswith(_HIDDEN_LOG_PREFIXES) and k not in _HIDDEN_LOG_KEYS)
    if extras:
        text.append("  " + extras, style="dim")
    exc_type = log.attributes.get(semconv.EXCEPTION_TYPE)
    if exc_type:
        stack = log.attributes.get(semconv.EXCEPTION_STACKTRACE)
        if traceback and isinstance(stack, str) and stack:
            for line in stack.rstrip().splitlines():
                text.append(f"\n{prefix}    {line}", style="red")
        else:
            text.append(f"\n{prefix}    {exc_type}: {log.attributes.get(semconv.EXCEPTION_MESSAGE, '')}", style="red")
    return text


def _who(log: LogRecord) -> str:
    attrs = log.attributes
    return str(attrs.get(semconv.TASK_RUN_NAME) or attrs.get(semconv.FLOW_RUN_NAME) or "?")


# --- the trace waterfall ------------------------------------------------------------------------------


class _Waterfall:
    """Lays out one line per run: tree + label on the left, start offset and a duration bar on the right."""

    def __init__(self, console: Console, t0: int, t1: int, now: int, *, expand: bool, traceback: bool,
                 depth: int | None, keep: set[int] | None) -> None:
        self.console = console
        self.tty = console.is_terminal
        self.t0, self.now = t0, now
        self.total = max(1, t1 - t0)
        self.expand, self.traceback, self.depth, self.keep = expand, traceback, depth, keep
        width = console.width if self.tty else 0
        self.bar = max(10, min(40, width // 4)) if self.tty and width >= 70 else 0
        self.left = (width - self.bar - 12) if self.bar else width
        self.hidden_tracebacks = False
        self.out: list[Text] = []

    def emit(self, text: Text) -> None:
        self.out.append(text)

    def run_line(self, prefix: str, label: Text, start: int, end: int, style: str) -> None:
        line = Text(prefix) + label
        offset = _offset(start - self.t0)
        if not self.bar:
            line.append("  " + offset, style="dim")
            if self.tty:
                line.truncate(self.left, overflow="ellipsis")
            self.emit(line)
            return
        line.truncate(self.left, overflow="ellipsis", pad=True)
        line.append(f" {offset:>10} ", style="dim")
        begin = int((start - self.t0) / self.total * self.bar)
        length = max(1, round((end - start) / self.total * self.bar))
        begin = min(begin, self.bar - 1)
        length = min(length, self.bar - begin)
        line.append(" " * begin)
        line.append("█" * length, style=style or "white")
        self.emit(line)

    def detail(self, prefix: str, text: str | Text, style: str = "") -> None:
        line = Text(prefix + "  ")
        line.append(text if isinstance(text, Text) else Text(text, style=style))
        self.emit(line)

    def node(self, node: Node, prefix: str, branch: str, child_prefix: str, level: int) -> None:
        label = Text()
        label.append(node.span.name, style="bold")
        if node.run_name:
            label.append(f"  {node.run_name}")
        if node.map_index is not None:
            label.append(f"  [map {node.map_index}]", style="dim")
        state = node.state
        if state:
            label.append("  ")
            label.append(_state(state, "…" if node.running else ""))
        if node.cached:
            label.append(f"  {CACHED_MARK}", style=STATE_STYLES["Cached"])
        label.append(f"  {format_duration(node.duration_ns(self.now))}")
        if node.attempts > 1:
            label.append(f"  attempts={node.attempts}", style="yellow")
        if node.tags:
            label.append("  tags=" + ",".join(node.tags), style="dim")
        if node.parent is None and node.span.parent_id and level == 0:
            label.append("  (parent span in another process)", style="dim")
        end = self.now if node.running else node.span.end
        self.run_line(prefix + branch, label, node.span.start, end, STATE_STYLES.get(state, ""))
        self.explain(node, child_prefix)
        self.artifacts(node, child_prefix)
        for log in node.logs:
            # A record of a run with no span yet (still running) sits under its flow run, named.
            who = None if log.span_id == node.span.span_id else _who(log)
            self.emit(log_line(log, prefix=child_prefix + "  ", who=who, traceback=self.traceback))
        if self.depth is not None and level >= self.depth:
            hidden = sum(1 for n in node.walk()[1:] if self.keep is None or id(n) in self.keep)
            if hidden:
                self.detail(child_prefix, f"… {hidden} run(s) below (raise --depth to see them)", "dim")
            return
        children = node.children if self.keep is None else [c for c in node.children if id(c) in self.keep]
        items = group_children(children, self.expand)
        for i, item in enumerate(items):
            last = i == len(items) - 1
            branch_ = "└── " if last else "├── "
            below = child_prefix + ("    " if last else "│   ")
            if isinstance(item, Group):
                self.group(item, child_prefix, branch_, below)
            else:
                self.node(item, child_prefix, branch_, below, level + 1)

    def artifacts(self, node: Node, prefix: str) -> None:
        """One line per artifact the run made: type and key (the id when it has none); the spool is untrusted."""
        for artifact in node.artifacts:
            text = Text("artifact ", style="magenta")
            text.append(terminal_safe(str(artifact["type"] or "?")))
            text.append("  ")
            key = artifact["key"]
            text.append(terminal_safe(str(key)) if key else f"id={terminal_safe(str(artifact['id']))}", style="cyan")
            self.detail(prefix, text)

    def explain(self, node: Node, prefix: str) -> None:
        """Why a run failed or did not run, and its retries."""
        for name, _, ev in node.span.events:
            if name == semconv.EVENT_RETRY:
                text = Text("retry", style="yellow")
                text.append(f" attempt {ev.get(semconv.RUN_ATTEMPT)} after {ev.get(semconv.EXCEPTION_TYPE)}: "
                            f"{ev.get(semconv.EXCEPTION_MESSAGE)}")
                self.detail(prefix, text)
        if node.state == "NotReady":
            if not node.upstream:
                why = "not run: an upstream run did not complete (not recorded which)"
            elif node.upstream_guessed:
                why = f"not run: an upstream run did not complete (failed before it: {', '.join(node.upstream)})"
            else:
                why = f"not run: upstream failed: {', '.join(node.upstream)}"
            self.detail(prefix, why, "magenta")
            return
        exc = node.exception
        if exc is not None:
            self.detail(prefix, f"error: {exc['type']}: {exc['message']}", "red")
            if exc["stacktrace"]:
                if self.traceback:
                    for line in exc["stacktrace"].rstrip().splitlines():
                        self.detail(prefix + "  ", line, "red")
                else:
                    self.hidden_tracebacks = True
        elif node.span.status_code == 2 and node.span.status_message:
            self.detail(prefix, f"error: {node.span.status_message}", "red")

    def group(self, group: Group, prefix: str, branch: str, below: str) -> None:
        members = group.members
        indexes = sorted(i for i in (m.map_index for m in members) if i is not None)
        label = Text()
        label.append(group.name, style="bold")
        label.append(f"  {len(members)} mapped runs")
        if indexes:
            label.append(f"  [map {indexes[0]}..{indexes[-1]}]", style="dim")
        label.append("  ")
        for i, (state, n) in enumerate(sorted(group.states().items(), key=lambda kv: -kv[1])):
            if i:
                label.append(", ")
            label.append(_state(state or "?", f" {n}"))
        p50, top = group.durations(self.now)
        label.append(f"  p50 {format_duration(p50)}  max {format_duration(top)}")
        retried = sum(1 for m in members if m.attempts > 1)
        if retried:
            label.append(f"  retried={retried}", style="yellow")
        tags = sorted({t for m in members for t in m.tags})
        if tags:
            label.append("  tags=" + ",".join(tags), style="dim")
        start = min(m.span.start for m in members)
        end = max(self.now if m.running else m.span.end for m in members)
        worst = next((s for s in ("Crashed", "Failed", "TimedOut", "NotReady", "Running") if s in group.states()),
                     "Completed")
        self.run_line(prefix + branch, label, start, end, STATE_STYLES.get(worst, ""))
        bad = [m for m in members if m.failed]
        for member in bad[:5]:
            self.detail(below, Text(f"{member.run_name} [map {member.map_index}] ", style="bold") + _state(
                member.state))
            self.explain(member, below + "  ")
        if len(bad) > 5:
            self.detail(below, f"… {len(bad) - 5} more not completed", "dim")
        logs = sum(len(m.logs) for m in members)
        below_runs = sum(len(m.walk()) - 1 for m in members)
        hidden = []
        if logs:
            hidden.append(f"{logs} log line(s)")
        if below_runs:
            hidden.append(f"{below_runs} nested run(s)")
        if hidden:
            self.detail(below, f"({' and '.join(hidden)} hidden; --expand shows every mapped run)", "dim")


def render_trace(
    console: Console,
    shown: list[Node],
    *,
    trace_id: str,
    service: str,
    span_count: int,
    now: int,
    expand: bool = False,
    traceback: bool = False,
    depth: int | None = None,
    keep: set[int] | None = None,
) -> None:
    """Print a waterfall of ``shown`` (trace roots, or one subflow) with logs under each run.

    With ``keep`` (``id()`` of nodes, see ``tracetree.matching``), only those runs are drawn.
    """
    t0 = min(n.span.start for n in shown)
    t1 = max(max(now if d.running else d.span.end for d in n.walk()) for n in shown)
    fall = _Waterfall(console, t0, t1, now, expand=expand, traceback=traceback, depth=depth, keep=keep)
    header = Text()
    header.append(f"trace {trace_id}", style="bold")
    header.append(f"  service={service}  spans={span_count}  started {_local(t0, '%Y-%m-%d %H:%M:%S')}")
    if fall.tty:
        header.truncate(console.width, overflow="ellipsis")
    fall.emit(header)
    for root in shown:
        if keep is None or id(root) in keep:
            fall.node(root, "", "", "", 0)
    if fall.hidden_tracebacks:
        fall.emit(Text("(stack traces stored: --traceback shows them)", style="dim"))
    print_lines(console, fall.out)


def print_lines(console: Console, lines: Sequence[Text]) -> None:
    """Print styled lines: through rich on a terminal; piped, as plain text (10k lines in milliseconds)."""
    if not console.is_terminal:
        console.file.write("".join(line.plain + "\n" for line in lines))
        console.file.flush()
        return
    for line in lines:
        console.print(line, overflow="fold", crop=False)

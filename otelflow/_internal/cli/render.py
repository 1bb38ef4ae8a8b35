"""Terminal rendering for the CLI: the runs table, the trace waterfall, log lines.

On a terminal: colours, duration bars, lines fitted to the width. Piped: plain text, nothing cut, no bars.
``NO_COLOR`` is honoured (rich reads it). ``rich`` is imported here only, so ``otelflow --help`` stays fast.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Final

from rich.console import Console
from rich.table import Table
from rich.text import Text

from otelflow import semconv
from otelflow._internal.cli.tracetree import LEVELS, Group, Node, group_children, severity
from otelflow._internal.spool.index import RunRow
from otelflow._internal.spool.reader import LogRecord
from otelflow._internal.terminal import terminal_lines, terminal_safe

__all__ = [
    "CACHED_MARK",
    "STATE_STYLES",
    "format_duration",
    "log_line",
    "log_plain",
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
        name = Text("  " * max(0, level - 1) + ("└ " if level else "")) + Text(terminal_safe(run.run_name))
        if orphan_of:
            name.append(f" (in {terminal_safe(orphan_of)})", style="dim")
        duration = format_duration(max(0, (now if run.running else run.end) - run.start))
        run_id = terminal_safe(run.run_id)
        cells = [
            Text(_local(run.start, "%Y-%m-%d %H:%M:%S" if wide else "%m-%d %H:%M:%S")),
            Text(terminal_safe(run.flow_name)), name, _state(terminal_safe(run.state)),
            Text(duration + ("…" if run.running else "")), _tasks(run, wide), Text(run_id if wide else run_id[:8]),
        ]
        if wide:
            cells.append(Text(terminal_safe(run.trace_id)))
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


_HEADER_WIDTH: Final = 21  # "12:00:01.234 INFO    ": where a log message starts, after the line's prefix


def _extras(attrs: dict[str, object]) -> str:
    return " ".join(terminal_safe(f"{k}={v}") for k, v in attrs.items()
                    if not k.startswith(_HIDDEN_LOG_PREFIXES) and k not in _HIDDEN_LOG_KEYS)


def log_plain(log: LogRecord, who: str | None = None) -> str:
    """``log_line(log, who=who).plain``, without building styled text: piped ``otelflow logs`` of a million
    records writes them at the speed of string formatting."""
    severity = terminal_safe(log.severity_text or (str(log.severity_number) if log.severity_number else ""))
    lines = terminal_lines(log.body.rstrip("\n"))
    if who:
        lines[0] = f"{terminal_safe(who)} | {lines[0]}"
    attrs = log.attributes
    extras = _extras(attrs)
    if extras:
        lines[-1] = f"{lines[-1]}  {extras}"
    text = f"{_local(log.time, '%H:%M:%S.%f')[:-3]} {severity:7} " + ("\n" + " " * _HEADER_WIDTH).join(lines)
    exc_type = attrs.get(semconv.EXCEPTION_TYPE)
    if exc_type:
        message = str(attrs.get(semconv.EXCEPTION_MESSAGE, "") or "")
        for line in terminal_lines(f"{exc_type}: {message}" if message else str(exc_type)):
            text += "\n    " + line
    return text


def _log_parts(log: LogRecord, who: str | None, traceback: bool, seen_exception: tuple[str, str] | None
               ) -> tuple[Text, list[Text], list[Text]]:
    """(time and level, message lines, exception lines) of a record, every piece of data escaped.

    ``seen_exception``: (type, message) of an exception whose stack trace was printed just above (the run's own
    failure): a record of the same exception says so in one line instead of printing the stack again.
    """
    severity = terminal_safe(log.severity_text or (str(log.severity_number) if log.severity_number else ""))
    header = Text()
    header.append(_local(log.time, "%H:%M:%S.%f")[:-3], style="dim")
    header.append(" ")
    header.append(f"{severity:7}", style=_LEVEL_STYLES.get(severity.upper(), ""))
    header.append(" ")
    lines = [Text(line) for line in terminal_lines(log.body.rstrip("\n"))]
    if who:
        lines[0] = Text(terminal_safe(who), style="cyan") + Text(" | ", style="dim") + lines[0]
    attrs = log.attributes
    extras = _extras(attrs)
    if extras:
        lines[-1].append("  " + extras, style="dim")
    exception: list[Text] = []
    exc_type = attrs.get(semconv.EXCEPTION_TYPE)
    if exc_type:
        message = str(attrs.get(semconv.EXCEPTION_MESSAGE, "") or "")
        stack = attrs.get(semconv.EXCEPTION_STACKTRACE)
        if seen_exception is not None and seen_exception == (str(exc_type), message):
            exception = [Text(terminal_safe(f"{exc_type}: {message}" if message else str(exc_type))
                              + "  (stack trace above)", style="red")]
        elif traceback and isinstance(stack, str) and stack:
            exception = [Text(line, style="red") for line in terminal_lines(stack.rstrip())]
        else:
            exception = [Text(line, style="red") for line in terminal_lines(
                f"{exc_type}: {message}" if message else str(exc_type))]
    return header, lines, exception


def log_line(log: LogRecord, *, prefix: str = "", who: str | None = None, traceback: bool = False) -> Text:
    """``12:00:01.234 INFO    message  key=value`` (with the exception under it), every piece of data escaped:
    a record's text is shown, never interpreted by the terminal."""
    header, lines, exception = _log_parts(log, who, traceback, None)
    text = Text(prefix) + header + lines[0]
    for line in lines[1:]:  # continuation lines of a multi-line message stay under the message, inside the tree
        text.append("\n" + prefix + " " * _HEADER_WIDTH)
        text.append_text(line)
    for line in exception:
        text.append(f"\n{prefix}    ")
        text.append_text(line)
    return text


def _who(log: LogRecord) -> str:
    attrs = log.attributes
    return str(attrs.get(semconv.TASK_RUN_NAME) or attrs.get(semconv.FLOW_RUN_NAME) or "?")


# --- the trace waterfall ------------------------------------------------------------------------------


@dataclass(slots=True)
class _RunLine:
    """One run's line before layout: the tree and names (cut when narrow), what a user looks for (state and
    duration, never cut while there is room), the rest (tags...: dropped first), and its time span."""

    head: Text
    status: Text
    extra: Text
    start: int
    end: int
    style: str


@dataclass(slots=True)
class _Hanging:
    """A detail or log line whose continuation, when a terminal wraps it, goes under ``indent``."""

    text: Text
    indent: str


_MIN_HEAD: Final = 8  # names are cut to no less than this many columns after the tree


class _Waterfall:
    """Lays out one line per run: tree, names, state and duration on the left; start offset and a duration bar
    on the right (on a terminal wide enough: the bar is what gives way first, then tags, then names)."""

    def __init__(self, console: Console, t0: int, t1: int, now: int, *, expand: bool, traceback: bool,
                 depth: int | None, keep: set[int] | None) -> None:
        self.console = console
        self.tty = console.is_terminal
        self.width = console.width if self.tty else 0
        self.t0, self.now = t0, now
        self.total = max(1, t1 - t0)
        self.expand, self.traceback, self.depth, self.keep = expand, traceback, depth, keep
        self.hidden_tracebacks = False
        self.out: list[Text | _RunLine | _Hanging] = []
        self.root_service = ""

    def emit(self, text: Text) -> None:
        self.out.append(text)

    def run_line(self, head: Text, status: Text, extra: Text, start: int, end: int, style: str) -> None:
        self.out.append(_RunLine(head, status, extra, start, end, style))

    # --- layout ---
    def lines(self) -> list[Text]:
        """The laid-out lines: piped, whole; on a terminal, fitted to its width."""
        if not self.tty:
            return [self._plain(item) if isinstance(item, _RunLine) else
                    item.text if isinstance(item, _Hanging) else item for item in self.out]
        runs = [item for item in self.out if isinstance(item, _RunLine)]
        need = max((r.head.cell_len + r.status.cell_len for r in runs), default=0)
        bar = min(40, self.width // 4)
        room = self.width - need - 12
        if room < bar:
            bar = room if room >= 10 else 0
        out: list[Text] = []
        for item in self.out:
            if isinstance(item, _RunLine):
                out.append(self._fitted(item, bar))
            elif isinstance(item, _Hanging):
                out.extend(self._wrapped(item))
            else:
                out.append(item)
        return out

    def _plain(self, run: _RunLine) -> Text:
        line = run.head + run.status + run.extra
        line.append("  " + _offset(run.start - self.t0), style="dim")
        return line

    def _label(self, run: _RunLine, width: int) -> Text:
        """head + status (+ extra if it fits) in ``width`` cells: extra goes first, then the names are cut."""
        if run.head.cell_len + run.status.cell_len + run.extra.cell_len <= width:
            return run.head + run.status + run.extra
        head = run.head.copy()
        room = width - run.status.cell_len
        if head.cell_len > room:
            head.truncate(max(room, min(head.cell_len, _tree_width(head) + _MIN_HEAD)), overflow="ellipsis")
        label = head + run.status
        if label.cell_len < width and run.extra.cell_len:
            extra = run.extra.copy()
            extra.truncate(width - label.cell_len, overflow="ellipsis")
            label.append_text(extra)
        label.truncate(width, overflow="ellipsis")
        return label

    def _fitted(self, run: _RunLine, bar: int) -> Text:
        offset = _offset(run.start - self.t0)
        if not bar:
            label = self._label(run, self.width)
            if label.cell_len + 2 + len(offset) <= self.width:
                label.append("  " + offset, style="dim")
            return label
        left = self.width - bar - 12
        line = self._label(run, left)
        line.pad_right(left - line.cell_len)
        line.append(f" {offset:>10} ", style="dim")
        begin = min(max(0, int((run.start - self.t0) / self.total * bar)), bar - 1)
        length = min(max(1, round((max(run.end, run.start) - run.start) / self.total * bar)), bar - begin)
        line.append(" " * begin)
        line.append("█" * length, style=run.style or "white")
        return line

    def _wrapped(self, item: _Hanging) -> list[Text]:
        """A detail or log line on a terminal: a line too long is wrapped under where its text starts (inside
        the tree), not at column 0."""
        text, indent = item.text, item.indent
        if text.cell_len <= self.width or len(indent) > self.width - 20:
            return [text]
        cut = len(indent)  # a detail line starts with its indent; a log line with its prefix, time and level
        pieces = list(text[cut:].wrap(self.console, self.width - cut, overflow="fold")) or [Text()]
        return [text[:cut] + pieces[0]] + [Text(indent) + piece for piece in pieces[1:]]

    def indented(self, indent: str, text: Text) -> None:
        """Emit ``indent`` + ``text``; on a terminal, wrapped under ``indent``."""
        self.out.append(_Hanging(Text(indent) + text, indent))

    # --- content ---
    def detail(self, prefix: str, text: str | Text, style: str = "") -> None:
        self.indented(prefix + "  ", text if isinstance(text, Text) else Text(terminal_safe(text), style=style))

    def log(self, log: LogRecord, prefix: str, who: str | None, seen: tuple[str, str] | None) -> None:
        header, lines, exception = _log_parts(log, who, self.traceback, seen)
        self.out.append(_Hanging(Text(prefix) + header + lines[0], prefix + " " * _HEADER_WIDTH))
        for line in lines[1:]:
            self.indented(prefix + " " * _HEADER_WIDTH, line)
        for line in exception:
            self.indented(prefix + "    ", line)

    def node(self, node: Node, prefix: str, branch: str, child_prefix: str, level: int) -> None:
        head = Text(prefix + branch)
        head.append(terminal_safe(node.span.name), style="bold")
        if node.run_name:
            head.append(f"  {terminal_safe(node.run_name)}")
        if node.map_index is not None:
            head.append(f"  [map {node.map_index}]", style="dim")
        head.append("  ")
        state = node.state
        status = Text()
        if state:
            status.append_text(_state(state, "…" if node.running else ""))
            status.append("  ")
        if node.cached:
            status.append(f"{CACHED_MARK}  ", style=STATE_STYLES["Cached"])
        status.append(format_duration(node.duration_ns(self.now)))
        extra = Text()
        if node.attempts > 1:
            extra.append(f"  attempts={node.attempts}", style="yellow")
        if node.tags:
            extra.append("  tags=" + terminal_safe(",".join(node.tags)), style="dim")
        service = str(node.span.resource.get("service.name", "") or "")
        if service and service != self.root_service:
            extra.append(f"  service={terminal_safe(service)}", style="dim")
        if node.parent is None and node.span.parent_id and level == 0:
            extra.append("  (parent span in another process)", style="dim")
        end = self.now if node.running else node.span.end
        self.run_line(head, status, extra, node.span.start, end, STATE_STYLES.get(state, ""))
        self.parameters(node, child_prefix)
        seen = self.explain(node, child_prefix)
        self.artifacts(node, child_prefix)
        for log in node.logs:
            # A record of a run with no span yet (still running) sits under its flow run, named.
            who = None if log.span_id == node.span.span_id else _who(log)
            self.log(log, child_prefix + "  ", who, seen)
        omitted = node.logs_omitted
        if omitted:
            ident = node.attrs.get(semconv.FLOW_RUN_ID) or ""
            self.detail(child_prefix, f"(… {omitted} more log line(s): otelflow logs {ident})", "dim")
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

    def parameters(self, node: Node, prefix: str) -> None:
        """A flow run's parameters: their types by default, their (redacted) values when recorded."""
        if node.attrs.get(semconv.RUN_TYPE) != semconv.RUN_TYPE_FLOW:
            return
        cut = len(semconv.PARAMETER_PREFIX)
        params = [f"{k[cut:]}={v}" for k, v in node.attrs.items() if k.startswith(semconv.PARAMETER_PREFIX)]
        if params:
            text = Text("parameters  ", style="dim")
            text.append(terminal_safe("  ".join(params)))
            self.detail(prefix, text)

    def artifacts(self, node: Node, prefix: str) -> None:
        """One line per artifact the run made: type and key (the id when it has none); the spool is untrusted."""
        for artifact in node.artifacts:
            text = Text("artifact ", style="magenta")
            text.append(terminal_safe(str(artifact["type"] or "?")))
            text.append("  ")
            key = artifact["key"]
            text.append(terminal_safe(str(key)) if key else f"id={terminal_safe(str(artifact['id']))}", style="cyan")
            self.detail(prefix, text)

    def explain(self, node: Node, prefix: str) -> tuple[str, str] | None:
        """Why a run failed, waits or did not run, and its retries; returns the (type, message) of the exception
        whose stack trace was printed (so the run's log record of it does not print it again)."""
        for name, _, ev in node.span.events:
            if name == semconv.EVENT_RETRY:
                attempt = ev.get(semconv.RUN_ATTEMPT)
                number = attempt - 1 if isinstance(attempt, int) and attempt > 1 else "?"
                total = ev.get(semconv.RUN_RETRIES)
                text = Text("retry", style="yellow")
                text.append(terminal_safe(f" {number}{f'/{total}' if isinstance(total, int) else ''} after "
                                          f"{ev.get(semconv.EXCEPTION_TYPE)}: {ev.get(semconv.EXCEPTION_MESSAGE)}"))
                self.detail(prefix, text)
        if node.running:
            waiting = node.attrs.get(semconv.RUN_STATE_MESSAGE)
            if node.state == "Paused":
                self.detail(prefix, f"paused: {waiting or 'waiting to be resumed'}", "yellow")
            return None
        if node.state == "NotReady":
            if not node.upstream:
                why = "not run: an upstream run did not complete (not recorded which)"
            elif node.upstream_guessed:
                why = f"not run: an upstream run did not complete (failed before it: {', '.join(node.upstream)})"
            else:
                why = f"not run: upstream failed: {', '.join(node.upstream)}"
            self.detail(prefix, why, "magenta")
            return None
        exc = node.exception
        if exc is not None:
            message = exc["message"] or (node.span.status_message if node.span.status_code == 2 else "")
            self.detail(prefix, f"error: {exc['type']}: {message}" if message else f"error: {exc['type']}", "red")
            if exc["stacktrace"]:
                if self.traceback:
                    for line in terminal_lines(exc["stacktrace"].rstrip()):
                        self.detail(prefix + "  ", Text(line, style="red"))
                    return exc["type"], exc["message"]
                self.hidden_tracebacks = True
        elif node.span.status_code == 2 and node.span.status_message:
            self.detail(prefix, f"error: {node.span.status_message}", "red")
        return None

    def group(self, group: Group, prefix: str, branch: str, below: str) -> None:
        members = group.members
        indexes = sorted(i for i in (m.map_index for m in members) if i is not None)
        head = Text(prefix + branch)
        head.append(terminal_safe(group.name), style="bold")
        head.append(f"  {len(members)} mapped runs")
        if indexes:
            head.append(f"  [map {indexes[0]}..{indexes[-1]}]", style="dim")
        head.append("  ")
        status = Text()
        for i, (state, n) in enumerate(sorted(group.states().items(), key=lambda kv: -kv[1])):
            if i:
                status.append(", ")
            status.append_text(_state(terminal_safe(state or "?"), f" {n}"))
        p50, top = group.durations(self.now)
        status.append(f"  p50 {format_duration(p50)}  max {format_duration(top)}")
        extra = Text()
        retried = sum(1 for m in members if m.attempts > 1)
        if retried:
            extra.append(f"  retried={retried}", style="yellow")
        tags = sorted({t for m in members for t in m.tags})
        if tags:
            extra.append("  tags=" + terminal_safe(",".join(tags)), style="dim")
        start = min(m.span.start for m in members)
        end = max(self.now if m.running else m.span.end for m in members)
        worst = next((s for s in ("Crashed", "Failed", "TimedOut", "NotReady", "Running") if s in group.states()),
                     "Completed")
        self.run_line(head, status, extra, start, end, STATE_STYLES.get(worst, ""))
        bad = [m for m in members if m.failed]
        shown_logs = 0
        for member in bad[:5]:
            self.detail(below, Text(f"{terminal_safe(member.run_name)} [map {member.map_index}] ", style="bold")
                        + _state(terminal_safe(member.state)))
            seen = self.explain(member, below + "  ")
            # what went wrong is not hidden behind the fold: a failed member's warnings and errors are shown
            for log in member.logs:
                if severity(log) >= LEVELS["warning"]:
                    self.log(log, below + "    ", None, seen)
                    shown_logs += 1
        if len(bad) > 5:
            self.detail(below, f"… {len(bad) - 5} more not completed", "dim")
        logs = sum(m.log_count for m in members) - shown_logs
        below_runs = sum(len(m.walk()) - 1 for m in members)
        hidden = []
        if logs:
            hidden.append(f"{logs} {'more ' if shown_logs else ''}log line(s)")
        if below_runs:
            hidden.append(f"{below_runs} nested run(s)")
        if hidden:
            self.detail(below, f"({' and '.join(hidden)} hidden; --expand shows every mapped run)", "dim")


def _tree_width(head: Text) -> int:
    """Cells of the tree drawing at the start of a run line (never cut)."""
    plain = head.plain
    return len(plain) - len(plain.lstrip(" │├└─"))


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

    With ``keep`` (``id()`` of nodes, see ``tracetree.matching``), only those runs are drawn. ``service`` is the
    service of the first run; a trace whose runs come from several services names them all in its header, and
    marks each run of another service.
    """
    nodes = [n for top in shown for n in top.walk()]
    t0 = min(n.span.start for n in nodes)
    t1 = max(max(n.span.start, now if n.running else n.span.end) for n in nodes)
    fall = _Waterfall(console, t0, t1, now, expand=expand, traceback=traceback, depth=depth, keep=keep)
    services = list(dict.fromkeys(s for s in (str(n.span.resource.get("service.name", "") or "") for n in nodes)
                                  if s)) or [service]
    fall.root_service = services[0]
    header = Text()
    header.append(f"trace {terminal_safe(trace_id)}", style="bold")
    named = f"service={terminal_safe(services[0])}" if len(services) == 1 else (
        "services=" + terminal_safe(", ".join(services)))
    header.append(f"  {named}  spans={span_count}  started {_local(t0, '%Y-%m-%d %H:%M:%S')}")
    if fall.tty:
        header.truncate(console.width, overflow="ellipsis")
    fall.emit(header)
    for root in shown:
        if keep is None or id(root) in keep:
            fall.node(root, "", "", "", 0)
    if fall.hidden_tracebacks:
        fall.emit(Text("(stack traces stored: --traceback shows them)", style="dim"))
    print_lines(console, fall.lines())


def print_lines(console: Console, lines: Sequence[Text]) -> None:
    """Print styled lines: through rich on a terminal; piped, as plain text (10k lines in milliseconds)."""
    if not console.is_terminal:
        console.file.write("".join(line.plain + "\n" for line in lines))
        console.file.flush()
        return
    for line in lines:
        console.print(line, overflow="fold", crop=False)

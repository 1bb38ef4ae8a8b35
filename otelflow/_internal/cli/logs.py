"""``otelflow logs``: a flow run's log records (its tasks' and subflows' too) in time order, as they are read.

Records are streamed (:class:`~otelflow._internal.spool.index.LogStream`): a run's first lines are printed before
its last ones are read, and memory does not grow with the run. ``--follow`` keeps printing what the run's
processes write until it ends; ``latest`` then means the newest flow run still running, or the next one to start.

How far behind the run ``--follow`` is: a record reaches the spool when the export worker writes its batch
(``OTEL_BLRP_SCHEDULE_DELAY``; the spool's default is 200 ms, see ``export/build.py``), then waits for the next
poll (``--interval``, 0.1 s).

Exit status (``--follow``, or ``--exit-status``): the run's outcome. 0 when it ended Completed (or another state
that is not a failure), 1 when it ended Failed, Crashed, TimedOut, Cancelled or NotReady, 3 when it has not
ended (``--exit-status`` without ``--follow``: still running or paused), 130 on Ctrl-C. 1 also when no run
matches IDENT, 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import click

from otelflow import semconv
from otelflow._internal.cli import runs as _shared
from otelflow._internal.spool.index import FAILED_STATES

if TYPE_CHECKING:
    from otelflow._internal.spool.index import LogStream, RunIndex, RunRow
    from otelflow._internal.spool.reader import LogRecord

__all__ = ["EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_NOT_ENDED", "EXIT_OK", "WAITING", "outcome", "show_logs"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_NOT_ENDED = 3
EXIT_INTERRUPTED = 130
WAITING = "waiting for a flow run to start (Ctrl-C stops)"
_BATCH = 512  # records formatted, then written at once
_GRACE_SECONDS = 1.0  # after the run ended: its last records may still be in its process's export queue


def outcome(row: RunRow) -> int:
    """The exit status that says how ``row`` ended (see the module docstring)."""
    if row.running:
        return EXIT_NOT_ENDED
    return EXIT_FAILED if row.state in FAILED_STATES else EXIT_OK


def show_logs(home: str | None, ident: str | None, *, level_name: str | None, task: str | None, follow: bool,
              as_json: bool, interval: float, exit_status: bool) -> int:
    """Print the logs of the run ``ident`` names; returns the exit status (see the module docstring)."""
    threshold = _shared.level(level_name)
    printer = _Printer(as_json)
    try:
        with _shared.index(home) as index:
            latest = ident is None or ident.strip().lower() == "latest"
            row = _live_run(index, interval) if follow and latest else _shared.pick(index, ident)
            wanted = _filter(index, row, threshold, task)
            from otelflow._internal.spool.index import LogStream

            stream = LogStream(index, row.trace_id)
            printer.write(record for record in stream.read() if wanted(record))
            if not follow:
                return outcome(row) if exit_status else EXIT_OK
            return outcome(_follow(index, row, stream, wanted, printer, interval))
    except KeyboardInterrupt:
        printer.flush()
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): say nothing more (Python's own recipe for SIGPIPE).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILED


def _live_run(index: RunIndex, interval: float) -> RunRow:
    """For ``--follow latest``: the newest root flow run still running, or else the next one to start.

    A run that has just started may not have reached the spool yet (its pending record waits in its export
    queue): the newest run there, ended, is then the previous one, not the one meant. So with none running,
    wait for a root run newer than every run already there (one that ended before the next poll is taken too).
    """
    roots = index.runs(limit=200, roots=True)
    live = [row for row in roots if row.running]
    if live:
        return live[0]
    newest = roots[0].start if roots else -1
    click.echo(WAITING, err=True)
    while True:
        time.sleep(interval)
        index.refresh()
        fresh = index.runs(since=newest + 1, limit=200, roots=True)
        if fresh:
            live = [row for row in fresh if row.running]
            return live[0] if live else fresh[-1]  # else the next one that started (it has ended already)


def _filter(index: RunIndex, row: RunRow, threshold: int, task: str | None) -> Callable[[LogRecord], bool]:
    """Which records of the trace to print: the run's (a subflow's subtree only), at ``threshold`` or above,
    of ``task`` (a task name or task run name) when given."""
    from otelflow._internal.cli.tracetree import severity

    span_ids: set[str] | None = None
    if row.parent_id is not None:  # a subflow: its own subtree of the trace
        roots, shown, _ = _shared.load(index, row, with_logs=False)
        if shown is not roots:
            span_ids = {node.span.span_id for top in shown for node in top.walk()}

    def wanted(log: LogRecord) -> bool:
        if span_ids is not None and log.span_id not in span_ids and (
                log.attributes.get(semconv.FLOW_RUN_ID) != row.run_id):
            return False
        if threshold and severity(log) < threshold:
            return False
        if task is not None:
            attrs = log.attributes
            if task != attrs.get(semconv.TASK_NAME) and task != attrs.get(semconv.TASK_RUN_NAME):
                return False
        return True

    return wanted


def _follow(index: RunIndex, row: RunRow, stream: LogStream, wanted: Callable[[LogRecord], bool],
            printer: _Printer, interval: float) -> RunRow:
    """Print what is written for the run until it has ended (and its last records are in); its final row."""
    final = None if row.running else row
    grace_until = time.monotonic() + max(_GRACE_SECONDS, 3 * interval)
    while True:
        # Done once the run has ended and every process writing its records is gone (asked before the last read:
        # what they wrote before going is read), or after a grace period (a process that lives on).
        done = final is not None and (time.monotonic() >= grace_until or index.log_writers_gone(row.trace_id))
        if not done:
            time.sleep(interval)
        index.refresh()
        printer.write(record for record in stream.read() if wanted(record))
        if done and final is not None:
            return final
        if final is None:
            final = _ended(index, row)
            # Logs and spans are exported by separate batch processors: records flushed just after the run's span
            # are still to come.
            grace_until = time.monotonic() + max(_GRACE_SECONDS, 3 * interval)


def _ended(index: RunIndex, row: RunRow) -> RunRow | None:
    """The run's row once it has ended (its span is in, or its process is gone), else None."""
    rows = [r for r in index.trace_runs(row.trace_id) if r.span_id == row.span_id and not r.running]
    rows.sort(key=lambda r: r.pending)  # its real span first
    return rows[0] if rows else None


class _Printer:
    """Writes records as lines (or JSON lines) to stdout, a batch at a time, flushed after each batch."""

    def __init__(self, as_json: bool) -> None:
        self.as_json = as_json
        self._format: Callable[[list[LogRecord]], None]
        if as_json:
            from otelflow._internal.cli.tracetree import log_json

            def write_json(records: list[LogRecord]) -> None:
                sys.stdout.write("".join(json.dumps(log_json(log), default=str) + "\n" for log in records))

            self._format = write_json
        else:
            from otelflow._internal.cli.render import log_line, log_plain, make_console, print_lines

            console = make_console()
            who = _shared.who

            def write_text(records: list[LogRecord]) -> None:
                if console.is_terminal:
                    print_lines(console, [log_line(log, who=who(log)) for log in records])
                else:  # piped: the same text, without building styled lines
                    console.file.write("".join(log_plain(log, who(log)) + "\n" for log in records))

            self._format = write_text

    def write(self, records: Iterable[LogRecord]) -> None:
        """Write ``records`` as they come, ``_BATCH`` at a time."""
        batch: list[LogRecord] = []
        for record in records:
            batch.append(record)
            if len(batch) >= _BATCH:
                self._format(batch)
                batch = []
                self.flush()
        if batch:
            self._format(batch)
        self.flush()

    def flush(self) -> None:
        """Push what was written to the reader."""
        sys.stdout.flush()

"""Console rendering of run logs: human-readable (coloured on a TTY), or one JSON object a line (structlog).

The human format is written directly by :class:`ConsoleFormatter`; the JSON format goes through structlog:
:func:`record_to_event` is the ``foreign_pre_chain`` step that turns a stdlib record into a structlog event
dict (time, level, run, message, extras), then structlog renders it. structlog is imported only for JSON.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any, Final, cast

from otelflow.logging._runinfo import RUN_KEY, RunInfo, current_run_info
from otelflow.logging.handlers import truncate_message

__all__ = ["build_formatter", "record_to_event"]

# LogRecord's own attributes: anything else on a record came in through ``extra``.
# ``send_to_api`` (Prefect's console-only marker) is a routing flag, not data.
_RECORD_KEYS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", RUN_KEY, "send_to_api"}


def record_to_event(
    max_message_length: int, json: bool
) -> Callable[[Any, str, dict[str, Any]], dict[str, Any]]:
    """A structlog processor filling the event dict from ``event_dict["_record"]``."""

    def processor(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        record: logging.LogRecord = event_dict["_record"]
        event_dict["event"] = truncate_message(str(event_dict["event"]), max_message_length)
        run: RunInfo | None = record.__dict__.get(RUN_KEY) or current_run_info()
        if json:
            event_dict["timestamp"] = datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            )
            event_dict["level"] = record.levelname.lower()
            event_dict["logger"] = record.name
            if run is not None:
                event_dict.update(run.fields())
        else:
            event_dict["timestamp"] = (
                f"{time.strftime('%H:%M:%S', time.localtime(record.created))}.{int(record.msecs):03d}"
            )
            event_dict["level"] = record.levelname.lower()
            event_dict["logger"] = run.display if run is not None else record.name
        own = run.extra if run is not None else {}
        for key, value in record.__dict__.items():
            if key in _RECORD_KEYS or key.startswith("_") or key in own:
                continue  # Prefect's run fields repeat what the run name / otelflow.* fields say
            if not json and (key.startswith("otelflow.") or key in ("trace_id", "span_id")):
                continue  # the run name says it; ids are for machines (JSON format)
            event_dict.setdefault(key, value)
        return event_dict

    return processor


_LEVEL_COLORS: Final = {
    "debug": "\x1b[34m", "info": "\x1b[32m", "warning": "\x1b[33m", "error": "\x1b[31m", "critical": "\x1b[1;31m",
}
_DIM, _BOLD, _BLUE, _RESET = "\x1b[2m", "\x1b[1m", "\x1b[34m", "\x1b[0m"


class ConsoleFormatter(logging.Formatter):
    """The human console line, written directly: ``12:03:04.567 [info     ] [Task run 'load-1a2'] message k=v``.

    The same layout as structlog's console renderer (which the JSON format still uses), at a fraction of the
    cost: run logs are printed on the run's own thread, so rendering is paid by every run that logs.
    """

    def __init__(self, colors: bool, max_message_length: int) -> None:
        super().__init__()
        self._colors = colors
        self._max = max_message_length
        self._second = -1
        self._hms = ""

    def _time(self, created: float, msecs: float) -> str:
        second = int(created)
        if second != self._second:  # localtime() once per second, not once per record
            self._hms = time.strftime("%H:%M:%S", time.localtime(created))
            self._second = second
        return f"{self._hms}.{int(msecs):03d}"

    def format_plain(self, run: RunInfo, levelno: int, message: str, time_unix_nano: int) -> str:
        """The line :meth:`format` makes for a plain run record (the run logger's own: no ``extra``, no
        exception), from what it needs."""
        created = time_unix_nano / 1e9
        stamp = self._time(created, (time_unix_nano // 1_000_000) % 1000)
        who = _text(run.display)
        text = _text(truncate_message(message, self._max))
        return self._line(stamp, logging.getLevelName(levelno).lower(), who, text, "")

    def _line(self, stamp: str, level: str, who: str, message: str, extras: str) -> str:
        """The line's layout: time, level, run, message, then the record's own ``extra`` fields."""
        if self._colors:
            return (f"{_DIM}{stamp}{_RESET} [{_LEVEL_COLORS.get(level, '')}{level:<9}{_RESET}] "
                    f"[{_BLUE}{who}{_RESET}] {_BOLD}{message}{_RESET}{extras}")
        return f"{stamp} [{level:<9}] [{who}] {message}{extras}"

    def format(self, record: logging.LogRecord) -> str:
        """One console line (plus the traceback, if any) for ``record``."""
        run: RunInfo | None = record.__dict__.get(RUN_KEY) or current_run_info()
        who = _text(run.display if run is not None else record.name)
        message = _text(truncate_message(record.getMessage(), self._max))
        level = record.levelname.lower()
        own = run.extra if run is not None else {}
        extras = [
            _text(f" {key}={value}")
            for key, value in record.__dict__.items()
            if key not in _RECORD_KEYS and key[0] != "_" and key not in own and not key.startswith("otelflow.")
            and key not in ("trace_id", "span_id")
        ]
        line = self._line(self._time(record.created, record.msecs), level, who, message, "".join(extras))
        if record.exc_info:
            line = f"{line}\n{_text(self.formatException(record.exc_info))}"
        if record.stack_info:
            line = f"{line}\n{_text(self.formatStack(record.stack_info))}"
        return line


def _text(text: str) -> str:
    """Untrusted text for the console: its line breaks kept, every other control character (``ESC``, ``BEL``,
    a lone ``CR``, bidi overrides) shown as an escape, so a message cannot drive the terminal."""
    if text.isprintable():
        return text
    from otelflow._internal.terminal import terminal_lines

    return "\n".join(terminal_lines(text))


def build_formatter(fmt: str, colors: bool, max_message_length: int) -> logging.Formatter:
    """The console formatter (``console``), or a ``structlog.stdlib.ProcessorFormatter`` for ``json``."""
    if fmt != "json":
        return ConsoleFormatter(colors, max_message_length)
    import structlog

    pre_chain = [record_to_event(max_message_length, json=True)]
    processors: list[Any] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer(default=str),
    ]
    return structlog.stdlib.ProcessorFormatter(processors=processors, foreign_pre_chain=cast(Any, pre_chain))

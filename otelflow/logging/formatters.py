"""Console rendering of run logs with structlog: human-readable (coloured on a TTY) or one JSON object a line.

Records are stdlib ``LogRecord`` objects; :func:`record_to_event` is the ``foreign_pre_chain`` step that turns
one into a structlog event dict (time, level, run, message, extras), then structlog renders it.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Callable
from typing import Any, Final, cast

import structlog

from otelflow.logging._runinfo import RUN_KEY, RunInfo, current_run_info
from otelflow.logging.handlers import truncate_message

__all__ = ["build_formatter", "record_to_event"]

# LogRecord's own attributes: anything else on a record came in through ``extra``.
_RECORD_KEYS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", RUN_KEY}
_CONSOLE_ORDER: Final = ("timestamp", "level", "logger", "event")


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


def build_formatter(fmt: str, colors: bool, max_message_length: int) -> logging.Formatter:
    """A ``structlog.stdlib.ProcessorFormatter`` for ``fmt`` ``console`` or ``json``."""
    pre_chain = [record_to_event(max_message_length, json=fmt == "json")]
    processors: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if fmt == "json":
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(default=str)]
    else:
        # plain_traceback: with rich installed, structlog would print tracebacks with local variable values
        # (secrets included) and take milliseconds per record.
        renderer = structlog.dev.ConsoleRenderer(
            colors=colors, pad_event_to=0, exception_formatter=structlog.dev.plain_traceback
        )
        # Prefect's order: time, level, run, message, then key=value extras.
        renderer.columns = sorted(
            renderer.columns, key=lambda c: _CONSOLE_ORDER.index(c.key) if c.key in _CONSOLE_ORDER else 99
        )
        processors.append(renderer)
    return structlog.stdlib.ProcessorFormatter(processors=processors, foreign_pre_chain=cast(Any, pre_chain))

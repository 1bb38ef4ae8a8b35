"""structlog processors for applications that log with structlog inside otelflow runs.

:func:`add_run_context` adds the current run's ``trace_id``, ``span_id`` and otelflow run attributes to every
event, so structlog's own output (console, JSON) carries the same correlation as otelflow's run logs. To also
export the events as OTel log records, route structlog through stdlib to :class:`OTelRunLogHandler` (see
``docs/logging.md``). Importing this module does not import structlog.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace

from otelflow.logging._runinfo import current_run_info

__all__ = ["add_run_context"]


def add_run_context(_logger: Any, _method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: add ``trace_id``, ``span_id`` and the run's ``otelflow.*`` ids to the event.

    Outside a run, only the current span's ids (if any). Keys already in the event are left alone.

    Example::

        structlog.configure(processors=[
            otelflow.logging.add_run_context,
            structlog.processors.JSONRenderer(),
        ])
    """
    run = current_run_info()
    if run is not None:
        fields = run.fields()
    else:
        span_context = trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return event_dict
        fields = {
            "trace_id": format(span_context.trace_id, "032x"),
            "span_id": format(span_context.span_id, "016x"),
        }
    for key, value in fields.items():
        event_dict.setdefault(key, value)
    return event_dict

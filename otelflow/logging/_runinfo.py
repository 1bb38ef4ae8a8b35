"""What a run log record needs to know about its run, computed once per run and reused for every record.

A :class:`RunInfo` holds the run's OTel log attributes, an OTel ``Context`` carrying the run's span (so the
record's trace_id/span_id are the run's, whichever span is current when the record is emitted), the hex
ids for console/JSON/structlog output, and the run's display name.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING, Any, cast

from opentelemetry import trace

from otelflow import semconv
from otelflow._internal.limits import get_limits, truncate_text
from otelflow.context import FlowRunContext, RunContext, TaskRunContext

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = ["RUN_KEY", "RunInfo", "current_entry", "current_run_info", "run_info_for"]

# Where the run logger adapter leaves the RunInfo on a stdlib LogRecord (``extra``). Handlers read it and
# never export it as an attribute.
RUN_KEY = "_otelflow_run"
# How many fields a stdlib LogRecord has before any ``extra`` (the Python version decides: 3.12 added one).
_STANDARD_RECORD_SIZE = len(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)))


class RunInfo:
    """One run's log correlation: attributes, span context, hex ids, display name. Immutable once built."""

    __slots__ = ("attributes", "context", "display", "extra", "flow_run_id", "is_task", "log_attributes",
                 "plain_record_size", "run_id", "span_context")

    def __init__(
        self,
        attributes: dict[str, Any],
        span: trace.Span,
        display: str,
        run_id: uuid.UUID | None,
        flow_run_id: uuid.UUID | None,
        is_task: bool,
        context: Context | None = None,
    ) -> None:
        self.attributes = attributes
        self.context: Context = context if context is not None else trace.set_span_in_context(span)
        self.span_context = span.get_span_context()
        self.display = display
        self.run_id = run_id
        self.flow_run_id = flow_run_id
        self.is_task = is_task
        # Prefect's fields on every run log record (``record.flow_run_id``...), set by run_info_for().
        self.extra: dict[str, str] = {}
        # What a run log record exports when it carries nothing but the run (see set_extra()).
        self.log_attributes: dict[str, Any] = attributes
        self.plain_record_size = -1

    def set_extra(self, extra: dict[str, str]) -> None:
        """Set Prefect's record fields, and what a plain record of this run exports (computed once per run).

        A record made by the run's default logger with no ``extra`` of the call carries exactly the standard
        LogRecord fields, Prefect's fields and the RunInfo: ``plain_record_size`` keys. The OTel handler
        exports such a record's attributes from ``log_attributes`` instead of scanning the record.
        """
        self.extra = extra
        limit = get_limits().attribute_value
        if extra and max(map(len, extra.values())) > limit:  # a huge run name: cut, visibly
            extra = {k: truncate_text(v, limit) for k, v in extra.items()}
        self.log_attributes = {**extra, **self.attributes}
        self.plain_record_size = _STANDARD_RECORD_SIZE + len(extra) + 1

    # Hex ids are only needed by console/JSON/structlog output, not by OTel export: computed on demand.
    @property
    def trace_id(self) -> str | None:
        """The run span's trace id as 32 hex digits (None if the span is invalid)."""
        sc = self.span_context
        return format(sc.trace_id, "032x") if sc.is_valid else None

    @property
    def span_id(self) -> str | None:
        """The run span's span id as 16 hex digits (None if the span is invalid)."""
        sc = self.span_context
        return format(sc.span_id, "016x") if sc.is_valid else None

    def fields(self) -> dict[str, Any]:
        """trace_id, span_id and the run attributes, as flat key/values (structlog, JSON console)."""
        fields: dict[str, Any] = {}
        if self.span_context.is_valid:
            fields["trace_id"] = self.trace_id
            fields["span_id"] = self.span_id
        fields.update(self.attributes)
        return fields


def run_info_for(task_ctx: TaskRunContext | None, flow_ctx: FlowRunContext | None) -> RunInfo | None:
    """Build the RunInfo of the innermost run (task before flow); None when neither has a run.

    Made once per run that logs (on its first record), so it reuses what the engine already made: the id
    strings and the OTel context carrying the run's span.
    """
    attrs: dict[str, Any] = {}
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    task_run = task_ctx.task_run if task_ctx is not None else None
    flow_run_id_str = ""
    if flow_run is not None:
        flow_run_id_str = flow_run.id_str
        attrs[semconv.FLOW_RUN_ID] = flow_run_id_str
        attrs[semconv.FLOW_RUN_NAME] = flow_run.name
        attrs[semconv.FLOW_NAME] = flow_run.flow_name
    if task_run is not None:
        assert task_ctx is not None
        if flow_run is None and task_run.flow_run_id is not None:
            flow_run_id_str = task_run.flow_run_id_str or str(task_run.flow_run_id)
            attrs[semconv.FLOW_RUN_ID] = flow_run_id_str
        attrs[semconv.TASK_RUN_ID] = task_run.id_str
        attrs[semconv.TASK_RUN_NAME] = task_run.name
        attrs[semconv.TASK_NAME] = task_run.task_name
        if task_run.map_index is not None:
            attrs[semconv.TASK_MAP_INDEX] = task_run.map_index
        tags, run_ctx = task_run.tags, cast("RunContext", task_ctx)
        display, run_id = f"Task run {task_run.name!r}", task_run.id
        flow_run_id = task_run.flow_run_id if flow_run is None else flow_run.id
    elif flow_run is not None:
        assert flow_ctx is not None
        tags, run_ctx = flow_run.tags, cast("RunContext", flow_ctx)
        display, run_id, flow_run_id = f"Flow run {flow_run.name!r}", flow_run.id, flow_run.id
    else:
        return None
    if tags:
        attrs[semconv.TAGS] = tuple(sorted(set(tags)))
    if "" in attrs.values():
        # A remote run identity (hydrated_context) may lack names; an empty attribute says nothing useful.
        attrs = {k: v for k, v in attrs.items() if v != ""}
    info = RunInfo(attrs, run_ctx.span, display, run_id, flow_run_id, task_run is not None, run_ctx._otel_context)
    # Prefect's record fields (flow_run_logger / task_run_logger), "<unknown>" where Prefect says so.
    extra = {
        "flow_run_id": flow_run_id_str or (str(flow_run_id) if flow_run_id is not None else "<unknown>"),
        "flow_run_name": (flow_run.name if flow_run is not None else "") or "<unknown>",
        "flow_name": (flow_run.flow_name if flow_run is not None else "") or "<unknown>",
    }
    if task_run is not None:
        extra["task_run_id"] = task_run.id_str
        extra["task_run_name"] = task_run.name or "<unknown>"
        extra["task_name"] = task_run.task_name or "<unknown>"
    info.set_extra(extra)
    return info


def _belongs_to_outer_flow(task_ctx: TaskRunContext, flow_ctx: FlowRunContext) -> bool:
    # A subflow called inside a task: the task context is still set, but the innermost run is the subflow.
    task_run, flow_run = task_ctx.task_run, flow_ctx.flow_run
    assert task_run is not None and flow_run is not None
    return task_run.flow_run_id is not None and task_run.flow_run_id != flow_run.id


def current_entry() -> list[Any] | None:
    """This context's run-log cache entry ``[key, RunInfo, default run logger or None]``, or None.

    Kept on the innermost run context (the task run's, else the flow run's), made on the first use in a run:
    ``get_run_logger().info(...)`` on every line of a task costs two context lookups, not a rebuild. The entry
    lives as long as the run context; it refers to the RunInfo and run logger, which never refer back.
    """
    task_ctx = TaskRunContext.__var__.get(None)
    flow_ctx = FlowRunContext.__var__.get(None)
    if task_ctx is not None and task_ctx.task_run is None:
        task_ctx = None
    if flow_ctx is not None and flow_ctx.flow_run is None:
        flow_ctx = None
    # A task run's entry is valid for the flow context it was made with (the run's names come from it); a flow
    # run's entry depends on nothing else (and must not refer to its own context: a reference cycle).
    if task_ctx is None:
        if flow_ctx is None:
            return None
        owner: RunContext = flow_ctx
        key = None
    elif flow_ctx is not None and _belongs_to_outer_flow(task_ctx, flow_ctx):
        task_ctx, owner, key = None, flow_ctx, None
    else:
        owner, key = task_ctx, flow_ctx
    entry = owner._log_cache
    if entry is not None and entry[0] is key:
        return entry
    entry = owner._log_cache = [key, run_info_for(task_ctx, flow_ctx), None]
    return entry


def current_run_info() -> RunInfo | None:
    """The RunInfo of the run current in this thread/context, or None outside any run."""
    entry = current_entry()
    return cast("RunInfo | None", entry[1]) if entry is not None else None

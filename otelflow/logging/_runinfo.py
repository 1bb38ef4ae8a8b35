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
from otelflow._internal.export.limits import get_limits, truncate_text
from otelflow.context import _FLOW_RUN_VAR, _TASK_RUN_VAR, FlowRunContext, RunContext, TaskRunContext

if TYPE_CHECKING:
    from opentelemetry.context import Context

__all__ = ["PLAIN_EMITTERS", "PREFECT_RECORD_FIELDS", "RUN_KEY", "RunInfo", "current_entry", "current_run_info",
           "run_info_for"]

# Where the run logger adapter leaves the RunInfo on a stdlib LogRecord (added to the record's ``extra``, never
# to the adapter's). Handlers read it and never export it as an attribute.
RUN_KEY = "_otelflow_run"
# Prefect's fields on a run log record (its run loggers' ``extra``): on the stdlib record only, never exported (the
# same values are exported once, under otelflow's names: ``otelflow.flow_run.id``...).
PREFECT_RECORD_FIELDS = (
    "task_run_id", "flow_run_id", "task_run_name", "task_name", "flow_run_name", "flow_name", "deployment_name",
)
# Handler classes that can export a plain run log record without a stdlib LogRecord (``emit_plain``): the OTel
# handler registers itself when imported (this module is imported by the light run-logger module; that one is not).
PLAIN_EMITTERS: set[type] = set()
# How many fields a stdlib LogRecord has before any ``extra`` (the Python version decides: 3.12 added one).
_STANDARD_RECORD_SIZE = len(vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)))


class RunInfo:
    """One run's log correlation: attributes, span context, hex ids, display name. Immutable once built."""

    __slots__ = ("attributes", "context", "display", "extra", "flow_run_id", "is_task", "log_attributes",
                 "plain_record_size", "run_id", "span_context", "unset_fields")

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
        # Prefect's fields on every run log record (``record.flow_run_id``...), set by run_info_for(): the run
        # logger's ``extra``, in Prefect's order.
        self.extra: dict[str, str | None] = {}
        # The fields of ``extra`` that are None (a flow run's ``deployment_name``): a record carries them, as
        # Prefect's does, but an OTel attribute cannot be None, so they are not exported.
        self.unset_fields: tuple[str, ...] = ()
        # What a run log record exports when it carries nothing but the run (see set_extra()).
        self.log_attributes: dict[str, Any] = attributes
        self.plain_record_size = -1

    def set_extra(self, extra: dict[str, str | None], unset_fields: tuple[str, ...] = ()) -> None:
        """Set Prefect's record fields, and what a plain record of this run exports (computed once per run).

        ``unset_fields`` names the fields whose value is None. A record made by the run's default logger with no
        ``extra`` of the call carries exactly the standard LogRecord fields, Prefect's fields and the RunInfo:
        ``plain_record_size`` keys. The OTel handler exports such a record's attributes from ``log_attributes``
        instead of scanning the record.
        """
        self.extra = extra
        self.plain_record_size = _STANDARD_RECORD_SIZE + len(extra) + 1
        self.unset_fields = unset_fields
        # Exported: each run value once, under otelflow's names (the telemetry contract). Prefect's fields stay
        # on the stdlib record and in the logger's ``extra`` (formatters, caplog), and are not exported again.
        attributes = self.attributes
        limit = get_limits().attribute_value
        for value in attributes.values():  # a loop, not any(<generator>): this runs once per run
            if type(value) is str and len(value) > limit:  # a huge run name: cut, visibly
                attributes = {k: truncate_text(v, limit) if type(v) is str and len(v) > limit else v
                              for k, v in attributes.items()}
                break
        self.log_attributes = attributes

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
    # The span's OTel context, kept with the run's private values (pydantic's documented __pydantic_private__).
    private: dict[str, Any] = run_ctx.__pydantic_private__  # type: ignore[assignment]
    otel_ctx = private["_otel_context"]
    info = RunInfo(attrs, run_ctx.span, display, run_id, flow_run_id, task_run is not None, otel_ctx)
    # Prefect's record fields, keys and order as its task_run_logger / flow_run_logger make them; "<unknown>"
    # where Prefect says so (a remote run identity from hydrated_context() may lack names).
    flow_run_name = (flow_run.name if flow_run is not None else "") or "<unknown>"
    flow_name = (flow_run.flow_name if flow_run is not None else "") or "<unknown>"
    extra: dict[str, str | None]
    if task_run is not None:
        # Prefect: the task run's flow run id (None for a task run outside flows).
        task_flow_run_id: str | None = None
        if task_run.flow_run_id is not None:
            task_flow_run_id = task_run.flow_run_id_str or (
                flow_run.id_str if flow_run is not None and flow_run.id is task_run.flow_run_id
                else str(task_run.flow_run_id)
            )
        extra = {
            "task_run_id": task_run.id_str,
            "flow_run_id": task_flow_run_id,
            "task_run_name": task_run.name,
            "task_name": task_run.task_name or "<unknown>",
            "flow_run_name": flow_run_name,
            "flow_name": flow_name,
        }
        info.set_extra(extra, () if task_flow_run_id is not None else ("flow_run_id",))
    else:
        # otelflow has no deployments: Prefect's deployment_name is None outside one.
        extra = {"flow_run_name": flow_run_name, "flow_run_id": flow_run_id_str, "flow_name": flow_name,
                 "deployment_name": None}
        info.set_extra(extra, ("deployment_name",))
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
    task_ctx: TaskRunContext | None = _TASK_RUN_VAR.get(None)
    flow_ctx: FlowRunContext | None = _FLOW_RUN_VAR.get(None)
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
    # The run's private values (pydantic's documented __pydantic_private__), read directly: owner._log_cache would
    # go through BaseModel.__getattr__ on every get_run_logger() call.
    private: dict[str, Any] = owner.__pydantic_private__  # type: ignore[assignment]
    entry: list[Any] | None = private["_log_cache"]
    if entry is not None and entry[0] is key:
        return entry
    entry = private["_log_cache"] = [key, run_info_for(task_ctx, flow_ctx), None]
    return entry


def current_run_info() -> RunInfo | None:
    """The RunInfo of the run current in this thread/context, or None outside any run."""
    entry = current_entry()
    return cast("RunInfo | None", entry[1]) if entry is not None else None

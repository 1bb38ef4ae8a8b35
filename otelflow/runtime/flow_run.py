"""The current flow run's attributes, read as module attributes (Prefect's ``prefect.runtime.flow_run``).

Example::

    from otelflow import flow, task
    from otelflow.runtime import flow_run

    @task
    def report() -> str:
        return f"{flow_run.flow_name}/{flow_run.name} attempt {flow_run.run_count}"

    @flow(flow_run_name="nightly")
    def pipeline() -> str:
        return report()

Inside a flow run, and inside its task runs, the attributes describe that flow run. Outside any run they are
empty: ``None``, ``[]``, ``{}``, ``0``, and ``scheduled_start_time`` is now. Ids are strings, as in Prefect.

Attributes:
    - ``id``: the flow run's id (outside a run: ``$OTELFLOW__FLOW_RUN_ID`` if set)
    - ``tags``: the flow run's tags (those of the ``tags()`` blocks it was started in)
    - ``scheduled_start_time``: when the run started (UTC); now outside a run
    - ``name``: the flow run's name; ``flow_name``, ``flow_version``: its flow's
    - ``parameters``: the parameters of the run, defaults included
    - ``parent_flow_run_id``: the flow run this one is a subflow of, if any
    - ``parent_deployment_id``: always ``None`` (otelflow has no deployments)
    - ``root_flow_run_id``: the outermost flow run of a subflow chain (the run itself when it has no parent)
    - ``run_count``: the attempt number (1 on the first try, 2 on the first retry, ...)
    - ``api_url``, ``ui_url``: ``None`` (otelflow has no API server; find runs with ``otelflow runs`` or in
      Jaeger by ``otelflow.flow_run.id``)
    - ``job_variables``: ``{}`` inside a run (no work pools), ``None`` outside

Any attribute can be pinned for a test with ``OTELFLOW__RUNTIME__FLOW_RUN__<NAME>`` (Prefect's
``PREFECT__RUNTIME__FLOW_RUN__<NAME>``); the text is cast to the attribute's type. Lists and dicts cannot be
pinned this way: patch them with pytest's ``monkeypatch`` instead.
"""

# The names in __all__ are served by the module's __getattr__, which pyflakes cannot see.
# ruff: noqa: F822

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from otelflow.context import FlowRun, FlowRunContext, TaskRunContext
from otelflow.runtime._attributes import FLOW_RUN_ID_ENV, lookup

__all__ = [
    "api_url",
    "flow_name",
    "flow_version",
    "id",
    "job_variables",
    "name",
    "parameters",
    "parent_deployment_id",
    "parent_flow_run_id",
    "root_flow_run_id",
    "run_count",
    "scheduled_start_time",
    "tags",
    "ui_url",
]


def __getattr__(name: str) -> Any:
    """``flow_run.<name>``: the attribute's value for the current flow run (see the module docstring)."""
    return lookup(__name__, "FLOW_RUN", FIELDS, name)


def __dir__() -> list[str]:
    return sorted(__all__)


def _current() -> tuple[FlowRunContext, FlowRun] | None:
    """The current flow run context and its run record (task runs see their flow run's)."""
    ctx = FlowRunContext.get()
    if ctx is None or ctx.flow_run is None:
        return None
    return ctx, ctx.flow_run


def _enclosing(ctx: FlowRunContext) -> FlowRunContext | None:
    """The flow run context that was current when ``ctx`` was entered: the parent of a subflow run."""
    token = ctx._token
    if token is None:  # not entered (a copy) or already left
        return None
    previous = token.old_value
    return previous if isinstance(previous, FlowRunContext) and previous.flow_run is not None else None


def _ancestors(ctx: FlowRunContext) -> Iterator[FlowRunContext]:
    """The enclosing flow run contexts of ``ctx``, innermost first."""
    seen = {id(ctx)}
    parent = _enclosing(ctx)
    while parent is not None and id(parent) not in seen:
        seen.add(id(parent))
        yield parent
        parent = _enclosing(parent)


def _parent_id(ctx: FlowRunContext, run: FlowRun) -> uuid.UUID | None:
    # The engine records the parent on the run; the enclosing context says the same where it does not.
    recorded: uuid.UUID | None = getattr(run, "parent_flow_run_id", None)
    if recorded is not None:
        return recorded
    parent = _enclosing(ctx)
    return parent.flow_run.id if parent is not None and parent.flow_run is not None else None


def get_id() -> str | None:
    """The current flow run's id; in a task run, its flow run's; outside, ``$OTELFLOW__FLOW_RUN_ID`` or None."""
    current = _current()
    if current is not None:
        return current[1].id_str or str(current[1].id)
    task_ctx = TaskRunContext.get()
    if task_ctx is not None:
        flow_run_id = task_ctx.task_run.flow_run_id if task_ctx.task_run is not None else None
        return str(flow_run_id) if flow_run_id is not None else None
    return os.environ.get(FLOW_RUN_ID_ENV)


def get_tags() -> list[str]:
    """The flow run's tags (those of the ``tags()`` blocks it started in); ``[]`` outside a flow run."""
    current = _current()
    return list(current[1].tags) if current is not None else []


def get_run_count() -> int:
    """How many times the flow run has started (1 on its first attempt); 0 outside a flow run."""
    current = _current()
    return current[1].run_count if current is not None else 0


def get_name() -> str | None:
    """The flow run's name (``"crimson-jaguar"`` or its ``flow_run_name``); None outside a flow run."""
    current = _current()
    return current[1].name if current is not None else None


def get_flow_name() -> str | None:
    """The name of the flow being run; None outside a flow run."""
    current = _current()
    if current is None:
        return None
    ctx, run = current
    return ctx.flow.name if ctx.flow is not None else run.flow_name


def get_flow_version() -> str | None:
    """The version of the flow being run (by default a hash of its source file); None outside or if unknown."""
    current = _current()
    if current is None or current[0].flow is None:
        return None
    version: str | None = current[0].flow.version
    return version


def get_scheduled_start_time() -> datetime.datetime:
    """When the flow run started (UTC); the current time outside a flow run."""
    current = _current()
    if current is None:
        return datetime.datetime.now(datetime.UTC)
    return current[0].start_time


def get_parameters() -> dict[str, Any]:
    """The flow run's parameters, defaults included; ``{}`` outside a flow run."""
    current = _current()
    return current[0].parameters if current is not None else {}


def get_parent_flow_run_id() -> str | None:
    """The id of the flow run this run is a subflow of; None for a top-level run and outside a flow run."""
    current = _current()
    if current is None:
        return None
    parent = _parent_id(*current)
    return str(parent) if parent is not None else None


def get_parent_deployment_id() -> str | None:
    """Always None: otelflow has no deployments."""
    return None


def get_root_flow_run_id() -> str | None:
    """The outermost flow run of the current subflow chain (the run itself when it has no parent)."""
    current = _current()
    if current is None:
        return get_id()
    ctx = current[0]
    for outer in _ancestors(ctx):
        ctx = outer
    assert ctx.flow_run is not None  # _enclosing only returns contexts with a run
    # The outermost run reachable here may itself have a parent recorded (entered elsewhere): the best known root.
    parent = getattr(ctx.flow_run, "parent_flow_run_id", None)
    return str(parent if parent is not None else ctx.flow_run.id)


def get_flow_run_api_url() -> str | None:
    """Always None: otelflow has no API server."""
    return None


def get_flow_run_ui_url() -> str | None:
    """Always None: otelflow has no UI server with a page per run (``otelflow show <id>`` shows one)."""
    return None


def get_job_variables() -> dict[str, Any] | None:
    """``{}`` inside a flow run (no work pools, so no job variables); None outside."""
    current = _current()
    if current is None:
        return None
    variables: dict[str, Any] | None = getattr(current[1], "job_variables", None)
    return variables if variables is not None else {}


FIELDS: dict[str, Callable[[], Any]] = {
    "id": get_id,
    "tags": get_tags,
    "scheduled_start_time": get_scheduled_start_time,
    "name": get_name,
    "flow_name": get_flow_name,
    "parameters": get_parameters,
    "parent_flow_run_id": get_parent_flow_run_id,
    "parent_deployment_id": get_parent_deployment_id,
    "root_flow_run_id": get_root_flow_run_id,
    "run_count": get_run_count,
    "api_url": get_flow_run_api_url,
    "ui_url": get_flow_run_ui_url,
    "flow_version": get_flow_version,
    "job_variables": get_job_variables,
}

"""otelflow: Prefect-style flows and tasks whose runtime is OpenTelemetry.

Every flow run and task run is a span; run context crosses threads, processes and services as W3C
``traceparent`` + ``baggage``; run logs are OTel log records correlated with their run's span.

Example::

    from otelflow import flow, task, tags, get_run_logger

    @task(retries=2)
    def double(x: int) -> int:
        get_run_logger().info("doubling %s", x)
        return 2 * x

    @flow
    def pipeline():
        with tags("etl"):
            return double.map([1, 2, 3])
"""

from otelflow._version import __version__
from otelflow.context import FlowRunContext, TaskRunContext, get_run_context, tags
from otelflow.flows import Flow, flow
from otelflow.futures import FutureList, PrefectFuture, PrefectFutureList, TaskRunFuture
from otelflow.logging import get_run_logger
from otelflow.states import State
from otelflow.task_runners import ThreadPoolTaskRunner
from otelflow.tasks import Task, task
from otelflow.utilities.annotations import allow_failure, quote, unmapped

# Prefect re-exports these at top level; loaded on first use so that `import otelflow` stays light.
_LAZY = {
    "pause_flow_run": "otelflow.flow_runs",
    "resume_flow_run": "otelflow.flow_runs",
    "suspend_flow_run": "otelflow.flow_runs",
}


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'otelflow' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "Flow",
    "FlowRunContext",
    "FutureList",
    "PrefectFuture",
    "PrefectFutureList",
    "State",
    "Task",
    "TaskRunContext",
    "TaskRunFuture",
    "ThreadPoolTaskRunner",
    "__version__",
    "allow_failure",
    "flow",
    "get_run_context",
    "get_run_logger",
    "pause_flow_run",
    "quote",
    "resume_flow_run",
    "suspend_flow_run",
    "tags",
    "task",
    "unmapped",
]

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
    "apause_flow_run": "otelflow.flow_runs",
    "aresume_flow_run": "otelflow.flow_runs",
    "asuspend_flow_run": "otelflow.flow_runs",
    "Transaction": "otelflow.transactions",
}
# Prefect's top-level names that need its API server or workers (see the README's Prefect API table).
_NOT_APPLICABLE = frozenset({"serve", "aserve", "deploy", "get_client"})


def __getattr__(name: str) -> object:
    if name == "runtime":  # as Prefect's: `import otelflow; otelflow.runtime.flow_run.name`
        import importlib

        return importlib.import_module("otelflow.runtime")
    module = _LAZY.get(name)
    if module is None:
        if name in _NOT_APPLICABLE:
            # Importable, so that a ported script fails where it calls it, with a message that says why.
            def not_applicable(*args: object, **kwargs: object) -> object:
                raise NotImplementedError(
                    f"{name}() needs Prefect's API server or workers, and otelflow has neither (see the README's "
                    "Prefect API table). Call your flows directly, from your own scheduler."
                )

            not_applicable.__name__ = name
            return not_applicable
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
    "Transaction",
    "__version__",
    "allow_failure",
    "apause_flow_run",
    "aresume_flow_run",
    "asuspend_flow_run",
    "flow",
    "get_run_context",
    "get_run_logger",
    "pause_flow_run",
    "quote",
    "resume_flow_run",
    "runtime",
    "suspend_flow_run",
    "tags",
    "task",
    "unmapped",
]

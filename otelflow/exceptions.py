"""Exceptions users can meet, each with a message that says what to do next."""

from __future__ import annotations

from otelflow.context import MissingContextError

__all__ = [
    "CrashedRun",
    "FlowRunTimeoutError",
    "MissingContextError",
    "ParameterBindError",
    "ParameterTypeError",
    "TaskRunTimeoutError",
    "UpstreamTaskError",
]


class ParameterBindError(TypeError):
    """A flow or task was called with arguments that do not fit its signature."""


class ParameterTypeError(TypeError):
    """A flow parameter failed validation against the flow function's type hints."""


class UpstreamTaskError(RuntimeError):
    """A task did not run because a task it depends on did not complete (wrap it in ``allow_failure``)."""


class TaskRunTimeoutError(TimeoutError):
    """A task run exceeded its ``timeout_seconds``."""


class FlowRunTimeoutError(TimeoutError):
    """A flow run exceeded its ``timeout_seconds``."""


class CrashedRun(RuntimeError):
    """The run was interrupted from outside its code."""

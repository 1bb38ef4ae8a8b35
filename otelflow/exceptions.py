"""Exceptions users can meet, each with a message that says what to do next.

The names and base classes follow Prefect 3 (``prefect.exceptions``), so ``except`` clauses ported with
``s/prefect/otelflow/`` keep catching the same things.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otelflow.states import State

__all__ = [
    "CancelledRun",
    "CrashedRun",
    "ExternalSignal",
    "FailedRun",
    "FlowPauseTimeout",
    "FlowRunTimeoutError",
    "HashError",
    "InvalidNameError",
    "MappingLengthMismatch",
    "MappingMissingIterable",
    "MissingContextError",
    "MissingResult",
    "NotPausedError",
    "OtelflowException",
    "ParameterBindError",
    "ParameterTypeError",
    "PausedRun",
    "PrefectException",
    "ReservedArgumentError",
    "SerializationError",
    "TaskRunTimeoutError",
    "TerminationSignal",
    "UnfinishedRun",
    "UpstreamTaskError",
]


class OtelflowException(Exception):
    """Base class of otelflow's own errors (Prefect's ``PrefectException``)."""


PrefectException = OtelflowException


class CrashedRun(OtelflowException):
    """The result of a crashed run was asked for and the run left no exception (only a message)."""


class FailedRun(OtelflowException):
    """The result of a failed run was asked for and the run left no exception (only a message)."""


class CancelledRun(OtelflowException):
    """The result of a cancelled run was asked for and the run left no exception (only a message)."""


class PausedRun(OtelflowException):
    """The result of a paused run was asked for: a paused run has no result yet."""

    def __init__(self, *args: Any, state: State[Any] | None = None) -> None:
        super().__init__(*args)
        self.state = state


class UnfinishedRun(OtelflowException):
    """The result of a run that has not finished (Pending, Running) was asked for."""


class MissingResult(OtelflowException):
    """A final state carries no data to return, or its persisted result could not be read back."""


class HashError(OtelflowException):
    """Objects could not be hashed: neither JSON nor cloudpickle could serialize them (Prefect's ``HashError``)."""


class ParameterBindError(TypeError, OtelflowException):
    """A flow or task was called with arguments that do not fit its signature."""


class ParameterTypeError(OtelflowException):
    """A flow parameter failed validation against the flow function's type hints."""


class ReservedArgumentError(OtelflowException, TypeError):
    """A flow or task function has a parameter whose name otelflow reserves (``return_state``, ``wait_for``)."""


class InvalidNameError(OtelflowException, ValueError):
    """A flow or task name contains a character that is not allowed."""


class MissingContextError(OtelflowException, RuntimeError):
    """An API that needs a running flow or task (``get_run_logger()``) was called outside one."""


class UpstreamTaskError(OtelflowException):
    """A task did not run because a task it depends on did not complete (wrap it in ``allow_failure``)."""


class MappingLengthMismatch(OtelflowException):
    """``task.map()`` received iterables of different lengths."""


class MappingMissingIterable(OtelflowException):
    """``task.map()`` received no iterable argument to map over."""


class FlowPauseTimeout(OtelflowException):
    """A paused flow run was not resumed in time (or a resume came after the pause timed out).

    Not a ``TimeoutError``, as in Prefect: a flow run that lets it through ends ``Failed``, not ``TimedOut``.
    """


class NotPausedError(OtelflowException, RuntimeError):
    """``resume_flow_run`` was called for a flow run that is not paused.

    Also a ``RuntimeError`` (otelflow's base for it before it moved here), so earlier ``except RuntimeError``
    clauses keep catching it.
    """


class SerializationError(OtelflowException):
    """A value cannot be serialized: a task result in a transaction that cannot be stored as JSON (the
    transaction is rolled back)."""


class TaskRunTimeoutError(TimeoutError):
    """A task run exceeded its ``timeout_seconds``."""


class FlowRunTimeoutError(TimeoutError):
    """A flow run exceeded its ``timeout_seconds``."""


class ExternalSignal(BaseException):
    """Base of signal-like exceptions raised from outside the run, which user code should never catch.

    A ``BaseException`` so that a user's ``except Exception`` cannot swallow a shutdown request.
    """


class TerminationSignal(ExternalSignal):
    """The process received SIGTERM (or SIGHUP) while a run was in progress; the run ends Crashed."""

    def __init__(self, signal: int) -> None:
        super().__init__(f"Received signal {signal}.")
        self.signal = signal

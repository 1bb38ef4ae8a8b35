"""Run states: what a flow or task run is doing, and how it ended.

Mirrors Prefect 3's state API (``Completed()``, ``Failed()``, ``state.is_completed()``,
``state.result(raise_on_failure=...)``, ``await state.result()`` in async code). A state is a small value;
the states a run goes through that its span does not already say (retries, pauses, failures) are span events.

How a run's return value becomes its final state (Prefect's rule, :func:`return_value_to_state`):

- a State the user built (``return Completed(message="done")``) is the final state as is;
- a State produced by another run, or a non-empty list/tuple/set of such States, is aggregated: all
  completed -> Completed; any cancelled -> Cancelled; any paused -> Paused; otherwise Failed with
  ``"1/3 states failed."``. The states are the final state's data;
- anything else is Completed with the value as data.
"""

from __future__ import annotations

import asyncio
import enum
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from types import GeneratorType
from typing import Any, Generic, TypeGuard, TypeVar

from otelflow.exceptions import CancelledRun, CrashedRun, FailedRun, PausedRun, UnfinishedRun

__all__ = [
    "AwaitingRetry",
    "Cancelled",
    "Completed",
    "Crashed",
    "Failed",
    "Paused",
    "Pending",
    "Retrying",
    "Running",
    "State",
    "StateDetails",
    "StateGroup",
    "StateType",
    "TimedOut",
    "UnfinishedRun",
    "get_state_exception",
    "is_state_iterable",
    "return_value_to_state",
]

R = TypeVar("R")


class StateType(enum.StrEnum):
    """The kind of a state; several named states share a type (``Retrying`` is RUNNING, ``TimedOut`` FAILED)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CRASHED = "CRASHED"
    CANCELLED = "CANCELLED"


_FINAL = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})
# A state's default name ("Completed"), looked up: an enum member's ``.value`` is a descriptor call.
_DEFAULT_NAMES = {t: t.value.title() for t in StateType}


class StateDetails:
    """Which run a state belongs to (``None`` for a state the user built by hand)."""

    __slots__ = ("flow_run_id", "task_run_id")

    def __init__(self, flow_run_id: uuid.UUID | None = None, task_run_id: uuid.UUID | None = None) -> None:
        self.flow_run_id = flow_run_id
        self.task_run_id = task_run_id

    def __repr__(self) -> str:
        return f"StateDetails(flow_run_id={self.flow_run_id!r}, task_run_id={self.task_run_id!r})"


class State(Generic[R]):
    """A run's state: its type, a display name, an optional message, and its result or exception.

    ``data`` holds the return value of a completed run, the exception of a failed/crashed/cancelled one,
    or (for an aggregate) the states it was derived from.
    """

    __slots__ = ("_details", "_span_context", "data", "message", "name", "timestamp", "type")

    def __init__(
        self, type: StateType, name: str | None = None, message: str | None = None, data: Any = None
    ) -> None:
        self.type = type
        self.name = name or _DEFAULT_NAMES.get(type) or type.value.title()
        self.message = message
        self.data = data
        self.timestamp = time.time()
        self._details: StateDetails | None = None  # made on first use: most states never need one
        # The span of the run that produced this state: downstream runs link to it.
        self._span_context: Any = None

    @property
    def state_details(self) -> StateDetails:
        """Which run this state belongs to (both ids ``None`` for a state built by hand)."""
        details = self._details
        if details is None:
            details = self._details = StateDetails()
        return details

    def is_pending(self) -> bool:
        """True for Pending-type states (``Pending``, ``NotReady``, ``AwaitingRetry``)."""
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        """True for Running-type states (``Running``, ``Retrying``)."""
        return self.type is StateType.RUNNING

    def is_paused(self) -> bool:
        """True for Paused states."""
        return self.type is StateType.PAUSED

    def is_completed(self) -> bool:
        """True when the run finished successfully."""
        return self.type is StateType.COMPLETED

    def is_failed(self) -> bool:
        """True when the run raised (including ``TimedOut``)."""
        return self.type is StateType.FAILED

    def is_crashed(self) -> bool:
        """True when the run was interrupted from outside its code (a signal, ``KeyboardInterrupt``...)."""
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        """True when the run was cancelled."""
        return self.type is StateType.CANCELLED

    def is_final(self) -> bool:
        """True for Completed, Failed, Crashed and Cancelled states."""
        return self.type in _FINAL

    def _result(self, raise_on_failure: bool = True) -> Any:
        if self.type is StateType.COMPLETED:
            return self.data
        if self.type is StateType.PAUSED:
            raise PausedRun("Run is paused, its result is not available.", state=self)
        if self.type not in _FINAL:
            raise UnfinishedRun(f"Run is in {self.type.name} state, its result is not available.")
        if raise_on_failure:
            raise get_state_exception(self)
        # Prefect: the state's data as is (the exception, or for an aggregate the states it came from).
        return self.data if self.data is not None else get_state_exception(self)

    def result(self, raise_on_failure: bool = True, _sync: bool | None = None) -> Any:
        """The run's return value.

        For a failed, crashed or cancelled run: raise its exception, or with ``raise_on_failure=False``
        return the exception instead. A paused run raises :class:`~otelflow.exceptions.PausedRun`, an
        unfinished one :class:`~otelflow.exceptions.UnfinishedRun`.

        As in Prefect 3, in async code (inside an async flow or task, or anywhere an event loop is running
        outside a run) this returns an awaitable: ``await state.result()``. Pass ``_sync=True`` to force the
        plain value, or use :meth:`aresult`.

        Example::

            state = my_flow(return_state=True)
            state.result()                         # the value, or raises the run's exception
            state.result(raise_on_failure=False)   # the value, or the exception
        """
        if _sync is False or (_sync is None and _in_async_context()):
            return self.aresult(raise_on_failure=raise_on_failure)
        return self._result(raise_on_failure)

    async def aresult(self, raise_on_failure: bool = True) -> Any:
        """:meth:`result`, awaitable in any context."""
        return self._result(raise_on_failure)

    def __repr__(self) -> str:
        message = f", message={self.message!r}" if self.message else ""
        return f"{self.name}(type={self.type.value}{message})"

    def __str__(self) -> str:
        """Prefect's log display: ``Completed()``, ``Failed('2/3 states failed.')``, ``TimedOut(..., type=FAILED)``."""
        display = [repr(self.message)] if self.message else []
        if self.type.value.lower() != self.name.lower():
            display.append(f"type={self.type.value}")
        return f"{self.name}({', '.join(display)})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, State)
            and (self.type, self.name, self.message) == (other.type, other.name, other.message)
            and self.data is other.data
        )

    __hash__ = object.__hash__


def _in_async_context() -> bool:
    """Prefect's rule: inside a run, whether the innermost run's function is async; outside, a running loop."""
    from otelflow.context import FlowRunContext, TaskRunContext

    ctx: Any = TaskRunContext.get() or FlowRunContext.get()
    obj = getattr(ctx, "task", None) or getattr(ctx, "flow", None) if ctx is not None else None
    if obj is not None:
        return bool(obj.isasync)
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def get_state_exception(state: State[Any]) -> BaseException:
    """The exception a failed, crashed or cancelled state stands for.

    Its own exception when it has one; for an aggregate (its data is a State or States), the first failed
    one's; otherwise :class:`~otelflow.exceptions.FailedRun` / ``CrashedRun`` / ``CancelledRun`` with the
    state's message.
    """
    if state.is_failed():
        wrapper: type[Exception] = FailedRun
        default = "Run failed."
    elif state.is_crashed():
        wrapper, default = CrashedRun, "Run crashed."
    elif state.is_cancelled():
        wrapper, default = CancelledRun, "Run cancelled."
    else:
        raise ValueError(f"Expected a failed, crashed or cancelled state, got {state!r}.")
    data = state.data
    if data is None:
        return wrapper(state.message or default)
    if isinstance(data, BaseException):
        return data
    if isinstance(data, str):
        return wrapper(data)
    if isinstance(data, State):
        return get_state_exception(data)
    if is_state_iterable(data):
        for inner in data:
            if inner.is_failed() or inner.is_crashed() or inner.is_cancelled():
                return get_state_exception(inner)
        raise ValueError("Failed state result was an iterable of states but none were failed.")
    raise TypeError(
        f"Unexpected result for failed state: {data!r} -- {type(data).__name__} cannot be resolved into an exception"
    )


def is_state_iterable(obj: Any) -> TypeGuard[Iterable[State[Any]]]:
    """True for a non-empty list, tuple or set whose items are all States (other iterables never count)."""
    if obj and isinstance(obj, (list, tuple, set)):
        return all(isinstance(item, State) for item in obj)
    return False


class StateGroup:
    """Counts of a group of states by type, for aggregate messages."""

    def __init__(self, states: Iterable[State[Any]]) -> None:
        self.states = list(states)
        self.type_counts: Counter[StateType] = Counter(s.type for s in self.states)
        self.total_count = len(self.states)
        self.cancelled_count = self.type_counts[StateType.CANCELLED]
        self.paused_count = self.type_counts[StateType.PAUSED]
        self.fail_count = self.type_counts[StateType.FAILED] + self.type_counts[StateType.CRASHED]
        self.final_count = sum(s.is_final() for s in self.states)
        self.not_final_count = self.total_count - self.final_count

    def all_completed(self) -> bool:
        """True when every state is Completed."""
        return self.type_counts[StateType.COMPLETED] == self.total_count

    def counts_message(self) -> str:
        """``total=3, 'COMPLETED'=2, 'FAILED'=1``."""
        parts = [f"total={self.total_count}"]
        if self.not_final_count:
            parts.append(f"not_final={self.not_final_count}")
        parts += [f"{t.value!r}={n}" for t, n in self.type_counts.items() if n]
        return ", ".join(parts)


def _is_manual(state: State[Any]) -> bool:
    details = state._details
    if details is None:
        return True
    return details.flow_run_id is None and details.task_run_id is None


def return_value_to_state(retval: Any) -> State[Any]:
    """The final state a run's return value stands for (see the module docstring for the rule)."""
    if isinstance(retval, State) and _is_manual(retval):
        return retval
    if isinstance(retval, State) or is_state_iterable(retval):
        group = StateGroup([retval] if isinstance(retval, State) else retval)
        if group.all_completed():
            return State(StateType.COMPLETED, message="All states completed.", data=retval)
        if group.cancelled_count:
            message = f"{group.cancelled_count}/{group.total_count} states cancelled."
            return State(StateType.CANCELLED, message=message, data=retval)
        if group.paused_count:
            message = f"{group.paused_count}/{group.total_count} states paused."
            return State(StateType.PAUSED, message=message, data=retval)
        if group.fail_count:
            message = f"{group.fail_count}/{group.total_count} states failed."
        elif group.not_final_count:
            message = f"{group.not_final_count}/{group.total_count} states are not final."
        else:
            message = "Given states: " + group.counts_message()
        return State(StateType.FAILED, message=message, data=retval)
    if isinstance(retval, GeneratorType):
        retval = list(retval)  # generators are not portable results
    return State(StateType.COMPLETED, data=retval)


def Pending(message: str | None = None, name: str = "Pending") -> State[Any]:
    """A run that has not started (``NotReady`` when an upstream task failed)."""
    return State(StateType.PENDING, name, message)


def Running(message: str | None = None) -> State[Any]:
    """A run in progress."""
    return State(StateType.RUNNING, "Running", message)


def Retrying(message: str | None = None) -> State[Any]:
    """A run that failed an attempt and is running again."""
    return State(StateType.RUNNING, "Retrying", message)


def AwaitingRetry(message: str | None = None) -> State[Any]:
    """A run waiting for its retry delay to pass."""
    return State(StateType.PENDING, "AwaitingRetry", message)


def Paused(message: str | None = None) -> State[Any]:
    """A run waiting for input or a resume."""
    return State(StateType.PAUSED, "Paused", message)


def Completed(data: Any = None, message: str | None = None) -> State[Any]:
    """A run that returned ``data``."""
    return State(StateType.COMPLETED, "Completed", message, data)


def Failed(data: Any = None, message: str | None = None, name: str = "Failed") -> State[Any]:
    """A run whose code raised ``data``."""
    return State(StateType.FAILED, name, message, data)


def TimedOut(data: Any = None, message: str | None = None) -> State[Any]:
    """A run stopped by its ``timeout_seconds`` (a Failed-type state)."""
    return State(StateType.FAILED, "TimedOut", message, data)


def Crashed(data: Any = None, message: str | None = None) -> State[Any]:
    """A run interrupted from outside its code (a signal, ``KeyboardInterrupt``, ``SystemExit``...)."""
    return State(StateType.CRASHED, "Crashed", message, data)


def Cancelled(data: Any = None, message: str | None = None) -> State[Any]:
    """A run that was cancelled."""
    return State(StateType.CANCELLED, "Cancelled", message, data)

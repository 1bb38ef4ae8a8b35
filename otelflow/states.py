"""Run states: what a flow or task run is doing, and how it ended.

Mirrors Prefect 3's state API (``prefect.states`` and ``prefect.client.schemas.objects.State``):
``Completed(message="No work to do", name="Skipped")``, ``State(type=StateType.COMPLETED, data=1)``,
``state.is_completed()``, ``state.result(raise_on_failure=...)``, ``await state.result()`` in async code,
``state.timestamp`` (timezone-aware), ``state.state_details``. A state is a small value; the states a run goes
through that its span does not already say (retries, pauses, failures) are span events.

How a run's return value becomes its final state (Prefect's rule, :func:`return_value_to_state`):

- a State the user built (``return Completed(message="done")``) is the final state as is;
- a State produced by another run, or a non-empty list/tuple/set of such States, is aggregated: all
  completed -> Completed; any cancelled -> Cancelled; any paused -> Paused; otherwise Failed with
  ``"1/3 states failed."``. The states are the final state's data;
- anything else is Completed with the value as data.

Unlike Prefect, a state holds its result itself (there is no result record to load) and does not capture a
``traceparent`` in its details: the span of the run that produced it is kept alongside, for span links.
"""

from __future__ import annotations

import asyncio
import copy as _copy
import datetime
import enum
import sys
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterable, Mapping
from types import GeneratorType, TracebackType
from typing import Any, ClassVar, Generic, Self, TypeGuard, TypeVar, cast

from otelflow.exceptions import (
    CancelledRun,
    CrashedRun,
    FailedRun,
    MissingResult,
    PausedRun,
    TerminationSignal,
    UnfinishedRun,
)

__all__ = [
    "AwaitingConcurrencySlot",
    "AwaitingRetry",
    "Cancelled",
    "Cancelling",
    "Completed",
    "Crashed",
    "Failed",
    "InfrastructurePending",
    "Late",
    "MissingResult",
    "Paused",
    "Pending",
    "Retrying",
    "Running",
    "Scheduled",
    "State",
    "StateDetails",
    "StateGroup",
    "StateType",
    "Submitting",
    "Suspended",
    "TimedOut",
    "UnfinishedRun",
    "aget_state_exception",
    "araise_state_exception",
    "exception_to_crashed_state",
    "exception_to_failed_state",
    "format_exception",
    "get_state_exception",
    "get_state_result",
    "is_state_iterable",
    "raise_state_exception",
    "return_value_to_state",
]

R = TypeVar("R")


class StateType(str, enum.Enum):  # noqa: UP042  (a StrEnum prints "COMPLETED"; Prefect's prints "StateType.COMPLETED")
    """The kind of a state; several named states share a type (``Retrying`` is RUNNING, ``TimedOut`` FAILED).

    A ``str`` enum printed as Prefect prints it: ``str(StateType.COMPLETED) == "StateType.COMPLETED"``,
    ``StateType.COMPLETED == "COMPLETED"``.
    """

    SCHEDULED = "SCHEDULED"
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    CRASHED = "CRASHED"
    PAUSED = "PAUSED"
    CANCELLING = "CANCELLING"

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.value}"


TERMINAL_STATES: frozenset[StateType] = frozenset(
    {StateType.COMPLETED, StateType.CANCELLED, StateType.FAILED, StateType.CRASHED}
)
# Module constants: an enum member looked up on its class costs a descriptor call, and these are on hot paths.
_SCHEDULED = StateType.SCHEDULED
_PENDING = StateType.PENDING
_RUNNING = StateType.RUNNING
# A state's default name ("Completed", "Cancelling"), looked up: an enum member's ``.value`` is a descriptor call.
_DEFAULT_NAMES = {t: " ".join(part.capitalize() for part in t.value.split("_")) for t in StateType}


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class StateDetails:
    """Which run a state belongs to, and what its type needs to say (Prefect's ``StateDetails`` fields).

    Every field defaults to ``None`` (``False`` for the two flags); ids are ``None`` for a state built by hand.
    ``StateDetails(flow_run_id, task_run_id)`` or keywords: ``StateDetails(cache_key="k")``.
    """

    # Class-level defaults: an instance stores only the fields that were set (most states set two, or none).
    flow_run_id: uuid.UUID | None = None
    task_run_id: uuid.UUID | None = None
    child_flow_run_id: uuid.UUID | None = None
    scheduled_time: datetime.datetime | None = None
    cache_key: str | None = None
    cache_expiration: datetime.datetime | None = None
    deferred: bool | None = None
    untrackable_result: bool = False
    pause_timeout: datetime.datetime | None = None
    pause_reschedule: bool = False
    pause_key: str | None = None
    run_input_keyset: dict[str, str] | None = None
    refresh_cache: bool | None = None
    retriable: bool | None = None
    transition_id: uuid.UUID | None = None
    task_parameters_id: uuid.UUID | None = None
    traceparent: str | None = None
    deployment_concurrency_lease_id: uuid.UUID | None = None

    FIELDS: ClassVar[tuple[str, ...]] = (
        "flow_run_id", "task_run_id", "child_flow_run_id", "scheduled_time", "cache_key", "cache_expiration",
        "deferred", "untrackable_result", "pause_timeout", "pause_reschedule", "pause_key", "run_input_keyset",
        "refresh_cache", "retriable", "transition_id", "task_parameters_id", "traceparent",
        "deployment_concurrency_lease_id",
    )

    def __init__(
        self, flow_run_id: uuid.UUID | None = None, task_run_id: uuid.UUID | None = None, **fields: Any
    ) -> None:
        if flow_run_id is not None:
            self.flow_run_id = flow_run_id
        if task_run_id is not None:
            self.task_run_id = task_run_id
        for name, value in fields.items():
            if name not in self.FIELDS:
                raise TypeError(f"StateDetails has no field {name!r}; its fields are: {', '.join(self.FIELDS)}.")
            setattr(self, name, value)

    @classmethod
    def model_validate(cls, obj: StateDetails | Mapping[str, Any] | None) -> StateDetails:
        """A StateDetails from another one (copied), a mapping of its fields, or ``None`` (all defaults)."""
        if obj is None:
            return cls()
        if isinstance(obj, StateDetails):
            return obj.model_copy()
        return cls(**dict(obj))

    def model_dump(self) -> dict[str, Any]:
        """Every field and its value."""
        return {name: getattr(self, name) for name in self.FIELDS}

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> StateDetails:
        """A copy, with ``update``'s fields changed."""
        fields = {**self.__dict__, **(update or {})}
        return StateDetails(**(_copy.deepcopy(fields) if deep else fields))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StateDetails) and self.model_dump() == other.model_dump()

    __hash__ = None  # type: ignore[assignment]  # mutable, as Prefect's

    def __repr__(self) -> str:
        return f"StateDetails({', '.join(f'{k}={v!r}' for k, v in self.model_dump().items())})"

    def __str__(self) -> str:
        return " ".join(f"{k}={v!r}" for k, v in self.model_dump().items())


class State(Generic[R]):
    """A run's state: its type, a display name, an optional message, and its result or exception.

    ``data`` holds the return value of a completed run, the exception of a failed/crashed/cancelled one,
    or (for an aggregate) the states it was derived from. Built like Prefect's (a pydantic model there)::

        State(type=StateType.COMPLETED, name="Skipped", message="No work to do", data=None)

    ``name`` defaults to the type's (``"Completed"``); ``timestamp`` to the moment the state is made (UTC).
    """

    __slots__ = ("_details", "_id", "_span_context", "_ts", "data", "message", "name", "type")

    def __init__(
        self,
        type: StateType | str,
        name: str | None = None,
        message: str | None = None,
        data: Any = None,
        *,
        state_details: StateDetails | Mapping[str, Any] | None = None,
        timestamp: datetime.datetime | None = None,
        id: uuid.UUID | None = None,
    ) -> None:
        if type.__class__ is not StateType:
            type = StateType(type)
        self.type: StateType = type
        self.name: str = _DEFAULT_NAMES[self.type] if name is None else name
        self.message = message
        self.data = data
        # The clock is read as a float (cheap, every run makes states); ``timestamp`` converts it on first use.
        self._ts: float | datetime.datetime = time.time() if timestamp is None else timestamp
        self._id = id
        # The span of the run that produced this state: downstream runs link to it.
        self._span_context: Any = None
        if state_details is None:
            self._details: StateDetails | None = None  # made on first use: most states never need one
            if type is not _SCHEDULED:
                return
        else:
            self._details = state_details if isinstance(state_details, StateDetails) else StateDetails.model_validate(
                state_details
            )
        if type is _SCHEDULED and self.state_details.scheduled_time is None:
            self.state_details.scheduled_time = _now()  # Prefect: a Scheduled state is scheduled for now

    @property
    def timestamp(self) -> datetime.datetime:
        """When this state was made: a timezone-aware (UTC) datetime."""
        ts = self._ts
        if isinstance(ts, float):
            ts = self._ts = datetime.datetime.fromtimestamp(ts, datetime.UTC)
        return ts

    @timestamp.setter
    def timestamp(self, value: datetime.datetime) -> None:
        self._ts = value

    @property
    def id(self) -> uuid.UUID:
        """This state's id (made on first use)."""
        if self._id is None:
            self._id = uuid.uuid4()
        return self._id

    @id.setter
    def id(self, value: uuid.UUID) -> None:
        self._id = value

    @property
    def state_details(self) -> StateDetails:
        """Which run this state belongs to (both ids ``None`` for a state built by hand), and type-specific details."""
        details = self._details
        if details is None:
            details = self._details = StateDetails()
        return details

    @state_details.setter
    def state_details(self, value: StateDetails | Mapping[str, Any]) -> None:
        self._details = value if isinstance(value, StateDetails) else StateDetails.model_validate(value)

    def is_scheduled(self) -> bool:
        """True for Scheduled-type states (``Scheduled``, ``Late``, ``AwaitingRetry``)."""
        return self.type is StateType.SCHEDULED

    def is_pending(self) -> bool:
        """True for Pending-type states (``Pending``, ``NotReady``)."""
        return self.type is StateType.PENDING

    def is_running(self) -> bool:
        """True for Running-type states (``Running``, ``Retrying``)."""
        return self.type is StateType.RUNNING

    def is_paused(self) -> bool:
        """True for Paused-type states (``Paused``, ``Suspended``)."""
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

    def is_cancelling(self) -> bool:
        """True while a cancellation is under way."""
        return self.type is StateType.CANCELLING

    def is_final(self) -> bool:
        """True for Completed, Failed, Crashed and Cancelled states."""
        return self.type in TERMINAL_STATES

    def _result(self, raise_on_failure: bool = True) -> Any:
        # Prefect's order of checks (states._get_state_result), on data held in the state itself.
        if self.type is StateType.COMPLETED:
            data = self.data
            if _RESULT_TYPES and isinstance(data, _RESULT_TYPES):
                # A persisted result: its record (the value), or its metadata (read back from storage;
                # MissingResult when it is gone).
                record: Any = data if isinstance(data, _RESULT_TYPES[0]) else cast(Any, data).load()
                return record.result
            return data
        if self.type is StateType.PAUSED:
            raise PausedRun("Run is paused, its result is not available.", state=self)
        if self.type not in TERMINAL_STATES:
            raise UnfinishedRun(f"Run is in {self.type.name} state, its result is not available.")
        if raise_on_failure:
            raise get_state_exception(self)
        # Prefect: the state's data as is (the exception, or for an aggregate the states it came from).
        return self.data if self.data is not None else get_state_exception(self)

    def result(
        self, raise_on_failure: bool = True, retry_result_failure: bool = True, _sync: bool | None = None
    ) -> Any:
        """The run's return value.

        For a failed, crashed or cancelled run: raise its exception, or with ``raise_on_failure=False``
        return the exception instead. A paused run raises :class:`~otelflow.exceptions.PausedRun`, an
        unfinished one :class:`~otelflow.exceptions.UnfinishedRun`. ``retry_result_failure`` is accepted for
        Prefect's signature: the result is held in the state, there is nothing to retry.

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

    async def aresult(self, raise_on_failure: bool = True, retry_result_failure: bool = True) -> Any:
        """:meth:`result`, awaitable in any context."""
        return self._result(raise_on_failure)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with a new timestamp (Prefect's rule), and ``update``'s fields changed.

        Example::

            retry = state.model_copy(update={"name": "Retried"})
        """
        fields: dict[str, Any] = {
            "type": self.type, "name": self.name, "message": self.message, "data": self.data,
            "state_details": self._details.model_copy(deep=deep) if self._details is not None else None,
            "id": self.id, "timestamp": None,
        }
        if deep:
            fields["data"] = _copy.deepcopy(self.data)
        fields.update(update or {})
        new = type(self)(**fields)
        new._span_context = self._span_context
        return new

    def fresh_copy(self, **kwargs: Any) -> Self:
        """A copy with a new id and a new timestamp (``kwargs`` go to :meth:`model_copy`)."""
        update = {"id": uuid.uuid4(), "timestamp": _now(), **kwargs.pop("update", {})}
        return self.model_copy(update=update, **kwargs)

    def __repr__(self) -> str:
        """Prefect's introspection form: ``Skipped(message='No work to do', type=COMPLETED, result=None)``."""
        return f"{self.name}(message={self.message!r}, type={self.type.value}, result={self.data!r})"

    def __str__(self) -> str:
        """Prefect's log form: ``Completed()``, ``Failed('2/3 states failed.')``, ``Skipped(type=COMPLETED)``."""
        display = [repr(self.message)] if self.message else []
        if self.type.value.lower() != self.name.lower():
            display.append(f"type={self.type.value}")
        return f"{self.name}({', '.join(display)})"

    def __eq__(self, other: object) -> bool:
        """Prefect's: equal when every field but the id is (type, name, message, timestamp, details, data)."""
        if not isinstance(other, State):
            return NotImplemented
        if (self.type, self.name, self.message) != (other.type, other.name, other.message):
            return False
        if self.timestamp != other.timestamp or self.state_details != other.state_details:
            return False
        if self.data is other.data:
            return True
        try:
            return bool(self.data == other.data)
        except Exception:  # data whose == is not a plain bool (arrays, frames): different objects differ
            return False

    def __hash__(self) -> int:
        details = self._details
        ids = (None, None) if details is None else (details.flow_run_id, details.task_run_id)
        return hash((*ids, self.timestamp, self.type))


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


# --- state constructors ------------------------------------------------------------------------------------
# Prefect's signature: ``Completed(cls=State, **kwargs)`` where kwargs are State's fields (data, message, name,
# state_details, timestamp...). otelflow's earlier positional form (``Failed(exc, "message")``,
# ``Pending("message")``) is still accepted: a first argument that is not a State class is that form.

_DATA_FIRST = ("data", "message", "name")
_MESSAGE_FIRST = ("message", "name")


def _make(
    fn: str,
    cls: Any,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    type_: StateType,
    name: str | None = None,
    positional: tuple[str, ...] = _DATA_FIRST,
) -> State[Any]:
    if cls is not State and not (isinstance(cls, type) and issubclass(cls, State)):
        args = (cls, *args)
        cls = State
    elif args:
        raise TypeError(f"{fn}() takes State's fields as keywords: {fn}(message=..., data=...).")
    if args:
        if len(args) > len(positional):
            raise TypeError(f"{fn}() takes State's fields as keywords: {fn}(message=..., data=...).")
        for key, value in zip(positional, args, strict=False):
            if key in kwargs:
                raise TypeError(f"{fn}() got multiple values for argument {key!r}")
            kwargs[key] = value
    if "type" in kwargs:
        raise TypeError(f"{fn}() got multiple values for keyword argument 'type'")
    if name is not None:
        if "name" in kwargs:
            raise TypeError(f"{fn}() got multiple values for keyword argument 'name'")
        kwargs["name"] = name
    if cls is State:
        return State(type_, **kwargs)
    return cls(type=type_, **kwargs)  # type: ignore[no-any-return]


def _scheduled_details(kwargs: dict[str, Any], scheduled_time: datetime.datetime | None) -> None:
    details = StateDetails.model_validate(kwargs.pop("state_details", None))
    if scheduled_time is None:
        scheduled_time = _now()
    elif details.scheduled_time:
        raise ValueError("An extra scheduled_time was provided in state_details")
    details.scheduled_time = scheduled_time
    kwargs["state_details"] = details


def Scheduled(
    cls: type[State[Any]] = State, scheduled_time: datetime.datetime | None = None, **kwargs: Any
) -> State[Any]:
    """A run scheduled to start at ``scheduled_time`` (now if not given), in its ``state_details``."""
    _scheduled_details(kwargs, scheduled_time)
    return _make("Scheduled", cls, (), kwargs, StateType.SCHEDULED)


def Late(cls: type[State[Any]] = State, scheduled_time: datetime.datetime | None = None, **kwargs: Any) -> State[Any]:
    """A scheduled run past its start time (a Scheduled-type state)."""
    _scheduled_details(kwargs, scheduled_time)
    return _make("Late", cls, (), kwargs, StateType.SCHEDULED, "Late")


def AwaitingRetry(
    cls: type[State[Any]] = State, scheduled_time: datetime.datetime | None = None, **kwargs: Any
) -> State[Any]:
    """A run waiting for its retry delay to pass (a Scheduled-type state, as in Prefect)."""
    _scheduled_details(kwargs, scheduled_time)
    return _make("AwaitingRetry", cls, (), kwargs, StateType.SCHEDULED, "AwaitingRetry")


def AwaitingConcurrencySlot(
    cls: type[State[Any]] = State, scheduled_time: datetime.datetime | None = None, **kwargs: Any
) -> State[Any]:
    """A run waiting for a concurrency slot (a Scheduled-type state)."""
    _scheduled_details(kwargs, scheduled_time)
    return _make("AwaitingConcurrencySlot", cls, (), kwargs, StateType.SCHEDULED, "AwaitingConcurrencySlot")


def Pending(cls: Any = State, **kwargs: Any) -> State[Any]:
    """A run that has not started (``Pending(name="NotReady", ...)`` when an upstream task failed)."""
    if cls is State and not kwargs:
        return State(_PENDING)
    return _make("Pending", cls, (), kwargs, _PENDING, positional=_MESSAGE_FIRST)


def Submitting(cls: type[State[Any]] = State, **kwargs: Any) -> State[Any]:
    """A run being submitted (a Pending-type state)."""
    return _make("Submitting", cls, (), kwargs, StateType.PENDING, "Submitting")


def InfrastructurePending(cls: type[State[Any]] = State, **kwargs: Any) -> State[Any]:
    """A run waiting for its infrastructure (a Pending-type state)."""
    return _make("InfrastructurePending", cls, (), kwargs, StateType.PENDING, "InfrastructurePending")


def Running(cls: Any = State, **kwargs: Any) -> State[Any]:
    """A run in progress."""
    if cls is State and not kwargs:
        return State(_RUNNING)
    return _make("Running", cls, (), kwargs, _RUNNING, positional=_MESSAGE_FIRST)


def Retrying(cls: Any = State, **kwargs: Any) -> State[Any]:
    """A run that failed an attempt and is running again (a Running-type state)."""
    if cls is State and not kwargs:
        return State(_RUNNING, "Retrying")
    return _make("Retrying", cls, (), kwargs, _RUNNING, "Retrying", ("message",))


def Paused(
    cls: Any = State,
    timeout_seconds: int | None = None,
    pause_expiration_time: datetime.datetime | None = None,
    reschedule: bool = False,
    pause_key: str | None = None,
    **kwargs: Any,
) -> State[Any]:
    """A run waiting for input or a resume; ``timeout_seconds`` or ``pause_expiration_time`` set when it times out."""
    if not (isinstance(cls, type) and issubclass(cls, State)):  # otelflow's earlier form: Paused("message")
        if "message" in kwargs:
            raise TypeError("Paused() got multiple values for argument 'message'")
        kwargs["message"], cls = cls, State
    details = StateDetails.model_validate(kwargs.pop("state_details", None))
    if details.pause_timeout:
        raise ValueError("An extra pause timeout was provided in state_details")
    if pause_expiration_time is not None and timeout_seconds is not None:
        raise ValueError("Cannot supply both a pause_expiration_time and timeout_seconds")
    if pause_expiration_time is not None or timeout_seconds is not None:
        details.pause_timeout = pause_expiration_time or _now() + datetime.timedelta(seconds=timeout_seconds or 0)
    details.pause_reschedule = reschedule
    details.pause_key = pause_key
    kwargs["state_details"] = details
    return _make("Paused", cls, (), kwargs, StateType.PAUSED)


def Suspended(
    cls: type[State[Any]] = State,
    timeout_seconds: int | None = None,
    pause_expiration_time: datetime.datetime | None = None,
    pause_key: str | None = None,
    **kwargs: Any,
) -> State[Any]:
    """A paused run whose process exits, to be rescheduled when resumed (a Paused-type state)."""
    return Paused(cls, timeout_seconds, pause_expiration_time, True, pause_key, name="Suspended", **kwargs)


def Completed(cls: Any = State, *args: Any, **kwargs: Any) -> State[Any]:
    """A run that returned ``data``; ``Completed(message="No work to do", name="Skipped")`` as in Prefect."""
    return _make("Completed", cls, args, kwargs, StateType.COMPLETED)


def Failed(cls: Any = State, *args: Any, **kwargs: Any) -> State[Any]:
    """A run whose code raised ``data``."""
    return _make("Failed", cls, args, kwargs, StateType.FAILED)


def TimedOut(cls: Any = State, *args: Any, **kwargs: Any) -> State[Any]:
    """A run stopped by its ``timeout_seconds`` (a Failed-type state named ``TimedOut``, as Prefect's engine makes)."""
    return _make("TimedOut", cls, args, kwargs, StateType.FAILED, "TimedOut", ("data", "message"))


def Crashed(cls: Any = State, *args: Any, **kwargs: Any) -> State[Any]:
    """A run interrupted from outside its code (a signal, ``KeyboardInterrupt``, ``SystemExit``...)."""
    return _make("Crashed", cls, args, kwargs, StateType.CRASHED)


def Cancelling(cls: type[State[Any]] = State, **kwargs: Any) -> State[Any]:
    """A run being cancelled."""
    return _make("Cancelling", cls, (), kwargs, StateType.CANCELLING)


def Cancelled(cls: Any = State, *args: Any, **kwargs: Any) -> State[Any]:
    """A run that was cancelled."""
    return _make("Cancelled", cls, args, kwargs, StateType.CANCELLED)


# --- exceptions and states ---------------------------------------------------------------------------------


def get_state_exception(state: State[Any]) -> BaseException:
    """The exception a failed, crashed or cancelled state stands for.

    Its own exception when it has one; for an aggregate (its data is a State or States), the first failed
    one's; otherwise :class:`~otelflow.exceptions.FailedRun` / ``CrashedRun`` / ``CancelledRun`` with the
    state's message (or its data, if that is a string).
    """
    if state.is_failed():
        wrapper: type[Exception] = FailedRun
        default = "Run failed."
    elif state.is_crashed():
        wrapper, default = CrashedRun, "Run crashed."
    elif state.is_cancelled():
        wrapper, default = CancelledRun, "Run cancelled."
    else:
        raise ValueError(f"Expected failed or crashed state got {state!r}.")
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
        f"Unexpected result for failed state: {data!r} —— {type(data).__name__} cannot be resolved into an exception"
    )


async def aget_state_exception(state: State[Any]) -> BaseException:
    """:func:`get_state_exception`, awaitable."""
    return get_state_exception(state)


def raise_state_exception(state: State[Any], _sync: bool | None = None) -> Any:
    """Raise the exception of a failed, crashed or cancelled state; return ``None`` for any other state.

    In async code (as :meth:`State.result`) this returns an awaitable: ``await raise_state_exception(state)``.
    """
    if _sync is False or (_sync is None and _in_async_context()):
        return araise_state_exception(state)
    if state.is_failed() or state.is_crashed() or state.is_cancelled():
        raise get_state_exception(state)
    return None


async def araise_state_exception(state: State[Any]) -> None:
    """:func:`raise_state_exception`, awaitable in any context."""
    if state.is_failed() or state.is_crashed() or state.is_cancelled():
        raise get_state_exception(state)


async def get_state_result(state: State[Any], raise_on_failure: bool = True, retry_result_failure: bool = True) -> Any:
    """``await get_state_result(state)``: :meth:`State.result` as Prefect's module-level coroutine."""
    return state._result(raise_on_failure)


def format_exception(exc: BaseException, tb: TracebackType | None = None) -> str:
    """``ValueError: x`` (or the whole traceback when ``tb`` is given); otelflow's own types without module path."""
    exc_type = type(exc)
    if tb is not None:
        formatted = "".join(traceback.format_exception(exc_type, exc, tb))
    else:
        formatted = f"{exc_type.__name__}: {exc}"
    if exc_type.__module__.startswith("otelflow."):
        formatted = formatted.replace(f"{exc_type.__module__}.{exc_type.__name__}", exc_type.__name__)
    return formatted


async def exception_to_crashed_state(exc: BaseException, result_store: Any = None) -> State[Any]:
    """A Crashed state for an exception raised *outside* the user's code, with Prefect's messages.

    ``result_store`` is accepted for Prefect's signature; the exception is the state's data.
    """
    if isinstance(exc, asyncio.CancelledError):
        message = "Execution was cancelled by the runtime environment."
    elif isinstance(exc, KeyboardInterrupt):
        message = "Execution was aborted by an interrupt signal."
    elif isinstance(exc, TerminationSignal):
        message = "Execution was aborted by a termination signal."
    elif isinstance(exc, SystemExit):
        message = "Execution was aborted by Python system exit call."
    elif _is_httpx_request_error(exc):
        try:
            url = exc.request.url  # type: ignore[attr-defined]
        except RuntimeError:  # the exception's request is not set
            message = f"Request failed while attempting to contact the server: {format_exception(exc)}"
        else:
            message = f"Request to {url} failed: {format_exception(exc)}."
    else:
        message = f"Execution was interrupted by an unexpected exception: {format_exception(exc)}"
    return Crashed(message=message, data=exc)


def _is_httpx_request_error(exc: BaseException) -> bool:
    httpx = sys.modules.get("httpx")  # only if the application uses it: never imported for this
    return httpx is not None and isinstance(exc, (httpx.TimeoutException, httpx.ConnectError))


async def exception_to_failed_state(
    exc: BaseException | None = None, result_store: Any = None, write_result: bool = False, **kwargs: Any
) -> State[BaseException]:
    """A Failed state for an exception (the one being handled if ``exc`` is not given), as Prefect makes it.

    Its message is ``kwargs["message"]`` (if any) followed by ``ValueError: x``; it is marked not retriable.
    """
    if exc is None:
        exc = sys.exc_info()[1]
        if exc is None:
            raise ValueError("Exception was not passed and no active exception could be found.")
    existing = kwargs.pop("message", "") or ""
    if existing and not existing.endswith(" "):
        existing += " "
    state = Failed(data=exc, message=existing + format_exception(exc), **kwargs)
    state.state_details.retriable = False
    return state


def is_state_iterable(obj: Any) -> TypeGuard[Iterable[State[Any]]]:
    """True for a non-empty list, tuple or set whose items are all States (other iterables never count)."""
    # The type check comes first: the truth value of an array or a data frame raises.
    if isinstance(obj, (list, tuple, set)) and obj:
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
        self.final_count = sum(s.is_final() for s in self.states)
        self.not_final_count = self.total_count - self.final_count

    @property
    def fail_count(self) -> int:
        """Failed and crashed states."""
        return self.type_counts[StateType.FAILED] + self.type_counts[StateType.CRASHED]

    def all_completed(self) -> bool:
        """True when every state is Completed."""
        return self.type_counts[StateType.COMPLETED] == self.total_count

    def any_cancelled(self) -> bool:
        """True when a state is Cancelled."""
        return self.cancelled_count > 0

    def any_failed(self) -> bool:
        """True when a state is Failed or Crashed."""
        return self.fail_count > 0

    def any_paused(self) -> bool:
        """True when a state is Paused."""
        return self.paused_count > 0

    def all_final(self) -> bool:
        """True when every state is final."""
        return self.final_count == self.total_count

    def counts_message(self) -> str:
        """``total=3, 'COMPLETED'=2, 'FAILED'=1``."""
        parts = [f"total={self.total_count}"]
        if self.not_final_count:
            parts.append(f"not_final={self.not_final_count}")
        parts += [f"{t.value!r}={n}" for t, n in self.type_counts.items() if n]
        return ", ".join(parts)

    def __repr__(self) -> str:
        return f"StateGroup<{self.counts_message()}>"


def _is_manual(state: State[Any]) -> bool:
    details = state._details
    if details is None:
        return True
    return details.flow_run_id is None and details.task_run_id is None


#: (ResultRecord, ResultRecordMetadata), set by :mod:`otelflow.results` when it is imported (states never import it).
_RESULT_TYPES: tuple[type, ...] = ()


def return_value_to_state(retval: Any) -> State[Any]:
    """The final state a run's return value stands for (see the module docstring for the rule)."""
    if isinstance(retval, State) and _is_manual(retval):
        return retval
    if isinstance(retval, State) or is_state_iterable(retval):
        group = StateGroup([retval] if isinstance(retval, State) else retval)
        if group.all_completed():
            return State(StateType.COMPLETED, message="All states completed.", data=retval)
        if group.any_cancelled():
            message = f"{group.cancelled_count}/{group.total_count} states cancelled."
            return State(StateType.CANCELLED, message=message, data=retval)
        if group.any_paused():
            message = f"{group.paused_count}/{group.total_count} states paused."
            return State(StateType.PAUSED, message=message, data=retval)
        if group.any_failed():
            message = f"{group.fail_count}/{group.total_count} states failed."
        elif not group.all_final():
            message = f"{group.not_final_count}/{group.total_count} states are not final."
        else:
            message = "Given states: " + group.counts_message()
        return State(StateType.FAILED, message=message, data=retval)
    if isinstance(retval, GeneratorType):
        retval = list(retval)  # generators are not portable results
    return State(StateType.COMPLETED, data=retval)

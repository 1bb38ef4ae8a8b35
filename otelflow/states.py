"""Run states: what a flow or task run is doing, and how it ended.

Mirrors Prefect 3's state API (``Completed()``, ``Failed()``, ``state.is_completed()``,
``state.result(raise_on_failure=...)``). A state is a small immutable value; state transitions are
recorded as span events named after the state (``Running``, ``Retrying``, ``Completed``, ...).
"""

from __future__ import annotations

import enum
import time
from typing import Any, Generic, TypeVar

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
    "StateType",
    "TimedOut",
    "UnfinishedRun",
]

R = TypeVar("R")


class UnfinishedRun(RuntimeError):
    """Raised by :meth:`State.result` on a state that has no result yet (Pending, Running, Paused)."""


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


class State(Generic[R]):
    """A run's state: its type, a display name, an optional message, and its result or exception.

    ``data`` holds the return value of a completed run, or the exception of a failed/crashed/cancelled one.
    """

    __slots__ = ("data", "message", "name", "timestamp", "type")

    def __init__(
        self, type: StateType, name: str | None = None, message: str | None = None, data: Any = None
    ) -> None:
        self.type = type
        self.name = name or type.value.title()
        self.message = message
        self.data = data
        self.timestamp = time.time()

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
        """True when the run was interrupted by the system (``KeyboardInterrupt`` and friends)."""
        return self.type is StateType.CRASHED

    def is_cancelled(self) -> bool:
        """True when the run was cancelled (``SystemExit``, ``asyncio.CancelledError``)."""
        return self.type is StateType.CANCELLED

    def is_final(self) -> bool:
        """True for Completed, Failed, Crashed and Cancelled states."""
        return self.type in _FINAL

    def result(self, raise_on_failure: bool = True) -> R:
        """The run's return value.

        For a failed, crashed or cancelled run: raise its exception, or with ``raise_on_failure=False``
        return the exception instead. A run that has not finished raises :class:`UnfinishedRun`.
        """
        if self.type is StateType.COMPLETED:
            return self.data  # type: ignore[no-any-return]
        if self.type in _FINAL:
            exc = self.data if isinstance(self.data, BaseException) else RuntimeError(self.message or self.name)
            if raise_on_failure:
                raise exc
            return exc  # type: ignore[return-value]
        raise UnfinishedRun(f"Run is in {self.name!r} state ({self.message or 'no result yet'}); it has no result.")

    def __repr__(self) -> str:
        message = f", message={self.message!r}" if self.message else ""
        return f"{self.name}(type={self.type.value}{message})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, State)
            and (self.type, self.name, self.message) == (other.type, other.name, other.message)
            and self.data is other.data
        )

    __hash__ = object.__hash__


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
    """A run interrupted from outside its code (``KeyboardInterrupt``, ``MemoryError``...)."""
    return State(StateType.CRASHED, "Crashed", message, data)


def Cancelled(data: Any = None, message: str | None = None) -> State[Any]:
    """A run that was cancelled (``SystemExit``, ``asyncio.CancelledError``)."""
    return State(StateType.CANCELLED, "Cancelled", message, data)

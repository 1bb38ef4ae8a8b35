"""Futures of submitted task runs, and resolving them inside arguments and return values.

``task.submit()`` returns a :class:`TaskRunFuture`; ``task.map()`` a :class:`FutureList`. A future's
value is the task run's final :class:`~otelflow.states.State`; ``.result()`` unwraps it.
"""

from __future__ import annotations

import concurrent.futures
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from otelflow.states import Pending, State
from otelflow.utilities.annotations import BaseAnnotation, allow_failure, quote

if TYPE_CHECKING:
    from otelflow.context import TaskRun

__all__ = [
    "FutureList",
    "PrefectFuture",
    "PrefectFutureList",
    "TaskRunFuture",
    "as_completed",
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "wait",
]

R = TypeVar("R")


class TaskRunFuture(Generic[R]):
    """The eventual final state of one submitted task run."""

    __slots__ = ("_future", "task_run")

    def __init__(self, task_run: TaskRun, future: concurrent.futures.Future[State[R]]) -> None:
        self.task_run = task_run
        self._future = future

    @property
    def task_run_id(self) -> uuid.UUID:
        """Id of the task run this future tracks."""
        return self.task_run.id

    @property
    def state(self) -> State[R]:
        """The run's current state (its final state once done)."""
        if self._future.done():
            return self._future.result()
        return self.task_run.state or Pending()

    def done(self) -> bool:
        """True once the run reached a final (or NotReady) state."""
        return self._future.done()

    def wait(self, timeout: float | None = None) -> None:
        """Block until the run finishes, or ``timeout`` seconds pass (then return without raising)."""
        concurrent.futures.wait([self._future], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The run's return value; raises its exception if it failed (unless ``raise_on_failure=False``).

        Raises :class:`TimeoutError` if the run does not finish within ``timeout`` seconds.
        """
        try:
            state = self._future.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(
                f"Task run {self.task_run.name!r} did not finish within {timeout} seconds."
            ) from None
        return state.result(raise_on_failure=raise_on_failure)

    def add_done_callback(self, fn: Callable[[TaskRunFuture[R]], object]) -> None:
        """Call ``fn(self)`` when the run finishes (immediately if it already has)."""
        self._future.add_done_callback(lambda _: fn(self))

    def __repr__(self) -> str:
        return f"TaskRunFuture({self.task_run.name!r}, state={self.state!r})"


class FutureList(list[TaskRunFuture[R]]):
    """The futures of ``task.map(...)``: a list with ``.wait()`` and ``.result()`` for all of them."""

    def wait(self, timeout: float | None = None) -> None:
        """Block until every run finishes, or ``timeout`` seconds pass."""
        concurrent.futures.wait([f._future for f in self], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """Every run's return value, in order; raises the first failure unless ``raise_on_failure=False``."""
        _, not_done = concurrent.futures.wait([f._future for f in self], timeout=timeout)
        if not_done:
            raise TimeoutError(f"{len(not_done)} of {len(self)} task runs did not finish within {timeout} seconds.")
        return [f.result(raise_on_failure=raise_on_failure) for f in self]


# Prefect's names, so that code ported with s/prefect/otelflow/ keeps working.
PrefectFuture = TaskRunFuture
PrefectFutureList = FutureList


def wait(futures: Iterable[TaskRunFuture[Any]], timeout: float | None = None) -> tuple[set[Any], set[Any]]:
    """Wait for futures; returns ``(done, not_done)`` sets of them."""
    by_inner = {f._future: f for f in futures}
    done, not_done = concurrent.futures.wait(list(by_inner), timeout=timeout)
    return {by_inner[f] for f in done}, {by_inner[f] for f in not_done}


def as_completed(futures: Iterable[TaskRunFuture[R]], timeout: float | None = None) -> Iterable[TaskRunFuture[R]]:
    """Yield futures as their runs finish."""
    by_inner = {f._future: f for f in futures}
    for inner in concurrent.futures.as_completed(list(by_inner), timeout=timeout):
        yield by_inner[inner]


_LEAF_TYPES = (str, bytes, int, float, bool, type(None))


def _visit(value: Any, fn: Callable[[Any], Any], depth: int = 0) -> Any:
    """Apply ``fn`` to futures/states/annotations found in lists, tuples, sets and dict values."""
    if isinstance(value, _LEAF_TYPES):
        return value
    if isinstance(value, TaskRunFuture | State | BaseAnnotation):
        return fn(value)
    if depth > 32:
        return value
    if isinstance(value, list):
        return [_visit(v, fn, depth + 1) for v in value]
    if isinstance(value, tuple):
        items = [_visit(v, fn, depth + 1) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, set | frozenset):
        return type(value)(_visit(v, fn, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _visit(v, fn, depth + 1) for k, v in value.items()}
    return value


def contains_futures(value: Any, depth: int = 0) -> bool:
    """True if ``value`` holds a future, state or annotation the engine must resolve (cheap for leaves)."""
    if isinstance(value, _LEAF_TYPES):
        return False
    if isinstance(value, TaskRunFuture | State | BaseAnnotation):
        return True
    if depth > 32:
        return False
    if isinstance(value, list | tuple | set | frozenset):
        return any(contains_futures(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(contains_futures(v, depth + 1) for v in value.values())
    return False


def resolve_inputs(value: Any, *, allow_failures: bool = False) -> Any:
    """Replace futures/states in a task argument by their results.

    A failed upstream raises :class:`~otelflow.exceptions.UpstreamTaskError`, unless it sits inside
    ``allow_failure(...)``, in which case its exception is passed on. ``quote(...)`` values are passed
    as is, untraversed.
    """
    from otelflow.exceptions import UpstreamTaskError

    def resolve(item: Any, allowed: bool = allow_failures) -> Any:
        if isinstance(item, quote):
            return item.unwrap()
        if isinstance(item, allow_failure):
            return _visit(item.unwrap(), lambda inner: resolve(inner, True))
        if isinstance(item, BaseAnnotation):
            return _visit(item.unwrap(), lambda inner: resolve(inner, allowed))
        if isinstance(item, TaskRunFuture):
            item.wait()
            state = item.state
        else:
            state = item
        if state.is_completed():
            return state.data
        upstream = item.task_run.name if isinstance(item, TaskRunFuture) else "state"
        error = UpstreamTaskError(
            f"Upstream task run {upstream!r} ended {state.name}; "
            "wrap the argument in allow_failure(...) to run anyway."
        )
        if not allowed:
            raise error
        return state.data if isinstance(state.data, BaseException) else error

    return _visit(value, resolve)


def resolve_futures_to_states(value: Any) -> Any:
    """Replace futures in ``value`` by their final states (waiting for them)."""

    def to_state(item: Any) -> Any:
        if isinstance(item, TaskRunFuture):
            item.wait()
            return item.state
        return item

    return _visit(value, to_state)


def resolve_futures_to_results(value: Any) -> tuple[Any, list[State[Any]]]:
    """Replace futures in ``value`` by their results; also returns the non-completed states found."""
    bad: list[State[Any]] = []

    def to_result(item: Any) -> Any:
        if isinstance(item, TaskRunFuture):
            item.wait()
            state = item.state
            if not state.is_completed():
                bad.append(state)
            return state.result(raise_on_failure=False) if state.is_final() else state
        return item

    return _visit(value, to_result), bad

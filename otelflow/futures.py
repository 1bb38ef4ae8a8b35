"""Futures of submitted task runs, and resolving them inside arguments and return values.

``task.submit()`` returns a :class:`TaskRunFuture`; ``task.map()`` a :class:`FutureList`. A future's
value is the task run's final :class:`~otelflow.states.State`; ``.result()`` unwraps it.

Resolution happens in two steps so that async code never blocks its event loop: :func:`collect_futures`
finds what must finish first (the engine waits for it, blocking or awaiting), then :func:`resolve_inputs`
/ :func:`resolve_futures_to_states` replace futures by results or states without blocking.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from otelflow.states import Pending, State
from otelflow.utilities.annotations import BaseAnnotation, allow_failure, opaque, quote

if TYPE_CHECKING:
    from otelflow.context import TaskRun

__all__ = [
    "FutureList",
    "PrefectFuture",
    "PrefectFutureList",
    "TaskRunFuture",
    "as_completed",
    "collect_futures",
    "contains_futures",
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "resolve_inputs",
    "wait",
]

R = TypeVar("R")

# A task runner whose worker thread blocks waiting for another run lends its slot to a replacement worker
# (see ThreadPoolTaskRunner): a task that submits children and waits for them can never deadlock the pool.
_worker = threading.local()


@contextlib.contextmanager
def _blocked_worker() -> Iterator[None]:
    """While inside, this thread's task runner (if it is one of its workers) counts it as blocked."""
    runner = getattr(_worker, "runner", None)
    if runner is None:
        yield
        return
    runner._blocked(+1)
    try:
        yield
    finally:
        runner._blocked(-1)


def blocking_wait(futures: Iterable[concurrent.futures.Future[Any]], timeout: float | None = None) -> Any:
    """``concurrent.futures.wait`` that tells this thread's task runner it is blocked while it waits."""
    pending = [f for f in futures if not f.done()]
    if not pending:
        return concurrent.futures.wait([], timeout=0)
    with _blocked_worker():
        return concurrent.futures.wait(pending, timeout=timeout)


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
        blocking_wait([self._future], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The run's return value; raises its exception if it failed (unless ``raise_on_failure=False``).

        Raises :class:`TimeoutError` if the run does not finish within ``timeout`` seconds.
        """
        _, not_done = blocking_wait([self._future], timeout=timeout)
        if not_done:
            raise TimeoutError(f"Task run {self.task_run.name!r} did not finish within {timeout} seconds.")
        return cast(R, self._future.result()._result(raise_on_failure))

    def add_done_callback(self, fn: Callable[[TaskRunFuture[R]], object]) -> None:
        """Call ``fn(self)`` when the run finishes (immediately if it already has)."""
        self._future.add_done_callback(lambda _: fn(self))

    def __repr__(self) -> str:
        return f"TaskRunFuture({self.task_run.name!r}, state={self.state!r})"


def _wait_in_order(futures: list[concurrent.futures.Future[Any]], timeout: float | None) -> int:
    """Wait for every future, one after the other; returns how many are still not done at the deadline.

    ``concurrent.futures.wait`` takes every future's lock and installs a waiter on each: for the 10k futures of a
    ``.map`` that is paid in the flow's thread while the workers run. Waiting in order costs one wait per future
    that is not done yet (most are, by the time the first ones are).
    """
    first = next((i for i, f in enumerate(futures) if not f.done()), None)
    if first is None:
        return 0
    deadline = None if timeout is None else time.monotonic() + timeout
    with _blocked_worker():
        for index in range(first, len(futures)):
            future = futures[index]
            if future.done():
                continue
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                future.exception(timeout=remaining)
            except concurrent.futures.TimeoutError:
                return sum(not f.done() for f in futures[index:])
            except concurrent.futures.CancelledError:
                continue
    return 0


class FutureList(list[TaskRunFuture[R]]):
    """The futures of ``task.map(...)``: a list with ``.wait()`` and ``.result()`` for all of them."""

    def wait(self, timeout: float | None = None) -> None:
        """Block until every run finishes, or ``timeout`` seconds pass."""
        _wait_in_order([f._future for f in self], timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """Every run's return value, in order; raises the first failure unless ``raise_on_failure=False``."""
        not_done = _wait_in_order([f._future for f in self], timeout)
        if not_done:
            raise TimeoutError(f"{not_done} of {len(self)} task runs did not finish within {timeout} seconds.")
        return [f._future.result()._result(raise_on_failure) for f in self]


# Prefect's names, so that code ported with s/prefect/otelflow/ keeps working.
PrefectFuture = TaskRunFuture
PrefectFutureList = FutureList


def wait(futures: Iterable[TaskRunFuture[Any]], timeout: float | None = None) -> tuple[set[Any], set[Any]]:
    """Wait for futures; returns ``(done, not_done)`` sets of them."""
    by_inner = {f._future: f for f in futures}
    done, not_done = blocking_wait(list(by_inner), timeout=timeout)
    return {by_inner[f] for f in done}, {by_inner[f] for f in not_done}


def as_completed(futures: Iterable[TaskRunFuture[R]], timeout: float | None = None) -> Iterator[TaskRunFuture[R]]:
    """Yield futures as their runs finish."""
    by_inner = {f._future: f for f in futures}
    with _blocked_worker():
        for inner in concurrent.futures.as_completed(list(by_inner), timeout=timeout):
            yield by_inner[inner]


_LEAF_TYPES = (str, bytes, int, float, bool, type(None))
# Tuples, not ``A | B`` unions: a union in an expression builds a new object on every call of a hot path.
_RESOLVABLE = (TaskRunFuture, State, BaseAnnotation)
_MAX_DEPTH = 32


def _visit(value: Any, fn: Callable[[Any], Any], depth: int = 0) -> Any:
    """Apply ``fn`` to futures/states/annotations found in lists, tuples, sets and dict values."""
    if isinstance(value, _LEAF_TYPES):
        return value
    if isinstance(value, _RESOLVABLE):
        return fn(value)
    if depth > _MAX_DEPTH:
        return value
    if isinstance(value, list):
        return [_visit(v, fn, depth + 1) for v in value]
    if isinstance(value, tuple):
        items = [_visit(v, fn, depth + 1) for v in value]
        return type(value)(*items) if hasattr(value, "_fields") else tuple(items)
    if isinstance(value, (set, frozenset)):
        return type(value)(_visit(v, fn, depth + 1) for v in value)
    if isinstance(value, dict):
        return {k: _visit(v, fn, depth + 1) for k, v in value.items()}
    return value


def contains_futures(value: Any, depth: int = 0) -> bool:
    """True if ``value`` holds a future, state or annotation the engine must resolve (cheap for leaves)."""
    if isinstance(value, _LEAF_TYPES):
        return False
    if isinstance(value, _RESOLVABLE):
        return True
    if depth > _MAX_DEPTH:
        return False
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(contains_futures(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return any(contains_futures(v, depth + 1) for v in value.values())
    return False


def collect_futures(value: Any) -> list[TaskRunFuture[Any]]:
    """The unfinished futures inside ``value`` (not inside ``quote(...)``): what a run must wait for."""
    found: list[TaskRunFuture[Any]] = []

    def collect(item: Any) -> Any:
        if isinstance(item, quote):
            return item
        if isinstance(item, BaseAnnotation):
            return _visit(item.unwrap(), collect)
        if isinstance(item, TaskRunFuture) and not item.done():
            found.append(item)
        return item

    _visit(value, collect)
    return found


Link = tuple[Any, dict[str, Any]]  # (upstream SpanContext, link attributes)


def resolve_inputs(
    value: Any,
    *,
    allow_failures: bool = False,
    current_task_run: TaskRun | None = None,
    links: list[Link] | None = None,
    parameter_name: str | None = None,
) -> Any:
    """Replace futures/states in a task argument by their results (call :func:`collect_futures` first).

    Prefect's rules: a failed upstream raises :class:`~otelflow.exceptions.UpstreamTaskError`, unless it
    sits inside ``allow_failure(...)``, which passes a failed (or NotReady) upstream's exception on;
    ``quote(...)`` values are passed as is, untraversed; ``opaque(...)`` resolves its value but does not look
    inside the result. A task that depends on itself raises ``ValueError`` instead of deadlocking.
    Each resolved upstream with a span is appended to ``links`` (with the parameter name, if any).
    """
    from otelflow.exceptions import UpstreamTaskError
    from otelflow.semconv import INPUT_NAME, INPUT_TYPE

    def resolve(item: Any, allowed: bool = allow_failures) -> Any:
        if isinstance(item, quote):
            return item.unwrap()
        if isinstance(item, opaque):
            inner = item.unwrap()
            return resolve(inner, allowed) if isinstance(inner, (TaskRunFuture, State)) else inner
        if isinstance(item, allow_failure):
            return _visit(item.unwrap(), lambda inner: resolve(inner, True))
        if isinstance(item, BaseAnnotation):
            return _visit(item.unwrap(), lambda inner: resolve(inner, allowed))
        if isinstance(item, TaskRunFuture):
            if current_task_run is not None and item.task_run.id == current_task_run.id:
                raise ValueError(
                    "Discovered a task depending on itself. Raising to avoid a deadlock. Please inspect the "
                    f"inputs and dependencies of {current_task_run.task_name}."
                )
            blocking_wait([item._future])
            state = item.state
        else:
            state = item
        if not state.is_completed() and not (
            allowed and (state.is_failed() or (state.is_pending() and state.name == "NotReady"))
        ):
            raise UpstreamTaskError(
                f"Upstream task run '{state.state_details.task_run_id}' did not reach a 'COMPLETED' state."
            )
        result = state._result(raise_on_failure=False) if state.is_final() else state.data
        if links is not None and state._span_context is not None:
            attrs = {} if parameter_name is None else {INPUT_NAME: parameter_name, INPUT_TYPE: type(result).__name__}
            links.append((state._span_context, attrs))
        return result

    return _visit(value, resolve)


def resolve_futures_to_states(value: Any) -> Any:
    """Replace futures in ``value`` by their final states (waiting for them)."""

    def to_state(item: Any) -> Any:
        if isinstance(item, TaskRunFuture):
            item.wait()
            return item.state
        return item

    return _visit(value, to_state)


def resolve_futures_to_results(value: Any) -> Any:
    """Replace futures in ``value`` by their results (waiting for them), as Prefect's function of this name.

    A future whose run did not complete raises ``Exception("At least one result did not complete successfully")``.
    """

    def to_result(item: Any) -> Any:
        if isinstance(item, TaskRunFuture):
            item.wait()
            state = item.state
            if not state.is_completed():
                raise Exception("At least one result did not complete successfully")
            return state._result()
        return item

    return _visit(value, to_result)

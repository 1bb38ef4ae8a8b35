"""Futures of submitted task runs, and resolving them inside arguments and return values.

``task.submit()`` returns a :class:`TaskRunFuture` (Prefect's ``PrefectFuture`` / ``PrefectConcurrentFuture``);
``task.map()`` a :class:`FutureList` (``PrefectFutureList``). A future's value is the task run's final
:class:`~otelflow.states.State`; ``.result()`` unwraps it. :func:`wait` and :func:`as_completed` work as
Prefect's.

Futures and states are found where Prefect finds them: in lists, tuples (named ones too), sets, dicts (keys
and values), dataclasses and pydantic models, nested in any combination; a container holding one is rebuilt
with the results. ``quote(...)`` stops the search, ``opaque(...)`` resolves its value without looking inside.

Resolution happens in two steps so that async code never blocks its event loop: :func:`collect_futures`
finds what must finish first (the engine waits for it, blocking or awaiting), then :func:`resolve_inputs`
/ :func:`resolve_futures_to_states` replace futures by results or states without blocking.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import dataclasses
import itertools
import sys
import threading
import time
import uuid
from collections.abc import Callable, Collection, Generator, Iterable, Iterator
from itertools import chain
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, TypeVar, cast

from otelflow.states import Pending, State, StateType
from otelflow.utilities.annotations import BaseAnnotation, allow_failure, opaque, quote

if TYPE_CHECKING:
    from otelflow.context import TaskRun

__all__ = [
    "DoneAndNotDoneFutures",
    "FutureList",
    "PrefectConcurrentFuture",
    "PrefectFuture",
    "PrefectFutureList",
    "PrefectTaskRunFuture",
    "PrefectWrappedFuture",
    "TaskRunFuture",
    "as_completed",
    "collect_futures",
    "contains_futures",
    "resolve_futures_to_results",
    "resolve_futures_to_states",
    "resolve_inputs",
    "upstream_futures",
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
    """``concurrent.futures.wait`` that tells this thread's task runner it is blocked while it waits.

    Returns ``concurrent.futures.wait``'s ``(done, not_done)``, futures already done included.
    """
    futures = list(futures)
    if all(f.done() for f in futures):
        return concurrent.futures.wait(futures, timeout=0)
    with _blocked_worker():
        return concurrent.futures.wait(futures, timeout=timeout)


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and timeout < 0:
        raise ValueError(f"'timeout' must be a non-negative number, got {timeout}")


class TaskRunFuture(Generic[R]):
    """The eventual final state of one submitted task run (Prefect's ``PrefectConcurrentFuture``)."""

    __slots__ = ("_future", "task_run")

    def __init__(self, task_run: TaskRun, future: concurrent.futures.Future[State[R]]) -> None:
        self.task_run = task_run
        self._future = future

    @property
    def task_run_id(self) -> uuid.UUID:
        """Id of the task run this future tracks."""
        return self.task_run.id

    @property
    def wrapped_future(self) -> concurrent.futures.Future[State[R]]:
        """The ``concurrent.futures.Future`` that receives the run's final state."""
        return self._future

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
        if not self._future.done():
            blocking_wait([self._future], timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> R:
        """The run's return value; raises its exception if it failed (unless ``raise_on_failure=False``).

        Raises :class:`TimeoutError` if the run does not finish within ``timeout`` seconds.
        """
        if not self._future.done():
            _, not_done = blocking_wait([self._future], timeout=timeout)
            if not_done:
                raise TimeoutError(f"Task run {self.task_run_id} did not complete within {timeout} seconds")
        return cast(R, self._future.result()._result(raise_on_failure))

    def add_done_callback(self, fn: Callable[[TaskRunFuture[R]], object]) -> None:
        """Call ``fn(self)`` when the run finishes (immediately if it already has)."""
        self._future.add_done_callback(lambda _: fn(self))

    def __repr__(self) -> str:
        return f"TaskRunFuture({self.task_run.name!r}, state={self.state!r})"


# Prefect's names for the future of a task run, so that code ported with s/prefect/otelflow/ keeps working
# (``isinstance(x, PrefectFuture)`` included): otelflow has one kind of task run future.
PrefectFuture = TaskRunFuture
PrefectTaskRunFuture = TaskRunFuture
PrefectWrappedFuture = TaskRunFuture
PrefectConcurrentFuture = TaskRunFuture


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


def _raises(future: concurrent.futures.Future[Any]) -> bool:
    """Whether the result of a finished run's future raises (its run did not complete)."""
    try:
        state = future.result(0)
    except BaseException:
        return True
    return not (isinstance(state, State) and state.type is StateType.COMPLETED)


def _wait_all_or_first_failure(futures: list[concurrent.futures.Future[Any]], timeout: float | None,
                               ) -> tuple[bool, concurrent.futures.Future[Any] | None]:
    """Wait until every future is done or one ends in a state that raises: ``(timed out, the first of those)``.

    As :func:`as_completed` would tell, but at the cost of one callback per future that is not done yet, which
    wakes the waiter only for a failure or the last run (a ``.map`` of 10k runs woke it, and took a lock, 10k times).
    """
    pending = []
    for future in futures:
        if not future.done():
            pending.append(future)
        elif _raises(future):
            return False, future  # the finished ones first, in order, as as_completed yields them
    if not pending:
        return False, None
    ready = threading.Event()
    failures: list[concurrent.futures.Future[Any]] = []
    completed = itertools.count(1)  # next() is atomic: callbacks run on the workers' threads
    total = len(pending)

    def on_done(inner: concurrent.futures.Future[Any]) -> None:
        if _raises(inner):
            failures.append(inner)
            ready.set()
        elif next(completed) == total:
            ready.set()

    for future in pending:
        future.add_done_callback(on_done)
    if not ready.is_set():
        with _blocked_worker():
            ready.wait(timeout)
    if failures:
        return False, failures[0]
    return not ready.is_set(), None


class FutureList(list[TaskRunFuture[R]]):
    """The futures of ``task.map(...)``: a list with ``.wait()`` and ``.result()`` for all of them."""

    def wait(self, timeout: float | None = None) -> None:
        """Block until every run finishes, or ``timeout`` seconds pass (then return without raising)."""
        wait(self, timeout=timeout)

    def result(self, timeout: float | None = None, raise_on_failure: bool = True) -> list[R]:
        """Every run's return value, in order.

        As Prefect's: a failure is raised as soon as it happens (not after the runs before it in the list
        finish), unless ``raise_on_failure=False`` (then its exception takes its place in the list).
        Raises :class:`TimeoutError` if the runs do not all finish within ``timeout`` seconds.
        """
        _check_timeout(timeout)
        message = f"Timed out waiting for all futures to complete within {timeout} seconds"
        if not raise_on_failure:
            # Nothing can end the wait early: wait in order, the cheap way.
            if _wait_in_order([f._future for f in self], timeout):
                raise TimeoutError(message)
            return [f._future.result()._result(False) for f in self]
        timed_out, failed = _wait_all_or_first_failure([f._future for f in self], timeout)
        if failed is not None:
            failed.result()._result(True)  # raises the run's exception
        if timed_out:
            raise TimeoutError(message)
        return [f._future.result()._result(True) for f in self]


PrefectFutureList = FutureList


class DoneAndNotDoneFutures(NamedTuple, Generic[R]):
    """What :func:`wait` returns: the futures that finished (``done``) and those that did not (``not_done``)."""

    done: set[TaskRunFuture[R]]
    not_done: set[TaskRunFuture[R]]


def wait(futures: Iterable[TaskRunFuture[R]], timeout: float | None = None) -> DoneAndNotDoneFutures[R]:
    """Wait for the runs of ``futures`` to finish, or ``timeout`` seconds; never raises on timeout.

    Returns a named 2-tuple of sets: ``done`` (finished runs, including those finished before the call) and
    ``not_done``. Duplicates are returned once.

    Example::

        futures = work.map(range(10))
        done, not_done = wait(futures, timeout=5)
    """
    _check_timeout(timeout)
    unique = list(dict.fromkeys(futures))
    _wait_in_order([f._future for f in unique], timeout)
    done = {f for f in unique if f._future.done()}
    return DoneAndNotDoneFutures(done, {f for f in unique if f not in done})


def as_completed(
    futures: Iterable[TaskRunFuture[R]], timeout: float | None = None
) -> Generator[TaskRunFuture[R], None, None]:
    """Yield each future once, as its run finishes (finished ones first).

    Raises :class:`TimeoutError` (``"2 (of 5) futures unfinished"``) if ``timeout`` seconds pass first.

    Example::

        for future in as_completed(work.map(range(10))):
            print(future.result())
    """
    _check_timeout(timeout)
    unique = list(dict.fromkeys(futures))
    total = len(unique)
    pending: dict[concurrent.futures.Future[Any], TaskRunFuture[R]] = {}
    for future in unique:
        if future._future.done():
            yield future
        else:
            pending[future._future] = future
    if not pending:
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    lock = threading.Lock()
    ready = threading.Event()
    finished: list[concurrent.futures.Future[Any]] = []

    def on_done(inner: concurrent.futures.Future[Any]) -> None:
        with lock:
            finished.append(inner)
            ready.set()

    for inner in list(pending):
        inner.add_done_callback(on_done)
    while pending:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not ready.is_set():
            # Blocked only while waiting, not while the caller handles what was yielded.
            with _blocked_worker():
                ready.wait(remaining)
        with lock:
            batch, finished[:] = finished[:], []
            ready.clear()
        if not batch:
            raise TimeoutError(f"{len(pending)} (of {total}) futures unfinished")
        for inner in batch:
            if inner in pending:
                yield pending.pop(inner)


# --- finding and replacing futures and states in values ----------------------------------------------------
#
# What to do with a value depends on its type only, so the answer is cached per type: a big list of plain
# values costs one C-level pass to collect the distinct element types, then one dict lookup per type.

_PLAIN, _FUTURE, _STATE, _ANNOTATION, _LIST, _TUPLE, _SET, _DICT, _DATACLASS, _MODEL = range(10)
_KINDS: dict[type, int] = {
    **dict.fromkeys((str, bytes, int, float, bool, complex, type(None), frozenset, range), _PLAIN),
    list: _LIST, tuple: _TUPLE, set: _SET, dict: _DICT,
}
_MAX_CACHED_KINDS = 4096  # classes made at run time (mocks make one per object) are classified, not cached
# Deeper values are passed as they are: a bound on recursion, far beyond real arguments.
_MAX_DEPTH = 100
_DATACLASS_FIELDS: dict[type, tuple[tuple[str, bool], ...]] = {}


def _classify(cls: type) -> int:
    if issubclass(cls, TaskRunFuture):
        kind = _FUTURE
    elif issubclass(cls, State):
        kind = _STATE
    elif issubclass(cls, BaseAnnotation):
        kind = _ANNOTATION
    elif issubclass(cls, list):
        kind = _LIST
    elif issubclass(cls, tuple):
        kind = _TUPLE
    elif issubclass(cls, set):  # not frozenset: Prefect does not look inside one
        kind = _SET
    elif issubclass(cls, dict):
        kind = _DICT
    elif dataclasses.is_dataclass(cls):
        kind = _DATACLASS
    else:
        # A pydantic model's class can only exist once pydantic is imported; otelflow does not import it for this.
        pydantic = sys.modules.get("pydantic")
        kind = _MODEL if pydantic is not None and issubclass(cls, pydantic.BaseModel) else _PLAIN
    if len(_KINDS) < _MAX_CACHED_KINDS:
        _KINDS[cls] = kind
    return kind


def _kind(value: Any) -> int:
    cls = type(value)
    kind = _KINDS.get(cls)
    return _classify(cls) if kind is None else kind


def _dataclass_fields(cls: type) -> tuple[tuple[str, bool], ...]:
    """``(name, init)`` of a dataclass's fields, cached per class."""
    found = _DATACLASS_FIELDS.get(cls)
    if found is None:
        found = tuple((f.name, f.init) for f in dataclasses.fields(cls))
        if len(_DATACLASS_FIELDS) < _MAX_CACHED_KINDS:
            _DATACLASS_FIELDS[cls] = found
    return found


def _children(value: Any, kind: int) -> Collection[Any]:
    """The values a container holds (for a dict: its keys, then its values), in a stable order."""
    if kind == _DICT:
        return [*value, *value.values()]
    if kind == _DATACLASS:
        return [getattr(value, name) for name, _ in _dataclass_fields(type(value))]
    if kind == _MODEL:
        return [item for _, item in value]
    return value  # type: ignore[no-any-return]  # a list, tuple or set


def _children_of_all(members: list[Any], kind: int) -> Iterable[Any]:
    """The values held by containers of one kind, flattened (in C for the built-in kinds)."""
    if kind == _DICT:
        return chain(chain.from_iterable(members), chain.from_iterable(map(dict.values, members)))
    if kind <= _SET:  # list, tuple, set
        return chain.from_iterable(members)
    return chain.from_iterable(_children(member, kind) for member in members)


def _scan(frontier: list[Any], found: list[Any] | None = None) -> bool:
    """Look for futures, states and annotations in ``frontier`` and the containers inside it, level by level.

    With ``found=None``: True at the first one (annotations count: the engine must unwrap them). Otherwise
    append every future and state to ``found`` where the engine resolves them: not inside ``quote(...)``,
    and inside ``opaque(...)`` only the annotated value itself.

    One level costs a few C-level passes (the distinct types, the ids, the flattened children), not a Python
    call per value: a list of 100k plain rows is scanned in milliseconds. Each container is looked into
    once (shared and cyclic ones included), down to ``_MAX_DEPTH`` levels.
    """
    seen: set[int] = set()
    for _ in range(_MAX_DEPTH):
        groups: list[tuple[int, type]] = []
        types = set(map(type, frontier))
        for cls in types:
            kind = _KINDS.get(cls)
            if kind is None:
                kind = _classify(cls)
            if kind != _PLAIN:
                if kind <= _ANNOTATION and found is None:
                    return True
                groups.append((kind, cls))
        if not groups:
            return False
        following: list[Any] = []
        for kind, cls in groups:
            members: list[Any] = frontier if len(types) == 1 else [v for v in frontier if type(v) is cls]
            if kind <= _STATE:
                found.extend(members)  # type: ignore[union-attr]  # found is a list: None returned above
                continue
            if kind == _ANNOTATION:
                for annotation in members:
                    if isinstance(annotation, quote):
                        continue
                    inner = annotation.unwrap()
                    if not isinstance(annotation, opaque):
                        following.append(inner)
                    elif _FUTURE <= _kind(inner) <= _STATE:
                        found.append(inner)  # type: ignore[union-attr]
                continue
            # The children's types first (no list built): plain children end the search here.
            if _all_plain(set(map(type, _children_of_all(members, kind)))):
                continue
            ids = list(map(id, members))
            if not seen.isdisjoint(ids) or len(set(ids)) != len(ids):  # shared or cyclic: each container once
                fresh = {i: m for i, m in zip(ids, members, strict=True) if i not in seen}
                members, ids = list(fresh.values()), list(fresh)
            seen.update(ids)
            following.extend(_children_of_all(members, kind))
        if not following:
            return False
        frontier = following
    return False


def _all_plain(types: set[type]) -> bool:
    for cls in types:
        kind = _KINDS.get(cls)
        if kind is None:
            kind = _classify(cls)
        if kind != _PLAIN:
            return False
    return True


def contains_futures(value: Any) -> bool:
    """True if ``value`` holds a future, state or annotation the engine must resolve (cheap for plain values)."""
    kind = _kind(value)
    if kind == _PLAIN:
        return False
    if kind <= _ANNOTATION:
        return True
    found = _contains_small(value, kind, 0)
    return _scan([value]) if found is None else found


_SMALL = 16  # items: below this, a Python loop beats _scan's passes
_SMALL_DEPTH = 3


def _contains_small(value: Any, kind: int, depth: int) -> bool | None:
    """:func:`contains_futures` for a small, shallow container; ``None`` when it is not one."""
    items = _children(value, kind)
    if len(items) > _SMALL or depth > _SMALL_DEPTH:
        return None
    for item in items:
        cls = type(item)
        item_kind = _KINDS.get(cls)
        if item_kind is None:
            item_kind = _classify(cls)
        if item_kind == _PLAIN:
            continue
        if item_kind <= _ANNOTATION:
            return True
        found = _contains_small(item, item_kind, depth + 1)
        if found is None or found:
            return found
    return False


def upstream_futures(value: Any) -> list[TaskRunFuture[Any]]:
    """Every future inside ``value`` (done or not), where the engine would resolve it: not inside
    ``quote(...)``; inside ``opaque(...)`` only when it is the annotated value itself."""
    found: list[Any] = []
    _scan([value], found)
    return [item for item in found if isinstance(item, TaskRunFuture)]


def collect_futures(value: Any) -> list[TaskRunFuture[Any]]:
    """The unfinished futures inside ``value`` (see :func:`upstream_futures`): what a run must wait for."""
    return [future for future in upstream_futures(value) if not future._future.done()]


_Visit = Callable[[Any, "BaseAnnotation[Any] | None"], Any]


class _Rebuilder:
    """Replaces futures/states inside a value by what ``visit`` returns for them, rebuilding (copies of) the
    containers that changed, as Prefect's ``visit_collection(..., return_data=True)`` does.

    ``visit(item, annotation)`` gets the innermost annotation around the item. ``strip`` replaces annotations
    by their (resolved) value; ``descend`` goes on into what a future or state was replaced with;
    ``whole_annotations`` hands annotations themselves to ``visit``.
    """

    __slots__ = ("descend", "memo", "strip", "visit", "whole_annotations")

    def __init__(self, visit: _Visit, *, strip: bool, descend: bool, whole_annotations: bool = False) -> None:
        self.visit = visit
        self.strip = strip
        self.descend = descend
        self.whole_annotations = whole_annotations
        self.memo: dict[int, tuple[Any, Any]] = {}  # id -> (original, rebuilt): shared and cyclic values

    def __call__(self, value: Any, annotation: BaseAnnotation[Any] | None = None, depth: int = 0) -> Any:
        kind = _kind(value)
        if kind == _PLAIN:
            return value
        if kind <= _STATE:
            new = self.visit(value, annotation)
            if self.descend and new is not value:
                new_kind = _kind(new)
                if new_kind >= _LIST and _scan([new]):
                    new = self.container(new, new_kind, annotation, depth + 1)
            return new
        if kind == _ANNOTATION:
            if self.whole_annotations:
                return self.visit(value, annotation)
            if isinstance(value, quote):
                return value.unwrap() if self.strip else value
            inner = value.unwrap()
            if isinstance(value, opaque):
                new_inner = self.visit(inner, value) if _FUTURE <= _kind(inner) <= _STATE else inner
            else:
                new_inner = self(inner, value, depth + 1)
            if self.strip:
                return new_inner
            return value if new_inner is inner else value.rewrap(new_inner)
        return self.container(value, kind, annotation, depth)

    def container(self, value: Any, kind: int, annotation: BaseAnnotation[Any] | None, depth: int) -> Any:
        if depth > _MAX_DEPTH:
            return value
        key = id(value)
        seen = self.memo.get(key)
        if seen is not None:
            return seen[1]
        self.memo[key] = (value, value)
        items = _children(value, kind)
        new_items = [self.child(item, annotation, depth + 1) for item in items]
        result = value
        if any(new is not old for new, old in zip(new_items, items, strict=True)):
            result = _rebuild(value, kind, new_items)
        self.memo[key] = (value, result)
        return result

    def child(self, item: Any, annotation: BaseAnnotation[Any] | None, depth: int) -> Any:
        kind = _kind(item)
        if kind == _PLAIN:
            return item
        if kind >= _LIST and not _scan([item]):  # nothing inside: kept as is, not copied
            return item
        return self(item, annotation, depth)


def _rebuild(value: Any, kind: int, items: list[Any]) -> Any:
    """A copy of the container ``value`` holding ``items`` (in :func:`_children`'s order), of the same type."""
    cls = type(value)
    if kind == _DICT:
        half = len(items) // 2
        pairs = list(zip(items[:half], items[half:], strict=True))
        try:
            return cls(pairs)
        except TypeError:  # a dict type whose constructor takes something else first (defaultdict)
            new = copy.copy(value)
            new.clear()
            new.update(pairs)
            return new
    if kind == _DATACLASS:
        fields = _dataclass_fields(cls)
        new = dataclasses.replace(value, **{name: item for (name, init), item in zip(fields, items, strict=True)
                                            if init})
        for (name, init), item in zip(fields, items, strict=True):
            if not init and getattr(new, name) is not item:
                object.__setattr__(new, name, item)  # works for frozen dataclasses too
        return new
    if kind == _MODEL:
        updated = dict(zip((name for name, _ in value), items, strict=True))
        new = value.model_construct(_fields_set=value.model_fields_set, **updated)
        for name, private in (value.__pydantic_private__ or {}).items():
            setattr(new, name, private)
        return new
    if kind == _TUPLE and hasattr(cls, "_make"):
        return cls._make(items)
    try:
        return cls(items)
    except TypeError:  # a subclass with its own constructor: the built-in type it derives from
        base = list if kind == _LIST else tuple if kind == _TUPLE else set
        return base(items)


def _visit(value: Any, fn: Callable[[Any], Any]) -> Any:
    """Apply ``fn`` to the futures, states and (whole) annotations inside ``value``, rebuilding what changed."""
    return _Rebuilder(lambda item, _: fn(item), strip=False, descend=False, whole_annotations=True)(value)


Link = tuple[Any, dict[str, Any]]  # (upstream SpanContext, link attributes)

# The annotation context of a value passed with ``resolve_inputs(..., allow_failures=True)``.
_ALLOW_FAILURE: BaseAnnotation[Any] = allow_failure(None)


def resolve_inputs(
    value: Any,
    *,
    allow_failures: bool = False,
    current_task_run: TaskRun | None = None,
    links: list[Link] | None = None,
    parameter_name: str | None = None,
) -> Any:
    """Replace futures/states in a task argument by their results (call :func:`collect_futures` first).

    Prefect's rules (``resolve_inputs`` / ``resolve_to_final_result``): futures and states are found in lists,
    tuples, sets, dicts, dataclasses and pydantic models, which are rebuilt around the results; what a future
    resolved to is searched too. A failed upstream raises :class:`~otelflow.exceptions.UpstreamTaskError`, unless
    the innermost annotation around it is ``allow_failure(...)`` (or ``allow_failures=True``), which passes a
    failed (or NotReady) upstream's exception on. Annotations are removed: ``quote(...)`` values are passed as
    is, untraversed; ``opaque(...)`` resolves its value but does not look inside it or its result.
    A task that depends on itself raises ``ValueError`` instead of deadlocking. A value that cannot be rebuilt
    (its constructor or ``__post_init__`` raises) raises ``PrefectException`` naming ``parameter_name``, if given.
    Each resolved upstream with a span is appended to ``links`` (with the parameter name, if any).
    """
    from otelflow.exceptions import OtelflowException, UpstreamTaskError
    from otelflow.semconv import INPUT_NAME, INPUT_TYPE

    def resolve(item: Any, annotation: BaseAnnotation[Any] | None) -> Any:
        if isinstance(item, TaskRunFuture):
            if current_task_run is not None and item.task_run.id == current_task_run.id:
                raise ValueError(
                    "Discovered a task depending on itself. Raising to avoid a deadlock. Please inspect the "
                    f"inputs and dependencies of {current_task_run.task_name}."
                )
            if not item._future.done():  # only futures found inside results were not waited for already
                blocking_wait([item._future])
            state: State[Any] = item._future.result()
        else:
            state = item
        allowed = isinstance(annotation, allow_failure)
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

    kind = _kind(value)
    if kind == _PLAIN:
        return value
    rebuild = _Rebuilder(resolve, strip=True, descend=True)
    if parameter_name is None:
        return rebuild(value, _ALLOW_FAILURE if allow_failures else None)
    try:
        return rebuild(value, _ALLOW_FAILURE if allow_failures else None)
    except OtelflowException:
        raise
    except Exception as exc:  # a container that cannot be rebuilt: Prefect's error, with what to do next
        raise OtelflowException(
            f"Failed to resolve inputs in parameter {parameter_name!r}. If your parameter type is not supported, "
            "consider using the `quote` annotation to skip resolution of inputs, or the `opaque` annotation to "
            "resolve the value without traversing its contents."
        ) from exc


def _resolve_futures(value: Any, fn: Callable[[TaskRunFuture[Any]], Any]) -> Any:
    """Prefect's ``_resolve_futures``: wait for and resolve each future once, then rebuild ``value``."""
    futures = list(dict.fromkeys(upstream_futures(value)))
    if not futures:
        return value
    resolved = {future: fn(future) for future in futures}

    def replace(item: Any, _: BaseAnnotation[Any] | None) -> Any:
        return resolved.get(item, item) if isinstance(item, TaskRunFuture) else item

    result = _Rebuilder(replace, strip=False, descend=False)(value)
    # A FutureList of states or results is no longer a list of futures: a plain list, as in Prefect.
    return list(result) if isinstance(result, FutureList) else result


def resolve_futures_to_states(value: Any) -> Any:
    """Replace futures in ``value`` by their final states (waiting for them), in any container."""

    def to_state(future: TaskRunFuture[Any]) -> State[Any]:
        future.wait()
        return future.state

    return _resolve_futures(value, to_state)


def resolve_futures_to_results(value: Any) -> Any:
    """Replace futures in ``value`` by their results (waiting for them), as Prefect's function of this name.

    A future whose run did not complete raises ``Exception("At least one result did not complete successfully")``.
    """

    def to_result(future: TaskRunFuture[Any]) -> Any:
        future.wait()
        state = future.state
        if not state.is_completed():
            raise Exception("At least one result did not complete successfully")
        return state._result()

    return _resolve_futures(value, to_result)

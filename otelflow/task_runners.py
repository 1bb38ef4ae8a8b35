"""Task runners: where submitted and mapped task runs execute.

The default, :class:`ThreadPoolTaskRunner`, runs each task run in a worker thread *inside a copy of the
submitting context* (``contextvars.copy_context()``): the OTel context (so the task span is a child of
the flow span), the run contexts and the tags all arrive in the worker. Losing context in thread pools
is the classic OTel-in-Python bug; here it cannot happen because nothing runs outside a copied context.

The Dask runner lives in :mod:`otelflow.integrations.dask`.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import concurrent.futures
import contextvars
import io
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

from otelflow import futures as _futures
from otelflow.exceptions import MappingLengthMismatch, MappingMissingIterable
from otelflow.futures import FutureList, TaskRunFuture, collect_futures, resolve_inputs
from otelflow.states import State
from otelflow.utilities.annotations import BaseAnnotation, allow_failure, opaque, quote, unmapped

if TYPE_CHECKING:
    from otelflow.tasks import Task

__all__ = ["TaskRunner", "ThreadPoolTaskRunner", "expand_map_parameters"]


class TaskRunner(abc.ABC):
    """Runs task runs submitted during a flow run. Entered for the duration of the flow run."""

    @abc.abstractmethod
    def duplicate(self) -> Self:
        """A fresh, unentered runner with the same options (each flow run gets its own)."""

    @abc.abstractmethod
    def submit(
        self,
        task: Task[..., Any],
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        map_index: int | None = None,
    ) -> TaskRunFuture[Any]:
        """Start one task run; return its future at once."""

    def map(
        self, task: Task[..., Any], parameters: dict[str, Any], wait_for: Iterable[Any] | None = None
    ) -> FutureList[Any]:
        """Start one task run per element of the iterable parameters (see :func:`expand_map_parameters`)."""
        return FutureList(
            self.submit(task, call_params, wait_for, map_index=index)
            for index, call_params in enumerate(expand_map_parameters(task, parameters))
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def _is_iterable(value: Any) -> bool:
    # Prefect's rule: anything iter() accepts, except strings, bytes and open files.
    try:
        iter(value)
    except TypeError:
        return False
    return not isinstance(value, (str, bytes, io.IOBase))


def expand_map_parameters(task: Task[..., Any], parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Split ``.map`` parameters (bound without defaults) into one parameter dict per mapped call.

    Prefect's rules: a future or State passed as an argument is resolved first and its result mapped
    over; iterables passed through ``**kwargs`` are mapped like named ones; ``unmapped(...)`` values,
    strings, bytes and non-iterables are passed whole; the task's default values are never mapped over;
    ``allow_failure``/``quote``/``opaque`` around an iterable are re-applied to each element.
    """
    binder = task.binder
    resolved: dict[str, Any] = {}
    for name, value in parameters.items():
        inner = value.unwrap() if isinstance(value, (allow_failure, opaque)) else value
        if isinstance(inner, (TaskRunFuture, State)):
            # Only the top level: nested futures are resolved in each mapped run, which links to them.
            for future in collect_futures(inner):
                future.wait()
            inner = resolve_inputs(inner, allow_failures=isinstance(value, allow_failure))
            value = value.rewrap(inner) if isinstance(value, BaseAnnotation) else inner
        resolved[name] = value
    variadic = binder.var_keyword
    if variadic is not None and isinstance(resolved.get(variadic), dict):
        resolved.update(resolved.pop(variadic))
    mapped: dict[str, list[Any]] = {}
    static: dict[str, Any] = {}
    annotations: dict[str, BaseAnnotation[Any]] = {}
    for name, value in resolved.items():
        if isinstance(value, (allow_failure, opaque, quote)):
            annotations[name] = value
            value = value.unwrap()
        if isinstance(value, unmapped):
            static[name] = value.unwrap()
        elif _is_iterable(value):
            mapped[name] = list(value)
        else:
            static[name] = value
    if not mapped:
        raise MappingMissingIterable(
            "No iterable parameters were received. Parameters for map must include at least one iterable. "
            f"Parameters: {sorted(resolved)}"
        )
    lengths = {name: len(values) for name, values in mapped.items()}
    if len(set(lengths.values())) > 1:
        raise MappingLengthMismatch(
            "Received iterable parameters with different lengths. Parameters for map must all be the same "
            f"length. Got lengths: {lengths}"
        )
    signature_names = binder.signature.parameters
    calls = []
    for index in range(next(iter(lengths.values()))):
        call = {name: values[index] for name, values in mapped.items()}
        call.update(static)
        for name, default in binder.defaults.items():
            call.setdefault(name, default)
        for name, annotation in annotations.items():
            call[name] = annotation.rewrap(call[name])
        if variadic is not None:
            extra = {k: call.pop(k) for k in [k for k in call if k not in signature_names]}
            call[variadic] = {**call.get(variadic, {}), **extra}
        calls.append({name: call[name] for name in signature_names if name in call})
    return calls


_WorkItem = tuple[contextvars.Context, Any, Any, dict[str, Any], Any, "concurrent.futures.Future[Any]"]


class ThreadPoolTaskRunner(TaskRunner):
    """Runs task runs in a thread pool (the default). Async tasks get an event loop in their worker.

    At most ``max_workers`` task runs *execute* at once (default ``OTELFLOW_TASK_RUNNER_MAX_WORKERS`` or
    ``min(32, cpus + 4)``). A worker that blocks waiting for another task run (``future.result()``,
    ``.wait()``, an upstream future in its arguments) lends its slot to a new worker until it resumes, so a
    task that submits children and waits for them never deadlocks the pool, however deep the nesting
    (Prefect gets the same guarantee from an unbounded pool, at the cost of one thread per queued run).

    Submitted runs wait in one FIFO queue drained by the workers. After the flow run ends the runner is
    closed: it first waits for every run still queued or running (including runs those runs submit),
    then refuses new work with ``RuntimeError`` rather than silently starting a pool nobody waits for.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}.")
        self.max_workers = max_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending: collections.deque[_WorkItem] = collections.deque()
        self._drainers = 0
        self._blocked_workers = 0
        self._workers = 0
        self._closing = False
        self._closed = False

    def duplicate(self) -> Self:
        return type(self)(max_workers=self.max_workers)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            from otelflow.settings import get_settings

            self._workers = (
                self.max_workers or get_settings().task_runner_max_workers or min(32, (os.cpu_count() or 1) + 4)
            )
            # The executor only ever holds drainer jobs; how many run at once is decided here (workers +
            # blocked workers), so its own bound is just a safety net.
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self._workers + 1024, thread_name_prefix="otelflow-task"
            )
        return self._executor

    def submit(
        self,
        task: Task[..., Any],
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        map_index: int | None = None,
    ) -> TaskRunFuture[Any]:
        from otelflow import engine

        task_run = engine.new_task_run(task, map_index)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        # The worker runs inside a copy of *this* context: OTel span, run contexts and tags included.
        self._enqueue([(contextvars.copy_context(), task, task_run, parameters, wait_for, future)])
        return TaskRunFuture(task_run, future)

    def map(
        self, task: Task[..., Any], parameters: dict[str, Any], wait_for: Iterable[Any] | None = None
    ) -> FutureList[Any]:
        from otelflow import engine

        context = contextvars.copy_context()  # copied again per run in the worker (Context.copy is O(1))
        items: list[_WorkItem] = []
        futures: FutureList[Any] = FutureList()
        for index, call_params in enumerate(expand_map_parameters(task, parameters)):
            task_run = engine.new_task_run(task, index)
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            items.append((context, task, task_run, call_params, wait_for, future))
            futures.append(TaskRunFuture(task_run, future))
        self._enqueue(items)
        return futures

    def _enqueue(self, items: list[_WorkItem]) -> None:
        with self._lock:
            if self._closed or (self._closing and getattr(_futures._worker, "runner", None) is not self):
                raise RuntimeError(
                    "This flow run's task runner is closed: the flow run has ended (or is ending), so no new "
                    "task runs can be submitted to it. Submit from inside the flow (or its tasks) instead."
                )
            pool = self._pool()
            self._pending.extend(items)
            start = max(0, min(self._workers + self._blocked_workers - self._drainers, len(self._pending)))
            self._drainers += start
        for _ in range(start):
            pool.submit(self._drain)

    def _blocked(self, delta: int) -> None:
        """A worker of this runner starts (+1) or stops (-1) waiting for another run: lend its slot meanwhile."""
        with self._lock:
            self._blocked_workers += delta
            start = 0
            if delta > 0 and self._pending and self._drainers < self._workers + self._blocked_workers:
                start = 1
                self._drainers += 1
            pool = self._executor
        if start and pool is not None:
            pool.submit(self._drain)

    def _drain(self) -> None:
        pending, lock = self._pending, self._lock
        _futures._worker.runner = self
        try:
            while True:
                with lock:
                    if not pending or self._drainers > self._workers + self._blocked_workers:
                        self._drainers -= 1
                        if self._drainers == 0 and not pending:
                            self._idle.notify_all()
                        return
                    context, task, task_run, parameters, wait_for, future = pending.popleft()
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    state = context.copy().run(_run_in_worker, task, task_run, parameters, wait_for)
                except BaseException as exc:  # KeyboardInterrupt in a worker: the future carries it
                    future.set_exception(exc)
                else:
                    future.set_result(state)
        finally:
            _futures._worker.runner = None

    def __exit__(self, *exc_info: object) -> None:
        with self._lock:
            self._closing = True
            while self._pending or self._drainers:
                self._idle.wait()
            self._closed = True
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


def _run_in_worker(task: Task[..., Any], task_run: Any, parameters: dict[str, Any], wait_for: Any) -> Any:
    from otelflow import engine

    if task.isasync:
        return asyncio.run(engine.run_task_async(task, parameters, task_run=task_run, wait_for=wait_for,
                                                 return_type="state"))
    return engine.run_task(task, parameters, task_run=task_run, wait_for=wait_for, return_type="state")

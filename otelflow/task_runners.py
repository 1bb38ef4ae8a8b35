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
import os
import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

from otelflow.futures import FutureList, TaskRunFuture
from otelflow.utilities.annotations import BaseAnnotation, allow_failure, quote, unmapped

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
            for index, call_params in enumerate(expand_map_parameters(task.name, parameters))
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


def expand_map_parameters(task_name: str, parameters: dict[str, Any]) -> list[dict[str, Any]]:
    """Split ``.map`` parameters into one parameter dict per mapped call.

    Iterable parameters are mapped over (all must have the same length); ``unmapped(...)`` values, strings
    and non-iterables are passed whole to every call. ``allow_failure``/``quote`` around an iterable
    are re-applied to each element, as Prefect does.
    """
    mapped: dict[str, list[Any]] = {}
    static: dict[str, Any] = {}
    annotations: dict[str, type[BaseAnnotation[Any]]] = {}
    for name, value in parameters.items():
        if isinstance(value, unmapped):
            static[name] = value.unwrap()
            continue
        inner = value
        if isinstance(value, allow_failure | quote):
            annotations[name] = type(value)
            inner = value.unwrap()
        if isinstance(inner, str | bytes | dict) or not isinstance(inner, Iterable):
            static[name] = value
            continue
        mapped[name] = list(inner)
    if not mapped:
        raise TypeError(
            f"{task_name}.map() needs at least one iterable argument to map over; "
            "got none (wrap constants in unmapped(...), pass lists/tuples to map over)."
        )
    lengths = {name: len(values) for name, values in mapped.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(
            f"{task_name}.map() received iterables of different lengths: {lengths}; "
            "wrap arguments that should be passed whole in unmapped(...)."
        )
    count = next(iter(lengths.values()))
    calls = []
    for index in range(count):
        call = dict(static)
        for name, values in mapped.items():
            element = values[index]
            annotation = annotations.get(name)
            call[name] = annotation(element) if annotation is not None else element
        calls.append(call)
    return calls


class ThreadPoolTaskRunner(TaskRunner):
    """Runs task runs in a thread pool (the default). Async tasks get an event loop in their worker.

    ``max_workers`` defaults to ``OTELFLOW_TASK_RUNNER_MAX_WORKERS`` or ``min(32, cpus + 4)``.

    Submitted runs wait in one FIFO queue; up to ``max_workers`` pool threads drain it. Compared with one
    executor job per run this halves the per-run overhead of ``.map`` (one queue operation instead of an
    executor work item, a semaphore and a thread wake-up per run) while keeping the same concurrency and
    the same order. Each run executes in its own copy of the submitting context.
    """

    def __init__(self, max_workers: int | None = None) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}.")
        self.max_workers = max_workers
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._pending: collections.deque[_WorkItem] = collections.deque()
        self._drainers = 0
        self._workers = 0

    def duplicate(self) -> Self:
        return type(self)(max_workers=self.max_workers)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            from otelflow.settings import get_settings

            workers = self.max_workers or get_settings().task_runner_max_workers or min(32, (os.cpu_count() or 1) + 4)
            self._workers = workers
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="otelflow-task"
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
        for index, call_params in enumerate(expand_map_parameters(task.name, parameters)):
            task_run = engine.new_task_run(task, index)
            future: concurrent.futures.Future[Any] = concurrent.futures.Future()
            items.append((context, task, task_run, call_params, wait_for, future))
            futures.append(TaskRunFuture(task_run, future))
        self._enqueue(items)
        return futures

    def _enqueue(self, items: list[_WorkItem]) -> None:
        with self._lock:
            pool = self._pool()
            self._pending.extend(items)
            start = min(self._workers - self._drainers, len(self._pending))
            self._drainers += max(0, start)
        for _ in range(start):
            pool.submit(self._drain)

    def _drain(self) -> None:
        pending, lock = self._pending, self._lock
        while True:
            with lock:
                if not pending:
                    self._drainers -= 1
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

    def __exit__(self, *exc_info: object) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)


_WorkItem = tuple[contextvars.Context, Any, Any, dict[str, Any], Any, "concurrent.futures.Future[Any]"]


def _run_in_worker(task: Task[..., Any], task_run: Any, parameters: dict[str, Any], wait_for: Any) -> Any:
    from otelflow import engine

    if task.isasync:
        return asyncio.run(engine.run_task_async(task, parameters, task_run=task_run, wait_for=wait_for,
                                                 return_type="state"))
    return engine.run_task(task, parameters, task_run=task_run, wait_for=wait_for, return_type="state")

"""Task runners: where submitted and mapped task runs execute.

The default, :class:`ThreadPoolTaskRunner`, runs each task run in a worker thread *inside a copy of the
submitting context* (``contextvars.copy_context()``): the OTel context (so the task span is a child of
the flow span), the run contexts and the tags all arrive in the worker. Losing context in thread pools
is the classic OTel-in-Python bug; here it cannot happen because nothing runs outside a copied context.

:class:`ProcessPoolTaskRunner` runs each task run in a worker process (``concurrent.futures.ProcessPoolExecutor``):
the context crosses as a ``serialize_context()`` carrier, not as objects (see :mod:`otelflow._internal.runs.remote`,
shared with the Dask runner, which lives in :mod:`otelflow.integrations.dask`).
"""

from __future__ import annotations

import abc
import asyncio
import collections
import concurrent.futures
import contextlib
import contextvars
import functools
import io
import multiprocessing
import os
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, Self

from otelflow import futures as _futures
from otelflow._internal.runs.remote import RemoteRun, RemoteRuns, RemoteTaskRunner, WorkOrder, run_on_worker
from otelflow.exceptions import MappingLengthMismatch, MappingMissingIterable
from otelflow.futures import FutureList, TaskRunFuture, collect_futures, resolve_inputs
from otelflow.states import State
from otelflow.utilities.annotations import BaseAnnotation, allow_failure, opaque, quote, unmapped

if TYPE_CHECKING:
    from otelflow.tasks import Task

__all__ = ["ProcessPoolTaskRunner", "TaskRunner", "ThreadPoolTaskRunner", "expand_map_parameters"]


class TaskRunner(abc.ABC):
    """Runs task runs submitted during a flow run. Entered for the duration of the flow run."""

    @property
    def name(self) -> str:
        """The runner's short name, as Prefect's: ``threadpool``, ``processpool``, ``dask``."""
        return type(self).__name__.lower().replace("taskrunner", "")

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
        import otelflow.engine as engine  # not "from otelflow import ...": that runs importlib code per call

        task_run = engine.new_task_run(task, map_index)
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        # The worker runs inside a copy of *this* context: OTel span, run contexts and tags included.
        self._enqueue([(contextvars.copy_context(), task, task_run, parameters, wait_for, future)])
        return TaskRunFuture(task_run, future)

    def map(
        self, task: Task[..., Any], parameters: dict[str, Any], wait_for: Iterable[Any] | None = None
    ) -> FutureList[Any]:
        import otelflow.engine as engine  # not "from otelflow import ...": that runs importlib code per call

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
    import otelflow.engine as engine  # (see submit)

    if task.isasync:
        return asyncio.run(engine.run_task_async(task, parameters, task_run=task_run, wait_for=wait_for,
                                                 return_type="state"))
    return engine.run_task(task, parameters, task_run=task_run, wait_for=wait_for, return_type="state")


# --- process pool -----------------------------------------------------------------------------------------

# The worker processes are spawned, never forked: the flow's process runs threads (telemetry export, the pending-span
# watcher, other task runs) whose locks a fork would copy in whatever state they are, and forked children would share
# the parent's OTel providers and open spool files. A spawned worker starts clean, imports the script as
# ``__mp_main__`` and builds its own telemetry from the environment. It is also the only start method on every OS
# (Prefect's ProcessPoolTaskRunner uses "spawn" for the same reasons).
_START_METHOD = "spawn"

_WORKER_DIED = (
    "Task run {name!r} crashed: a worker process of its ProcessPoolTaskRunner ended abruptly while the run was in the "
    "pool (killed by a signal or the OOM killer, or os._exit() was called). A broken pool cannot finish any run it "
    "holds: each ends Crashed, and runs submitted later go to a new pool"
)


class ProcessPoolTaskRunner(RemoteTaskRunner, TaskRunner):
    """Runs task runs in worker processes (a ``concurrent.futures.ProcessPoolExecutor``), as Prefect's runner.

    For CPU-bound tasks: each run executes in its own interpreter, in parallel with the others. At most
    ``max_workers`` runs execute at once (default ``OTELFLOW_TASK_RUNNER_PROCESS_POOL_MAX_WORKERS``, else the number
    of CPUs). ``initializer(*initargs)`` runs once in each worker process before its first task run (a picklable
    callable: set up ``sys.path``, your own OTel providers, ...).

    The task, its parameters (upstream futures replaced by their final states) and its return value cross with
    ``cloudpickle``; the run context crosses as a ``serialize_context()`` carrier: the task span is a child of the flow
    span in the same trace, its run logs correlate, and each worker exports its telemetry where the ``OTEL_*`` /
    ``OTELFLOW_*`` environment says (its own spool file by default), flushing it before each run returns. Retries and
    timeouts happen in the worker, as in the flow's process. A run waiting for upstream futures waits in the flow's
    process and holds no worker. An exception that would not unpickle comes back as a ``RuntimeError`` naming its type
    and message. A worker process that dies (``os._exit``, SIGKILL) ends the runs in the pool ``Crashed`` instead of
    hanging; later runs go to a new pool. The flow run's end waits for every run still in flight.

    Example::

        from otelflow import flow, task
        from otelflow.task_runners import ProcessPoolTaskRunner

        @task
        def heavy(n: int) -> int:
            return sum(i * i for i in range(n))

        @flow(task_runner=ProcessPoolTaskRunner(max_workers=4))
        def pipeline() -> list[int]:
            return heavy.map([10**6] * 8).result()

        if __name__ == "__main__":  # worker processes import this script: they must not run the flow again
            pipeline()
    """

    def __init__(
        self,
        max_workers: int | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        if max_workers is not None and max_workers < 0:
            raise ValueError(f"max_workers must be >= 1 (or None for the default), got {max_workers}.")
        # As Prefect: 0 or None means the setting, else the number of CPUs; resolved now, so duplicates agree.
        self._max_workers: int = max_workers or _process_pool_max_workers_setting() or multiprocessing.cpu_count()
        self._initializer = initializer
        self._initargs = tuple(initargs)
        self._started = False
        self._runs = RemoteRuns(self._dispatch, "its worker process", nested_runner=self.duplicate)
        self._start_lock = threading.Lock()
        # Everything below belongs to the dispatcher thread (started with the first run): no lock needed.
        self._events: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
        self._dispatcher: threading.Thread | None = None
        self._executor: concurrent.futures.ProcessPoolExecutor | None = None
        self._waiting: collections.deque[tuple[RemoteRun, WorkOrder]] = collections.deque()
        self._busy = 0

    @property
    def max_workers(self) -> int:
        """How many worker processes run task runs at once."""
        return self._max_workers

    def duplicate(self) -> Self:
        return type(self)(max_workers=self._max_workers, initializer=self._initializer, initargs=self._initargs)

    def __reduce__(self) -> tuple[Any, ...]:
        # Crosses to worker processes (for the submissions of a run there, as Prefect): as an unstarted runner.
        return (type(self), (self._max_workers, self._initializer, self._initargs))

    def __eq__(self, other: object) -> bool:
        """Runners with the same ``max_workers`` are equal (as Prefect's)."""
        if not isinstance(other, ProcessPoolTaskRunner):
            return False
        return self._max_workers == other._max_workers

    __hash__ = None  # type: ignore[assignment]  # equal by value, mutable: unhashable, as Prefect's

    def __enter__(self) -> Self:
        if self._started:
            raise RuntimeError("This task runner is already started; each flow run uses runner.duplicate().")
        try:
            import cloudpickle  # noqa: F401  (tasks defined in __main__ or a notebook cross by value)
        except ImportError as exc:  # pragma: no cover - a dependency of otelflow
            raise ImportError("ProcessPoolTaskRunner needs cloudpickle: pip install cloudpickle") from exc
        self._started = True
        return self

    def __exit__(self, *exc_info: object) -> None:
        # The flow span must outlive its task runs: wait for every run still waiting or running, then stop.
        self._started = False
        self._runs.wait()
        with self._start_lock:
            dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            self._events.put(("stop",))
            dispatcher.join()
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True)

    def _require_started(self, what: str) -> None:
        if self._started:
            return
        how = "use it as @flow(task_runner=ProcessPoolTaskRunner(...)) or inside `with runner:`."
        if what == "map":  # Prefect's two messages, each with what to do next
            raise RuntimeError(f"The task runner must be started before submitting work: {how}")
        raise RuntimeError(f"Task runner is not started: a ProcessPoolTaskRunner starts with its flow run; {how}")

    def _run_extra(self) -> dict[str, str]:
        return dict(os.environ)  # as it is at submission, for the worker (see _use_environment)

    # the dispatcher thread ----------------------------------------------------------------------------------

    def _dispatch(self, outgoing: list[tuple[RemoteRun, WorkOrder]]) -> None:
        """Any thread: runs whose upstream futures are done go to the dispatcher thread."""
        self._events.put(("send", outgoing))
        if self._dispatcher is None:
            with self._start_lock:
                if self._dispatcher is None:
                    self._dispatcher = threading.Thread(
                        target=self._dispatch_loop, name="otelflow-process-pool", daemon=True
                    )
                    self._dispatcher.start()

    def _dispatch_loop(self) -> None:
        """Keep at most ``max_workers`` runs in the executor, pickling each order as it goes in; turn answers into
        states.

        One thread does this, off the executor's own thread (whose callbacks should stay short) and off the flow's.
        The executor never holds more runs than it has workers: if a worker dies, the pool breaks and every run it
        holds fails, so the other runs wait here, where a new pool can take them.
        """
        events, waiting = self._events, self._waiting
        while True:
            event = events.get()
            if event[0] == "stop":
                return
            if event[0] == "send":
                waiting.extend(event[1])
            else:  # "done"
                _, run, order, executor, process_future = event
                self._busy -= 1
                if process_future.cancelled():  # dropped with a broken pool before it started: the next pool's
                    waiting.appendleft((run, order))
                else:
                    self._answer(run, process_future, executor)
            while waiting and self._busy < self._max_workers:
                self._start(*waiting.popleft())

    def _start(self, run: RemoteRun, order: WorkOrder) -> None:
        import cloudpickle

        try:
            payload = cloudpickle.dumps(order)
        except BaseException as exc:
            self._runs.crash(run, f"Could not send task run {run.name!r} to a worker process (the task and its "
                                  "parameters must be picklable with cloudpickle)", exc)
            return
        for _ in range(2):  # a pool found broken is replaced once; the run had not started there
            executor = self._pool()
            try:
                process_future = executor.submit(_run_in_process, payload, run.extra)
            except BrokenProcessPool:
                self._replace(executor)
                continue
            except BaseException as exc:
                self._runs.crash(run, f"Could not send task run {run.name!r} to a worker process", exc)
                return
            self._busy += 1
            process_future.add_done_callback(functools.partial(self._done, run, order, executor))
            return
        self._runs.crash(run, f"Could not send task run {run.name!r} to a worker process",
                         BrokenProcessPool("the new process pool broke too"))

    def _done(self, run: RemoteRun, order: WorkOrder, executor: concurrent.futures.ProcessPoolExecutor,
              process_future: concurrent.futures.Future[bytes]) -> None:
        self._events.put(("done", run, order, executor, process_future))

    def _answer(self, run: RemoteRun, process_future: concurrent.futures.Future[bytes],
                executor: concurrent.futures.ProcessPoolExecutor) -> None:
        import cloudpickle

        exc = process_future.exception()
        if exc is None:
            self._runs.complete(run, lambda: dict(cloudpickle.loads(process_future.result())))
        elif isinstance(exc, BrokenProcessPool):
            self._replace(executor)
            self._runs.crash(run, _WORKER_DIED.format(name=run.name), exc)
        else:  # raised by the worker outside the engine's care (an interrupt, a payload it could not unpickle)
            self._runs.crash(run, f"Task run {run.name!r} crashed in its worker process", exc)

    def _pool(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ProcessPoolExecutor(
                max_workers=self._max_workers,
                mp_context=multiprocessing.get_context(_START_METHOD),
                initializer=_start_worker,
                initargs=(self._initializer, self._initargs),
            )
        return self._executor

    def _replace(self, executor: concurrent.futures.ProcessPoolExecutor) -> None:
        """Drop a broken pool (its processes are gone or being stopped); the next run starts a new one."""
        if self._executor is executor:
            self._executor = None
            executor.shutdown(wait=False, cancel_futures=True)


def _process_pool_max_workers_setting() -> int | None:
    """The setting ``OTELFLOW_TASK_RUNNER_PROCESS_POOL_MAX_WORKERS`` (Prefect's ``..._PROCESS_POOL_MAX_WORKERS``)."""
    from otelflow.settings import get_current_settings

    return get_current_settings().task_runner_process_pool_max_workers


# --- in the worker process ---------------------------------------------------------------------------------


def _start_worker(initializer: Callable[..., object] | None, initargs: tuple[Any, ...]) -> None:
    """Once per worker process, before its first run: watch the flow's process, then the user's ``initializer``."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with_parent, args=(parent.sentinel,), name="otelflow-parent-watch",
                         daemon=True).start()
    if initializer is not None:
        initializer(*initargs)


def _exit_with_parent(sentinel: int) -> None:
    """End this worker when the flow's process is gone (SIGKILL, OOM killer).

    Pool workers hold both ends of their call queue, so a dead parent never closes it: they would wait for work
    forever (and so would the workers of a pool that a task run in this one had started).
    """
    import multiprocessing.connection

    multiprocessing.connection.wait([sentinel])
    from otelflow import telemetry

    with contextlib.suppress(Exception):
        telemetry.flush(1.0)  # what this worker recorded so far; nobody will take the answer of a run in progress
    os._exit(1)


def _run_in_process(payload: bytes, environment: dict[str, str]) -> bytes:
    """One task run in a worker process: its answer (see ``remote_runs.encode_state``), pickled."""
    import cloudpickle

    restore = _use_environment(environment)
    try:
        order: WorkOrder = cloudpickle.loads(payload)
        answer = run_on_worker(order)
    finally:
        restore()
    try:
        return bytes(cloudpickle.dumps(answer))
    except Exception as exc:
        # The run ended here, but what it returned cannot cross back: the flow side gets a Crashed run saying why.
        message = (f"Task run {order.task_run_name!r} ended {answer['name']} in its worker process, but its result "
                   f"could not be sent back ({type(exc).__name__}: {exc}). Return a value cloudpickle can serialize.")
        return bytes(cloudpickle.dumps({**answer, "type": "CRASHED", "name": "Crashed", "message": message,
                                        "data": RuntimeError(message)}))


def _use_environment(environment: dict[str, str]) -> Callable[[], None]:
    """Apply the flow process's environment as it was at submission; return the step that restores this worker's.

    As Prefect: a worker inherits the environment when it starts, yet a variable the flow set later still reaches
    the run, and what one run changes does not leak into the next one on this worker.
    """
    before = os.environ.copy()
    changed = {name: value for name, value in environment.items() if before.get(name) != value}
    if changed:
        os.environ.update(changed)
        _settings_changed()

    def restore() -> None:
        if os.environ != before:
            os.environ.clear()
            os.environ.update(before)
            _settings_changed()

    return restore


def _settings_changed() -> None:
    from otelflow.settings import reset_settings

    reset_settings()  # otelflow's settings are read from the environment once, then cached

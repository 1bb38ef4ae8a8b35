"""``DaskTaskRunner``: run a flow's submitted and mapped task runs on a Dask cluster (extra ``otelflow[dask]``).

Example::

    from otelflow import flow, task
    from otelflow.integrations.dask import DaskTaskRunner

    @task
    def square(x: int) -> int:
        return x * x

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1}))
    def squares() -> list[int]:
        return square.map(range(8)).result()

What crosses to a worker, per task run: the task object (Dask ships the user's function with cloudpickle,
as it does for any function), its parameters with upstream futures already resolved on the flow side,
the run identity (task run id, name, map index) and the run context as the ``serialize_context()``
header dict. Context objects are never pickled: on the worker the carrier is hydrated, so the task span
is a child of the submitting span (the flow span) in the same trace and ``get_run_logger()`` records
correlate with the flow run. Workers configure telemetry from their own ``OTEL_*`` environment (a
``LocalCluster``'s workers inherit the flow process's), and flush it before returning each run
(``flush_telemetry=True``, the default), so no span is lost when the cluster shuts down right after the
flow; see docs/propagation.md for what that costs per task.

What comes back: a plain dict (state type, name, message, attempts, result or exception) turned into the
final :class:`~otelflow.states.State` of the returned :class:`~otelflow.futures.TaskRunFuture`. An exception
that cannot be unpickled on the flow side is replaced by a ``RuntimeError`` carrying its type and message.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Self

from otelflow import engine, telemetry
from otelflow.context import FlowRunContext, TaskRun, hydrated_context, serialize_context
from otelflow.exceptions import UpstreamTaskError
from otelflow.futures import FutureList, TaskRunFuture, _visit, contains_futures, resolve_inputs
from otelflow.states import Crashed, State, StateType
from otelflow.task_runners import TaskRunner, expand_map_parameters
from otelflow.utilities.annotations import BaseAnnotation, quote

if TYPE_CHECKING:
    from distributed import Client

    from otelflow.tasks import Task

__all__ = ["DaskTaskRunner"]

_MAX_DEPTH = 32  # as futures.resolve_inputs: deeper structures are passed as they are
_FLUSH_TIMEOUT_S = 10.0


class DaskTaskRunner(TaskRunner):
    """Runs task runs on Dask: a cluster you pass, a scheduler ``address``, or a new ``LocalCluster``.

    - ``cluster``: a ``distributed`` cluster object (``LocalCluster``, ``SSHCluster``, a dask-jobqueue or
      dask-kubernetes cluster...); used, never closed.
    - ``address``: a running scheduler (``"tcp://10.0.0.5:8786"``); connected to, never closed.
    - neither: a ``distributed.LocalCluster(**cluster_kwargs)`` is started when the flow run starts and
      closed when it ends (worker processes by default; ``{"processes": False}`` for threads).
    - ``client_kwargs``: passed to ``distributed.Client``.
    - ``flush_telemetry``: each worker exports its telemetry before a task run returns (default True).
      Turn it off for many tiny tasks on long-lived workers; spans then leave on the worker's batch
      schedule and can be lost if a worker is killed.

    Each flow run gets its own client (the runner is duplicated per flow run); ``.map`` sends all runs to
    the scheduler in one batch when they do not wait for upstream futures.
    """

    def __init__(
        self,
        cluster: Any = None,
        address: str | None = None,
        cluster_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        *,
        flush_telemetry: bool = True,
    ) -> None:
        if cluster is not None and address is not None:
            raise ValueError("DaskTaskRunner takes a cluster or an address, not both; pass one of them.")
        if cluster_kwargs and (cluster is not None or address is not None):
            raise ValueError("cluster_kwargs configure the LocalCluster DaskTaskRunner starts itself; "
                             "drop them when passing cluster= or address=.")
        self.cluster = cluster
        self.address = address
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.client_kwargs = dict(client_kwargs or {})
        self.flush_telemetry = flush_telemetry
        self._client: Client | None = None
        self._own_cluster: Any = None
        self._lock = threading.Lock()
        self._in_flight: set[concurrent.futures.Future[Any]] = set()
        self._dask_futures: dict[str, Any] = {}  # key -> dask Future: Dask forgets results nobody holds

    def duplicate(self) -> Self:
        return type(self)(
            cluster=self.cluster,
            address=self.address,
            cluster_kwargs=self.cluster_kwargs,
            client_kwargs=self.client_kwargs,
            flush_telemetry=self.flush_telemetry,
        )

    @property
    def client(self) -> Client:
        """The ``distributed.Client`` of the current flow run (only while the runner is entered)."""
        if self._client is None:
            raise RuntimeError(
                "DaskTaskRunner is not started: it starts when its flow run starts; use it as "
                "@flow(task_runner=DaskTaskRunner(...)) or inside `with runner:`."
            )
        return self._client

    def __enter__(self) -> Self:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("DaskTaskRunner needs Dask: pip install 'otelflow[dask]'.") from exc
        if self._client is not None:
            raise RuntimeError("DaskTaskRunner is already started; each flow run uses runner.duplicate().")
        if self.address is not None:
            self._client = Client(self.address, **self.client_kwargs)
        elif self.cluster is not None:
            self._client = Client(self.cluster, **self.client_kwargs)
        else:
            self._own_cluster = LocalCluster(**self.cluster_kwargs)
            try:
                self._client = Client(self._own_cluster, **self.client_kwargs)
            except BaseException:
                self._own_cluster.close()
                self._own_cluster = None
                raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        # The flow span must outlive its task runs: wait for every run still in flight, as the thread pool does.
        with self._lock:
            in_flight = list(self._in_flight)
        concurrent.futures.wait(in_flight)
        client, self._client = self._client, None
        cluster, self._own_cluster = self._own_cluster, None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    # submitting ---------------------------------------------------------------------------------------

    def submit(
        self,
        task: Task[..., Any],
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        map_index: int | None = None,
    ) -> TaskRunFuture[Any]:
        run = self._new_run(task, parameters, wait_for, map_index, serialize_context(), contextvars.copy_context())
        self._schedule([run])
        return run.future

    def map(
        self, task: Task[..., Any], parameters: dict[str, Any], wait_for: Iterable[Any] | None = None
    ) -> FutureList[Any]:
        carrier, context = serialize_context(), contextvars.copy_context()  # the same for every mapped run
        runs = [
            self._new_run(task, call_params, wait_for, index, carrier, context)
            for index, call_params in enumerate(expand_map_parameters(task, parameters))
        ]
        self._schedule(runs)
        return FutureList(run.future for run in runs)

    def _new_run(
        self,
        task: Task[..., Any],
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None,
        map_index: int | None,
        carrier: dict[str, str],
        context: contextvars.Context,
    ) -> _DaskRun:
        self.client  # noqa: B018 - fail at submit time, with the message, when the runner is not started
        outer: concurrent.futures.Future[Any] = concurrent.futures.Future()
        task_run = engine.new_task_run(task, map_index)
        run = _DaskRun(task, task_run, parameters, list(wait_for) if wait_for else None, carrier, context, outer)
        with self._lock:
            self._in_flight.add(outer)
        outer.add_done_callback(self._forget)
        return run

    def _forget(self, outer: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(outer)

    def _schedule(self, runs: list[_DaskRun]) -> None:
        """Send the runs whose upstream futures are done; the others when their last upstream finishes."""
        ready: list[_DaskRun] = []
        for run in runs:
            upstream = [f for f in _upstream_futures(run.parameters, run.wait_for) if not f.done()]
            if not upstream:
                ready.append(run)
                continue
            remaining = [len(upstream)]
            lock = threading.Lock()

            def upstream_done(_: object, run: _DaskRun = run, remaining: list[int] = remaining,
                              lock: threading.Lock = lock) -> None:
                with lock:
                    remaining[0] -= 1
                    last = remaining[0] == 0
                if last:
                    self._send([run])

            for future in upstream:
                future.add_done_callback(upstream_done)
        if ready:
            self._send(ready)

    def _send(self, runs: list[_DaskRun]) -> None:
        """Resolve inputs (all upstream futures are done) and hand the runs to the scheduler."""
        outgoing: list[tuple[_DaskRun, dict[str, Any]]] = []
        for run in runs:
            try:
                if run.wait_for:
                    resolve_inputs(run.wait_for)
                parameters = {
                    name: _resolve_keeping_quotes(value) if contains_futures(value) else value
                    for name, value in run.parameters.items()
                }
            except UpstreamTaskError:
                # Not ready: the engine records the NotReady run (a span in the flow's trace; the user's
                # code does not run), exactly as the thread pool runner would, and nothing goes to Dask.
                self._finish_locally(run)
                continue
            except BaseException as exc:
                self._finish(run, Crashed(exc, f"Could not resolve the inputs of task run {run.task_run.name!r}: "
                                               f"{type(exc).__name__}: {exc}"))
                continue
            outgoing.append((run, parameters))
        if not outgoing:
            return
        client = self.client
        worker_fn = functools.partial(_run_on_worker, flush=self.flush_telemetry)
        keys = [f"{run.task.name}-{run.task_run.id.hex}" for run, _ in outgoing]
        try:
            dask_futures = client.map(
                worker_fn,
                [run.task for run, _ in outgoing],
                [parameters for _, parameters in outgoing],
                [run.carrier for run, _ in outgoing],
                [str(run.task_run.id) for run, _ in outgoing],
                [run.task_run.name for run, _ in outgoing],
                [run.task_run.map_index for run, _ in outgoing],
                key=keys,
                pure=False,
            )
        except BaseException as exc:
            for run, _ in outgoing:
                self._finish(run, Crashed(exc, f"Could not send task run {run.task_run.name!r} to Dask: "
                                               f"{type(exc).__name__}: {exc}"))
            return
        with self._lock:
            self._dask_futures.update(zip(keys, dask_futures, strict=True))
        for (run, _), key, dask_future in zip(outgoing, keys, dask_futures, strict=True):
            dask_future.add_done_callback(functools.partial(self._complete, run, key))

    def _complete(self, run: _DaskRun, key: str, dask_future: Any) -> None:
        """Dask callback thread: turn the worker's answer into the run's final State."""
        try:
            state, run.task_run.run_count = _decode_state(dask_future.result())
        except BaseException as exc:
            state = Crashed(exc, f"Task run {run.task_run.name!r} did not come back from Dask: "
                                 f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._dask_futures.pop(key, None)
        self._finish(run, state)

    def _finish_locally(self, run: _DaskRun) -> None:
        try:
            state = run.context.copy().run(
                engine.run_task, run.task, run.parameters, task_run=run.task_run, wait_for=run.wait_for,
                return_type="state",
            )
        except BaseException as exc:
            state = Crashed(exc, f"Task run {run.task_run.name!r} crashed: {type(exc).__name__}: {exc}")
        self._finish(run, state)

    @staticmethod
    def _finish(run: _DaskRun, state: State[Any]) -> None:
        run.task_run.state = state
        if not run.future._future.done():
            run.future._future.set_result(state)


class _DaskRun:
    """One task run on its way to Dask (flow side)."""

    __slots__ = ("carrier", "context", "future", "parameters", "task", "task_run", "wait_for")

    def __init__(
        self,
        task: Task[..., Any],
        task_run: TaskRun,
        parameters: dict[str, Any],
        wait_for: list[Any] | None,
        carrier: dict[str, str],
        context: contextvars.Context,
        outer: concurrent.futures.Future[Any],
    ) -> None:
        self.task = task
        self.task_run = task_run
        self.parameters = parameters
        self.wait_for = wait_for
        self.carrier = carrier
        self.context = context  # only for a NotReady run recorded locally
        self.future: TaskRunFuture[Any] = TaskRunFuture(task_run, outer)


def _upstream_futures(parameters: dict[str, Any], wait_for: list[Any] | None) -> list[TaskRunFuture[Any]]:
    """The futures a run waits for: in ``wait_for`` and in its parameters (not inside ``quote``)."""
    found: list[TaskRunFuture[Any]] = []

    def collect(value: Any, depth: int) -> None:
        if isinstance(value, TaskRunFuture):
            found.append(value)
        elif isinstance(value, quote) or depth > _MAX_DEPTH or isinstance(value, str | bytes):
            return
        elif isinstance(value, BaseAnnotation):
            collect(value.unwrap(), depth + 1)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                collect(item, depth + 1)
        elif isinstance(value, dict):
            for item in value.values():
                collect(item, depth + 1)

    for value in parameters.values():
        if contains_futures(value):
            collect(value, 0)
    if wait_for:
        collect(wait_for, 0)
    return found


def _resolve_keeping_quotes(value: Any) -> Any:
    """``resolve_inputs`` on the flow side, leaving ``quote(...)`` wrappers for the worker's engine to unwrap.

    Unwrapping a quote here would let the worker's engine traverse (and resolve) what the user quoted.
    """
    return _visit(value, lambda item: item if isinstance(item, quote) else resolve_inputs(item))


# --- the worker side --------------------------------------------------------------------------------------


def _run_on_worker(
    task: Task[..., Any],
    parameters: dict[str, Any],
    carrier: dict[str, str],
    task_run_id: str,
    task_run_name: str,
    map_index: int | None,
    *,
    flush: bool = True,
) -> dict[str, Any]:
    """Run one task run on a Dask worker inside the flow's hydrated context; return its state as a dict."""
    telemetry.configure()  # from this worker's OTEL_* environment (once per process)
    try:
        with hydrated_context(carrier):
            flow_ctx = FlowRunContext.get()
            flow_run = flow_ctx.flow_run if flow_ctx is not None else None
            task_run = TaskRun(
                id=uuid.UUID(task_run_id),
                name=task_run_name,
                task_name=task.name,
                flow_run_id=flow_run.id if flow_run is not None else None,
                map_index=map_index,
            )
            if task.isasync:
                # asyncio.run copies this context into its task: the hydrated context comes along.
                state = asyncio.run(engine.run_task_async(task, parameters, task_run=task_run, return_type="state"))
            else:
                state = engine.run_task(task, parameters, task_run=task_run, return_type="state")
    finally:
        if flush:
            # Workers may be stopped right after the flow ends; their batch processors would not get to
            # export. One flush per task run: see docs/propagation.md for the cost.
            telemetry.flush(_FLUSH_TIMEOUT_S)
    return _encode_state(state, task_run.run_count)


def _encode_state(state: State[Any], attempts: int) -> dict[str, Any]:
    data = state.data
    if isinstance(data, BaseException):
        import cloudpickle  # a Dask dependency, present on every worker

        try:
            cloudpickle.loads(cloudpickle.dumps(data))
        except Exception:
            # Exceptions with required constructor arguments pickle but do not unpickle: keep what they say.
            data = RuntimeError(f"{type(data).__name__}: {data}")
    return {
        "type": state.type.value,
        "name": state.name,
        "message": state.message,
        "data": data,
        "attempts": attempts,
    }


def _decode_state(encoded: dict[str, Any]) -> tuple[State[Any], int]:
    """The final State and the number of attempts, from :func:`_encode_state`'s dict."""
    state: State[Any] = State(StateType(encoded["type"]), encoded["name"], encoded["message"], encoded["data"])
    return state, int(encoded.get("attempts") or 0)

"""Task runs that execute in another process: what crosses to the worker, and how the final state comes back.

Shared by the runners whose task runs leave the flow's process (:class:`~otelflow.task_runners.ProcessPoolTaskRunner`,
:class:`~otelflow.integrations.dask.DaskTaskRunner`). Each runner only says how a batch of
:class:`WorkOrder` objects reaches its workers and hands the answers back to :meth:`RemoteRuns.complete`.

Flow side (:class:`RemoteRuns`): a submitted run waits, in the flow's process, until every upstream future in its
parameters and ``wait_for`` is done (no worker slot is held meanwhile). Those futures are then replaced by their
final :class:`~otelflow.states.State` objects, annotations (``allow_failure``, ``quote``, ``opaque``) kept, and the
order goes out with the run identity and the run context as the ``serialize_context()`` header dict. Context objects
never cross: the worker's engine resolves the States by its usual rules (so a failed upstream gives ``NotReady``
there, and the task span links to the spans that produced its inputs), exactly as in the flow's process.

Worker side (:func:`run_on_worker`): the carrier is hydrated, so the task span is a child of the submitting span
(the flow span) in the same trace and ``get_run_logger()`` records correlate with the flow run; telemetry is built
from the worker's own ``OTEL_*`` environment and flushed before the run returns (worker processes may be stopped
without running ``atexit`` hooks). What comes back is a plain dict (:func:`encode_state`) rather than a pickled
State, so that a worker and a flow process need only agree on this small format.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import sys
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

from otelflow import telemetry
from otelflow.context import FlowRunContext, TaskRun, hydrated_context, serialize_context
from otelflow.futures import FutureList, TaskRunFuture, contains_futures, resolve_futures_to_states, upstream_futures
from otelflow.states import Crashed, State, StateDetails, StateType

if TYPE_CHECKING:
    from otelflow.task_runners import TaskRunner
    from otelflow.tasks import Task

__all__ = [
    "FLUSH_TIMEOUT_S",
    "RemoteRun",
    "RemoteRuns",
    "RemoteTaskRunner",
    "WorkOrder",
    "decode_state",
    "encode_state",
    "run_on_worker",
    "safe_exception",
]

FLUSH_TIMEOUT_S = 10.0
"""Longest a worker waits for its telemetry to be exported before returning a run."""


@dataclasses.dataclass(slots=True)
class WorkOrder:
    """Everything one task run needs on its worker (pickled with the task; no context object inside)."""

    task: Task[..., Any]
    parameters: dict[str, Any]  # upstream futures replaced by their final States
    wait_for: list[Any] | None  # likewise
    carrier: dict[str, str]  # serialize_context() where the run was submitted
    task_run_id: str
    task_run_name: str
    map_index: int | None
    # The submitting flow run's log_prints, which the hydrated (remote) flow run context cannot know.
    log_prints: bool = False
    # An unstarted runner for the task runs this run submits itself: as Prefect, a duplicate of the flow's runner,
    # entered on the worker for the run. None: submitting from the task run is refused there.
    task_runner: TaskRunner | None = None
    # For a task that caches: the submitting flow run's result options and parameters, and the key of the transaction
    # it was submitted in ("transaction" present: the cache entry is written when that transaction commits).
    results: dict[str, Any] | None = None


@dataclasses.dataclass(slots=True, eq=False)
class RemoteRun:
    """One task run on its way to a worker (flow side). ``extra`` is the runner's own per-run data."""

    task: Task[..., Any]
    task_run: TaskRun
    parameters: dict[str, Any]
    wait_for: list[Any] | None
    carrier: dict[str, str]
    log_prints: bool
    extra: Any
    results: dict[str, Any] | None = None  # see WorkOrder.results
    txn: Any = None  # the transaction the run was submitted in: it stages the result and owns the cache write
    future: TaskRunFuture[Any] = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.future = TaskRunFuture(self.task_run, concurrent.futures.Future())

    @property
    def name(self) -> str:
        """The task run's name (for messages)."""
        return self.task_run.name

    def upstream(self) -> list[TaskRunFuture[Any]]:
        """The futures this run waits for: in ``wait_for`` and in its parameters, where the engine resolves them."""
        found = [f for value in self.parameters.values() if contains_futures(value) for f in upstream_futures(value)]
        if self.wait_for:
            found.extend(upstream_futures(self.wait_for))
        return found

    def order(self, task_runner: TaskRunner | None = None) -> WorkOrder:
        """The work order, once every upstream future is done: futures become their final States."""
        parameters = {
            name: resolve_futures_to_states(value) if contains_futures(value) else value
            for name, value in self.parameters.items()
        }
        wait_for = resolve_futures_to_states(self.wait_for) if self.wait_for else None
        return WorkOrder(
            task=self.task,
            parameters=parameters,
            wait_for=wait_for,
            carrier=self.carrier,
            task_run_id=self.task_run.id_str,
            task_run_name=self.task_run.name,
            map_index=self.task_run.map_index,
            log_prints=self.log_prints,
            task_runner=task_runner,
            results=self.results,
        )


Dispatch = Callable[[list[tuple[RemoteRun, WorkOrder]]], None]


class RemoteRuns:
    """The flow side of a runner whose task runs execute elsewhere.

    ``dispatch([(run, order), ...])`` is called with runs whose upstream futures are all done, in the thread that
    made them ready (the submitting thread, or the one that finished their last upstream run); it sends the orders
    on, and the runner later calls :meth:`complete` (or :meth:`crash`) once per run. ``where`` names the workers in
    messages; ``nested_runner()``, if given, makes the runner each order carries for the submissions of its run.
    """

    def __init__(self, dispatch: Dispatch, where: str, nested_runner: Callable[[], TaskRunner] | None = None) -> None:
        self._dispatch = dispatch
        self._where = where
        self._nested_runner = nested_runner
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight: set[concurrent.futures.Future[Any]] = set()

    def submit(
        self,
        task: Task[..., Any],
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None,
        map_index: int | None,
        extra: Any = None,
    ) -> TaskRunFuture[Any]:
        """Start one task run: sent as soon as its upstream futures are done. Returns its future at once."""
        run = self._new_run(task, parameters, wait_for, map_index, serialize_context(), _log_prints(), extra)
        self._schedule([run])
        return run.future

    def map(
        self,
        task: Task[..., Any],
        calls: list[dict[str, Any]],
        wait_for: Iterable[Any] | None,
        extra: Any = None,
    ) -> FutureList[Any]:
        """Start one task run per parameter dict of ``calls`` (``map_index`` is the position); return their futures."""
        carrier, log_prints = serialize_context(), _log_prints()  # the same for every mapped run
        wait_list = list(wait_for) if wait_for else None
        runs = [
            self._new_run(task, call, wait_list, index, carrier, log_prints, extra) for index, call in enumerate(calls)
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
        log_prints: bool,
        extra: Any,
    ) -> RemoteRun:
        from otelflow import engine  # the engine imports the task runners, which import this module

        wait_list = wait_for if wait_for is None or isinstance(wait_for, list) else list(wait_for)
        run = RemoteRun(task, engine.new_task_run(task, map_index), parameters, wait_list or None, carrier,
                        log_prints, extra, *_submission_context(task))
        outer = run.future.wrapped_future
        with self._lock:
            self._in_flight.add(outer)
        outer.add_done_callback(self._forget)
        return run

    def _forget(self, outer: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(outer)
            if not self._in_flight:
                self._idle.notify_all()

    def wait(self) -> None:
        """Block until every run submitted so far (and any submitted meanwhile) has its final state."""
        with self._lock:
            while self._in_flight:
                self._idle.wait()

    def _schedule(self, runs: list[RemoteRun]) -> None:
        """Dispatch the runs whose upstream futures are done; each other one when its last upstream finishes."""
        ready: list[RemoteRun] = []
        for run in runs:
            upstream = [f for f in run.upstream() if not f.done()]
            if not upstream:
                ready.append(run)
                continue
            remaining = [len(upstream)]
            lock = threading.Lock()

            def upstream_done(_: object, run: RemoteRun = run, remaining: list[int] = remaining,
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

    def _send(self, runs: list[RemoteRun]) -> None:
        outgoing: list[tuple[RemoteRun, WorkOrder]] = []
        for run in runs:
            try:
                outgoing.append((run, run.order(self._nested_runner() if self._nested_runner is not None else None)))
            except BaseException as exc:
                self.crash(run, f"Could not prepare the inputs of task run {run.name!r}", exc)
        if not outgoing:
            return
        try:
            self._dispatch(outgoing)
        except BaseException as exc:
            for run, _ in outgoing:
                self.crash(run, f"Could not send task run {run.name!r} to {self._where}", exc)

    def complete(self, run: RemoteRun, answer: Callable[[], dict[str, Any]]) -> None:
        """Finish ``run`` with the state in the worker's answer; ``answer()`` raising means it did not come back."""
        try:
            encoded = answer()
            state, attempts = decode_state(encoded)
        except BaseException as exc:
            self.crash(run, f"Task run {run.name!r} did not come back from {self._where}", exc)
            return
        run.task_run.run_count = attempts
        if run.txn is not None:
            _hand_to_transaction(run, state, encoded)
        self._finish(run, state)

    def crash(self, run: RemoteRun, what: str, exc: BaseException) -> None:
        """Finish ``run`` Crashed: ``what`` happened, because of ``exc`` (the state's data)."""
        message = f"{what}: {type(exc).__name__}: {exc}"
        details = StateDetails(run.task_run.flow_run_id, run.task_run.id)
        self._finish(run, Crashed(data=exc, message=message, state_details=details))

    @staticmethod
    def _finish(run: RemoteRun, state: State[Any]) -> None:
        run.task_run.state = state
        outer = run.future.wrapped_future
        if not outer.done():
            outer.set_result(state)


class RemoteTaskRunner:
    """``submit`` and ``map`` of a :class:`~otelflow.task_runners.TaskRunner` whose runs go through a
    :class:`RemoteRuns` (``self._runs``): mixed in before ``TaskRunner``.

    ``_require_started(what)`` raises, with the runner's message, when ``what`` (``"submit"`` or ``"map"``) is not
    possible now; ``_run_extra()`` is the per-run data the runner's dispatch needs (see :attr:`RemoteRun.extra`).
    """

    _runs: RemoteRuns

    def _require_started(self, what: str) -> None:
        raise NotImplementedError

    def _run_extra(self) -> Any:
        return None

    def submit(
        self,
        task: Task[..., Any],
        parameters: dict[str, Any],
        wait_for: Iterable[Any] | None = None,
        map_index: int | None = None,
    ) -> TaskRunFuture[Any]:
        """Start one task run on a worker (once its upstream futures are done); return its future at once."""
        self._require_started("submit")
        return self._runs.submit(task, parameters, wait_for, map_index, self._run_extra())

    def map(self, task: Task[..., Any], parameters: dict[str, Any], wait_for: Iterable[Any] | None = None
            ) -> FutureList[Any]:
        """One task run per element of the iterable parameters (Prefect's mapping rules), each on a worker."""
        from otelflow.task_runners import expand_map_parameters

        self._require_started("map")
        return self._runs.map(task, expand_map_parameters(task, parameters), wait_for, self._run_extra())


def _submission_context(task: Task[..., Any]) -> tuple[dict[str, Any] | None, Any]:
    """What a remote run of ``task`` needs from where it was submitted: its flow run's result options (for a task
    that caches and persists), and the current transaction."""
    txn_module = sys.modules.get("otelflow.transactions")
    txn = txn_module.get_transaction() if txn_module is not None else None
    plan = task._cache_plan
    flow_ctx = FlowRunContext.get()
    if not plan.may_cache or not plan.persists(flow_ctx):
        return None, txn
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    results: dict[str, Any] = {
        "persist": True,
        "storage": getattr(flow_run, "result_storage", None),
        "serializer": getattr(flow_run, "result_serializer", None),
        "flow_parameters": dict(flow_ctx.parameters) if flow_ctx is not None else {},
    }
    if txn is not None:
        results["transaction"] = txn.key
    return results, txn


def _hand_to_transaction(run: RemoteRun, state: State[Any], encoded: dict[str, Any]) -> None:
    """A remote run submitted inside a transaction: the transaction stages its result (and its commit / rollback
    hooks) and writes its cache entry when it commits, as for a run in the flow's process."""
    from otelflow._internal.runs.caching import write_pending
    from otelflow.logging import get_logger

    txn = run.txn
    if state.type is StateType.COMPLETED:
        txn.task_completed(run.task, run.task_run, state._result(raise_on_failure=False))
    pending = encoded.get("cache_write")
    if pending is not None:
        logger = get_logger("task_runs")
        txn._defer(lambda: write_pending(pending, lambda: logger, None), lambda: None)


class _WorkerTransaction:
    """On a worker, the transaction a run was submitted in (which stays in the flow's process): it takes the run's
    cache write, which goes back with the run's state for the real transaction to do when it commits."""

    _closed = False
    _parent = None

    def __init__(self, key: str | None) -> None:
        self.key = key
        self.pending: Any = None

    def task_begin(self, task: Any, task_run: Any) -> tuple[bool, Any]:
        return False, None  # the flow's transaction decides on replays

    def task_completed(self, task: Any, task_run: Any, result: Any) -> None:
        pass  # staged by the flow's transaction when the state comes back

    def _defer(self, commit_step: Callable[[], None], rollback_step: Callable[[], None], pending: Any = None) -> None:
        self.pending = pending
        rollback_step()  # releases the key's lock here; the flow's transaction writes the entry


def _log_prints() -> bool:
    flow_ctx = FlowRunContext.get()
    return flow_ctx is not None and flow_ctx.log_prints


# --- the worker side --------------------------------------------------------------------------------------


def run_on_worker(order: WorkOrder, *, flush: bool = True) -> dict[str, Any]:
    """Run one task run on a worker inside the flow's hydrated context; return its final state as a dict."""
    from otelflow import engine

    telemetry.configure()  # from this worker's OTEL_* environment (once per process)
    try:
        with hydrated_context(order.carrier), contextlib.ExitStack() as stack:
            flow_ctx = FlowRunContext.get()
            flow_run = flow_ctx.flow_run if flow_ctx is not None else None
            results = order.results
            worker_txn: _WorkerTransaction | None = None
            if flow_ctx is not None and (order.log_prints or order.task_runner is not None or results is not None):
                runner = stack.enter_context(order.task_runner) if order.task_runner is not None else None
                update: dict[str, Any] = {"log_prints": order.log_prints, "task_runner": runner}
                if results is not None and flow_run is not None:
                    # The task caches: it persists as its flow run does, with its flow's storage and parameters.
                    flow_run = dataclasses.replace(flow_run, persist_result=True, result_storage=results["storage"],
                                                   result_serializer=results["serializer"])
                    update["flow_run"] = flow_run
                    update["parameters"] = results["flow_parameters"]
                stack.enter_context(flow_ctx.model_copy(update=update))
            if results is not None and "transaction" in results:
                from otelflow.transactions import Transaction

                worker_txn = _WorkerTransaction(results["transaction"])
                token = Transaction.__var__.set(worker_txn)
                stack.callback(Transaction.__var__.reset, token)
            task_run = TaskRun(
                id=uuid.UUID(order.task_run_id),
                name=order.task_run_name,
                task_name=order.task.name,
                flow_run_id=flow_run.id if flow_run is not None else None,
                map_index=order.map_index,
            )
            task, parameters, wait_for = order.task, order.parameters, order.wait_for
            if task.isasync:
                # asyncio.run copies this context into its task: the hydrated context comes along.
                state = asyncio.run(engine.run_task_async(task, parameters, task_run=task_run, wait_for=wait_for,
                                                          return_type="state"))
            else:
                state = engine.run_task(task, parameters, task_run=task_run, wait_for=wait_for, return_type="state")
    finally:
        if flush:
            # Workers may be stopped right after the flow ends, and pool processes exit without atexit hooks:
            # their batch processors would not get to export. One flush per task run.
            telemetry.flush(FLUSH_TIMEOUT_S)
    answer = encode_state(state, task_run.run_count)
    if worker_txn is not None and worker_txn.pending is not None:
        answer["cache_write"] = worker_txn.pending
    return answer


def safe_exception(exc: BaseException) -> BaseException:
    """``exc``, or a ``RuntimeError`` with its type and message if it would not unpickle on the other side.

    Exceptions whose constructor takes other arguments than the message pickle but do not unpickle.
    """
    import cloudpickle

    try:
        cloudpickle.loads(cloudpickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def encode_state(state: State[Any], attempts: int) -> dict[str, Any]:
    """The final state as a plain dict (plus the run's attempts and the span downstream runs link to)."""
    data = state.data
    if isinstance(data, BaseException):
        data = safe_exception(data)
    details = state.state_details
    span = state._span_context
    return {
        "type": state.type.value,
        "name": state.name,
        "message": state.message,
        "data": data,
        "attempts": attempts,
        "timestamp": state.timestamp.timestamp(),
        "flow_run_id": str(details.flow_run_id) if details.flow_run_id else None,
        "task_run_id": str(details.task_run_id) if details.task_run_id else None,
        "span": (span.trace_id, span.span_id, int(span.trace_flags)) if span is not None else None,
    }


def decode_state(encoded: dict[str, Any]) -> tuple[State[Any], int]:
    """The final State and the number of attempts, from :func:`encode_state`'s dict."""
    import datetime

    flow_run_id, task_run_id = encoded.get("flow_run_id"), encoded.get("task_run_id")
    timestamp = encoded.get("timestamp")
    state: State[Any] = State(
        StateType(encoded["type"]),
        encoded["name"],
        encoded["message"],
        encoded["data"],
        state_details=StateDetails(uuid.UUID(flow_run_id) if flow_run_id else None,
                                   uuid.UUID(task_run_id) if task_run_id else None),
        timestamp=datetime.datetime.fromtimestamp(timestamp, datetime.UTC) if timestamp is not None else None,
    )
    span = encoded.get("span")
    if span is not None:
        trace_id, span_id, flags = span
        # Downstream runs (on any worker) link their span to this one, as they would in the flow's process.
        state._span_context = trace.SpanContext(trace_id, span_id, is_remote=True, trace_flags=trace.TraceFlags(flags))
    return state, int(encoded.get("attempts") or 0)

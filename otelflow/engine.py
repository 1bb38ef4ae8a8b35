"""The run engine: runs one flow or task run as one OpenTelemetry span.

One state machine serves flows and tasks, sync and async: :class:`_Run` knows how a run begins
(span, contexts, inputs), how an attempt fails (retry or not), how it succeeds and how it ends
(state, span status/attributes/events, metrics). Two thin drivers (:func:`_drive_sync`,
:func:`_drive_async`) call the user's function in between; they are the only sync/async twins.

Retries: a run is ONE span however many attempts it takes. Each failed attempt that will be retried adds
a ``Retrying`` span event (attempt number, exception type and message, delay); only the final failure is
recorded as the span's exception event and ERROR status. ``otelflow.run.attempt`` says how many
attempts ran. In Jaeger a retried task is one bar whose log shows each retry, and its run logs all
correlate with that one span.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from otelflow import semconv, telemetry
from otelflow._internal.params import parameter_attributes
from otelflow.context import FlowRun, FlowRunContext, TagsContext, TaskRun, TaskRunContext
from otelflow.exceptions import FlowRunTimeoutError, TaskRunTimeoutError, UpstreamTaskError
from otelflow.futures import contains_futures, resolve_futures_to_results, resolve_inputs
from otelflow.settings import get_settings
from otelflow.states import (
    Cancelled,
    Completed,
    Crashed,
    Failed,
    Pending,
    Retrying,
    Running,
    State,
    StateType,
    TimedOut,
)

if TYPE_CHECKING:
    from otelflow.flows import Flow
    from otelflow.tasks import Task

__all__ = ["new_flow_run", "new_task_run", "run_flow", "run_flow_async", "run_task", "run_task_async"]

ReturnType = Literal["result", "state"]

_ADJECTIVES = (
    "amber", "brave", "calm", "crimson", "daring", "eager", "fuzzy", "gentle", "golden", "happy", "icy",
    "jolly", "keen", "lively", "mellow", "nimble", "olive", "proud", "quiet", "rapid", "silver", "tidy",
    "vivid", "witty", "zealous",
)
_ANIMALS = (
    "albatross", "badger", "cheetah", "dolphin", "eagle", "falcon", "gecko", "heron", "ibex", "jackal",
    "koala", "lemur", "marmot", "narwhal", "otter", "panda", "quail", "raven", "salamander", "tapir",
    "urchin", "viper", "walrus", "yak", "zebra",
)


# Run ids and names come from a private generator seeded from the OS, not from the `random` module's global
# state: a pipeline that calls random.seed(7) must not get the same run ids on every run. Re-seeded after
# fork so that parent and child never produce the same ids. (uuid.uuid4() would do, at 3x the cost.)
_rng = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))


def _run_id() -> uuid.UUID:
    return uuid.UUID(int=_rng.getrandbits(128) & _UUID4_MASK | _UUID4_BITS)


_UUID4_MASK = ~(0xF000 << 64 | 0xC000 << 48) & ((1 << 128) - 1)
_UUID4_BITS = 0x4000 << 64 | 0x8000 << 48


def _flow_run_name() -> str:
    return f"{_rng.choice(_ADJECTIVES)}-{_rng.choice(_ANIMALS)}"


def new_task_run(task: Task[..., Any], map_index: int | None = None) -> TaskRun:
    """A fresh task run record (id, name, map index) before the run starts."""
    flow_ctx = FlowRunContext.get()
    return TaskRun(
        id=_run_id(),
        name=f"{task.name}-{_rng.getrandbits(12):03x}" if task.task_run_name is None else task.task_run_name,
        task_name=task.name,
        flow_run_id=flow_ctx.flow_run.id if flow_ctx is not None and flow_ctx.flow_run is not None else None,
        map_index=map_index,
    )


def new_flow_run(flow: Flow[..., Any], parameters: dict[str, Any]) -> FlowRun:
    """A fresh flow run record before the run starts."""
    name = flow.flow_run_name
    if name is None:
        name = _flow_run_name()
    elif callable(name):
        name = name()
    else:
        name = name.format(**parameters)
    return FlowRun(id=_run_id(), name=str(name), flow_name=flow.name, parameters=parameters)


# --- the shared state machine ----------------------------------------------------------------------------


class _Run:
    """One flow or task run: begin -> attempts -> end, recorded as one span."""

    __slots__ = (
        "attempt_started",
        "call",
        "ctx_tokens",
        "final",
        "kind",
        "obj",
        "parameters",
        "reraise",
        "run",
        "span",
        "start",
        "task_runner",
        "wait_for",
    )

    def __init__(
        self,
        kind: Literal["flow", "task"],
        obj: Flow[..., Any] | Task[..., Any],
        parameters: dict[str, Any],
        run: FlowRun | TaskRun,
        wait_for: Iterable[Any] | None = None,
    ) -> None:
        self.kind = kind
        self.obj = obj
        self.parameters = parameters
        self.run = run
        self.wait_for = wait_for
        self.final: State[Any] | None = None
        self.reraise: BaseException | None = None
        self.ctx_tokens: list[Callable[[], None]] = []
        self.task_runner: Any = None
        self.span: trace.Span = trace.INVALID_SPAN
        self.start = 0.0

    # begin ---------------------------------------------------------------------------------------------
    def begin(self) -> bool:
        """Start the span and enter the run's contexts. False if the run cannot start (upstream failed)."""
        if self.kind == "task":
            # Wait for upstream futures before the span starts: the span measures the run, not the queue.
            try:
                self._resolve_inputs()
            except UpstreamTaskError as exc:
                self.final = Pending(str(exc), name="NotReady")
        self.start = time.perf_counter()
        obj, run = self.obj, self.run
        current_tags = TagsContext.get().current_tags
        run_tags = sorted(current_tags.union(obj.tags)) if (current_tags or obj.tags) else []
        run.tags = run_tags
        flow_ctx = FlowRunContext.get()
        attrs = dict(obj.static_attributes)
        attrs[semconv.RUN_ID] = str(run.id)
        attrs[semconv.RUN_NAME] = run.name
        if self.kind == "task":
            task_run: TaskRun = run  # type: ignore[assignment]
            if task_run.flow_run_id is not None:
                attrs[semconv.FLOW_RUN_ID] = str(task_run.flow_run_id)
                if flow_ctx is not None and flow_ctx.flow_run is not None:
                    attrs[semconv.FLOW_NAME] = flow_ctx.flow_run.flow_name
            if task_run.map_index is not None:
                attrs[semconv.TASK_MAP_INDEX] = task_run.map_index
        else:
            attrs[semconv.FLOW_RUN_ID] = attrs[semconv.RUN_ID]
            attrs[semconv.FLOW_RUN_NAME] = run.name
        if run_tags:
            attrs[semconv.TAGS] = run_tags
        if self.parameters:
            settings = get_settings()
            attrs.update(
                parameter_attributes(
                    self.parameters,
                    settings.record_parameter_values,
                    settings.parameter_value_max_length,
                    settings.redact_patterns,
                )
            )
        span = telemetry.get_tracer().start_span(obj.span_name, attributes=attrs)
        self.span = span

        token = otel_context.attach(trace.set_span_in_context(span))
        self.ctx_tokens.append(lambda: otel_context.detach(token))
        if self.kind == "task":
            ctx: Any = TaskRunContext(task=obj, task_run=run, parameters=self.parameters, span=span)  # type: ignore[arg-type]
            ctx.__enter__()
            self.ctx_tokens.append(ctx.__exit__)
        else:
            self.task_runner = obj.task_runner.duplicate()  # type: ignore[union-attr]
            self.task_runner.__enter__()
            ctx = FlowRunContext(
                flow=obj, flow_run=run, parameters=self.parameters, task_runner=self.task_runner, span=span  # type: ignore[arg-type]
            )
            ctx.__enter__()
            # Exits run last-in first-out: the task runner waits for runs still in flight, then the final
            # state is logged (still inside the flow run's context, so the record correlates), then the
            # context is left.
            self.ctx_tokens.append(ctx.__exit__)
            self.ctx_tokens.append(self._log_final)
            self.ctx_tokens.append(self._exit_task_runner)
            _run_logger().info("Beginning flow run %r for flow %r", run.name, obj.name)
        if run_tags and self.kind == "flow":
            tags_ctx = TagsContext(current_tags.union(run_tags))
            tags_ctx.__enter__()
            self.ctx_tokens.append(tags_ctx.__exit__)
        if obj.log_prints:
            from otelflow.logging import print_as_log

            cm = print_as_log()
            cm.__enter__()
            self.ctx_tokens.append(lambda: cm.__exit__(None, None, None))

        return self.final is None

    def _exit_task_runner(self) -> None:
        self.task_runner.__exit__(None, None, None)

    def _log_final(self) -> None:
        final = self.final
        if final is None:
            return
        level = logging.INFO if final.is_completed() else logging.ERROR
        _run_logger().log(level, "Finished in state %r", final)

    def _resolve_inputs(self) -> None:
        if self.wait_for:
            resolve_inputs(list(self.wait_for))
        params = self.parameters
        for name, value in params.items():
            if contains_futures(value):
                params[name] = resolve_inputs(value)

    # attempts -------------------------------------------------------------------------------------------
    def begin_attempt(self) -> None:
        """Count the attempt; the first enters Running (retries entered Retrying when they failed)."""
        self.run.run_count += 1
        if self.run.run_count == 1:
            self.run.state = Running()
            if self.span.is_recording():
                self.span.add_event("Running")

    def call_args(self) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Arguments to call the user's function with."""
        return self.obj.binder.call_args(self.parameters)

    def handle_exception(self, exc: BaseException) -> float | None:
        """Classify a failed attempt: return the retry delay, or None when the run is over."""
        timeout_types = (TaskRunTimeoutError, FlowRunTimeoutError)
        if isinstance(exc, KeyboardInterrupt | GeneratorExit):
            self.final = Crashed(exc, f"Run was interrupted by {type(exc).__name__}.")
            self.reraise = exc
            return None
        if isinstance(exc, SystemExit | asyncio.CancelledError):
            self.final = Cancelled(exc, f"Run was cancelled by {type(exc).__name__}.")
            self.reraise = exc
            return None
        if not isinstance(exc, Exception):
            self.final = Crashed(exc, f"Run crashed: {type(exc).__name__}: {exc}")
            self.reraise = exc
            return None
        retries = self.obj.retries
        attempt = self.run.run_count
        kind = self.kind.title()
        if attempt <= retries and self._should_retry(exc):
            delay = self.obj.retry_delay_for(attempt)
            _run_logger().warning(
                "%s run failed with exception: %r - Retry %d/%d will start %g second(s) from now",
                kind, exc, attempt, retries, delay,
            )
            self.run.state = Retrying(f"{type(exc).__name__}: {exc}")
            if self.span.is_recording():
                self.span.add_event(
                    semconv.EVENT_RETRY,
                    {
                        semconv.RUN_ATTEMPT: attempt + 1,
                        semconv.EXCEPTION_TYPE: type(exc).__name__,
                        semconv.EXCEPTION_MESSAGE: str(exc)[:4096],
                        semconv.EVENT_ATTR_DELAY: delay,
                    },
                )
            return delay
        if isinstance(exc, timeout_types):
            self.final = TimedOut(exc, str(exc))
        else:
            self.final = Failed(exc, f"{type(exc).__name__}: {exc}")
        if self.kind == "task":
            # The task's own failure, with its traceback, in the task's logs (Loki: filter on ERROR to find it).
            _run_logger().error(
                "Task run failed with exception: %r%s", exc, " - Retries are exhausted" if retries else "",
                exc_info=(type(exc), exc, exc.__traceback__),
            )
        return None

    def _should_retry(self, exc: BaseException) -> bool:
        condition = getattr(self.obj, "retry_condition_fn", None)
        if condition is None:
            return True
        try:
            return bool(condition(self.obj, self.run, Failed(exc)))
        except Exception:
            return False

    def handle_success(self, result: Any) -> None:
        """Turn the function's return value into the final state."""
        if isinstance(result, State):
            self.final = result
            return
        if self.kind == "flow":
            resolved, bad = resolve_futures_to_results(result)
            if bad:
                first = next((s for s in bad if isinstance(s.data, BaseException)), None)
                data = first.data if first is not None else UpstreamTaskError(bad[0].message or bad[0].name)
                self.final = Failed(data, f"{len(bad)} returned task run(s) did not complete: "
                                    f"{', '.join(sorted({s.name for s in bad}))}.")
                return
            result = resolved
        self.final = Completed(result)

    # end ------------------------------------------------------------------------------------------------
    def end(self) -> State[Any]:
        """Record the final state on the span, end it, leave the contexts, record metrics."""
        final = self.final if self.final is not None else Crashed(None, "Run ended without a final state.")
        error: BaseException | None = None
        try:
            # Leaving the flow's task runner waits for runs still in flight, so the flow span outlives them.
            while self.ctx_tokens:
                self.ctx_tokens.pop()()
        except BaseException as exc:  # pragma: no cover - a context exit failing is a bug; keep the span honest
            error = exc
        self.run.state = final
        span = self.span
        if span.is_recording():
            span.set_attributes({semconv.RUN_STATE: final.name, semconv.RUN_ATTEMPT: max(1, self.run.run_count)})
            if final.type is not StateType.COMPLETED and final.type is not StateType.PENDING:
                exc = final.data if isinstance(final.data, BaseException) else None
                if exc is not None:
                    span.set_attribute(semconv.ERROR_TYPE, type(exc).__name__)
                    span.record_exception(exc)
                else:
                    span.set_attribute(semconv.ERROR_TYPE, final.name)
                span.set_status(Status(StatusCode.ERROR, final.message or final.name))
            span.add_event(final.name)
        span.end()
        instruments = telemetry.run_instruments()
        if instruments is not None:
            attrs = {semconv.RUN_TYPE: self.kind, semconv.RUN_STATE: final.name}
            if self.kind == "task":
                attrs[semconv.TASK_NAME] = self.obj.name
                flow_ctx = FlowRunContext.get()
                if flow_ctx is not None and flow_ctx.flow_run is not None:
                    attrs[semconv.FLOW_NAME] = flow_ctx.flow_run.flow_name
            else:
                attrs[semconv.FLOW_NAME] = self.obj.name
            instruments.duration.record(time.perf_counter() - self.start, attrs)
            instruments.runs.add(1, attrs)
        self.final = final
        if error is not None:
            raise error
        return final


# --- timeouts -----------------------------------------------------------------------------------------


@contextlib.contextmanager
def _sync_timeout(seconds: float | None, exc_type: type[TimeoutError], what: str) -> Iterator[None]:
    """Interrupt the block after ``seconds``.

    In the main thread with no other SIGALRM user, a real-time signal interrupts even blocking calls.
    Elsewhere, the exception is injected into the thread (``PyThreadState_SetAsyncExc``), which takes effect
    at the next Python bytecode: a blocking C call finishes first. This is Prefect's approach too.
    """
    if seconds is None:
        yield
        return
    message = f"{what} exceeded its timeout of {seconds:g} seconds."

    def raise_timeout(*_: object) -> None:
        raise exc_type(message)

    if (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
        and signal.getitimer(signal.ITIMER_REAL)[0] == 0
    ):
        previous = signal.signal(signal.SIGALRM, raise_timeout)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            yield
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        return

    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def inject() -> None:
        with lock:
            if state["done"]:
                return
            state["fired"] = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))

    timer = threading.Timer(seconds, inject)
    timer.daemon = True
    timer.start()
    try:
        yield
    except exc_type as exc:
        # An injected exception arrives without arguments; give it the message that says what happened.
        if not exc.args:
            raise exc_type(message) from None
        raise
    finally:
        with lock:
            state["done"] = True
            timer.cancel()
            if state["fired"]:
                # Fired but not yet raised (the block ended first): withdraw it so it cannot go off later.
                ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), None)


def _timeout_type(kind: str) -> type[TimeoutError]:
    return TaskRunTimeoutError if kind == "task" else FlowRunTimeoutError


# --- drivers (the only sync/async twins) ----------------------------------------------------------------


def _drive_sync(run: _Run) -> State[Any]:
    if run.begin():
        what = f"{run.kind.title()} run {run.run.name!r}"
        exc_type = _timeout_type(run.kind)
        fn = run.obj.fn
        while True:
            run.begin_attempt()
            try:
                args, kwargs = run.call_args()
                with _sync_timeout(run.obj.timeout_seconds, exc_type, what):
                    result = fn(*args, **kwargs)
            except BaseException as exc:
                delay = run.handle_exception(exc)
                if delay is None:
                    break
                if delay > 0:
                    time.sleep(delay)
                continue
            try:
                run.handle_success(result)
            except BaseException as exc:
                # The function ran; turning its value into a state failed. No retry: the run is over.
                if run.handle_exception(exc) is not None:
                    run.final = Failed(exc, f"{type(exc).__name__}: {exc}")
            break
    state = run.end()
    if run.reraise is not None:
        raise run.reraise
    return state


async def _drive_async(run: _Run) -> State[Any]:
    if run.begin():
        what = f"{run.kind.title()} run {run.run.name!r}"
        exc_type = _timeout_type(run.kind)
        fn: Callable[..., Awaitable[Any]] = run.obj.fn
        timeout = run.obj.timeout_seconds
        while True:
            run.begin_attempt()
            try:
                args, kwargs = run.call_args()
                try:
                    async with asyncio.timeout(timeout):
                        result = await fn(*args, **kwargs)
                except TimeoutError as exc:
                    if timeout is not None and not isinstance(exc, exc_type):
                        raise exc_type(f"{what} exceeded its timeout of {timeout:g} seconds.") from exc
                    raise
            except BaseException as exc:
                delay = run.handle_exception(exc)
                if delay is None:
                    break
                if delay > 0:
                    await asyncio.sleep(delay)
                continue
            try:
                run.handle_success(result)
            except BaseException as exc:
                # The function ran; turning its value into a state failed. No retry: the run is over.
                if run.handle_exception(exc) is not None:
                    run.final = Failed(exc, f"{type(exc).__name__}: {exc}")
            break
    state = run.end()
    if run.reraise is not None:
        raise run.reraise
    return state


class _Silent:
    """Stands in for the run logger when OTELFLOW_LOG_RUN_EVENTS is off."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = error = log


_SILENT = _Silent()


def _run_logger() -> Any:
    if not get_settings().log_run_events:
        return _SILENT
    from otelflow.logging import get_run_logger

    return get_run_logger()


def _unwrap(state: State[Any], return_type: ReturnType) -> Any:
    if return_type == "state":
        return state
    if state.is_pending():
        # NotReady: the task never ran because an upstream failed; say so rather than "no result yet".
        raise UpstreamTaskError(state.message or "An upstream task run did not complete.")
    return state.result()


def run_task(
    task: Task[..., Any],
    parameters: dict[str, Any],
    *,
    task_run: TaskRun | None = None,
    wait_for: Iterable[Any] | None = None,
    return_type: ReturnType = "result",
) -> Any:
    """Run a sync task in this thread; return its result (or final state)."""
    run = _Run("task", task, parameters, task_run or new_task_run(task), wait_for)
    return _unwrap(_drive_sync(run), return_type)


async def run_task_async(
    task: Task[..., Any],
    parameters: dict[str, Any],
    *,
    task_run: TaskRun | None = None,
    wait_for: Iterable[Any] | None = None,
    return_type: ReturnType = "result",
) -> Any:
    """Run an async task on the running event loop; return its result (or final state)."""
    run = _Run("task", task, parameters, task_run or new_task_run(task), wait_for)
    return _unwrap(await _drive_async(run), return_type)


def run_flow(flow: Flow[..., Any], parameters: dict[str, Any], *, return_type: ReturnType = "result") -> Any:
    """Run a sync flow in this thread; return its result (or final state)."""
    run = _Run("flow", flow, parameters, new_flow_run(flow, parameters))
    return _unwrap(_drive_sync(run), return_type)


async def run_flow_async(
    flow: Flow[..., Any], parameters: dict[str, Any], *, return_type: ReturnType = "result"
) -> Any:
    """Run an async flow on the running event loop; return its result (or final state)."""
    run = _Run("flow", flow, parameters, new_flow_run(flow, parameters))
    return _unwrap(await _drive_async(run), return_type)

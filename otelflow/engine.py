"""The run engine: runs one flow or task run as one OpenTelemetry span.

One state machine serves flows and tasks, sync and async: :meth:`_Run.lifecycle` is a generator that
knows how a run is prepared (upstream futures, parameter validation), begins (span, contexts), attempts
(retries, timeouts), ends (final state from the return value, span status, contexts restored). Whenever it
needs the outside world it *yields a step* -- call the user's function, wait for futures, sleep before a
retry, run a blocking call, await a coroutine -- and one of two small drivers performs it: blocking
(:func:`_drive_sync`) or awaiting (:func:`_drive_async`, which never blocks its event loop). The drivers
are the only sync/async twins.

Semantics follow Prefect 3 (see :mod:`otelflow.states` for how a return value becomes the final state).
Retries: a run is ONE span however many attempts it takes; each retry adds a ``Retrying`` event (attempt,
exception type and message, delay), only the final failure is the span's exception event and ERROR status.

Every change a run makes to the process (OTel context, run contexts, tags, print capture, the flow's task
runner) is recorded with its undo step as soon as it is made; the undo steps all run when the run ends,
even if one of them fails, so a run can never leave its span current or its contexts behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import inspect
import logging
import os
import random
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import AsyncGenerator, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Status, StatusCode

from otelflow import semconv, telemetry
from otelflow._internal.export.limits import get_limits
from otelflow._internal.runs import signals as _signals
from otelflow._internal.runs.caching import MISS as _MISS
from otelflow._internal.runs.caching import CacheRun, persist_flow_result
from otelflow._internal.runs.params import add_parameter_types, parameter_attributes
from otelflow._internal.runs.redact import exported_message, exported_stacktrace
from otelflow.context import (
    _FLOW_RUN_VAR,
    _TAGS_VAR,
    FlowRun,
    FlowRunContext,
    TagsContext,
    TaskRun,
    TaskRunContext,
)
from otelflow.exceptions import (
    FlowPauseTimeout,
    FlowRunTimeoutError,
    TaskRunTimeoutError,
    TerminationSignal,
    UpstreamTaskError,
)
from otelflow.futures import Link as InputLink
from otelflow.futures import (
    blocking_wait,
    collect_futures,
    contains_futures,
    resolve_futures_to_states,
    resolve_inputs,
)
from otelflow.logging.loggers import _log_prints, get_run_logger, log_run_line
from otelflow.settings import get_current_settings, get_settings
from otelflow.states import (
    Crashed,
    Failed,
    Pending,
    Retrying,
    State,
    StateDetails,
    StateType,
    return_value_to_state,
)

if TYPE_CHECKING:
    from types import FrameType

    from otelflow.flows import Flow
    from otelflow.tasks import Task

__all__ = [
    "new_flow_run", "new_task_run", "run_flow", "run_flow_async", "run_generator", "run_task", "run_task_async",
]

ReturnType = Literal["result", "state"]

# Run ids come from a private generator seeded from the OS, not from the `random` module's global state: a
# pipeline that calls random.seed(7) must not get the same run ids on every run. Re-seeded after fork so that
# parent and child never produce the same ids. (uuid.uuid4() would do, at 3x the cost.)
_rng = random.Random(os.urandom(32))
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _rng.seed(os.urandom(32)))

_UUID4_MASK = ~(0xF000 << 64 | 0xC000 << 48) & ((1 << 128) - 1)
_UUID4_BITS = 0x4000 << 64 | 0x8000 << 48


def _run_id() -> uuid.UUID:
    # uuid.UUID(int=...) validates its argument on every call; this value is a valid version-4 id by construction.
    run_id = object.__new__(uuid.UUID)
    object.__setattr__(run_id, "int", _rng.getrandbits(128) & _UUID4_MASK | _UUID4_BITS)
    object.__setattr__(run_id, "is_safe", uuid.SafeUUID.unknown)
    return run_id


def _flow_run_name() -> str:
    # Prefect's generator: two-word slugs from coolname's large word lists ("crimson-jaguar").
    from coolname import generate_slug

    return str(generate_slug(2))


def new_task_run(task: Task[..., Any], map_index: int | None = None) -> TaskRun:
    """A fresh task run record (id, default name, map index) before the run starts."""
    flow_ctx = _FLOW_RUN_VAR.get(None)
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    if flow_run is None:  # outside a flow Prefect names the run after the task, with no suffix
        return TaskRun(id=_run_id(), name=task.name, task_name=task.name, map_index=map_index)
    return TaskRun(
        id=_run_id(), name=f"{task.name}-{_rng.getrandbits(12):03x}", task_name=task.name,
        flow_run_id=flow_run.id, map_index=map_index, flow_run_id_str=flow_run.id_str, flow_name=flow_run.flow_name,
    )


def new_flow_run(flow: Flow[..., Any], parameters: dict[str, Any]) -> FlowRun:
    """A fresh flow run record before the run starts (its name is resolved when it starts)."""
    return FlowRun(id=_run_id(), name="", flow_name=flow.name, parameters=parameters)


def _custom_run_name(option: Any, parameters: dict[str, Any], what: str) -> str:
    """``flow_run_name`` / ``task_run_name``: a template over the parameters, or a callable (Prefect's rules)."""
    if callable(option):
        import inspect

        try:
            takes_parameters = "parameters" in inspect.signature(option).parameters
        except (TypeError, ValueError):
            takes_parameters = False
        name = option(parameters=parameters) if takes_parameters else option()
        if not isinstance(name, str):
            raise TypeError(
                f"Callable {option} for {what!r} returned type {type(name).__name__} but a string is required."
            )
        return name
    return str(option.format(**parameters))


# --- steps the lifecycle asks its driver to perform -------------------------------------------------------
_CALL, _WAIT, _SLEEP, _BLOCKING, _AWAIT = range(5)
Step = tuple[int, Any]
_CALL_STEP: Step = (_CALL, None)

_NOTSET: Any = object()
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
# ``extra`` of a line for the console only, not exported (Prefect's ``send_to_api=False``).
_CONSOLE_ONLY: Final = {"send_to_api": False}
_NO_TAGS: frozenset[str] = frozenset()

_CRASH_MESSAGES: tuple[tuple[type[BaseException], str], ...] = (
    (KeyboardInterrupt, "Execution was aborted by an interrupt signal."),
    (TerminationSignal, "Execution was aborted by a termination signal."),
    (SystemExit, "Execution was aborted by Python system exit call."),
    (asyncio.CancelledError, "Execution was cancelled by the runtime environment."),
)


def _format_exception(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _safe_str(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # a broken __str__ must not break the run's record
        return "<unprintable>"


def _hook_name(hook: Any) -> str:
    # Prefect's rule: the function's name, a partial's function's name, else the class name.
    name = getattr(hook, "__name__", None)
    if name is None:
        name = hook.func.__name__ if isinstance(hook, functools.partial) else type(hook).__name__
    return str(name)


class _Run:
    """One flow or task run: prepare -> begin -> attempts -> end, recorded as one span.

    A run object is made per run: what most runs leave at its default is a class attribute, so ``__init__`` sets
    only what every run has.
    """

    final: State[Any] | None = None
    reraise: BaseException | None = None  # crashes: re-raised to the caller whatever it asked for
    raised: BaseException | None = None  # the user's exception: raised by result-returning calls
    return_value: Any = _NOTSET
    links: list[InputLink] = []
    task_runner: Any = None
    runner_open = False
    span: trace.Span = trace.INVALID_SPAN
    start_ns = 0
    txn: Any = None
    attrs: dict[str, Any]
    pending_sent = False
    retry_declined = False  # the retry_condition_fn said no
    invalid: BaseException | None = None  # why a flow's parameters did not validate
    otel_token: Any = None  # the token of the OTel context made current for the run
    run_ctx: Any = None  # the flow/task run context entered for the run
    cache: Any = None  # the run's cache work (a CacheRun) when its task caches and persists results
    forked = False  # this process is a fork of the one running the run (os.fork() in its body): the run is the parent's

    def __init__(
        self,
        kind: Literal["flow", "task"],
        obj: Flow[..., Any] | Task[..., Any],
        parameters: dict[str, Any],
        run: FlowRun | TaskRun,
        wait_for: Iterable[Any] | None = None,
    ) -> None:
        self.kind = kind
        self.obj: Any = obj
        self.parameters = parameters
        self.run: Any = run
        self.wait_for = list(wait_for) if wait_for else None

    # the state machine -----------------------------------------------------------------------------------
    def lifecycle(self) -> Generator[Step, Any, State[Any]]:
        undo: list[Callable[[], object]] = []
        try:
            inputs = self._inputs()
            if inputs is not None:
                yield from self._resolve(inputs)
            if self.kind == "flow" or self.obj.task_run_name is not None or not self.run.name:
                self._settle()
            self._begin(undo)
            run, obj = self.run, self.obj
            if self.kind == "task" and run.tags and self.final is None and _limited_tags(run.tags):
                # Tag concurrency limits (`otelflow concurrency-limit create TAG N`), as Prefect: one slot per limited
                # tag, held for the whole run; waiting happens off the event loop and is an event on the span.
                yield (_BLOCKING, functools.partial(self._take_tag_slots, undo))
            while self.final is None:  # attempts: the first, then one per retry
                run.run_count += 1
                # Each attempt is a state of its own: a hook or a caller holding it never sees another run's.
                state = run.state = State(StateType.RUNNING) if run.run_count == 1 else Retrying()  # = Running()
                run.start_time = state.timestamp  # an aware UTC datetime
                if obj.on_running_hooks:
                    yield from self._call_hooks("on_running", obj.on_running_hooks, state)
                if self.kind == "flow":
                    self._log_beginning()  # after the Running hooks, and again for each attempt, as Prefect does
                try:
                    cached = _MISS
                    if self.cache is not None:
                        # A SERIALIZABLE key may wait for its lock: off the event loop in async runs (the holder may
                        # be a coroutine on the same loop).
                        cached = ((yield (_BLOCKING, self._look_up)) if self.cache.plan.serializable
                                  else self._look_up())
                    result = (yield _CALL_STEP) if cached is _MISS else cached
                except Exception as exc:
                    if self.forked:
                        raise  # to the handler below, which leaves the run to its process
                    outcome: Any = exc
                else:
                    if self.forked:  # the body returned in a forked child
                        return self._leave_in_fork(undo, result)
                    if type(result) in _SCALARS:
                        # The common case, fast: a plain value is a Completed state (nothing to resolve or
                        # aggregate).
                        self.return_value = result
                        self.final = State(StateType.COMPLETED, data=result)
                        if self.txn is not None:
                            self.txn.task_completed(self.obj, run, result)
                        break
                    if self.kind == "task" and isinstance(result, State) and result.is_failed():
                        outcome = result  # Prefect retries a task that *returns* a failed state, too
                    else:
                        try:
                            yield from self._succeed(result)
                        except Exception as exc:
                            # The function ran; turning its value into a state failed. No retry: the run is over.
                            self._fail(exc)
                        break
                delay = yield from self._retry_delay(outcome)
                if delay is None:
                    self._fail(outcome)
                elif delay > 0:
                    yield (_SLEEP, delay)
            committed = True
            if (self.kind == "task" and obj.on_commit_hooks and self.txn is None and self.final is not None
                    and self.final.type is StateType.COMPLETED and (self.cache is None or not self.cache.hit)):
                # Prefect commits every task run's own transaction: its on_commit hooks run with no enclosing one
                # too, before its record is written (a hook that fails rolls it back: nothing is cached).
                committed = _commit_alone(obj, self.cache.key if self.cache is not None else None)
            if self.cache is not None:
                self.cache.finish(self.final if committed else None, run)
            if self.kind == "flow" and run.persist_result:
                persist_flow_result(obj, self.final, self.span, _run_logger())
            if self.runner_open:
                # Wait for task runs still in flight (off the event loop in async flows): the flow span
                # outlives them, and the final state below accounts for them.
                yield (_BLOCKING, self._close_task_runner)
        except BaseException as exc:
            if self.forked:  # the body raised (sys.exit() included) in a forked child
                return self._leave_in_fork(undo, None, exc)
            self._crash(exc)
        final = self._settle_final()
        task_or_flow = self.obj
        hooks = (self._final_hooks(final) if (task_or_flow.on_completion_hooks or task_or_flow.on_failure_hooks
                                              or self.kind == "flow") else None)
        if hooks is not None:
            try:
                yield from self._call_hooks(hooks[0], hooks[1], final)
            except BaseException as exc:  # an interrupt while a hook ran: the run's state stands, the caller sees it
                self.reraise = self.reraise or exc
        self._end(undo)
        return final

    def _final_hooks(self, final: State[Any]) -> tuple[str, list[Any]] | None:
        """The hooks the final state calls (Prefect's order of checks), or None."""
        obj = self.obj
        if final.type is StateType.FAILED:
            option, hooks = "on_failure", obj.on_failure_hooks
        elif final.type is StateType.COMPLETED:
            option, hooks = "on_completion", obj.on_completion_hooks
        elif self.kind == "flow" and final.type is StateType.CRASHED:
            option, hooks = "on_crashed", obj.on_crashed_hooks
        elif self.kind == "flow" and final.type is StateType.CANCELLED:
            option, hooks = "on_cancellation", obj.on_cancellation_hooks
        else:
            return None
        return (option, hooks) if hooks else None

    def _call_hooks(self, option: str, hooks: list[Any], state: State[Any]) -> Generator[Step, Any, None]:
        """Call each hook as Prefect does: logged before and after, an exception logged and never raised.

        Each call is a ``hook`` event on the run's span (which hook, for which state, how it ended).
        """
        logger = _run_logger()
        span = self.span
        for hook in list(hooks):
            name = _hook_name(hook)
            logger.info("Running hook %r in response to entering state %r", name, state.name)
            event: dict[str, Any] = {semconv.HOOK_NAME: name, semconv.HOOK_KIND: option, semconv.HOOK_STATE: state.name}
            try:
                result = hook(self.obj, self.run, state)
                if inspect.isawaitable(result):
                    yield (_AWAIT, result)
            except Exception as exc:
                logger.error("An error was encountered while running hook %r", name, exc_info=True)
                event[semconv.HOOK_OUTCOME] = "failed"
                event[semconv.EXCEPTION_TYPE] = type(exc).__qualname__
                event[semconv.EXCEPTION_MESSAGE] = exported_message(_safe_str(exc), get_limits().exception_message)
            else:
                logger.info("Hook %r finished running successfully", name)
                event[semconv.HOOK_OUTCOME] = "completed"
            if span.is_recording():
                span.add_event(semconv.EVENT_HOOK, event)

    def _inputs(self) -> list[str] | None:
        """Names of the arguments holding futures, states or annotations; None when nothing needs resolving.

        Only those are resolved (and copied): a big plain list argument costs one scan, not a copy per run.
        """
        inputs: list[str] = []
        for name, value in self.parameters.items():
            if type(value) not in _SCALARS and contains_futures(value):
                inputs.append(name)
        return inputs if inputs or self.wait_for else None

    def _resolve(self, inputs: list[str]) -> Generator[Step, Any, None]:
        """Wait for upstream futures (outside the span: it measures the run, not the queue) and resolve them."""
        run, wait_for, params = self.run, self.wait_for, self.parameters
        self.links = []
        futures = collect_futures(wait_for) if wait_for else []
        for name in inputs:
            futures.extend(collect_futures(params[name]))
        if self.kind == "task" and any(f.task_run.id == run.id for f in futures):
            error = ValueError(
                "Discovered a task depending on itself. Raising to avoid a deadlock. Please inspect the "
                f"inputs and dependencies of {self.obj.name}."
            )
            self.final = Failed(data=error, message=_failure_message("task", error))
            self.raised = error
            return
        if futures:
            yield (_WAIT, futures)
        current = run if self.kind == "task" else None
        try:
            if wait_for:
                resolve_inputs(wait_for, links=self.links)
            for name in inputs:
                params[name] = resolve_inputs(params[name], links=self.links, parameter_name=name,
                                              current_task_run=current)
        except UpstreamTaskError as exc:
            self.final = Pending(message=str(exc), name="NotReady")

    def _settle(self) -> None:
        """Validate a flow's parameters and resolve the run's name, before its span starts."""
        run = self.run
        if self.kind == "flow" and self.final is None and self.obj.validate_parameters:
            try:
                self.parameters = run.parameters = self.obj.validate_parameters_of(self.parameters)
            except Exception as exc:
                message = "Validation of flow parameters failed with error:"
                self.final = Failed(data=exc, message=f"{message} {_format_exception(exc)}")
                self.raised = self.invalid = exc
        option = self.obj.flow_run_name if self.kind == "flow" else self.obj.task_run_name
        if option is not None:
            if callable(option):
                # Prefect calls it inside the run's context: otelflow.runtime and the run contexts see this run.
                ctx: Any = (FlowRunContext(flow=self.obj, flow_run=run, parameters=self.parameters)
                            if self.kind == "flow" else
                            TaskRunContext(task=self.obj, task_run=run, parameters=self.parameters))
                with ctx:
                    run.name = _custom_run_name(option, self.parameters, f"{self.kind}_run_name")
            else:
                run.name = _custom_run_name(option, self.parameters, f"{self.kind}_run_name")
        elif not run.name:
            run.name = _flow_run_name()

    def _begin(self, undo: list[Callable[[], object]]) -> None:
        """Start the span and enter the run's contexts, pairing every change with its undo step."""
        obj, run, kind = self.obj, self.run, self.kind
        # A process's one-time set-up (configuring telemetry and logging, the signal handlers, the pending-record
        # watcher: ~70 ms on a first flow run) happens before the run's clock starts: it is not the run's time.
        tracer = telemetry.get_tracer()
        if kind == "task":
            if _watcher is None:
                _watch_long_tasks()
        else:
            if not _signals_installed:
                _install_signal_handlers()
            if get_settings().log_run_events:
                from otelflow.logging.configuration import ensure_configured

                ensure_configured()
        self.start_ns = time.time_ns()
        tags_ctx = _TAGS_VAR.get(None)  # not TagsContext.get(): no empty context object per run
        current_tags = tags_ctx.current_tags if tags_ctx is not None else _NO_TAGS
        run_tags = sorted(current_tags.union(obj.tags)) if (current_tags or obj.tags) else []
        run.tags = run_tags
        attrs = dict(obj.static_attributes)
        attrs[semconv.RUN_NAME] = run.name
        if kind == "task":
            attrs[semconv.RUN_ID] = run.id_str
            if run.flow_run_id is not None:
                attrs[semconv.FLOW_RUN_ID] = run.flow_run_id_str or str(run.flow_run_id)
                flow_name = run.flow_name
                if not flow_name:  # a run record made elsewhere (a Dask worker): the current flow run knows
                    flow_ctx = FlowRunContext.get()
                    flow_name = flow_ctx.flow_run.flow_name if flow_ctx is not None and flow_ctx.flow_run else ""
                if flow_name:
                    attrs[semconv.FLOW_NAME] = flow_name
            if run.map_index is not None:
                attrs[semconv.TASK_MAP_INDEX] = run.map_index
            txn_module = sys.modules.get("otelflow.transactions")
            if txn_module is not None:
                self.txn = txn_module.get_transaction()
                if self.txn is not None and self.txn.key is not None:
                    attrs[semconv.TRANSACTION_KEY] = self.txn.key
        else:
            attrs[semconv.RUN_ID] = attrs[semconv.FLOW_RUN_ID] = run.id_str
            attrs[semconv.FLOW_RUN_NAME] = run.name
        if run_tags:
            attrs[semconv.TAGS] = run_tags
        if self.parameters:
            settings = get_settings()
            if settings.record_parameter_values:
                attrs.update(parameter_attributes(
                    self.parameters, True, settings.parameter_value_max_length, settings.redact_patterns,
                ))
            else:
                add_parameter_types(attrs, self.parameters, obj.binder.attribute_keys)
        links = [Link(ctx, link_attrs) for ctx, link_attrs in self.links] if self.links else None
        span = tracer.start_span(obj.span_name, attributes=attrs, links=links, start_time=self.start_ns)
        self.span = span
        self.attrs = attrs
        _open_runs[id(self)] = self
        span_ctx = trace.set_span_in_context(span)
        # The span made current and the run context entered are the undo steps every run has: kept in two
        # fields (no closure per run), undone by _end after the other steps.
        self.otel_token = otel_context.attach(span_ctx)
        log_prints = _should_log_prints(obj)  # before this run's own context: None inherits the enclosing flow's
        if kind == "task":
            ctx: Any = TaskRunContext(task=obj, task_run=run, parameters=self.parameters, span=span,
                                      start_ns=self.start_ns, otel_ctx=span_ctx)
            ctx.__enter__()
            self.run_ctx = ctx
        else:
            parent = _FLOW_RUN_VAR.get(None)
            if parent is not None and parent.flow_run is not None:
                run.parent_flow_run_id = parent.flow_run.id  # a subflow
            # Prefect's FlowRunContext.persist_result: the flow's option, else the parent run's, else the setting.
            persist = obj.persist_result
            if persist is None:
                persist = (parent.flow_run.persist_result if parent is not None and parent.flow_run is not None
                           else get_current_settings().results_persist_by_default)
            run.persist_result = persist
            run.result_storage, run.result_serializer = obj.result_storage, obj.result_serializer
            self.task_runner = obj.task_runner.duplicate()
            ctx = FlowRunContext(flow=obj, flow_run=run, parameters=self.parameters, task_runner=self.task_runner,
                                 span=span, start_ns=self.start_ns, log_prints=log_prints, otel_ctx=span_ctx)
            ctx.__enter__()
            self.run_ctx = ctx
            # Logged last thing before the flow run context is left, so the record correlates with the run.
            undo.append(self._log_final)
            self.task_runner.__enter__()
            self.runner_open = True
            undo.append(self._close_task_runner)
        if run_tags and kind == "flow":
            tags_ctx = TagsContext(current_tags.union(run_tags))
            tags_ctx.__enter__()
            undo.append(tags_ctx.__exit__)
        if log_prints is not _log_prints.get():
            # On for log_prints=True; explicitly off for a run that opts out under a parent that logs prints.
            capture = _print_as_log()(log_prints)
            capture.__enter__()
            undo.append(capture.__exit__)
        if kind == "flow":
            self.pending_sent = True
            _emit_pending(span, obj.span_name, attrs, self.start_ns)
            if self.invalid is not None:
                _run_logger().error("Validation of flow parameters failed with error: %s", self.invalid)
        if self.txn is not None and self.final is None:
            hit, value = self.txn.task_begin(obj, run)
            if hit:
                self.final = return_value_to_state(value)
                self.final.name = "Cached"
                self.return_value = value
                if span.is_recording():
                    span.set_attribute(semconv.TASK_CACHED, True)
        if kind == "task" and self.final is None:
            plan = obj._cache_plan
            if plan.may_cache and plan.persists(_FLOW_RUN_VAR.get(None)):
                self.cache = CacheRun(plan, span, _run_logger)
                undo.append(self.cache.release)

    def _take_tag_slots(self, undo: list[Callable[[], object]]) -> None:
        from otelflow.concurrency.limits import acquire_tag_slots

        slots = acquire_tag_slots(self.run.tags, holder=self.run.id_str, lease_duration=_TAG_SLOT_LEASE_S)
        slots.__enter__()
        undo.append(functools.partial(slots.__exit__, None, None, None))

    def _look_up(self) -> Any:
        """The task's cached value for this attempt's key, or _MISS (computing the key, locking it if asked)."""
        cache = self.cache
        value = cache.begin(self.run_ctx, _FLOW_RUN_VAR.get(None), self.parameters, self.txn)
        span = self.span
        if cache.attrs and span.is_recording():
            span.set_attributes(cache.attrs)
        return value

    def _log_beginning(self) -> None:
        what = "subflow" if self.run.parent_flow_run_id is not None else "flow"
        logger = _run_logger()
        logger.info("Beginning %s run %r for flow %r", what, self.run.name, self.obj.name)
        # What a user searches Jaeger and Loki with; for the console only (Prefect's "View at" line is too).
        trace_id = self.span.get_span_context().trace_id
        if trace_id:
            logger.info("Flow run id %s, trace id %032x", self.run.id, trace_id, extra=_CONSOLE_ONLY)
            settings = get_settings()
            if settings.ui_url:
                # Prefect's own link form: `otelflow ui` serves /runs/flow-run/<id> as Prefect's UI does.
                logger.info("View at %s/runs/flow-run/%s", settings.ui_url.rstrip("/"), self.run.id,
                            extra=_CONSOLE_ONLY)
            if settings.jaeger_url:
                logger.info("View at %s/trace/%032x", settings.jaeger_url.rstrip("/"), trace_id, extra=_CONSOLE_ONLY)

    def _close_task_runner(self) -> None:
        if self.runner_open:
            self.runner_open = False
            self.task_runner.__exit__(None, None, None)

    def _log_final(self) -> None:
        # Prefect's closing line: INFO when the run completed; otherwise ERROR, except for a sync flow run (Prefect's
        # sync flow engine always logs it as INFO, its async one and both task engines as ERROR).
        final = self.final
        if final is not None:
            info = final.type is StateType.COMPLETED or (self.kind == "flow" and not self.obj.isasync)
            level = logging.INFO if info else logging.ERROR
            if get_settings().log_run_events:
                log_run_line(level, "Finished in state %s", final)

    def _succeed(self, result: Any) -> Generator[Step, Any, None]:
        if self.kind == "flow":
            futures = collect_futures(result)
            if futures:
                yield (_WAIT, futures)
            result = resolve_futures_to_states(result)
        elif self.txn is not None:
            self.txn.task_completed(self.obj, self.run, result)
        self.return_value = result
        self.final = return_value_to_state(result)

    def _retry_delay(self, outcome: Any) -> Generator[Step, Any, float | None]:
        """The delay before the next attempt, or None when the run has failed for good."""
        obj, run = self.obj, self.run
        retries_done = run.run_count - 1
        if retries_done >= obj.retries:
            return None
        condition = getattr(obj, "retry_condition_fn", None)
        if condition is not None:
            try:
                message = f"{self.kind.title()} run encountered unexpected {_failure_type(outcome)}: {outcome!r}"
                verdict = condition(obj, run, Failed(data=outcome, message=message))
                if hasattr(verdict, "__await__"):
                    verdict = yield (_AWAIT, verdict)
                verdict = bool(verdict)
            except Exception:
                _run_logger().error(
                    "An error was encountered while running `retry_condition_fn` check '%s' for task %r",
                    getattr(condition, "__name__", condition), obj.name, exc_info=True,
                )
                return None
            if not verdict:
                self.retry_declined = True  # Prefect logs no "Task run failed ..." line then
                return None
        delay: float = obj.retry_delay_for(retries_done)
        logger = _run_logger()
        if self.kind == "task":
            logger.info(
                "Task run failed with %s: %r - Retry %s/%s will start %s", _failure_type(outcome), outcome,
                retries_done + 1, obj.retries, f"{delay} second(s) from now" if delay else "immediately",
            )
        else:
            # Prefect's flow engine: the failure is logged as for a final one, then the orchestrator's answer.
            proposed = "Failed"
            if isinstance(outcome, TimeoutError):
                proposed = "TimedOut"
                logger.error(self._timeout_message(outcome))
            elif isinstance(outcome, BaseException):
                logger.error("Encountered exception during execution: %r", outcome,
                             exc_info=(type(outcome), outcome, outcome.__traceback__))
            logger.info(
                "Received non-final state 'AwaitingRetry' when proposing final state %r and will attempt to run "
                "again...", proposed,
            )
        if self.span.is_recording():
            exc_type, message = _describe_outcome(outcome)
            self.span.add_event(semconv.EVENT_RETRY, {
                semconv.RUN_ATTEMPT: run.run_count + 1,
                semconv.RUN_RETRIES: int(obj.retries or 0),
                semconv.EXCEPTION_TYPE: exc_type,
                semconv.EXCEPTION_MESSAGE: exported_message(message, get_limits().exception_message),
                semconv.EVENT_ATTR_DELAY: delay,
            })
        return delay

    def _fail(self, outcome: Any) -> None:
        """The run failed for good: a final Failed (or TimedOut) state, and Prefect's log line."""
        kind = self.kind
        if isinstance(outcome, State):
            self.return_value = outcome
            self.final = return_value_to_state(outcome)
            if not self.retry_declined:
                exhausted = " - Retries are exhausted" if self.obj.retries else ""
                _run_logger().error("Task run failed with state: %r%s", outcome, exhausted)
            return
        self.raised = outcome
        exc_info = (type(outcome), outcome, outcome.__traceback__)
        if kind == "task" and not self.retry_declined:
            exhausted = " - Retries are exhausted" if self.obj.retries else ""
            _run_logger().error("Task run failed with exception: %r%s", outcome, exhausted, exc_info=exc_info)
        if isinstance(outcome, TimeoutError):
            message = self._timeout_message(outcome)
            self.final = Failed(data=outcome, message=message, name="TimedOut")
            _run_logger().error(message)
            return
        if kind == "flow" and isinstance(outcome, FlowPauseTimeout):
            # Prefect's orchestrator fails a pause that timed out with this state (no exception in it: its
            # result() raises FailedRun); the flow's call still raises the FlowPauseTimeout.
            self.final = Failed(message="The flow was failed and never resumed.")
        else:
            self.final = Failed(data=outcome, message=_failure_message(kind, outcome))
        if kind == "flow":
            _run_logger().error("Encountered exception during execution: %r", outcome, exc_info=exc_info)

    def _timeout_message(self, exc: TimeoutError) -> str:
        # Only the run's own timeout "exceeded" it; any other TimeoutError (a task's, the user's) failed it.
        own = TaskRunTimeoutError if self.kind == "task" else FlowRunTimeoutError
        if isinstance(exc, own):
            return f"{self.kind.title()} run exceeded timeout of {self.obj.timeout_seconds} second(s)"
        return f"{self.kind.title()} run failed due to timeout: {exc!r}"

    def _crash(self, exc: BaseException) -> None:
        """Something outside the user's code ended the run (a signal, an interrupt, a failing setup step)."""
        self.reraise = exc  # a cancellation stays one for the caller (asyncio expects it back)
        signum = _signals.terminating()
        if signum is not None and isinstance(exc, asyncio.CancelledError):
            # A termination signal stopped the event loop this async run was awaiting on; asyncio then cancels
            # its task. The cause is the signal, and the run ends as one stopped by it.
            exc = TerminationSignal(signum)
        message = next((m for t, m in _CRASH_MESSAGES if isinstance(exc, t)), None)
        if message is None:
            message = f"Execution was interrupted by an unexpected exception: {_format_exception(exc)}"
        self.final = Crashed(data=exc, message=message)
        if self.span.is_recording():
            _run_logger().error("Crash detected! %s", message)
        if isinstance(exc, TerminationSignal):
            # The process is being stopped: end every other open run now (their threads may never get to),
            # and do not wait for task runs still in flight.
            self.runner_open = False
            _terminate_open_runs(exc, message, self)

    def _settle_final(self) -> State[Any]:
        """The final state, made the run's: its details name the run, ``run.state`` is it."""
        final = self.final
        if final is None:  # pragma: no cover - every path above sets it
            final = self.final = Crashed(message="Run ended without a final state.")
        details = final._details
        if details is None:  # the usual case: a state this run made
            final._details = (
                StateDetails(self.run.flow_run_id, self.run.id) if self.kind == "task" else StateDetails(self.run.id)
            )
        elif self.kind == "task":
            details.task_run_id = details.task_run_id or self.run.id
            details.flow_run_id = details.flow_run_id or self.run.flow_run_id
        else:
            details.flow_run_id = details.flow_run_id or self.run.id
        final._span_context = self.span.get_span_context() if self.span.is_recording() else None
        self.run.state = final
        return final

    def _end(self, undo: list[Callable[[], object]]) -> None:
        """Record the final state on the span, leave the contexts (every undo step runs), end the span."""
        final = self.final
        assert final is not None
        span = self.span
        # Claiming the run (atomic under the GIL) decides who ends its span: this thread, or a termination
        # signal that already ended it Crashed from the main thread.
        owned = _open_runs.pop(id(self), None) is not None
        if not owned and self.forked:  # a forked child came back from a hook or another step of the parent's run
            self._leave_contexts_in_fork(undo)
            return
        if self.kind == "task":
            self._log_final()
        if owned and span.is_recording():
            span.set_attribute(semconv.RUN_STATE, final.name)
            if self.run.run_count > 1:
                span.set_attribute(semconv.RUN_ATTEMPT, self.run.run_count)
            if not final.is_completed():
                _record_failure(span, final)
        error: BaseException | None = None
        for step in reversed(undo):
            try:
                step()
            except BaseException as exc:  # every step runs; the first failure is raised after
                error = error or exc
        try:
            if self.run_ctx is not None:
                self.run_ctx.__exit__()
        except BaseException as exc:
            error = error or exc
        try:
            if self.otel_token is not None:
                otel_context.detach(self.otel_token)
        except BaseException as exc:
            error = error or exc
        if owned:
            span.end()
        if self.kind == "flow":
            # The run's console lines are written before the caller goes on (they are batched while it runs).
            console = sys.modules.get("otelflow.logging.configuration")
            if console is not None:
                console.flush_console()
        if error is not None and self.reraise is None:
            self.reraise = error

    def _leave_in_fork(self, undo: list[Callable[[], object]], value: Any, exc: BaseException | None = None,
                       ) -> State[Any]:
        """The body came back in a forked child: hand the caller what it gave, recording nothing.

        The run belongs to the process that started it, which records it (its state, log lines and span); the child
        has only a copy of its stack. Here nothing of the run is done: no state, log line, hook, retry, result,
        cache entry, commit or span end; the parent's locks and concurrency slots are not released, and its task
        runs in flight are not waited for (their threads were not copied: the wait would never end). Only the run's
        contexts are left. An exception (``SystemExit`` included) is re-raised, a return value returned.
        """
        self._leave_contexts_in_fork(undo)
        if exc is not None:
            self.reraise = exc
            return Crashed(data=exc, message="Left in a forked child process.")
        self.return_value = value
        return State(StateType.COMPLETED, data=value)

    def _leave_contexts_in_fork(self, undo: list[Callable[[], object]]) -> None:
        """Leave the run's contexts (tags, print capture, run context, OTel context) and undo nothing else."""
        exits = (TagsContext.__exit__, _print_as_log().__exit__)
        steps = [step for step in reversed(undo) if getattr(step, "__func__", None) in exits]
        if self.run_ctx is not None:
            steps.append(self.run_ctx.__exit__)
        if self.otel_token is not None:
            steps.append(functools.partial(otel_context.detach, self.otel_token))
        for step in steps:
            with contextlib.suppress(Exception):  # a context left out of order: the others are still left
                step()

    # result for the caller ---------------------------------------------------------------------------------
    def outcome(self, state: State[Any], return_type: ReturnType) -> Any:
        if self.reraise is not None:
            raise self.reraise
        if return_type == "state":
            return state
        value = self.return_value
        # A task's call returns what its function returned, a State included (Prefect: a task returning
        # Failed(...) gives the caller that State, no exception). A flow's returned States decide its state.
        if value is not _NOTSET and (self.kind == "task" or not isinstance(value, State)):
            return value
        if self.raised is not None:
            raise self.raised
        return state._result(raise_on_failure=True)


_TAG_SLOT_LEASE_S = 60.0  # Prefect's lease for a task run's tag slots; renewed while the run lives


def _limited_tags(tags: list[str]) -> list[str]:
    """The run's tags that have a concurrency limit (``[]`` for nearly every run: a cached set)."""
    global _limited_tags_fn
    if _limited_tags_fn is None:
        from otelflow.concurrency.limits import limited_tags

        _limited_tags_fn = limited_tags
    return _limited_tags_fn(tags)


_limited_tags_fn: Callable[[list[str]], list[str]] | None = None


def _commit_alone(task: Any, key: str | None) -> bool:
    """A task run's commit outside any transaction: its ``on_commit`` hooks with a transaction of its own (its cache
    key, if any), as Prefect does; a failing hook rolls it back (its ``on_rollback`` hooks run) and returns False.
    Never raises."""
    from otelflow.transactions import Transaction

    logger = _run_logger()
    txn = Transaction(key=key, logger=logger)
    for hook in task.on_commit_hooks:
        try:
            txn._run_hook(hook, "commit", raise_errors=True)
        except Exception:
            logger.error("An error was encountered while committing transaction %r", key, exc_info=True)
            for undo in reversed(task.on_rollback_hooks):
                txn._run_hook(undo, "rollback", raise_errors=False)
            return False
    return True


def _failure_type(outcome: Any) -> str:
    return "state" if isinstance(outcome, State) else "exception"


def _failure_message(kind: str, exc: BaseException) -> str:
    # Prefect's wording: "Task run encountered an exception ValueError: x" / "Flow run encountered an
    # exception: ValueError: x".
    prefix = "Task run encountered an exception" if kind == "task" else "Flow run encountered an exception:"
    return f"{prefix} {_format_exception(exc)}"


def _describe_outcome(outcome: Any) -> tuple[str, str]:
    if isinstance(outcome, State):
        return outcome.name, outcome.message or ""
    return type(outcome).__name__, str(outcome)


def _record_failure(span: trace.Span, final: State[Any]) -> None:
    """ERROR status, ``error.type``, one exception event and a state event, every text bounded in size and
    redacted (the state keeps its message as it is: only the exported copy is masked). The stack trace starts at
    the user's code: otelflow's own leading frames are dropped."""
    limits = get_limits()
    exc = final.data if isinstance(final.data, BaseException) else None
    if exc is not None:
        span.set_attribute(semconv.ERROR_TYPE, type(exc).__name__)
        try:
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        except Exception:  # a broken __str__ must not break the run's record
            stack = f"{type(exc).__name__}: <unprintable>"
        message = _safe_str(exc)
        span.add_event("exception", {
            semconv.EXCEPTION_TYPE: type(exc).__qualname__,
            semconv.EXCEPTION_MESSAGE: exported_message(message, limits.exception_message),
            semconv.EXCEPTION_STACKTRACE: exported_stacktrace(stack, limits.stacktrace),
        })
    elif not final.is_pending():
        span.set_attribute(semconv.ERROR_TYPE, final.name)
    if final.is_pending():
        # NotReady: the run never started; it is not an error of its own, the upstream's is.
        span.add_event(final.name, {semconv.EXCEPTION_MESSAGE: exported_message(final.message or "",
                                                                              limits.exception_message)})
        return
    span.set_status(Status(StatusCode.ERROR, exported_message(final.message or final.name, limits.exception_message)))
    span.add_event(final.name)


# Runs whose span is open, by id(run): what a termination signal must end, what the pending watcher looks at.
_open_runs: dict[int, _Run] = {}
_signals_installed = False
_watcher: threading.Thread | None = None


def _install_signal_handlers() -> None:
    global _signals_installed
    _signals_installed = True
    _signals.install(lambda: bool(_open_runs))


def _terminate_open_runs(exc: TerminationSignal, message: str, current: _Run) -> None:
    """End every open run but ``current`` Crashed, from the main thread, while the process is being stopped."""
    for key in list(_open_runs):
        run = _open_runs.get(key)
        if run is None or run is current or _open_runs.pop(key, None) is None:
            continue
        state = Crashed(data=exc, message=message)
        run.run.state = state
        span = run.span
        if span.is_recording():
            span.set_attributes({semconv.RUN_STATE: state.name, semconv.RUN_ATTEMPT: max(1, run.run.run_count)})
            _record_failure(span, state)
            span.end()


def _watch_long_tasks() -> None:
    """Start (once per process) the thread that exports pending records of task runs that run long."""
    global _watcher
    with _watcher_lock:
        if _watcher is None:
            _watcher = threading.Thread(target=_watch_pending, name="otelflow-pending", daemon=True)
            _watcher.start()


_watcher_lock = threading.Lock()


def _after_fork_in_child() -> None:
    # A forked child has none of its parent's runs open, and no watcher thread. The runs open at fork are the parent's:
    # the copies of them on the forking thread's stack are marked, so that they end here without a trace
    # (_Run._leave_in_fork), whether the child leaves their bodies by sys.exit(), an exception or a return.
    # The lock is new too: another thread may have held it at fork (a task run starting), and it would stay held here.
    global _watcher, _watcher_lock
    for run in _open_runs.values():
        run.forked = True
    _open_runs.clear()
    _watcher = None
    _watcher_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _watch_pending() -> None:
    while True:
        after = get_settings().pending_span_after_seconds
        now = time.time_ns()
        wait = after
        for run in list(_open_runs.values()):
            if run.pending_sent:
                continue
            age = (now - run.start_ns) / 1e9
            if age < after:
                wait = min(wait, after - age)
                continue
            run.pending_sent = True
            if id(run) in _open_runs:
                _emit_pending(run.span, run.obj.span_name, run.attrs, run.start_ns)
        time.sleep(max(0.05, wait))


# How long a pending record lasts. Not zero: Jaeger flags a span whose end is not after its start
# ("Negative duration detected", a @jaeger@warnings tag on the span; internal/jptrace/sanitizer of
# Jaeger v1.75.0 / v2.12.0).
PENDING_RECORD_NS = 1_000


def mark_waiting(span: trace.Span, state: str | None, message: str | None = None) -> None:
    """Export a new pending record of the open run whose span is ``span``, saying what it does now: ``Paused``
    (with ``message``: what it waits for) while it waits to be resumed or for input, ``None`` once it runs again.

    The record starts when the run started and ends now: of a run's pending records, the one ending last tells
    its current state (``otelflow runs``/``show`` show a paused run as Paused, not Running).
    """
    run = next((r for r in list(_open_runs.values()) if r.span is span), None)
    if run is None:
        return
    attrs = dict(run.attrs)
    if state is not None:
        attrs[semconv.RUN_STATE] = state
        if message:
            attrs[semconv.RUN_STATE_MESSAGE] = message
    end = max(time.time_ns(), run.start_ns + PENDING_RECORD_NS)
    _emit_pending(run.span, run.obj.span_name, attrs, run.start_ns, end)


def _emit_pending(span: trace.Span, name: str, attrs: dict[str, Any], start_ns: int, end_ns: int | None = None
                  ) -> None:
    """Export an early, 1 µs record of a run's span, so a long or killed run is visible while it runs.

    As Logfire does: a child of the real span (its own span id, same name and run attributes, marked
    ``otelflow.span.pending``), starting when the run started. The real span, exported when the run ends,
    supersedes it: ``otelflow show`` hides a pending record whose parent span exists, and the Collector
    keeps pending records out of the run metrics.
    """
    if not span.is_recording():
        return
    pending_attrs = dict(attrs)
    pending_attrs[semconv.SPAN_PENDING] = True
    parent = getattr(span, "parent", None)
    if parent is not None:
        pending_attrs[semconv.PENDING_PARENT_SPAN_ID] = format(parent.span_id, "016x")
    pending = telemetry.get_tracer().start_span(
        name, context=trace.set_span_in_context(span), attributes=pending_attrs, start_time=start_ns
    )
    pending.end(end_time=end_ns if end_ns is not None else start_ns + PENDING_RECORD_NS)


def _print_as_log() -> Any:
    from otelflow.logging.loggers import print_as_log

    return print_as_log


def _should_log_prints(obj: Any) -> bool:
    # Prefect: an explicit True/False wins; None inherits the enclosing flow run's setting.
    if obj.log_prints is not None:
        return bool(obj.log_prints)
    flow_ctx = _FLOW_RUN_VAR.get(None)
    return flow_ctx is not None and flow_ctx.log_prints


class _Silent:
    """Stands in for the run logger when OTELFLOW_LOG_RUN_EVENTS is off."""

    def log(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = error = log


_SILENT = _Silent()


def _run_logger() -> Any:
    if not get_settings().log_run_events:
        return _SILENT
    return get_run_logger()


# --- timeouts ---------------------------------------------------------------------------------------------


class _ThreadTimeout:
    """Interrupt the block after ``seconds`` with ``exc_type``.

    In the main thread with no other SIGALRM user, a real-time signal interrupts even blocking calls.
    Elsewhere the exception is injected into the thread (``PyThreadState_SetAsyncExc``) and takes effect at
    the next bytecode boundary: a blocking C call finishes first (Prefect does the same). An injection that
    fires just as the block ends is never withdrawn (withdrawing leaves CPython 3.11's eval breaker set and a
    traced thread spinning): it is let through and absorbed here instead.
    """

    __slots__ = ("_deferred_since", "_exc_type", "_fired", "_lock", "_message", "_previous", "_seconds", "_thread_id",
                 "_timer")

    def __init__(self, seconds: float, exc_type: type[TimeoutError]) -> None:
        self._seconds = seconds
        self._exc_type = exc_type
        self._message = f"Scope timed out after {seconds} second(s)."
        self._timer: threading.Timer | None = None
        self._previous: Any = None
        self._fired = False
        self._lock = threading.Lock()
        self._thread_id = 0
        self._deferred_since: float | None = None

    def _raise(self, signum: int, frame: FrameType | None) -> None:
        # As for a termination signal, not in the middle of an import, a log record or a half-taken lock: a
        # little later (the timer fires again in 2 ms), within the same bound.
        self._deferred_since = _signals.put_off(frame, self._deferred_since)
        if self._deferred_since is not None:
            signal.setitimer(signal.ITIMER_REAL, _signals.REDELIVER_EVERY_S)
            return
        raise self._exc_type(self._message)

    def __enter__(self) -> None:
        if (
            threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0
        ):
            self._previous = signal.signal(signal.SIGALRM, self._raise)
            signal.setitimer(signal.ITIMER_REAL, self._seconds)
            return
        self._thread_id = threading.get_ident()
        self._timer = threading.Timer(self._seconds, self._inject)
        self._timer.daemon = True
        self._timer.start()

    def _inject(self) -> None:
        with self._lock:
            if self._timer is None:
                return
            self._fired = True
            ctypes.pythonapi.PyThreadState_SetAsyncExc(
                ctypes.c_ulong(self._thread_id), ctypes.py_object(self._exc_type)
            )

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> Literal[False]:
        if self._timer is None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self._previous)
            return False
        try:
            with self._lock:
                timer, self._timer = self._timer, None
                timer.cancel()
                fired = self._fired
            if fired and exc is None:
                # Fired after the block's last bytecode: the exception is pending and arrives within a few
                # bytecodes. Give it a place to land here, where the block's result is already safe.
                for _ in range(1000):
                    pass
        except self._exc_type:
            return False
        if exc is not None and type(exc) is self._exc_type and not exc.args:
            # An injected exception arrives without arguments: give it the message that says what happened.
            raise self._exc_type(self._message) from None
        return False


def _timeout_type(kind: str) -> type[TimeoutError]:
    return TaskRunTimeoutError if kind == "task" else FlowRunTimeoutError


# --- drivers: the only sync/async twins ---------------------------------------------------------------------


def _call_sync(run: _Run) -> Any:
    args, kwargs = run.obj.binder.call_args(run.parameters)
    timeout = run.obj.timeout_seconds
    if timeout is None:
        return run.obj.fn(*args, **kwargs)
    with _ThreadTimeout(timeout, _timeout_type(run.kind)):
        return run.obj.fn(*args, **kwargs)


async def _call_async(run: _Run) -> Any:
    args, kwargs = run.obj.binder.call_args(run.parameters)
    timeout = run.obj.timeout_seconds
    if timeout is None:
        return await run.obj.fn(*args, **kwargs)
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await run.obj.fn(*args, **kwargs)
    except TimeoutError:
        if scope.expired():
            raise _timeout_type(run.kind)(f"Scope timed out after {timeout} second(s).") from None
        raise  # the user's own TimeoutError


def _await_sync(awaitable: Any) -> Any:
    """Run a coroutine to completion from sync code (a new loop; a helper thread if one is running here)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(awaitable)
    result: list[Any] = []

    def run() -> None:
        try:
            result.append((True, asyncio.run(awaitable)))
        except BaseException as exc:
            result.append((False, exc))

    thread = threading.Thread(target=run, name="otelflow-await")
    thread.start()
    thread.join()
    ok, value = result[0]
    if not ok:
        raise value
    return value


def _step_sync(op: int, arg: Any) -> Any:
    """Perform a step other than calling the function, blocking."""
    if op == _WAIT:
        blocking_wait([f._future for f in arg])
        return None
    if op == _SLEEP:
        time.sleep(arg)
        return None
    if op == _BLOCKING:
        return arg()
    return _await_sync(arg)


async def _step_async(op: int, arg: Any) -> Any:
    """Perform a step other than calling the function, without blocking the event loop."""
    if op == _WAIT:
        await asyncio.wait([asyncio.wrap_future(f._future) for f in arg])
        return None
    if op == _SLEEP:
        await asyncio.sleep(arg)
        return None
    if op == _BLOCKING:
        return await asyncio.to_thread(arg)
    return await arg


def _drive_sync(run: _Run) -> State[Any]:
    steps = run.lifecycle()
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op, arg = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            return cast("State[Any]", stop.value)
        send = error = None
        try:
            send = _call_sync(run) if op == _CALL else _step_sync(op, arg)
        except BaseException as exc:
            error = exc


async def _drive_async(run: _Run) -> State[Any]:
    steps = run.lifecycle()
    send: Any = None
    error: BaseException | None = None
    while True:
        try:
            op, arg = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            return cast("State[Any]", stop.value)
        send = error = None
        try:
            send = await (_call_async(run) if op == _CALL else _step_async(op, arg))
        except BaseException as exc:
            error = exc


# Generator flows and tasks (Prefect's run_generator_*): calling one returns a generator that runs the run as it is
# iterated, inside the run's span and contexts, and yields the function's values to the caller as they come. The
# function's return value is the run's result; a caller that stops early completes the run. (timeout_seconds does
# not apply to them.)


def _drive_sync_generator(run: _Run) -> Generator[Any, Any, Any]:
    steps = run.lifecycle()
    send: Any = None
    error: BaseException | None = None
    closed = False
    while True:
        try:
            op, arg = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            return None if closed else run.outcome(stop.value, "result")
        send = error = None
        try:
            if op == _CALL:
                args, kwargs = run.obj.binder.call_args(run.parameters)
                send = yield from run.obj.fn(*args, **kwargs)
            else:
                send = _step_sync(op, arg)
        except GeneratorExit:
            closed = True  # the caller stopped iterating (Prefect: the run completes); nothing more is yielded
        except BaseException as exc:
            error = exc


async def _drive_async_generator(run: _Run) -> AsyncGenerator[Any, None]:
    steps = run.lifecycle()
    send: Any = None
    error: BaseException | None = None
    closed = False
    while True:
        try:
            op, arg = steps.send(send) if error is None else steps.throw(error)
        except StopIteration as stop:
            if not closed:
                run.outcome(stop.value, "result")  # raises the run's exception, if it failed
            return
        send = error = None
        try:
            if op == _CALL:
                args, kwargs = run.obj.binder.call_args(run.parameters)
                values = run.obj.fn(*args, **kwargs)
                try:
                    async for value in values:
                        yield value
                finally:
                    await values.aclose()
            else:
                send = await _step_async(op, arg)
        except GeneratorExit:
            closed = True
        except BaseException as exc:
            error = exc


# --- entry points -------------------------------------------------------------------------------------------


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
    return run.outcome(_drive_sync(run), return_type)


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
    return run.outcome(await _drive_async(run), return_type)


def run_flow(
    flow: Flow[..., Any],
    parameters: dict[str, Any],
    *,
    wait_for: Iterable[Any] | None = None,
    return_type: ReturnType = "result",
) -> Any:
    """Run a sync flow in this thread; return its result (or final state)."""
    run = _Run("flow", flow, parameters, new_flow_run(flow, parameters), wait_for)
    return run.outcome(_drive_sync(run), return_type)


async def run_flow_async(
    flow: Flow[..., Any],
    parameters: dict[str, Any],
    *,
    wait_for: Iterable[Any] | None = None,
    return_type: ReturnType = "result",
) -> Any:
    """Run an async flow on the running event loop; return its result (or final state)."""
    run = _Run("flow", flow, parameters, new_flow_run(flow, parameters), wait_for)
    return run.outcome(await _drive_async(run), return_type)



def run_generator(
    kind: Literal["flow", "task"],
    obj: Flow[..., Any] | Task[..., Any],
    parameters: dict[str, Any],
    *,
    wait_for: Iterable[Any] | None = None,
    return_type: ReturnType = "result",
) -> Any:
    """Run a generator flow or task: a (sync or async) generator of the function's values (Prefect's rules)."""
    if return_type != "result":
        raise ValueError(f"The return_type for a generator {kind} must be 'result'")
    record = new_flow_run(cast("Flow[..., Any]", obj), parameters) if kind == "flow" else (
        new_task_run(cast("Task[..., Any]", obj)))
    run = _Run(kind, obj, parameters, record, wait_for)
    return _drive_async_generator(run) if inspect.isasyncgenfunction(obj.fn) else _drive_sync_generator(run)


# Where a termination signal may land in this module: the calls of the user's code and the waits. Anywhere else it
# waits a few bytecodes, until the run's bookkeeping is consistent again (signals.safe_to_interrupt).
_signals.interruptible(_call_sync, _call_async, _step_sync, _step_async, _await_sync, _Run._call_hooks,
                       _Run._take_tag_slots, _Run._look_up, _Run._close_task_runner)

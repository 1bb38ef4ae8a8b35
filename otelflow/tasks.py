"""``@task`` and :class:`Task`: calling, submitting and mapping task runs.

Prefect 3 semantics: calling a task runs it in the caller's thread and returns its value (inside or
outside a flow); ``.submit()`` returns a :class:`~otelflow.futures.TaskRunFuture`; ``.map()`` returns
a :class:`~otelflow.futures.FutureList`; both need a running flow (its task runner), as in Prefect.
Futures passed as arguments are resolved before the run starts.

Every option of ``@task`` / ``@flow`` is declared once, in :class:`TaskOptions` / ``FlowOptions``; the
decorator, the class and ``with_options`` all take exactly those keywords.

Example::

    @task(retries=2, retry_delay_seconds=0.1)
    def process_item(item, config, multiplier):
        return item * config["factor"] * multiplier

    @flow
    def pipeline():
        return process_item.map([1, 2, 3], unmapped({"factor": 10}), unmapped(2))
"""

from __future__ import annotations

import copy
import datetime
import functools
import inspect
import random
import string
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    ParamSpec,
    TypedDict,
    TypeVar,
    Unpack,
    cast,
    overload,
)

from otelflow import semconv
from otelflow._internal.runs.params import ParameterBinder
from otelflow.cache_policies import task_input_hash
from otelflow.context import FlowRunContext, _check_tags
from otelflow.exceptions import ReservedArgumentError
from otelflow.futures import FutureList, PrefectFuture, PrefectFutureList

if TYPE_CHECKING:
    from otelflow.states import State
    from otelflow.task_runners import TaskRunner

__all__ = ["Task", "TaskOptions", "exponential_backoff", "task", "task_input_hash"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

RetryDelay = float | int | list[float] | Callable[[int], list[float]]
RetryCondition = Callable[..., bool | Awaitable[bool]]
RunNameOption = str | Callable[..., str]
TxnHook = Callable[[Any], Any]
# A state hook: ``hook(task, task_run, state)`` / ``hook(flow, flow_run, state)``; sync, or async (awaited).
StateHook = Callable[[Any, Any, Any], Any]

_RESERVED_ARGUMENTS = ("return_state", "wait_for")
_MAX_RETRY_DELAYS = 50


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Retry delays ``factor * 2**n`` for ``n`` in ``range(retries)``.

    Example: ``@task(retries=3, retry_delay_seconds=exponential_backoff(1))`` waits 1, 2, 4 seconds.
    """

    def delays(retries: int) -> list[float]:
        return [backoff_factor * 2**n for n in range(retries)]

    return delays


class _CommonOptions(TypedDict, total=False):
    persist_result: bool | None
    result_storage: Any
    result_serializer: Any
    cache_result_in_memory: bool
    name: str | None
    description: str | None
    version: str | None
    tags: Iterable[str] | None
    retries: int | None
    retry_delay_seconds: RetryDelay | None
    timeout_seconds: float | None
    log_prints: bool | None
    on_completion: Iterable[StateHook] | None
    on_failure: Iterable[StateHook] | None
    on_running: Iterable[StateHook] | None


class TaskOptions(_CommonOptions, total=False):
    """The options of ``@task(...)``, ``Task(...)`` and ``Task.with_options(...)``."""

    retry_jitter_factor: float | None
    retry_condition_fn: RetryCondition | None
    task_run_name: RunNameOption | None
    on_commit: list[TxnHook] | None
    on_rollback: list[TxnHook] | None
    cache_policy: Any
    cache_key_fn: Callable[[Any, dict[str, Any]], str | None] | None
    cache_expiration: datetime.timedelta | None
    refresh_cache: bool | None
    result_storage_key: str | None


def _code_attributes(fn: Callable[..., Any]) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    attrs: dict[str, Any] = {semconv.CODE_FUNCTION_NAME: getattr(fn, "__qualname__", repr(fn))}
    if code is not None:
        attrs[semconv.CODE_FILE_PATH] = code.co_filename
        attrs[semconv.CODE_LINE_NUMBER] = code.co_firstlineno
    return attrs


def _check_run_name_template(template: Any, option: str, signature: inspect.Signature, owner: str) -> None:
    """Reject a run name template that names no parameter, at decoration rather than at every run."""
    if template is None or callable(template):
        return
    if not isinstance(template, str):
        raise TypeError(f"Expected string or callable for {option!r}; got {type(template).__name__} instead.")
    params = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    try:
        fields = [field for _, field, _, _ in string.Formatter().parse(template) if field is not None]
    except ValueError as exc:
        raise ValueError(f"{option}={template!r} of {owner} is not a valid format string: {exc}.") from None
    for field in fields:
        base = field.split(".", 1)[0].split("[", 1)[0]
        if not base or base.isdigit():
            raise ValueError(
                f"{option}={template!r} of {owner} uses a positional field {{{field}}}; "
                f"name a parameter instead, e.g. {{{next(iter(params), 'x')}}}."
            )
        if base not in params:
            raise ValueError(
                f"{option}={template!r} of {owner} refers to {{{base}}}, which is not a parameter; "
                f"its parameters are {list(params)}."
            )


# The state hook options each kind takes, in the order Prefect checks them: the option name and the attribute
# holding the list.
_HOOK_OPTIONS: dict[str, tuple[str, ...]] = {
    "task": ("on_completion", "on_failure", "on_running"),
    "flow": ("on_completion", "on_failure", "on_cancellation", "on_crashed", "on_running"),
}


def _not_applicable(what: str, instead: str) -> NotImplementedError:
    """The error of a Prefect API that needs Prefect's server or workers, which otelflow does not have."""
    return NotImplementedError(
        f"{what} needs Prefect's API server and workers; otelflow has neither (see the README's Prefect API "
        f"table). {instead}"
    )


def _hook_list(kind: str, option: str, hooks: Any) -> list[StateHook]:
    """A hook option as a list, with Prefect's errors for a non-iterable or a non-callable."""
    example = f"@{kind}({option}=[hook1, hook2])\ndef my_{kind}():\n\tpass"
    try:
        listed = list(hooks)
    except TypeError:
        raise TypeError(
            f"Expected iterable for '{option}'; got {type(hooks).__name__} instead. Please provide a list of "
            f"hooks to '{option}':\n\n{example}"
        ) from None
    for hook in listed:
        if not callable(hook):
            raise TypeError(
                f"Expected callables in '{option}'; got {type(hook).__name__} instead. Please provide a list of "
                f"hooks to '{option}':\n\n{example}"
            )
    return listed


class _RunOptions:
    """Options flows and tasks share (declared in ``_CommonOptions``), validated once here."""

    _kind: ClassVar[str]
    _option_names: ClassVar[frozenset[str]]
    _options: dict[str, Any]
    # How the function was defined in a class: "classmethod" / "staticmethod" when decorated on top of one.
    _method_kind: str | None = None
    on_completion_hooks: list[StateHook]
    on_failure_hooks: list[StateHook]
    on_running_hooks: list[StateHook]

    def _init_options(self, fn: Callable[..., Any], options: Mapping[str, Any]) -> None:
        kind = self._kind
        unknown = set(options) - self._option_names
        if unknown:
            raise TypeError(f"@{kind} got unknown options {sorted(unknown)}; valid: {sorted(self._option_names)}.")
        if isinstance(fn, classmethod | staticmethod):
            self._method_kind = "classmethod" if isinstance(fn, classmethod) else "staticmethod"
            fn = fn.__func__
        if not callable(fn):
            raise TypeError(f"@{kind} must decorate a function, got {type(fn).__name__}.")
        self._options = dict(options)
        self.fn = fn
        name = options.get("name")
        if name is not None and not isinstance(name, str):
            hint = f" Perhaps you meant to call it? e.g. '@{kind}(name=get_name())'" if callable(name) else ""
            raise TypeError(f"Expected string for {kind} parameter 'name'; got {type(name).__name__} instead.{hint}")
        self.name: str = name or self._default_name(fn)
        tags = options.get("tags")
        if isinstance(tags, str):
            raise TypeError(f"{kind} tags must be a list of strings, not one string: use tags=[{tags!r}].")
        self.tags: set[str] = set(_check_tags(tags or ()))
        retries = options.get("retries")
        if retries is not None and (not isinstance(retries, int) or isinstance(retries, bool) or retries < 0):
            raise ValueError(f"retries must be a whole number >= 0, got {retries!r}.")
        self.retries: int = retries or 0
        delay = options.get("retry_delay_seconds")
        if callable(delay):
            delay = delay(self.retries)  # Prefect evaluates a delay function once, at decoration
        if delay is not None and not isinstance(delay, int | float | list | tuple):
            raise TypeError(
                "Invalid `retry_delay_seconds` provided; must be an int, float, list or callable. "
                f"Received type {type(delay)}"
            )
        if isinstance(delay, list | tuple):
            if len(delay) > _MAX_RETRY_DELAYS:
                raise ValueError(f"Can not configure more than {_MAX_RETRY_DELAYS} retry delays per {kind}.")
            delay = [float(d) for d in delay]
        self.retry_delay_seconds: float | list[float] = delay if delay is not None else 0
        timeout = options.get("timeout_seconds")
        if timeout is not None and (not isinstance(timeout, int | float) or timeout < 0):
            raise ValueError(f"timeout_seconds must be a number >= 0 (0 or None: no timeout), got {timeout!r}.")
        self.timeout_seconds: float | None = float(timeout) if timeout else None
        log_prints = options.get("log_prints")
        self.log_prints: bool | None = None if log_prints is None else bool(log_prints)
        description = options.get("description")
        self.description: str | None = description if description is not None else inspect.getdoc(fn)
        self.version: str | None = options.get("version")
        self.isasync: bool = inspect.iscoroutinefunction(fn)
        # A generator function: its call returns a generator of its values (Prefect's generator flows and tasks).
        self.isgenerator: bool = inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn)
        owner = f"{kind.title()} {self.name!r}"
        self.binder = ParameterBinder(fn, owner)
        for argument in _RESERVED_ARGUMENTS:
            if argument in self.binder.signature.parameters:
                raise ReservedArgumentError(f"{argument!r} is a reserved argument name and cannot be used.")
        # Attributes every run of this flow/task starts with. The attempt is 1 when a span starts; the engine
        # updates it only after retries (an attribute set on a live span costs several times a start one).
        self.static_attributes: dict[str, Any] = {semconv.RUN_TYPE: kind, **_code_attributes(fn),
                                                  semconv.RUN_ATTEMPT: 1}
        for option in _HOOK_OPTIONS[kind]:
            hooks = options.get(option)
            setattr(self, f"{option}_hooks", _hook_list(kind, option, hooks) if hooks is not None else [])
        functools.update_wrapper(cast(Any, self), fn)

    def __get__(self, instance: Any, owner: type[Any] | None = None) -> Any:
        """Bind a flow or task defined in a class, as Python binds a method (Prefect's descriptor protocol).

        Read from an instance, the instance is passed first (``self``); a classmethod gets the class
        (``cls``); a staticmethod gets nothing. The bound value is a parameter of the run like any other.
        """
        if self._method_kind == "staticmethod":
            return self
        if self._method_kind == "classmethod":
            first = owner if owner is not None else type(instance)
        elif instance is None:
            return self
        else:
            first = instance
        bound = copy.copy(self)
        bound.binder = self.binder.bound_to(first)
        return bound

    @property
    def ismethod(self) -> bool:
        """True for a flow/task read from an instance (bound to it, as a method)."""
        return self._method_kind is None and hasattr(self.binder, "_first")

    @property
    def isclassmethod(self) -> bool:
        """True when the function was a classmethod."""
        return self._method_kind == "classmethod"

    @property
    def isstaticmethod(self) -> bool:
        """True when the function was a staticmethod."""
        return self._method_kind == "staticmethod"

    def on_completion(self, fn: StateHook) -> StateHook:
        """Register ``fn(obj, run, state)`` to run when a run of this flow/task ends Completed (decorator form)."""
        self.on_completion_hooks.append(fn)
        return fn

    def on_failure(self, fn: StateHook) -> StateHook:
        """Register ``fn(obj, run, state)`` to run when a run of this flow/task ends Failed (decorator form)."""
        self.on_failure_hooks.append(fn)
        return fn

    def on_running(self, fn: StateHook) -> StateHook:
        """Register ``fn(obj, run, state)`` to run when a run of this flow/task enters Running (each attempt)."""
        self.on_running_hooks.append(fn)
        return fn

    def _default_name(self, fn: Callable[..., Any]) -> str:
        return str(getattr(fn, "__name__", type(fn).__name__))

    def retry_delay_for(self, retries_done: int) -> float:
        """Seconds to wait before the next attempt, after ``retries_done`` retries (Prefect: the last repeats)."""
        option = self.retry_delay_seconds
        if isinstance(option, list):
            delay = option[min(retries_done, len(option) - 1)] if option else 0.0
        else:
            delay = float(option)
        jitter = getattr(self, "retry_jitter_factor", None)
        if jitter and delay:
            delay += random.uniform(0, delay * jitter)
        return delay

    def _with_options(self, options: Mapping[str, Any]) -> Any:
        """A copy with some options changed; takes exactly the decorator's keywords."""
        unknown = set(options) - self._option_names
        if unknown:
            valid = sorted(self._option_names)
            raise TypeError(f"with_options() got unknown options {sorted(unknown)}; valid: {valid}.")
        # Hooks registered with the decorator form since the object was made are carried over, as in Prefect.
        carried = {
            option: list(getattr(self, f"{option}_hooks")) for option in _HOOK_OPTIONS[self._kind]
            if not options.get(option)
        }
        if self._kind == "task":
            carried["on_commit"] = list(cast("Task[..., Any]", self).on_commit_hooks)
            carried["on_rollback"] = list(cast("Task[..., Any]", self).on_rollback_hooks)
        fn: Any = self.fn
        if self._method_kind is not None:
            fn = classmethod(fn) if self._method_kind == "classmethod" else staticmethod(fn)
        new = cast(Any, type(self))(fn, **{**self._options, **carried, **options})
        if hasattr(self.binder, "_first"):  # a copy bound to an instance or class stays bound
            new.binder = new.binder.bound_to(self.binder._first)
        return new

    def _split_call_options(self, kwargs: dict[str, Any]) -> tuple[bool, Any]:
        return bool(kwargs.pop("return_state", False)), kwargs.pop("wait_for", None)


class Task(_RunOptions, Generic[P, R]):
    """A function whose every call is a task run: a span, a run context, retries, a state."""

    _kind = "task"
    _option_names = frozenset(TaskOptions.__annotations__) | frozenset(_CommonOptions.__annotations__)

    def __init__(self, fn: Callable[P, R], **options: Unpack[TaskOptions]) -> None:
        self._init_options(fn, options)
        jitter = options.get("retry_jitter_factor")
        if jitter is not None and jitter < 0:
            raise ValueError("`retry_jitter_factor` must be >= 0.")
        self.retry_jitter_factor: float | None = jitter
        condition = options.get("retry_condition_fn")
        if condition is not None and not callable(condition):
            raise TypeError(
                f"Expected `retry_condition_fn` to be callable, got {type(condition).__name__} instead."
            )
        self.retry_condition_fn: RetryCondition | None = condition
        self.task_run_name: RunNameOption | None = options.get("task_run_name")
        _check_run_name_template(self.task_run_name, "task_run_name", self.binder.signature, f"task {self.name!r}")
        self.on_commit_hooks: list[TxnHook] = list(options.get("on_commit") or ())
        self.on_rollback_hooks: list[TxnHook] = list(options.get("on_rollback") or ())
        self.static_attributes[semconv.TASK_NAME] = self.name
        self.span_name = semconv.task_span_name(self.name)
        from otelflow._internal.runs.caching import CachePlan
        from otelflow.cache_policies import _task_key

        self.task_key: str = _task_key(self.fn)  # Prefect's: "{function name}-{8 hex of its code}"

        # Prefect's cache and result options, as given (read by with_options) and as resolved by Prefect's rules.
        plan = self._cache_plan = CachePlan(self.name, cast("dict[str, Any]", options))
        self.cache_policy: Any = plan.policy
        self.cache_key_fn = options.get("cache_key_fn")
        self.cache_expiration = plan.expiration
        self.refresh_cache = plan.refresh
        self.persist_result: bool | None = plan.persist
        self.result_storage = plan.result_storage
        self.result_serializer = plan.result_serializer
        self.result_storage_key = plan.storage_key
        self.cache_result_in_memory = plan.cache_result_in_memory

    def on_commit(self, fn: TxnHook) -> TxnHook:
        """Register ``fn(txn)`` to run when the transaction this task ran in commits (Prefect's hook API)."""
        self.on_commit_hooks.append(fn)
        return fn

    def on_rollback(self, fn: TxnHook) -> TxnHook:
        """Register ``fn(txn)`` to run when the transaction this task ran in rolls back (Prefect's hook API)."""
        self.on_rollback_hooks.append(fn)
        return fn

    def with_options(self, **options: Unpack[TaskOptions]) -> Task[P, R]:
        """A copy of this task with some options changed (``name``, ``retries``, ``tags``...)."""
        return cast("Task[P, R]", self._with_options(options))

    # Typing: an async task's call is a coroutine of its value (T, not R = Coroutine[...]); return_state=True
    # gives a State of the value. The overloads are what editors show for decorated functions.
    @overload
    def __call__(  # type: ignore[overload-overlap]  # an async fn is also a T-returning fn; the first match wins
        self: Task[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def __call__(self: Task[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...
    @overload
    def __call__(
        self: Task[P, Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True], **kwargs: Any
    ) -> Coroutine[Any, Any, State[T]]: ...
    @overload
    def __call__(self: Task[P, T], *args: Any, return_state: Literal[True], **kwargs: Any) -> State[T]: ...
    @overload
    def __call__(
        self: Task[P, Coroutine[Any, Any, T]], *args: Any, wait_for: Iterable[Any], **kwargs: Any
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def __call__(self: Task[P, T], *args: Any, wait_for: Iterable[Any], **kwargs: Any) -> T: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task now, in this thread; return its value (``return_state=True``: its final State)."""
        engine = _engine()
        return_state, wait_for = self._split_call_options(kwargs) if kwargs else (False, None)
        parameters = self.binder.bind(args, kwargs)
        return_type: Literal["result", "state"] = "state" if return_state else "result"
        if self.isgenerator:
            return engine.run_generator("task", self, parameters, wait_for=wait_for, return_type=return_type)
        if self.isasync:
            return engine.run_task_async(self, parameters, wait_for=wait_for, return_type=return_type)
        return engine.run_task(self, parameters, wait_for=wait_for, return_type=return_type)

    @overload
    def submit(  # type: ignore[overload-overlap]  # an async fn is also a T-returning fn; the first match wins
        self: Task[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> PrefectFuture[T]: ...
    @overload
    def submit(self: Task[P, T], *args: P.args, **kwargs: P.kwargs) -> PrefectFuture[T]: ...
    @overload
    def submit(
        self: Task[P, Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True], **kwargs: Any
    ) -> State[T]: ...
    @overload
    def submit(self: Task[P, T], *args: Any, return_state: Literal[True], **kwargs: Any) -> State[T]: ...
    @overload
    def submit(
        self: Task[P, Coroutine[Any, Any, T]], *args: Any, wait_for: Iterable[Any], **kwargs: Any
    ) -> PrefectFuture[T]: ...
    @overload
    def submit(self: Task[P, T], *args: Any, wait_for: Iterable[Any], **kwargs: Any) -> PrefectFuture[T]: ...
    def submit(self, *args: Any, **kwargs: Any) -> Any:
        """Start a task run on the flow's task runner; return its future (``return_state=True``: its final State).

        As in Prefect, this needs a running flow: outside one it raises ``RuntimeError``.
        """
        return_state, wait_for = self._split_call_options(kwargs)
        parameters = self.binder.bind(args, kwargs)
        future = _task_runner("submission").submit(self, parameters, wait_for)
        if return_state:
            future.wait()
            return future.state
        return future

    @overload
    def map(
        self: Task[P, Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True], **kwargs: Any
    ) -> list[State[T]]: ...
    @overload
    def map(self: Task[P, T], *args: Any, return_state: Literal[True], **kwargs: Any) -> list[State[T]]: ...
    @overload
    def map(self: Task[P, Coroutine[Any, Any, T]], *args: Any, **kwargs: Any) -> PrefectFutureList[T]: ...
    @overload
    def map(self: Task[P, T], *args: Any, **kwargs: Any) -> PrefectFutureList[T]: ...
    def map(self, *args: Any, **kwargs: Any) -> Any:
        """One task run per element of the iterable arguments; ``unmapped(x)`` passes ``x`` whole to each.

        Returns the futures as a :class:`~otelflow.futures.FutureList` (``return_state=True``: their final
        States). Defaults of the task's parameters are not mapped over; iterables passed through ``**kwargs``
        are. A future (or State) passed as the iterable is resolved first and its result mapped over.
        """
        return_state, wait_for = self._split_call_options(kwargs)
        parameters = self.binder.bind(args, kwargs, apply_defaults=False)
        futures: FutureList[R] = _task_runner("mapped task runs").map(self, parameters, wait_for)
        if return_state:
            states: list[State[R]] = []
            for future in futures:
                future.wait()
                states.append(future.state)
            return states
        return futures

    def delay(self, *args: Any, **kwargs: Any) -> Any:
        """Prefect's background task submission: not available (no task workers)."""
        raise _not_applicable(f"{self.name}.delay()", "Call the task, or .submit() it inside a flow.")

    def apply_async(self, *args: Any, **kwargs: Any) -> Any:
        """Prefect's background task submission: not available (no task workers)."""
        raise _not_applicable(f"{self.name}.apply_async()", "Call the task, or .submit() it inside a flow.")

    def serve(self, *args: Any, **kwargs: Any) -> Any:
        """Prefect's task worker: not available."""
        raise _not_applicable(f"{self.name}.serve()", "Call the task, or .submit() it inside a flow.")

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


def _engine() -> Any:
    # The engine imports this module: bound on first use, then a global lookup per call.
    global _engine_module
    if _engine_module is None:
        from otelflow import engine

        _engine_module = engine
    return _engine_module


_engine_module: Any = None


def _task_runner(what: str) -> TaskRunner:
    ctx = FlowRunContext.get()
    runner = ctx.task_runner if ctx is not None else None
    if runner is None:
        raise RuntimeError(
            f"Unable to determine task runner to use for {what}. Submitting and mapping need a running flow "
            "(its task runner): call .submit()/.map() inside a @flow, or call the task directly."
        )
    return runner


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...
@overload
def task(**options: Unpack[TaskOptions]) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(__fn: Any = None, **options: Any) -> Any:
    """Make a function a task: ``@task`` or ``@task(name=..., retries=..., tags=[...], timeout_seconds=...)``."""
    if __fn is not None:
        return Task(__fn, **options)
    return cast(Any, functools.partial(Task, **options))

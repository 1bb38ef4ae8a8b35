"""``@task`` and :class:`Task`: calling, submitting and mapping task runs.

Prefect 3 semantics: calling a task runs it in the caller's thread and returns its value (inside or
outside a flow); ``.submit()`` returns a :class:`~otelflow.futures.TaskRunFuture`; ``.map()`` returns
a :class:`~otelflow.futures.FutureList`. Futures passed as arguments are resolved before the run starts.

Example::

    @task(retries=2, retry_delay_seconds=0.1)
    def process_item(item, config, multiplier):
        return item * config["factor"] * multiplier

    @flow
    def pipeline():
        return process_item.map([1, 2, 3], unmapped({"factor": 10}), unmapped(2))
"""

from __future__ import annotations

import functools
import inspect
import random
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypeVar, cast, overload

from otelflow import semconv
from otelflow._internal.params import ParameterBinder
from otelflow.context import FlowRunContext, _check_tags
from otelflow.futures import FutureList, TaskRunFuture

if TYPE_CHECKING:
    from otelflow.task_runners import TaskRunner

__all__ = ["Task", "exponential_backoff", "task"]

P = ParamSpec("P")
R = TypeVar("R")

RetryDelay = float | int | list[float] | Callable[[int], list[float]]

_CALL_OPTIONS = ("return_state", "wait_for")


def exponential_backoff(backoff_factor: float) -> Callable[[int], list[float]]:
    """Retry delays ``factor * 2**n`` for ``n`` in ``range(retries)``.

    Example: ``@task(retries=3, retry_delay_seconds=exponential_backoff(1))`` waits 1, 2, 4 seconds.
    """

    def delays(retries: int) -> list[float]:
        return [backoff_factor * 2**n for n in range(retries)]

    return delays


def _code_attributes(fn: Callable[..., Any]) -> dict[str, Any]:
    code = getattr(fn, "__code__", None)
    attrs: dict[str, Any] = {semconv.CODE_FUNCTION_NAME: getattr(fn, "__qualname__", repr(fn))}
    if code is not None:
        attrs[semconv.CODE_FILE_PATH] = code.co_filename
        attrs[semconv.CODE_LINE_NUMBER] = code.co_firstlineno
    return attrs


class _RunOptions:
    """Options flows and tasks share (retries, timeout, tags, log_prints), validated once."""

    def _init_options(
        self,
        fn: Callable[..., Any],
        name: str | None,
        kind: str,
        tags: Iterable[str] | None,
        retries: int | None,
        retry_delay_seconds: RetryDelay | None,
        retry_jitter_factor: float | None,
        timeout_seconds: float | None,
        log_prints: bool | None,
        description: str | None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"@{kind} must decorate a function, got {type(fn).__name__}.")
        self.fn = fn
        self.name: str = name or getattr(fn, "__name__", type(fn).__name__)
        if not isinstance(self.name, str) or not self.name:
            raise TypeError(f"{kind} name must be a non-empty string, got {self.name!r}.")
        if isinstance(tags, str):
            raise TypeError(f"{kind} tags must be a list of strings, not one string: use tags=[{tags!r}].")
        self.tags: set[str] = set(_check_tags(tags or ()))
        self.retries = int(retries or 0)
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}.")
        self.retry_delay_seconds: RetryDelay = retry_delay_seconds if retry_delay_seconds is not None else 0
        self.retry_jitter_factor = retry_jitter_factor
        if timeout_seconds is not None and timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be > 0, got {timeout_seconds}.")
        self.timeout_seconds = timeout_seconds
        self.log_prints = bool(log_prints)
        self.description = description if description is not None else inspect.getdoc(fn)
        self.isasync = inspect.iscoroutinefunction(fn)
        owner = f"{kind.title()} {self.name!r}"
        self.binder = ParameterBinder(fn, owner)
        self.static_attributes: dict[str, Any] = {semconv.RUN_TYPE: kind, **_code_attributes(fn)}
        functools.update_wrapper(self, fn)  # type: ignore[arg-type]

    def retry_delay_for(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        delay_option = self.retry_delay_seconds
        if callable(delay_option):
            delay_option = delay_option(self.retries)
        if isinstance(delay_option, list | tuple):
            delay = float(delay_option[min(attempt, len(delay_option)) - 1]) if delay_option else 0.0
        else:
            delay = float(delay_option)
        if self.retry_jitter_factor:
            delay += random.uniform(0, delay * self.retry_jitter_factor)
        return delay

    def _split_call_options(self, kwargs: dict[str, Any]) -> tuple[bool, Any]:
        names = self.binder.signature.parameters
        return_state = kwargs.pop("return_state", False) if "return_state" not in names else False
        wait_for = kwargs.pop("wait_for", None) if "wait_for" not in names else None
        return bool(return_state), wait_for


class Task(_RunOptions, Generic[P, R]):
    """A function whose every call is a task run: a span, a run context, retries, a state."""

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        retries: int | None = None,
        retry_delay_seconds: RetryDelay | None = None,
        retry_jitter_factor: float | None = None,
        retry_condition_fn: Callable[..., bool] | None = None,
        timeout_seconds: float | None = None,
        log_prints: bool | None = None,
        task_run_name: str | None = None,
    ) -> None:
        self._init_options(
            fn, name, "task", tags, retries, retry_delay_seconds, retry_jitter_factor, timeout_seconds,
            log_prints, description,
        )
        self.static_attributes[semconv.TASK_NAME] = self.name
        self.span_name = semconv.task_span_name(self.name)
        self.retry_condition_fn = retry_condition_fn
        self.task_run_name = task_run_name

    def with_options(self, **options: Any) -> Task[P, R]:
        """A copy of this task with some options changed (``name``, ``retries``, ``tags``...)."""
        current = {
            "name": self.name, "description": self.description, "tags": self.tags, "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds, "retry_jitter_factor": self.retry_jitter_factor,
            "retry_condition_fn": self.retry_condition_fn, "timeout_seconds": self.timeout_seconds,
            "log_prints": self.log_prints, "task_run_name": self.task_run_name,
        }
        unknown = set(options) - set(current)
        if unknown:
            raise TypeError(f"with_options() got unknown options {sorted(unknown)}; valid: {sorted(current)}.")
        return Task(self.fn, **{**current, **options})

    @overload
    def __call__(
        self: Task[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]: ...
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the task now, in this thread; return its value (``return_state=True``: its final State)."""
        from otelflow import engine

        return_state, wait_for = self._split_call_options(kwargs)
        parameters = self.binder.bind(args, kwargs)
        return_type = "state" if return_state else "result"
        if self.isasync:
            return engine.run_task_async(self, parameters, wait_for=wait_for, return_type=return_type)
        return engine.run_task(self, parameters, wait_for=wait_for, return_type=return_type)

    def submit(self, *args: P.args, **kwargs: P.kwargs) -> TaskRunFuture[R]:
        """Start a task run on the flow's task runner (a default thread pool outside flows); return its future."""
        _, wait_for = self._split_call_options(kwargs)
        parameters = self.binder.bind(args, kwargs)
        return _task_runner().submit(self, parameters, wait_for)

    def map(self, *args: Any, **kwargs: Any) -> FutureList[R]:
        """One task run per element of the iterable arguments; ``unmapped(x)`` passes ``x`` whole to each.

        Returns the futures as a :class:`~otelflow.futures.FutureList` (``.result()``, ``.wait()``).
        """
        _, wait_for = self._split_call_options(kwargs)
        parameters = self.binder.bind(args, kwargs)
        return _task_runner().map(self, parameters, wait_for)

    def __repr__(self) -> str:
        return f"Task(name={self.name!r})"


_default_runner: TaskRunner | None = None
_default_lock = threading.Lock()


def _task_runner() -> TaskRunner:
    ctx = FlowRunContext.get()
    if ctx is not None and ctx.task_runner is not None:
        return ctx.task_runner
    global _default_runner
    if _default_runner is None:
        with _default_lock:
            if _default_runner is None:
                from otelflow.task_runners import ThreadPoolTaskRunner

                _default_runner = ThreadPoolTaskRunner()
    return _default_runner


@overload
def task(__fn: Callable[P, R]) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    retries: int | None = None,
    retry_delay_seconds: RetryDelay | None = None,
    retry_jitter_factor: float | None = None,
    retry_condition_fn: Callable[..., bool] | None = None,
    timeout_seconds: float | None = None,
    log_prints: bool | None = None,
    task_run_name: str | None = None,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...
def task(__fn: Any = None, **options: Any) -> Any:
    """Make a function a task: ``@task`` or ``@task(name=..., retries=..., tags=[...], timeout_seconds=...)``."""
    if __fn is not None:
        return Task(__fn, **options)
    return cast(Any, functools.partial(Task, **options))

"""``@flow`` and :class:`Flow`: a function whose every call is a flow run, i.e. a root (or child) span.

Calling a flow validates its parameters against the function's type hints (as Prefect does), runs it,
waits for its task runs, resolves futures in its return value and returns the value (or, with
``return_state=True``, the final State). A flow called inside a flow is a subflow: its span is a child.

Example::

    @flow(log_prints=True)
    def pipeline(n: int = 3):
        with tags("critical", "production"):
            return process_item.map(range(n), unmapped({"factor": 10}), unmapped(2))
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from otelflow import semconv
from otelflow.task_runners import TaskRunner, ThreadPoolTaskRunner
from otelflow.tasks import RetryDelay, _RunOptions

__all__ = ["Flow", "flow"]

P = ParamSpec("P")
R = TypeVar("R")


class Flow(_RunOptions, Generic[P, R]):
    """A function whose every call is a flow run."""

    def __init__(
        self,
        fn: Callable[P, R],
        name: str | None = None,
        description: str | None = None,
        version: str | None = None,
        flow_run_name: str | Callable[[], str] | None = None,
        task_runner: TaskRunner | None = None,
        retries: int | None = None,
        retry_delay_seconds: RetryDelay | None = None,
        timeout_seconds: float | None = None,
        validate_parameters: bool = True,
        log_prints: bool | None = None,
        tags: Iterable[str] | None = None,
    ) -> None:
        self._init_options(
            fn, name, "flow", tags, retries, retry_delay_seconds, None, timeout_seconds, log_prints, description
        )
        if task_runner is not None and not isinstance(task_runner, TaskRunner):
            raise TypeError(
                f"task_runner must be a TaskRunner instance (e.g. ThreadPoolTaskRunner(max_workers=4)), "
                f"got {task_runner!r}."
            )
        self.task_runner: TaskRunner = task_runner or ThreadPoolTaskRunner()
        self.version = version
        self.flow_run_name = flow_run_name
        self.validate_parameters = validate_parameters
        self.static_attributes[semconv.FLOW_NAME] = self.name
        self.span_name = semconv.flow_span_name(self.name)

    def with_options(self, **options: Any) -> Flow[P, R]:
        """A copy of this flow with some options changed."""
        current = {
            "name": self.name, "description": self.description, "version": self.version,
            "flow_run_name": self.flow_run_name, "task_runner": self.task_runner, "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds, "timeout_seconds": self.timeout_seconds,
            "validate_parameters": self.validate_parameters, "log_prints": self.log_prints, "tags": self.tags,
        }
        unknown = set(options) - set(current)
        if unknown:
            raise TypeError(f"with_options() got unknown options {sorted(unknown)}; valid: {sorted(current)}.")
        return Flow(self.fn, **{**current, **options})

    def _parameters(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        parameters = self.binder.bind(args, kwargs)
        if self.validate_parameters:
            parameters = self.binder.validate(parameters)
        return parameters

    @overload
    def __call__(
        self: Flow[P, Coroutine[Any, Any, R]], *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, R]: ...
    @overload
    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the flow; return its value (``return_state=True``: its final State). Async flows return a coroutine."""
        from otelflow import engine

        return_state, _ = self._split_call_options(kwargs)
        parameters = self._parameters(args, kwargs)
        return_type = "state" if return_state else "result"
        if self.isasync:
            return engine.run_flow_async(self, parameters, return_type=return_type)
        return engine.run_flow(self, parameters, return_type=return_type)

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...
@overload
def flow(
    *,
    name: str | None = None,
    description: str | None = None,
    version: str | None = None,
    flow_run_name: str | Callable[[], str] | None = None,
    task_runner: TaskRunner | None = None,
    retries: int | None = None,
    retry_delay_seconds: RetryDelay | None = None,
    timeout_seconds: float | None = None,
    validate_parameters: bool = True,
    log_prints: bool | None = None,
    tags: Iterable[str] | None = None,
) -> Callable[[Callable[P, R]], Flow[P, R]]: ...
def flow(__fn: Any = None, **options: Any) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(name=..., retries=..., task_runner=..., log_prints=True)``."""
    if __fn is not None:
        return Flow(__fn, **options)
    return cast(Any, functools.partial(Flow, **options))

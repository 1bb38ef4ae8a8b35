"""``@flow`` and :class:`Flow`: a function whose every call is a flow run, i.e. a root (or child) span.

As in Prefect 3: a flow's default name is its function name with ``_`` replaced by ``-`` (``my_fn`` ->
``my-fn``), its default version a hash of its source file; calling it validates the parameters against
the type hints, runs it, waits for its task runs and derives its final state from what it returns (see
:func:`otelflow.states.return_value_to_state`). Futures returned from a flow come back to the caller as
their final States. A flow called inside a flow is a subflow: its span is a child.

Example::

    @flow(log_prints=True)
    def pipeline(n: int = 3):
        with tags("critical", "production"):
            return process_item.map(range(n), unmapped({"factor": 10}), unmapped(2))
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypeVar, Unpack, cast, overload

from otelflow import semconv
from otelflow.exceptions import InvalidNameError
from otelflow.task_runners import TaskRunner, ThreadPoolTaskRunner
from otelflow.tasks import (
    RunNameOption,
    StateHook,
    _check_run_name_template,
    _CommonOptions,
    _not_applicable,
    _RunOptions,
)

if TYPE_CHECKING:
    from otelflow.states import State

__all__ = ["Flow", "FlowOptions", "flow"]

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

BANNED_CHARACTERS = ["/", "%", "&", ">", "<"]
_WITHOUT_BANNED = re.compile(r"^[^" + re.escape("".join(BANNED_CHARACTERS)) + r"]+$")


class FlowOptions(_CommonOptions, total=False):
    """The options of ``@flow(...)``, ``Flow(...)`` and ``Flow.with_options(...)``."""

    flow_run_name: RunNameOption | None
    task_runner: TaskRunner | type[TaskRunner] | None
    validate_parameters: bool
    on_cancellation: Iterable[StateHook] | None
    on_crashed: Iterable[StateHook] | None


def _file_hash(fn: Callable[..., Any]) -> str | None:
    try:
        path = inspect.getsourcefile(fn)
        if path is None:
            return None
        with open(path, "rb") as handle:
            return hashlib.md5(handle.read(), usedforsecurity=False).hexdigest()
    except (TypeError, OSError):
        return None  # REPL, <stdin>, generated code


class Flow(_RunOptions, Generic[P, R]):
    """A function whose every call is a flow run."""

    _kind = "flow"
    _option_names = frozenset(FlowOptions.__annotations__) | frozenset(_CommonOptions.__annotations__)

    def __init__(self, fn: Callable[P, R], **options: Unpack[FlowOptions]) -> None:
        self._init_options(fn, options)
        if not _WITHOUT_BANNED.match(self.name):
            raise InvalidNameError(
                f"Name {self.name!r} contains an invalid character. Must not contain any of: {BANNED_CHARACTERS}."
            )
        task_runner = options.get("task_runner")
        if isinstance(task_runner, type) and issubclass(task_runner, TaskRunner):
            task_runner = task_runner()
        if task_runner is not None and not isinstance(task_runner, TaskRunner):
            raise TypeError(
                f"task_runner must be a TaskRunner (e.g. ThreadPoolTaskRunner(max_workers=4)), got {task_runner!r}."
            )
        self.task_runner: TaskRunner = task_runner or ThreadPoolTaskRunner()
        if self.version is None:
            self.version = _file_hash(self.fn)
        self.flow_run_name: RunNameOption | None = options.get("flow_run_name")
        _check_run_name_template(self.flow_run_name, "flow_run_name", self.binder.signature, f"flow {self.name!r}")
        self.validate_parameters: bool = options.get("validate_parameters", True)
        self.should_validate_parameters = self.validate_parameters
        self.static_attributes[semconv.FLOW_NAME] = self.name
        self.span_name = semconv.flow_span_name(self.name)
        # Prefect's result options: the default of the flow's tasks, and how the flow's own return value is kept.
        persist = options.get("persist_result")
        storage = options.get("result_storage")
        serializer = options.get("result_serializer")
        if persist is None and (storage is not None or serializer is not None):
            persist = True
        self.persist_result: bool | None = None if persist is None else bool(persist)
        if storage is not None:
            from otelflow.filesystems import is_block_slug, resolve_result_storage

            if not is_block_slug(storage):  # a saved block is looked up at run time
                storage = resolve_result_storage(storage)
        if serializer is not None:
            from otelflow.serializers import resolve_serializer

            serializer = resolve_serializer(serializer)
        self.result_storage: Any = storage
        self.result_serializer: Any = serializer
        in_memory = options.get("cache_result_in_memory")
        self.cache_result_in_memory: bool = True if in_memory is None else bool(in_memory)

    def _default_name(self, fn: Callable[..., Any]) -> str:
        return str(getattr(fn, "__name__", type(fn).__name__)).replace("_", "-").replace("<lambda>", "unknown-lambda")

    on_cancellation_hooks: list[StateHook]
    on_crashed_hooks: list[StateHook]

    def on_crashed(self, fn: StateHook) -> StateHook:
        """Register ``fn(flow, flow_run, state)`` to run when a run of this flow ends Crashed (decorator form)."""
        self.on_crashed_hooks.append(fn)
        return fn

    def on_cancellation(self, fn: StateHook) -> StateHook:
        """Register ``fn(flow, flow_run, state)`` to run when a run of this flow is cancelled (decorator form)."""
        self.on_cancellation_hooks.append(fn)
        return fn

    def with_options(self, **options: Unpack[FlowOptions]) -> Flow[P, R]:
        """A copy of this flow with some options changed."""
        return cast("Flow[P, R]", self._with_options(options))

    def validate_parameters_of(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """Validate and coerce ``parameters`` against the function's type hints (pydantic), as Prefect does."""
        return self.binder.validate(parameters)

    @overload
    def __call__(  # type: ignore[overload-overlap]  # an async fn is also a T-returning fn; the first match wins
        self: Flow[P, Coroutine[Any, Any, T]], *args: P.args, **kwargs: P.kwargs
    ) -> Coroutine[Any, Any, T]: ...
    @overload
    def __call__(self: Flow[P, T], *args: P.args, **kwargs: P.kwargs) -> T: ...
    @overload
    def __call__(
        self: Flow[P, Coroutine[Any, Any, T]], *args: Any, return_state: Literal[True], **kwargs: Any
    ) -> Coroutine[Any, Any, State[T]]: ...
    @overload
    def __call__(self: Flow[P, T], *args: Any, return_state: Literal[True], **kwargs: Any) -> State[T]: ...
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the flow; return its value (``return_state=True``: its final State). Async flows return a coroutine."""
        from otelflow import engine

        return_state, wait_for = self._split_call_options(kwargs)
        parameters = self.binder.bind(args, kwargs)
        return_type: engine.ReturnType = "state" if return_state else "result"
        if self.isgenerator:
            return engine.run_generator("flow", self, parameters, wait_for=wait_for, return_type=return_type)
        if self.isasync:
            return engine.run_flow_async(self, parameters, wait_for=wait_for, return_type=return_type)
        return engine.run_flow(self, parameters, wait_for=wait_for, return_type=return_type)

    # Prefect's deployment API needs its server and workers: each says so, and what to do instead.
    def serve(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: call the flow (on a schedule of your own: cron, a Kubernetes CronJob...)."""
        raise _not_applicable(f"{self.name}.serve()", "Call the flow directly, from your own scheduler.")

    def deploy(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: call the flow directly."""
        raise _not_applicable(f"{self.name}.deploy()", "Call the flow directly, from your own scheduler.")

    def to_deployment(self, *args: Any, **kwargs: Any) -> Any:
        """Not available: call the flow directly."""
        raise _not_applicable(f"{self.name}.to_deployment()", "Call the flow directly, from your own scheduler.")

    @classmethod
    def from_source(cls, *args: Any, **kwargs: Any) -> Any:
        """Not available: import the flow's module and call it."""
        raise _not_applicable("Flow.from_source()", "Import the flow's module and call the flow.")

    def __repr__(self) -> str:
        return f"Flow(name={self.name!r})"


@overload
def flow(__fn: Callable[P, R]) -> Flow[P, R]: ...
@overload
def flow(**options: Unpack[FlowOptions]) -> Callable[[Callable[P, R]], Flow[P, R]]: ...
def flow(__fn: Any = None, **options: Any) -> Any:
    """Make a function a flow: ``@flow`` or ``@flow(name=..., retries=..., task_runner=..., log_prints=True)``."""
    if __fn is not None:
        return Flow(__fn, **options)
    return cast(Any, functools.partial(Flow, **options))

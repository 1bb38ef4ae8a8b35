"""Run contexts: what is running right now, in this thread or task, and how to carry it elsewhere.

One ``ContextVar`` per context class (as structlog keeps one per concern). Entering a context sets
its variable and keeps the token; exiting resets it. Because they are plain context variables, the
OTel context and these travel together wherever ``contextvars.copy_context()`` goes: the default
task runner copies the caller's context into each worker thread.

Across processes and services the context travels as a W3C header set: :func:`serialize_context`
and :func:`hydrated_context`.

Example::

    from otelflow import flow, task, tags
    from otelflow.context import FlowRunContext, TaskRunContext

    @task
    def analyze_data():
        context = TaskRunContext.get()
        if context:
            print(f"Task Run ID: {context.task_run.id}")

    @flow
    def data_workflow():
        print(FlowRunContext.get().flow_run.id)
        with tags("critical", "production"):
            analyze_data()
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import functools
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace

from otelflow import semconv

if TYPE_CHECKING:
    from otelflow.flows import Flow
    from otelflow.settings import Settings
    from otelflow.states import State
    from otelflow.task_runners import TaskRunner
    from otelflow.tasks import Task

__all__ = [
    "ContextModel",
    "FlowRun",
    "FlowRunContext",
    "MissingContextError",
    "Profile",
    "SettingsContext",
    "TagsContext",
    "TaskRun",
    "TaskRunContext",
    "get_run_context",
    "get_settings_context",
    "hydrated_context",
    "serialize_context",
    "tags",
]


class MissingContextError(RuntimeError):
    """Raised when an API that needs a running flow or task (``get_run_logger()``) is called outside one."""


@dataclasses.dataclass(slots=True, eq=False)
class FlowRun:
    """One run of a flow: its identity, tags and state.

    ``remote`` is True for the run identity restored by :func:`hydrated_context` (the run executes
    in another process; only its id, name, flow name and tags are known here).
    """

    id: uuid.UUID
    name: str
    flow_name: str
    tags: list[str] = dataclasses.field(default_factory=list)
    parameters: dict[str, Any] = dataclasses.field(default_factory=dict)
    run_count: int = 0
    state: State[Any] | None = None
    parent_task_run_id: uuid.UUID | None = None
    remote: bool = False
    # str(id), computed once: every task run of the flow carries it.
    id_str: str = dataclasses.field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id_str:
            self.id_str = str(self.id)

    @property
    def state_name(self) -> str | None:
        """Name of the current state (``None`` before the run starts)."""
        return self.state.name if self.state else None


@dataclasses.dataclass(slots=True, eq=False)
class TaskRun:
    """One run of a task: identity, tags, map index (``None`` unless mapped), attempts so far and state."""

    id: uuid.UUID
    name: str
    task_name: str
    flow_run_id: uuid.UUID | None = None
    tags: list[str] = dataclasses.field(default_factory=list)
    map_index: int | None = None
    run_count: int = 0
    state: State[Any] | None = None
    remote: bool = False
    # What the engine knew when it created the run (the flow run's id as a string and its flow's name).
    flow_run_id_str: str = dataclasses.field(default="", repr=False, compare=False)
    flow_name: str = dataclasses.field(default="", repr=False, compare=False)
    # str(id), computed once: the span and every run log record carry it.
    id_str: str = dataclasses.field(default="", repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.id_str:
            self.id_str = str(self.id)

    @property
    def state_name(self) -> str | None:
        """Name of the current state (``None`` before the run starts)."""
        return self.state.name if self.state else None


class ContextModel:
    """Base of otelflow's run contexts: enter to make it current, ``get()`` to read the current one.

    Contexts are entered once at a time (re-entering the same object raises), exited in reverse order,
    and restore whatever was current before.
    """

    __var__: ClassVar[ContextVar[Any]]
    __slots__ = ("_token",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__var__" not in cls.__dict__:
            cls.__var__ = ContextVar(cls.__name__)

    def __init__(self) -> None:
        self._token: Token[Any] | None = None

    @classmethod
    def get(cls) -> Self | None:
        """The current context of this type, or ``None``."""
        return cast("Self | None", cls.__var__.get(None))

    def __enter__(self) -> Self:
        if self._token is not None:
            raise RuntimeError(f"{type(self).__name__} is already entered; a context can be entered once at a time.")
        self._token = self.__var__.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is None:
            raise RuntimeError(f"{type(self).__name__} was exited without being entered.")
        self.__var__.reset(self._token)
        self._token = None

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A shallow copy (not entered), with ``update`` applied (pydantic-style name, as Prefect's)."""
        new = object.__new__(type(self))
        for cls in type(self).__mro__:
            for slot in getattr(cls, "__slots__", ()):
                if hasattr(self, slot):
                    object.__setattr__(new, slot, getattr(self, slot))
        new._token = None
        for key, value in (update or {}).items():
            setattr(new, key, value)
        return new

    def serialize(self) -> dict[str, Any]:
        """The context's public fields as a dict (values are not deep-copied)."""
        return {
            slot: getattr(self, slot)
            for cls in type(self).__mro__
            for slot in getattr(cls, "__slots__", ())
            if not slot.startswith("_") and hasattr(self, slot)
        }


class RunContext(ContextModel):
    """What flow and task run contexts share: the run's OTel span, its parameters and start time."""

    __slots__ = ("_log_cache", "_otel_context", "_start_ns", "client", "parameters", "span")

    def __init__(
        self,
        parameters: dict[str, Any] | None = None,
        span: trace.Span | None = None,
        start_ns: int | None = None,
        otel_ctx: otel_context.Context | None = None,
    ) -> None:
        super().__init__()
        self.parameters: dict[str, Any] = parameters if parameters is not None else {}
        self.span: trace.Span = span if span is not None else trace.INVALID_SPAN
        # The OTel context carrying the run's span, when the engine made one (run logs reuse it).
        self._otel_context = otel_ctx
        # What run logging computed for this run on its first record (see otelflow.logging._runinfo).
        self._log_cache: list[Any] | None = None
        self._start_ns = start_ns if start_ns is not None else time.time_ns()
        # Prefect exposes an API client here; otelflow has no server, so it is always None.
        self.client: None = None

    def model_copy(self, *, update: Mapping[str, Any] | None = None) -> Self:
        """A shallow copy (not entered), with ``update`` applied (pydantic-style name, as Prefect's)."""
        new = super().model_copy(update=update)
        new._log_cache = None  # made again for the copy: the update may change the run
        return new

    @property
    def start_time(self) -> datetime.datetime:
        """When the run started (UTC), as Prefect's ``RunContext.start_time``."""
        return datetime.datetime.fromtimestamp(self._start_ns / 1e9, tz=datetime.UTC)


class FlowRunContext(RunContext):
    """The current flow run: ``flow``, ``flow_run``, ``parameters``, ``task_runner``, ``background_tasks``.

    Inside :func:`hydrated_context` with a remote run identity, ``flow`` is ``None`` and
    ``flow_run.remote`` is True.
    """

    __slots__ = ("background_tasks", "flow", "flow_run", "log_prints", "task_runner")

    def __init__(
        self,
        flow: Flow[..., Any] | None = None,
        flow_run: FlowRun | None = None,
        parameters: dict[str, Any] | None = None,
        task_runner: TaskRunner | None = None,
        span: trace.Span | None = None,
        background_tasks: set[Any] | None = None,
        start_ns: int | None = None,
        log_prints: bool = False,
        otel_ctx: otel_context.Context | None = None,
    ) -> None:
        super().__init__(parameters, span, start_ns, otel_ctx)
        self.flow = flow
        self.flow_run = flow_run
        self.task_runner = task_runner
        self.background_tasks: set[Any] = background_tasks if background_tasks is not None else set()
        # Whether print() in this flow run (and in task runs that do not say otherwise) is a run log.
        self.log_prints = log_prints


class TaskRunContext(RunContext):
    """The current task run: ``task``, ``task_run``, ``parameters``."""

    __slots__ = ("task", "task_run")

    def __init__(
        self,
        task: Task[..., Any] | None = None,
        task_run: TaskRun | None = None,
        parameters: dict[str, Any] | None = None,
        span: trace.Span | None = None,
        start_ns: int | None = None,
        otel_ctx: otel_context.Context | None = None,
    ) -> None:
        # Made once per task run: the fields are set here rather than through the base classes' __init__.
        self._token = None
        self.parameters = parameters if parameters is not None else {}
        self.span = span if span is not None else trace.INVALID_SPAN
        self._otel_context = otel_ctx
        self._log_cache = None
        self._start_ns = start_ns if start_ns is not None else time.time_ns()
        self.client = None
        self.task = task
        self.task_run = task_run


class TagsContext(ContextModel):
    """The tags applied to runs started here. Use :func:`tags` rather than entering one yourself."""

    __slots__ = ("current_tags",)

    def __init__(self, current_tags: Iterable[str] = ()) -> None:
        super().__init__()
        self.current_tags: set[str] = set(current_tags)

    @classmethod
    def get(cls) -> TagsContext:
        """The current tags context (an empty one outside any ``tags()`` block)."""
        return cls.__var__.get(None) or TagsContext()

    def add_tags(self, *new_tags: str) -> None:
        """Add tags to this context (runs started afterwards in it carry them)."""
        self.current_tags.update(_check_tags(new_tags))

    def remove_tags(self, *old_tags: str) -> None:
        """Remove tags from this context."""
        self.current_tags.difference_update(old_tags)


@dataclasses.dataclass(slots=True, frozen=True)
class Profile:
    """A named set of settings (otelflow has one: the environment)."""

    name: str = "default"
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class SettingsContext(ContextModel):
    """The settings in force: ``profile`` and ``settings`` (an :class:`otelflow.settings.Settings`)."""

    __slots__ = ("profile", "settings")

    def __init__(self, profile: Profile | None = None, settings: Settings | None = None) -> None:
        super().__init__()
        if settings is None:
            from otelflow.settings import get_settings

            settings = get_settings()
        self.settings = settings
        self.profile = profile or Profile("default", settings.model_dump())

    @classmethod
    def get(cls) -> SettingsContext:
        """The current settings context (one stable object for the environment's settings when none was entered)."""
        entered = cls.__var__.get(None)
        if entered is not None:
            return cast(SettingsContext, entered)
        from otelflow.settings import get_settings

        settings = get_settings()
        cached = _root_settings_context
        if cached is None or cached.settings is not settings:
            cached = SettingsContext(settings=settings)
            globals()["_root_settings_context"] = cached
        return cached


_root_settings_context: SettingsContext | None = None


def get_settings_context() -> SettingsContext:
    """The current :class:`SettingsContext` (Prefect's ``get_settings_context``)."""
    return SettingsContext.get()


def _check_tags(values: Iterable[Any]) -> list[str]:
    checked = []
    for value in values:
        if not isinstance(value, str):
            raise TypeError(
                f"Tags must be strings, got {type(value).__name__} {value!r}; convert it with str() first."
            )
        checked.append(value)
    return checked


@contextlib.contextmanager
def tags(*new_tags: str, **kwargs: Any) -> Iterator[set[str]]:
    """Add tags to every flow and task run started inside the block; nested blocks add to the outer ones.

    Example::

        with tags("production", "etl"):
            my_flow()   # the flow run and its task runs carry both tags

    Yields the full set of tags now in force.
    """
    if kwargs:
        raise TypeError(f"tags() got unexpected keyword arguments {sorted(kwargs)}; pass tags as strings.")
    current = TagsContext.get().current_tags
    with TagsContext(current.union(_check_tags(new_tags))) as ctx:
        yield ctx.current_tags


def get_run_context() -> FlowRunContext | TaskRunContext:
    """The innermost run context (task run before flow run); raises :class:`MissingContextError` outside."""
    ctx: FlowRunContext | TaskRunContext | None = TaskRunContext.get() or FlowRunContext.get()
    if ctx is None:
        raise MissingContextError("No run context available. You are not in a flow or task run context.")
    return ctx


# --- crossing process and service boundaries ---------------------------------------------------------


def _run_baggage() -> dict[str, str]:
    """otelflow's baggage entries for the current run (task and flow identity, tags)."""
    entries: dict[str, str] = {}
    flow_ctx = FlowRunContext.get()
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    if flow_run is not None:
        entries[semconv.FLOW_RUN_ID] = flow_run.id_str
        entries[semconv.FLOW_RUN_NAME] = flow_run.name
        entries[semconv.FLOW_NAME] = flow_run.flow_name
    task_ctx = TaskRunContext.get()
    task_run = task_ctx.task_run if task_ctx is not None else None
    if task_run is not None and flow_run is not None and task_run.flow_run_id != flow_run.id:
        # A subflow called inside a task: the task context is still set but belongs to the parent flow
        # run; pairing its id with the subflow's run id would name a task run the subflow does not have.
        task_run = None
    if task_run is not None:
        entries[semconv.TASK_RUN_ID] = task_run.id_str
        entries[semconv.TASK_RUN_NAME] = task_run.name
    current_tags = TagsContext.get().current_tags
    if task_run is not None:
        current_tags = current_tags.union(task_run.tags)
    elif flow_run is not None:
        current_tags = current_tags.union(flow_run.tags)
    # Commas separate the tags; a tag containing one cannot survive the trip, so it is dropped here
    # rather than split into two wrong tags on the other side.
    tags_value = ",".join(sorted(t for t in current_tags if t and "," not in t))
    if tags_value:  # an empty member would restore as "no tags" anyway; do not spend bytes on it
        entries[semconv.TAGS] = tags_value
    return entries


def serialize_context() -> dict[str, str]:
    """The current run context as a W3C header set: ``traceparent``, ``tracestate`` (if any), ``baggage``.

    The baggage carries the run identity (flow run id/name, flow name, task run id/name) and tags,
    plus any baggage already in the OTel context. The dict is usable as HTTP headers, message
    headers, environment variables or JSON, and is what :func:`hydrated_context` takes.

    Example::

        @flow
        def parent_flow():
            headers = serialize_context()
            requests.post(url, json=payload, headers=headers)
    """
    from otelflow import propagation

    entries = _run_baggage()
    context = None
    current = otel_baggage.get_all()
    if current:
        # otelflow's keys describe the run current *here*. One left in the OTel baggage by an outer
        # hydrated_context (say the sender's task run id) but not set by the current run (a local flow run
        # started inside it) is stale: sending it would pair the sender's task run with the local flow run.
        stale = [key for key in semconv.BAGGAGE_KEYS if key in current and key not in entries]
        if stale:
            context = otel_context.get_current()
            for key in stale:
                context = otel_baggage.remove_baggage(key, context)
    return propagation.to_carrier(context, extra_baggage=entries)


def _parse_uuid(value: str | None) -> uuid.UUID | None:
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


def _hydrate(carrier: Mapping[str, Any] | Iterable[tuple[str, str]] | None) -> list[Callable[[], None]]:
    """Make the carrier's context current; return the undo steps (run them in reverse order).

    Flat token-based steps rather than a generator + ExitStack: hydration runs once per request or
    message, and this saves about a third of what it costs on top of parsing the carrier.
    """
    from otelflow import propagation

    restored = propagation.from_carrier(carrier)
    entries = propagation.otelflow_baggage(restored)
    flow_run_id = _parse_uuid(entries.get(semconv.FLOW_RUN_ID))
    task_run_id = _parse_uuid(entries.get(semconv.TASK_RUN_ID))
    remote_tags = [t for t in entries.get(semconv.TAGS, "").split(",") if t]
    remote_span = trace.get_current_span(restored)
    flow_ctx: FlowRunContext | None = None
    if flow_run_id is not None:
        flow_run = FlowRun(
            id=flow_run_id,
            name=entries.get(semconv.FLOW_RUN_NAME, ""),
            flow_name=entries.get(semconv.FLOW_NAME, ""),
            tags=remote_tags,
            remote=True,
        )
        flow_ctx = FlowRunContext(flow_run=flow_run, span=remote_span)
    task_ctx: TaskRunContext | None = None
    if task_run_id is not None:
        task_run = TaskRun(
            id=task_run_id,
            name=entries.get(semconv.TASK_RUN_NAME, ""),
            task_name="",
            flow_run_id=flow_run_id,
            tags=remote_tags,
            remote=True,
        )
        task_ctx = TaskRunContext(task_run=task_run, span=remote_span)
    tags_ctx = TagsContext(TagsContext.get().current_tags.union(remote_tags))
    # Nothing above changed any state; below, each change is paired with its undo at once. A carrier
    # without a run identity sets the run contexts to None: the caller's local run must not stay current,
    # spans and logs inside belong to the carrier's trace.
    undo: list[Callable[[], None]] = [functools.partial(otel_context.detach, otel_context.attach(restored))]
    undo.append(functools.partial(FlowRunContext.__var__.reset, FlowRunContext.__var__.set(flow_ctx)))
    undo.append(functools.partial(TaskRunContext.__var__.reset, TaskRunContext.__var__.set(task_ctx)))
    undo.append(functools.partial(TagsContext.__var__.reset, TagsContext.__var__.set(tags_ctx)))
    return undo


def _undo(steps: list[Callable[[], None]]) -> None:
    """Run undo steps in reverse order; every step runs even if one fails (the first error is raised)."""
    error: BaseException | None = None
    for step in reversed(steps):
        try:
            step()
        except BaseException as exc:  # pragma: no cover - a failing reset means a misuse elsewhere
            error = error or exc
    if error is not None:
        raise error


class hydrated_context(contextlib.AbstractContextManager[None], contextlib.AbstractAsyncContextManager[None]):
    """Restore a context serialized by :func:`serialize_context` (or any W3C header set) for a block.

    Inside, spans are children of the serialized span (same trace), the baggage and tags are back,
    and the remote run identity is current: ``get_run_logger()`` correlates with the remote run and
    ``FlowRunContext.get().flow_run.id`` is the sender's flow run id. The carrier is untrusted input:
    a malformed one gives a warning and a fresh trace, never an exception. Works as ``with`` and
    ``async with``; the previous context is restored on exit, also when the block raises.

    Example::

        with hydrated_context(request.headers):
            child_task()
            get_run_logger().info("done")
    """

    def __init__(self, carrier: Mapping[str, Any] | Iterable[tuple[str, str]] | None) -> None:
        self._carrier = carrier
        self._undo: list[Callable[[], None]] | None = None

    def __enter__(self) -> None:
        if self._undo is not None:
            raise RuntimeError("hydrated_context is already entered.")
        self._undo = _hydrate(self._carrier)

    def __exit__(self, *exc_info: Any) -> None:
        undo, self._undo = self._undo, None
        if undo is None:
            raise RuntimeError("hydrated_context was exited without being entered.")
        _undo(undo)

    async def __aenter__(self) -> None:
        self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)

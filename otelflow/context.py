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
from typing import TYPE_CHECKING, Any, ClassVar, Final, Self, cast

from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, InstanceOf, PrivateAttr, computed_field

from otelflow import semconv
from otelflow.exceptions import MissingContextError

if TYPE_CHECKING:
    from otelflow.flows import Flow
    from otelflow.settings import Settings
    from otelflow.states import State
    from otelflow.task_runners import TaskRunner
    from otelflow.tasks import Task

__all__ = [
    "ContextModel",
    "EngineContext",
    "FlowRun",
    "FlowRunContext",
    "MissingContextError",
    "Profile",
    "RunContext",
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
    # The flow run this one runs inside (a subflow's parent), None for a top-level run.
    parent_flow_run_id: uuid.UUID | None = None
    # When the current attempt started (UTC); None before the run starts.
    start_time: datetime.datetime | None = None
    remote: bool = False
    # str(id), computed once: every task run of the flow carries it.
    id_str: str = dataclasses.field(default="", repr=False, compare=False)
    # Whether the run persists results (its flow's persist_result, else its parent flow run's, else the setting):
    # the default of its tasks, as Prefect's FlowRunContext.persist_result.
    persist_result: bool = dataclasses.field(default=False, repr=False, compare=False)
    # Its flow's result_storage / result_serializer (None: the defaults): its tasks' defaults, as in Prefect.
    result_storage: Any = dataclasses.field(default=None, repr=False, compare=False)
    result_serializer: Any = dataclasses.field(default=None, repr=False, compare=False)

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
    # When the current attempt started (UTC): each retry moves it on. None before the run starts.
    start_time: datetime.datetime | None = None
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


def _instance_setter(name: str) -> Callable[[Any, Any], None]:
    """A setter for one of BaseModel's own instance attributes (``__dict__``, ``__pydantic_fields_set__``, ...).

    What ``model_construct()`` does with ``object.__setattr__``, through the attribute's descriptor on BaseModel
    when there is one (a slot, today: half the cost per call); ``object.__setattr__`` if a pydantic release
    stores it otherwise. Only pydantic's documented instance attributes are set this way.
    """
    setter = getattr(vars(BaseModel).get(name), "__set__", None)
    if setter is not None:
        return cast("Callable[[Any, Any], None]", setter)
    return lambda obj, value: object.__setattr__(obj, name, value)


_set_dict = _instance_setter("__dict__")
_set_fields_set = _instance_setter("__pydantic_fields_set__")
_set_extra = _instance_setter("__pydantic_extra__")
_set_private = _instance_setter("__pydantic_private__")

# The context variables of the run contexts, also at module level: a class attribute of a pydantic model goes
# through its metaclass's __getattr__ hook (several times slower), and the run logger looks them up per call.
_FLOW_RUN_VAR: Final[ContextVar[Any]] = ContextVar("flow_run")
_TASK_RUN_VAR: Final[ContextVar[Any]] = ContextVar("task_run")
_TAGS_VAR: Final[ContextVar[Any]] = ContextVar("tags")


class ContextModel(BaseModel):
    """Base of run contexts: a pydantic model that is entered to become current, as Prefect's ``ContextModel``.

    Subclass it for your own context: fields are validated, unknown fields are refused, and each subclass
    has its own ``ContextVar`` (declare ``__var__`` yourself to name it; subclasses of a subclass share
    their parent's, as in Prefect)::

        class RequestContext(ContextModel):
            request_id: str

        with RequestContext(request_id="r-1"):
            assert RequestContext.get().request_id == "r-1"

    A context object is entered once at a time (entering it again while entered raises), contexts are exited
    in reverse order, and exiting restores whatever was current before. ``model_copy()`` gives an object that
    is not entered.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    __var__: ClassVar[ContextVar[Any]]
    _token: Token[Any] | None = PrivateAttr(None)

    if TYPE_CHECKING:
        # As Prefect's: subclasses pass their keyword arguments through to pydantic's __init__.
        def __init__(self, **data: Any) -> None: ...

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        """Give a subclass without an inherited ``__var__`` a context variable of its own."""
        super().__pydantic_init_subclass__(**kwargs)
        if getattr(cls, "__var__", None) is None:
            cls.__var__ = ContextVar(cls.__name__)

    @classmethod
    def get(cls) -> Self | None:
        """The current context of this type, or ``None``."""
        current: Self | None = cls.__var__.get(None)
        return current

    # Entering and leaving use __pydantic_private__ (pydantic's documented store of private attribute values)
    # directly rather than ``self._token``, which goes through BaseModel.__getattr__: every task run enters
    # and leaves one context.
    def __enter__(self) -> Self:
        private: dict[str, Any] = self.__pydantic_private__  # type: ignore[assignment]
        if private["_token"] is not None:
            raise RuntimeError("Context already entered. Context enter calls cannot be nested.")
        private["_token"] = self.__var__.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        private: dict[str, Any] = self.__pydantic_private__  # type: ignore[assignment]
        token = private["_token"]
        if token is None:
            raise RuntimeError("Asymmetric use of context. Context exit called without an enter.")
        self.__var__.reset(token)
        private["_token"] = None

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy of the context (not entered), with ``update`` applied to its fields without validation."""
        new = super().model_copy(update=update, deep=deep)
        new._token = None
        return new

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        """The fields that were set, as a dict (``model_dump(exclude_unset=True)``, as Prefect's)."""
        return self.model_dump(exclude_unset=True, context={"include_secrets": include_secrets})

    def _construct_fast(self, fields: dict[str, Any], private: dict[str, Any]) -> None:
        """Make ``self`` hold ``fields`` (every field, in declaration order) and ``private``, without validation.

        What ``model_construct()`` does, minus its per-field default lookup: the engine builds one run context
        per task run from values it made itself, and a validating ``__init__`` would cost more than the rest of
        the context handling. Only pydantic's documented instance attributes are set.
        """
        _set_dict(self, fields)
        _set_fields_set(self, set(fields))
        _set_extra(self, None)
        _set_private(self, private)


class _PlainContext:
    """Entered and left as a :class:`ContextModel`, but a plain object: for otelflow's own contexts that keep
    their own constructor and attributes (``Transaction``). Same messages, same one-variable-per-class rule.
    """

    __var__: ClassVar[ContextVar[Any]]
    __slots__ = ("_token",)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if getattr(cls, "__var__", None) is None:
            cls.__var__ = ContextVar(cls.__name__)

    def __init__(self) -> None:
        self._token: Token[Any] | None = None

    @classmethod
    def get(cls) -> Self | None:
        """The current context of this type, or ``None``."""
        current: Self | None = cls.__var__.get(None)
        return current

    def __enter__(self) -> Self:
        if self._token is not None:
            raise RuntimeError("Context already entered. Context enter calls cannot be nested.")
        self._token = self.__var__.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is None:
            raise RuntimeError("Asymmetric use of context. Context exit called without an enter.")
        self.__var__.reset(self._token)
        self._token = None


def _late_types() -> dict[str, Any]:
    """The types otelflow's context fields name but this module does not import at its top: they import it
    (``Flow``, ``Task``...), or a run does not need them (``Settings`` loads pydantic-settings)."""
    from otelflow.flows import Flow
    from otelflow.settings import Settings
    from otelflow.states import State
    from otelflow.task_runners import TaskRunner
    from otelflow.tasks import Task

    return {"Flow": Flow, "Settings": Settings, "State": State, "TaskRunner": TaskRunner, "Task": Task}


class _OtelflowContextModel(ContextModel):
    """otelflow's own context models: their schema is built on first use (validation, ``model_dump``), when the
    types their fields name can be imported, and not at import time (importing otelflow is benchmarked)."""

    model_config = ConfigDict(defer_build=True)

    if TYPE_CHECKING:
        def __init__(self, **data: Any) -> None: ...

    @classmethod
    def model_rebuild(
        cls,
        *,
        force: bool = False,
        raise_errors: bool = True,
        _parent_namespace_depth: int = 2,
        _types_namespace: Mapping[str, Any] | None = None,
    ) -> bool | None:
        """Build the schema; ``Flow``, ``Task``, ``TaskRunner``, ``State`` and ``Settings`` need not be passed.

        Pydantic calls this public classmethod on the first use of a deferred model, so overriding it is how the
        forward references get resolved.
        """
        if _types_namespace is None:
            _types_namespace = _late_types()
        return super().model_rebuild(
            force=force,
            raise_errors=raise_errors,
            _parent_namespace_depth=_parent_namespace_depth,
            _types_namespace=_types_namespace,
        )


class RunContext(_OtelflowContextModel):
    """What flow and task run contexts share: the run's OTel span, its parameters and start time.

    ``client`` is Prefect's API client; otelflow has no server, so it is always ``None``.
    """

    parameters: dict[str, Any] = Field(default_factory=dict)
    span: trace.Span = trace.INVALID_SPAN
    client: None = None
    # The OTel context carrying the run's span, when the engine made one (run logs reuse it).
    _otel_context: otel_context.Context | None = PrivateAttr(None)
    # What run logging computed for this run on its first record (see otelflow.logging._runinfo).
    _log_cache: list[Any] | None = PrivateAttr(None)
    _start_ns: int = PrivateAttr(default_factory=time.time_ns)

    def _init_validated(self, start_ns: int | None, otel_ctx: otel_context.Context | None, **fields: Any) -> None:
        """Pydantic's validating ``__init__``: for subclasses, and for keywords otelflow does not know."""
        super().__init__(**fields)
        private: dict[str, Any] = self.__pydantic_private__  # type: ignore[assignment]
        private["_otel_context"] = otel_ctx
        if start_ns is not None:
            private["_start_ns"] = start_ns

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy of the context (not entered), with ``update`` applied to its fields without validation."""
        new = super().model_copy(update=update, deep=deep)
        new._log_cache = None  # made again for the copy: the update may change the run
        return new

    @computed_field  # type: ignore[prop-decorator]
    @property
    def start_time(self) -> datetime.datetime:
        """When the run started (UTC), as Prefect's ``RunContext.start_time``."""
        return datetime.datetime.fromtimestamp(self._start_ns / 1e9, tz=datetime.UTC)

    def serialize(self, include_secrets: bool = True) -> dict[str, Any]:
        """The run's fields that travel with it: ``parameters`` and ``start_time``, plus the subclass's own."""
        return self.model_dump(include=set(self._serialized_fields), context={"include_secrets": include_secrets})

    _serialized_fields: ClassVar[frozenset[str]] = frozenset({"parameters", "start_time"})


_TASK_RUN_FIELD_SET: Final = {"parameters", "span", "client", "task", "task_run"}


class FlowRunContext(RunContext):
    """The current flow run: ``flow``, ``flow_run``, ``parameters``, ``task_runner``, ``log_prints``,
    ``background_tasks``, ``start_time``.

    Inside :func:`hydrated_context` with a remote run identity, ``flow`` is ``None`` and
    ``flow_run.remote`` is True. Built by the engine without validation (see ``__init__``); a subclass
    is a validating pydantic model.
    """

    __var__: ClassVar[ContextVar[Any]] = _FLOW_RUN_VAR
    _serialized_fields: ClassVar[frozenset[str]] = frozenset(
        {"flow_run", "flow", "parameters", "log_prints", "start_time"}
    )

    flow: Flow[..., Any] | None = None
    flow_run: InstanceOf[FlowRun] | None = None
    task_runner: TaskRunner | None = None
    background_tasks: set[Any] = Field(default_factory=set)
    # Whether print() in this flow run (and in task runs that do not say otherwise) is a run log.
    log_prints: bool = False

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
        **data: Any,
    ) -> None:
        fields = {
            "parameters": parameters if parameters is not None else {},
            "span": span if span is not None else trace.INVALID_SPAN,
            "client": None,
            "flow": flow,
            "flow_run": flow_run,
            "task_runner": task_runner,
            "background_tasks": background_tasks if background_tasks is not None else set(),
            "log_prints": log_prints,
        }
        if data or type(self) is not FlowRunContext:
            self._init_validated(start_ns, otel_ctx, **fields, **data)
            return
        self._construct_fast(fields, {"_token": None, "_otel_context": otel_ctx, "_log_cache": None,
                                      "_start_ns": start_ns if start_ns is not None else time.time_ns()})

    @classmethod
    def get(cls) -> Self | None:
        """The current flow run context, or ``None``."""
        # The module's variable rather than cls.__var__ (slow to read on a pydantic class): asked per task call.
        current: Self | None = (_FLOW_RUN_VAR if cls is FlowRunContext else cls.__var__).get(None)
        return current


#: Prefect's name for the flow run context (``prefect.context.EngineContext``); the same class.
EngineContext = FlowRunContext


class TaskRunContext(RunContext):
    """The current task run: ``task``, ``task_run``, ``parameters``, ``start_time``.

    Built by the engine without validation (see ``__init__``); a subclass is a validating pydantic model.
    """

    __var__: ClassVar[ContextVar[Any]] = _TASK_RUN_VAR
    _serialized_fields: ClassVar[frozenset[str]] = frozenset({"task_run", "task", "parameters", "start_time"})

    task: Task[..., Any] | None = None
    task_run: InstanceOf[TaskRun] | None = None

    def __init__(
        self,
        task: Task[..., Any] | None = None,
        task_run: TaskRun | None = None,
        parameters: dict[str, Any] | None = None,
        span: trace.Span | None = None,
        start_ns: int | None = None,
        otel_ctx: otel_context.Context | None = None,
        **data: Any,
    ) -> None:
        if data or type(self) is not TaskRunContext:
            self._init_validated(
                start_ns, otel_ctx, task=task, task_run=task_run,
                parameters=parameters if parameters is not None else {},
                span=span if span is not None else trace.INVALID_SPAN, **data,
            )
            return
        # One per task run, from values the engine made: _construct_fast() inlined, no validation.
        fields = {"parameters": parameters if parameters is not None else {},
                  "span": span if span is not None else trace.INVALID_SPAN,
                  "client": None, "task": task, "task_run": task_run}
        _set_dict(self, fields)
        _set_fields_set(self, _TASK_RUN_FIELD_SET.copy())  # (a set's copy: no hashing, unlike set(fields))
        _set_extra(self, None)
        _set_private(self, {
            "_token": None, "_otel_context": otel_ctx, "_log_cache": None,
            "_start_ns": start_ns if start_ns is not None else time.time_ns(),
        })

    @classmethod
    def get(cls) -> Self | None:
        """The current task run context, or ``None``."""
        current: Self | None = (_TASK_RUN_VAR if cls is TaskRunContext else cls.__var__).get(None)
        return current


class TagsContext(_OtelflowContextModel):
    """The tags applied to runs started here. Use :func:`tags` rather than entering one yourself."""

    __var__: ClassVar[ContextVar[Any]] = _TAGS_VAR

    current_tags: set[str] = Field(default_factory=set)

    def __init__(self, current_tags: Iterable[str] = (), **data: Any) -> None:
        super().__init__(current_tags=current_tags, **data)

    @classmethod
    def get(cls) -> Self:
        """The current tags context (a new empty one outside any ``tags()`` block)."""
        current: Self | None = (_TAGS_VAR if cls is TagsContext else cls.__var__).get(None)
        return current if current is not None else cls()

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


class SettingsContext(_OtelflowContextModel):
    """The settings in force: ``profile`` and ``settings`` (an :class:`otelflow.settings.Settings`).

    ``SettingsContext()`` is the environment's settings; pass ``settings=`` for others. Enter it to make them
    current for the block: :func:`otelflow.settings.get_current_settings` returns them.
    """

    __var__: ClassVar[ContextVar[Any]] = ContextVar("settings")

    profile: InstanceOf[Profile]
    settings: Settings

    def __init__(self, profile: Profile | None = None, settings: Settings | None = None, **data: Any) -> None:
        if settings is None:
            from otelflow.settings import get_settings

            settings = get_settings()
        if profile is None:  # (anything but Settings is for validation to refuse)
            profile = Profile("default", settings.model_dump() if isinstance(settings, BaseModel) else {})
        super().__init__(profile=profile, settings=settings, **data)

    def __hash__(self) -> int:
        """Hash of the settings' values (as Prefect's, so a settings context can key a cache)."""
        return hash(self.settings.model_dump_json())

    @classmethod
    def get(cls) -> SettingsContext:
        """The current settings context (one stable object for the environment's settings when none was entered)."""
        entered: SettingsContext | None = cls.__var__.get(None)
        if entered is not None:
            return entered
        from otelflow.settings import get_settings

        settings = get_settings()
        cached = _root_settings_context
        if cached is None or cached.settings is not settings:
            cached = SettingsContext(settings=settings)
            globals()["_root_settings_context"] = cached
        return cached


def _trusted_tags_context(current_tags: set[str]) -> TagsContext:
    """A TagsContext holding ``current_tags`` (a new set of strings made by the caller), without validation:
    for tags() blocks and hydration, which check or parse the tags themselves."""
    ctx = object.__new__(TagsContext)
    ctx._construct_fast({"current_tags": current_tags}, {"_token": None})
    return ctx


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
    outer: TagsContext | None = _TAGS_VAR.get(None)
    current: set[str] = outer.current_tags if outer is not None else set()
    with _trusted_tags_context(current.union(_check_tags(new_tags))) as ctx:
        yield ctx.current_tags


def get_run_context() -> FlowRunContext | TaskRunContext:
    """The context of the run executing here: the task run's, or the flow run's (Prefect's ``get_run_context``).

    A subflow called inside a task is the flow run (the task's context is still set, but belongs to the parent
    flow run). Raises :class:`MissingContextError` outside any run.
    """
    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    if task_ctx is not None and flow_ctx is not None:
        flow_run, task_run = flow_ctx.flow_run, task_ctx.task_run
        if flow_run is not None and task_run is not None and flow_run.id != task_run.flow_run_id:
            return flow_ctx
        return task_ctx
    if task_ctx is not None:
        return task_ctx
    if flow_ctx is not None:
        return flow_ctx
    raise MissingContextError("No run context available. You are not in a flow or task run context.")


# --- crossing process and service boundaries ---------------------------------------------------------


def _run_baggage() -> dict[str, str]:
    """otelflow's baggage entries for the current run (task and flow identity, tags)."""
    entries: dict[str, str] = {}
    # The module's variables rather than X.get(): class attributes of pydantic models are slow to read.
    flow_ctx: FlowRunContext | None = _FLOW_RUN_VAR.get(None)
    flow_run = flow_ctx.flow_run if flow_ctx is not None else None
    if flow_run is not None:
        entries[semconv.FLOW_RUN_ID] = flow_run.id_str
        entries[semconv.FLOW_RUN_NAME] = flow_run.name
        entries[semconv.FLOW_NAME] = flow_run.flow_name
    task_ctx: TaskRunContext | None = _TASK_RUN_VAR.get(None)
    task_run = task_ctx.task_run if task_ctx is not None else None
    if task_run is not None and flow_run is not None and task_run.flow_run_id != flow_run.id:
        # A subflow called inside a task: the task context is still set but belongs to the parent flow
        # run; pairing its id with the subflow's run id would name a task run the subflow does not have.
        task_run = None
    if task_run is not None:
        entries[semconv.TASK_RUN_ID] = task_run.id_str
        entries[semconv.TASK_RUN_NAME] = task_run.name
    tags_ctx: TagsContext | None = _TAGS_VAR.get(None)
    current_tags: set[str] = tags_ctx.current_tags if tags_ctx is not None else set()
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
    outer_tags: TagsContext | None = _TAGS_VAR.get(None)
    tags_ctx = _trusted_tags_context(
        (outer_tags.current_tags if outer_tags is not None else set()).union(remote_tags)
    )
    # Nothing above changed any state; below, each change is paired with its undo at once. A carrier
    # without a run identity sets the run contexts to None: the caller's local run must not stay current,
    # spans and logs inside belong to the carrier's trace.
    undo: list[Callable[[], None]] = [functools.partial(otel_context.detach, otel_context.attach(restored))]
    undo.append(functools.partial(_FLOW_RUN_VAR.reset, _FLOW_RUN_VAR.set(flow_ctx)))
    undo.append(functools.partial(_TASK_RUN_VAR.reset, _TASK_RUN_VAR.set(task_ctx)))
    undo.append(functools.partial(_TAGS_VAR.reset, _TAGS_VAR.set(tags_ctx)))
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

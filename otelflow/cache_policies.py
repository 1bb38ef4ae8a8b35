"""Cache policies: how a task run's cache key is computed, as Prefect 3's ``prefect.cache_policies``.

A policy turns the task run context, the task's inputs and the flow's parameters into a key (a string)
or ``None`` (nothing is cached). Policies add up: the key of ``INPUTS + TASK_SOURCE`` is a hash of both
keys; subtracting a parameter name leaves it out of the hashed inputs::

    from otelflow import task
    from otelflow.cache_policies import INPUTS, TASK_SOURCE

    @task(cache_policy=(INPUTS + TASK_SOURCE - "debug").configure(isolation_level="SERIALIZABLE"))
    def fetch(url: str, debug: bool = False) -> bytes: ...

Keys are Prefect's for the same inputs and source (the same md5 over the same JSON bytes, see
:mod:`otelflow.utilities.hashing`). ``DEFAULT`` is ``INPUTS + TASK_SOURCE + RUN_ID``: a key per flow run.
"""

from __future__ import annotations

import copy
import inspect
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Self

from otelflow.utilities.hashing import HashError, hash_objects

if TYPE_CHECKING:
    from otelflow.context import TaskRunContext
    from otelflow.stores import Store
    from otelflow.transactions import IsolationLevel

__all__ = [
    "DEFAULT",
    "FLOW_PARAMETERS",
    "INPUTS",
    "NONE",
    "NO_CACHE",
    "RUN_ID",
    "STABLE_TRANSFORMS",
    "TASK_SOURCE",
    "CacheKeyFnPolicy",
    "CachePolicy",
    "CompoundCachePolicy",
    "FlowParameters",
    "Inputs",
    "RunId",
    "TaskSource",
    "task_input_hash",
]

#: A function that computes a cache key from the task run context and the task's inputs.
CacheKeyFn = Callable[["TaskRunContext", dict[str, Any]], str | None]

#: Transforms applied to input values of a type before hashing, for types whose pickle is not
#: deterministic. Filled when inputs are hashed (see :func:`_register_stable_transforms`).
STABLE_TRANSFORMS: dict[type, Callable[[Any], Any]] = {}


def _register_stable_transforms() -> None:
    # Only for modules the user already imported: a value of a type cannot exist before its module is
    # imported, and otelflow must not import pandas (slow, optional) on anyone's behalf.
    pandas = sys.modules.get("pandas")
    if pandas is not None and pandas.DataFrame not in STABLE_TRANSFORMS:
        # A DataFrame's pickle carries internal block layout that changes between equal frames.
        STABLE_TRANSFORMS[pandas.DataFrame] = lambda df: (
            list(df.columns),
            [df.iloc[:, i] for i in range(len(df.columns))],
        )


def _isolation_level(value: Any) -> Any:
    """``value`` itself (kept as given, as Prefect keeps it: ``"SERIALIZABLE"`` prints as such), once checked to
    name an :class:`~otelflow.transactions.IsolationLevel`."""
    if value is None:
        return None
    # Imported here: otelflow.transactions imports the engine's modules, which import this one.
    from otelflow.transactions import IsolationLevel

    if isinstance(value, IsolationLevel):
        return value
    try:
        IsolationLevel(value)
    except ValueError:
        raise ValueError(
            "isolation_level must be 'READ_COMMITTED' or 'SERIALIZABLE' (or an "
            f"otelflow.transactions.IsolationLevel), got {value!r}."
        ) from None
    return value


def _level_name(value: Any) -> Any:
    return getattr(value, "value", value)


def _first(preferred: Any, fallback: Any) -> Any:
    return preferred if preferred is not None else fallback


@dataclass
class CachePolicy:
    """Base of cache policies: ``compute_key(task_ctx, inputs, flow_parameters)`` gives a key or ``None``.

    ``key_storage`` (where cached results are kept: a store, a path), ``isolation_level``
    (``"READ_COMMITTED"``, ``"SERIALIZABLE"`` or an :class:`~otelflow.transactions.IsolationLevel`, kept as
    the enum) and ``lock_manager`` (kept as given) travel with the policy to the engine. Policies add
    (``+``) into a :class:`CompoundCachePolicy`; subtracting a string (``- "name"``) leaves that input out.
    """

    key_storage: Store | str | Path | None = None
    isolation_level: IsolationLevel | Literal["READ_COMMITTED", "SERIALIZABLE"] | None = None
    lock_manager: Any = None

    def __post_init__(self) -> None:
        self.isolation_level = _isolation_level(self.isolation_level)

    @classmethod
    def from_cache_key_fn(cls, cache_key_fn: CacheKeyFn) -> CacheKeyFnPolicy:
        """A policy whose key is ``cache_key_fn(task_run_context, inputs)``."""
        return CacheKeyFnPolicy(cache_key_fn=cache_key_fn)

    def configure(
        self,
        key_storage: Store | str | Path | None = None,
        lock_manager: Any = None,
        isolation_level: IsolationLevel | Literal["READ_COMMITTED", "SERIALIZABLE"] | None = None,
    ) -> Self:
        """A deep copy of the policy with the given settings replaced (``None`` keeps the current one).

        The copy shares this policy's key storage and lock manager objects rather than copying them: they
        are resources (connections, locks), not configuration.
        """
        memo: dict[int, Any] = {}
        for policy in _walk(self):
            for resource in (policy.key_storage, policy.lock_manager):
                if resource is not None:
                    memo[id(resource)] = resource
        new = copy.deepcopy(self, memo)
        if key_storage is not None:
            new.key_storage = key_storage
        if lock_manager is not None:
            new.lock_manager = lock_manager
        if isolation_level is not None:
            new.isolation_level = _isolation_level(isolation_level)
        return new

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The cache key of a task run, or ``None`` for no caching."""
        raise NotImplementedError

    def __sub__(self, other: str) -> CachePolicy:
        """Leave input ``other`` out of the key; a policy that does not hash inputs is returned as is."""
        if not isinstance(other, str):
            raise TypeError("Can only subtract strings from key policies.")
        return self

    def __add__(self, other: CachePolicy) -> CachePolicy:
        """A :class:`CompoundCachePolicy` of both (adding ``NO_CACHE`` changes nothing)."""
        if not isinstance(other, CachePolicy):
            return NotImplemented
        if isinstance(other, _None):
            return self
        _check_compatible(self, other)
        return CompoundCachePolicy(
            policies=[self, other],
            key_storage=_first(self.key_storage, other.key_storage),
            isolation_level=_first(self.isolation_level, other.isolation_level),
            lock_manager=_first(self.lock_manager, other.lock_manager),
        )


def _walk(policy: CachePolicy) -> Iterator[CachePolicy]:
    yield policy
    if isinstance(policy, CompoundCachePolicy):
        for member in policy.policies:
            yield from _walk(member)


def _check_compatible(one: CachePolicy, other: CachePolicy) -> None:
    """Prefect's errors for policies that disagree on where keys are kept, isolation, or locking."""
    for attribute, what in (
        ("key_storage", "storage locations"),
        ("isolation_level", "isolation levels"),
        ("lock_manager", "lock implementations"),
    ):
        mine, theirs = getattr(one, attribute), getattr(other, attribute)
        if attribute == "isolation_level":
            mine, theirs = _level_name(mine), _level_name(theirs)
        if mine is not None and theirs is not None and mine != theirs:
            raise ValueError(f"Cannot add CachePolicies with different {what}.")


@dataclass
class CacheKeyFnPolicy(CachePolicy):
    """A policy whose key is ``cache_key_fn(task_run_context, inputs)`` (a task's ``cache_key_fn``)."""

    cache_key_fn: CacheKeyFn | None = None

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """What ``cache_key_fn`` returns (``None`` without a function)."""
        if self.cache_key_fn is None:
            return None
        return self.cache_key_fn(task_ctx, inputs)


@dataclass
class CompoundCachePolicy(CachePolicy):
    """Several policies as one: the key is a hash of their keys, in order, leaving out ``None`` keys
    (``None`` when all are ``None``).

    Nested compound policies are flattened, and all :class:`Inputs` policies become one, placed last,
    excluding every name any of them excluded (sorted).
    """

    policies: list[CachePolicy] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__post_init__()
        flat = [
            member
            for policy in self.policies
            for member in (policy.policies if isinstance(policy, CompoundCachePolicy) else [policy])
        ]
        inputs_policies = [policy for policy in flat if isinstance(policy, Inputs)]
        self.policies = [policy for policy in flat if not isinstance(policy, Inputs)]
        if inputs_policies:
            excluded = {name for policy in inputs_policies for name in policy.exclude}
            self.policies.append(Inputs(exclude=sorted(excluded)))

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """A hash of the members' keys, or ``None`` when no member gives one."""
        keys: list[str] = []
        for policy in self.policies:
            key = policy.compute_key(task_ctx=task_ctx, inputs=inputs, flow_parameters=flow_parameters, **kwargs)
            if key is not None:
                keys.append(key)
        if not keys:
            return None
        # Prefect's docstring says the keys are sorted; its code (and so its keys) keeps them in order.
        return hash_objects(*keys, raise_on_failure=True)

    def __add__(self, other: CachePolicy) -> CachePolicy:
        """This compound policy with ``other``'s policies appended."""
        if not isinstance(other, CachePolicy):
            return NotImplemented
        # As Prefect: NO_CACHE is appended unchecked (its key is None, so the compound key is unchanged).
        if not isinstance(other, _None):
            _check_compatible(self, other)
        members = other.policies if isinstance(other, CompoundCachePolicy) else [other]
        return CompoundCachePolicy(
            policies=[*self.policies, *members],
            key_storage=_first(self.key_storage, other.key_storage),
            isolation_level=_first(self.isolation_level, other.isolation_level),
            lock_manager=_first(self.lock_manager, other.lock_manager),
        )

    def __sub__(self, other: str) -> CachePolicy:
        """Leave input ``other`` out, when one of the policies hashes inputs."""
        if not isinstance(other, str):
            raise TypeError("Can only subtract strings from key policies.")
        if not any(isinstance(policy, Inputs) for policy in self.policies):
            return self
        return replace(self, policies=[*self.policies, Inputs(exclude=[other])])


@dataclass
class _None(CachePolicy):
    """The policy whose key is always ``None``: no caching, nothing persisted (``NO_CACHE``)."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """Always ``None``."""
        return None

    def __add__(self, other: CachePolicy) -> CachePolicy:
        """``other`` itself: no caching plus a policy is that policy."""
        if not isinstance(other, CachePolicy):
            return NotImplemented
        return other


def _normalize_code_location(code: types.CodeType) -> types.CodeType:
    """The code object without where it was compiled (file, lines), in nested code objects too."""
    return code.replace(
        co_filename="",
        co_firstlineno=1,
        co_linetable=b"",
        co_consts=tuple(
            _normalize_code_location(const) if isinstance(const, types.CodeType) else const
            for const in code.co_consts
        ),
    )


# The source key of each task function, so a function's source is read once per process, not per run.
# Keyed on the function object, not its code object: code objects compare by value (two functions that
# differ only in a comment or a decorator line compare equal), and every function wrapped by one
# functools.wraps decorator shares the wrapper's code.
_SOURCE_KEYS: weakref.WeakKeyDictionary[Callable[..., Any], str] = weakref.WeakKeyDictionary()


def _source_key(fn: Callable[..., Any]) -> str:
    cacheable = isinstance(fn, types.FunctionType)
    if cacheable:
        cached = _SOURCE_KEYS.get(fn)
        if cached is not None:
            return cached
    try:
        try:
            # Unwraps functools.wraps decorators, and includes the function's own decorator lines (Prefect's).
            source = inspect.getsource(fn)
        except TypeError:  # a callable object: its class's source
            source = inspect.getsource(type(fn))
    except OSError:
        # No source to read (exec'd code, a REPL lambda): hash the code object without its file and line
        # numbers, so the key survives the function moving. Prefect falls back the same way, but only when
        # the error text mentions "source code"; otelflow does for any unreadable source.
        code = getattr(fn, "__code__", None)
        if not isinstance(code, types.CodeType):
            raise
        key = hash_objects(_normalize_code_location(code), raise_on_failure=True)
    else:
        key = hash_objects(source, raise_on_failure=True)
    assert key is not None  # raise_on_failure=True
    if cacheable:
        _SOURCE_KEYS[fn] = key
    return key


@dataclass
class TaskSource(CachePolicy):
    """A hash of the task function's source code (with its decorator lines), not of the tasks it calls.

    The same source gives the same key as Prefect. Without readable source (code run with ``exec``, a
    lambda typed at a REPL) the function's code object is hashed instead, without file and line numbers.
    """

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any] | None,
        flow_parameters: dict[str, Any] | None,
        **kwargs: Any,
    ) -> str | None:
        """The source hash, or ``None`` without a task."""
        task = task_ctx.task if task_ctx else None
        if task is None:
            return None
        # A task that carries its source (as Prefect's Task.source_code, which survives pickling) uses it.
        source = getattr(task, "source_code", None)
        if isinstance(source, str):
            return hash_objects(source, raise_on_failure=True)
        return _source_key(task.fn)


@dataclass
class FlowParameters(CachePolicy):
    """A hash of the flow run's parameters (``None`` when it has none)."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The parameters' hash."""
        if not flow_parameters:
            return None
        return hash_objects(flow_parameters, raise_on_failure=True)


@dataclass
class RunId(CachePolicy):
    """The flow run's id, or the task run's id for a task run outside a flow: a key per run."""

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The run id as a string."""
        task_run = task_ctx.task_run if task_ctx else None
        if task_run is None:
            return None
        run_id = task_run.flow_run_id if task_run.flow_run_id is not None else task_run.id
        return str(run_id)


_UNHASHABLE_ADVICE = (
    "This often occurs when task inputs contain objects that cannot be cached "
    "like locks, file handles, or other system resources.\n\n"
    "To resolve this, you can:\n"
    "  1. Exclude these arguments by defining a custom `cache_key_fn`\n"
    "  2. Disable caching by passing `cache_policy=NO_CACHE`\n"
)


@dataclass
class Inputs(CachePolicy):
    """A hash of the task's inputs, leaving out the names in ``exclude`` (``None`` without inputs).

    Raises ``ValueError`` (Prefect's message) when an input can be neither JSON-encoded nor pickled.
    """

    exclude: list[str] = field(default_factory=list)

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        """The hash of the inputs not excluded."""
        if not inputs:
            return None
        _register_stable_transforms()
        exclude = self.exclude or []
        hashed: dict[str, Any] = {}
        for name, value in inputs.items():
            if name not in exclude:
                transform = STABLE_TRANSFORMS.get(type(value))
                hashed[name] = transform(value) if transform is not None else value
        try:
            return hash_objects(hashed, raise_on_failure=True)
        except HashError as exc:
            raise ValueError(f"{exc}\n\n{_UNHASHABLE_ADVICE}") from exc

    def __sub__(self, other: str) -> CachePolicy:
        """This policy also leaving out input ``other``."""
        if not isinstance(other, str):
            raise TypeError("Can only subtract strings from key policies.")
        return replace(self, exclude=[*self.exclude, other])


INPUTS = Inputs()
NONE = _None()
NO_CACHE = _None()
TASK_SOURCE = TaskSource()
FLOW_PARAMETERS = FlowParameters()
RUN_ID = RunId()
DEFAULT = INPUTS + TASK_SOURCE + RUN_ID


# --- task_input_hash ---------------------------------------------------------------------------------------

_NUM_CHARS_TASK_KEY = 8
_TASK_KEYS: weakref.WeakKeyDictionary[Callable[..., Any], str] = weakref.WeakKeyDictionary()


def _task_key(fn: Callable[..., Any]) -> str:
    """Prefect's ``Task.task_key`` for a task function: ``"{name}-{first 8 hex of its code object's hash}"``.

    The hash is of the cloudpickled code object (a code object is not JSON), which includes its file name
    and first line: the key is stable across processes while the file does not move.
    """
    cacheable = isinstance(fn, types.FunctionType)
    if cacheable and (cached := _TASK_KEYS.get(fn)) is not None:
        return cached
    if not hasattr(fn, "__qualname__"):
        return f"{type(fn).__module__}.{type(fn).__qualname__}"
    name = fn.__qualname__.split(".")[-1]
    target: Any = fn  # a function, or an object with a __call__ method
    try:
        code: Any = getattr(target, "__code__", None)
        if code is None:
            code = target.__call__.__code__
    except AttributeError:
        raise AttributeError(
            f"{fn} is not a standard Python function object and could not be converted to a task."
        ) from None
    code_hash = hash_objects(code)
    key = f"{name}-{code_hash[:_NUM_CHARS_TASK_KEY] if code_hash else 'unknown'}"
    if cacheable:
        _TASK_KEYS[fn] = key
    return key


def task_input_hash(context: TaskRunContext, arguments: dict[str, Any]) -> str | None:
    """A ``cache_key_fn`` that hashes the task's inputs with its identity and bytecode (Prefect's).

    The key changes when the arguments or the function's bytecode change; ``None`` (no caching) when
    the arguments can be neither JSON-encoded nor pickled::

        @task(cache_key_fn=task_input_hash)
        def add(x: int, y: int) -> int: ...
    """
    task = context.task
    if task is None:
        return None
    task_key = getattr(task, "task_key", None) or _task_key(task.fn)
    return hash_objects(task_key, task.fn.__code__.co_code.hex(), arguments)

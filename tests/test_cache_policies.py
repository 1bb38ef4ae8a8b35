"""Cache policies and hashing as Prefect 3.9.1's: the same keys for the same inputs, the same arithmetic, the
same errors.

The hard-coded keys were computed with a real Prefect 3.9.1 (Python 3.11, cloudpickle 3.1) by calling the
same policy's ``compute_key`` (or ``prefect.utilities.hashing.hash_objects``) on the same values; each test
says how.
"""

from __future__ import annotations

import datetime
import decimal
import functools
import hashlib
import inspect
import json
import os
import subprocess
import sys
import textwrap
import threading
import types
import uuid
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

from otelflow import cache_policies, flow, task
from otelflow.cache_policies import (
    DEFAULT,
    FLOW_PARAMETERS,
    INPUTS,
    NO_CACHE,
    NONE,
    RUN_ID,
    TASK_SOURCE,
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    FlowParameters,
    Inputs,
    RunId,
    TaskSource,
    _None,
    task_input_hash,
)
from otelflow.context import TaskRun, TaskRunContext
from otelflow.transactions import IsolationLevel
from otelflow.utilities.hashing import HashError, file_hash, hash_objects, stable_hash

# The source text of this task is part of TASK_SOURCE / DEFAULT keys below: keep it byte for byte.


@task
def add(x: int, y: int) -> int:
    return x + y


ADD_SOURCE = "@task\ndef add(x: int, y: int) -> int:\n    return x + y\n"

TASK_RUN_ID = uuid.UUID(int=1)
FLOW_RUN_ID = uuid.UUID(int=2)

INPUTS_VALUES: dict[str, Any] = {
    "x": 1,
    "y": "two",
    "when": datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
    "id": uuid.UUID(int=42),
    "nested": {"b": [1, 2.5], "a": None},
}


def make_ctx(fn_task: Any = add, flow_run_id: uuid.UUID | None = FLOW_RUN_ID) -> TaskRunContext:
    """A task run context as the engine builds one, with fixed ids."""
    name = getattr(fn_task, "name", "t")
    run = TaskRun(id=TASK_RUN_ID, name=f"{name}-0", task_name=name, flow_run_id=flow_run_id)
    return TaskRunContext(task=fn_task, task_run=run)


def compute(policy: CachePolicy, inputs: dict[str, Any] | None = None, flow_parameters: dict[str, Any] | None = None,
            ctx: TaskRunContext | None = None) -> str | None:
    return policy.compute_key(task_ctx=ctx or make_ctx(), inputs=inputs if inputs is not None else INPUTS_VALUES,
                              flow_parameters=flow_parameters or {})


# --- keys are Prefect's -------------------------------------------------------------------------------------


def test_hash_objects_gives_prefects_hashes() -> None:
    # prefect.utilities.hashing.hash_objects(...) with the same arguments, in Prefect 3.9.1.
    assert hash_objects(1, 2, a="x") == "ba07a4c053e7fab93ff8022666bb5ab8"
    assert hash_objects({"b": 1, "a": [1, 2.5, None, True]}) == "93f14a18980abc77e08c885cfef82ed2"
    assert hash_objects(uuid.UUID(int=5), datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC),
                        decimal.Decimal("1.10")) == "f403f25264c080e9be380430e87f1da3"
    assert hash_objects({3, 1, 2}) == "4cd41fd702eb249f29684031654df45f"
    # Mixed key types cannot be sorted as JSON: both fall back to cloudpickle, with the same bytes.
    assert hash_objects({1: 2, "a": 3}) == "085de2f7c8a15f3579e2189190155219"


def test_policy_keys_are_prefects_for_the_same_inputs_and_source() -> None:
    # Prefect 3.9.1: a module holding ADD_SOURCE under `from prefect import task`, and
    # policy.compute_key(ctx, INPUTS_VALUES, {}) with ctx.task = that task, ctx.task_run.id = UUID(int=1),
    # ctx.task_run.flow_run_id = UUID(int=2).
    assert inspect.getsource(add.fn) == ADD_SOURCE
    assert compute(TASK_SOURCE) == "d766014a1f9fd753320624cbaa4f9432"
    assert compute(INPUTS) == "16c10cac03c5ff252a4c275b7b131d51"
    assert compute(INPUTS - "y") == "af286dbd29e0174bb3a83600f936766c"
    assert compute(RUN_ID) == str(FLOW_RUN_ID)
    assert compute(DEFAULT) == "abcbfdd09bf6963a7cfa72427163d785"
    assert compute(DEFAULT - "x") == "537b62345eb8c97bb8e4706f238046a9"
    assert compute(FLOW_PARAMETERS, flow_parameters={"p": 1}) == "06dc798be0f001cf8fcb541801a2ea6d"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11) or not cloudpickle.__version__.startswith("3.1"),
                    reason="the hash of a code object depends on the bytecode and on cloudpickle")
def test_task_source_without_source_hashes_the_code_like_prefect() -> None:
    # Prefect 3.9.1: exec("def f(x):\n    return x + 1\n", ns); TASK_SOURCE.compute_key on task(ns["f"]).
    namespace: dict[str, Any] = {}
    # dont_inherit: not this module's `from __future__ import annotations`, a flag of the code object.
    exec(compile("def f(x):\n    return x + 1\n", "<string>", "exec", dont_inherit=True), namespace)
    with pytest.raises(OSError):
        inspect.getsource(namespace["f"])
    assert compute(TASK_SOURCE, ctx=make_ctx(task(namespace["f"]))) == "292bcd248858bfab30ff9dc538741a86"


# --- keys are stable across processes ----------------------------------------------------------------------

_KEY_SCRIPT = """
import json, sys, uuid
sys.path.insert(0, sys.argv[1])
import keyed_tasks
from otelflow.cache_policies import INPUTS, TASK_SOURCE, DEFAULT
from otelflow.context import TaskRun, TaskRunContext
ctx = TaskRunContext(task=keyed_tasks.add, task_run=TaskRun(id=uuid.UUID(int=1), name="add-0", task_name="add",
                                                             flow_run_id=uuid.UUID(int=2)))
inputs = {"tags": {"red", "green", "blue", "cyan"}, "n": 3}
print(json.dumps([TASK_SOURCE.compute_key(ctx, inputs, {}), INPUTS.compute_key(ctx, inputs, {}),
                  DEFAULT.compute_key(ctx, inputs, {}), "pandas" in sys.modules]))
"""


def test_keys_are_the_same_in_other_processes(tmp_path: Path) -> None:
    (tmp_path / "keyed_tasks.py").write_text(f"from otelflow import task\n\n\n{ADD_SOURCE}")
    results = []
    for seed in ("1", "2", "3"):  # set members of strings iterate in a different order under each seed
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", _KEY_SCRIPT, str(tmp_path)], env=env, capture_output=True,
                              text=True, check=True, timeout=120)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert results[0] == results[1] == results[2]
    task_source_key, inputs_key, default_key, pandas_imported = results[0]
    assert task_source_key == "d766014a1f9fd753320624cbaa4f9432"  # Prefect's, as above: the same source text
    assert inputs_key == compute(INPUTS, {"tags": {"red", "green", "blue", "cyan"}, "n": 3})
    assert default_key == compute(DEFAULT, {"tags": {"cyan", "blue", "green", "red"}, "n": 3})
    assert pandas_imported is False  # hashing inputs never imports pandas


# --- policy arithmetic --------------------------------------------------------------------------------------


def test_default_is_inputs_task_source_and_run_id_with_inputs_last() -> None:
    assert isinstance(DEFAULT, CompoundCachePolicy)
    assert DEFAULT.policies == [TaskSource(), RunId(), Inputs()]


def test_compound_policies_flatten_and_merge_inputs_excludes_sorted() -> None:
    policy = (INPUTS - "b") + TASK_SOURCE + (FLOW_PARAMETERS + (INPUTS - "a" - "b"))
    assert isinstance(policy, CompoundCachePolicy)
    assert policy.policies == [TaskSource(), FlowParameters(), Inputs(exclude=["a", "b"])]
    assert (DEFAULT - "y" - "x").policies[-1] == Inputs(exclude=["x", "y"])
    assert CompoundCachePolicy(policies=[INPUTS, INPUTS - "q"]).policies == [Inputs(exclude=["q"])]


def test_compound_key_hashes_member_keys_in_order_skipping_none() -> None:
    ctx = make_ctx()
    keys = [TASK_SOURCE.compute_key(ctx, INPUTS_VALUES, {}), INPUTS.compute_key(ctx, INPUTS_VALUES, {})]
    assert compute(TASK_SOURCE + INPUTS + FLOW_PARAMETERS) == hash_objects(*keys)  # no flow parameters: None
    # Prefect's docstring says "sorted"; its keys are not: member order matters.
    assert compute(TASK_SOURCE + RUN_ID) != compute(RUN_ID + TASK_SOURCE)
    assert compute(CompoundCachePolicy(policies=[FLOW_PARAMETERS, NO_CACHE])) is None
    assert compute(CompoundCachePolicy()) is None


def test_subtracting_names_only_changes_policies_that_hash_inputs() -> None:
    assert Inputs(exclude=["x"]) == INPUTS - "x" and INPUTS.exclude == []  # a new policy; INPUTS unchanged
    assert TASK_SOURCE - "x" is TASK_SOURCE
    compound = TASK_SOURCE + RUN_ID
    assert compound - "x" is compound
    assert compute(INPUTS - "nested" - "when") == compute(INPUTS, {"x": 1, "y": "two", "id": uuid.UUID(int=42)})


@pytest.mark.parametrize("policy", [INPUTS, TASK_SOURCE, DEFAULT, NO_CACHE])
def test_only_strings_can_be_subtracted(policy: CachePolicy) -> None:
    with pytest.raises(TypeError, match=r"^Can only subtract strings from key policies\.$"):
        policy - 1  # type: ignore[operator]


def test_no_cache_adds_nothing() -> None:
    assert NO_CACHE + INPUTS is INPUTS
    assert INPUTS + NO_CACHE is INPUTS
    assert NONE == NO_CACHE and isinstance(NO_CACHE, _None)
    assert compute(NO_CACHE) is None
    # As Prefect: NO_CACHE added to a compound policy is kept as a member, and the key does not change.
    with_none = DEFAULT + NO_CACHE
    assert isinstance(with_none, CompoundCachePolicy) and NO_CACHE in with_none.policies
    assert compute(with_none) == compute(DEFAULT)


def test_adding_something_else_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unsupported operand"):
        INPUTS + 1  # type: ignore[operator]


@pytest.mark.parametrize(
    ("left", "right", "message"),
    [
        (INPUTS.configure(key_storage="/a"), TASK_SOURCE.configure(key_storage="/b"), "storage locations"),
        (INPUTS.configure(isolation_level="SERIALIZABLE"), TASK_SOURCE.configure(isolation_level="READ_COMMITTED"),
         "isolation levels"),
        (INPUTS.configure(lock_manager=object()), TASK_SOURCE.configure(lock_manager=object()),
         "lock implementations"),
        (DEFAULT.configure(key_storage="/a"), TASK_SOURCE.configure(key_storage="/b"), "storage locations"),
    ],
)
def test_policies_with_different_settings_do_not_add(left: CachePolicy, right: CachePolicy, message: str) -> None:
    with pytest.raises(ValueError, match=rf"^Cannot add CachePolicies with different {message}\.$"):
        left + right


def test_added_policies_keep_the_settings_one_of_them_has() -> None:
    lock_manager = object()
    policy = INPUTS.configure(key_storage="/cache") + TASK_SOURCE.configure(
        isolation_level=IsolationLevel.SERIALIZABLE, lock_manager=lock_manager)
    assert policy.key_storage == "/cache" and policy.lock_manager is lock_manager
    assert policy.isolation_level is IsolationLevel.SERIALIZABLE
    # A string and the enum are the same level (kept as given, as Prefect keeps it).
    assert (INPUTS.configure(isolation_level="SERIALIZABLE")
            + TASK_SOURCE.configure(isolation_level=IsolationLevel.SERIALIZABLE)).isolation_level == "SERIALIZABLE"


def test_configure_returns_a_deep_copy_sharing_storage_and_lock_manager() -> None:
    class Resource:
        def __init__(self) -> None:
            self.lock = threading.Lock()  # cannot be deep-copied

    storage, locks = Resource(), Resource()
    base = (INPUTS - "a") + TASK_SOURCE
    configured = base.configure(key_storage=storage, lock_manager=locks, isolation_level="READ_COMMITTED")
    assert configured is not base and base.key_storage is None and base.isolation_level is None
    assert configured.key_storage is storage and configured.lock_manager is locks
    assert configured.isolation_level == "READ_COMMITTED"  # as given, as Prefect keeps it
    assert isinstance(configured, CompoundCachePolicy) and isinstance(base, CompoundCachePolicy)
    assert configured.policies == base.policies and configured.policies[0] is not base.policies[0]
    again = configured.configure(isolation_level="SERIALIZABLE")
    assert again.key_storage is storage and again.lock_manager is locks  # shared, not copied
    assert INPUTS.configure() == INPUTS and INPUTS.configure() is not INPUTS


def test_isolation_level_is_checked() -> None:
    assert Inputs(isolation_level="SERIALIZABLE").isolation_level == "SERIALIZABLE"  # printed as Prefect prints it
    with pytest.raises(ValueError, match="isolation_level must be 'READ_COMMITTED' or 'SERIALIZABLE'"):
        INPUTS.configure(isolation_level="REPEATABLE_READ")  # type: ignore[arg-type]


def test_policies_compare_by_value_and_are_not_hashable() -> None:
    assert Inputs(exclude=["a"]) == Inputs(exclude=["a"]) != Inputs()
    assert CompoundCachePolicy() != NO_CACHE
    with pytest.raises(TypeError, match="unhashable"):
        hash(INPUTS)


# --- each policy ---------------------------------------------------------------------------------------------


def test_cache_key_fn_policy_returns_what_the_function_returns() -> None:
    seen: list[tuple[Any, dict[str, Any]]] = []

    def key_fn(ctx: TaskRunContext, inputs: dict[str, Any]) -> str:
        seen.append((ctx, inputs))
        return f"key-{inputs['x']}"

    policy = CachePolicy.from_cache_key_fn(key_fn)
    assert isinstance(policy, CacheKeyFnPolicy)
    ctx = make_ctx()
    assert policy.compute_key(ctx, {"x": 3}, {"p": 1}) == "key-3"
    assert seen == [(ctx, {"x": 3})]
    assert compute(CacheKeyFnPolicy()) is None


def test_base_policy_has_no_key() -> None:
    with pytest.raises(NotImplementedError):
        compute(CachePolicy())


def test_inputs_key_is_none_without_inputs_and_ignores_key_order() -> None:
    assert compute(INPUTS, {}) is None
    assert compute(INPUTS, {"a": 1, "b": {"y": 2, "x": 1}}) == compute(INPUTS, {"b": {"x": 1, "y": 2}, "a": 1})
    assert compute(INPUTS, {"a": 1}) != compute(INPUTS, {"a": 2})
    # Values JSON cannot hold are hashed by their pickle.
    assert compute(INPUTS, {"fn": len}) == hash_objects({"fn": len})


def test_unhashable_inputs_give_prefects_message() -> None:
    with pytest.raises(ValueError) as caught:
        compute(INPUTS, {"lock": threading.Lock(), "n": 1})
    assert str(caught.value) == (
        "Unable to create hash - objects could not be serialized.\n"
        "  JSON error: Unable to serialize unknown type: <class '_thread.lock'>\n"
        "  Pickle error: cannot pickle '_thread.lock' object\n\n"
        "This often occurs when task inputs contain objects that cannot be cached like locks, file handles, or "
        "other system resources.\n\n"
        "To resolve this, you can:\n"
        "  1. Exclude these arguments by defining a custom `cache_key_fn`\n"
        "  2. Disable caching by passing `cache_policy=NO_CACHE`\n"
    )
    assert isinstance(caught.value.__cause__, HashError)
    assert compute(INPUTS - "lock", {"lock": threading.Lock(), "n": 1}) == compute(INPUTS, {"n": 1})


def test_inputs_use_a_stable_transform_for_dataframes_only_when_pandas_is_imported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class DataFrame:  # what the transform reads from a pandas DataFrame
        def __init__(self, columns: dict[str, list[int]]) -> None:
            self.data = columns
            self.columns = list(columns)
            self.iloc = self

        def __getitem__(self, index: tuple[slice, int]) -> list[int]:
            return self.data[self.columns[index[1]]]

    transforms: dict[type, Any] = {}
    monkeypatch.setattr(cache_policies, "STABLE_TRANSFORMS", transforms)
    frame = DataFrame({"a": [1, 2], "b": [3, 4]})
    assert compute(INPUTS, {"df": frame}) == hash_objects({"df": frame})
    assert transforms == {}  # pandas is not imported: nothing registered, nothing imported

    monkeypatch.setitem(sys.modules, "pandas", types.SimpleNamespace(DataFrame=DataFrame))
    assert compute(INPUTS, {"df": frame}) == hash_objects({"df": (["a", "b"], [[1, 2], [3, 4]])})
    assert list(transforms) == [DataFrame]


def test_flow_parameters_key_is_none_without_parameters() -> None:
    assert compute(FLOW_PARAMETERS) is None
    assert compute(FLOW_PARAMETERS, flow_parameters={"a": 1}) == hash_objects({"a": 1})


def test_run_id_is_the_flow_run_id_else_the_task_run_id() -> None:
    assert compute(RUN_ID) == str(FLOW_RUN_ID)
    assert compute(RUN_ID, ctx=make_ctx(flow_run_id=None)) == str(TASK_RUN_ID)
    assert compute(RUN_ID, ctx=TaskRunContext()) is None


def test_policies_see_the_real_run_context() -> None:
    seen: list[TaskRunContext] = []

    @task
    def capture(x: int) -> int:
        ctx = TaskRunContext.get()
        assert ctx is not None
        seen.append(ctx)
        return x

    @flow
    def pipeline() -> int:
        return capture(1)

    pipeline()
    (ctx,) = seen
    assert ctx.task_run is not None and ctx.task_run.flow_run_id is not None
    assert RUN_ID.compute_key(ctx, {"x": 1}, {}) == str(ctx.task_run.flow_run_id)
    source = inspect.getsource(capture.fn)
    assert source.lstrip().startswith("@task") and TASK_SOURCE.compute_key(ctx, {}, {}) == hash_objects(source)
    assert DEFAULT.compute_key(ctx, {"x": 1}, {}) == hash_objects(
        hash_objects(source), str(ctx.task_run.flow_run_id), hash_objects({"x": 1}))


def test_task_source_reads_the_source_once_per_function(monkeypatch: pytest.MonkeyPatch) -> None:
    @task
    def once(x: int) -> int:
        return x * 2

    calls: list[Any] = []
    real_getsource = inspect.getsource

    def counting_getsource(obj: Any) -> str:
        calls.append(obj)
        return real_getsource(obj)

    monkeypatch.setattr(inspect, "getsource", counting_getsource)
    ctx = make_ctx(once)
    first = compute(TASK_SOURCE, ctx=ctx)
    assert compute(TASK_SOURCE, ctx=ctx) == compute(TASK_SOURCE, ctx=make_ctx(once)) == first
    assert calls == [once.fn]


def test_task_source_keeps_functions_sharing_a_wrapper_apart() -> None:
    def logged(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)
        return wrapper

    @task
    @logged
    def one() -> int:
        return 1

    @task
    @logged
    def two() -> int:
        return 2

    assert one.fn.__code__ is two.fn.__code__  # the wrapper's code, shared
    key_one, key_two = compute(TASK_SOURCE, ctx=make_ctx(one)), compute(TASK_SOURCE, ctx=make_ctx(two))
    assert key_one != key_two
    assert key_one == hash_objects(inspect.getsource(one.fn))  # the decorated function's own source


def test_task_source_prefers_a_source_the_task_carries() -> None:
    carrier = types.SimpleNamespace(fn=add.fn, source_code="def shipped(): ...\n")
    assert compute(TASK_SOURCE, ctx=make_ctx(carrier)) == hash_objects("def shipped(): ...\n")
    assert compute(TASK_SOURCE, ctx=TaskRunContext()) is None


def test_task_source_of_code_without_source_ignores_where_it_was_compiled() -> None:
    keys = []
    for filename, padding in (("<one>", ""), ("<two>", "\n\n\n")):
        namespace: dict[str, Any] = {}
        exec(compile(padding + "def f(x):\n    return [x + i for i in range(3)]\n", filename, "exec"), namespace)
        keys.append(compute(TASK_SOURCE, ctx=make_ctx(task(namespace["f"]))))
    assert keys[0] == keys[1]
    other: dict[str, Any] = {}
    exec("def f(x):\n    return [x - i for i in range(3)]\n", other)
    assert compute(TASK_SOURCE, ctx=make_ctx(task(other["f"]))) != keys[0]


# --- task_input_hash ---------------------------------------------------------------------------------------


def test_task_input_hash_hashes_task_key_bytecode_and_arguments() -> None:
    ctx = make_ctx()
    key = task_input_hash(ctx, {"x": 1, "y": 2})
    task_key = getattr(add, "task_key", None) or cache_policies._task_key(add.fn)
    assert task_key.startswith("add-") and len(task_key) == len("add-") + 8
    assert key == hash_objects(task_key, add.fn.__code__.co_code.hex(), {"x": 1, "y": 2})
    assert task_input_hash(ctx, {"y": 2, "x": 1}) == key
    assert task_input_hash(ctx, {"x": 1, "y": 3}) != key
    assert task_input_hash(ctx, {"lock": threading.Lock()}) is None  # not hashable: no caching


def test_task_key_is_prefects_name_and_code_hash() -> None:
    # Prefect's Task.task_key: the function's last qualname part and 8 hex of its code object's hash.
    code_hash = hash_objects(add.fn.__code__)
    assert code_hash is not None
    assert cache_policies._task_key(add.fn) == f"add-{code_hash[:8]}"

    class Callable:
        def __call__(self) -> int:
            return 1

    assert cache_policies._task_key(Callable()) == f"{__name__}.{Callable.__qualname__}"  # no __qualname__


# --- hashing ------------------------------------------------------------------------------------------------


def test_stable_hash_hashes_strings_as_utf8() -> None:
    assert stable_hash("a", b"b") == stable_hash("ab") == hashlib.md5(b"ab").hexdigest()
    assert stable_hash("é", hash_algo=hashlib.sha256) == hashlib.sha256("é".encode()).hexdigest()


def test_file_hash_is_the_hash_of_the_file_bytes(tmp_path: Path) -> None:
    path = tmp_path / "data.bin"
    path.write_bytes(os.urandom(3 << 20))
    assert file_hash(str(path)) == stable_hash(path.read_bytes())
    assert file_hash(path, hash_algo=hashlib.sha1) == hashlib.sha1(path.read_bytes()).hexdigest()


def test_hash_objects_falls_back_to_pickle_then_fails() -> None:
    assert hash_objects(len) == stable_hash(cloudpickle.dumps(((len,), {})))
    assert hash_objects(threading.Lock()) is None
    with pytest.raises(HashError) as caught:
        hash_objects(threading.Lock(), raise_on_failure=True)
    assert str(caught.value) == textwrap.dedent("""\
        Unable to create hash - objects could not be serialized.
          JSON error: Unable to serialize unknown type: <class '_thread.lock'>
          Pickle error: cannot pickle '_thread.lock' object""")


def test_hash_objects_of_sets_do_not_depend_on_hash_seed_order() -> None:
    # Prefect hashes a set's members in iteration order, so a set of strings changes key with PYTHONHASHSEED;
    # otelflow sorts them.
    assert hash_objects({"b", "a", "c"}) == hash_objects(set(["c", "a", "b"])) \
        == stable_hash(json.dumps([[{"__class__": "builtins.set", "data": ["a", "b", "c"]}], {}]))

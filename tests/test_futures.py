"""Futures as Prefect 3's (prefect/futures.py, prefect/utilities/engine.py, prefect/utilities/collections.py).

``wait``/``as_completed``/``FutureList.result`` keep Prefect's results, errors and messages; futures and states
are resolved wherever Prefect finds them (dataclasses, pydantic models, named tuples, dict keys, nested), and
only there (not in a frozenset, not inside ``quote``, not inside what ``opaque`` wraps).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import re
import threading
import time
from typing import Any, NamedTuple

import pydantic
import pytest

from otelflow import flow, task
from otelflow import semconv as sc
from otelflow.futures import (
    DoneAndNotDoneFutures,
    FutureList,
    PrefectConcurrentFuture,
    PrefectFuture,
    PrefectFutureList,
    PrefectTaskRunFuture,
    PrefectWrappedFuture,
    TaskRunFuture,
    as_completed,
    collect_futures,
    contains_futures,
    resolve_futures_to_results,
    resolve_futures_to_states,
    wait,
)
from otelflow.states import Completed, Failed, State
from otelflow.utilities.annotations import allow_failure, opaque, quote, unmapped


@task
def square(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


@task
def identity(x: Any) -> Any:
    return x


@task
def boom() -> None:
    raise ValueError("boom")


@task
def show(value: Any) -> Any:
    """What the task received, as is."""
    return value


# --- wait -----------------------------------------------------------------------------------------------------


def test_wait_counts_futures_that_finished_before_the_call() -> None:
    @flow
    def f() -> tuple[Any, int, int]:
        futures = square.map([1, -2, 3, -4, 5])
        for future in futures:
            future.wait()
        result = wait(futures)
        done, not_done = result
        return result, len(done), len(not_done)

    result, done, not_done = f()
    assert (done, not_done) == (5, 0)
    assert isinstance(result, DoneAndNotDoneFutures) and isinstance(result, tuple)
    assert result.done and result.not_done == set()


def test_wait_in_an_async_flow() -> None:
    @flow
    async def f() -> tuple[int, int]:
        futures = square.map([1, -2, 3])
        await asyncio.sleep(0.2)
        done, not_done = wait(futures)
        return len(done), len(not_done)

    assert asyncio.run(f()) == (3, 0)


def test_wait_with_a_timeout_returns_what_finished_and_never_raises() -> None:
    release = threading.Event()

    @task
    def gated(i: int) -> int:
        if i:
            release.wait(10)
        return i

    @flow
    def f() -> None:
        futures = gated.map([0, 1])
        futures[0].wait()
        done, not_done = wait(futures, timeout=0.1)
        assert done == {futures[0]} and not_done == {futures[1]}
        release.set()
        done, not_done = wait([*futures, *futures])  # duplicates once
        assert done == set(futures) and not_done == set()
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number, got -1"):
            wait(futures, timeout=-1)

    f()
    assert wait([]) == DoneAndNotDoneFutures(set(), set())


# --- as_completed ---------------------------------------------------------------------------------------------


def test_as_completed_yields_in_completion_order_and_times_out_like_prefect() -> None:
    release = threading.Event()

    @task
    def gated(i: int) -> int:
        if i == 0:
            release.wait(10)
        return i

    @flow
    def f() -> list[int]:
        futures = gated.map([0, 1])
        order = []
        with pytest.raises(TimeoutError, match=r"^1 \(of 2\) futures unfinished$"):
            for future in as_completed(futures, timeout=0.3):
                order.append(future.result())
        assert order == [1]
        release.set()
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
            next(as_completed(futures, timeout=-1))
        return [f.result() for f in as_completed([*futures, futures[0]])]

    assert sorted(f()) == [0, 1]


def test_as_completed_in_an_async_flow() -> None:
    @flow
    async def f() -> list[int]:
        futures = square.map([1, 2, 3])
        results = sorted(future.result() for future in as_completed([*futures, futures[0]]))
        with pytest.raises(ValueError, match="'timeout' must be a non-negative number"):
            list(as_completed(futures, timeout=-1))  # Prefect checks even when every run has finished
        return results

    assert asyncio.run(f()) == [1, 4, 9]


# --- FutureList.result and future.result -----------------------------------------------------------------------


def test_future_list_result_raises_a_failure_as_soon_as_it_happens() -> None:
    release = threading.Event()

    @task
    def job(i: int) -> int:
        if i == 0:
            release.wait(10)
        if i == 1:
            raise ValueError("second one failed")
        return i

    @flow
    def f() -> None:
        futures = job.map([0, 1])
        started = time.monotonic()
        with pytest.raises(ValueError, match="second one failed"):
            futures.result()
        assert time.monotonic() - started < 5 and not futures[0].done()  # did not wait for the first run
        release.set()
        results = futures.result(raise_on_failure=False)
        assert results[0] == 0 and isinstance(results[1], ValueError)

    f()


def test_timeouts_use_prefects_messages_and_a_tasks_own_timeout_error_passes_through() -> None:
    release = threading.Event()

    @task
    def gated(i: int) -> int:
        release.wait(10)
        return 1

    @task
    def times_out() -> None:
        raise TimeoutError("the task's own")

    @flow
    def f() -> None:
        futures = gated.map([0, 1])
        with pytest.raises(TimeoutError, match=r"^Timed out waiting for all futures to complete within 0\.1 seconds$"):
            futures.result(timeout=0.1)
        with pytest.raises(TimeoutError, match=rf"^Task run {futures[0].task_run_id} did not complete within 0\.1"):
            futures[0].result(timeout=0.1)
        with pytest.raises(ValueError, match="non-negative"):
            futures.result(timeout=-1)
        release.set()
        assert futures.result(timeout=5) == [1, 1]
        with pytest.raises(TimeoutError, match="the task's own"):
            FutureList([times_out.submit()]).result(timeout=5)

    f()


def test_prefects_future_names_are_otelflows_future() -> None:
    @flow
    def f() -> None:
        future = square.submit(3)
        futures = square.map([1, 2])
        for name in (PrefectFuture, PrefectTaskRunFuture, PrefectWrappedFuture, PrefectConcurrentFuture):
            assert isinstance(future, name)
        assert isinstance(futures, PrefectFutureList)
        assert future.wrapped_future.result().is_completed()
        assert future.result() == 9

    f()


# --- futures and states inside containers ----------------------------------------------------------------------


@dataclasses.dataclass
class Box:
    item: Any
    size: int = 0


@dataclasses.dataclass(frozen=True)
class FrozenBox:
    item: Any
    derived: Any = dataclasses.field(init=False, default=None)


class Model(pydantic.BaseModel):
    item: Any
    size: int = 1
    _secret: str = pydantic.PrivateAttr(default="")


class Pair(NamedTuple):
    left: Any
    right: int


def test_futures_and_states_inside_containers_are_resolved_like_prefect() -> None:
    @flow
    def f() -> dict[str, Any]:
        one = identity.submit(1)
        model = Model(item=one)
        model._secret = "kept"
        received = {
            "dataclass": show(Box(one, 2)),
            "frozen": show(FrozenBox(one)),
            "model": show(model),
            "named tuple": show(Pair(one, 3)),
            "set": show({one}),
            "dict key": show({one: "v"}),
            "state in dataclass": show(Box(Completed(data=5))),
            "nested": show({"k": [Box([one, (one,)])]}),
            "frozenset": show(frozenset([one])),
            "ordered dict": show(collections.OrderedDict(k=one)),
            "future list": show(identity.map([1, 2])),
            "result searched": show(identity.submit([5, Completed(data=9)])),
        }
        received["model secret"] = received["model"]._secret
        return received

    got = f()
    assert got["dataclass"] == Box(1, 2)
    assert got["frozen"] == FrozenBox(1)
    assert type(got["model"]) is Model and got["model"].item == 1 and got["model secret"] == "kept"
    assert got["named tuple"] == Pair(1, 3) and type(got["named tuple"]) is Pair
    assert got["set"] == {1}
    assert got["dict key"] == {1: "v"}
    assert got["state in dataclass"] == Box(5)
    assert got["nested"] == {"k": [Box([1, (1,)])]}
    assert got["ordered dict"] == {"k": 1} and type(got["ordered dict"]) is collections.OrderedDict
    (untouched,) = got["frozenset"]  # Prefect does not look inside a frozenset
    assert isinstance(untouched, TaskRunFuture)
    assert got["future list"] == [1, 2] and type(got["future list"]) is FutureList  # Prefect: a PrefectFutureList
    assert got["result searched"] == [5, 9]  # what a future resolved to is searched too


def test_quote_and_opaque_stop_the_search() -> None:
    @flow
    def f() -> None:
        one = identity.submit(1)
        # Checked here: the flow's own return value has its futures turned into states.
        assert isinstance(show(quote(Box(one))).item, TaskRunFuture)
        assert isinstance(show([quote(Box(one))])[0].item, TaskRunFuture)
        assert show(opaque(one)) == 1
        assert isinstance(show(opaque(Box(one))).item, TaskRunFuture)
        assert show(Box(unmapped(one))) == Box(1)  # annotations are removed

    f()


def test_a_failed_upstream_inside_a_container_makes_the_downstream_not_ready() -> None:
    ran = []

    @task
    def record(value: Any) -> Any:
        ran.append(value)
        return value

    @flow
    def f() -> tuple[State[Any], State[Any], Any]:
        failed = boom.submit()
        not_ready = record(Box([failed]), return_state=True)
        failed_state = record({"k": Failed(data=ValueError("x"))}, return_state=True)
        allowed = record(allow_failure(Box(failed)))
        # Prefect: only the innermost annotation counts, so unmapped(...) inside allow_failure(...) does not allow.
        overridden = record(allow_failure([unmapped(failed)]), return_state=True)
        assert overridden.name == "NotReady"
        return not_ready, failed_state, allowed

    not_ready, failed_state, allowed = f(return_state=True).result()
    assert not_ready.name == "NotReady" and not_ready.is_pending()
    assert "did not reach a 'COMPLETED' state" in (not_ready.message or "")
    assert failed_state.name == "NotReady"
    assert isinstance(allowed.item, ValueError) and str(allowed.item) == "boom"
    assert len(ran) == 1  # only the allow_failure run ran


def test_a_value_that_cannot_be_rebuilt_raises_prefects_error() -> None:
    @dataclasses.dataclass
    class Once:
        item: Any

        def __post_init__(self) -> None:
            if not isinstance(self.item, TaskRunFuture):
                raise RuntimeError("built twice")

    @flow
    def f() -> None:
        message = "Failed to resolve inputs in parameter 'value'. If your parameter type is not supported, consider "
        with pytest.raises(Exception, match=re.escape(message + "using the `quote` annotation")) as raised:
            show(Once(identity.submit(1)))
        assert isinstance(raised.value.__cause__, RuntimeError)
        assert show(quote(Once(identity.submit(1)))).item.result() == 1  # what Prefect's message suggests

    f()


def test_futures_inside_a_dataclass_are_waited_for_and_linked(captured: Any) -> None:
    release = threading.Event()

    @task
    def slow() -> int:
        release.wait(10)
        return 7

    @task
    def use(box: Box) -> int:
        return int(box.item) + 1

    @flow
    def f() -> int:
        upstream = slow.submit()
        downstream = use.submit(Box(upstream))
        threading.Timer(0.2, release.set).start()
        return downstream.result()

    assert f() == 8
    spans = {s.name: s for s in captured.task_spans()}
    links = {link.context.span_id: dict(link.attributes or {}) for link in spans["task use"].links}
    assert links[spans["task slow"].context.span_id] == {sc.INPUT_NAME: "box", sc.INPUT_TYPE: "int"}


def test_futures_inside_a_dataclass_in_an_async_flow() -> None:
    @task
    async def add_one(box: Box) -> int:
        return int(box.item) + 1

    @flow
    async def f() -> int:
        upstream = square.submit(3)
        return await add_one(Box(upstream))

    assert asyncio.run(f()) == 10


def test_a_flow_returning_futures_in_a_dataclass_returns_their_states() -> None:
    @flow
    def f() -> Box:
        return Box(square.submit(4))

    box = f()
    assert isinstance(box.item, State) and box.item.result() == 16


def test_resolve_futures_to_states_and_results_see_dataclasses_and_keep_annotations() -> None:
    @flow
    def f() -> None:
        one = square.submit(2)
        assert resolve_futures_to_results(Box([one])) == Box([4])
        states = resolve_futures_to_states(Model(item=one))
        assert isinstance(states.item, State) and states.item.is_completed()
        kept = resolve_futures_to_results([unmapped(one), quote(one)])
        assert kept[0].unwrap() == 4 and kept[1].unwrap() is one
        as_list = resolve_futures_to_results(square.map([1, 2]))
        assert as_list == [1, 4] and type(as_list) is list

    f()


def test_contains_futures_is_cheap_for_plain_values_and_survives_cycles() -> None:
    assert not contains_futures(list(range(100_000)))
    assert not contains_futures({"a": [1, 2.0, "x", None, b"y"], "b": (1, 2)})
    cyclic: list[Any] = [1]
    cyclic.append(cyclic)
    assert not contains_futures(cyclic)
    assert contains_futures([1, Box(Completed(data=1))])
    assert contains_futures({"k": Model(item=quote(1))})
    assert not contains_futures(frozenset([Completed()]))

    @flow
    def f() -> None:
        shared: list[Any] = [square.submit(3)]
        shared.append(shared)
        assert collect_futures(shared) in ([], [shared[0]])
        resolved = show(shared)
        assert resolved[0] == 9 and resolved[1] is shared  # Prefect's rule: a cycle points to the original

    f()

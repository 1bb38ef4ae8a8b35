"""Prefect 3's semantics, behaviour by behaviour (issue: "Engine: Prefect 3's semantics exactly").

Each test states the rule as Prefect 3 implements it (prefect/states.py, flow_engine.py, task_engine.py,
task_runners.py, logging/loggers.py) and checks otelflow's behaviour and the telemetry it records.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import importlib.util
import logging
import subprocess
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env
from opentelemetry.trace import StatusCode

from otelflow import flow, get_run_logger, task
from otelflow import semconv as sc
from otelflow.context import FlowRunContext, SettingsContext, TaskRunContext, get_settings_context
from otelflow.exceptions import (
    CancelledRun,
    FailedRun,
    InvalidNameError,
    MappingLengthMismatch,
    MappingMissingIterable,
    ReservedArgumentError,
    TaskRunTimeoutError,
)
from otelflow.logging import LogEavesdropper, PrefectLogAdapter, disable_run_logger
from otelflow.states import Cancelled, Completed, Failed, State
from otelflow.task_runners import ThreadPoolTaskRunner
from otelflow.utilities.annotations import allow_failure, opaque, quote


def attrs(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


@task
def fail1() -> None:
    raise ValueError("Test 1")


@task
def fail2() -> None:
    raise ValueError("Test 2")


@task
def succeed() -> bool:
    return True


@task
def add_one(x: int) -> int:
    return x + 1


# --- 1. what a flow returns, and its final state ------------------------------------------------------------


def test_flow_state_reflects_returned_multiple_task_run_states(captured: Any) -> None:
    @flow(version="test")
    def foo() -> Any:
        return fail1(return_state=True), fail2(return_state=True), succeed(return_state=True)

    flow_state = foo(return_state=True)
    assert flow_state.is_failed()
    assert flow_state.message == "2/3 states failed."
    first, second, third = flow_state.result(raise_on_failure=False)
    assert first.is_failed() and second.is_failed() and third.is_completed()
    with pytest.raises(ValueError, match="Test 1"):
        flow_state.result()  # the first failure's exception
    with pytest.raises(ValueError, match="Test 2"):
        second.result()
    # A failure is never swallowed: the flow span says Failed, with ERROR status and Prefect's message.
    (flow_span,) = captured.flow_spans()
    assert attrs(flow_span)[sc.RUN_STATE] == "Failed"
    assert flow_span.status.status_code is StatusCode.ERROR
    assert flow_span.status.description == "2/3 states failed."
    # Called without return_state, the returned states come back as they are (Prefect returns them).
    returned = foo()
    assert [s.name for s in returned] == ["Failed", "Failed", "Completed"]


def test_one_returned_failed_state_fails_the_flow(captured: Any) -> None:
    @flow
    def foo() -> Any:
        return fail1(return_state=True)

    state = foo(return_state=True)
    assert state.is_failed() and state.message == "1/1 states failed."
    task_state = state.result(raise_on_failure=False)
    assert isinstance(task_state, State) and task_state.is_failed()


def test_returned_cancelled_state_cancels_and_user_states_are_adopted(captured: Any) -> None:
    @task
    def cancelled() -> State[Any]:
        return Cancelled(message="stopped by the operator")

    @flow
    def cancels() -> Any:
        return cancelled(return_state=True)

    state = cancels(return_state=True)
    assert state.is_cancelled() and state.message == "1/1 states cancelled."
    with pytest.raises(CancelledRun, match="stopped by the operator"):
        state.result()

    @flow
    def adopts_completed() -> State[Any]:
        return Completed(data=42, message="done early")

    @flow
    def adopts_failed() -> State[Any]:
        return Failed(message="bad input file")

    done = adopts_completed(return_state=True)
    assert done.is_completed() and done.message == "done early" and done.result() == 42
    assert adopts_completed() == 42
    failed = adopts_failed(return_state=True)
    assert failed.is_failed() and failed.message == "bad input file"
    with pytest.raises(FailedRun, match="bad input file"):
        adopts_failed()


def test_simple_map_returns_states_and_futures_come_back_as_states(captured: Any) -> None:
    @flow
    def my_flow() -> Any:
        return add_one.map([1, 2, 3])

    task_states = my_flow()
    assert all(isinstance(s, State) for s in task_states)
    assert [s.result() for s in task_states] == [2, 3, 4]

    @flow
    def with_return_state() -> Any:
        states = add_one.map([1, 2, 3], return_state=True)
        assert all(isinstance(s, State) for s in states)
        single = add_one.submit(1, return_state=True)
        assert isinstance(single, State) and single.result() == 2
        return states

    assert [s.result() for s in with_return_state()] == [2, 3, 4]


async def test_async_flow_returning_failed_states_fails(captured: Any) -> None:
    @task
    async def afail() -> None:
        raise ValueError("async boom")

    @flow
    async def foo() -> Any:
        return await afail(return_state=True), await afail(return_state=True)

    state = await foo(return_state=True)
    assert state.is_failed() and state.message == "2/2 states failed."


# --- 2. State.result() in async code ---------------------------------------------------------------------


async def test_call_with_return_state_true_result_is_awaitable_in_async_code() -> None:
    @flow
    def foo(x: int, y: int = 3, z: int = 3) -> int:
        return x + y + z

    state = foo(1, 2, return_state=True)
    assert isinstance(state, State)
    assert await state.result() == 6  # a running loop outside any run: awaitable, as in Prefect
    assert await state.aresult() == 6
    assert state.result(_sync=True) == 6


def test_result_is_a_value_in_sync_code_and_inside_sync_runs() -> None:
    @flow
    def foo() -> int:
        inner = add_one(1, return_state=True)
        return inner.result() + 10  # a sync flow: a plain value even if a loop ran elsewhere

    state = foo(return_state=True)
    assert state.result() == 12


async def test_result_inside_an_async_flow_is_awaitable() -> None:
    @task
    async def double(x: int) -> int:
        return x * 2

    @flow
    async def foo() -> int:
        state = await double(21, return_state=True)
        return await state.result()  # type: ignore[no-any-return]

    assert await foo() == 42


# --- 3. .map() inputs ------------------------------------------------------------------------------------------


@task
def numbers() -> list[int]:
    return [1, 2, 3]


def test_map_can_take_a_future_or_state_as_input(captured: Any) -> None:
    @flow
    def from_future() -> Any:
        return add_one.map(numbers.submit())

    @flow
    def from_state() -> Any:
        return add_one.map(numbers(return_state=True))

    assert [s.result() for s in from_future()] == [2, 3, 4]
    assert [s.result() for s in from_state()] == [2, 3, 4]


def test_map_defaults_are_not_mapped_but_kwargs_iterables_are(captured: Any) -> None:
    @task
    def add_some(x: int, y: list[int] = [1, 4]) -> int:  # noqa: B006 - Prefect's own test shape
        return x + sum(y)

    @task
    def add_kw(x: int, **kwargs: int) -> int:
        return x + kwargs["y"]

    @flow
    def my_flow() -> Any:
        return add_some.map([1, 2, 3]), add_kw.map([1, 2, 3], y=[4, 5, 6]), add_kw.map([1, 2, 3], y=1)

    defaults, variadic, variadic_static = my_flow()
    assert [s.result() for s in defaults] == [6, 7, 8]
    assert [s.result() for s in variadic] == [5, 7, 9]
    assert [s.result() for s in variadic_static] == [2, 3, 4]


def test_map_errors_and_outside_a_flow() -> None:
    @task
    def add(a: int, b: int) -> int:
        return a + b

    @flow
    def mismatch() -> Any:
        return add.map([1, 2], [1, 2, 3])

    @flow
    def no_iterable() -> Any:
        return add.map(1, 2)

    with pytest.raises(MappingLengthMismatch, match="must all be the same length"):
        mismatch()
    with pytest.raises(MappingMissingIterable, match="No iterable parameters"):
        no_iterable()
    with pytest.raises(RuntimeError):
        add.map([1], [2])
    with pytest.raises(RuntimeError):
        add.submit(1, 2)


# --- 4. the run logger ----------------------------------------------------------------------------------------


def test_run_log_records_carry_prefects_fields_on_the_record_and_export_them_once(captured: Any) -> None:
    @task(task_run_name="load-{n}")
    def load(n: int) -> None:
        get_run_logger().info("loading")

    @flow(flow_run_name="nightly")
    def etl() -> None:
        get_run_logger().info("starting")
        load(3)

    with LogEavesdropper("otelflow", level=logging.INFO) as eavesdropper:
        etl()
    flow_record, task_record = [r for r in eavesdropper.get_logs() if r.getMessage() in ("starting", "loading")]
    flow_run = attrs(captured.flow_spans()[0])
    assert (flow_record.flow_run_id, flow_record.flow_run_name, flow_record.flow_name) == (  # type: ignore[attr-defined]
        flow_run[sc.RUN_ID], "nightly", "etl")
    assert task_record.task_run_name == "load-3" and task_record.task_name == "load"  # type: ignore[attr-defined]
    assert task_record.flow_run_id == flow_run[sc.RUN_ID]  # type: ignore[attr-defined]
    # exported once, under otelflow's names: Prefect's fields are not exported a second time
    otel = {str(r.log_record.body): dict(r.log_record.attributes) for r in captured.logs}
    assert otel["loading"][sc.TASK_RUN_ID] == str(task_record.task_run_id)  # type: ignore[attr-defined]
    assert otel["loading"][sc.FLOW_RUN_NAME] == "nightly" and otel["starting"][sc.FLOW_NAME] == "etl"
    prefect_names = {"task_run_id", "flow_run_name", "flow_name", "task_name"}
    assert not prefect_names & (set(otel["loading"]) | set(otel["starting"]))


def test_get_run_logger_signature_and_prefect_log_adapter(captured: Any) -> None:
    @task
    def inner() -> str:
        ctx = FlowRunContext.get()
        assert ctx is not None
        flow_logger = get_run_logger(ctx, batch="b1")  # Prefect: a context override plus extra fields
        flow_logger.info("explicit context")
        with pytest.raises(TypeError, match="Expected one of 'None', 'FlowRunContext', or 'TaskRunContext'"):
            get_run_logger(object())
        return "ok"

    @flow
    def outer() -> str:
        return inner()

    assert outer() == "ok"
    (record,) = [r for r in captured.logs if str(r.log_record.body) == "explicit context"]
    assert record.log_record.attributes["batch"] == "b1"
    assert sc.TASK_RUN_ID in record.log_record.attributes  # inside the task, Prefect gives the task logger

    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    plain = logging.getLogger("adapter-test")
    plain.addHandler(handler)
    plain.setLevel(logging.INFO)
    try:
        adapter = PrefectLogAdapter(plain, extra={"a": 1, "b": 2})
        adapter.info("merged", extra={"b": 3})
    finally:
        plain.removeHandler(handler)
    assert (seen[0].a, seen[0].b) == (1, 3)  # type: ignore[attr-defined]


def test_disable_run_logger_disables_the_loggers_and_task_fn_works(captured: Any) -> None:
    @task
    def chatty(x: int) -> int:
        get_run_logger().info("not exported")
        return x * 2

    with disable_run_logger():
        assert logging.getLogger("otelflow.flow_runs").disabled
        assert logging.getLogger("otelflow.task_runs").disabled
        assert chatty.fn(4) == 8  # outside any run: a disabled logger, not MissingContextError
    assert not logging.getLogger("otelflow.task_runs").disabled
    assert captured.logs == []


# --- 5. flow and task definition ---------------------------------------------------------------------------


def test_default_names_versions_and_definition_errors() -> None:
    @flow
    def my_flow_fn() -> None: ...

    @task
    def my_task_fn() -> None: ...

    assert my_flow_fn.name == "my-flow-fn"  # Prefect slugifies flow names, not task names
    assert my_task_fn.name == "my_task_fn"
    assert my_flow_fn.version == hashlib.md5(Path(__file__).read_bytes(), usedforsecurity=False).hexdigest()
    with pytest.raises(InvalidNameError, match="invalid character"):
        flow(name="a/b")(lambda: None)
    with pytest.raises(ReservedArgumentError, match="'return_state' is a reserved argument"):
        task(lambda return_state: None)
    with pytest.raises(ValueError, match=r"refers to \{missing\}, which is not a parameter"):

        @flow(flow_run_name="run-{missing}")
        def templated(x: int) -> None: ...

    with pytest.raises(ValueError, match="50 retry delays"):
        task(retries=60, retry_delay_seconds=[1] * 51)(lambda: None)
    with pytest.raises(ValueError, match="retry_jitter_factor"):
        task(retry_jitter_factor=-1)(lambda: None)
    with pytest.raises(TypeError, match="retry_delay_seconds"):
        task(retry_delay_seconds="soon")(lambda: None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry_condition_fn"):
        task(retry_condition_fn=3)(lambda: None)  # type: ignore[arg-type]


def test_run_name_templates_and_callables_are_applied(captured: Any) -> None:
    @task(task_run_name="square-{x}")
    def square(x: int) -> int:
        return x * x

    @task(task_run_name=lambda: "from-callable")
    def plain() -> None: ...

    @flow(flow_run_name="{day}-load")
    def daily(day: str) -> list[Any]:
        plain()
        return [f.result() for f in square.map([2, 3])]

    assert daily("monday") == [4, 9]
    names = {attrs(s)[sc.RUN_NAME] for s in captured.task_spans()}
    assert names == {"square-2", "square-3", "from-callable"}
    assert attrs(captured.flow_spans()[0])[sc.RUN_NAME] == "monday-load"


# --- 6. invalid flow parameters --------------------------------------------------------------------------------


def test_invalid_parameters_give_a_failed_state_recorded_without_the_value(captured: Any, settings_env: Any) -> None:
    settings_env(LOG_RUN_EVENTS="true", RECORD_PARAMETER_VALUES="true")

    @flow
    def login(password: int) -> int:
        return password

    @flow
    def parent() -> State[Any]:
        return login("hunter2-s3cret", return_state=True)  # type: ignore[arg-type]

    state = login("hunter2-s3cret", return_state=True)  # type: ignore[arg-type]
    assert state.is_failed()
    assert state.message.startswith("Validation of flow parameters failed with error: ParameterTypeError: ")
    assert "password" in state.message and "hunter2" not in state.message
    child_state = parent(return_state=True)
    assert child_state.is_failed() and child_state.message == "1/1 states failed."
    for span in captured.flow_spans():
        if span.name == "flow login":
            assert span.status.status_code is StatusCode.ERROR
            assert "hunter2" not in repr(span.status.description) + repr(span.events)
    bodies = [str(r.log_record.body) for r in captured.logs]
    assert any(b.startswith("Finished in state Failed('Validation of flow parameters failed") for b in bodies)
    assert not any("hunter2" in b for b in bodies)


def test_parameters_of_user_types_with_postponed_annotations(tmp_path: Path, captured: Any) -> None:
    module_path = tmp_path / "user_pipeline.py"
    module_path.write_text(textwrap.dedent('''
        from __future__ import annotations
        import pydantic
        from otelflow import flow

        class Config(pydantic.BaseModel):
            rows: int

        @flow
        def load(config: Config, limit: int = 5) -> int:
            return config.rows * limit
    '''))
    spec = importlib.util.spec_from_file_location("user_pipeline", module_path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.load({"rows": 3}, "2") == 6  # the dict becomes a Config, "2" an int: validated and coerced


# --- 7. log_prints ----------------------------------------------------------------------------------------------


def test_log_prints_inherits_and_opts_out(captured: Any, capsys: pytest.CaptureFixture[str]) -> None:
    @task
    def inherits() -> None:
        print("from inheriting task")

    @task(log_prints=False)
    def opts_out() -> None:
        print("from opted-out task")

    @flow(log_prints=False)
    def quiet_subflow() -> None:
        print("from quiet subflow")

    @flow(log_prints=True)
    def loud() -> None:
        print("from flow")
        inherits()
        opts_out()
        quiet_subflow()

    loud()
    logged = {str(r.log_record.body): r for r in captured.logs}
    assert set(logged) == {"from flow", "from inheriting task"}
    out = capsys.readouterr().out
    assert "from opted-out task" in out and "from quiet subflow" in out

    with LogEavesdropper("otelflow", level=logging.INFO) as eavesdropper:
        loud()
    (record,) = [r for r in eavesdropper.get_logs() if r.getMessage() == "from inheriting task"]
    assert record.funcName == "inherits"  # the user's function, not the print hook


# --- 8. retries ------------------------------------------------------------------------------------------------


def test_a_task_returning_a_failed_state_is_retried(captured: Any) -> None:
    attempts: list[int] = []

    @task(retries=2)
    def flaky() -> Any:
        attempts.append(1)
        return Failed(message="not yet") if len(attempts) < 3 else "ok"

    assert flaky() == "ok"
    assert len(attempts) == 3
    assert [e.name for e in captured.task_spans()[0].events] == ["Retrying", "Retrying"]


def test_each_attempt_has_its_own_start_time(captured: Any) -> None:
    starts: list[Any] = []

    @task(retries=3)
    def flaky() -> str:
        ctx = TaskRunContext.get()
        assert ctx is not None and ctx.task_run is not None
        starts.append(ctx.task_run.start_time)
        if len(starts) < 4:
            raise ValueError("again")
        return "ok"

    assert flaky() == "ok"
    assert all(isinstance(t, datetime.datetime) and t.tzinfo is not None for t in starts)
    assert starts == sorted(starts) and len(set(starts)) == 4  # strictly increasing: one per attempt


async def test_each_attempt_of_an_async_task_has_its_own_start_time(captured: Any) -> None:
    starts: list[Any] = []

    @task(retries=2)
    async def flaky() -> str:
        ctx = TaskRunContext.get()
        assert ctx is not None and ctx.task_run is not None
        starts.append(ctx.task_run.start_time)
        if len(starts) < 3:
            raise ValueError("again")
        return "ok"

    assert await flaky() == "ok"
    assert starts == sorted(starts) and len(set(starts)) == 3


def test_a_task_returning_a_failed_state_gives_the_caller_that_state(captured: Any) -> None:
    @task
    def gives_up() -> State[Any]:
        return Failed(message="nothing to process")

    @flow
    def pipeline() -> tuple[Any, Any]:
        ok = add_one(1)
        state = gives_up()  # no exception: the call returns the State the function returned
        return ok, state

    ok, state = pipeline()
    assert ok == 2 and isinstance(state, State) and state.is_failed() and state.message == "nothing to process"

    @flow
    def returns_both() -> list[Any]:
        return [add_one(1, return_state=True), gives_up()]

    final = returns_both(return_state=True)
    assert final.is_failed() and final.message == "1/2 states failed."
    assert attrs(captured.spans_named("task gives_up")[0])[sc.RUN_STATE] == "Failed"


async def test_an_async_task_returning_a_failed_state_gives_the_caller_that_state(captured: Any) -> None:
    @task
    async def gives_up() -> State[Any]:
        return Failed(message="async nothing")

    @flow
    async def pipeline() -> State[Any]:
        state = await gives_up()
        assert isinstance(state, State) and state.message == "async nothing"
        return state

    final = await pipeline(return_state=True)
    assert final.is_failed() and final.message == "1/1 states failed."


def test_running_runs_never_share_a_state_object(captured: Any) -> None:
    release = threading.Event()
    started = threading.Barrier(3, timeout=10)

    @task
    def hold(i: int) -> int:
        started.wait()
        release.wait(10)
        return i

    @flow
    def pipeline() -> list[Any]:
        before = time.time()
        futures = [hold.submit(0), hold.submit(1)]
        started.wait()
        states = [f.state for f in futures]
        release.set()
        return [states, before, [f.result() for f in futures]]

    (first, second), before, results = pipeline()
    assert results == [0, 1]
    assert first.is_running() and second.is_running()
    assert first is not second
    stamps = [s.timestamp.timestamp() if isinstance(s.timestamp, datetime.datetime) else s.timestamp
              for s in (first, second)]
    assert all(stamp >= before for stamp in stamps)  # made when the run started, not when otelflow was imported


async def test_an_async_retry_condition_is_awaited(captured: Any) -> None:
    calls: list[str] = []

    async def only_connection_errors(task: Any, task_run: Any, state: State[Any]) -> bool:
        await asyncio.sleep(0)
        calls.append(type(state.data).__name__)
        return isinstance(state.data, ConnectionError)

    errors = [ConnectionError("flaky network"), ValueError("bad data")]

    @task(retries=5, retry_condition_fn=only_connection_errors)
    async def fetch() -> None:
        raise errors.pop(0)

    @task(retries=5, retry_condition_fn=only_connection_errors)
    def fetch_sync() -> None:
        raise ValueError("never retried")

    state = await fetch(return_state=True)
    assert state.is_failed() and isinstance(state.data, ValueError)
    assert calls == ["ConnectionError", "ValueError"]  # awaited: a coroutine would have been truthy
    assert fetch_sync(return_state=True).is_failed()
    assert calls[-1] == "ValueError"


# --- 9. contexts, annotations, subflow wait_for, timeouts -------------------------------------------------------


def test_contexts_have_start_time_and_settings_context_is_stable() -> None:
    @task
    def inner() -> Any:
        ctx = TaskRunContext.get()
        assert ctx is not None
        return ctx.start_time

    @flow
    def outer() -> Any:
        ctx = FlowRunContext.get()
        assert ctx is not None
        return ctx.start_time, inner()

    flow_start, task_start = outer()
    assert flow_start.tzinfo is not None and flow_start <= task_start
    assert SettingsContext.get() is SettingsContext.get() is get_settings_context()


def test_quote_unquote_opaque_and_subflow_wait_for(captured: Any) -> None:
    order: list[str] = []

    @task
    def first() -> dict[str, Any]:
        order.append("first")
        return {"nested": [1, 2]}

    @task
    def kind(value: Any) -> str:
        return type(value).__name__

    @flow
    def child() -> None:
        order.append("child")

    @flow
    def parent() -> Any:
        future = first.submit()
        child(wait_for=[future])
        return kind(quote(future)), kind(opaque(future)), quote("x").unquote()

    assert parent() == ("TaskRunFuture", "dict", "x")
    assert order == ["first", "child"]


def test_timeout_messages_use_prefects_wording(captured: Any) -> None:
    @task(timeout_seconds=0.1)
    def slow() -> None:
        threading.Event().wait(2)

    @task
    def own_timeout() -> None:
        raise TimeoutError("the API did not answer")

    @flow
    def f() -> Any:
        return slow.submit().wait(), own_timeout(return_state=True)

    _, own = f()
    slow_span = captured.spans_named("task slow")[0]
    assert slow_span.status.description == "Task run exceeded timeout of 0.1 second(s)"
    assert attrs(slow_span)[sc.RUN_STATE] == "TimedOut"
    assert own.name == "TimedOut"
    assert own.message == "Task run failed due to timeout: TimeoutError('the API did not answer')"

    @flow(timeout_seconds=0.1)
    def slow_flow() -> None:
        threading.Event().wait(2)

    flow_state = slow_flow(return_state=True)
    assert flow_state.message == "Flow run exceeded timeout of 0.1 second(s)"
    with pytest.raises(TimeoutError, match=r"Scope timed out after 0.1 second\(s\)"):
        flow_state.result()


def test_a_tasks_timeout_is_the_tasks_own_in_a_flow_without_one(captured: Any) -> None:
    @task(timeout_seconds=0.2)
    def slow() -> None:
        threading.Event().wait(3)

    @flow
    def no_timeout() -> None:
        slow()

    state = no_timeout(return_state=True)
    assert state.name == "TimedOut"
    assert state.message == (
        "Flow run failed due to timeout: TaskRunTimeoutError('Scope timed out after 0.2 second(s).')"
    )
    assert captured.spans_named("task slow")[0].status.description == "Task run exceeded timeout of 0.2 second(s)"


async def test_an_async_tasks_timeout_is_the_tasks_own_in_a_flow_without_one(captured: Any) -> None:
    @task(timeout_seconds=0.2)
    async def slow() -> None:
        await asyncio.sleep(3)

    @flow
    async def no_timeout() -> None:
        await slow()

    state = await no_timeout(return_state=True)
    assert state.name == "TimedOut"
    assert state.message == (
        "Flow run failed due to timeout: TaskRunTimeoutError('Scope timed out after 0.2 second(s).')"
    )


# --- 10. the default thread pool never deadlocks ------------------------------------------------------------------


def test_nested_submits_never_deadlock(captured: Any) -> None:
    @task
    def leaf(i: int) -> int:
        return i

    @task
    def parent(i: int) -> int:
        return leaf.submit(i).result() * 2

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=2))
    def nested() -> int:
        return sum(f.result() for f in parent.map(range(64)))

    assert nested() == 2 * sum(range(64))
    assert len(captured.task_spans()) == 128


def test_a_task_depending_on_itself_raises_instead_of_hanging() -> None:
    @task
    def say_hello(name: str) -> str:
        return f"Hello {name}!"

    @flow
    def my_flow() -> None:
        greeting_queue: list[Any] = []
        for i in range(3):
            wait_for = greeting_queue if greeting_queue else []
            greeting_queue.append(say_hello.submit(name=f"Person {i}", wait_for=wait_for))
        for fut in greeting_queue:
            fut.result()

    with pytest.raises(ValueError, match="deadlock"):
        my_flow()


# --- 11. span links ------------------------------------------------------------------------------------------------


def test_task_spans_link_to_the_runs_that_produced_their_inputs(captured: Any) -> None:
    @task
    def extract() -> list[int]:
        return [1, 2]

    @task
    def barrier() -> None: ...

    @task
    def transform(rows: list[int], factor: int) -> int:
        return sum(rows) * factor

    @flow
    def pipeline() -> int:
        rows = extract.submit()
        done = barrier.submit()
        return transform.submit(rows, 3, wait_for=[done]).result()

    assert pipeline() == 9
    spans = {s.name: s for s in captured.task_spans()}
    links = {link.context.span_id: dict(link.attributes or {}) for link in spans["task transform"].links}
    assert links[spans["task extract"].context.span_id] == {sc.INPUT_NAME: "rows", sc.INPUT_TYPE: "list"}
    assert links[spans["task barrier"].context.span_id] == {}  # wait_for: a link without a parameter


# --- lifecycle bugs ----------------------------------------------------------------------------------------------


def test_thread_timeout_under_a_tracer_does_not_hang(tmp_path: Path) -> None:
    script = tmp_path / "traced.py"
    script.write_text(textwrap.dedent('''
        import sys, threading, time
        from otelflow import flow, task

        def tracer(frame, event, arg):
            return tracer
        sys.settrace(tracer)
        threading.settrace(tracer)

        @task(timeout_seconds=0.2)
        def slow():
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                time.sleep(0.01)

        @task(timeout_seconds=0.5)
        def quick():
            return 1

        @flow
        def f():
            return slow.submit().wait(), [quick.submit().result() for _ in range(20)]

        state = f(return_state=True)
        print("done", state.name)
    '''))
    proc = subprocess.run([PYTHON, str(script)], env=subprocess_env(OTEL_SDK_DISABLED="true"),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "done Completed" in proc.stdout


class _BrokenRunner(ThreadPoolTaskRunner):
    def __enter__(self) -> Any:
        raise ConnectionError("scheduler at tcp://10.0.0.9:8786 unreachable")


def test_a_failing_task_runner_setup_ends_the_span_and_restores_the_context(captured: Any) -> None:
    @flow(task_runner=_BrokenRunner())
    def broken() -> None: ...

    @flow
    def healthy() -> None: ...

    with pytest.raises(ConnectionError, match="unreachable"):
        broken()
    assert FlowRunContext.get() is None
    healthy()
    spans = {s.name: s for s in captured.flow_spans()}
    assert attrs(spans["flow broken"])[sc.RUN_STATE] == "Crashed"
    assert spans["flow healthy"].parent is None  # not a child of the broken run's span


async def test_an_async_flow_never_blocks_its_event_loop(captured: Any) -> None:
    released = threading.Event()

    @task
    def needs_the_loop() -> int:
        assert released.wait(10), "the event loop was blocked: its callback never ran"
        return 1

    @task
    async def consume(x: int) -> int:
        return x + 1

    @flow
    async def resolving() -> int:
        loop = asyncio.get_running_loop()
        future = needs_the_loop.submit()
        loop.call_later(0.05, released.set)  # runs only if waiting for the future leaves the loop free
        return await consume(future)  # type: ignore[arg-type, no-any-return]

    assert await resolving() == 2

    released.clear()

    @flow
    async def ending() -> None:
        needs_the_loop.submit()  # still running when the flow body returns: the end waits for it
        asyncio.get_running_loop().call_later(0.05, released.set)

    state = await ending(return_state=True)
    assert state.is_completed()
    assert [attrs(s)[sc.RUN_STATE] for s in captured.spans_named("task needs_the_loop")] == ["Completed"] * 2


def test_the_task_runner_refuses_work_after_the_flow_ends_but_finishes_nested_work(captured: Any) -> None:
    @task
    def child() -> None:
        threading.Event().wait(0.05)

    @task
    def spawner() -> None:
        child.submit()  # not waited for: the flow's end must wait for it

    runners: list[Any] = []

    @flow
    def f() -> None:
        runners.append(FlowRunContext.get().task_runner)  # type: ignore[union-attr]
        spawner.submit()

    f()
    spans = {s.name: s for s in captured.spans}
    assert spans["task child"].end_time <= spans["flow f"].end_time
    with pytest.raises(RuntimeError, match="task runner is closed"):
        runners[0].submit(child, {})


def test_allow_failure_passes_the_exception_and_timeouts_are_task_run_timeout_errors(captured: Any) -> None:
    @task(timeout_seconds=0.1)
    def too_slow() -> None:
        threading.Event().wait(2)

    @task
    def inspect_upstream(value: Any) -> str:
        return type(value).__name__

    @flow
    def f() -> str:
        return inspect_upstream(allow_failure(too_slow(return_state=True)))

    assert f() == TaskRunTimeoutError.__name__


def test_main_thread_flow_timeout_leaves_no_alarm_behind() -> None:
    import signal

    @flow(timeout_seconds=0.5)
    def quick() -> int:
        return 1

    assert quick() == 1
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
    assert signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN, None)


def test_future_list_result_and_wait_honour_their_timeout(captured: Any) -> None:
    release = threading.Event()

    @task
    def gated(i: int) -> int:
        if i == 2:
            release.wait(10)
        return i

    @flow
    def f() -> list[int]:
        futures = gated.map(range(4))
        for index in (0, 1, 3):
            futures[index].wait()
        with pytest.raises(TimeoutError, match=r"Timed out waiting for all futures to complete within 0\.2 seconds"):
            futures.result(timeout=0.2)
        futures.wait(timeout=0.05)  # returns without raising
        assert not futures[2].done()
        release.set()
        return futures.result()

    assert f() == [0, 1, 2, 3]


def test_resolve_futures_to_states_and_results_like_prefect(captured: Any) -> None:
    from otelflow.futures import resolve_futures_to_results, resolve_futures_to_states

    @task
    def ok(x: int) -> int:
        return x

    @task
    def broken() -> None:
        raise ValueError("no")

    @flow
    def f() -> None:
        good = {"a": [ok.submit(1), ok.submit(2)], "b": 3}
        assert resolve_futures_to_results(good) == {"a": [1, 2], "b": 3}
        states = resolve_futures_to_states(good)
        assert [s.name for s in states["a"]] == ["Completed", "Completed"]
        with pytest.raises(Exception, match="At least one result did not complete successfully"):
            resolve_futures_to_results([ok.submit(1), broken.submit()])

    f()


# --- 13. details a Prefect documentation example sees ------------------------------------------------------------


def _bodies(captured: Any) -> list[tuple[str, str]]:
    return [(r.log_record.severity_text, str(r.log_record.body)) for r in captured.logs]


def test_a_task_called_outside_a_flow_is_named_after_the_task(captured: Any) -> None:
    @task
    def add_integers(a: int, b: int) -> int:
        ctx = TaskRunContext.get()
        assert ctx is not None and ctx.task_run is not None
        return ctx.task_run.name  # type: ignore[return-value]

    assert add_integers(1, 2) == "add_integers"  # Prefect: no random suffix outside a flow

    @flow
    def inside() -> Any:
        return add_integers(1, 2)

    assert inside().startswith("add_integers-")


def test_run_name_callables_see_the_run_in_otelflow_runtime(captured: Any) -> None:
    from otelflow.runtime import flow_run, task_run

    def flow_name() -> str:
        return f"{flow_run.flow_name}-with-{flow_run.parameters['name']}-and-{flow_run.parameters['limit']}"

    def task_name() -> str:
        return f"{task_run.task_name}-{task_run.parameters['x']}"

    @task(task_run_name=task_name)
    def double(x: int) -> int:
        return 2 * x

    @flow(flow_run_name=flow_name)
    def my_other_flow(name: str, limit: int = 3) -> int:
        return double(limit)

    assert my_other_flow("marvin") == 6
    assert attrs(captured.flow_spans()[0])[sc.RUN_NAME] == "my-other-flow-with-marvin-and-3"
    assert attrs(captured.task_spans()[0])[sc.RUN_NAME] == "double-3"


def test_a_declined_retry_logs_no_exhausted_line(captured: Any, settings_env: Any) -> None:
    settings_env(LOG_RUN_EVENTS="true")

    @task(retries=3, retry_condition_fn=lambda task, run, state: False)
    def picky() -> None:
        raise ValueError("not retried")

    assert picky(return_state=True).is_failed()
    assert _bodies(captured) == [
        ("ERROR", "Finished in state Failed('Task run encountered an exception ValueError: not retried')"),
    ]


async def test_an_async_flow_that_fails_logs_its_final_line_as_an_error(captured: Any, settings_env: Any) -> None:
    settings_env(LOG_RUN_EVENTS="true")

    @flow
    async def broken() -> None:
        raise ValueError("async failure")

    @flow
    def broken_sync() -> None:
        raise ValueError("sync failure")

    await broken(return_state=True)
    broken_sync(return_state=True)
    finals = [(level, body) for level, body in _bodies(captured) if body.startswith("Finished in state")]
    assert finals == [  # Prefect's async flow engine: ERROR unless completed; its sync one: INFO
        ("ERROR", "Finished in state Failed('Flow run encountered an exception: ValueError: async failure')"),
        ("INFO", "Finished in state Failed('Flow run encountered an exception: ValueError: sync failure')"),
    ]


def test_invalid_parameters_are_logged_as_prefect_logs_them(captured: Any, settings_env: Any) -> None:
    settings_env(LOG_RUN_EVENTS="true")

    @flow
    def typed(n: int) -> int:
        return n

    state = typed("not a number", return_state=True)  # type: ignore[arg-type]
    (error, final) = _bodies(captured)
    assert error[0] == "ERROR" and error[1].startswith("Validation of flow parameters failed with error: ")
    assert final == ("INFO", f"Finished in state {state}")


def test_log_prints_follows_prefects_rules_for_file_and_end(captured: Any) -> None:
    import io
    import sys

    elsewhere = io.StringIO()

    @flow(log_prints=True)
    def printer() -> None:
        print("to stdout", file=sys.stdout)
        print("to stderr", file=sys.stderr)
        print("a", "b", sep="-", end="!")
        print("kept out", file=elsewhere)

    printer()
    assert [body for _, body in _bodies(captured)] == ["to stdout", "to stderr", "a-b!"]
    assert elsewhere.getvalue() == "kept out\n"


def test_flow_and_task_run_loggers_for_hooks(captured: Any) -> None:
    from otelflow.logging.loggers import flow_run_logger, task_run_logger

    def on_completion(flow_: Any, flow_run: Any, state: State[Any]) -> None:
        flow_run_logger(flow_run, flow_).info("flow %s done", flow_run.name)

    def task_done(task_: Any, task_run: Any, state: State[Any]) -> None:
        logger = task_run_logger(task_run, task_)
        assert logger.extra["task_name"] == "step" and logger.extra["flow_name"] == "hooked"
        logger.info("task done")

    @task(on_completion=[task_done])
    def step() -> int:
        return 1

    @flow(on_completion=[on_completion])
    def hooked() -> int:
        return step()

    hooked()
    records = {str(r.log_record.body): r.log_record for r in captured.logs}
    flow_span = captured.flow_spans()[0]
    flow_record = records[f"flow {attrs(flow_span)[sc.RUN_NAME]} done"]
    # the run's ids and names once, under otelflow's names (Prefect's fields stay on the stdlib record)
    assert flow_record.attributes[sc.FLOW_NAME] == "hooked" and "flow_name" not in flow_record.attributes
    assert records["task done"].attributes[sc.TASK_NAME] == "step"
    assert "task_name" not in records["task done"].attributes
    assert "deployment_name" not in flow_record.attributes  # None: not exported
    assert flow_record.span_id == flow_span.context.span_id
    assert records["task done"].span_id == captured.task_spans()[0].context.span_id
    with pytest.raises(ValueError, match=r"Either 'flow_run' or 'flow_run_id' must be provided\."):
        flow_run_logger()

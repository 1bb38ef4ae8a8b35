"""The engine: flow and task runs as spans, run contexts, tags, states, retries, futures, annotations."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from opentelemetry import trace
from opentelemetry.trace import StatusCode

from otelflow import flow, tags, task
from otelflow import semconv as sc
from otelflow.context import FlowRunContext, TagsContext, TaskRunContext
from otelflow.exceptions import (
    MappingLengthMismatch,
    MappingMissingIterable,
    ParameterBindError,
    ParameterTypeError,
    UnfinishedRun,
)
from otelflow.futures import FutureList, TaskRunFuture
from otelflow.states import Completed, State
from otelflow.task_runners import ThreadPoolTaskRunner
from otelflow.utilities.annotations import allow_failure, quote, unmapped


def attrs(span):  # type: ignore[no-untyped-def]
    return dict(span.attributes or {})


def event_names(span):  # type: ignore[no-untyped-def]
    return [e.name for e in span.events]


# --- the issue's example ---------------------------------------------------------------------------------


@task(retries=2, retry_delay_seconds=0.01)
def process_item(item, config, multiplier):  # type: ignore[no-untyped-def]
    return item * config["factor"] * multiplier


@flow
def pipeline():  # type: ignore[no-untyped-def]
    with tags("production", "critical", "critical"):
        results = process_item.map([1, 2, 3], unmapped({"factor": 10}), unmapped(2))
    return results


def test_issue_example_is_one_trace_with_mapped_children(captured):  # type: ignore[no-untyped-def]
    # Prefect 3: the futures a flow returns come back as their final states.
    assert [state.result() for state in pipeline()] == [20, 40, 60]

    (flow_span,) = captured.flow_spans()
    task_spans = captured.task_spans()
    assert flow_span.name == "flow pipeline"
    assert [s.name for s in task_spans] == ["task process_item"] * 3
    assert {s.context.trace_id for s in task_spans} == {flow_span.context.trace_id}
    assert {s.parent.span_id for s in task_spans} == {flow_span.context.span_id}
    assert sorted(attrs(s)[sc.TASK_MAP_INDEX] for s in task_spans) == [0, 1, 2]
    for span in task_spans:
        a = attrs(span)
        assert a[sc.TAGS] == ("critical", "production")  # sorted, de-duplicated
        assert a[sc.RUN_TYPE] == "task"
        assert a[sc.TASK_NAME] == "process_item"
        assert a[sc.FLOW_RUN_ID] == attrs(flow_span)[sc.RUN_ID]
        assert a[sc.FLOW_NAME] == "pipeline"
        assert a[sc.RUN_STATE] == "Completed"
        assert a[sc.RUN_ATTEMPT] == 1
        assert a[sc.CODE_FUNCTION_NAME] == "process_item"
        assert a[sc.CODE_FILE_PATH].endswith("test_engine.py")
        assert isinstance(a[sc.CODE_LINE_NUMBER], int)
        assert event_names(span) == []  # a plain Running -> Completed run needs no events
        assert span.status.status_code is StatusCode.UNSET
    fa = attrs(flow_span)
    assert fa[sc.RUN_TYPE] == "flow"
    assert fa[sc.FLOW_NAME] == "pipeline"
    assert fa[sc.FLOW_RUN_ID] == fa[sc.RUN_ID]
    assert sc.TAGS not in fa  # tags were applied inside the flow body only
    assert flow_span.parent is None


def test_span_names_are_low_cardinality(captured):  # type: ignore[no-untyped-def]
    pipeline()
    pipeline()
    assert {s.name for s in captured.spans} == {"flow pipeline", "task process_item"}
    run_names = {attrs(s)[sc.RUN_NAME] for s in captured.flow_spans()}
    assert len(run_names) >= 1 and all(n not in s.name for s in captured.spans for n in run_names)


# --- contexts --------------------------------------------------------------------------------------------


def test_run_contexts_inside_and_outside_runs(captured):  # type: ignore[no-untyped-def]
    seen: dict[str, object] = {}

    @task
    def analyze_data():  # type: ignore[no-untyped-def]
        ctx = TaskRunContext.get()
        seen["task"] = (ctx.task.name, ctx.task_run.id, ctx.task_run.name, ctx.task_run.run_count, ctx.parameters)
        seen["task_flow_ctx"] = FlowRunContext.get().flow_run.id
        seen["current_span"] = trace.get_current_span().get_span_context().span_id
        return "analysis complete"

    @flow
    def data_workflow(x: int = 1):  # type: ignore[no-untyped-def]
        ctx = FlowRunContext.get()
        seen["flow"] = (ctx.flow.name, ctx.flow_run.id, ctx.flow_run.name, ctx.parameters, ctx.task_runner)
        assert TaskRunContext.get() is None
        return analyze_data()

    assert FlowRunContext.get() is None and TaskRunContext.get() is None
    assert data_workflow() == "analysis complete"
    assert FlowRunContext.get() is None and TaskRunContext.get() is None

    flow_name, flow_run_id, flow_run_name, params, runner = seen["flow"]  # type: ignore[misc]
    assert (flow_name, params) == ("data-workflow", {"x": 1})
    assert isinstance(runner, ThreadPoolTaskRunner)
    task_name, task_run_id, _, run_count, task_params = seen["task"]  # type: ignore[misc]
    assert (task_name, run_count, task_params) == ("analyze_data", 1, {})
    assert seen["task_flow_ctx"] == flow_run_id
    (task_span,) = captured.task_spans()
    assert attrs(task_span)[sc.RUN_ID] == str(task_run_id)
    assert seen["current_span"] == task_span.context.span_id
    assert attrs(captured.flow_spans()[0])[sc.RUN_NAME] == flow_run_name


def test_context_reaches_submitted_tasks_in_worker_threads(captured):  # type: ignore[no-untyped-def]
    tracer = trace.get_tracer("user-code")
    seen = []

    @task
    def work(i):  # type: ignore[no-untyped-def]
        # User OTel spans inside a task are children of the task span, in any worker thread.
        with tracer.start_as_current_span("user span") as span:
            seen.append((threading.current_thread().name, span.get_span_context().trace_id,
                         TaskRunContext.get().task_run.map_index, sorted(TagsContext.get().current_tags)))
        return i

    @flow
    def fan_out():  # type: ignore[no-untyped-def]
        with tags("fan"):
            futures = work.map(range(8))
        return futures.result()

    assert fan_out() == list(range(8))
    (flow_span,) = captured.flow_spans()
    assert {t for _, t, _, _ in seen} == {flow_span.context.trace_id}
    assert sorted(i for _, _, i, _ in seen) == list(range(8))
    assert all(tag_list == ["fan"] for *_, tag_list in seen)
    assert all(name.startswith("otelflow-task") for name, *_ in seen)


def test_tags_nest_union_and_task_level_tags(captured):  # type: ignore[no-untyped-def]
    @task(tags=["own"])
    def step():  # type: ignore[no-untyped-def]
        return sorted(TagsContext.get().current_tags)

    @flow(tags=["flowtag"])
    def complex_workflow():  # type: ignore[no-untyped-def]
        with tags("pipeline"):
            with tags("extract"):
                step()
            with tags("transform") as current:
                assert current == {"pipeline", "transform", "flowtag"}
                step()
        step()

    complex_workflow()
    by_tags = [attrs(s)[sc.TAGS] for s in captured.task_spans()]
    assert by_tags == [
        ("extract", "flowtag", "own", "pipeline"),
        ("flowtag", "own", "pipeline", "transform"),
        ("flowtag", "own"),
    ]
    assert attrs(captured.flow_spans()[0])[sc.TAGS] == ("flowtag",)


def test_tags_context_add_and_remove():  # type: ignore[no-untyped-def]
    with tags("a", "b"):
        ctx = TagsContext.get()
        ctx.add_tags("c")
        ctx.remove_tags("a")
        assert TagsContext.get().current_tags == {"b", "c"}
    assert TagsContext.get().current_tags == set()


def test_non_string_tags_are_a_clear_type_error():  # type: ignore[no-untyped-def]
    with pytest.raises(TypeError, match="Tags must be strings"), tags("ok", 3):  # type: ignore[arg-type]
        pass
    with pytest.raises(TypeError, match="Tags must be strings"):
        task(tags=["x", None])(lambda: 1)  # type: ignore[list-item]
    with pytest.raises(TypeError, match="not one string"):
        task(tags="prod")(lambda: 1)  # type: ignore[arg-type]


# --- states, retries, failures ---------------------------------------------------------------------------


def test_retries_are_one_span_with_retry_events(captured):  # type: ignore[no-untyped-def]
    calls = []

    @task(retries=3, retry_delay_seconds=[0.0, 0.01])
    def flaky():  # type: ignore[no-untyped-def]
        calls.append(TaskRunContext.get().task_run.run_count)
        if len(calls) < 3:
            raise ConnectionError(f"attempt {len(calls)} failed")
        return "ok"

    assert flaky() == "ok"
    assert calls == [1, 2, 3]
    (span,) = captured.task_spans()
    assert attrs(span)[sc.RUN_ATTEMPT] == 3
    assert attrs(span)[sc.RUN_STATE] == "Completed"
    # Running/Completed are said by the span's start, end and otelflow.run.state: only retries are events.
    assert event_names(span) == ["Retrying", "Retrying"]
    retry = span.events[0]
    assert retry.attributes[sc.RUN_ATTEMPT] == 2
    assert retry.attributes[sc.EXCEPTION_TYPE] == "ConnectionError"
    assert retry.attributes[sc.EXCEPTION_MESSAGE] == "attempt 1 failed"
    assert span.status.status_code is StatusCode.UNSET


def test_final_failure_sets_error_status_and_one_exception_event(captured):  # type: ignore[no-untyped-def]
    @task(retries=1)
    def broken():  # type: ignore[no-untyped-def]
        raise ValueError("Negative value")

    state = broken(return_state=True)
    assert isinstance(state, State) and state.is_failed()
    assert isinstance(state.result(raise_on_failure=False), ValueError)
    with pytest.raises(ValueError, match="Negative value"):
        broken()
    span = captured.task_spans()[0]
    assert span.status.status_code is StatusCode.ERROR
    assert "Negative value" in span.status.description
    assert attrs(span)[sc.ERROR_TYPE] == "ValueError"
    assert attrs(span)[sc.RUN_STATE] == "Failed"
    assert attrs(span)[sc.RUN_ATTEMPT] == 2
    assert event_names(span).count("exception") == 1
    assert event_names(span)[-1] == "Failed"


def test_failed_flow_span_and_exception(captured):  # type: ignore[no-untyped-def]
    @flow
    def failing():  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        failing()
    (span,) = captured.flow_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert attrs(span)[sc.ERROR_TYPE] == "RuntimeError"


@pytest.mark.parametrize(("exc", "state_name"), [(KeyboardInterrupt, "Crashed"), (SystemExit, "Crashed")])
def test_interrupts_end_the_span_and_propagate(captured, exc, state_name):  # type: ignore[no-untyped-def]
    @task(retries=3)
    def interrupted():  # type: ignore[no-untyped-def]
        raise exc()

    @flow
    def outer():  # type: ignore[no-untyped-def]
        interrupted()

    with pytest.raises(exc):
        outer()
    spans = {s.name: s for s in captured.spans}
    assert set(spans) == {"task interrupted", "flow outer"}  # both ended despite the interrupt
    assert attrs(spans["task interrupted"])[sc.RUN_STATE] == state_name
    assert attrs(spans["task interrupted"])[sc.RUN_ATTEMPT] == 1  # never retried
    assert attrs(spans["flow outer"])[sc.RUN_STATE] == state_name
    assert FlowRunContext.get() is None and TaskRunContext.get() is None


def test_task_timeout_in_worker_thread(captured):  # type: ignore[no-untyped-def]
    @task(timeout_seconds=0.2)
    def slow():  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # pure-Python loop: interruptible
            time.sleep(0.01)
        return "finished"

    @flow
    def f():  # type: ignore[no-untyped-def]
        return slow.submit().wait() or slow.submit()

    started = time.monotonic()
    state = f(return_state=True)
    assert time.monotonic() - started < 4
    assert state.is_failed()
    span = captured.task_spans()[0]
    assert attrs(span)[sc.RUN_STATE] == "TimedOut"
    assert attrs(span)[sc.ERROR_TYPE] == "TaskRunTimeoutError"
    assert span.status.description == "Task run exceeded timeout of 0.2 second(s)"


def test_flow_timeout_in_main_thread_interrupts_sleep(captured):  # type: ignore[no-untyped-def]
    @flow(timeout_seconds=0.2)
    def sleepy():  # type: ignore[no-untyped-def]
        time.sleep(5)

    started = time.monotonic()
    state = sleepy(return_state=True)
    assert time.monotonic() - started < 3
    assert state.name == "TimedOut"


def test_flow_timeout_firing_inside_a_log_call_lands_after_it(captured):  # type: ignore[no-untyped-def]
    # The timer's handler called as the timer firing inside a logging handler finds it: raised there, the timeout
    # cut the record short (the handlers after this one never got it). It lands a moment later, in the body.
    import logging
    import signal
    import sys

    from otelflow import get_run_logger

    class FiresTheTimer(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "before the sleep":
                signal.getsignal(signal.SIGALRM)(signal.SIGALRM, sys._getframe())

    @flow(timeout_seconds=30)
    def sleepy():  # type: ignore[no-untyped-def]
        run_logger = logging.getLogger("otelflow.flow_runs")
        handler = FiresTheTimer()
        run_logger.addHandler(handler)
        try:
            get_run_logger().info("before the sleep")
        finally:
            run_logger.removeHandler(handler)
        time.sleep(10)

    state = sleepy(return_state=True)
    assert state.name == "TimedOut"
    assert "before the sleep" in [str(r.log_record.body) for r in captured.logs]


# --- futures and annotations ----------------------------------------------------------------------------


def test_submit_map_and_return_state(captured):  # type: ignore[no-untyped-def]
    @task
    def double(x):  # type: ignore[no-untyped-def]
        return 2 * x

    @flow
    def f():  # type: ignore[no-untyped-def]
        single = double.submit(21)
        many = double.map([1, 2, 3])
        assert isinstance(single, TaskRunFuture) and isinstance(many, FutureList)
        many.wait()
        chained = double.submit(single)  # a future as an argument is resolved first
        return single.result(), many.result(), chained.result(), double(5, return_state=True)

    single, many, chained, state = f()
    assert (single, many, chained) == (42, [2, 4, 6], 84)
    assert state.is_completed() and state.result() == 10


def test_futures_returned_from_a_flow_are_resolved(captured):  # type: ignore[no-untyped-def]
    @task
    def inc(x):  # type: ignore[no-untyped-def]
        return x + 1

    @flow
    def f():  # type: ignore[no-untyped-def]
        return {"a": inc.submit(1), "b": inc.map([1, 2])}

    returned = f()  # Prefect 3: futures come back as their final states, wherever they sit
    assert returned["a"].result() == 2
    assert [s.result() for s in returned["b"]] == [2, 3]
    assert f(return_state=True).message == "All states completed." or f(return_state=True).is_completed()


def test_seed_failure_handling_example(captured):  # type: ignore[no-untyped-def]
    @task
    def risky_task(value):  # type: ignore[no-untyped-def]
        if value < 0:
            raise ValueError("Negative value")
        return value * 2

    @task
    def handle_result(result):  # type: ignore[no-untyped-def]
        if isinstance(result, Exception):
            return f"Error: {result}"
        return f"Success: {result}"

    @flow
    def failure_handling_example():  # type: ignore[no-untyped-def]
        results = risky_task.map(allow_failure([-1, 2, 3, -4, 5]))
        return handle_result.map(allow_failure(results))

    assert [s.result() for s in failure_handling_example()] == [
        "Error: Negative value",
        "Success: 4",
        "Success: 6",
        "Error: Negative value",
        "Success: 10",
    ]


def test_downstream_of_failed_upstream_is_not_ready_and_flow_fails(captured):  # type: ignore[no-untyped-def]
    ran = []

    @task
    def upstream():  # type: ignore[no-untyped-def]
        raise ValueError("upstream broke")

    @task
    def downstream(x):  # type: ignore[no-untyped-def]
        ran.append(x)

    @flow
    def f():  # type: ignore[no-untyped-def]
        return downstream.submit(upstream.submit())

    state = f(return_state=True)
    assert ran == []
    # Prefect's aggregate rule: the returned NotReady state is not final, so the flow fails.
    assert state.is_failed() and state.message == "1/1 states are not final."
    spans = {s.name: s for s in captured.task_spans()}
    assert attrs(spans["task downstream"])[sc.RUN_STATE] == "NotReady"
    not_ready = state.result(raise_on_failure=False)
    upstream_id = attrs(spans["task upstream"])[sc.RUN_ID]
    assert not_ready.name == "NotReady"
    assert not_ready.message == f"Upstream task run '{upstream_id}' did not reach a 'COMPLETED' state."

    @flow
    def g():  # type: ignore[no-untyped-def]
        return downstream(upstream(return_state=True))

    # Calling a task whose input failed: it never runs, and its result is not available (Prefect).
    with pytest.raises(UnfinishedRun, match="PENDING"):
        g()


def test_seed_quote_and_unmapped_examples(captured):  # type: ignore[no-untyped-def]
    @task
    def expression_task(expr):  # type: ignore[no-untyped-def]
        return expr

    @task
    def one():  # type: ignore[no-untyped-def]
        return 1

    @task
    def kind_of(items):  # type: ignore[no-untyped-def]
        return type(items[0]).__name__

    @flow
    def quote_example():  # type: ignore[no-untyped-def]
        future = one.submit()
        x, y = 10, 20
        return (
            expression_task(x + y),
            expression_task(quote("x + y")),
            kind_of(quote([future])),  # quoted: the future itself is passed, not its result
            expression_task([future]),
        )

    evaluated, quoted, quoted_future, resolved = quote_example()
    assert (evaluated, quoted) == (30, "x + y")
    assert quoted_future == "TaskRunFuture"
    assert resolved == [1]


def test_map_errors_are_prefects():  # type: ignore[no-untyped-def]
    @task
    def add(a, b):  # type: ignore[no-untyped-def]
        return a + b

    @flow
    def f(case):  # type: ignore[no-untyped-def]
        if case == "lengths":
            return add.map([1, 2], [1, 2, 3])
        if case == "none":
            return add.map(1, unmapped(2))
        return add.map([1, 2], 10).result()  # a non-iterable is passed whole

    with pytest.raises(MappingLengthMismatch, match=r"Got lengths: \{'a': 2, 'b': 3\}"):
        f("lengths")
    with pytest.raises(MappingMissingIterable, match="at least one iterable"):
        f("none")
    assert f("ok") == [11, 12]


def test_tasks_run_outside_flows(captured):  # type: ignore[no-untyped-def]
    @task
    def standalone(x):  # type: ignore[no-untyped-def]
        return x * 3

    assert standalone(2) == 6
    # As in Prefect, submitting and mapping need a flow's task runner.
    with pytest.raises(RuntimeError, match="submission"):
        standalone.submit(3)
    with pytest.raises(RuntimeError, match="mapped task runs"):
        standalone.map([1, 2])
    spans = captured.task_spans()
    assert len(spans) == 1
    assert all(sc.FLOW_RUN_ID not in attrs(s) for s in spans)
    assert all(s.parent is None for s in spans)


def test_subflows_nest(captured):  # type: ignore[no-untyped-def]
    @task
    def leaf():  # type: ignore[no-untyped-def]
        return FlowRunContext.get().flow_run.flow_name

    @flow
    def child():  # type: ignore[no-untyped-def]
        return leaf()

    @flow
    def parent():  # type: ignore[no-untyped-def]
        return child(), leaf()

    assert parent() == ("child", "parent")
    spans = {s.name: s for s in captured.spans}
    assert spans["flow child"].parent.span_id == spans["flow parent"].context.span_id
    leafs = captured.spans_named("task leaf")
    assert {s.parent.span_id for s in leafs} == {spans["flow child"].context.span_id,
                                                 spans["flow parent"].context.span_id}


# --- async ------------------------------------------------------------------------------------------------


async def test_async_flows_and_tasks(captured):  # type: ignore[no-untyped-def]
    @task(retries=1)
    async def fetch(i):  # type: ignore[no-untyped-def]
        await asyncio.sleep(0)
        if TaskRunContext.get().task_run.run_count == 1 and i == 0:
            raise ConnectionError("first try")
        return i * 10

    @task
    def sync_step(values):  # type: ignore[no-untyped-def]
        return sum(values)

    @flow
    async def async_flow(n: int):  # type: ignore[no-untyped-def]
        values = await asyncio.gather(*(fetch(i) for i in range(n)))
        submitted = fetch.submit(5).result()
        return sync_step(values) + submitted

    assert await async_flow(3) == 30 + 50
    (flow_span,) = captured.flow_spans()
    tasks = captured.task_spans()
    assert len(tasks) == 5
    assert {s.context.trace_id for s in tasks} == {flow_span.context.trace_id}
    retried = [s for s in tasks if attrs(s)[sc.RUN_ATTEMPT] == 2]
    assert len(retried) == 1 and "Retrying" in event_names(retried[0])


async def test_async_timeout(captured):  # type: ignore[no-untyped-def]
    @task(timeout_seconds=0.05)
    async def hang():  # type: ignore[no-untyped-def]
        await asyncio.sleep(5)

    state = await hang(return_state=True)
    assert state.name == "TimedOut"
    assert attrs(captured.task_spans()[0])[sc.ERROR_TYPE] == "TaskRunTimeoutError"


# --- parameters ---------------------------------------------------------------------------------------------


def test_wrong_arguments_name_the_parameter():  # type: ignore[no-untyped-def]
    @flow
    def typed(count: int, label: str = "x"):  # type: ignore[no-untyped-def]
        return count, label

    with pytest.raises(ParameterBindError, match="'count'"):
        typed()
    with pytest.raises(ParameterBindError, match="'colour'"):
        typed(1, colour="red")
    with pytest.raises(ParameterTypeError, match=r"count: Input should be a valid integer"):
        typed("many")
    assert typed("3") == (3, "x")  # coerced, as Prefect's pydantic validation does


def test_parameters_are_type_names_by_default(captured):  # type: ignore[no-untyped-def]
    @task
    def t(password, data, obj):  # type: ignore[no-untyped-def]
        return None

    t("hunter2", list(range(100_000)), object())
    a = attrs(captured.task_spans()[0])
    assert a[sc.PARAMETER_PREFIX + "password"] == "str"
    assert a[sc.PARAMETER_PREFIX + "data"] == "list"
    assert a[sc.PARAMETER_PREFIX + "obj"] == "object"
    assert "hunter2" not in str(a)


def test_parameter_values_opt_in_are_redacted_and_truncated(captured, settings_env):  # type: ignore[no-untyped-def]
    from pydantic import SecretStr

    settings_env(RECORD_PARAMETER_VALUES="true", PARAMETER_VALUE_MAX_LENGTH="64")

    class Unserializable:
        def __repr__(self) -> str:
            raise RuntimeError("no repr for you")

    @task
    def t(api_token, key, config, big, weird, n, nothing):  # type: ignore[no-untyped-def]
        return None

    t("tok-123", SecretStr("s3cr3t"), {"db": {"password": "pw", "host": "h"}}, "x" * 10_000, Unserializable(),
      7, None)
    a = attrs(captured.task_spans()[0])
    p = sc.PARAMETER_PREFIX
    assert a[p + "api_token"] == "[REDACTED]"
    assert a[p + "key"] == "[REDACTED]"
    assert "pw" not in a[p + "config"] and '"host": "h"' in a[p + "config"]
    assert len(a[p + "big"]) <= 64 and a[p + "big"].endswith("[truncated]")
    assert a[p + "weird"].startswith("<Unserializable")  # a broken __repr__ does not break the run
    assert a[p + "n"] == 7
    assert a[p + "nothing"] == "None"  # None is no valid OTel attribute value: exported as text
    assert "tok-123" not in str(a) and "s3cr3t" not in str(a)


def test_with_options_and_unknown_option():  # type: ignore[no-untyped-def]
    @task
    def base():  # type: ignore[no-untyped-def]
        return TaskRunContext.get().task.name

    assert base.with_options(name="renamed")() == "renamed"
    with pytest.raises(TypeError, match="unknown options"):
        base.with_options(retires=3)


def test_every_task_run_ends_with_prefects_finished_line(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(LOG_RUN_EVENTS="true")

    @task
    def ok():  # type: ignore[no-untyped-def]
        return 1

    @task
    def skipped():  # type: ignore[no-untyped-def]
        return Completed(message="No work to do", name="Skipped")

    @task(timeout_seconds=0.2)
    def slow():  # type: ignore[no-untyped-def]
        threading.Event().wait(3)

    @flow
    def child():  # type: ignore[no-untyped-def]
        return ok()

    @flow
    def parent():  # type: ignore[no-untyped-def]
        ok()
        skipped()
        child()
        slow(return_state=True)

    parent()
    logs = [(r.log_record.severity_text, str(r.log_record.body)) for r in captured.logs]
    child_run = captured.flow_spans()[0].attributes[sc.RUN_NAME]
    assert logs[1:] == [
        ("INFO", "Finished in state Completed()"),
        ("INFO", "Finished in state Skipped('No work to do', type=COMPLETED)"),
        ("INFO", f"Beginning subflow run '{child_run}' for flow 'child'"),
        ("INFO", "Finished in state Completed()"),
        ("INFO", "Finished in state Completed()"),
        ("ERROR", "Task run failed with exception: TaskRunTimeoutError('Scope timed out after 0.2 second(s).')"),
        ("ERROR", "Task run exceeded timeout of 0.2 second(s)"),
        ("ERROR", "Finished in state TimedOut('Task run exceeded timeout of 0.2 second(s)', type=FAILED)"),
        ("INFO", "Finished in state Completed()"),
    ]
    skipped_span = captured.spans_named("task skipped")[0]
    assert skipped_span.attributes[sc.RUN_STATE] == "Skipped"


def test_flow_retries_log_prefects_lines(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(LOG_RUN_EVENTS="true")
    attempts = []

    @flow(retries=1)
    def flaky():  # type: ignore[no-untyped-def]
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("first fails")
        return "ok"

    assert flaky() == "ok"
    bodies = [str(r.log_record.body) for r in captured.logs]
    run_name = captured.flow_spans()[0].attributes[sc.RUN_NAME]
    assert bodies == [
        f"Beginning flow run '{run_name}' for flow 'flaky'",
        "Encountered exception during execution: ValueError('first fails')",
        "Received non-final state 'AwaitingRetry' when proposing final state 'Failed' and will attempt to run again...",
        f"Beginning flow run '{run_name}' for flow 'flaky'",
        "Finished in state Completed()",
    ]


def test_engine_logs_run_lifecycle_like_prefect(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(LOG_RUN_EVENTS="true")

    @task(retries=1, retry_delay_seconds=0)
    def always_fails():  # type: ignore[no-untyped-def]
        raise ValueError("bad row")

    @flow
    def lifecycle():  # type: ignore[no-untyped-def]
        always_fails()

    with pytest.raises(ValueError):
        lifecycle()
    logs = [(r.log_record.severity_text, str(r.log_record.body), r) for r in captured.logs]
    bodies = [body for _, body, _ in logs]
    assert bodies[0].startswith("Beginning flow run ")
    assert bodies[1:] == [
        "Task run failed with exception: ValueError('bad row') - Retry 1/1 will start immediately",
        "Task run failed with exception: ValueError('bad row') - Retries are exhausted",
        "Finished in state Failed('Task run encountered an exception ValueError: bad row')",
        "Encountered exception during execution: ValueError('bad row')",
        "Finished in state Failed('Flow run encountered an exception: ValueError: bad row')",
    ]
    # Prefect's levels: the retry notice is INFO, failures ERROR, a task's failed final state ERROR, a flow's INFO.
    assert [sev for sev, _, _ in logs] == ["INFO", "INFO", "ERROR", "ERROR", "ERROR", "INFO"]
    failure = logs[2][2].log_record
    assert failure.attributes[sc.EXCEPTION_TYPE] == "ValueError"
    assert "bad row" in failure.attributes[sc.EXCEPTION_STACKTRACE]
    (task_span,) = captured.task_spans()
    assert failure.span_id == task_span.context.span_id
    assert logs[3][2].log_record.span_id == task_span.context.span_id
    flow_span = captured.flow_spans()[0]
    assert logs[4][2].log_record.span_id == flow_span.context.span_id

    settings_env(LOG_RUN_EVENTS="false")
    captured.clear()
    with pytest.raises(ValueError):
        lifecycle()
    assert captured.logs == []

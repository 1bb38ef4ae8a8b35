"""Generator flows and tasks (Prefect's ``run_generator_flow_sync`` / ``run_generator_task_sync`` and async twins).

Calling one returns a generator; iterating it runs the run (one span, its contexts current while the function
runs) and yields the function's values as they come. The run completes when the function returns, or when the
caller stops early; an exception fails it (after retries, which start the function again) and reaches the caller
once the run has ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from otelflow import flow, task
from otelflow import semconv as sc
from otelflow.context import FlowRunContext, TaskRunContext


def _state(span: Any) -> str:
    return str(span.attributes[sc.RUN_STATE])


def test_a_generator_flow_yields_its_values_inside_its_run(captured: Any) -> None:
    @flow
    def numbers(n: int) -> Iterator[tuple[int, str]]:
        for i in range(n):
            ctx = FlowRunContext.get()
            assert ctx is not None and ctx.flow_run is not None
            yield i, ctx.flow_run.name

    gen = numbers(3)
    assert captured.flow_spans() == []  # nothing runs before it is iterated
    values = list(gen)
    assert [v for v, _ in values] == [0, 1, 2]
    (span,) = captured.flow_spans()
    assert {name for _, name in values} == {span.attributes[sc.RUN_NAME]}
    assert _state(span) == "Completed"


def test_a_generator_task_in_a_flow(captured: Any) -> None:
    @task
    def chunks(rows: list[int]) -> Iterator[list[int]]:
        ctx = TaskRunContext.get()
        assert ctx is not None and ctx.task_run is not None
        for i in range(0, len(rows), 2):
            yield rows[i:i + 2]

    @flow
    def pipeline() -> list[list[int]]:
        return list(chunks([1, 2, 3, 4, 5]))

    assert pipeline() == [[1, 2], [3, 4], [5]]
    (task_span,) = captured.task_spans()
    assert task_span.parent is not None
    assert task_span.parent.span_id == captured.flow_spans()[0].context.span_id
    assert _state(task_span) == "Completed"


def test_stopping_early_completes_the_run(captured: Any) -> None:
    closed: list[bool] = []

    @flow
    def endless() -> Iterator[int]:
        i = 0
        try:
            while True:
                yield i
                i += 1
        finally:
            closed.append(True)

    for value in endless():
        if value == 2:
            break
    assert closed == [True]
    assert _state(captured.flow_spans()[0]) == "Completed"


def test_a_failing_generator_is_retried_and_its_exception_reaches_the_caller(captured: Any) -> None:
    attempts: list[int] = []

    @task(retries=1)
    def flaky() -> Iterator[int]:
        attempts.append(1)
        yield len(attempts)
        raise ValueError("broken stream")

    seen: list[int] = []
    with pytest.raises(ValueError, match="broken stream"):
        for value in flaky():
            seen.append(value)
    assert seen == [1, 2]  # the retry starts the function again
    (span,) = captured.task_spans()
    assert _state(span) == "Failed" and span.attributes[sc.RUN_ATTEMPT] == 2


def test_return_state_is_refused_as_in_prefect() -> None:
    @flow
    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(ValueError, match="The return_type for a generator flow must be 'result'"):
        gen(return_state=True)


async def test_an_async_generator_flow(captured: Any) -> None:
    @flow
    async def numbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i * 10

    assert [v async for v in numbers(3)] == [0, 10, 20]
    assert _state(captured.flow_spans()[0]) == "Completed"

    @flow
    async def broken() -> AsyncIterator[int]:
        yield 1
        raise RuntimeError("async stream broke")

    got: list[int] = []
    with pytest.raises(RuntimeError, match="async stream broke"):
        async for value in broken():
            got.append(value)
    assert got == [1]
    assert _state(captured.spans_named("flow broken")[0]) == "Failed"

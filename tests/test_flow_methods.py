"""Flows and tasks defined on classes: instance methods, classmethods, staticmethods (Prefect's descriptor protocol).

Prefect binds a flow or task read from an instance to that instance (``self`` is the first parameter of the
run), a classmethod to the class, and leaves a staticmethod alone.
"""

from __future__ import annotations

from typing import Any

import pytest

from otelflow import flow, task
from otelflow import semconv as sc
from otelflow.context import FlowRunContext


class Pipeline:
    def __init__(self, factor: int) -> None:
        self.factor = factor

    @task
    def scale(self, x: int) -> int:
        return x * self.factor

    @flow
    def run(self, x: int) -> int:
        return self.scale(x) + 1

    @flow
    async def arun(self, x: int) -> int:
        return x * self.factor

    @classmethod
    @flow
    def build(cls, factor: int) -> str:
        return f"{cls.__name__}({factor})"

    @flow
    @classmethod
    def build_inner(cls, factor: int) -> str:
        return f"{cls.__name__}:{factor}"

    @staticmethod
    @flow
    def helper(x: int) -> int:
        return x + 100

    @flow
    @staticmethod
    def helper_inner(x: int) -> int:
        return x + 200

    @flow
    def params(self, x: int) -> list[str]:
        ctx = FlowRunContext.get()
        assert ctx is not None
        return sorted(ctx.parameters)


def test_an_instance_method_flow_binds_self(captured: Any) -> None:
    assert Pipeline(3).run(2) == 7
    assert Pipeline(5).run(x=2) == 11
    assert Pipeline(1).params(1) == ["self", "x"]  # as in Prefect, self is a parameter of the run
    flow_span = captured.flow_spans()[0]
    assert flow_span.name == "flow run"
    assert flow_span.attributes[sc.PARAMETER_PREFIX + "self"] == "Pipeline"


async def test_an_async_method_flow_binds_self(captured: Any) -> None:
    assert await Pipeline(4).arun(2) == 8


def test_class_and_static_methods_in_either_decorator_order(captured: Any) -> None:
    assert Pipeline.build(2) == "Pipeline(2)"
    assert Pipeline(0).build(3) == "Pipeline(3)"
    assert Pipeline.build_inner(4) == "Pipeline:4"
    assert Pipeline(0).build_inner(5) == "Pipeline:5"
    assert Pipeline.helper(1) == 101
    assert Pipeline(0).helper(2) == 102
    assert Pipeline.helper_inner(1) == 201
    assert Pipeline(0).helper_inner(2) == 202


def test_method_tasks_submit_and_map_with_self(captured: Any) -> None:
    class Scaler:
        def __init__(self, factor: int) -> None:
            self.factor = factor

        @task
        def scale(self, x: int) -> int:
            return x * self.factor

        @flow
        def all(self, xs: list[int]) -> list[int]:
            one = self.scale.submit(10).result()
            return [one, *self.scale.map(xs).result()]

    assert Scaler(2).all([1, 2, 3]) == [20, 2, 4, 6]
    spans = captured.task_spans()
    assert sorted(s.attributes[sc.TASK_MAP_INDEX] for s in spans if sc.TASK_MAP_INDEX in s.attributes) == [0, 1, 2]


def test_the_flow_read_from_the_class_is_the_flow_itself() -> None:
    assert Pipeline.__dict__["run"] is Pipeline.run
    bound = Pipeline(1).run
    assert bound is not Pipeline.run and bound.name == "run"


def test_with_options_keeps_the_binding(captured: Any) -> None:
    bound = Pipeline(6).run.with_options(name="renamed")
    assert bound(1) == 7
    assert captured.flow_spans()[0].name == "flow renamed"


def test_a_method_flow_called_unbound_still_needs_self() -> None:
    from otelflow.exceptions import ParameterBindError

    with pytest.raises(ParameterBindError, match="missing a value for parameter 'x'"):
        Pipeline.run(2)  # type: ignore[call-arg]  # 2 is taken as self, as in plain Python

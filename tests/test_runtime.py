"""``otelflow.runtime``: Prefect's ``prefect.runtime`` attributes, outside runs, in flows, tasks and subflows.

The expected values and types are Prefect 3.9.1's, measured with the same flows under Prefect (ids are
strings, ``scheduled_start_time`` is a UTC time, empty values outside a run); the URLs are None because
otelflow has no API server.
"""

from __future__ import annotations

import asyncio
import datetime
import importlib
import uuid
from typing import Any

import pytest

from otelflow import flow, semconv, tags, task
from otelflow.context import FlowRunContext, TaskRunContext, hydrated_context, serialize_context
from otelflow.runtime import deployment, flow_run, task_run
from otelflow.testing import CapturedTelemetry

# Prefect 3.9.1's __all__ of each module.
PREFECT_FLOW_RUN = {
    "id", "tags", "scheduled_start_time", "name", "flow_name", "flow_version", "parameters",
    "parent_flow_run_id", "parent_deployment_id", "root_flow_run_id", "run_count", "api_url", "ui_url",
    "job_variables",
}
PREFECT_TASK_RUN = {"id", "tags", "name", "parameters", "run_count", "task_name", "api_url", "ui_url"}
PREFECT_DEPLOYMENT = {"id", "flow_run_id", "name", "parameters", "version"}


def snapshot(module: Any) -> dict[str, Any]:
    return {name: getattr(module, name) for name in module.__all__}


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith(("OTELFLOW__RUNTIME__", "PREFECT__RUNTIME__")) or key == "OTELFLOW__FLOW_RUN_ID":
            monkeypatch.delenv(key)


# --- the modules ---------------------------------------------------------------------------------------


def test_modules_list_prefects_attributes() -> None:
    import otelflow.runtime

    assert set(otelflow.runtime.__all__) == {"deployment", "flow_run", "task_run"}
    assert set(flow_run.__all__) == PREFECT_FLOW_RUN
    assert set(task_run.__all__) == PREFECT_TASK_RUN
    assert set(deployment.__all__) == PREFECT_DEPLOYMENT
    for module in (flow_run, task_run, deployment):
        assert dir(module) == sorted(module.__all__)


def test_unknown_attributes_raise_and_from_imports_work() -> None:
    with pytest.raises(AttributeError, match=r"otelflow.runtime.flow_run has no attribute 'nope'"):
        _ = flow_run.nope
    with pytest.raises(ImportError):
        from otelflow.runtime.flow_run import nope  # noqa: F401
    from otelflow.runtime.flow_run import name
    from otelflow.runtime.flow_run import tags as run_tags
    from otelflow.runtime.task_run import task_name

    assert (name, run_tags, task_name) == (None, [], None)
    assert importlib.import_module("otelflow.runtime.deployment") is deployment


def test_outside_any_run_every_attribute_is_empty() -> None:
    before = datetime.datetime.now(datetime.UTC)
    values = snapshot(flow_run)
    scheduled = values.pop("scheduled_start_time")
    assert isinstance(scheduled, datetime.datetime) and scheduled.utcoffset() == datetime.timedelta(0)
    assert before <= scheduled <= datetime.datetime.now(datetime.UTC)
    assert values == {
        "id": None, "tags": [], "name": None, "flow_name": None, "flow_version": None, "parameters": {},
        "parent_flow_run_id": None, "parent_deployment_id": None, "root_flow_run_id": None, "run_count": 0,
        "api_url": None, "ui_url": None, "job_variables": None,
    }
    assert snapshot(task_run) == {
        "id": None, "tags": [], "name": None, "parameters": {}, "run_count": 0, "task_name": None,
        "api_url": None, "ui_url": None,
    }
    assert snapshot(deployment) == {"id": None, "flow_run_id": None, "name": None, "parameters": {}, "version": None}


# --- in runs ---------------------------------------------------------------------------------------------


@task(tags=["ttag"])
def record_in_task(x: int, y: int = 2) -> dict[str, Any]:
    ctx = TaskRunContext.get()
    assert ctx is not None and ctx.task_run is not None
    return {
        "flow_run": snapshot(flow_run), "task_run": snapshot(task_run), "deployment": snapshot(deployment),
        "task_run_id": ctx.task_run.id,
    }


@flow(version="v1")
def sync_parent(a: int, b: int = 3) -> dict[str, Any]:
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    with tags("inner"):
        in_task = record_in_task(1)
    return {
        "flow_run": snapshot(flow_run), "task_run": snapshot(task_run), "deployment": snapshot(deployment),
        "in_task": in_task, "ctx_id": ctx.flow_run.id, "ctx_name": ctx.flow_run.name, "start": ctx.start_time,
    }


@task(tags=["ttag"])
async def arecord_in_task(x: int, y: int = 2) -> dict[str, Any]:
    await asyncio.sleep(0)
    ctx = TaskRunContext.get()
    assert ctx is not None and ctx.task_run is not None
    return {
        "flow_run": snapshot(flow_run), "task_run": snapshot(task_run), "deployment": snapshot(deployment),
        "task_run_id": ctx.task_run.id,
    }


@flow(version="v1")
async def async_parent(a: int, b: int = 3) -> dict[str, Any]:
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    with tags("inner"):
        in_task = await arecord_in_task(1)
    return {
        "flow_run": snapshot(flow_run), "task_run": snapshot(task_run), "deployment": snapshot(deployment),
        "in_task": in_task, "ctx_id": ctx.flow_run.id, "ctx_name": ctx.flow_run.name, "start": ctx.start_time,
    }


def run_parent(kind: str) -> dict[str, Any]:
    with tags("outer"):
        if kind == "sync":
            return sync_parent(1)
        return asyncio.run(async_parent(1))


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_flow_run_and_its_task_runs_see_the_flow_runs_values(kind: str) -> None:
    seen = run_parent(kind)
    run_id = str(seen["ctx_id"])
    expected_flow_run = {
        "id": run_id, "tags": ["outer"], "scheduled_start_time": seen["start"], "name": seen["ctx_name"],
        "flow_name": f"{kind}-parent", "flow_version": "v1", "parameters": {"a": 1, "b": 3},
        "parent_flow_run_id": None, "parent_deployment_id": None, "root_flow_run_id": run_id, "run_count": 1,
        "api_url": None, "ui_url": None, "job_variables": {},
    }
    assert seen["flow_run"] == expected_flow_run
    assert seen["in_task"]["flow_run"] == expected_flow_run  # a task run reports its flow run
    assert isinstance(seen["flow_run"]["scheduled_start_time"], datetime.datetime)
    assert seen["flow_run"]["scheduled_start_time"].utcoffset() == datetime.timedelta(0)

    # In the flow but outside a task run: no task run.
    assert seen["task_run"] == {
        "id": None, "tags": [], "name": None, "parameters": {}, "run_count": 0, "task_name": None,
        "api_url": None, "ui_url": None,
    }
    in_task = seen["in_task"]["task_run"]
    task_name = "record_in_task" if kind == "sync" else "arecord_in_task"
    assert in_task["id"] == str(seen["in_task"]["task_run_id"])
    assert in_task["name"].startswith(f"{task_name}-")
    assert (in_task["task_name"], in_task["parameters"], in_task["run_count"]) == (task_name, {"x": 1, "y": 2}, 1)
    assert set(in_task["tags"]) == {"outer", "inner", "ttag"}  # the task's own and both tags() blocks
    assert (in_task["api_url"], in_task["ui_url"]) == (None, None)

    # Not from a deployment: Prefect reports the flow run's id and parameters, and no deployment.
    for where in (seen["deployment"], seen["in_task"]["deployment"]):
        assert where == {"id": None, "flow_run_id": run_id, "name": None, "parameters": {"a": 1, "b": 3},
                         "version": None}


def test_the_flow_run_id_is_the_one_in_the_exported_telemetry(captured: CapturedTelemetry) -> None:
    seen = run_parent("sync")
    [flow_span] = captured.spans_named("flow sync-parent")
    [task_span] = captured.spans_named("task record_in_task")
    assert (flow_span.attributes or {})[semconv.FLOW_RUN_ID] == seen["flow_run"]["id"]
    assert (flow_span.attributes or {})[semconv.RUN_NAME] == seen["flow_run"]["name"]
    assert (task_span.attributes or {})[semconv.RUN_ID] == seen["in_task"]["task_run"]["id"]
    assert (task_span.attributes or {})[semconv.FLOW_RUN_ID] == seen["flow_run"]["id"]


def test_the_default_flow_version_is_the_flows_and_a_flow_run_name_is_its_own() -> None:
    @flow(flow_run_name="nightly-{day}")
    def named(day: str) -> tuple[Any, ...]:
        return flow_run.name, flow_run.flow_version, flow_run.flow_name

    assert named("mon") == ("nightly-mon", named.version, "named")
    assert named.version  # a hash of the source file


# --- subflows ----------------------------------------------------------------------------------------------

lineage: dict[str, dict[str, Any]] = {}


def note(label: str) -> None:
    lineage[label] = {
        "id": flow_run.id, "parent": flow_run.parent_flow_run_id, "root": flow_run.root_flow_run_id,
        "tags": flow_run.tags,
    }


@flow
def grandchild() -> None:
    note("grandchild")


@task
def start_grandchild() -> None:
    note("task in child")
    grandchild()


@flow
def child() -> None:
    note("child")
    with tags("x"):
        start_grandchild()


@flow
def top() -> None:
    note("top")
    child()


@flow
async def atop() -> None:
    note("top")
    await asyncio.sleep(0)
    child()


@pytest.mark.parametrize("top_flow", [top, atop], ids=["sync", "async"])
def test_subflows_know_their_parent_and_root(top_flow: Any) -> None:
    lineage.clear()
    if top_flow is atop:
        asyncio.run(atop())
    else:
        top()
    top_id, child_id = lineage["top"]["id"], lineage["child"]["id"]
    assert lineage["top"] == {"id": top_id, "parent": None, "root": top_id, "tags": []}
    assert lineage["child"] == {"id": child_id, "parent": top_id, "root": top_id, "tags": []}
    assert lineage["task in child"] == {"id": child_id, "parent": top_id, "root": top_id, "tags": []}
    # A subflow started in a task run: its parent is the task's flow run; its tags those it was started under.
    assert lineage["grandchild"]["parent"] == child_id and lineage["grandchild"]["root"] == top_id
    assert lineage["grandchild"]["tags"] == ["x"]
    assert len({top_id, child_id, lineage["grandchild"]["id"]}) == 3


def test_the_parent_recorded_on_the_run_is_the_answer() -> None:
    """The run's ``parent_flow_run_id`` is the parent, and the best known root when no enclosing run is here."""
    recorded = uuid.uuid4()

    @flow
    def adopted() -> tuple[Any, Any]:
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        ctx.flow_run.parent_flow_run_id = recorded
        return flow_run.parent_flow_run_id, flow_run.root_flow_run_id

    assert adopted() == (str(recorded), str(recorded))


# --- retries --------------------------------------------------------------------------------------------------


def test_run_count_counts_attempts_of_flows_and_tasks() -> None:
    counts: list[tuple[str, int]] = []

    @task(retries=2)
    def flaky() -> None:
        counts.append(("task", task_run.run_count))
        if task_run.run_count < 3:
            raise ValueError("again")

    @flow(retries=1)
    def retried() -> None:
        counts.append(("flow", flow_run.run_count))
        flaky()
        if flow_run.run_count < 2:
            raise ValueError("again")

    retried()
    assert counts == [("flow", 1), ("task", 1), ("task", 2), ("task", 3),
                      ("flow", 2), ("task", 1), ("task", 2), ("task", 3)]


async def test_run_count_in_async_task_retries() -> None:
    counts: list[int] = []

    @task(retries=1)
    async def flaky() -> str:
        counts.append(task_run.run_count)
        if task_run.run_count < 2:
            raise ValueError("again")
        return str(task_run.id)

    @flow
    async def retried() -> str:
        return await flaky()

    run_id = await retried()
    assert counts == [1, 2] and uuid.UUID(run_id)


# --- a task run outside any flow, and a hydrated remote run ---------------------------------------------


def test_a_task_run_outside_a_flow_has_no_flow_run() -> None:
    @task
    def alone() -> tuple[Any, ...]:
        return flow_run.id, flow_run.name, flow_run.run_count, task_run.task_name, task_run.run_count

    assert alone() == (None, None, 0, "alone", 1)


def test_a_hydrated_remote_run_is_the_current_flow_run() -> None:
    @flow
    def remote() -> tuple[dict[str, str], str]:
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        return serialize_context(), ctx.flow_run.name

    with tags("svc"):
        carrier, run_name = remote()
    with hydrated_context(carrier):
        assert flow_run.name == run_name
        assert flow_run.flow_name == "remote"
        assert flow_run.tags == ["svc"]
        assert flow_run.id == flow_run.root_flow_run_id and uuid.UUID(flow_run.id)
        assert flow_run.flow_version is None  # the flow object is in the other process
        assert deployment.flow_run_id == flow_run.id
    assert flow_run.id is None


# --- environment overrides ------------------------------------------------------------------------------------


def test_overrides_are_cast_to_the_attributes_type(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTELFLOW__RUNTIME__FLOW_RUN__ID", "abc")
    monkeypatch.setenv("OTELFLOW__RUNTIME__FLOW_RUN__RUN_COUNT", "3")
    monkeypatch.setenv("OTELFLOW__RUNTIME__FLOW_RUN__JOB_VARIABLES", "x")  # None outside a run: taken as text
    monkeypatch.setenv("OTELFLOW__RUNTIME__FLOW_RUN__FOO", "bar")  # not an attribute: served as text
    monkeypatch.setenv("OTELFLOW__RUNTIME__TASK_RUN__RUN_COUNT", "4")
    monkeypatch.setenv("OTELFLOW__RUNTIME__TASK_RUN__NAME", "nm")
    monkeypatch.setenv("OTELFLOW__RUNTIME__DEPLOYMENT__NAME", "dep")
    assert (flow_run.id, flow_run.run_count, flow_run.job_variables, flow_run.foo) == ("abc", 3, "x", "bar")
    from otelflow.runtime.flow_run import foo

    assert foo == "bar"
    assert (task_run.run_count, task_run.name, deployment.name) == (4, "nm", "dep")

    @flow
    def pinned() -> tuple[Any, ...]:
        return flow_run.id, flow_run.run_count, flow_run.name

    monkeypatch.setenv("OTELFLOW__RUNTIME__FLOW_RUN__NAME", "pinned-name")
    assert pinned() == ("abc", 3, "pinned-name")


def test_prefects_variables_are_not_otelflows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT__RUNTIME__FLOW_RUN__NAME", "from-prefect")
    assert flow_run.name is None


@pytest.mark.parametrize(("module", "name"), [(flow_run, "tags"), (flow_run, "parameters"),
                                              (task_run, "parameters"), (deployment, "parameters")])
def test_lists_and_dicts_cannot_be_overridden(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> None:
    section = module.__name__.rsplit(".", 1)[1].upper()
    monkeypatch.setenv(f"OTELFLOW__RUNTIME__{section}__{name.upper()}", "a,b")
    with pytest.raises(ValueError, match=r"cannot be mocked using an environment variable\. Please use monkeypatch"):
        getattr(module, name)


@pytest.mark.parametrize(("text", "expected"), [
    ("2024-01-02T03:04:05", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
    ("2024-01-02T05:04:05+02:00", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
    ("2024-01-02T03:04:05Z", datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)),
])
def test_scheduled_start_time_override_is_a_utc_time(
    monkeypatch: pytest.MonkeyPatch, text: str, expected: datetime.datetime
) -> None:
    monkeypatch.setenv("OTELFLOW__RUNTIME__FLOW_RUN__SCHEDULED_START_TIME", text)
    value = flow_run.scheduled_start_time
    assert value == expected and value.utcoffset() == datetime.timedelta(0)


def test_flow_run_id_from_the_environment_outside_a_run(monkeypatch: pytest.MonkeyPatch) -> None:
    run_id = str(uuid.uuid4())
    monkeypatch.setenv("OTELFLOW__FLOW_RUN_ID", run_id)
    assert flow_run.id == run_id == deployment.flow_run_id == flow_run.root_flow_run_id
    assert flow_run.name is None and task_run.id is None


def test_boolean_and_float_overrides_follow_prefects_casts(monkeypatch: pytest.MonkeyPatch) -> None:
    from otelflow.runtime._attributes import lookup

    fields = {"flag": lambda: False, "ratio": lambda: 0.5}
    monkeypatch.setenv("OTELFLOW__RUNTIME__X__FLAG", "TRUE")
    monkeypatch.setenv("OTELFLOW__RUNTIME__X__RATIO", "2.5")
    assert lookup("m", "X", fields, "flag") is True
    assert lookup("m", "X", fields, "ratio") == 2.5
    monkeypatch.setenv("OTELFLOW__RUNTIME__X__FLAG", "yes")
    assert lookup("m", "X", fields, "flag") is False

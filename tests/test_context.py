"""Run contexts as Prefect's: pydantic ContextModels, the settings context, and the run logger's ``extra``.

What Prefect 3.9.1 does is the expectation throughout (messages, keys, their order).
"""

from __future__ import annotations

import logging
import uuid
from contextvars import ContextVar
from typing import Any, ClassVar

import pydantic
import pytest

from otelflow import flow, get_run_logger, task
from otelflow import semconv as sc
from otelflow.context import (
    ContextModel,
    FlowRunContext,
    SettingsContext,
    TagsContext,
    TaskRunContext,
    get_run_context,
    get_settings_context,
)
from otelflow.logging import LogEavesdropper
from otelflow.settings import Settings, get_current_settings, get_settings

# --- ContextModel: a pydantic model you can subclass --------------------------------------------------------


class RequestContext(ContextModel):
    __var__: ClassVar[ContextVar[Any]] = ContextVar("request")
    request_id: int
    region: str = "eu"


class UndeclaredVar(ContextModel):
    label: str = ""


def test_a_user_context_is_a_validating_pydantic_model() -> None:
    ctx = RequestContext(request_id=1)
    assert isinstance(ctx, pydantic.BaseModel)
    assert (ctx.request_id, ctx.region) == (1, "eu")
    assert RequestContext(request_id="2").request_id == 2  # pydantic's lax coercion, as in Prefect
    with pytest.raises(pydantic.ValidationError) as wrong_type:
        RequestContext(request_id="nope")
    assert [e["type"] for e in wrong_type.value.errors()] == ["int_parsing"]
    with pytest.raises(pydantic.ValidationError) as extra:
        RequestContext(request_id=1, colour="red")
    assert [e["type"] for e in extra.value.errors()] == ["extra_forbidden"]
    assert RequestContext.model_config == {"arbitrary_types_allowed": True, "extra": "forbid"}


def test_user_context_enter_get_copy_serialize() -> None:
    ctx = RequestContext(request_id=1)
    assert RequestContext.get() is None
    assert ctx.serialize() == {"request_id": 1}  # only what was set
    with ctx as entered:
        assert entered is ctx and RequestContext.get() is ctx
        copy = ctx.model_copy(update={"request_id": 5})
        assert copy._token is None and ctx._token is not None  # the copy is not entered
        assert (copy.request_id, ctx.request_id) == (5, 1)
        with copy:
            assert RequestContext.get() is copy
        assert RequestContext.get() is ctx
    assert RequestContext.get() is None

    built = RequestContext.model_construct(request_id=7)
    assert built._token is None and built.region == "eu" and built.serialize() == {"request_id": 7}
    with built:
        assert RequestContext.get() is built


def test_entering_twice_and_exiting_unentered_raise_prefects_errors() -> None:
    ctx = RequestContext(request_id=1)
    with pytest.raises(RuntimeError, match=r"^Asymmetric use of context\. Context exit called without an enter\.$"):
        ctx.__exit__(None, None, None)
    with ctx:
        with pytest.raises(RuntimeError, match=r"^Context already entered\. Context enter calls cannot be nested\.$"):
            ctx.__enter__()
        assert RequestContext.get() is ctx
    assert RequestContext.get() is None


def test_a_context_without_a_declared_var_gets_its_own_and_subclasses_share_their_parents() -> None:
    class Child(RequestContext):
        pass

    assert UndeclaredVar.__var__ is not RequestContext.__var__
    with UndeclaredVar(label="x") as ctx:
        assert UndeclaredVar.get() is ctx and RequestContext.get() is None
    assert Child.__var__ is RequestContext.__var__  # as in Prefect: a subclass is found by its parent's get()
    with Child(request_id=3) as child:
        assert RequestContext.get() is child


# --- otelflow's own contexts -------------------------------------------------------------------------------


def test_run_contexts_are_context_models_with_their_fields() -> None:
    seen: dict[str, Any] = {}

    @task
    def inner(x: int) -> int:
        ctx = TaskRunContext.get()
        assert ctx is not None
        seen["task"] = ctx
        seen["task_dump"] = ctx.model_dump()
        seen["task_serialized"] = ctx.serialize()
        return x

    @flow(log_prints=True)
    def outer(n: int) -> int:
        ctx = FlowRunContext.get()
        assert ctx is not None
        seen["flow"] = ctx
        seen["flow_serialized"] = ctx.serialize()
        return inner(n)

    assert outer(3) == 3
    task_ctx, flow_ctx = seen["task"], seen["flow"]
    for ctx in (task_ctx, flow_ctx, TagsContext(), SettingsContext.get()):
        assert isinstance(ctx, ContextModel) and isinstance(ctx, pydantic.BaseModel)
    assert task_ctx.task.name == "inner" and task_ctx.task_run.task_name == "inner"
    assert task_ctx.parameters == {"x": 3} and task_ctx.client is None
    assert task_ctx.span.get_span_context().is_valid and task_ctx.start_time.tzinfo is not None
    assert flow_ctx.flow.name == "outer" and flow_ctx.flow_run.flow_name == "outer"
    assert flow_ctx.log_prints is True and flow_ctx.task_runner is not None
    assert flow_ctx.background_tasks == set() and flow_ctx.parameters == {"n": 3}
    assert task_ctx._token is None and flow_ctx._token is None  # left when the runs ended

    dumped = seen["task_dump"]
    assert list(dumped) == ["parameters", "span", "client", "task", "task_run", "start_time"]
    assert dumped["task_run"]["id"] == task_ctx.task_run.id  # the run record as a dict, as Prefect's
    assert set(seen["task_serialized"]) == {"task_run", "task", "parameters", "start_time"}
    assert set(seen["flow_serialized"]) == {"flow_run", "flow", "parameters", "log_prints", "start_time"}


def test_run_contexts_keep_their_constructor_keywords() -> None:
    run_id = uuid.uuid4()
    from otelflow.context import FlowRun, TaskRun

    flow_ctx = FlowRunContext(flow_run=FlowRun(id=run_id, name="n", flow_name="f"), parameters={"a": 1},
                              start_ns=1_700_000_000_000_000_000, log_prints=True)
    assert flow_ctx.flow_run is not None and flow_ctx.flow_run.id == run_id
    assert flow_ctx.start_time.year == 2023 and flow_ctx.log_prints and flow_ctx.flow is None
    task_ctx = TaskRunContext(task_run=TaskRun(id=run_id, name="t-1", task_name="t"), parameters={"b": 2})
    assert task_ctx.task_run is not None and task_ctx.parameters == {"b": 2}
    with task_ctx:
        assert TaskRunContext.get() is task_ctx
    copy = task_ctx.model_copy(update={"parameters": {}})
    assert copy.parameters == {} and task_ctx.parameters == {"b": 2}
    # Built without validation, yet a complete model: every field set, in declaration order.
    for ctx in (flow_ctx, task_ctx, TagsContext({"x"})):
        assert list(vars(ctx)) == list(type(ctx).model_fields)
        assert ctx.model_fields_set == set(type(ctx).model_fields)
        assert ctx.model_copy() == ctx
    # Prefect keywords otelflow has no field for are refused, as unknown fields are.
    with pytest.raises(pydantic.ValidationError):
        TaskRunContext(task_run=None, result_store=object())


def test_subclasses_of_run_contexts_are_validated() -> None:
    class AuditedTaskRunContext(TaskRunContext):
        auditor: str

    ctx = AuditedTaskRunContext(auditor="ops", parameters={"a": 1})
    assert ctx.auditor == "ops" and ctx.parameters == {"a": 1} and ctx._token is None
    with pytest.raises(pydantic.ValidationError):
        AuditedTaskRunContext(auditor=1.5)
    with pytest.raises(pydantic.ValidationError):
        AuditedTaskRunContext(auditor="ops", span="not a span")
    with ctx:
        assert TaskRunContext.get() is ctx  # found through its parent's variable


def test_tags_context_validates_and_accepts_the_positional_form() -> None:
    assert TagsContext({"a"}).current_tags == {"a"}
    assert TagsContext(current_tags=["b", "b"]).current_tags == {"b"}
    with pytest.raises(pydantic.ValidationError):
        TagsContext(current_tags=[1])
    assert TagsContext.get().current_tags == set()


def test_get_run_context_in_a_subflow_called_by_a_task_is_the_subflows() -> None:
    @flow
    def child() -> str:
        return type(get_run_context()).__name__

    @task
    def middle() -> tuple[str, str]:
        return type(get_run_context()).__name__, child()

    @flow
    def parent() -> tuple[str, str]:
        return middle()

    assert parent() == ("TaskRunContext", "FlowRunContext")


# --- settings ---------------------------------------------------------------------------------------------


def test_settings_context_and_get_current_settings(settings_env: Any) -> None:
    settings_env(RECORD_PARAMETER_VALUES="true")
    assert get_settings_context() is SettingsContext.get()
    assert get_current_settings() is get_settings() and get_current_settings().record_parameter_values is True

    other = Settings(record_parameter_values=False)
    with SettingsContext(settings=other) as ctx:
        assert get_settings_context() is ctx and get_current_settings() is other
        assert ctx.profile.name == "default"
    assert get_current_settings() is get_settings()
    assert hash(SettingsContext(settings=other)) == hash(SettingsContext(settings=other))
    with pytest.raises(pydantic.ValidationError):
        SettingsContext(settings="not settings")


# --- get_run_logger(): Prefect's extra, Prefect's errors -----------------------------------------------


def test_run_logger_extra_is_prefects_in_flows_and_tasks() -> None:
    seen: dict[str, Any] = {}

    @task(name="load")
    def load() -> None:
        ctx = TaskRunContext.get()
        assert ctx is not None and ctx.task_run is not None
        seen["task_run"] = ctx.task_run
        seen["task"] = list(get_run_logger().extra.items())
        seen["task_kwargs"] = list(get_run_logger(batch="b1", size=3).extra.items())

    @flow(name="etl")
    def etl() -> None:
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        seen["flow_run"] = ctx.flow_run
        seen["flow"] = list(get_run_logger().extra.items())
        seen["flow_kwargs"] = list(get_run_logger(foo="bar").extra.items())
        load()

    etl()
    flow_run, task_run = seen["flow_run"], seen["task_run"]
    flow_extra = [("flow_run_name", flow_run.name), ("flow_run_id", str(flow_run.id)), ("flow_name", "etl"),
                  ("deployment_name", None)]
    assert seen["flow"] == flow_extra
    assert seen["flow_kwargs"] == [*flow_extra, ("foo", "bar")]
    task_extra = [("task_run_id", str(task_run.id)), ("flow_run_id", str(flow_run.id)),
                  ("task_run_name", task_run.name), ("task_name", "load"), ("flow_run_name", flow_run.name),
                  ("flow_name", "etl")]
    assert seen["task"] == task_extra
    assert seen["task_kwargs"] == [*task_extra, ("batch", "b1"), ("size", 3)]


def test_a_task_outside_flows_has_no_flow_run_id() -> None:
    @task
    def alone() -> dict[str, Any]:
        return dict(get_run_logger().extra)

    extra = alone()
    assert extra["flow_run_id"] is None
    assert (extra["flow_run_name"], extra["flow_name"], extra["task_name"]) == ("<unknown>", "<unknown>", "alone")


def test_run_records_carry_prefects_fields_and_stay_correlated(captured: Any) -> None:
    @flow(name="etl")
    def etl() -> None:
        logger = get_run_logger()
        logger.info("plain")
        logger.extra["added"] = "later"  # type: ignore[index]  # Prefect's adapter: later records carry it
        logger.info("after")

    with LogEavesdropper("otelflow.flow_runs", level=logging.INFO) as eavesdropper:
        etl()
    plain, after = eavesdropper.get_logs()
    assert plain.deployment_name is None and plain.flow_name == "etl"  # type: ignore[attr-defined]
    assert after.added == "later"  # type: ignore[attr-defined]
    exported = {log.log_record.body: dict(log.log_record.attributes) for log in captured.logs}
    (flow_span,) = captured.flow_spans()
    assert exported["plain"][sc.FLOW_RUN_ID] == flow_span.attributes[sc.RUN_ID] == plain.flow_run_id  # type: ignore[attr-defined]
    assert "flow_run_id" not in exported["plain"]  # once, under otelflow's name
    assert "deployment_name" not in exported["plain"]  # None is no OTel attribute value
    assert exported["after"]["added"] == "later"
    assert all(log.log_record.span_id == flow_span.context.span_id for log in captured.logs)
    assert all(not key.startswith("_") for attributes in exported.values() for key in attributes)


def test_run_logger_argument_errors_are_prefects() -> None:
    message = (r"^Received unexpected type '{}' for context\. "
               r"Expected one of 'None', 'FlowRunContext', or 'TaskRunContext'\.$")

    @flow
    def f() -> None:
        for wrong in (42, "task_runs", object()):
            with pytest.raises(TypeError, match=message.format(type(wrong).__name__)):
                get_run_logger(wrong)
        assert get_run_logger("").extra == get_run_logger().extra  # falsy: the current run, as Prefect's

    f()
    with pytest.raises(TypeError, match=message.format("int")):
        get_run_logger(42)  # the argument is checked before the context


def test_missing_context_error_is_prefects() -> None:
    import otelflow.context
    from otelflow.exceptions import MissingContextError, OtelflowException

    assert otelflow.context.MissingContextError is MissingContextError
    assert issubclass(MissingContextError, RuntimeError) and issubclass(MissingContextError, OtelflowException)
    with pytest.raises(MissingContextError, match=r"^There is no active flow or task run context\.$"):
        get_run_logger()
    with pytest.raises(MissingContextError, match="No run context available"):
        get_run_context()


def test_a_flow_run_context_without_a_run_gets_prefects_unknown_logger() -> None:
    with FlowRunContext():
        logger = get_run_logger(step="x")
    assert dict(logger.extra) == {  # type: ignore[arg-type]
        "flow_run_name": "<unknown>", "flow_run_id": "<unknown>", "flow_name": "<unknown>",
        "deployment_name": None, "step": "x",
    }

"""Run context across threads, asyncio tasks and processes: ``serialize_context`` / ``hydrated_context``.

The unit of truth is the exported telemetry: spans started inside a hydrated context must be children of
the serialized span, in the same trace, and run logs must correlate with the sender's run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import email.message
import json
import re
import subprocess
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from otlp_receiver import OTLPReceiver

from otelflow import flow, get_run_logger, propagation, semconv, tags, task, telemetry
from otelflow.context import (
    FlowRunContext,
    TagsContext,
    TaskRunContext,
    hydrated_context,
    serialize_context,
)
from otelflow.propagation import OtelflowCarrierWarning
from otelflow.testing import CapturedTelemetry

TRACEPARENT_RE = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")
HEADER_NAME_RE = re.compile(r"[a-z]+")  # also a valid environment variable name
SAFE_VALUE_RE = re.compile(r"[\x21-\x7e]+")  # printable ASCII, no space, CR, LF, NUL


@pytest.fixture(autouse=True)
def _fresh_warning_state() -> Iterator[None]:
    propagation._reset_warning_state()
    yield
    propagation._reset_warning_state()


def baggage_of(carrier: dict[str, str]) -> dict[str, str]:
    """The baggage entries of a carrier, decoded by otelflow's own W3C parser."""
    return {k: str(v) for k, v in baggage.get_all(propagation.from_carrier(carrier)).items()}


def span_ids(carrier: dict[str, str]) -> tuple[int, int]:
    match = TRACEPARENT_RE.fullmatch(carrier["traceparent"])
    assert match, carrier
    return int(match.group(1), 16), int(match.group(2), 16)


def current_ids() -> tuple[int, int]:
    ctx = trace.get_current_span().get_span_context()
    return ctx.trace_id, ctx.span_id


# --- a sender: one flow run, one task run, each serializing its context ------------------------------------


@task
def serialize_in_task() -> dict[str, str]:
    return serialize_context()


@flow
def sender() -> dict[str, Any]:
    with tags("nightly", "prod"):
        in_flow = serialize_context()
        in_task = serialize_in_task()
    ctx = FlowRunContext.get()
    assert ctx is not None and ctx.flow_run is not None
    return {"flow": in_flow, "task": in_task, "flow_run_id": str(ctx.flow_run.id), "flow_run_name": ctx.flow_run.name}


@pytest.fixture
def sent(captured: CapturedTelemetry) -> dict[str, Any]:
    """Carriers serialized in a real flow run and task run, and those runs' spans."""
    result = sender()
    (flow_span,) = captured.flow_spans()
    (task_span,) = captured.task_spans()
    captured.clear()
    return {**result, "flow_span": flow_span, "task_span": task_span}


# --- serialize_context ---------------------------------------------------------------------------------------


def test_serialize_in_flow_and_task_carries_span_and_run_identity(sent: dict[str, Any]) -> None:
    flow_span, task_span = sent["flow_span"], sent["task_span"]
    in_flow, in_task = sent["flow"], sent["task"]
    assert set(in_flow) == {"traceparent", "baggage"}
    assert span_ids(in_flow) == (flow_span.context.trace_id, flow_span.context.span_id)
    assert span_ids(in_task) == (task_span.context.trace_id, task_span.context.span_id)  # the task's own span

    flow_entries = {
        semconv.FLOW_RUN_ID: sent["flow_run_id"],
        semconv.FLOW_RUN_NAME: sent["flow_run_name"],
        semconv.FLOW_NAME: "sender",
        semconv.TAGS: "nightly,prod",
    }
    assert baggage_of(in_flow) == flow_entries
    task_attrs = task_span.attributes
    assert baggage_of(in_task) == {
        **flow_entries,
        semconv.TASK_RUN_ID: task_attrs[semconv.RUN_ID],
        semconv.TASK_RUN_NAME: task_attrs[semconv.RUN_NAME],
    }


def test_carrier_is_json_env_and_header_safe(sent: dict[str, Any]) -> None:
    for carrier in (sent["flow"], sent["task"]):
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in carrier.items())
        assert json.loads(json.dumps(carrier)) == carrier
        for name, value in carrier.items():
            assert HEADER_NAME_RE.fullmatch(name) and SAFE_VALUE_RE.fullmatch(value), (name, value)
        # As environment variables of a real child process, and back.
        code = "import json, os; print(json.dumps({k: os.environ[k] for k in ('traceparent', 'baggage')}))"
        child = subprocess.run([PYTHON, "-c", code], env=subprocess_env(**carrier), capture_output=True, text=True,
                               timeout=60, check=True)
        assert json.loads(child.stdout) == carrier


def test_odd_run_names_and_tags_survive_the_trip(captured: CapturedTelemetry) -> None:
    seen: dict[str, Any] = {}

    @flow(name="Flow with spaces é", flow_run_name="run=1;a,b %20")
    def odd() -> dict[str, str]:
        with tags("tag with space", "ünïcode", "a+b", "comma,tag"):
            return serialize_context()

    carrier = odd()
    assert SAFE_VALUE_RE.fullmatch(carrier["baggage"])
    with hydrated_context(carrier):
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        seen.update(name=ctx.flow_run.name, flow=ctx.flow_run.flow_name, tags=TagsContext.get().current_tags)
    assert seen["name"] == "run=1;a,b %20"
    assert seen["flow"] == "Flow with spaces é"
    # A tag with a comma cannot cross a comma-separated list: it is left out rather than split in two.
    assert seen["tags"] == {"tag with space", "ünïcode", "a+b"}


def test_serialize_outside_any_run_has_only_what_exists() -> None:
    assert serialize_context() == {}
    with tags("adhoc"):
        assert serialize_context() == {"baggage": "otelflow.tags=adhoc"}
    provider = TracerProvider()
    with provider.get_tracer("raw").start_as_current_span("raw") as span:
        carrier = serialize_context()
    assert carrier == {"traceparent": carrier["traceparent"]}
    assert span_ids(carrier) == (span.get_span_context().trace_id, span.get_span_context().span_id)


def test_reserializing_inside_a_hydrated_context_gives_the_same_ids(sent: dict[str, Any]) -> None:
    for carrier in (sent["flow"], sent["task"]):
        with hydrated_context(carrier):
            again = serialize_context()
        assert again["traceparent"] == carrier["traceparent"]
        assert baggage_of(again) == baggage_of(carrier)


def test_local_flow_inside_a_hydrated_context_does_not_forward_the_senders_task(
    sent: dict[str, Any], captured: CapturedTelemetry
) -> None:
    @flow
    def receiver() -> dict[str, str]:
        return serialize_context()

    with hydrated_context(sent["task"]):
        carrier = receiver()
    (local_flow,) = captured.flow_spans()
    entries = baggage_of(carrier)
    assert entries[semconv.FLOW_RUN_ID] == local_flow.attributes[semconv.RUN_ID]
    assert semconv.TASK_RUN_ID not in entries and semconv.TASK_RUN_NAME not in entries
    assert span_ids(carrier)[0] == sent["task_span"].context.trace_id  # still the sender's trace


# --- hydrated_context ------------------------------------------------------------------------------------------


def test_spans_inside_are_children_of_the_serialized_span(sent: dict[str, Any], captured: CapturedTelemetry) -> None:
    sender_span = sent["task_span"]
    raw_tracer = captured.tracer_provider.get_tracer("raw")

    @task
    def child_task() -> str:
        get_run_logger().info("child task ran")
        return "ok"

    @flow
    def child_flow() -> str:
        return child_task()

    with hydrated_context(sent["task"]):
        assert current_ids() == (sender_span.context.trace_id, sender_span.context.span_id)
        assert child_task() == "ok"
        assert child_flow() == "ok"
        with raw_tracer.start_as_current_span("raw child"):
            pass

    by_name = {s.name: s for s in captured.spans if s.name != "task child_task"}
    sender_id = sender_span.context.span_id
    top_level_task = [s for s in captured.spans_named("task child_task") if s.parent.span_id == sender_id]
    assert len(top_level_task) == 1
    for span in (top_level_task[0], by_name["flow child-flow"], by_name["raw child"]):
        assert span.context.trace_id == sender_span.context.trace_id
        assert span.parent is not None and span.parent.span_id == sender_span.context.span_id
        assert span.parent.is_remote
    # The task run inside carries the sender's run identity on its span.
    attrs = top_level_task[0].attributes
    assert attrs[semconv.FLOW_RUN_ID] == sent["flow_run_id"]
    assert attrs[semconv.FLOW_NAME] == "sender"
    assert attrs[semconv.TAGS] == ("nightly", "prod")


def test_run_identity_tags_and_logs_restored(sent: dict[str, Any], captured: CapturedTelemetry) -> None:
    task_attrs = sent["task_span"].attributes
    with hydrated_context(sent["task"]):
        flow_ctx, task_ctx = FlowRunContext.get(), TaskRunContext.get()
        assert flow_ctx is not None and flow_ctx.flow_run is not None
        assert flow_ctx.flow_run.id == uuid.UUID(sent["flow_run_id"])
        assert flow_ctx.flow_run.name == sent["flow_run_name"]
        assert flow_ctx.flow_run.flow_name == "sender"
        assert flow_ctx.flow_run.remote and flow_ctx.flow is None
        assert task_ctx is not None and task_ctx.task_run is not None
        assert str(task_ctx.task_run.id) == task_attrs[semconv.RUN_ID]
        assert TagsContext.get().current_tags == {"nightly", "prod"}
        get_run_logger().info("handled remotely")
    assert FlowRunContext.get() is None and TaskRunContext.get() is None
    assert TagsContext.get().current_tags == set()

    (record,) = [r for r in captured.logs if r.log_record.body == "handled remotely"]
    assert record.log_record.trace_id == sent["task_span"].context.trace_id
    assert record.log_record.span_id == sent["task_span"].context.span_id
    assert record.log_record.attributes[semconv.FLOW_RUN_ID] == sent["flow_run_id"]


@pytest.mark.parametrize("shape", ["dict", "upper", "mixed", "http_message", "asgi_list", "wsgi_environ"])
def test_header_mappings_with_any_key_case(sent: dict[str, Any], shape: str) -> None:
    carrier: dict[str, str] = sent["task"]
    given: Any
    if shape == "dict":
        given = dict(carrier)
    elif shape == "upper":
        given = {k.upper(): v for k, v in carrier.items()}
    elif shape == "mixed":
        given = {"TraceParent": carrier["traceparent"], "Baggage": carrier["baggage"], "Content-Type": "text/plain"}
    elif shape == "http_message":
        given = email.message.Message()
        for k, v in carrier.items():
            given[k.title()] = v
    elif shape == "asgi_list":
        given = [(k.encode(), v.encode()) for k, v in carrier.items()] + [(b"host", b"example")]
    else:
        given = {f"HTTP_{k.upper()}": v for k, v in carrier.items()} | {"wsgi.input": object()}
    with warnings.catch_warnings():
        warnings.simplefilter("error", OtelflowCarrierWarning)
        with hydrated_context(given):
            assert current_ids() == span_ids(carrier)
            ctx = FlowRunContext.get()
            assert ctx is not None and ctx.flow_run is not None and str(ctx.flow_run.id) == sent["flow_run_id"]


def test_previous_context_restored_on_exit_and_on_exception(sent: dict[str, Any], captured: CapturedTelemetry) -> None:
    seen: dict[str, Any] = {}

    @flow
    def local() -> None:
        before = (current_ids(), FlowRunContext.get(), TaskRunContext.get(), set(TagsContext.get().current_tags))
        with pytest.raises(RuntimeError, match="inside"), hydrated_context(sent["task"]):
            assert current_ids() == span_ids(sent["task"])
            raise RuntimeError("inside")
        after = (current_ids(), FlowRunContext.get(), TaskRunContext.get(), set(TagsContext.get().current_tags))
        seen["same"] = before == after
        seen["before_flow"] = before[1]

    with tags("outer"):
        local()
    assert seen["same"] is True
    assert seen["before_flow"] is not None and seen["before_flow"].flow_run.remote is False


def test_a_context_without_run_identity_hides_the_local_run(captured: CapturedTelemetry) -> None:
    provider = TracerProvider()
    with provider.get_tracer("raw").start_as_current_span("foreign") as foreign:
        foreign_carrier = serialize_context()  # a traceparent only: someone else's service

    @flow
    def local() -> tuple[Any, Any]:
        with hydrated_context(foreign_carrier):
            return FlowRunContext.get(), current_ids()

    inside_flow, ids = local()
    assert inside_flow is None
    assert ids == (foreign.get_span_context().trace_id, foreign.get_span_context().span_id)


async def test_async_with_restores_the_previous_context(sent: dict[str, Any], captured: CapturedTelemetry) -> None:
    @task
    async def async_child() -> tuple[int, int]:
        await asyncio.sleep(0)
        return current_ids()

    before = current_ids()
    async with hydrated_context(sent["flow"]):
        trace_id, _ = await async_child()
        assert trace_id == span_ids(sent["flow"])[0]
    assert current_ids() == before
    assert FlowRunContext.get() is None
    (child,) = captured.spans_named("task async_child")
    assert child.parent is not None and child.parent.span_id == span_ids(sent["flow"])[1]


async def test_concurrent_asyncio_tasks_hydrate_different_carriers(captured: CapturedTelemetry) -> None:
    carriers = [sender() for _ in range(4)]
    captured.clear()

    async def handle(sent: dict[str, Any], barrier: asyncio.Barrier) -> tuple[str, tuple[int, int]]:
        async with hydrated_context(sent["task"]):
            await barrier.wait()  # every task is inside its own hydrated context at the same time
            await asyncio.sleep(0.001)
            ctx = FlowRunContext.get()
            assert ctx is not None and ctx.flow_run is not None
            result = (str(ctx.flow_run.id), current_ids())
        assert FlowRunContext.get() is None
        return result

    barrier = asyncio.Barrier(len(carriers))
    results = await asyncio.gather(*(handle(sent, barrier) for sent in carriers))
    for sent, (flow_run_id, ids) in zip(carriers, results, strict=True):
        assert flow_run_id == sent["flow_run_id"]
        assert ids == span_ids(sent["task"])
    assert FlowRunContext.get() is None


# --- threads --------------------------------------------------------------------------------------------------


def test_plain_threads_and_pools_continue_the_trace(sent: dict[str, Any], captured: CapturedTelemetry) -> None:
    """Threads that do not copy contextvars (threading.Thread, a bare executor) get the carrier instead."""

    @task
    def in_thread(label: str) -> str:
        get_run_logger().info("in %s", label)
        return label

    def worker(carrier: dict[str, str], label: str) -> str:
        assert FlowRunContext.get() is None  # nothing leaked in: a fresh thread has an empty context
        with hydrated_context(carrier):
            return in_thread(label)

    carrier = json.loads(json.dumps(sent["flow"]))  # as if it went through a queue
    results: list[str] = []
    thread = threading.Thread(target=lambda: results.append(worker(carrier, "thread")))
    thread.start()
    thread.join(timeout=30)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results += pool.map(worker, [carrier] * 3, ["pool-0", "pool-1", "pool-2"])
    assert sorted(results) == ["pool-0", "pool-1", "pool-2", "thread"]

    flow_span = sent["flow_span"]
    spans = captured.spans_named("task in_thread")
    assert len(spans) == 4
    for span in spans:
        assert span.context.trace_id == flow_span.context.trace_id
        assert span.parent is not None and span.parent.span_id == flow_span.context.span_id
        assert span.attributes[semconv.FLOW_RUN_ID] == sent["flow_run_id"]
    logs = [r for r in captured.logs if str(r.log_record.body).startswith("in ")]
    assert len(logs) == 4
    assert {r.log_record.span_id for r in logs} == {s.context.span_id for s in spans}


# --- untrusted carriers -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "carrier",
    [
        {"traceparent": "garbage"},
        {"traceparent": "00-00000000000000000000000000000000-1234567890123456-01"},
        {"traceparent": "00-12345678901234567890123456789012-0000000000000000-01"},
        {"traceparent": "ff-12345678901234567890123456789012-1234567890123456-01"},
        {"traceparent": ["00-12345678901234567890123456789012-1234567890123456-01"] * 2},
        "not a mapping",
        42,
    ],
    ids=["garbage", "zero-trace-id", "zero-span-id", "version-ff", "duplicated", "string", "int"],
)
def test_malformed_carrier_warns_once_and_starts_a_fresh_trace(carrier: Any, captured: CapturedTelemetry) -> None:
    @task
    def inside() -> None:
        pass

    @flow
    def local() -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with hydrated_context(carrier):
                inside()
        assert len([w for w in caught if issubclass(w.category, OtelflowCarrierWarning)]) == 1
        return current_ids()[0]

    local_trace = local()
    (span,) = captured.spans_named("task inside")
    assert span.parent is None  # a new root: neither the bad carrier's ids nor the local flow span
    assert span.context.trace_id != local_trace


header_names = st.sampled_from(["traceparent", "TRACEPARENT", "tracestate", "baggage", "Baggage", "HTTP_BAGGAGE"])
header_values = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=300),
    st.from_regex(r"0[0-9a-f]-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.{0,10})?", fullmatch=True),
    st.lists(st.from_regex(r"[a-z.%+]{0,12}=[^,]{0,20}(;[a-z]*=?[^,]{0,5})?", fullmatch=True), max_size=80).map(
        ",".join
    ),
    st.none(),
    st.integers(),
    st.lists(st.text(max_size=40), max_size=3),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(headers=st.dictionaries(header_names, header_values, max_size=6))
def test_arbitrary_header_values_never_raise(headers: dict[str, Any]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with hydrated_context(headers):
            carrier = serialize_context()
            FlowRunContext.get()
        async def in_async() -> None:
            async with hydrated_context(list(headers.items())):
                serialize_context()

        asyncio.run(in_async())
    assert json.loads(json.dumps(carrier)) == carrier
    assert FlowRunContext.get() is None and TaskRunContext.get() is None


# --- a real child process ------------------------------------------------------------------------------------

CHILD = """
import json, sys
from otelflow import get_run_logger, task
from otelflow.context import hydrated_context

@task
def child_step(n: int) -> int:
    get_run_logger().info("child step %s", n)
    return n + 1

with hydrated_context(json.loads(sys.argv[1])):
    print(child_step(41))
"""


@pytest.mark.slow
def test_child_process_hydrates_a_carrier_from_its_command_line(otlp_receiver: OTLPReceiver) -> None:
    # The parent side exports to the receiver too, through its own OTLP exporters.
    resource = Resource.create({"service.name": "parent-process"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"{otlp_receiver.endpoint}/v1/traces")))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(OTLPLogExporter(f"{otlp_receiver.endpoint}/v1/logs")))

    @task
    def launch_child() -> str:
        carrier = serialize_context()
        get_run_logger().info("launching child")
        proc = subprocess.run(
            [PYTHON, "-c", CHILD, json.dumps(carrier)],
            env=subprocess_env(OTEL_EXPORTER_OTLP_ENDPOINT=otlp_receiver.endpoint, OTEL_SERVICE_NAME="child-process",
                               OTEL_METRICS_EXPORTER="none"),
            capture_output=True, text=True, timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    @flow
    def parent() -> str:
        return launch_child()

    try:
        with telemetry.use_providers(tracer_provider, logger_provider):
            assert parent() == "42"
    finally:
        tracer_provider.shutdown()
        logger_provider.shutdown()

    def spans_by_name() -> dict[str, Any] | None:
        spans = {s.name: s for s in otlp_receiver.spans()}
        return spans if {"task child_step", "task launch_child", "flow parent"} <= set(spans) else None

    spans = otlp_receiver.wait_for(spans_by_name)
    child, sender_task, parent_flow = spans["task child_step"], spans["task launch_child"], spans["flow parent"]
    assert child.resource["service.name"] == "child-process"
    assert sender_task.resource["service.name"] == "parent-process"
    assert child.trace_id == sender_task.trace_id == parent_flow.trace_id
    assert child.parent_span_id == sender_task.span_id
    assert child.attributes[semconv.FLOW_RUN_ID] == parent_flow.attributes[semconv.RUN_ID]
    assert child.attributes[semconv.FLOW_NAME] == "parent"

    def two_logs() -> dict[str, Any] | None:
        found = {r.body: r for r in otlp_receiver.logs() if r.body in ("child step 41", "launching child")}
        return found if len(found) == 2 else None

    logs = otlp_receiver.wait_for(two_logs)
    child_log = logs["child step 41"]
    assert child_log.resource["service.name"] == "child-process"
    assert child_log.trace_id == parent_flow.trace_id and child_log.span_id == child.span_id
    assert child_log.attributes[semconv.FLOW_RUN_ID] == parent_flow.attributes[semconv.RUN_ID]
    assert logs["launching child"].span_id == sender_task.span_id

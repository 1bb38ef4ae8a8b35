"""ASGI/WSGI middleware and httpx helpers, served by real servers on loopback (uvicorn, wsgiref).

Alone and together with OpenTelemetry's own instrumentation (asgi, wsgi, httpx): a service's spans join
the pipeline's trace with exactly one parent chain, and the otelflow baggage arrives whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import wsgiref.simple_server
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware as OtelASGIMiddleware
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.wsgi import OpenTelemetryMiddleware as OtelWSGIMiddleware
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from otelflow import flow, get_run_logger, propagation, semconv, tags, task
from otelflow.context import FlowRunContext, TagsContext, hydrated_context, serialize_context
from otelflow.integrations import httpx as otelflow_httpx
from otelflow.integrations.asgi import OtelflowASGIMiddleware
from otelflow.integrations.wsgi import OtelflowWSGIMiddleware
from otelflow.propagation import OtelflowCarrierWarning
from otelflow.testing import CapturedTelemetry

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _fresh_warning_state() -> Iterator[None]:
    propagation._reset_warning_state()
    yield
    propagation._reset_warning_state()


# --- a small service ---------------------------------------------------------------------------------------


@task
def service_step(x: int) -> int:
    get_run_logger().info("service step %s", x)
    return x * 2


def _identity() -> dict[str, Any]:
    ctx = FlowRunContext.get()
    flow_run = ctx.flow_run if ctx is not None else None
    return {
        "flow_run_id": str(flow_run.id) if flow_run is not None else None,
        "tags": sorted(TagsContext.get().current_tags),
        "trace_id": format(trace.get_current_span().get_span_context().trace_id, "032x"),
    }


async def _work(request: Request) -> JSONResponse:
    body = await request.json()
    return JSONResponse({"result": service_step(body["x"]), **_identity(), "headers": {
        name: request.headers.getlist(name) for name in ("traceparent", "baggage")
    }})


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/work", _work, methods=["POST"])])


@contextlib.contextmanager
def serve_asgi(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on 127.0.0.1:<free port> in a thread; yield its base URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:  # bounded readiness poll
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


@contextlib.contextmanager
def serve_wsgi(app: Callable[..., Any]) -> Iterator[str]:
    """Serve ``app`` with wsgiref on 127.0.0.1:<free port> in a thread; yield its base URL."""

    class QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

    server = wsgiref.simple_server.make_server("127.0.0.1", 0, app, handler_class=QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="wsgiref-test", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=15)


def _spans(captured: CapturedTelemetry, name: str) -> list[Any]:
    return captured.spans_named(name)


def _parse_baggage(header: str) -> dict[str, str]:
    return {k: str(v) for k, v in baggage.get_all(propagation.from_carrier({"baggage": header})).items()}


# --- a small pipeline calling it -------------------------------------------------------------------------------


def call_service(url: str, **client_kwargs: Any) -> dict[str, Any]:
    @task
    def call(x: int) -> dict[str, Any]:
        with otelflow_httpx.client(timeout=10, **client_kwargs) as http:
            response = http.post(f"{url}/work", json={"x": x})
            response.raise_for_status()
            return dict(response.json())

    @flow
    def pipeline() -> dict[str, Any]:
        with tags("integration"):
            reply = call(21)
        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        return {**reply, "sender_flow_run_id": str(ctx.flow_run.id)}

    return pipeline()


# --- ASGI -----------------------------------------------------------------------------------------------------------


def test_asgi_middleware_joins_the_pipeline_trace(captured: CapturedTelemetry) -> None:
    with serve_asgi(OtelflowASGIMiddleware(starlette_app())) as url:
        reply = call_service(url)
    assert reply["result"] == 42
    assert reply["flow_run_id"] == reply["sender_flow_run_id"]
    assert reply["tags"] == ["integration"]

    (caller,) = _spans(captured, "task call")
    (step,) = _spans(captured, "task service_step")
    assert step.context.trace_id == caller.context.trace_id
    assert step.parent is not None and step.parent.span_id == caller.context.span_id
    assert step.attributes[semconv.FLOW_RUN_ID] == reply["sender_flow_run_id"]
    (record,) = [r for r in captured.logs if r.log_record.body == "service step 21"]
    assert record.log_record.span_id == step.context.span_id
    assert record.log_record.attributes[semconv.FLOW_RUN_ID] == reply["sender_flow_run_id"]


def test_asgi_middleware_inside_opentelemetry_asgi_keeps_the_server_span(captured: CapturedTelemetry) -> None:
    app = OtelASGIMiddleware(OtelflowASGIMiddleware(starlette_app()), tracer_provider=captured.tracer_provider,
                             exclude_spans=["receive", "send"])
    with serve_asgi(app) as url:
        reply = call_service(url)
    (caller,) = _spans(captured, "task call")
    (server,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    (step,) = _spans(captured, "task service_step")
    # One chain: pipeline task -> OTel server span -> service task. No second child of the remote parent.
    assert server.parent is not None and server.parent.span_id == caller.context.span_id
    assert step.parent is not None and step.parent.span_id == server.context.span_id
    assert {s.context.trace_id for s in (caller, server, step)} == {caller.context.trace_id}
    # ... and the run identity and tags still came from the baggage.
    assert reply["flow_run_id"] == reply["sender_flow_run_id"]
    assert reply["tags"] == ["integration"]
    assert step.attributes[semconv.FLOW_RUN_ID] == reply["sender_flow_run_id"]


def test_asgi_requests_without_headers_run_in_a_fresh_context(captured: CapturedTelemetry) -> None:
    with serve_asgi(OtelflowASGIMiddleware(starlette_app())) as url:
        reply = httpx.post(f"{url}/work", json={"x": 1}, timeout=10).json()
        with pytest.warns(OtelflowCarrierWarning, match="invalid traceparent"):  # raised in the server thread
            garbage = httpx.post(f"{url}/work", json={"x": 2}, headers={"traceparent": "nope", "baggage": "=;="},
                                 timeout=10)
    assert reply["flow_run_id"] is None and reply["result"] == 2
    assert garbage.status_code == 200 and garbage.json()["flow_run_id"] is None
    steps = _spans(captured, "task service_step")
    assert len(steps) == 2 and all(s.parent is None for s in steps)


# --- httpx -----------------------------------------------------------------------------------------------------------


@pytest.fixture
def instrumented_httpx(captured: CapturedTelemetry) -> Iterator[None]:
    instrumentor = HTTPXClientInstrumentor()
    instrumentor.instrument(tracer_provider=captured.tracer_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


def test_httpx_with_opentelemetry_instrumentation_one_traceparent_merged_baggage(
    captured: CapturedTelemetry, instrumented_httpx: None
) -> None:
    with serve_asgi(OtelflowASGIMiddleware(starlette_app())) as url:
        reply = call_service(url)
    (caller,) = _spans(captured, "task call")
    (client_span,) = [s for s in captured.spans if s.kind is SpanKind.CLIENT]
    assert client_span.parent is not None and client_span.parent.span_id == caller.context.span_id
    # The instrumentation's traceparent won: the service's parent is the client span.
    (traceparent,) = reply["headers"]["traceparent"]
    assert traceparent.split("-")[2] == format(client_span.context.span_id, "016x")
    (step,) = _spans(captured, "task service_step")
    assert step.parent is not None and step.parent.span_id == client_span.context.span_id
    # One baggage header with the run entries.
    (header,) = reply["headers"]["baggage"]
    entries = _parse_baggage(header)
    assert entries[semconv.FLOW_RUN_ID] == reply["sender_flow_run_id"]
    assert entries[semconv.TASK_RUN_ID] == caller.attributes[semconv.RUN_ID]


def test_httpx_inside_hydrated_context_with_instrumentation_keeps_otelflow_baggage(
    captured: CapturedTelemetry, instrumented_httpx: None
) -> None:
    """Non-empty OTel baggage (user entries + a hydrated carrier) must not be replaced by OTel's copy."""

    @flow(flow_run_name="run with spaces")
    def upstream() -> dict[str, str]:
        return serialize_context()

    carrier = upstream()
    with serve_asgi(OtelflowASGIMiddleware(starlette_app())) as url:
        token = otel_context.attach(baggage.set_baggage("user.key", "a b"))
        try:
            with hydrated_context(carrier), otelflow_httpx.client(timeout=10) as http:
                reply = http.post(f"{url}/work", json={"x": 1}).json()
        finally:
            otel_context.detach(token)
    (header,) = reply["headers"]["baggage"]
    entries = _parse_baggage(header)
    assert entries[semconv.FLOW_RUN_NAME] == "run with spaces"  # W3C-encoded: not "run+with+spaces"
    assert semconv.FLOW_RUN_ID in entries
    assert reply["flow_run_id"] == entries[semconv.FLOW_RUN_ID]


def test_httpx_merges_a_baggage_header_already_on_the_request(captured: CapturedTelemetry) -> None:
    with serve_asgi(OtelflowASGIMiddleware(starlette_app())) as url:

        @flow
        def pipeline() -> dict[str, Any]:
            stale = {"baggage": "tenant=acme,otelflow.task_run.id=stale"}
            with otelflow_httpx.client(timeout=10, headers=stale) as http:
                return dict(http.post(f"{url}/work", json={"x": 3}).json())

        reply = pipeline()
    (header,) = reply["headers"]["baggage"]
    entries = _parse_baggage(header)
    assert entries["tenant"] == "acme"
    assert entries[semconv.FLOW_NAME] == "pipeline"
    assert semconv.TASK_RUN_ID not in entries  # a stale otelflow key is not forwarded outside a task run


def test_httpx_instrument_client_wrapping_the_otelflow_transport(captured: CapturedTelemetry) -> None:
    """instrument_client() wraps the client's transport from outside: its client span is current when
    otelflow serializes, and the baggage it injected (the OTel baggage) is merged with otelflow's entries."""
    with serve_asgi(OtelflowASGIMiddleware(starlette_app())) as url:

        @flow
        def pipeline() -> dict[str, Any]:
            with otelflow_httpx.client(timeout=10) as http:
                HTTPXClientInstrumentor.instrument_client(http, tracer_provider=captured.tracer_provider)
                token = otel_context.attach(baggage.set_baggage("user.key", "v"))
                try:
                    return dict(http.post(f"{url}/work", json={"x": 3}).json())
                finally:
                    otel_context.detach(token)

        reply = pipeline()
    (client_span,) = [s for s in captured.spans if s.kind is SpanKind.CLIENT]
    (traceparent,) = reply["headers"]["traceparent"]
    assert traceparent.split("-")[2] == format(client_span.context.span_id, "016x")
    (header,) = reply["headers"]["baggage"]
    entries = _parse_baggage(header)
    assert entries["user.key"] == "v"
    assert entries[semconv.FLOW_NAME] == "pipeline"
    (step,) = _spans(captured, "task service_step")
    assert step.parent is not None and step.parent.span_id == client_span.context.span_id


async def test_async_client_and_event_hooks(captured: CapturedTelemetry) -> None:
    with serve_asgi(OtelflowASGIMiddleware(starlette_app())) as url:

        @flow
        async def pipeline() -> list[dict[str, Any]]:
            async with otelflow_httpx.async_client(timeout=10) as http:
                first = (await http.post(f"{url}/work", json={"x": 1})).json()
            async with httpx.AsyncClient(timeout=10, event_hooks={"request": [otelflow_httpx.ainject_context]}) as http:
                second = (await http.post(f"{url}/work", json={"x": 2})).json()
            with httpx.Client(timeout=10, event_hooks={"request": [otelflow_httpx.inject_context]}) as http:
                third = await asyncio.to_thread(lambda: http.post(f"{url}/work", json={"x": 3}).json())
            return [first, second, third]

        replies = await pipeline()
    (flow_span,) = captured.flow_spans()
    for reply in replies:
        assert reply["flow_run_id"] == flow_span.attributes[semconv.RUN_ID]
        assert reply["trace_id"] == format(flow_span.context.trace_id, "032x")


# --- WSGI ----------------------------------------------------------------------------------------------------------


def wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterator[bytes]:
    """A body produced lazily, after the app returns: logging and tasks inside must still correlate."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"start;"
    ctx = FlowRunContext.get()
    if ctx is not None:
        get_run_logger().info("wsgi body")
        yield f"result={service_step(5)};flow_run_id={ctx.flow_run.id}".encode()  # type: ignore[union-attr]
    else:
        yield b"no-run"


def test_wsgi_middleware_correlates_the_lazy_body_and_restores_the_context(captured: CapturedTelemetry) -> None:
    seen_after: list[Any] = []

    def check_restored(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # The server thread handles requests one after another: nothing of the previous request may remain.
        seen_after.append((FlowRunContext.get(), trace.get_current_span().get_span_context().is_valid))
        return OtelflowWSGIMiddleware(wsgi_app)(environ, start_response)

    with serve_wsgi(check_restored) as url:

        @task
        def call() -> str:
            with otelflow_httpx.client(timeout=10) as http:
                return http.get(url).text

        @flow
        def pipeline() -> list[str]:
            return [call(), call()]

        bodies = pipeline()
        plain = httpx.get(url, timeout=10).text
    (flow_span,) = captured.flow_spans()
    for body in bodies:
        assert body == f"start;result=10;flow_run_id={flow_span.attributes[semconv.RUN_ID]}"
    assert plain == "start;no-run"
    assert seen_after == [(None, False)] * 3
    callers = _spans(captured, "task call")
    steps = _spans(captured, "task service_step")
    assert {s.parent.span_id for s in steps} == {c.context.span_id for c in callers}
    logs = [r for r in captured.logs if r.log_record.body == "wsgi body"]
    assert {r.log_record.span_id for r in logs} == {c.context.span_id for c in callers}


def test_wsgi_middleware_inside_opentelemetry_wsgi_keeps_the_server_span(captured: CapturedTelemetry) -> None:
    app = OtelWSGIMiddleware(OtelflowWSGIMiddleware(wsgi_app), tracer_provider=captured.tracer_provider)
    with serve_wsgi(app) as url:

        @task
        def call() -> str:
            with otelflow_httpx.client(timeout=10) as http:
                return http.get(url).text

        @flow
        def pipeline() -> str:
            return call()

        body = pipeline()
    (flow_span,) = captured.flow_spans()
    assert body.endswith(f"flow_run_id={flow_span.attributes[semconv.RUN_ID]}")
    (caller,) = _spans(captured, "task call")
    (server,) = [s for s in captured.spans if s.kind is SpanKind.SERVER]
    (step,) = _spans(captured, "task service_step")
    assert server.parent is not None and server.parent.span_id == caller.context.span_id
    assert step.parent is not None and step.parent.span_id == server.context.span_id

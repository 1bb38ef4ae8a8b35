"""A service stopped with SIGTERM (``docker stop``, Kubernetes) still exports the spans and logs of its last requests.

uvicorn handles SIGTERM by shutting down gracefully, then restores the default disposition and raises the signal
again: the process dies of it (status 143) without running exit handlers, where otelflow's exit flush is. The ASGI
middleware flushes at the end of the lifespan instead, before the server hears the app has shut down. The WSGI
example's wsgiref runner stops on SIGTERM and shuts the telemetry down before dying of the signal the same way.

Each service here runs for real in a subprocess, with batch delays so long that nothing is exported on its own
while it runs: what reaches the spool or the OTLP receiver after SIGTERM got there through the shutdown flush.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import subprocess
import textwrap
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env
from otlp_receiver import OTLPReceiver

from otelflow import semconv
from otelflow.integrations import asgi
from otelflow.integrations.asgi import OtelflowASGIMiddleware

EXAMPLE = REPO_ROOT / "examples" / "microservices"
N_REQUESTS = 3
READY_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 30.0
# Nothing leaves a batch processor on its own while the service runs: only a flush at shutdown exports it.
NEVER_MS = "600000"

# A plain ASGI app that does not speak the lifespan protocol: it raises at the scope, as Django's ASGIHandler does.
NO_LIFESPAN_APP = textwrap.dedent('''
    import json

    from otelflow import get_run_logger, task
    from otelflow.integrations.asgi import OtelflowASGIMiddleware


    @task(name="score_item")
    def score_item(item):
        get_run_logger().info("Scored item %s: %s", item["id"], 0.5)
        return 0.5


    async def plain(scope, receive, send):
        if scope["type"] != "http":
            raise ValueError(f"only http, not {scope['type']}")
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["path"] == "/health":
            payload = b"ok"
        else:
            item = json.loads(body)
            payload = json.dumps({"id": item["id"], "score": score_item(item)}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": payload})


    app = OtelflowASGIMiddleware(plain)
''')


@dataclass(frozen=True)
class Sent:
    """One request the service answered: the item it scored, under which caller span."""

    item_id: str
    trace_id: str
    parent_span_id: str


@dataclass(frozen=True)
class Exported:
    """What reached the telemetry sink: (name, trace id, parent span id) of spans, (body, trace id) of logs."""

    spans: list[tuple[str, str, str]]
    logs: list[tuple[str, str]]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Sink:
    """Where the service's telemetry goes: the local spool of its OTELFLOW_HOME, or a loopback OTLP receiver."""

    def __init__(self, kind: str, home: Path, receiver: OTLPReceiver | None) -> None:
        self.kind = kind
        self.home = home
        self.receiver = receiver

    def env(self) -> dict[str, str]:
        env = {"OTELFLOW_HOME": str(self.home)}
        if self.receiver is not None:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self.receiver.endpoint
        return env

    def exported(self) -> Exported:
        if self.receiver is not None:
            return Exported(
                spans=[(s.name, s.trace_id, s.parent_span_id) for s in self.receiver.spans()],
                logs=[(str(r.body), r.trace_id) for r in self.receiver.logs()],
            )
        return _read_spool(self.home / "spool")


def _read_spool(spool: Path) -> Exported:
    """The spool's OTLP-JSON lines (the format the Collector's ``otlpjsonfile`` receiver reads), decoded."""
    spans: list[tuple[str, str, str]] = []
    logs: list[tuple[str, str]] = []
    for path in sorted(spool.glob("traces-*.jsonl")):
        for line in path.read_text().splitlines():
            for resource_spans in json.loads(line).get("resourceSpans", []):
                for scope_spans in resource_spans.get("scopeSpans", []):
                    for span in scope_spans.get("spans", []):
                        keys = {attr.get("key") for attr in span.get("attributes", [])}
                        if semconv.SPAN_PENDING not in keys:  # the early record of a run still running
                            spans.append((span["name"], span.get("traceId", ""), span.get("parentSpanId", "")))
    for path in sorted(spool.glob("logs-*.jsonl")):
        for line in path.read_text().splitlines():
            for resource_logs in json.loads(line).get("resourceLogs", []):
                for scope_logs in resource_logs.get("scopeLogs", []):
                    for record in scope_logs.get("logRecords", []):
                        body = record.get("body", {}).get("stringValue", "")
                        logs.append((body, record.get("traceId", "")))
    return Exported(spans=spans, logs=logs)


@pytest.fixture(params=["spool", "otlp"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Sink:
    receiver = request.getfixturevalue("otlp_receiver") if request.param == "otlp" else None
    return Sink(request.param, tmp_path / "home", receiver)


class Service:
    """A service process: started, waited for (bounded), stopped with a signal, waited for (bounded)."""

    def __init__(self, command: list[str], env: dict[str, str], output: Path, cwd: Path = REPO_ROOT) -> None:
        self.output = output
        with open(output, "wb") as sink:
            self.proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.output.read_text(errors="replace")[-4000:]

    def wait_ready(self, url: str) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited with {self.proc.returncode} before answering:\n{self.log()}")
            try:
                if httpx.get(f"{url}/health", timeout=1).text == "ok":
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"service did not answer /health within {READY_TIMEOUT_S} s"
            time.sleep(0.05)  # polling interval of a bounded readiness wait, not a synchronisation

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout=EXIT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            raise AssertionError(
                f"service still running {EXIT_TIMEOUT_S} s after signal {signum}:\n{self.log()}"
            ) from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def start_service(tmp_path: Path) -> Iterator[Any]:
    started: list[Service] = []

    def start(command: list[str], sink: Sink, cwd: Path = REPO_ROOT) -> Service:
        env = subprocess_env(OTEL_SERVICE_NAME="scoring-service", OTEL_METRICS_EXPORTER="none",
                             OTEL_BSP_SCHEDULE_DELAY=NEVER_MS, OTEL_BLRP_SCHEDULE_DELAY=NEVER_MS, **sink.env())
        service = Service(command, env, tmp_path / f"service-{len(started)}.log", cwd=cwd)
        started.append(service)
        return service

    yield start
    for service in started:
        service.kill()


def _score_last_requests(url: str) -> list[Sent]:
    sent = []
    for i in range(N_REQUESTS):
        request = Sent(item_id=f"item-{i}-{secrets.token_hex(3)}", trace_id=secrets.token_hex(16),
                       parent_span_id=secrets.token_hex(8))
        response = httpx.post(f"{url}/score", json={"id": request.item_id, "amount": 10 * i}, timeout=30,
                              headers={"traceparent": f"00-{request.trace_id}-{request.parent_span_id}-01"})
        assert response.status_code == 200, response.text
        assert response.json()["id"] == request.item_id
        sent.append(request)
    return sent


def _assert_exported(sent: list[Sent], exported: Exported, service: Service) -> None:
    for request in sent:
        spans = [s for s in exported.spans if s[0] == "task score_item" and s[1] == request.trace_id]
        assert len(spans) == 1, (
            f"the span of the request for {request.item_id} was not exported: {exported.spans}\n{service.log()}"
        )
        assert spans[0][2] == request.parent_span_id  # a child of the caller's span (the traceparent)
        logs = [body for body, trace_id in exported.logs
                if trace_id == request.trace_id and body.startswith(f"Scored item {request.item_id}:")]
        assert len(logs) == 1, (
            f"the log of the request for {request.item_id} was not exported: {exported.logs}\n{service.log()}"
        )


def _uvicorn(app: str, port: int, *extra: str) -> list[str]:
    return [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            *extra]


# --- real servers -----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_uvicorn_stopped_by_sigterm_exports_the_last_requests(sink: Sink, start_service: Any) -> None:
    port = _free_port()
    service = start_service(_uvicorn("examples.microservices.service:app", port), sink)
    url = f"http://127.0.0.1:{port}"
    service.wait_ready(url)
    sent = _score_last_requests(url)

    returncode = service.stop(signal.SIGTERM)

    assert returncode == -signal.SIGTERM, service.log()  # uvicorn re-raises SIGTERM: the status stays 143
    _assert_exported(sent, sink.exported(), service)


@pytest.mark.slow
def test_uvicorn_stopped_by_sigterm_exports_for_an_app_without_lifespan_support(
    tmp_path: Path, start_service: Any
) -> None:
    (tmp_path / "no_lifespan_app.py").write_text(NO_LIFESPAN_APP)
    sink = Sink("spool", tmp_path / "home", None)
    port = _free_port()
    # uvicorn's default (--lifespan auto) would take the app's exception as "lifespan unsupported" and never tell it
    # the server stops; the middleware answers the lifespan messages for the app.
    service = start_service(_uvicorn("no_lifespan_app:app", port, "--app-dir", str(tmp_path)), sink)
    url = f"http://127.0.0.1:{port}"
    service.wait_ready(url)
    sent = _score_last_requests(url)

    returncode = service.stop(signal.SIGTERM)

    assert returncode == -signal.SIGTERM, service.log()
    _assert_exported(sent, sink.exported(), service)


@pytest.mark.slow
def test_wsgi_example_stopped_by_sigterm_exports_the_last_requests(sink: Sink, start_service: Any) -> None:
    port = _free_port()
    service = start_service([PYTHON, str(EXAMPLE / "service.py"), "--wsgi", "--port", str(port)], sink)
    url = f"http://127.0.0.1:{port}"
    service.wait_ready(url)
    sent = _score_last_requests(url)

    returncode = service.stop(signal.SIGTERM)

    assert returncode == -signal.SIGTERM, service.log()  # as uvicorn: it dies of the signal once flushed
    _assert_exported(sent, sink.exported(), service)


# --- the lifespan protocol, in process --------------------------------------------------------------------------

Message = MutableMapping[str, Any]


class FakeServer:
    """The server side of one lifespan: sends startup then shutdown, records what the app answers and when."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.to_app: asyncio.Queue[Message] = asyncio.Queue()
        self.startup: Message = {"type": "lifespan.startup"}
        self.shutdown: Message = {"type": "lifespan.shutdown"}
        self.received: list[Message] = []
        self.shutdown_acknowledged = asyncio.Event()

    async def receive(self) -> Message:
        return await self.to_app.get()

    async def send(self, message: Message) -> None:
        self.events.append(f"server got {message['type']}")
        self.received.append(message)
        if message["type"].startswith("lifespan.shutdown."):
            self.shutdown_acknowledged.set()

    async def run(self, app: Any, timeout: float = 10.0) -> asyncio.Task[None]:
        task = asyncio.ensure_future(app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}},
                                         self.receive, self.send))
        await self.to_app.put(self.startup)
        await self.to_app.put(self.shutdown)
        await asyncio.wait_for(self.shutdown_acknowledged.wait(), timeout)
        return task


def _lifespan_app(events: list[str], seen: list[Message], sent: list[Message], fail_shutdown: bool = False) -> Any:
    async def app(scope: Message, receive: Any, send: Any) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            seen.append(message)
            if message["type"] == "lifespan.startup":
                reply: Message = {"type": "lifespan.startup.complete"}
            else:
                events.append("app shut down")
                reply = {"type": "lifespan.shutdown.failed" if fail_shutdown else "lifespan.shutdown.complete",
                         "message": "boom" if fail_shutdown else ""}
            sent.append(reply)
            await send(reply)
            if message["type"] == "lifespan.shutdown":
                if fail_shutdown:
                    raise RuntimeError("shutdown failed")
                return

    return app


@pytest.fixture
def flushes(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Calls of ``otelflow.telemetry.flush`` (their timeout), recorded instead of flushing."""
    from otelflow import telemetry

    calls: list[float] = []

    def flush(timeout_seconds: float = 10.0) -> bool:
        calls.append(timeout_seconds)
        return True

    monkeypatch.setattr(telemetry, "flush", flush)
    # Whether this pytest process configured telemetry depends on the tests that ran before: pretend it did.
    monkeypatch.setattr(asgi, "_telemetry_configured", lambda: True, raising=False)
    return calls


def test_lifespan_passes_through_and_flushes_after_the_apps_shutdown(
    flushes: list[float], settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings_env(SHUTDOWN_TIMEOUT_SECONDS="2.5")
    events: list[str] = []
    seen: list[Message] = []
    sent: list[Message] = []
    from otelflow import telemetry

    recorded = telemetry.flush

    def flush(timeout_seconds: float = 10.0) -> bool:
        events.append("flush")
        return bool(recorded(timeout_seconds))

    monkeypatch.setattr(telemetry, "flush", flush)

    async def main() -> FakeServer:
        server = FakeServer(events)
        task = await server.run(OtelflowASGIMiddleware(_lifespan_app(events, seen, sent)))
        await task
        return server

    server = asyncio.run(main())

    # The app saw exactly the server's messages and the server exactly the app's: the very same objects.
    assert seen == [server.startup, server.shutdown]
    assert all(a is b for a, b in zip(seen, [server.startup, server.shutdown], strict=True))
    assert all(a is b for a, b in zip(server.received, sent, strict=True)) and len(server.received) == 2
    # One flush, bounded by OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS, after the app's shutdown, before the server hears it.
    assert flushes == [2.5]
    assert events == ["server got lifespan.startup.complete", "app shut down", "flush",
                      "server got lifespan.shutdown.complete"]


def test_a_failed_app_shutdown_is_flushed_and_still_reported(flushes: list[float]) -> None:
    events: list[str] = []
    sent: list[Message] = []

    async def main() -> tuple[FakeServer, asyncio.Task[None]]:
        server = FakeServer(events)
        task = await server.run(OtelflowASGIMiddleware(_lifespan_app(events, [], sent, fail_shutdown=True)))
        await asyncio.wait([task])
        return server, task

    server, task = asyncio.run(main())

    assert [m["type"] for m in server.received] == ["lifespan.startup.complete", "lifespan.shutdown.failed"]
    assert isinstance(task.exception(), RuntimeError)  # the app's own failure reaches the server unchanged
    assert len(flushes) == 1


def test_an_app_without_lifespan_support_is_answered_and_flushed(flushes: list[float]) -> None:
    async def http_only(scope: Message, receive: Any, send: Any) -> None:
        raise ValueError(f"only http, not {scope['type']}")  # as Django's ASGIHandler

    async def main() -> tuple[FakeServer, asyncio.Task[None]]:
        server = FakeServer([])
        task = await server.run(OtelflowASGIMiddleware(http_only))
        await asyncio.wait([task])
        return server, task

    server, task = asyncio.run(main())

    assert task.exception() is None
    assert [m["type"] for m in server.received] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert len(flushes) == 1


def test_the_shutdown_flush_is_bounded_and_never_fails_the_shutdown(
    flushes: list[float], settings_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from otelflow import telemetry

    settings_env(SHUTDOWN_TIMEOUT_SECONDS="0.3")
    release = threading.Event()
    attempts: list[str] = []

    def stuck_flush(timeout_seconds: float = 10.0) -> bool:
        attempts.append("stuck")
        release.wait(30)  # a collector that never answers, an exporter that ignores its timeout
        return False

    def failing_flush(timeout_seconds: float = 10.0) -> bool:
        attempts.append("failing")
        raise RuntimeError("exporter exploded")

    async def shut_down(app: Any) -> tuple[FakeServer, asyncio.Task[None], float]:
        server = FakeServer([])
        started = time.monotonic()
        task = await server.run(OtelflowASGIMiddleware(app))
        elapsed = time.monotonic() - started
        await asyncio.wait([task])
        return server, task, elapsed

    try:
        monkeypatch.setattr(telemetry, "flush", stuck_flush)
        server, task, elapsed = asyncio.run(shut_down(_lifespan_app([], [], [])))
        assert task.exception() is None
        assert server.received[-1]["type"] == "lifespan.shutdown.complete"
        assert elapsed < 5.0, f"the shutdown waited {elapsed:.1f} s for a flush bounded by 0.3 s"
    finally:
        release.set()

    monkeypatch.setattr(telemetry, "flush", failing_flush)
    server, task, _ = asyncio.run(shut_down(_lifespan_app([], [], [])))
    assert task.exception() is None
    assert server.received[-1]["type"] == "lifespan.shutdown.complete"
    assert attempts == ["stuck", "failing"]  # both shutdowns did try to flush

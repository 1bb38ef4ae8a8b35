"""A real OTLP receiver for tests: OTLP/HTTP (protobuf, optionally gzip/deflate) and OTLP/gRPC.

Tests point real exporters at it and assert on what actually went over the wire, decoded into small
dataclasses. Every request notifies a condition variable, so ``wait_for`` never sleeps blindly.

Use the function-scoped fixtures ``otlp_receiver`` / ``otlp_grpc_receiver`` (import them into a
conftest), or the classes directly as context managers.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = [
    "MAX_GRPC_MESSAGE_BYTES",
    "OTLPGrpcReceiver",
    "OTLPReceiver",
    "ReceivedDataPoint",
    "ReceivedEvent",
    "ReceivedLog",
    "ReceivedSpan",
    "otlp_grpc_receiver",
    "otlp_receiver",
]

T = TypeVar("T")

TRACES_PATH = "/v1/traces"
LOGS_PATH = "/v1/logs"
METRICS_PATH = "/v1/metrics"
PROTOBUF = "application/x-protobuf"
DEFAULT_TIMEOUT_S = 10.0
MAX_GRPC_MESSAGE_BYTES = 4 * 1024 * 1024  # the OTLP/gRPC receiver's standard limit (the Collector's too)


# --- decoded views ----------------------------------------------------------------------------------------


def any_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a plain Python value (arrays -> lists, kvlists -> dicts)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return attributes(value.kvlist_value.values)
    return getattr(value, kind)


def attributes(key_values: Any) -> dict[str, Any]:
    """Repeated ``KeyValue`` as a dict."""
    return {kv.key: any_value(kv.value) for kv in key_values}


@dataclass(frozen=True)
class ReceivedEvent:
    """A span event."""

    name: str
    attributes: dict[str, Any]


@dataclass(frozen=True)
class ReceivedSpan:
    """A span as received; ids are lowercase hex ('' when absent)."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: list[ReceivedEvent]
    status_code: int  # opentelemetry.proto.trace.v1.Status.StatusCode: 0 unset, 1 ok, 2 error
    status_message: str
    resource: dict[str, Any]
    scope_name: str
    start_time_unix_nano: int
    end_time_unix_nano: int
    links: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)  # (trace_id, span_id, attrs)


@dataclass(frozen=True)
class ReceivedLog:
    """A log record as received; ids are lowercase hex ('' when absent)."""

    body: Any
    severity_number: int
    severity_text: str
    trace_id: str
    span_id: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope_name: str
    event_name: str


@dataclass(frozen=True)
class ReceivedDataPoint:
    """One metric data point. ``value`` for gauges/sums; ``count``/``sum`` for histograms/summaries."""

    kind: str  # gauge | sum | histogram | exponential_histogram | summary
    unit: str
    attributes: dict[str, Any]
    resource: dict[str, Any]
    value: float | int | None = None
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)


def _hex(raw: bytes) -> str:
    return raw.hex()


def _data_points(metric: Any, resource: dict[str, Any]) -> list[ReceivedDataPoint]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return []
    points: list[ReceivedDataPoint] = []
    for dp in getattr(metric, kind).data_points:
        common: dict[str, Any] = {
            "kind": kind,
            "unit": metric.unit,
            "attributes": attributes(dp.attributes),
            "resource": resource,
        }
        if kind in ("gauge", "sum"):
            number = dp.WhichOneof("value")
            points.append(ReceivedDataPoint(**common, value=getattr(dp, number) if number else None))
        elif kind == "histogram":
            points.append(
                ReceivedDataPoint(
                    **common,
                    count=dp.count,
                    sum=dp.sum,
                    bucket_counts=list(dp.bucket_counts),
                    explicit_bounds=list(dp.explicit_bounds),
                )
            )
        else:  # exponential_histogram, summary
            points.append(ReceivedDataPoint(**common, count=dp.count, sum=dp.sum))
    return points


# --- storage shared by both transports -------------------------------------------------------------------


class _OTLPStore:
    """Decoded export requests plus failure injection; thread-safe."""

    def __init__(self) -> None:
        # RLock: predicates given to wait_for call the (locking) accessors while the lock is held.
        self._cond = threading.Condition(threading.RLock())
        self._traces: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._logs: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self._metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self._headers: list[dict[str, str]] = []
        self._attempts = 0
        self._failures: list[tuple[int, float | None]] = []  # (status, retry-after) for the next requests

    # recording ---------------------------------------------------------------------------------------------
    def _next_failure(self) -> tuple[int, float | None] | None:
        with self._cond:
            self._attempts += 1
            failure = self._failures.pop(0) if self._failures else None
            if failure is not None:
                self._cond.notify_all()
            return failure

    def _record(self, signal: str, request: Message, headers: dict[str, str]) -> None:
        with self._cond:
            {"traces": self._traces, "logs": self._logs, "metrics": self._metrics}[signal].append(
                request  # type: ignore[arg-type]
            )
            self._headers.append(headers)
            self._cond.notify_all()

    # configuration -----------------------------------------------------------------------------------------
    def fail_next(self, count: int, status: int = 503, retry_after: float | None = 0) -> None:
        """Answer the next ``count`` requests with ``status`` (and ``Retry-After``; gRPC: mapped code)."""
        with self._cond:
            self._failures.extend([(status, retry_after)] * count)

    def clear(self) -> None:
        """Forget everything received so far."""
        with self._cond:
            self._traces.clear()
            self._logs.clear()
            self._metrics.clear()
            self._headers.clear()
            self._attempts = 0

    # raw access --------------------------------------------------------------------------------------------
    @property
    def attempts(self) -> int:
        """Requests received, including the ones answered with an injected failure."""
        with self._cond:
            return self._attempts

    @property
    def request_headers(self) -> list[dict[str, str]]:
        """Lower-cased headers (HTTP) or metadata (gRPC) of each successful request."""
        with self._cond:
            return list(self._headers)

    @property
    def trace_requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        """Raw decoded ExportTraceServiceRequest messages, in arrival order."""
        with self._cond:
            return list(self._traces)

    @property
    def log_requests(self) -> list[logs_service_pb2.ExportLogsServiceRequest]:
        """Raw decoded ExportLogsServiceRequest messages, in arrival order."""
        with self._cond:
            return list(self._logs)

    @property
    def metric_requests(self) -> list[metrics_service_pb2.ExportMetricsServiceRequest]:
        """Raw decoded ExportMetricsServiceRequest messages, in arrival order."""
        with self._cond:
            return list(self._metrics)

    # decoded views -----------------------------------------------------------------------------------------
    def spans(self, *, include_pending: bool = False) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order (pending records of running runs only if asked)."""
        return [s for s in self._all_spans() if include_pending or not s.attributes.get("otelflow.span.pending")]

    def pending_spans(self) -> list[ReceivedSpan]:
        """The early (1 µs) records of runs that had started (``otelflow.span.pending``)."""
        return [s for s in self._all_spans() if s.attributes.get("otelflow.span.pending")]

    def _all_spans(self) -> list[ReceivedSpan]:
        result: list[ReceivedSpan] = []
        for request in self.trace_requests:
            for rs in request.resource_spans:
                resource = attributes(rs.resource.attributes)
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        result.append(
                            ReceivedSpan(
                                name=s.name,
                                trace_id=_hex(s.trace_id),
                                span_id=_hex(s.span_id),
                                parent_span_id=_hex(s.parent_span_id),
                                kind=s.kind,
                                attributes=attributes(s.attributes),
                                events=[ReceivedEvent(e.name, attributes(e.attributes)) for e in s.events],
                                status_code=s.status.code,
                                status_message=s.status.message,
                                resource=resource,
                                scope_name=ss.scope.name,
                                start_time_unix_nano=s.start_time_unix_nano,
                                end_time_unix_nano=s.end_time_unix_nano,
                                links=[
                                    (_hex(lk.trace_id), _hex(lk.span_id), attributes(lk.attributes)) for lk in s.links
                                ],
                            )
                        )
        return result

    def logs(self) -> list[ReceivedLog]:
        """Every log record received so far, in arrival order."""
        result: list[ReceivedLog] = []
        for request in self.log_requests:
            for rl in request.resource_logs:
                resource = attributes(rl.resource.attributes)
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        result.append(
                            ReceivedLog(
                                body=any_value(r.body),
                                severity_number=r.severity_number,
                                severity_text=r.severity_text,
                                trace_id=_hex(r.trace_id),
                                span_id=_hex(r.span_id),
                                attributes=attributes(r.attributes),
                                resource=resource,
                                scope_name=sl.scope.name,
                                event_name=r.event_name,
                            )
                        )
        return result

    def metrics(self) -> dict[str, list[ReceivedDataPoint]]:
        """Metric name -> all data points received for it, in arrival order."""
        result: dict[str, list[ReceivedDataPoint]] = {}
        for request in self.metric_requests:
            for rm in request.resource_metrics:
                resource = attributes(rm.resource.attributes)
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        result.setdefault(metric.name, []).extend(_data_points(metric, resource))
        return result

    def wait_for(self, predicate: Callable[[], T], timeout: float = DEFAULT_TIMEOUT_S) -> T:
        """Block until ``predicate()`` is truthy (re-checked on every request); return its value.

        Raises ``AssertionError`` (with what was received) on timeout, so tests can just call it.
        """
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"OTLP receiver: condition not met within {timeout}s; received "
                        f"{len(self._traces)} trace, {len(self._logs)} log, {len(self._metrics)} metric "
                        f"request(s) in {self._attempts} attempt(s); spans={[s.name for s in self.spans()]}"
                    )
                self._cond.wait(remaining)


# --- OTLP/HTTP ---------------------------------------------------------------------------------------------

_HTTP_SIGNALS: dict[str, tuple[str, type[Message], type[Message]]] = {
    TRACES_PATH: (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    LOGS_PATH: (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
    METRICS_PATH: (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like the exporters' requests sessions expect
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # stdlib signature
        """Silence the default stderr access log."""

    def _reply(self, status: int, body: bytes = b"", extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", PROTOBUF)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()  # trailing CRLF (no trailers expected)
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_POST(self) -> None:
        store = self.server.store
        body = self._read_body()  # always drain the body, or keep-alive breaks
        path = self.path.split("?", 1)[0]
        prefix = self.server.path_prefix
        signal = _HTTP_SIGNALS.get(path[len(prefix) :]) if path.startswith(prefix) else None
        if signal is None:
            self._reply(404)
            return
        failure = store._next_failure()
        if failure is not None:
            status, retry_after = failure
            self._reply(status, extra={"Retry-After": f"{retry_after:g}"} if retry_after is not None else None)
            return
        content_type = self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if content_type != PROTOBUF:
            self._reply(415)
            return
        name, request_type, response_type = signal
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        try:
            if encoding == "gzip":
                body = gzip.decompress(body)
            elif encoding == "deflate":
                body = zlib.decompress(body)
            request = request_type.FromString(body)
        except (OSError, zlib.error, DecodeError):
            self._reply(400)
            return
        store._record(name, request, {k.lower(): v for k, v in self.headers.items()})
        self._reply(200, response_type().SerializeToString())


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    store: _OTLPStore
    path_prefix: str


class OTLPReceiver(_OTLPStore):
    """OTLP/HTTP receiver on ``127.0.0.1:<free port>``; ``endpoint`` is the base URL (no ``/v1/...``).

    ``path_prefix`` serves the signals under a prefix, as Loki does (``/otlp`` -> ``/otlp/v1/logs``).
    """

    def __init__(self, path_prefix: str = "") -> None:
        super().__init__()
        self.path_prefix = path_prefix.rstrip("/")
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT``: exporters append ``/v1/traces`` etc. when given it via env vars."""
        if self._server is None:
            raise RuntimeError("OTLPReceiver is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.path_prefix}"

    def start(self, port: int = 0) -> OTLPReceiver:
        """Bind (``port`` 0: a free one; a given port: a collector coming back where it was) and serve."""
        server = _Server(("127.0.0.1", port), _Handler)
        server.store = self
        server.path_prefix = self.path_prefix
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="otlp-http-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- OTLP/gRPC ---------------------------------------------------------------------------------------------


class OTLPGrpcReceiver(_OTLPStore):
    """OTLP/gRPC receiver on ``127.0.0.1:<free port>``; same storage and helpers as :class:`OTLPReceiver`."""

    def __init__(self) -> None:
        super().__init__()
        self._server: Any = None
        self._port: int | None = None

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:PORT`` (the http scheme makes the gRPC exporters connect insecurely)."""
        if self._port is None:
            raise RuntimeError("OTLPGrpcReceiver is not started")
        return f"http://127.0.0.1:{self._port}"

    def _handle(self, signal: str, request: Message, context: Any, response: Message) -> Message:
        import grpc

        failure = self._next_failure()
        if failure is not None:
            status = failure[0]
            code = {
                429: grpc.StatusCode.RESOURCE_EXHAUSTED,
                500: grpc.StatusCode.INTERNAL,
                503: grpc.StatusCode.UNAVAILABLE,
                504: grpc.StatusCode.DEADLINE_EXCEEDED,
            }.get(status, grpc.StatusCode.UNKNOWN)
            context.abort(code, f"injected failure ({status})")
        metadata = {k.lower(): v for k, v in context.invocation_metadata() if isinstance(v, str)}
        self._record(signal, request, metadata)
        return response

    def start(self, port: int = 0) -> OTLPGrpcReceiver:
        """Bind (``port`` 0: a free one) and serve on a small thread pool.

        Like the Collector's OTLP receiver, it refuses requests over 4 MiB (gRPC's default
        ``grpc.max_receive_message_length``, set explicitly here so the limit is part of the contract).
        """
        # Imported here so that the HTTP receiver works without grpcio installed.
        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:  # gRPC method name
                return receiver._handle("traces", request, context, trace_service_pb2.ExportTraceServiceResponse())

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return receiver._handle("logs", request, context, logs_service_pb2.ExportLogsServiceResponse())

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                return receiver._handle("metrics", request, context, metrics_service_pb2.ExportMetricsServiceResponse())

        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-grpc"),
            options=[("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_BYTES)],
        )
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        self._port = server.add_insecure_port(f"127.0.0.1:{port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        """Stop serving (in-flight calls get a short grace period)."""
        if self._server is not None:
            self._server.stop(grace=1).wait(5)
        self._server = None
        self._port = None

    def __enter__(self) -> OTLPGrpcReceiver:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture
def otlp_receiver() -> Iterator[OTLPReceiver]:
    """A started OTLP/HTTP receiver, stopped after the test."""
    with OTLPReceiver() as receiver:
        yield receiver


@pytest.fixture
def otlp_grpc_receiver() -> Iterator[OTLPGrpcReceiver]:
    """A started OTLP/gRPC receiver, stopped after the test."""
    with OTLPGrpcReceiver() as receiver:
        yield receiver

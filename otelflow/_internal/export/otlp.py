"""The OTLP stage: one batch, one request, and the real reason when it fails.

The SDK's OTLP exporters retry inside ``export()`` for up to their timeout and then return a bare ``FAILURE``;
the cause ("connection refused", "413") only reaches their log. This stage sends one request per call, with
the same wire encoding (the SDK's public protobuf encoders) and the same ``OTEL_EXPORTER_OTLP_*`` settings,
and raises :class:`~otelflow._internal.export.pipeline.ExportError` with a cause taken from the transport's own
exception or status: retrying, backing off and keeping batches on disk are the pipeline's job.

Settings read (per signal first, then the generic one): ``ENDPOINT``, ``HEADERS``, ``TIMEOUT`` (seconds),
``COMPRESSION`` (``gzip``, ``deflate`` for HTTP, ``none``), ``CERTIFICATE``, ``CLIENT_KEY``,
``CLIENT_CERTIFICATE``, and for gRPC ``INSECURE`` (an endpoint without a scheme).
"""

from __future__ import annotations

import errno
import gzip
import logging
import os
import threading
import urllib.parse
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from otelflow._internal.export.pipeline import ExportError

__all__ = ["OtlpSender", "cause_of"]

_PATHS = {"traces": "/v1/traces", "logs": "/v1/logs"}
_PROXY_VARIABLES = ("https_proxy", "http_proxy", "all_proxy", "grpc_proxy")


def _env(signal: str, name: str) -> str:
    return (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal.upper()}_{name}", "").strip()
            or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}", "").strip())


class _LeftOut(logging.Filter):
    """Notes, in this thread, an attribute the SDK's protobuf encoder left out ("Failed to encode key ...", logged
    with its traceback): a text with a lone surrogate, which protobuf cannot carry. :func:`_encode` then encodes
    the request again with U+FFFD in place of each one, so nothing is left out (and nothing is printed)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(self.local, "watching", False):
            self.local.left_out = True
            return False
        return True


_left_out = _LeftOut()
logging.getLogger("opentelemetry.exporter.otlp.proto.common._internal").addFilter(_left_out)


def _encode(signal: str, batch: Sequence[Any]) -> bytes:
    encode: Callable[[Any], Any]
    if signal == "traces":
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as encode
    else:
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

        encode = encode_logs
    local = _left_out.local
    local.watching, local.left_out = True, False
    try:
        try:
            body = bytes(encode(batch).SerializePartialToString())
            if not local.left_out:
                return body
        except UnicodeEncodeError:  # a name or a body with a lone surrogate: the whole request would fail
            pass
        from otelflow._internal.export.limits import without_lone_surrogates

        return bytes(encode([without_lone_surrogates(item) for item in batch]).SerializePartialToString())
    finally:
        local.watching = False


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps (``__cause__``, ``__context__``, urllib3's ``reason``), outermost first."""
    seen: list[BaseException] = []
    stack: list[Any] = [exc]
    while stack and len(seen) < 16:
        current = stack.pop(0)
        if not isinstance(current, BaseException) or any(current is s for s in seen):
            continue
        seen.append(current)
        stack.extend([getattr(current, "reason", None), current.__cause__, current.__context__,
                      *(a for a in getattr(current, "args", ()) if isinstance(a, BaseException))])
    return seen


def _safe(text: str) -> str:
    """What a server or an exception says, as text for stderr: its control characters escaped (it is untrusted)."""
    if text.isprintable():
        return text
    from otelflow._internal.terminal import terminal_safe

    return terminal_safe(text)


def cause_of(exc: BaseException) -> str:
    """A short cause for a transport exception: "connection refused", "collector did not answer in time"..."""
    chain = _chain(exc)
    for item in chain:
        if isinstance(item, ConnectionRefusedError) or getattr(item, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
    for item in chain:
        if isinstance(item, TimeoutError) or type(item).__name__ in {"Timeout", "ReadTimeout", "ConnectTimeout",
                                                                      "ReadTimeoutError", "ConnectTimeoutError"}:
            return "collector did not answer in time"
    for item in chain:
        if type(item).__name__ in {"NameResolutionError", "gaierror"}:
            return "collector unavailable (name or service not known)"
    for item in chain:
        if isinstance(item, OSError) and item.strerror:
            return f"collector unavailable ({item.strerror})"
    return f"{type(exc).__name__}: {_safe(str(exc)[:200])}"


class OtlpSender:
    """``export(batch) -> True`` over OTLP/HTTP (protobuf) or OTLP/gRPC; raises ExportError with the cause.

    ``endpoint``, ``headers`` and ``timeout`` override the environment (``otelflow spool ship`` passes them).
    """

    def __init__(self, signal: str, protocol: str, *, endpoint: str | None = None,
                 headers: Mapping[str, str] | None = None, timeout: float | None = None) -> None:
        from opentelemetry.util.re import parse_env_headers

        if signal not in _PATHS:
            raise ValueError(f"signal must be 'traces' or 'logs', not {signal!r}")
        self.signal = signal
        self.grpc = protocol == "grpc"
        self.headers = dict(headers if headers is not None else parse_env_headers(_env(signal, "HEADERS"),
                                                                               liberal=True))
        try:
            self.timeout = timeout if timeout is not None else float(_env(signal, "TIMEOUT") or 10.0)
        except ValueError:
            self.timeout = 10.0
        self.compression = (_env(signal, "COMPRESSION") or "none").lower()
        self._certificate = _env(signal, "CERTIFICATE") or None
        self._client_key = _env(signal, "CLIENT_KEY") or None
        self._client_certificate = _env(signal, "CLIENT_CERTIFICATE") or None
        self.endpoint = endpoint if endpoint is not None else self._endpoint_from_env()
        self._local = threading.local()  # a requests session per thread (sessions are not thread-safe)
        self._channel: Any = None
        self._call: Any = None
        self._lock = threading.Lock()
        self._owner = os.getpid()
        self._closed = False

    def _endpoint_from_env(self) -> str:
        specific = os.environ.get(f"OTEL_EXPORTER_OTLP_{self.signal.upper()}_ENDPOINT", "").strip()
        if specific:
            return specific
        generic = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
        if self.grpc:
            return generic or "http://localhost:4317"
        return (generic or "http://localhost:4318").rstrip("/") + _PATHS[self.signal]

    def reachability_check(self) -> Callable[[], str | None] | None:
        """A TCP connect to the collector's host and port: None when it answers, else why not (:func:`cause_of`).

        The pipeline makes it before the first export and before each probe while the collector is down. None (no
        check) where a TCP connect to the endpoint would not tell: a proxy in between, or a Unix socket.
        """
        import socket

        if any(os.environ.get(name, "").strip() or os.environ.get(name.upper(), "").strip()
               for name in _PROXY_VARIABLES):
            return None
        try:
            parts = urllib.parse.urlsplit(self.endpoint if "://" in self.endpoint else f"http://{self.endpoint}")
            host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            return None
        if parts.scheme not in ("http", "https") or not host:
            return None

        def check() -> str | None:
            try:
                socket.create_connection((host, port), timeout=1.0).close()
            except OSError as exc:
                return cause_of(exc)
            return None

        return check

    def export(self, batch: Sequence[Any]) -> bool:
        """Send one request; True when the collector accepted it."""
        if self._closed:
            raise ExportError("exporter shut down")
        body = _encode(self.signal, batch)
        return self._send_grpc(body) if self.grpc else self._send_http(body)

    # --- HTTP ---------------------------------------------------------------------------------------------------
    def _session(self) -> Any:
        session = getattr(self._local, "session", None)
        if session is None:
            import requests

            session = self._local.session = requests.Session()
        return session

    def _send_http(self, body: bytes) -> bool:
        headers = {"Content-Type": "application/x-protobuf", **self.headers}
        if self.compression == "gzip":
            body = gzip.compress(body)
            headers["Content-Encoding"] = "gzip"
        elif self.compression == "deflate":
            body = zlib.compress(body)
            headers["Content-Encoding"] = "deflate"
        cert: Any = None
        if self._client_certificate:
            cert = (self._client_certificate, self._client_key) if self._client_key else self._client_certificate
        try:
            response = self._session().post(self.endpoint, data=body, headers=headers, timeout=self.timeout,
                                            verify=self._certificate or True, cert=cert)
        except Exception as exc:
            raise ExportError(cause_of(exc)) from None
        if response.ok:
            return True
        status = response.status_code
        if status == 413:
            raise ExportError("message too large", too_large=True)
        raise ExportError(f"collector answered HTTP {status} {_safe(str(response.reason or ''))[:200]}".rstrip())

    # --- gRPC ---------------------------------------------------------------------------------------------------
    def _grpc_call(self) -> Any:
        if self._owner != os.getpid():
            # A forked child: the parent's channel (and lock) are the parent's; this process makes its own.
            self._lock, self._owner, self._channel, self._call = threading.Lock(), os.getpid(), None, None
        with self._lock:
            if self._call is None:
                import grpc

                parts = urllib.parse.urlsplit(self.endpoint if "://" in self.endpoint else f"//{self.endpoint}")
                target = parts.netloc or self.endpoint
                insecure = (parts.scheme == "http" if parts.scheme
                            else _env(self.signal, "INSECURE").lower() == "true")
                compression = grpc.Compression.Gzip if self.compression == "gzip" else grpc.Compression.NoCompression
                if insecure:
                    channel = grpc.insecure_channel(target, compression=compression)
                else:
                    def read(path: str | None) -> bytes | None:
                        if not path:
                            return None
                        with open(path, "rb") as handle:
                            return handle.read()

                    credentials = grpc.ssl_channel_credentials(
                        read(self._certificate), read(self._client_key), read(self._client_certificate))
                    channel = grpc.secure_channel(target, credentials, compression=compression)
                if self.signal == "traces":
                    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

                    stub: Any = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
                else:
                    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc

                    stub = logs_service_pb2_grpc.LogsServiceStub(channel)  # type: ignore[no-untyped-call]
                self._channel, self._call = channel, stub.Export
            return self._call

    def _send_grpc(self, body: bytes) -> bool:
        import grpc
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        request: Any = (ExportTraceServiceRequest if self.signal == "traces" else ExportLogsServiceRequest)
        request = request.FromString(body)
        metadata = tuple((key.lower(), value) for key, value in self.headers.items())
        try:
            self._grpc_call()(request, metadata=metadata or None, timeout=self.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if callable(getattr(exc, "code", None)) else None
            details = str(exc.details() if callable(getattr(exc, "details", None)) else "") or ""
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details.lower():
                raise ExportError("message too large", too_large=True) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ExportError("collector did not answer in time") from None
            if code == grpc.StatusCode.UNAVAILABLE:
                refused = "refused" in details.lower()
                raise ExportError("connection refused" if refused else "collector unavailable") from None
            name = code.name if code is not None else "UNKNOWN"
            raise ExportError(f"collector answered gRPC {name}: {_safe(details[:200])}") from None
        return True

    def shutdown(self) -> None:
        """Close the connection; later exports fail at once."""
        self._closed = True
        channel, self._channel, self._call = self._channel, None, None
        if channel is not None:
            channel.close()
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()

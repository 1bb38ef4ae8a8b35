"""The context of one incoming request: what the ASGI and WSGI middleware share.

:class:`request_context` is :func:`~otelflow.context.hydrated_context` with one twist for servers that are
also instrumented by OpenTelemetry (``opentelemetry-instrumentation-asgi``/``-wsgi`` outside otelflow's
middleware): that instrumentation has already extracted the same ``traceparent`` and started a server span
that is a child of the remote parent. Hydrating would make the remote parent current again, so the
service's spans would skip the server span (two children of one remote parent instead of one tree). Here
the server span stays current, while the run identity, tags and baggage still come from the carrier.
"""

from __future__ import annotations

from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace

from otelflow.context import hydrated_context

__all__ = ["request_context"]


class request_context:
    """Hydrate ``headers`` for one request; keep an instrumentation's server span of the same trace current.

    The current span (if valid) is kept when the carrier has no valid ``traceparent`` or names the same
    trace: it is then the instrumentation's server span, already parented by the carrier. A current span
    of *another* trace (say the instrumentation read B3 headers) is replaced: otelflow's purpose is to
    continue the pipeline's trace.
    """

    __slots__ = ("_hydrated", "_token")

    def __init__(self, headers: Any) -> None:
        self._hydrated = hydrated_context(headers)
        self._token: object | None = None

    def __enter__(self) -> None:
        server_span = trace.get_current_span()
        self._hydrated.__enter__()
        server = server_span.get_span_context()
        if server.is_valid:
            remote = trace.get_current_span().get_span_context()
            if not remote.is_valid or remote.trace_id == server.trace_id:
                # On top of the hydrated context: its baggage stays, only the current span changes.
                self._token = otel_context.attach(trace.set_span_in_context(server_span))

    def __exit__(self, *exc_info: object) -> None:
        token, self._token = self._token, None
        try:
            if token is not None:
                otel_context.detach(cast(Any, token))
        finally:
            self._hydrated.__exit__(None, None, None)

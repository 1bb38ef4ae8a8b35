"""WSGI middleware: each request runs inside the run context its headers carry.

The WSGI twin of :mod:`otelflow.integrations.asgi`::

    from otelflow.integrations.wsgi import OtelflowWSGIMiddleware

    app.wsgi_app = OtelflowWSGIMiddleware(app.wsgi_app)          # Flask
    application = OtelflowWSGIMiddleware(get_wsgi_application())  # Django

With ``opentelemetry-instrumentation-wsgi``, put its ``OpenTelemetryMiddleware`` outside this one, as for ASGI.

A WSGI response body is produced *after* the application returns, while the server iterates it, and the
request ends when the server calls ``close()``. The middleware therefore runs the application call, every
step of the iteration and ``close()`` inside one private copy of the server's ``contextvars`` context
that holds the hydrated run context: generator bodies that log or start spans are correlated, and the
server's own context is never modified, so nothing can leak into the next request on that thread, even
if a non-compliant server never calls ``close()``.

Shutdown: WSGI has no shutdown event (nothing like ASGI's lifespan), so unlike the ASGI middleware this one
cannot flush the telemetry when the server stops. otelflow flushes at interpreter exit (``atexit``), which
covers servers that leave through a normal exit: gunicorn's workers stop on SIGTERM and exit with
``sys.exit()``. A server that lets SIGTERM's default action kill the process (the stdlib's wsgiref) runs no
exit handler, and the last second or so of spans and logs is lost: its runner must handle SIGTERM, stop the
server and call :func:`otelflow.telemetry.shutdown` before exiting (see ``serve_wsgi()`` in
``examples/microservices/service.py``).
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from otelflow.integrations._request import request_context

__all__ = ["OtelflowWSGIMiddleware"]

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class OtelflowWSGIMiddleware:
    """Run every request inside ``hydrated_context`` of its ``HTTP_TRACEPARENT``/``HTTP_BAGGAGE`` environ keys.

    Requests without otelflow headers run in a fresh context; malformed headers give one (rate-limited)
    ``OtelflowCarrierWarning`` and a fresh trace, never an error response.
    """

    __slots__ = ("app",)

    def __init__(self, app: WSGIApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        context = contextvars.copy_context()
        # The environ is a carrier as is: HTTP_TRACEPARENT / HTTP_TRACESTATE / HTTP_BAGGAGE are read,
        # every other key (wsgi.input, ...) is ignored.
        hydrated = request_context(environ)
        context.run(hydrated.__enter__)
        try:
            result = context.run(self.app, environ, start_response)
        except BaseException:
            context.run(hydrated.__exit__, None, None, None)
            raise
        return _ClosingIterable(result, context, hydrated)


class _ClosingIterable:
    """The application's response body, iterated and closed inside the request's context."""

    __slots__ = ("_context", "_hydrated", "_iterator", "_result")

    def __init__(self, result: Iterable[bytes], context: contextvars.Context, hydrated: request_context) -> None:
        self._result = result
        self._context = context
        self._hydrated: request_context | None = hydrated
        self._iterator: Iterator[bytes] | None = None

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._iterator is None:
            self._iterator = self._context.run(iter, self._result)
        return self._context.run(next, self._iterator)

    def close(self) -> None:
        """Close the application's body (WSGI requires servers to call this), then leave the context."""
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                self._context.run(close)
        finally:
            hydrated, self._hydrated = self._hydrated, None
            if hydrated is not None:
                self._context.run(hydrated.__exit__, None, None, None)

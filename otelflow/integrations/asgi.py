"""ASGI middleware: each request runs inside the run context its headers carry.

A pipeline task calls a service with ``serialize_context()`` as headers (or through
:func:`otelflow.integrations.httpx.client`); with this middleware around the service's app, the service's
spans (otelflow tasks, raw OTel spans) join the pipeline's trace and ``get_run_logger()`` correlates with
the pipeline's run::

    from starlette.applications import Starlette
    from otelflow.integrations.asgi import OtelflowASGIMiddleware

    app = OtelflowASGIMiddleware(Starlette(routes=[...]))
    # or: Starlette(routes=[...], middleware=[Middleware(OtelflowASGIMiddleware)])

With OpenTelemetry's own ASGI instrumentation, put it *outside* (it wraps otelflow's middleware)::

    app = OpenTelemetryMiddleware(OtelflowASGIMiddleware(inner_app))

Then its server span is the child of the pipeline's span, and otelflow keeps that server span current
(spans in the service are its children: no second parent) while restoring the run identity, tags and
baggage from the ``baggage`` header. In the other order OpenTelemetry's middleware replaces the whole
OTel context (its own baggage parsing included); the run identity still works, but prefer the order above.

``http`` and ``websocket`` scopes are hydrated for the whole request (a websocket: for the connection);
``lifespan`` and other scopes pass through untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from otelflow.integrations._request import request_context

__all__ = ["OtelflowASGIMiddleware"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HYDRATED_SCOPES = frozenset({"http", "websocket"})


class OtelflowASGIMiddleware:
    """Run every HTTP request / websocket connection inside ``hydrated_context(<its headers>)``.

    Pure ASGI (no framework dependency). Requests without otelflow headers run in a fresh context, as
    before; malformed headers give one (rate-limited) ``OtelflowCarrierWarning`` and a fresh trace, never
    an error response.
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") not in _HYDRATED_SCOPES:
            await self.app(scope, receive, send)
            return
        # The raw header list ([(b"name", b"value"), ...]) is a carrier as is: no dict, no decoding here.
        with request_context(scope.get("headers") or ()):
            await self.app(scope, receive, send)

"""ASGI middleware: each request runs inside the run context its headers carry; telemetry is flushed at shutdown.

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
other scopes pass through untouched.

**Shutdown.** The ``lifespan`` scope passes through to the app message for message, untouched, with one
addition: when the app acknowledges the server's ``lifespan.shutdown`` (``lifespan.shutdown.complete`` or
``.failed``), otelflow's telemetry is flushed (:func:`otelflow.telemetry.flush`, bounded by
``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``) *before* the acknowledgement reaches the server, so the spans and logs of
the last requests and of the app's own shutdown go out. This matters because a server stopped by SIGTERM
(``docker stop``, Kubernetes) may never run the interpreter's exit handlers: uvicorn shuts down gracefully, then
restores the previous SIGTERM disposition (the default) and raises the signal again, and the process dies of it
(status 143) without running :mod:`atexit`, where otelflow's own exit flush is. The flush never makes the
shutdown fail: an error is swallowed and a flush that overruns its bound is left behind in a daemon thread.

It is a flush, not :func:`otelflow.telemetry.shutdown`: a lifespan's end need not be the process's end (test
clients, a server embedded in a larger program, several apps in one process) and the telemetry pipeline is
process-wide; the exit handler still shuts it down (with its report of what was kept on disk) when the process
exits normally.

An app that does not speak the lifespan protocol (it raises at, or returns from, the ``lifespan`` scope without
receiving a message, as Django's ``ASGIHandler`` does) would make the server skip lifespan altogether; the
middleware then answers the lifespan messages itself, so the flush still happens.

Limit: with lifespan turned off in the server (``uvicorn --lifespan off``) the app is never told the server
stops, and nothing of the app runs between the graceful shutdown and the re-raised signal: the telemetry of
the last ``OTEL_BSP_SCHEDULE_DELAY`` / ``OTEL_BLRP_SCHEDULE_DELAY`` (1 s by default) is lost on SIGTERM. Keep
lifespan on (uvicorn's default ``auto`` is enough), or see ``docs/propagation.md`` for a server started from
your own code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from opentelemetry import trace

from otelflow.integrations._request import request_context

__all__ = ["OtelflowASGIMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_HYDRATED_SCOPES = frozenset({"http", "websocket"})
_SHUTDOWN_ACKNOWLEDGED = frozenset({"lifespan.shutdown.complete", "lifespan.shutdown.failed"})
_DEFAULT_BUDGET_SECONDS = 5.0


class OtelflowASGIMiddleware:
    """Run every HTTP request / websocket connection inside ``hydrated_context(<its headers>)``.

    Pure ASGI (no framework dependency). Requests without otelflow headers run in a fresh context, as
    before; malformed headers give one (rate-limited) ``OtelflowCarrierWarning`` and a fresh trace, never
    an error response. The ``lifespan`` scope is passed through, and otelflow's telemetry is flushed (bounded)
    once the app has finished its shutdown, before the server is told so (see the module's documentation).
    """

    __slots__ = ("app",)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope.get("type")
        if kind == "lifespan":
            await _Lifespan(self.app, scope, receive, send).run()
            return
        if kind not in _HYDRATED_SCOPES:
            await self.app(scope, receive, send)
            return
        # The raw header list ([(b"name", b"value"), ...]) is a carrier as is: no dict, no decoding here.
        with request_context(scope.get("headers") or ()):
            await self.app(scope, receive, send)


class _Lifespan:
    """One server lifespan: the app's, message for message, with the telemetry flushed before the shutdown ends."""

    __slots__ = ("_app", "_flushed", "_receive", "_scope", "_send", "_shutting_down", "_spoken")

    def __init__(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        self._app = app
        self._scope = scope
        self._receive = receive
        self._send = send
        self._spoken = False  # the app called receive() or send(): it speaks the lifespan protocol
        self._shutting_down = False  # the server's lifespan.shutdown was handed to the app
        self._flushed = False

    async def run(self) -> None:
        try:
            await self._app(self._scope, self._app_receive, self._app_send)
        except Exception:
            if not self._spoken:
                # Raised at the scope without reading a message: by the ASGI spec "lifespan unsupported", and the
                # server would skip lifespan. Speak it for the app, so the shutdown still flushes.
                await self._answer_for_app()
                return
            await self._flush_after_shutdown()  # the app failed during its shutdown: its last records still go out
            raise
        if not self._spoken:
            await self._answer_for_app()  # returned at once: also "no lifespan support"
            return
        # The app ended its lifespan without acknowledging the shutdown (the server then stops waiting for it).
        await self._flush_after_shutdown()

    async def _app_receive(self) -> Message:
        self._spoken = True
        message = await self._receive()
        if message.get("type") == "lifespan.shutdown":
            self._shutting_down = True
        return message

    async def _app_send(self, message: Message) -> None:
        self._spoken = True
        if message.get("type") in _SHUTDOWN_ACKNOWLEDGED:
            # The app's shutdown is over (its own last spans/logs are recorded); the server has not heard so yet,
            # and once it has, it may re-raise SIGTERM and die without exit handlers: flush now.
            self._shutting_down = True
            await self._flush_after_shutdown()
        await self._send(message)

    async def _flush_after_shutdown(self) -> None:
        if self._shutting_down and not self._flushed:
            self._flushed = True
            await _flush_telemetry()

    async def _answer_for_app(self) -> None:
        while True:
            message = await self._receive()
            kind = message.get("type")
            if kind == "lifespan.startup":
                await self._send({"type": "lifespan.startup.complete"})
            elif kind == "lifespan.shutdown":
                self._shutting_down = True
                await self._flush_after_shutdown()
                await self._send({"type": "lifespan.shutdown.complete"})
                return


def _telemetry_configured() -> bool:
    """False when otelflow never set up telemetry (nothing recorded, nothing to flush; no setup at shutdown).

    otelflow sets the global tracer provider when it configures telemetry (or adopts the application's): while
    the global is still OpenTelemetry's proxy, nothing went through an SDK provider.
    """
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def _budget_seconds() -> float:
    try:
        from otelflow.settings import get_settings

        return float(get_settings().shutdown_timeout_seconds)
    except Exception:
        return _DEFAULT_BUDGET_SECONDS


async def _flush_telemetry(timeout_seconds: float | None = None) -> bool:
    """Flush otelflow's telemetry without blocking the event loop; never raises.

    Waits at most ``timeout_seconds`` (default ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``; 0 skips the flush): the
    flush runs in a daemon thread, left behind if it overruns (the server's shutdown goes on). Returns True if
    everything recorded so far was exported in time. Without a running asyncio loop (trio) the calling thread
    waits instead, with the same bound.
    """
    try:
        budget = _budget_seconds() if timeout_seconds is None else float(timeout_seconds)
        if budget <= 0 or not _telemetry_configured():
            return True
        return await _flush_in_thread(budget)
    except Exception:
        return False


async def _flush_in_thread(budget: float) -> bool:
    from otelflow import telemetry

    result: list[bool] = []
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    finished: asyncio.Future[None] | None = loop.create_future() if loop is not None else None

    def wake() -> None:
        if finished is not None and not finished.done():
            finished.set_result(None)

    def work() -> None:
        try:
            result.append(bool(telemetry.flush(budget)))
        except Exception:
            result.append(False)  # telemetry never fails the server's shutdown
        finally:
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop is already closed: nobody waits any more
                    loop.call_soon_threadsafe(wake)

    thread = threading.Thread(target=work, name="otelflow-shutdown-flush", daemon=True)
    thread.start()
    if finished is None:
        thread.join(budget)
    else:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished, budget)
    return bool(result and result[0])

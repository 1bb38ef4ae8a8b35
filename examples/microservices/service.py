"""The scoring service of the two-service example: its spans and run logs join the calling pipeline's trace.

Run it (ASGI, uvicorn)::

    uvicorn examples.microservices.service:app --port 8000
    python examples/microservices/service.py --port 8000          # the same, without the uvicorn CLI
    python examples/microservices/service.py --port 8000 --wsgi   # the WSGI flavour, on wsgiref

``POST /score`` with ``{"id": ..., "amount": ...}`` runs the ``score_item`` task and answers
``{"id": ..., "score": ...}``; ``GET /health`` answers ``ok``. Requests that carry otelflow headers
(``traceparent`` + ``baggage``, sent by ``otelflow.integrations.httpx.client()``) run inside the caller's
run context: ``score_item``'s span is a child of the caller's span and ``get_run_logger()`` records carry
the caller's ``otelflow.flow_run.id``. Telemetry goes where the ``OTEL_*`` variables say
(``OTEL_SERVICE_NAME=scoring-service OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
from collections.abc import Callable, Iterable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

from otelflow import get_run_logger, task
from otelflow.context import FlowRunContext
from otelflow.integrations.asgi import OtelflowASGIMiddleware
from otelflow.integrations.wsgi import OtelflowWSGIMiddleware


def _log(message: str, *args: Any) -> None:
    # get_run_logger() needs a run: inside a hydrated request there is the caller's (remote) one.
    if FlowRunContext.get() is not None:
        get_run_logger().info(message, *args)


def _score(item: dict[str, Any]) -> float:
    return round(1 / (1 + math.exp(-float(item.get("amount", 0)) / 50)), 4)


@task
async def score_item(item: dict[str, Any]) -> float:
    """Score one item (a stand-in for a model call)."""
    score = _score(item)
    get_run_logger().info("Scored item %s: %s", item.get("id"), score, extra={"item_id": item.get("id")})
    return score


@task(name="score_item")
def score_item_sync(item: dict[str, Any]) -> float:
    """The same task for the WSGI flavour (sync)."""
    score = _score(item)
    get_run_logger().info("Scored item %s: %s", item.get("id"), score, extra={"item_id": item.get("id")})
    return score


# --- ASGI (Starlette) -----------------------------------------------------------------------------------------


async def score(request: Request) -> JSONResponse:
    item = await request.json()
    _log("Scoring request for item %s", item.get("id"))
    return JSONResponse({"id": item.get("id"), "score": await score_item(item)})


async def health(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = OtelflowASGIMiddleware(
    Starlette(routes=[Route("/score", score, methods=["POST"]), Route("/health", health, methods=["GET"])])
)


# --- WSGI ---------------------------------------------------------------------------------------------------


def _wsgi_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path, method = environ.get("PATH_INFO", "/"), environ.get("REQUEST_METHOD", "GET")
    if path == "/health" and method == "GET":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ok"]
    if path == "/score" and method == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        item = json.loads(environ["wsgi.input"].read(length) or b"{}")
        _log("Scoring request for item %s", item.get("id"))
        body = json.dumps({"id": item.get("id"), "score": score_item_sync(item)}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found"]


wsgi_app = OtelflowWSGIMiddleware(_wsgi_app)


def main() -> None:
    parser = argparse.ArgumentParser(description="The scoring service of the otelflow microservices example.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--wsgi", action="store_true", help="serve the WSGI flavour with wsgiref")
    args = parser.parse_args()
    if args.wsgi:
        serve_wsgi(args.host, args.port)
    else:
        import uvicorn

        # Stopped by SIGTERM, uvicorn re-raises it after its graceful shutdown and the process dies of it without
        # exit handlers: OtelflowASGIMiddleware flushes the telemetry at the end of the lifespan, before that.
        uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def serve_wsgi(host: str, port: int) -> None:
    """Serve the WSGI flavour on wsgiref until Ctrl-C or SIGTERM; then flush the telemetry and exit.

    WSGI has no shutdown event a middleware could see, and wsgiref does not handle SIGTERM: its default action
    would kill the process at once, without the exit handlers where otelflow flushes, and the telemetry of the
    last requests would be lost. So this runner stops the server on SIGTERM, shuts otelflow's telemetry down
    (bounded by ``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``) and then dies of the signal as before (status 143), as
    uvicorn does. (gunicorn needs none of this: its workers stop on SIGTERM and exit through ``sys.exit``, which
    runs otelflow's exit flush.)
    """
    import os
    import signal
    import threading
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIServer, make_server

    from otelflow import telemetry

    class ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
        daemon_threads = True

    stopped_by: list[int] = []
    with make_server(host, port, wsgi_app, server_class=ThreadingWSGIServer) as server:

        def stop(signum: int, frame: Any) -> None:
            stopped_by.append(signum)
            # shutdown() waits for serve_forever() to return: from another thread, never from the serving one.
            threading.Thread(target=server.shutdown, name="wsgi-shutdown", daemon=True).start()

        signal.signal(signal.SIGTERM, stop)
        print(f"scoring service (WSGI) on http://{host}:{port}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.serve_forever()
    telemetry.shutdown()
    if stopped_by:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


if __name__ == "__main__":
    main()

"""Integrations: carry otelflow run context through web services and run tasks on Dask.

Each integration lives in its own module and imports its third-party library only when used:

- :mod:`otelflow.integrations.asgi`: ``OtelflowASGIMiddleware`` (Starlette, FastAPI, any ASGI app)
- :mod:`otelflow.integrations.wsgi`: ``OtelflowWSGIMiddleware`` (Flask, Django, any WSGI app)
- :mod:`otelflow.integrations.httpx`: ``client()``, ``async_client()``, ``OtelflowTransport``, ``inject_context``
- :mod:`otelflow.integrations.dask`: ``DaskTaskRunner`` (extra ``otelflow[dask]``)

The names are also available here, imported on first access::

    from otelflow.integrations import OtelflowASGIMiddleware, DaskTaskRunner
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "AsyncOtelflowTransport",
    "DaskTaskRunner",
    "OtelflowASGIMiddleware",
    "OtelflowTransport",
    "OtelflowWSGIMiddleware",
    "ainject_context",
    "async_client",
    "client",
    "inject_context",
]

_MODULES = {
    "OtelflowASGIMiddleware": "asgi",
    "OtelflowWSGIMiddleware": "wsgi",
    "AsyncOtelflowTransport": "httpx",
    "OtelflowTransport": "httpx",
    "ainject_context": "httpx",
    "async_client": "httpx",
    "client": "httpx",
    "inject_context": "httpx",
    "DaskTaskRunner": "dask",
}


def __getattr__(name: str) -> Any:
    # Lazy: importing otelflow.integrations must not import httpx or dask.
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)

"""httpx helpers: outgoing requests carry the current run context (``serialize_context()``) as headers.

The simplest way, a client whose every request carries it::

    from otelflow.integrations import httpx as otelflow_httpx

    @task
    def score(item):
        with otelflow_httpx.client(timeout=5) as http:
            return http.post(f"{url}/score", json=item).json()

``client(**kwargs)`` / ``async_client(**kwargs)`` accept ``httpx.Client`` / ``httpx.AsyncClient`` arguments
and wrap the transport (yours via ``transport=``/``mounts=``, or the default one built from ``verify``,
``cert``, ``http1``, ``http2``, ``limits``, ``proxy``, ``trust_env``) in :class:`OtelflowTransport` /
:class:`AsyncOtelflowTransport`. For an existing client, either pass such a transport or add the event
hook: ``httpx.Client(event_hooks={"request": [inject_context]})`` (async: ``ainject_context``).

Together with ``opentelemetry-instrumentation-httpx`` (recommended: use the transport):

- ``traceparent``: the instrumentation's client span is the parent the service should see. Its own
  injection runs inside the instrumented transport, after otelflow's, so it wins; when it instead wraps
  the client's transport from outside (``instrument_client``), its client span is already current when
  otelflow serializes, so both write the same value.
- ``baggage``: one header, merged. otelflow writes the current OTel baggage plus its run entries, W3C
  encoded, and merges entries already on the request (the caller's or the instrumentation's). While the
  request is handed to the inner transport the OTel baggage is made empty, so the instrumentation's
  ``W3CBaggagePropagator`` leaves the header alone instead of replacing it with a copy that lacks the run
  entries (and encodes spaces as ``+``). The event hooks cannot do that: with the class-wide
  instrumentation and non-empty OTel baggage (inside ``hydrated_context``), its header replaces theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import httpx
from opentelemetry import baggage as otel_baggage
from opentelemetry import context as otel_context

from otelflow import propagation
from otelflow.context import serialize_context

__all__ = [
    "AsyncOtelflowTransport",
    "OtelflowTransport",
    "ainject_context",
    "async_client",
    "client",
    "inject_context",
]

_BAGGAGE = "baggage"
# httpx.Client/AsyncClient arguments that configure the default transport; when otelflow builds that
# transport itself, they must be passed to it (a client given transport= ignores them).
_TRANSPORT_OPTIONS = ("verify", "cert", "trust_env", "http1", "http2", "limits")


def _carrier(headers: httpx.Headers) -> dict[str, str]:
    """``serialize_context()``, with baggage entries already on the request merged in (ours win)."""
    existing = headers.get_list(_BAGGAGE)
    if not existing:
        return serialize_context()
    # Rare path (a caller-set or instrumentation-set header): lowest precedence, below the current OTel
    # baggage and otelflow's run entries. serialize_context() drops stale otelflow keys among them.
    current = otel_baggage.get_all()
    context = otel_context.get_current()
    for key, value in otel_baggage.get_all(propagation.from_carrier({_BAGGAGE: existing})).items():
        if key not in current:
            context = otel_baggage.set_baggage(key, value, context)
    token = otel_context.attach(context)
    try:
        return serialize_context()
    finally:
        otel_context.detach(token)


def _inject(headers: httpx.Headers) -> None:
    carrier = _carrier(headers)
    for name, value in carrier.items():
        headers[name] = value  # replaces: one traceparent, one baggage
    if _BAGGAGE not in carrier and _BAGGAGE in headers:
        del headers[_BAGGAGE]  # everything in it was stale otelflow identity


def inject_context(request: httpx.Request) -> None:
    """Request event hook: add ``serialize_context()`` (traceparent, tracestate, baggage) to the request.

    ``httpx.Client(event_hooks={"request": [inject_context]})``.
    """
    _inject(request.headers)


async def ainject_context(request: httpx.Request) -> None:
    """Async twin of :func:`inject_context`, for ``httpx.AsyncClient(event_hooks=...)``."""
    _inject(request.headers)


class _Injecting:
    """What the sync and async transports share: inject, then hide the OTel baggage from inner layers."""

    @staticmethod
    def _before(request: httpx.Request) -> object:
        _inject(request.headers)
        if not otel_baggage.get_all():
            return None
        # The header already holds everything; an instrumented inner transport must not rewrite it.
        return otel_context.attach(otel_baggage.clear())

    @staticmethod
    def _after(token: object) -> None:
        if token is not None:
            otel_context.detach(cast(Any, token))


class OtelflowTransport(_Injecting, httpx.BaseTransport):
    """A transport that adds the current run context to every request, then delegates to ``transport``.

    ``transport`` defaults to ``httpx.HTTPTransport(**transport_options)``.
    """

    def __init__(self, transport: httpx.BaseTransport | None = None, **transport_options: Any) -> None:
        self.transport = transport if transport is not None else httpx.HTTPTransport(**transport_options)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        token = self._before(request)
        try:
            return self.transport.handle_request(request)
        finally:
            self._after(token)

    def close(self) -> None:
        self.transport.close()


class AsyncOtelflowTransport(_Injecting, httpx.AsyncBaseTransport):
    """Async twin of :class:`OtelflowTransport` (default inner: ``httpx.AsyncHTTPTransport``)."""

    def __init__(self, transport: httpx.AsyncBaseTransport | None = None, **transport_options: Any) -> None:
        self.transport = transport if transport is not None else httpx.AsyncHTTPTransport(**transport_options)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        token = self._before(request)
        try:
            return await self.transport.handle_async_request(request)
        finally:
            self._after(token)

    async def aclose(self) -> None:
        await self.transport.aclose()


def _client_kwargs(kwargs: dict[str, Any], wrapper: Any, default_transport: Any) -> dict[str, Any]:
    kwargs = dict(kwargs)
    transport = kwargs.pop("transport", None)
    if transport is None:
        options = {name: kwargs[name] for name in _TRANSPORT_OPTIONS if name in kwargs}
        if "proxy" in kwargs:
            # Given to the client, proxy= would mount an un-wrapped proxy transport for every URL.
            options["proxy"] = kwargs.pop("proxy")
        transport = default_transport(**options)
    kwargs["transport"] = wrapper(transport)
    mounts: Mapping[str, Any] | None = kwargs.get("mounts")
    if mounts:
        kwargs["mounts"] = {pattern: None if t is None else wrapper(t) for pattern, t in mounts.items()}
    return kwargs


def client(**kwargs: Any) -> httpx.Client:
    """An ``httpx.Client`` (same arguments) whose requests carry the current run context.

    The context is read when each request is sent, so one client can serve many task runs.
    """
    return httpx.Client(**_client_kwargs(kwargs, OtelflowTransport, httpx.HTTPTransport))


def async_client(**kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` (same arguments) whose requests carry the current run context."""
    return httpx.AsyncClient(**_client_kwargs(kwargs, AsyncOtelflowTransport, httpx.AsyncHTTPTransport))

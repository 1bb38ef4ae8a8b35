"""W3C carriers (``traceparent``, ``tracestate``, ``baggage``): the one place otelflow reads or writes them.

``to_carrier`` turns an OpenTelemetry context into a plain ``dict[str, str]`` header set that is safe
as HTTP headers, message headers, environment variables or JSON. ``from_carrier`` turns an untrusted
carrier back into a ``Context``; it never raises, never evaluates or unpickles anything, and reports
problems as (rate-limited) :class:`OtelflowCarrierWarning` warnings instead.

The format is always W3C Trace Context + W3C Baggage, whatever ``OTEL_PROPAGATORS`` says: otelflow's
own processes must be able to read each other's carriers regardless of the application's setup.

Encoding of ``traceparent``/``tracestate`` and the construction of the remote parent span are delegated
to OpenTelemetry's :class:`TraceContextTextMapPropagator`; this module adds strict validation and
warnings around it. Baggage is encoded and parsed here, because OpenTelemetry's
:class:`~opentelemetry.baggage.propagation.W3CBaggagePropagator` deviates from the W3C spec in ways
that break round trips (see ``_parse_baggage`` and ``_encode_member``).
"""

from __future__ import annotations

import functools
import re
import threading
import time
import warnings
from collections.abc import Iterable, Mapping
from typing import Any, Final, cast
from urllib.parse import quote, unquote

from opentelemetry import baggage as otel_baggage
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from otelflow import semconv

__all__ = [
    "OtelflowCarrierWarning",
    "from_carrier",
    "otelflow_baggage",
    "to_carrier",
]


class OtelflowCarrierWarning(UserWarning):
    """A carrier was malformed or exceeded W3C limits; the offending parts were dropped."""


# --- wire names (header names are W3C, not otelflow's, so they live here rather than in semconv) ------
_TRACEPARENT: Final = "traceparent"
_TRACESTATE: Final = "tracestate"
_BAGGAGE: Final = "baggage"

# Lower-cased carrier key -> canonical header name. WSGI environ spells headers as HTTP_<NAME>.
_HEADER_NAMES: Final[dict[str, str]] = {
    **{name: name for name in (_TRACEPARENT, _TRACESTATE, _BAGGAGE)},
    **{f"http_{name}": name for name in (_TRACEPARENT, _TRACESTATE, _BAGGAGE)},
}

# A module-level instance: always W3C regardless of OTEL_PROPAGATORS (the global propagator may be
# B3, Jaeger, ... and otelflow's own processes must understand each other).
_TRACECONTEXT: Final = TraceContextTextMapPropagator()

# --- W3C Trace Context (level 1/2) --------------------------------------------------------------------
# Longer traceparents are rejected before running any regex (same bound as OpenTelemetry's propagator).
_TRACEPARENT_MAX_LENGTH: Final = 512
# version-traceid-parentid-flags, lowercase hex only; higher versions may append "-<anything>".
_TRACEPARENT_RE: Final = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_INVALID_VERSION: Final = "ff"
_ZERO_TRACE_ID: Final = "0" * 32
_ZERO_SPAN_ID: Final = "0" * 16

# tracestate list-member grammar (W3C Trace Context, "tracestate Header Field Values").
_TRACESTATE_KEY: Final = r"(?:[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13})"
_TRACESTATE_VALUE: Final = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_TRACESTATE_MEMBER_RE: Final = re.compile(rf"({_TRACESTATE_KEY})=({_TRACESTATE_VALUE})")
_TRACESTATE_MAX_MEMBERS: Final = 32
# The spec only says "propagate at least 512"; 8192 is OpenTelemetry's hard bound, reused so that a
# tracestate we accept is never silently discarded by the propagator we delegate to.
_TRACESTATE_MAX_LENGTH: Final = 8192

# --- W3C Baggage ---------------------------------------------------------------------------------------
_OWS: Final = r"[ \t]*"
_TOKEN: Final = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"  # RFC 9110 token
_BAGGAGE_VALUE: Final = r"[\x21\x23-\x2b\x2d-\x3a\x3c-\x5b\x5d-\x7e]*"  # *baggage-octet
_BAGGAGE_MEMBER_RE: Final = re.compile(
    rf"({_TOKEN}){_OWS}={_OWS}({_BAGGAGE_VALUE})"
    rf"(?:{_OWS};{_OWS}{_TOKEN}(?:{_OWS}={_OWS}{_BAGGAGE_VALUE})?)*"
)
# Characters left verbatim when encoding. '%' must always be encoded (W3C); '+' is encoded too although
# the spec allows it, because OpenTelemetry Python peers decode with unquote_plus ('+' -> ' ').
_VALUE_SAFE: Final = "".join(
    c
    for c in map(chr, range(0x21, 0x7F))
    if c not in '",;\\%+' and not c.isalnum() and c not in "_.-~"  # alnum and _.-~ are always safe
)
_KEY_SAFE: Final = "!#$&'*^`|"  # token characters other than alnum, "_.-~", '%' and '+'
# Cache of encoded members: run ids/names repeat across every carrier a run serializes.
_ENCODE_CACHE_SIZE: Final = 2048

# --- untrusted carrier bounds --------------------------------------------------------------------------
_MAX_CARRIER_ITEMS: Final = 10_000  # guards against unbounded iterables posing as carriers
_SNIPPET_LENGTH: Final = 64  # how much of an offending value a warning echoes (repr'd, never raw)

# --- warning rate limit --------------------------------------------------------------------------------
_WARNING_INTERVAL_S: Final = 60.0
_clock = time.monotonic  # module attribute so tests can move time forward
_warning_lock = threading.Lock()
_last_warned: dict[str, float] = {}  # problem kind -> monotonic time of the last warning
_suppressed: dict[str, int] = {}  # problem kind -> warnings swallowed since then

_Problems = list[tuple[str, str]]  # (kind, human-readable detail)


def _reset_warning_state() -> None:
    """Forget rate-limit history (for tests)."""
    with _warning_lock:
        _last_warned.clear()
        _suppressed.clear()


def _warn(problems: _Problems, stacklevel: int) -> None:
    """Emit at most one warning for ``problems``, rate-limited per problem kind."""
    if not problems:
        return
    kinds = {kind for kind, _ in problems}
    now = _clock()
    with _warning_lock:
        due = any(now - _last_warned.get(kind, -_WARNING_INTERVAL_S) >= _WARNING_INTERVAL_S for kind in kinds)
        if not due:
            for kind in kinds:
                _suppressed[kind] = _suppressed.get(kind, 0) + 1
            return
        swallowed = sum(_suppressed.pop(kind, 0) for kind in kinds)
        for kind in kinds:
            _last_warned[kind] = now
    message = "; ".join(detail for _, detail in problems)
    if swallowed:
        message += f" ({swallowed} similar carrier warning(s) suppressed in the last {_WARNING_INTERVAL_S:.0f} s)"
    warnings.warn(message, OtelflowCarrierWarning, stacklevel=stacklevel + 1)


def _snippet(value: object) -> str:
    """A short, escaped rendering of untrusted input for a warning message."""
    text = value if isinstance(value, str) else type(value).__name__
    if len(text) > _SNIPPET_LENGTH:
        text = text[:_SNIPPET_LENGTH] + "..."
    return repr(text)


# ======================================================================================================
# inject
# ======================================================================================================


@functools.lru_cache(maxsize=_ENCODE_CACHE_SIZE)
def _encode_member(key: str, value: str) -> str:
    """``key=value`` percent-encoded for the baggage header.

    Not OpenTelemetry's ``quote_plus``: it writes spaces as '+', which the W3C spec (and every other
    SDK) reads as a literal '+'. Keys must be tokens; OpenTelemetry Python percent-decodes keys, so
    non-token characters are percent-encoded the same way to stay interoperable. Lone surrogates
    cannot be UTF-8 encoded and are replaced rather than raising.
    """
    return quote(key, safe=_KEY_SAFE, errors="replace") + "=" + quote(value, safe=_VALUE_SAFE, errors="replace")


def _ordered_baggage(context: Context | None, extra_baggage: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """All baggage entries, extra wins, otelflow's own keys first (they survive limit overflows)."""
    entries: dict[str, object] = dict(otel_baggage.get_all(context))
    if extra_baggage:
        entries.update(extra_baggage)
    if not entries:
        return []
    ordered = [(key, str(entries.pop(key))) for key in semconv.BAGGAGE_KEYS if key in entries]
    ordered.extend((str(key), str(value)) for key, value in entries.items())
    return ordered


def to_carrier(context: Context | None = None, extra_baggage: Mapping[str, str] | None = None) -> dict[str, str]:
    """Header set for the given (default: current) OpenTelemetry context.

    Keys: ``traceparent`` (only if the context's span context is valid), ``tracestate`` (only if
    non-empty), ``baggage`` (all baggage entries of the context merged with ``extra_baggage``, extra
    wins; omitted if empty). Baggage values are percent-encoded per W3C Baggage and the W3C limits are
    enforced: at most ``semconv.BAGGAGE_MAX_MEMBERS`` members and ``semconv.BAGGAGE_MAX_BYTES`` bytes.
    otelflow's own keys (``semconv.BAGGAGE_KEYS``) are kept first; others are dropped when over the
    limit, with one (rate-limited) :class:`OtelflowCarrierWarning` saying how many.

    The result is ASCII without CR/LF, so it is JSON-, environment-variable- and HTTP-header-safe.
    """
    carrier: dict[str, str] = {}
    # OpenTelemetry's inject only skips INVALID_SPAN_CONTEXT itself; a span context with just one zero
    # id would be written as a traceparent every W3C reader rejects, so check validity here.
    if trace.get_current_span(context).get_span_context().is_valid:
        _TRACECONTEXT.inject(carrier, context)

    members: list[str] = []
    size = 0
    dropped = 0
    for key, value in _ordered_baggage(context, extra_baggage):
        if not key:
            dropped += 1  # an empty key cannot be a W3C token
            continue
        member = _encode_member(key, value)
        added = len(member) + (1 if members else 0)  # ASCII: characters == bytes; +1 for the comma
        if len(members) >= semconv.BAGGAGE_MAX_MEMBERS or size + added > semconv.BAGGAGE_MAX_BYTES:
            # Keep scanning: a later, smaller member may still fit within the byte limit.
            dropped += 1
            continue
        members.append(member)
        size += added
    if members:
        carrier[_BAGGAGE] = ",".join(members)
    if dropped:
        _warn(
            [
                (
                    "inject-baggage-limit",
                    f"baggage: dropped {dropped} entr{'y' if dropped == 1 else 'ies'} to stay within the "
                    f"W3C limits ({semconv.BAGGAGE_MAX_MEMBERS} members, {semconv.BAGGAGE_MAX_BYTES} bytes)"
                    " or because the key was empty",
                )
            ],
            stacklevel=2,
        )
    return carrier


# ======================================================================================================
# extract
# ======================================================================================================


def _as_text(value: object) -> str | None:
    """A header value as ``str``; bytes are decoded latin-1 (HTTP's historical charset, never fails)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("latin-1")
    return None


def _iter_items(carrier: object) -> Iterable[Any]:
    """Raw ``(key, value)`` items of any supported carrier shape."""
    items = getattr(carrier, "items", None)
    if callable(items):  # dict, Mapping, starlette Headers, email.message.Message / HTTPMessage
        return cast("Iterable[Any]", items())
    return cast("Iterable[Any]", carrier)  # an iterable of pairs (checked by the caller)


def _collect_headers(carrier: object, problems: _Problems) -> dict[str, list[str]]:
    """The values of the three W3C headers in ``carrier``: keys case-insensitive, junk skipped."""
    headers: dict[str, list[str]] = {}
    if carrier is None:
        return headers
    if isinstance(carrier, str | bytes | bytearray) or not (
        callable(getattr(carrier, "items", None)) or isinstance(carrier, Iterable)
    ):
        problems.append(("carrier", f"carrier of type {type(carrier).__name__} is not a header mapping"))
        return headers
    junk_items = 0
    for index, item in enumerate(_iter_items(carrier)):
        if index >= _MAX_CARRIER_ITEMS:
            problems.append(("carrier", f"carrier has more than {_MAX_CARRIER_ITEMS} items; rest ignored"))
            break
        if not isinstance(item, tuple | list) or len(item) != 2:
            junk_items += 1
            continue
        raw_key, raw_value = item
        key = _as_text(raw_key)
        name = _HEADER_NAMES.get(key.lower()) if key is not None else None
        if name is None or raw_value is None:
            continue  # not ours (or explicitly absent): ignore silently
        values = raw_value if isinstance(raw_value, list | tuple) else (raw_value,)
        for raw in values:
            text = _as_text(raw)
            if text is None:
                problems.append(("carrier", f"{name}: ignored value of type {type(raw).__name__}"))
            else:
                headers.setdefault(name, []).append(text)
    if junk_items:
        problems.append(("carrier", f"ignored {junk_items} carrier item(s) that are not (key, value) pairs"))
    return headers


def _valid_traceparent(values: list[str] | None, problems: _Problems) -> str | None:
    """The traceparent if it is valid per W3C Trace Context level 1/2, else ``None`` (+ problem)."""
    if not values:
        return None
    if len(values) > 1:
        # W3C test suite (test_traceparent_duplicated): two traceparents -> restart the trace.
        problems.append(("traceparent", f"{len(values)} traceparent values; starting a new trace"))
        return None
    # Optional whitespace around a header value is not part of it (RFC 9110; W3C test suite).
    value = values[0].strip(" \t")
    reason: str | None = None
    match = _TRACEPARENT_RE.fullmatch(value) if len(value) <= _TRACEPARENT_MAX_LENGTH else None
    if match is None:
        reason = "malformed"
    else:
        version, trace_id, span_id, _flags, tail = match.groups()
        if version == _INVALID_VERSION:
            reason = "version ff is invalid"
        elif version == "00" and tail is not None:
            reason = "version 00 must have exactly 4 fields"
        elif trace_id == _ZERO_TRACE_ID:
            reason = "all-zero trace-id"
        elif span_id == _ZERO_SPAN_ID:
            reason = "all-zero parent-id"
    if reason is not None:
        problems.append(("traceparent", f"invalid traceparent {_snippet(value)} ({reason}); new trace"))
        return None
    return value


def _valid_tracestate(values: list[str] | None, problems: _Problems) -> str | None:
    """The combined tracestate if every member is valid, else ``None`` (+ problem if it was not empty).

    OpenTelemetry's ``TraceState.from_header`` also discards invalid tracestates, but silently (only a
    log record); the reason is needed for the warning, so it is validated here first.
    """
    if not values:
        return None
    members: list[str] = []
    keys: set[str] = set()
    reason: str | None = None
    for value in values:  # multiple header fields combine with "," (RFC 9110 section 5.3)
        for raw in value.split(","):
            member = raw.strip(" \t")
            if not member:
                continue  # empty list-members are allowed
            match = _TRACESTATE_MEMBER_RE.fullmatch(member)
            if match is None:
                reason = f"malformed member {_snippet(member)}"
                break
            key = match.group(1)
            if key in keys:
                reason = f"duplicate key {_snippet(key)}"
                break
            if len(members) >= _TRACESTATE_MAX_MEMBERS:
                reason = f"more than {_TRACESTATE_MAX_MEMBERS} members"
                break
            keys.add(key)
            members.append(member)
        if reason is not None:
            break
    if reason is None and sum(map(len, members)) + len(members) - 1 > _TRACESTATE_MAX_LENGTH:
        reason = f"longer than {_TRACESTATE_MAX_LENGTH} characters"
    if reason is not None:
        problems.append(("tracestate", f"tracestate dropped ({reason}); traceparent kept"))
        return None
    return ",".join(members) if members else None


def _parse_baggage(values: list[str], problems: _Problems) -> dict[str, str]:
    """Baggage entries of the header values, with W3C limits applied (excess members dropped).

    Not OpenTelemetry's ``W3CBaggagePropagator.extract``, which: decodes with ``unquote_plus`` (the
    spec's '+' is a literal plus), strips whitespace off decoded values (breaks round trips), keeps
    properties glued to the value, allows 180 members, discards the whole header above 8192 bytes
    instead of dropping the excess, and raises on strings that cannot be UTF-8 encoded.
    Properties (``;k=v`` metadata) are validated but dropped: the OpenTelemetry API cannot hold them.
    """
    entries: dict[str, str] = {}
    count = 0
    size = 0
    over_limit = 0
    malformed: list[str] = []
    for value in values:  # several baggage headers combine like one comma-separated list
        for raw in value.split(","):
            member = raw.strip(" \t")
            if not member:
                continue
            if count >= semconv.BAGGAGE_MAX_MEMBERS:
                over_limit += 1  # no need to parse what is dropped anyway
                continue
            match = _BAGGAGE_MEMBER_RE.fullmatch(member)
            if match is None:
                malformed.append(member)
                continue
            added = len(member) + (1 if count else 0)  # members are ASCII here: chars == bytes
            if size + added > semconv.BAGGAGE_MAX_BYTES:
                over_limit += 1
                continue
            count += 1
            size += added
            # Keys are percent-decoded for interoperability with OpenTelemetry Python (it encodes
            # them); values per spec. unquote never raises: bad %-sequences stay literal, invalid
            # UTF-8 becomes U+FFFD.
            key = unquote(match.group(1), errors="replace")
            entries[key] = unquote(match.group(2), errors="replace")
    if malformed:
        problems.append(
            (
                "baggage",
                f"dropped {len(malformed)} malformed baggage member(s), e.g. {_snippet(malformed[0])}",
            )
        )
    if over_limit:
        problems.append(
            (
                "baggage-limit",
                f"dropped {over_limit} baggage member(s) beyond the W3C limits "
                f"({semconv.BAGGAGE_MAX_MEMBERS} members, {semconv.BAGGAGE_MAX_BYTES} bytes)",
            )
        )
    return entries


def _extract(carrier: object, context: Context | None, problems: _Problems) -> Context:
    """``from_carrier`` without the never-raise guard and the warning."""
    result = context if context is not None else Context()
    headers = _collect_headers(carrier, problems)
    if not headers:
        return result

    traceparent = _valid_traceparent(headers.get(_TRACEPARENT), problems)
    if traceparent is not None:
        normalized = {_TRACEPARENT: traceparent}
        # W3C: tracestate is only parsed when the traceparent is valid.
        tracestate = _valid_tracestate(headers.get(_TRACESTATE), problems)
        if tracestate is not None:
            normalized[_TRACESTATE] = tracestate
        result = _TRACECONTEXT.extract(normalized, result)
    elif _TRACEPARENT in headers and trace.get_current_span(result).get_span_context().is_valid:
        # A present but invalid traceparent means "start a fresh trace" (W3C): do not let a span of
        # the caller's base context become the parent instead.
        result = trace.set_span_in_context(trace.INVALID_SPAN, result)

    baggage_values = headers.get(_BAGGAGE)
    if baggage_values:
        for key, value in _parse_baggage(baggage_values, problems).items():
            result = otel_baggage.set_baggage(key, value, result)
    return result


def from_carrier(
    carrier: Mapping[str, Any] | Iterable[tuple[str, str]] | None, context: Context | None = None
) -> Context:
    """Parse an untrusted carrier into a ``Context``; never raises.

    ``carrier`` may be a dict, any header mapping (starlette ``Headers``, ``http.client.HTTPMessage``,
    ``email.message.Message``, a WSGI environ with ``HTTP_TRACEPARENT``...) or an iterable of
    ``(key, value)`` pairs. Keys are case-insensitive; values may be ``str`` or ``bytes`` (decoded
    latin-1); other values are ignored with a warning.

    The result is based on ``context`` (default: an empty ``Context``, not the current one, so a
    hydrated carrier never inherits a stale span) and holds the remote parent span if the traceparent
    is valid per W3C Trace Context level 1/2, its tracestate if valid, and the baggage entries
    (W3C parsing, percent-decoded, limits of ``semconv.BAGGAGE_MAX_MEMBERS`` members and
    ``semconv.BAGGAGE_MAX_BYTES`` bytes; excess and malformed members dropped).

    Anything malformed produces at most one :class:`OtelflowCarrierWarning` per call, and at most one
    per problem kind per minute (the next one reports how many were suppressed).
    """
    problems: _Problems = []
    try:
        result = _extract(carrier, context, problems)
    except Exception as exc:  # untrusted input (and arbitrary carrier objects) must never break a run
        problems.append(("carrier", f"carrier could not be read ({type(exc).__name__}); ignored"))
        result = context if context is not None else Context()
    try:
        _warn(problems, stacklevel=2)
    except Warning:
        raise  # warnings configured as errors are the caller's explicit choice
    except Exception:  # a failing warning machinery must not break the run either
        pass
    return result


def otelflow_baggage(context: Context | None = None) -> dict[str, str]:
    """The otelflow entries (``semconv.BAGGAGE_KEYS``) of the (default: current) context's baggage."""
    entries = otel_baggage.get_all(context)
    return {key: str(entries[key]) for key in semconv.BAGGAGE_KEYS if key in entries}

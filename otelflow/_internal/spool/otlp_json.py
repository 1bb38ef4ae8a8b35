"""OTLP/JSON, the one codec of the spool and the outage buffer: SDK objects to lines, lines back to objects.

Each line of a spool or outage-buffer file is one OTLP/JSON export request (``ExportTraceServiceRequest`` /
``ExportLogsServiceRequest``), the format of the Collector's ``otlpjsonfile`` receiver and ``file`` exporter.
Per the OTLP/JSON mapping, trace and span ids are lowercase hex (not base64), 64-bit integers are strings and
enums are integers.

- writing: :func:`encode_spans` / :func:`encode_logs` (the outage buffer), :func:`split_encoded` (the spool: a
  batch cut into lines under the request size limit, each item encoded once and sized by its encoding);
- back to SDK objects, to send them over OTLP: :func:`decode_line` (the outage buffer's re-send and
  ``otelflow spool ship``), such that ``encode(decode(line)) == line``;
- to plain records for the CLI: :func:`iter_items`, :func:`span_record`, :func:`log_record`.

Every reader goes through :func:`decode_value`, the one set of rules for what a value may be: a line is
untrusted data (a crash, a full disk or another program may have written it), so a value of the wrong shape
raises :class:`ValueError` or :class:`TypeError` (never anything else, never a hang), and
:func:`decode_attributes` leaves such an entry out.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from otelflow._internal.export.limits import Limits, plain_items, shrinking

__all__ = [
    "BAD_LINE",
    "LAYOUT",
    "DamageSink",
    "EncodedPiece",
    "LogRecord",
    "SpanRecord",
    "cached_span",
    "checked_attributes",
    "checked_resource_attributes",
    "decode_attributes",
    "decode_line",
    "decode_logs",
    "decode_spans",
    "decode_value",
    "encode_logs",
    "encode_spans",
    "iter_items",
    "line_bytes",
    "log_record",
    "nanos",
    "resource_attributes",
    "span_record",
    "split_encoded",
]

LAYOUT = {
    "traces": ("resourceSpans", "scopeSpans", "spans"),
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
}
# What decoding a bad line may raise: callers catch exactly these (a line never raises anything else).
BAD_LINE = (ValueError, TypeError, AttributeError, KeyError, RecursionError, OverflowError)

# --- encoding ----------------------------------------------------------------------------------------------

# The encoders build the JSON text directly rather than nested dicts for json.dumps: the spool is the
# default exporter, its worker shares the GIL with the runs, and this is ~3x cheaper per span. For the same
# reason the common attribute values (str, int, bool, float) are written inline, without a call per attribute,
# and texts are f-strings (one allocation, where each `+` makes a temporary string).
_str = json.encoder.encode_basestring  # C-accelerated JSON string quoting
_isfinite = math.isfinite
_INT64 = 2**63
_MAX_DEPTH = 32  # nested arrays/kvlists, written and read; deeper is cut (written) or bad (read)


def _double_text(value: float) -> str:
    # Protobuf's JSON mapping spells non-finite doubles as strings.
    if _isfinite(value):
        return repr(value)
    return '"NaN"' if value != value else ('"Infinity"' if value > 0 else '"-Infinity"')


def _encode_value(value: Any, depth: int = 0) -> str:
    kind = type(value)
    if kind is str:
        return f'{{"stringValue":{_str(value)}}}'
    if kind is bool:
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if kind is int:
        if -_INT64 <= value < _INT64:
            return f'{{"intValue":"{value}"}}'
        return f'{{"stringValue":"{value}"}}'  # beyond int64: no reader could take it as an int
    if kind is float:
        return f'{{"doubleValue":{_double_text(value)}}}'
    if value is None:
        return "{}"
    # Subclasses (enums...) as their plain value: str() of a str subclass (so a str-mixin enum member is written
    # "Color.RED", as it always was), int() or float() of the others (an IntEnum or StrEnum used to raise).
    if isinstance(value, str):
        return f'{{"stringValue":{_str(str(value))}}}'
    if isinstance(value, int):
        return _encode_value(int(value))
    if isinstance(value, float):
        return _encode_value(float(value))
    if isinstance(value, bytes):
        return f'{{"bytesValue":"{base64.b64encode(value).decode("ascii")}"}}'
    if depth >= _MAX_DEPTH and isinstance(value, Mapping | Sequence):
        return '{"stringValue":"...[nested deeper than ' + str(_MAX_DEPTH) + ' levels]"}'
    if isinstance(value, Mapping):
        return f'{{"kvlistValue":{{"values":{_encode_attributes(value, depth + 1)}}}}}'
    if isinstance(value, Sequence):
        return f'{{"arrayValue":{{"values":[{",".join([_encode_value(v, depth + 1) for v in value])}]}}}}'
    return f'{{"stringValue":{_str(str(value))}}}'


def _encode_attributes(attrs: Mapping[Any, Any] | None, depth: int = 0) -> str:
    if attrs is None:
        return "[]"
    parts: list[str] = []
    append = parts.append
    for key, value in plain_items(attrs):
        name = _str(key) if type(key) is str else _str(str(key))
        kind = type(value)
        if kind is str:
            append(f'{{"key":{name},"value":{{"stringValue":{_str(value)}}}}}')
        elif kind is int and -_INT64 <= value < _INT64:
            append(f'{{"key":{name},"value":{{"intValue":"{value}"}}}}')
        elif kind is bool:
            append(f'{{"key":{name},"value":{{"boolValue":{"true" if value else "false"}}}}}')
        elif kind is float and _isfinite(value):
            append(f'{{"key":{name},"value":{{"doubleValue":{value!r}}}}}')
        else:
            append(f'{{"key":{name},"value":{_encode_value(value, depth)}}}')
    return f'[{",".join(parts)}]'


def _encode_scope(scope: Any) -> str:
    if scope is None:
        return "{}"
    if scope.version:
        return '{"name":' + _str(scope.name) + ',"version":' + _str(scope.version) + "}"
    return '{"name":' + _str(scope.name) + "}"


def _encode_span(span: Any) -> str:
    ctx = span.context
    parent = span.parent
    status = span.status
    flags = 0x100 | int(ctx.trace_flags) | (0x200 if parent is not None and parent.is_remote else 0)
    parent_text = f',"parentSpanId":"{parent.span_id:016x}"' if parent is not None else ""
    trace_state = ctx.trace_state
    state_text = f',"traceState":{_str(trace_state.to_header())}' if trace_state else ""
    message_text = f',"message":{_str(status.description)}' if status.description else ""
    text = (
        f'{{"traceId":"{ctx.trace_id:032x}","spanId":"{ctx.span_id:016x}"{parent_text}{state_text}'
        # OTLP enums start at SPAN_KIND_UNSPECIFIED = 0
        f',"name":{_str(span.name)},"kind":{span.kind.value + 1}'
        f',"startTimeUnixNano":"{span.start_time}","endTimeUnixNano":"{span.end_time}"'
        f',"attributes":{_encode_attributes(span.attributes)},"flags":{flags}'
        f',"status":{{"code":{status.status_code.value}{message_text}}}'
    )
    events = span.events
    if events:
        text += ',"events":[' + ",".join([
            f'{{"timeUnixNano":"{e.timestamp}","name":{_str(e.name)},"attributes":{_encode_attributes(e.attributes)}}}'
            for e in events
        ]) + "]"
    links = span.links
    if links:
        text += ',"links":[' + ",".join([
            f'{{"traceId":"{link.context.trace_id:032x}","spanId":"{link.context.span_id:016x}"'
            f',"attributes":{_encode_attributes(link.attributes)}}}'
            for link in links
        ]) + "]"
    return text + "}"


def _encode_log(data: Any) -> str:
    record = data.log_record
    observed = record.observed_timestamp or 0
    severity = record.severity_number
    severity_text = f',"severityText":{_str(record.severity_text)}' if record.severity_text else ""
    body = record.body
    body_text = f'{{"stringValue":{_str(body)}}}' if type(body) is str else _encode_value(body)
    text = (
        f'{{"timeUnixNano":"{record.timestamp or observed}","observedTimeUnixNano":"{observed}"'
        f',"severityNumber":{severity.value if severity is not None else 0}{severity_text}'
        f',"body":{body_text},"attributes":{_encode_attributes(record.attributes)}'
    )
    if record.trace_id:
        text += (f',"traceId":"{record.trace_id:032x}","spanId":"{record.span_id:016x}"'
                 f',"flags":{int(record.trace_flags or 0)}')
    event_name = getattr(record, "event_name", None)
    if event_name:
        text += f',"eventName":{_str(event_name)}'
    return text + "}"


# --- requests: encoded items grouped into lines ------------------------------------------------------------


class _Layout(NamedTuple):
    outer: str
    inner: str
    leaf: str
    encode: Callable[[Any], str]


_LAYOUTS = {
    "traces": _Layout(*LAYOUT["traces"], _encode_span),
    "logs": _Layout(*LAYOUT["logs"], _encode_log),
}


def line_bytes(text: str) -> bytes:
    """A line (or part of one) as it is written to disk: UTF-8, with a lone surrogate (a file name that is not UTF-8,
    decoded by ``os.fsdecode``) as its JSON escape ``\\udcff``. In an encoded line it can only be inside a JSON
    string, so the text is kept exactly and the line stays valid UTF-8 and JSON."""
    return text.encode("utf-8", "backslashreplace")


def _utf8_len(text: str) -> int:
    """The size of ``text`` on disk (:func:`line_bytes`)."""
    return len(text) if text.isascii() else len(line_bytes(text))


class _Blocks:
    """The resource and scope blocks around a request's items: each encoded once, measured in UTF-8 bytes."""

    __slots__ = ("_resource_frame", "_resources", "_scope_frame", "_scopes", "empty")

    def __init__(self, layout: _Layout) -> None:
        self.empty = len(f'{{"{layout.outer}":[]}}')  # a request with no items
        self._resource_frame = len(f'{{"resource":{{"attributes":}},"{layout.inner}":[]}}')
        self._scope_frame = len(f'{{"scope":,"{layout.leaf}":[]}}')
        # By identity (hashing a Resource serialises its attributes); an entry keeps its object, hence its id.
        self._resources: dict[int, tuple[Any, str, int]] = {}
        self._scopes: dict[int, tuple[Any, str, int]] = {}

    def resource(self, resource: Any) -> tuple[str, int]:
        """``(attributes text, size of the block without its scopes)``."""
        entry = self._resources.get(id(resource))
        if entry is None:
            text = _encode_attributes(resource.attributes if resource is not None else {})
            entry = self._resources[id(resource)] = (resource, text, self._resource_frame + _utf8_len(text))
        return entry[1], entry[2]

    def scope(self, scope: Any) -> tuple[str, int]:
        """``(scope text, size of the block without its items)``."""
        entry = self._scopes.get(id(scope))
        if entry is None:
            text = _encode_scope(scope)
            entry = self._scopes[id(scope)] = (scope, text, self._scope_frame + _utf8_len(text))
        return entry[1], entry[2]

    def alone(self, resource: Any, scope: Any) -> int:
        """The size of a request holding one item of ``resource`` and ``scope``, less the item's own."""
        return self.empty + self.resource(resource)[1] + self.scope(scope)[1]


_NONE_YET = object()


class _Request:
    """One export request assembled from encoded items, and its exact size in UTF-8 bytes.

    Items are grouped by resource, then by scope, each in order of first appearance. Consecutive items nearly
    always share both: that is an identity check, not a dict look-up (hashing a Resource serialises it).
    """

    __slots__ = ("_blocks", "_by_scope", "_fragments", "_groups", "_layout", "_resource", "_scope", "items", "size")

    def __init__(self, layout: _Layout, blocks: _Blocks) -> None:
        self._layout = layout
        self._blocks = blocks
        self.items: list[Any] = []
        self.size = blocks.empty
        self._groups: dict[Any, dict[Any, list[str]]] = {}
        self._resource: Any = _NONE_YET
        self._scope: Any = _NONE_YET
        self._by_scope: dict[Any, list[str]] = {}
        self._fragments: list[str] = []

    def cost(self, resource: Any, scope: Any, size: int) -> int:
        """Bytes the request grows by with an item of ``size`` bytes under ``resource`` and ``scope``."""
        if resource is self._resource:
            if scope is self._scope:
                return size + 1  # and a comma
            by_scope = self._by_scope
        else:
            found = self._groups.get(resource) if self._groups else None
            if found is None:
                return ((1 if self._groups else 0) + self._blocks.resource(resource)[1]
                        + self._blocks.scope(scope)[1] + size)
            by_scope = found
        return size + 1 if scope in by_scope else 1 + self._blocks.scope(scope)[1] + size

    def add(self, item: Any, resource: Any, scope: Any, fragment: str, cost: int = 0) -> None:
        """Add an encoded item (``cost``: what :meth:`cost` said, to keep :attr:`size` exact)."""
        if resource is not self._resource:
            by_scope = self._groups.get(resource)
            if by_scope is None:
                by_scope = self._groups[resource] = {}
            self._resource, self._by_scope, self._scope = resource, by_scope, _NONE_YET
        if scope is not self._scope:
            fragments = self._by_scope.get(scope)
            if fragments is None:
                fragments = self._by_scope[scope] = []
            self._scope, self._fragments = scope, fragments
        self._fragments.append(fragment)
        self.items.append(item)
        self.size += cost

    def line(self) -> str:
        """The request as one line of OTLP/JSON."""
        outer, inner, leaf, _ = self._layout
        blocks = self._blocks
        resource_blocks = []
        for resource, by_scope in self._groups.items():
            scopes = ",".join([f'{{"scope":{blocks.scope(scope)[0]},"{leaf}":[{",".join(fragments)}]}}'
                               for scope, fragments in by_scope.items()])
            resource_blocks.append(f'{{"resource":{{"attributes":{blocks.resource(resource)[0]}}},"{inner}":[{scopes}]}}')
        return f'{{"{outer}":[{",".join(resource_blocks)}]}}'


def _encode_request(items: Sequence[Any], signal: str) -> str:
    layout = _LAYOUTS[signal]
    request = _Request(layout, _Blocks(layout))
    encode = layout.encode
    for item in items:
        request.add(item, item.resource, item.instrumentation_scope, encode(item))
    return request.line()


def encode_spans(spans: Sequence[Any]) -> str:
    """One OTLP/JSON ``ExportTraceServiceRequest`` (a single line of JSON) for SDK ``ReadableSpan`` objects."""
    return _encode_request(spans, "traces")


def encode_logs(records: Sequence[Any]) -> str:
    """One OTLP/JSON ``ExportLogsServiceRequest`` (a single line of JSON) for SDK log records."""
    return _encode_request(records, "logs")


class EncodedPiece(list[Any]):
    """The items of one export request, with the request already encoded: :attr:`line`.

    A list, so that the export pipeline counts it as any batch; a slice of it (a halved batch) is a plain list
    with no line, which an exporter encodes again.
    """

    __slots__ = ("line",)

    def __init__(self, items: Iterable[Any], line: str) -> None:
        super().__init__(items)
        self.line = line


def split_encoded(items: Sequence[Any], signal: str, limits: Limits) -> list[list[Any]]:
    """``items`` (spans or log records, per ``signal``) as consecutive :class:`EncodedPiece` s: one line each.

    Each item is encoded once and sized by its encoding, exactly (no estimate): every line is at most
    ``limits.max_request_bytes`` bytes of UTF-8, so the protobuf request ``otelflow spool ship`` makes of it
    (never bigger than the JSON: ids, times and field names are shorter there) fits too. An item too big for a
    line of its own is shrunk (:func:`~otelflow._internal.export.limits.shrinking`, as ``split_batch`` does) and
    encoded again; still too big, it gets a line of its own anyway: never dropped. An item that cannot be encoded
    (a value whose ``str()`` raises) gets a piece of its own, a plain list: its export fails alone, and is counted
    so, instead of taking its neighbours down with it.

    Example::

        for piece in split_encoded(spans, "traces", get_limits()):
            writer.write(piece.line if isinstance(piece, EncodedPiece) else encode_spans(piece))
    """
    layout = _LAYOUTS[signal]
    budget = limits.max_request_bytes
    encode = layout.encode
    blocks = _Blocks(layout)
    pieces: list[list[Any]] = []
    request = _Request(layout, blocks)
    for given in items:
        item = given
        try:
            resource, scope = item.resource, item.instrumentation_scope
            frame = blocks.alone(resource, scope)
            for item in shrinking(given, limits):  # shrinking keeps the resource and scope
                fragment = encode(item)
                size = _utf8_len(fragment)
                if frame + size <= budget:
                    break
            cost = request.cost(resource, scope, size)
        except Exception:
            if request.items:
                pieces.append(EncodedPiece(request.items, request.line()))
                request = _Request(layout, blocks)
            pieces.append([item])
            continue
        if request.items and request.size + cost > budget:
            pieces.append(EncodedPiece(request.items, request.line()))
            request = _Request(layout, blocks)
            cost = request.cost(resource, scope, size)
        request.add(item, resource, scope, fragment, cost)
    if request.items:
        pieces.append(EncodedPiece(request.items, request.line()))
    return pieces


# --- decoding: one set of rules for values ------------------------------------------------------------------

_MAX_NANOS = 2**63 - 1  # fixed64 on the wire; sqlite's INTEGER too
_HEX_DIGITS = "0123456789abcdefABCDEF"
_intern = sys.intern
_DOUBLE_WORDS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


def _int(value: Any) -> int:
    """An OTLP int64: a JSON integer, or a string of ASCII digits (``"²"`` and 5,000 digits are not)."""
    if type(value) is int:
        number = value
    elif type(value) is str and 0 < len(value) <= 20 and value.lstrip("-").isascii() and value.lstrip("-").isdigit():
        number = int(value)
    else:
        raise ValueError(f"not an int64: {str(value)[:40]!r}")
    if not -_INT64 <= number < _INT64:
        raise ValueError(f"int64 out of range: {str(value)[:40]}")
    return number


def _double(value: Any) -> float:
    if type(value) in (int, float):
        return float(value)
    if type(value) is str and value in _DOUBLE_WORDS:
        return _DOUBLE_WORDS[value]
    raise ValueError(f"not a double: {str(value)[:40]!r}")


def decode_value(value: Any, *, sdk: bool = False, depth: int = 0, strict: bool = False) -> Any:
    """An OTLP/JSON ``AnyValue`` as a Python value; raises ValueError/TypeError on a value of the wrong shape.

    ``bytesValue`` is ``bytes`` for SDK objects (``sdk=True``), its base64 text for records shown to people.
    An empty ``AnyValue`` is ``None``. A ``kvlistValue`` leaves out its entries of the wrong shape, or with
    ``strict`` is itself of the wrong shape when it has one.
    """
    if type(value) is not dict:
        raise TypeError("an AnyValue is not an object")
    if not value:
        return None
    if len(value) != 1:
        raise ValueError(f"an AnyValue has {len(value)} fields")
    (kind, inner), = value.items()
    if kind == "stringValue":
        if type(inner) is not str:
            raise TypeError("stringValue is not a string")
        return inner
    if kind == "intValue":
        return _int(inner)
    if kind == "doubleValue":
        return _double(inner)
    if kind == "boolValue":
        if type(inner) is not bool:
            raise TypeError("boolValue is not a boolean")
        return inner
    if depth >= _MAX_DEPTH:
        raise ValueError(f"value nested deeper than {_MAX_DEPTH} levels")
    if kind == "arrayValue":
        values = _values(inner)
        return [decode_value(v, sdk=sdk, depth=depth + 1, strict=strict) for v in values]
    if kind == "kvlistValue":
        decoded, bad = checked_attributes(_values(inner), sdk=sdk, depth=depth + 1, strict=strict)
        if bad and strict:
            raise ValueError("a kvlistValue has an entry of the wrong shape")
        return decoded
    if kind == "bytesValue":
        if type(inner) is not str:
            raise TypeError("bytesValue is not a string")
        try:
            raw = base64.b64decode(inner, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"bytesValue is not base64: {exc}") from None
        return raw if sdk else inner
    raise ValueError(f"unknown AnyValue field {kind[:40]!r}")


def _values(container: Any) -> list[Any]:
    if type(container) is not dict:
        raise TypeError("an array or kvlist is not an object")
    values = container.get("values", [])
    if type(values) is not list:
        raise TypeError("values is not a list")
    return values


def decode_attributes(attrs: Any, *, sdk: bool = False, depth: int = 0) -> dict[str, Any]:
    """OTLP/JSON ``KeyValue`` list -> dict; an entry of the wrong shape is left out (the others are kept)."""
    return checked_attributes(attrs, sdk=sdk, depth=depth)[0]


def checked_attributes(
    attrs: Any, *, sdk: bool = False, depth: int = 0, strict: bool = False
) -> tuple[dict[str, Any], bool]:
    """:func:`decode_attributes`, and whether anything was left out (``null`` or no list at all is no damage).

    Keys are interned: a trace's 100k spans share one copy of each attribute name.
    """
    if type(attrs) is not list:
        return {}, attrs is not None
    out: dict[str, Any] = {}
    bad = False
    for kv in attrs:
        if type(kv) is not dict:
            bad = True
            continue
        key = kv.get("key")
        if type(key) is not str:
            bad = True
            continue
        value = kv.get("value", {})
        # The fast paths (a well-formed string or small int) matter: `show` decodes ~15 per span, 100k spans.
        if type(value) is dict and len(value) == 1:
            text = value.get("stringValue")
            if type(text) is str:
                out[_intern(key)] = text
                continue
            text = value.get("intValue")
            if type(text) is str and len(text) < 19 and text.isdigit() and text.isascii():
                out[_intern(key)] = int(text)
                continue
        try:
            out[_intern(key)] = decode_value(value, sdk=sdk, depth=depth, strict=strict)
        except (ValueError, TypeError):
            bad = True
    return out, bad


def nanos(value: Any) -> int:
    """An OTLP time in nanoseconds (a string of digits or a JSON integer); raises ValueError/TypeError."""
    if type(value) is str and len(value) < 20 and value.isdigit() and value.isascii():
        number = int(value)  # the fast path: what the spool holds (19 digits may still be past int64)
        if number <= _MAX_NANOS:
            return number
    if type(value) is float and value == value and 0 <= value <= _MAX_NANOS:
        value = int(value)
    result = _int(value)
    if not 0 <= result <= _MAX_NANOS:
        raise ValueError(f"time out of range: {result}")
    return result


def _hex_id(value: Any, length: int) -> str:
    # Hex digits only: int(value, 16) would also take "0x...", "+...", "1_0" and surrounding blanks.
    if type(value) is str and len(value) == length and not value.strip(_HEX_DIGITS):
        return value.lower()
    raise ValueError(f"not a {length}-hex id: {str(value)[:40]!r}")


def _objects(container: Any, field: str) -> list[dict[str, Any]]:
    """``container[field]``: a list of JSON objects (missing or null is empty); raises TypeError otherwise."""
    values = container.get(field) or []
    if type(values) is not list or any(type(value) is not dict for value in values):
        raise TypeError(f"{field} is not a list of objects")
    return values


def iter_items(line: bytes | str, signal: str) -> Iterator[tuple[Any, Any, Any]]:
    """``(resource block, scope block, item)`` for each item of one line; raises one of :data:`BAD_LINE`.

    The blocks are the raw JSON objects; the caller decodes what it needs.
    """
    outer, inner, leaf = LAYOUT[signal]
    request = json.loads(line)
    if type(request) is not dict:
        raise TypeError("a line is not a JSON object")
    for block in _objects(request, outer):
        for scope_block in _objects(block, inner):
            for item in _objects(scope_block, leaf):
                yield block, scope_block, item


def resource_attributes(block: Any) -> dict[str, Any]:
    """The attributes of a resource block, decoded."""
    return checked_resource_attributes(block)[0]


def checked_resource_attributes(block: Any) -> tuple[dict[str, Any], bool]:
    """:func:`resource_attributes`, and whether anything was left out (a resource of the wrong shape)."""
    resource = block.get("resource") if type(block) is dict else None
    if resource is None:
        return {}, False
    if type(resource) is not dict:
        return {}, True
    return checked_attributes(resource.get("attributes"), strict=True)


# --- back to SDK objects (what the OTLP exporters take) ------------------------------------------------------


def _sdk_resource(block: Mapping[str, Any]) -> Any:
    from opentelemetry.sdk.resources import Resource

    resource = block.get("resource") or {}
    return Resource(decode_attributes(resource.get("attributes") if type(resource) is dict else None, sdk=True))


def _sdk_scope(block: Mapping[str, Any]) -> Any:
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    scope = block.get("scope") or {}
    if type(scope) is not dict or not scope:
        return None
    return InstrumentationScope(str(scope.get("name", "")), str(scope.get("version") or "") or None)


def _sdk_span_context(trace_id: Any, span_id: Any, flags: int = 0, remote: bool = False, state: str = "") -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    return SpanContext(
        int(_hex_id(trace_id, 32), 16), int(_hex_id(span_id, 16), 16), is_remote=remote,
        trace_flags=TraceFlags(flags & 0xFF), trace_state=TraceState.from_header([state]) if state else None,
    )


def _sdk_span(item: Mapping[str, Any], resource: Any, scope: Any) -> Any:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    flags = _int(item.get("flags", 0))
    trace_id = item["traceId"]
    parent_id = item.get("parentSpanId")
    status = item.get("status") or {}
    code = StatusCode(_int(status.get("code", 0)))
    return ReadableSpan(
        name=str(item.get("name", "")),
        context=_sdk_span_context(trace_id, item["spanId"], flags, False, str(item.get("traceState", ""))),
        parent=_sdk_span_context(trace_id, parent_id, 0, bool(flags & 0x200)) if parent_id else None,
        resource=resource,
        attributes=decode_attributes(item.get("attributes"), sdk=True),
        events=[
            Event(str(e.get("name", "")), decode_attributes(e.get("attributes"), sdk=True),
                  nanos(e.get("timeUnixNano", 0)))
            for e in item.get("events", [])
        ],
        links=[
            Link(_sdk_span_context(lk["traceId"], lk["spanId"]), decode_attributes(lk.get("attributes"), sdk=True))
            for lk in item.get("links", [])
        ],
        kind=SpanKind(max(0, _int(item.get("kind", 1)) - 1)),
        status=Status(code, str(status.get("message")) if code is StatusCode.ERROR else None),
        start_time=nanos(item.get("startTimeUnixNano", 0)),
        end_time=nanos(item.get("endTimeUnixNano", 0)),
        instrumentation_scope=scope,
    )


def _sdk_log(item: Mapping[str, Any], resource: Any, scope: Any) -> Any:
    from opentelemetry._logs import LogRecord as ApiLogRecord
    from opentelemetry._logs import SeverityNumber
    from opentelemetry.context import Context
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.trace import TraceFlags

    record = ApiLogRecord(
        timestamp=nanos(item.get("timeUnixNano", 0)),
        observed_timestamp=nanos(item.get("observedTimeUnixNano", 0)),
        context=Context({"otelflow.ship": True}),  # non-empty: never the shipping thread's current span
        severity_text=str(item.get("severityText") or "") or None,
        severity_number=SeverityNumber(_int(item.get("severityNumber", 0))),
        body=decode_value(item.get("body", {}), sdk=True),
        attributes=decode_attributes(item.get("attributes"), sdk=True),
        event_name=str(item.get("eventName") or "") or None,
    )
    if item.get("traceId"):
        record.trace_id = int(_hex_id(item["traceId"], 32), 16)
        record.span_id = int(_hex_id(item.get("spanId") or "0" * 16, 16), 16)
        record.trace_flags = TraceFlags(_int(item.get("flags", 0)) & 0xFF)
    else:
        record.trace_id, record.span_id, record.trace_flags = 0, 0, TraceFlags(0)
    return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=scope)


def decode_line(line: str | bytes, signal: str) -> list[Any]:
    """SDK objects (``ReadableSpan`` / ``ReadableLogRecord``) of one line; raises one of :data:`BAD_LINE`.

    A line decodes whole or not at all: a line that cannot be sent as written is never half-sent.
    """
    if signal not in LAYOUT:
        raise ValueError(f"signal must be 'traces' or 'logs', not {signal!r}")
    make = _sdk_span if signal == "traces" else _sdk_log
    resources: dict[int, Any] = {}
    scopes: dict[int, Any] = {}
    items: list[Any] = []
    for block, scope_block, item in iter_items(line, signal):
        resource = resources.get(id(block))
        if resource is None:
            resource = resources[id(block)] = _sdk_resource(block)
        scope = scopes.get(id(scope_block), False)
        if scope is False:
            scope = scopes[id(scope_block)] = _sdk_scope(scope_block)
        items.append(make(item, resource, scope))
    return items


def decode_spans(line: str | bytes) -> list[Any]:
    """SDK ``ReadableSpan`` objects from one OTLP/JSON ``ExportTraceServiceRequest`` line."""
    return decode_line(line, "traces")


def decode_logs(line: str | bytes) -> list[Any]:
    """SDK ``ReadableLogRecord`` objects from one OTLP/JSON ``ExportLogsServiceRequest`` line."""
    return decode_line(line, "logs")


# --- to plain records (what the CLI reads) -------------------------------------------------------------------
#
# A record that decodes with something of the wrong shape in it (an attribute, an event, a link, its body, a
# span ending before it starts) is kept with that part left out or mended, and reported as damaged: the CLI
# counts it with the lines it skipped. A log record's attributes are decoded on first use (`show` drops most
# records of a chatty run unread); what they report then goes to the same count, through its `Damage`.


class DamageSink(Protocol):
    """Where damage found in a record is reported: ``add(where, item)`` (the reader's ``Skipped``)."""

    def add(self, where: str, item: int = -1) -> None:
        """Count one damaged item (``item``: its rank in the line at ``where``)."""


_Event = tuple[str, int, dict[str, Any]]
_Link = tuple[str, str, dict[str, Any]]


class SpanRecord:
    """One span of the spool, decoded. ``damaged``: something in it was left out or mended (see above).

    ``events`` and ``links`` may be given as the JSON text the run index keeps of them (``events_json``...):
    they are then decoded when first used (`show` of a 100k-run map reads the events of a handful of runs).
    """

    __slots__ = ("_events", "_links", "attributes", "damaged", "end", "name", "parent_id", "resource", "source",
                 "span_id", "start", "status_code", "status_message", "trace_id")

    def __init__(self, *, trace_id: str, span_id: str, parent_id: str | None, name: str, start: int, end: int,
                 attributes: dict[str, Any], status_code: int, status_message: str,
                 events: list[_Event] | None = None, links: list[_Link] | None = None,
                 resource: dict[str, Any] | None = None, source: str = "", damaged: bool = False,
                 events_json: str | None = None, links_json: str | None = None) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = name
        self.start = start
        self.end = end
        self.attributes = attributes
        self.status_code = status_code
        self.status_message = status_message
        self._events: list[_Event] | str = events_json if events_json is not None else (events or [])
        self._links: list[_Link] | str = links_json if links_json is not None else (links or [])
        self.resource = resource if resource is not None else {}
        self.source = source  # the spool file it was read from, where the reader needs it (pending records)
        self.damaged = damaged

    def __repr__(self) -> str:
        return f"SpanRecord({self.name!r}, trace {self.trace_id}, span {self.span_id})"

    @property
    def events(self) -> list[_Event]:
        """``(name, time, attributes)`` of each span event."""
        events = self._events
        if isinstance(events, str):
            events = self._events = [(name, when, attrs) for name, when, attrs in _stored(events)
                                     if type(name) is str and type(when) is int and type(attrs) is dict]
        return events

    @events.setter
    def events(self, value: list[_Event]) -> None:
        self._events = value

    @property
    def links(self) -> list[_Link]:
        """``(trace id, span id, attributes)`` of each link."""
        links = self._links
        if isinstance(links, str):
            links = self._links = [(trace, span, attrs) for trace, span, attrs in _stored(links)
                                   if type(trace) is str and type(span) is str and type(attrs) is dict]
        return links

    @links.setter
    def links(self, value: list[_Link]) -> None:
        self._links = value


def cached_span(trace_id: str, span_id: str, parent_id: str | None, name: str, start: int, end: int,
                attributes: dict[str, Any], status_code: int, status_message: str, resource: dict[str, Any],
                events_json: str | None, links_json: str | None) -> SpanRecord:
    """A :class:`SpanRecord` from what the run index keeps of it (positional: 3x quicker than the constructor)."""
    span = _new_span(SpanRecord)
    span.trace_id, span.span_id, span.parent_id, span.name = trace_id, span_id, parent_id, name
    span.start, span.end, span.attributes = start, end, attributes
    span.status_code, span.status_message, span.resource = status_code, status_message, resource
    span._events = events_json if events_json is not None else []
    span._links = links_json if links_json is not None else []
    span.source, span.damaged = "", False
    return span


_new_span = object.__new__


def _stored(text: str) -> list[Any]:
    """A list of 3-item lists, as the run index stored it (anything else: empty)."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return []
    if type(value) is not list:
        return []
    return [item for item in value if type(item) is list and len(item) == 3]


class LogRecord:
    """One log record of the spool, decoded (its attributes on first use: `show` only counts most records).

    Decoding the attributes never raises: an entry of the wrong shape is left out, and the record reported
    damaged to ``sink`` (given by the reader, with where the record is), once.
    """

    __slots__ = ("_attributes", "_item", "_raw_attributes", "_sink", "_where", "body", "damaged", "resource",
                 "severity_number", "severity_text", "span_id", "time", "trace_id")

    def __init__(self, *, time: int, severity_number: int, severity_text: str, body: str, raw_attributes: Any,
                 trace_id: str | None, span_id: str | None, resource: dict[str, Any] | None = None,
                 damaged: bool = False, sink: DamageSink | None = None, where: str = "", item: int = -1) -> None:
        self.time = time
        self.severity_number = severity_number
        self.severity_text = severity_text
        self.body = body
        self._raw_attributes = raw_attributes
        self._attributes: dict[str, Any] | None = None
        self.trace_id = trace_id
        self.span_id = span_id
        self.resource = resource if resource is not None else {}
        self.damaged = damaged
        self._sink = sink
        self._where = where
        self._item = item

    @property
    def attributes(self) -> dict[str, Any]:
        """The record's attributes as a plain dict."""
        if self._attributes is None:
            try:
                self._attributes, bad = checked_attributes(self._raw_attributes, strict=True)
            except BAD_LINE:  # not raised by the decoder; a record must never take the command down
                self._attributes, bad = {}, True
            self._raw_attributes = None
            if bad:
                self.damaged = True
                if self._sink is not None:
                    self._sink.add(self._where, self._item)
            self._sink = None
        return self._attributes

    def decode(self) -> LogRecord:
        """Decode the attributes now (so that damage in them is reported now); returns the record."""
        self.attributes  # noqa: B018 - decoding is the point
        return self


def _text(value: Any, default: str = "") -> tuple[str, bool]:
    """A string field: (the string, False), or (default, True) for a value of another type (None is missing)."""
    if type(value) is str:
        return value, False
    return default, value is not None


def _events(raw: Any) -> tuple[list[tuple[str, int, dict[str, Any]]], bool]:
    if raw is None:
        return [], False
    if type(raw) is not list:
        return [], True
    out = []
    bad = False
    for event in raw:
        if type(event) is not dict:
            bad = True
            continue
        name = event.get("name")
        if type(name) is not str:
            name, bad = "", bad or name is not None
        try:
            when = nanos(event.get("timeUnixNano", 0))
        except (TypeError, ValueError):
            when, bad = 0, True
        attrs = event.get("attributes")
        if attrs:
            decoded, wrong = checked_attributes(attrs, strict=True)
            bad = bad or wrong
        else:
            decoded = {}
            bad = bad or (attrs is not None and type(attrs) is not list)
        out.append((_intern(name) if len(name) <= 40 else name, when, decoded))
    return out, bad


def _links(raw: Any) -> tuple[list[tuple[str, str, dict[str, Any]]], bool]:
    if raw is None:
        return [], False
    if type(raw) is not list:
        return [], True
    out = []
    bad = False
    for link in raw:
        if type(link) is not dict:
            bad = True
            continue
        try:
            trace_id, span_id = _hex_id(link.get("traceId"), 32), _hex_id(link.get("spanId"), 16)
        except ValueError:
            bad = True
            continue
        decoded, wrong = checked_attributes(link.get("attributes"), strict=True)
        bad = bad or wrong
        out.append((trace_id, span_id, decoded))
    return out, bad


def span_record(item: Any, resource: dict[str, Any]) -> SpanRecord:
    """A :class:`SpanRecord` from one raw span object; raises ValueError/TypeError when ids or times are bad.

    Anything else of the wrong shape is left out (or mended: an end before the start, as after a clock step,
    becomes the start) and the record marked ``damaged``.
    """
    trace_id = _hex_id(item.get("traceId"), 32)
    span_id = _hex_id(item.get("spanId"), 16)
    parent = item.get("parentSpanId") or None
    parent_id = _hex_id(parent, 16) if parent is not None else None
    start = nanos(item.get("startTimeUnixNano"))
    end = nanos(item.get("endTimeUnixNano"))
    damaged = end < start
    if damaged:
        end = start
    name, wrong = _text(item.get("name"))
    damaged = damaged or wrong
    status = item.get("status")
    code, message = 0, ""
    if type(status) is dict:
        raw_code = status.get("code", 0)
        if type(raw_code) is int and 0 <= raw_code <= 2:
            code = raw_code
        else:
            damaged = True
        message, wrong = _text(status.get("message"))
        damaged = damaged or wrong
    elif status is not None:
        damaged = True
    attributes, wrong = checked_attributes(item.get("attributes"), strict=True)
    events, wrong_events = _events(item.get("events"))
    links, wrong_links = _links(item.get("links"))
    return SpanRecord(
        trace_id=trace_id, span_id=span_id, parent_id=parent_id, name=_intern(name) if len(name) <= 80 else name,
        start=start, end=end, attributes=attributes, status_code=code, status_message=message, events=events,
        links=links, resource=resource, damaged=damaged or wrong or wrong_events or wrong_links,
    )


def log_record(
    item: Any, resource: dict[str, Any], sink: DamageSink | None = None, where: str = "", rank: int = -1
) -> LogRecord:
    """A :class:`LogRecord` from one raw log record object; raises ValueError/TypeError when ids or time are bad.

    Anything else of the wrong shape is left out and the record marked ``damaged`` (its attributes are checked
    when first used, and reported to ``sink`` then, as item ``rank`` at ``where``).
    """
    time = nanos(item.get("timeUnixNano") or item.get("observedTimeUnixNano") or 0)
    trace_id = item.get("traceId") or None
    span_id = item.get("spanId") or None
    trace_id = _hex_id(trace_id, 32) if trace_id is not None else None
    span_id = _hex_id(span_id, 16) if span_id is not None else None
    damaged = False
    body = item.get("body")
    if type(body) is dict and len(body) == 1 and type(body.get("stringValue")) is str:
        text = body["stringValue"]
    elif body is None:
        text = ""
    else:
        try:
            decoded = decode_value(body, strict=True)
        except (TypeError, ValueError):
            decoded, damaged = None, True
        text = "" if decoded is None else (decoded if isinstance(decoded, str) else json.dumps(decoded, default=str))
    number = item.get("severityNumber", 0)
    if not (type(number) is int and 0 <= number <= 24):
        number, damaged = 0, True
    severity, wrong = _text(item.get("severityText"))
    return LogRecord(
        time=time, severity_number=number, severity_text=_intern(severity) if len(severity) <= 16 else severity,
        body=text, raw_attributes=item.get("attributes"), trace_id=trace_id, span_id=span_id, resource=resource,
        damaged=damaged or wrong, sink=sink, where=where, item=rank,
    )

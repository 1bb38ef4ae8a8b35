"""Reading the spool: OTLP/JSON lines back into plain records, never trusting a line.

Spool files are appended to by live processes and may hold anything a crash, a disk error or another
writer left behind: a partial last line, invalid UTF-8, JSON of the wrong shape, non-numeric times.
Readers here skip such a line (or item), count it in a :class:`Skipped`, and carry on; the CLI turns
the count into one warning. Nothing here raises on file contents.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "LogRecord",
    "Skipped",
    "SpanRecord",
    "decode_attributes",
    "iter_complete_lines",
    "iter_spool",
    "parse_log_line",
    "parse_span_line",
    "read_spool",
    "spool_files",
]

_SIGNALS = {
    "traces": ("resourceSpans", "scopeSpans", "spans"),
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
}
_CHUNK = 1 << 20


class Skipped:
    """Counts malformed lines and items met while reading, remembering where the first one was."""

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None

    def add(self, where: str) -> None:
        """Count one malformed line or item found at ``where`` (``file:offset``)."""
        self.count += 1
        if self.first is None:
            self.first = where


def _decode_value(value: Any) -> Any:
    if not isinstance(value, dict):
        return None
    try:
        if "stringValue" in value:
            return str(value["stringValue"])
        if "intValue" in value:
            return int(value["intValue"])
        if "doubleValue" in value:
            return float(value["doubleValue"])
        if "boolValue" in value:
            return bool(value["boolValue"])
        if "arrayValue" in value:
            values = value["arrayValue"].get("values", [])
            return [_decode_value(v) for v in values] if isinstance(values, list) else []
        if "kvlistValue" in value:
            return decode_attributes(value["kvlistValue"].get("values"))
        if "bytesValue" in value:
            return str(value["bytesValue"])
    except (TypeError, ValueError, AttributeError, OverflowError):
        return None
    return None


def decode_attributes(attrs: Any) -> dict[str, Any]:
    """OTLP/JSON ``KeyValue`` list -> plain dict; entries of the wrong shape are left out."""
    if type(attrs) is not list:
        return {}
    out: dict[str, Any] = {}
    for kv in attrs:
        # The fast path (a well-formed string or int attribute) matters: `show` decodes ~15 per span.
        if type(kv) is not dict:
            continue
        key = kv.get("key")
        if type(key) is not str:
            continue
        value = kv.get("value")
        if type(value) is dict and len(value) == 1:
            text = value.get("stringValue")
            if type(text) is str:
                out[key] = text
                continue
            number = value.get("intValue")
            if type(number) is str and number.isdigit():
                out[key] = int(number)
                continue
        out[key] = _decode_value(value)
    return out


_MAX_NANOS = 2**63 - 1  # fixed64 on the wire; sqlite's INTEGER too


def _nanos(value: Any) -> int:
    """An OTLP time (string or number of nanoseconds); raises ValueError/TypeError when it is not one."""
    if isinstance(value, bool):
        raise TypeError("bool is not a time")
    if isinstance(value, int):
        nanos = value
    elif isinstance(value, str) or (isinstance(value, float) and value == value):
        nanos = int(value)
    else:
        raise TypeError(f"not a time: {value!r}")
    if not 0 <= nanos <= _MAX_NANOS:
        raise ValueError(f"time out of range: {nanos}")
    return nanos


def _hex_id(value: Any, length: int) -> str:
    if isinstance(value, str) and len(value) == length:
        int(value, 16)
        return value.lower()
    raise ValueError(f"not a {length}-hex id: {value!r}")


@dataclass(slots=True)
class SpanRecord:
    """One span of the spool, decoded."""

    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: int
    end: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[tuple[str, int, dict[str, Any]]]
    links: list[tuple[str, str, dict[str, Any]]]
    resource: dict[str, Any] = field(default_factory=dict)
    source: str = ""  # the spool file it was read from, where the reader needs it (pending records)


class LogRecord:
    """One log record of the spool, decoded (its attributes on first use: `show` only counts most records)."""

    __slots__ = ("_attributes", "_raw_attributes", "body", "resource", "severity_number", "severity_text",
                 "span_id", "time", "trace_id")

    def __init__(self, *, time: int, severity_number: int, severity_text: str, body: str, raw_attributes: Any,
                 trace_id: str | None, span_id: str | None, resource: dict[str, Any] | None = None) -> None:
        self.time = time
        self.severity_number = severity_number
        self.severity_text = severity_text
        self.body = body
        self._raw_attributes = raw_attributes
        self._attributes: dict[str, Any] | None = None
        self.trace_id = trace_id
        self.span_id = span_id
        self.resource = resource if resource is not None else {}

    @property
    def attributes(self) -> dict[str, Any]:
        """The record's attributes as a plain dict."""
        if self._attributes is None:
            self._attributes = decode_attributes(self._raw_attributes)
            self._raw_attributes = None
        return self._attributes


def _span(item: Any, resource: dict[str, Any]) -> SpanRecord:
    parent = item.get("parentSpanId") or None
    status = item.get("status") or {}
    if not isinstance(status, dict):
        status = {}
    events = []
    for event in item.get("events") or []:
        if isinstance(event, dict):
            try:
                when = _nanos(event.get("timeUnixNano", 0))
            except (TypeError, ValueError):
                when = 0
            events.append((str(event.get("name", "")), when, decode_attributes(event.get("attributes"))))
    links = []
    for link in item.get("links") or []:
        if isinstance(link, dict):
            links.append((str(link.get("traceId", "")), str(link.get("spanId", "")),
                          decode_attributes(link.get("attributes"))))
    code = status.get("code", 0)
    return SpanRecord(
        trace_id=_hex_id(item.get("traceId"), 32),
        span_id=_hex_id(item.get("spanId"), 16),
        parent_id=_hex_id(parent, 16) if parent is not None else None,
        name=str(item.get("name", "")),
        start=_nanos(item.get("startTimeUnixNano")),
        end=_nanos(item.get("endTimeUnixNano")),
        attributes=decode_attributes(item.get("attributes")),
        status_code=code if isinstance(code, int) and not isinstance(code, bool) else 0,
        status_message=str(status.get("message", "") or ""),
        events=events,
        links=links,
        resource=resource,
    )


def _log(item: Any, resource: dict[str, Any]) -> LogRecord:
    time = _nanos(item.get("timeUnixNano") or item.get("observedTimeUnixNano") or 0)
    body = item.get("body")
    if isinstance(body, dict) and "stringValue" in body:
        text = str(body["stringValue"])
    else:
        decoded = _decode_value(body)
        text = "" if decoded is None else (decoded if isinstance(decoded, str) else json.dumps(decoded, default=str))
    number = item.get("severityNumber", 0)
    trace_id = item.get("traceId") or None
    span_id = item.get("spanId") or None
    return LogRecord(
        time=time,
        severity_number=number if isinstance(number, int) and not isinstance(number, bool) else 0,
        severity_text=str(item.get("severityText", "") or ""),
        body=text,
        raw_attributes=item.get("attributes"),
        trace_id=_hex_id(trace_id, 32) if trace_id is not None else None,
        span_id=_hex_id(span_id, 16) if span_id is not None else None,
        resource=resource,
    )


def _items(line: bytes | str, signal: str) -> Iterator[tuple[dict[str, Any], Any]]:
    """(resource, raw item) pairs of one line; raises ValueError/TypeError/AttributeError on a bad shape."""
    outer, inner, leaf = _SIGNALS[signal]
    request = json.loads(line)
    blocks = request[outer]
    if not isinstance(blocks, list):
        raise TypeError(f"{outer} is not a list")
    for block in blocks:
        resource = decode_attributes((block.get("resource") or {}).get("attributes"))
        for scope_block in block.get(inner) or []:
            items = scope_block.get(leaf) or []
            if not isinstance(items, list):
                raise TypeError(f"{leaf} is not a list")
            for item in items:
                if not isinstance(item, dict):
                    raise TypeError(f"a {leaf} item is not an object")
                yield resource, item


_Item = TypeVar("_Item")
_BAD = (ValueError, TypeError, AttributeError, KeyError, RecursionError, OverflowError)


def _parse_line(
    line: bytes | str, signal: str, decode: Callable[[Any, dict[str, Any]], _Item], skipped: Skipped, where: str
) -> list[_Item]:
    out: list[_Item] = []
    try:
        for resource, item in _items(line, signal):
            try:
                out.append(decode(item, resource))
            except _BAD:
                skipped.add(where)
    except _BAD:
        skipped.add(where)
    return out


def parse_span_line(line: bytes | str, skipped: Skipped, where: str = "?") -> list[SpanRecord]:
    """The spans of one spool line; a line or span that does not decode is counted in ``skipped``."""
    return _parse_line(line, "traces", _span, skipped, where)


def parse_log_line(line: bytes | str, skipped: Skipped, where: str = "?") -> list[LogRecord]:
    """The log records of one spool line; what does not decode is counted in ``skipped``."""
    return _parse_line(line, "logs", _log, skipped, where)


def spool_files(directory: Path, signal: str) -> list[Path]:
    """The spool files of one signal (``traces`` or ``logs``), by name."""
    if not directory.is_dir():
        return []
    return sorted(directory.glob(f"{signal}-*.jsonl"))


def iter_complete_lines(handle: Any, start: int, end: int | None = None) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for every newline-terminated line of a binary file from ``start`` (to ``end``).

    A last line without its newline is being written: it is not yielded, and is read on the next call
    (callers resume from the offset after the last line yielded).
    """
    handle.seek(start)
    offset = start
    pending = b""
    while end is None or offset + len(pending) < end:
        want = _CHUNK if end is None else min(_CHUNK, end - offset - len(pending))
        chunk = handle.read(want)
        if not chunk:
            return
        pending += chunk
        lines = pending.split(b"\n")
        pending = lines.pop()
        for line in lines:
            yield offset, line
            offset += len(line) + 1


def iter_spool(
    directory: Path, signal: str, skipped: Skipped | None = None
) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(resource attributes, span-or-log dict)`` for every item of a signal in the spool.

    Malformed lines and items are skipped (counted in ``skipped`` when given); a partial last line is not read.
    """
    counter = skipped if skipped is not None else Skipped()
    for path in spool_files(directory, signal):
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except OSError:
            continue
        with handle:
            for offset, line in iter_complete_lines(handle, 0):
                try:
                    items = list(_items(line, signal))
                except _BAD:
                    counter.add(f"{path.name}:{offset}")
                    continue
                for resource, item in items:
                    yield resource, dict(item)


def read_spool(directory: Path, signal: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """All items of a signal in the spool (see :func:`iter_spool`)."""
    return list(iter_spool(directory, signal))


"""The embedded telemetry default: OTLP-JSON lines in a local spool folder.

Each line is one OTLP/JSON export request (``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``),
the format the Collector's ``otlpjsonfile`` receiver reads, so offline runs can be shipped later. Per the
OTLP/JSON mapping, trace and span ids are lowercase hex (not base64), 64-bit integers are strings and
enums are integers.

Each process writes its own files (``traces-<date>-<pid>-<start>-<n>.jsonl``): lines from different processes
never interleave, and no lock is needed across processes. Files are rotated by day and by size.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SpoolWriter", "encode_logs", "encode_spans", "iter_spool", "read_spool"]

_MAX_FILE_BYTES = 64 * 1024 * 1024


# The encoders build the JSON text directly rather than nested dicts for json.dumps: the spool is the
# default exporter, its worker shares the GIL with the runs, and this is ~3x cheaper per span.
_str = json.encoder.encode_basestring  # C-accelerated JSON string quoting


def _value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return '{"stringValue":' + _str(value) + "}"
    if kind is bool:
        return '{"boolValue":true}' if value else '{"boolValue":false}'
    if kind is int:
        return '{"intValue":"' + str(value) + '"}'
    if kind is float:
        # Protobuf's JSON mapping spells non-finite doubles as strings.
        text = repr(value) if value == value and value not in (float("inf"), float("-inf")) else (
            '"NaN"' if value != value else ('"Infinity"' if value > 0 else '"-Infinity"'))
        return '{"doubleValue":' + text + "}"
    if isinstance(value, str | bool | int | float):  # subclasses (enums...)
        return _value(kind.__mro__[1](value) if kind is not bool else bool(value))
    if value is None:
        return "{}"
    if isinstance(value, bytes):
        import base64

        return '{"bytesValue":"' + base64.b64encode(value).decode("ascii") + '"}'
    if isinstance(value, Mapping):
        return '{"kvlistValue":{"values":' + _attributes(value) + "}}"
    if isinstance(value, Sequence):
        return '{"arrayValue":{"values":[' + ",".join(_value(v) for v in value) + "]}}"
    return '{"stringValue":' + _str(str(value)) + "}"


def _attributes(attrs: Mapping[str, Any] | None) -> str:
    if not attrs:
        return "[]"
    return "[" + ",".join('{"key":' + _str(str(k)) + ',"value":' + _value(v) + "}" for k, v in attrs.items()) + "]"


def _scope(scope: Any) -> str:
    if scope is None:
        return "{}"
    if scope.version:
        return '{"name":' + _str(scope.name) + ',"version":' + _str(scope.version) + "}"
    return '{"name":' + _str(scope.name) + "}"


def _group(items: Sequence[Any], scope_of: Any) -> dict[Any, dict[Any, list[Any]]]:
    grouped: dict[Any, dict[Any, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        grouped[item.resource][scope_of(item)].append(item)
    return grouped


def _span(span: Any) -> str:
    ctx = span.context
    parent = span.parent
    flags = 0x100 | int(ctx.trace_flags) | (0x200 if parent is not None and parent.is_remote else 0)
    status = span.status
    parts = [
        '{"traceId":"', f"{ctx.trace_id:032x}", '","spanId":"', f"{ctx.span_id:016x}", '"',
        ',"parentSpanId":"' + f"{parent.span_id:016x}" + '"' if parent is not None else "",
        ',"traceState":' + _str(ctx.trace_state.to_header()) if ctx.trace_state else "",
        ',"name":', _str(span.name),
        ',"kind":', str(span.kind.value + 1),  # OTLP enums start at SPAN_KIND_UNSPECIFIED = 0
        ',"startTimeUnixNano":"', str(span.start_time), '","endTimeUnixNano":"', str(span.end_time), '"',
        ',"attributes":', _attributes(span.attributes),
        ',"flags":', str(flags),
        ',"status":{"code":', str(status.status_code.value),
        ',"message":' + _str(status.description) if status.description else "", "}",
    ]
    if span.events:
        parts.append(',"events":[')
        parts.append(",".join(
            '{"timeUnixNano":"' + str(e.timestamp) + '","name":' + _str(e.name) + ',"attributes":'
            + _attributes(e.attributes) + "}"
            for e in span.events
        ))
        parts.append("]")
    if span.links:
        parts.append(',"links":[')
        parts.append(",".join(
            '{"traceId":"' + f"{link.context.trace_id:032x}" + '","spanId":"' + f"{link.context.span_id:016x}"
            + '","attributes":' + _attributes(link.attributes) + "}"
            for link in span.links
        ))
        parts.append("]")
    parts.append("}")
    return "".join(parts)


def _request(outer: str, inner: str, leaf: str, items: Sequence[Any], encode: Any) -> str:
    blocks = []
    for resource, by_scope in _group(items, lambda item: item.instrumentation_scope).items():
        scopes = ",".join(
            '{"scope":' + _scope(scope) + ',"' + leaf + '":[' + ",".join(encode(i) for i in scope_items) + "]}"
            for scope, scope_items in by_scope.items()
        )
        resource_attrs = _attributes(resource.attributes if resource is not None else {})
        blocks.append('{"resource":{"attributes":' + resource_attrs + '},"' + inner + '":[' + scopes + "]}")
    return '{"' + outer + '":[' + ",".join(blocks) + "]}"


def encode_spans(spans: Sequence[Any]) -> str:
    """One OTLP/JSON ``ExportTraceServiceRequest`` (a single line of JSON) for SDK ``ReadableSpan`` objects."""
    return _request("resourceSpans", "scopeSpans", "spans", spans, _span)


def _log(data: Any) -> str:
    record = data.log_record
    parts = [
        '{"timeUnixNano":"', str(record.timestamp or record.observed_timestamp or 0),
        '","observedTimeUnixNano":"', str(record.observed_timestamp or 0), '"',
        ',"severityNumber":', str(record.severity_number.value if record.severity_number is not None else 0),
        ',"severityText":' + _str(record.severity_text) if record.severity_text else "",
        ',"body":', _value(record.body),
        ',"attributes":', _attributes(record.attributes),
    ]
    if record.trace_id:
        parts.append(f',"traceId":"{record.trace_id:032x}","spanId":"{record.span_id:016x}"')
        parts.append(',"flags":' + str(int(record.trace_flags or 0)))
    event_name = getattr(record, "event_name", None)
    if event_name:
        parts.append(',"eventName":' + _str(event_name))
    parts.append("}")
    return "".join(parts)


def encode_logs(records: Sequence[Any]) -> str:
    """One OTLP/JSON ``ExportLogsServiceRequest`` (a single line of JSON) for SDK log records."""
    return _request("resourceLogs", "scopeLogs", "logRecords", records, _log)


def _lock_file(handle: Any) -> None:
    try:
        import fcntl

        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):  # pragma: no cover - no flock (Windows) or a filesystem without locks
        pass


class SpoolWriter:
    """Appends one JSON line per export request to this process's own file for a signal.

    File names are ``<signal>-<date>-<pid>-<start>-<part>.jsonl``, where ``<start>`` is unique per process
    start (its start time and random bits), not only per PID: a container restarted as PID 1 after a crash
    must not append to the file its previous life left with a partial last line. If a file does exist
    already, a missing final newline is written first, so a partial line never swallows the next request.
    """

    def __init__(
        self,
        directory: Path,
        signal: str,
        *,
        max_file_bytes: int = _MAX_FILE_BYTES,
        exclusive: bool = False,
        mark_alive: bool = False,
    ) -> None:
        self.directory = directory
        self.signal = signal
        self.max_file_bytes = max_file_bytes
        self.exclusive = exclusive  # hold a flock on the open file (the outage buffer: no one ships it meanwhile)
        # hold this process's liveness lock (the spool: the CLI tells a killed run from a running one)
        self.mark_alive = mark_alive
        self._mark: Any = None
        self.on_rotate: Any = None  # called with the closed file's path when the writer moves to a new file
        self.path: Path | None = None  # the file being written, once opened
        self._lock = threading.Lock()
        self._file: Any = None
        self._key: tuple[str, int] | None = None
        self._part = 0
        self._start = ""

    def _open(self) -> Any:
        today = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d")
        pid = os.getpid()
        if self._file is not None and (self._key != (today, pid) or self._file.tell() > self.max_file_bytes):
            self._file.close()
            self._file = None
            if self.on_rotate is not None and self.path is not None:
                self.on_rotate(self.path)
            self._part = self._part + 1 if self._key == (today, pid) else 0
        if self._file is None:
            if self._key is None or self._key[1] != pid:
                # A new process (first use, or a forked child): a fresh start token.
                self._start = f"{time.time_ns():x}{os.urandom(3).hex()}"
                self._part = 0
                if self.mark_alive:
                    from otelflow._internal.spool.liveness import WriterMark

                    # (a forked child's copy of its parent's mark was closed at fork: liveness' fork hook)
                    self._mark = WriterMark(self.directory, self.signal, pid, self._start)
            self.directory.mkdir(parents=True, exist_ok=True)
            self._key = (today, pid)
            self.path = self.directory / f"{self.signal}-{today}-{pid}-{self._start}-{self._part}.jsonl"
            self._file = open(self.path, "a+b")  # noqa: SIM115 - kept open across exports
            if self.exclusive:
                _lock_file(self._file)
            if self._file.tell() > 0:
                self._file.seek(-1, os.SEEK_END)
                if self._file.read(1) != b"\n":
                    self._file.write(b"\n")
        return self._file

    def write(self, line: str) -> int:
        """Write one encoded request as one line and flush it to the OS (a crash loses at most the open batch).

        Returns the line's size in bytes (newline included).
        """
        data = line.encode("utf-8") + b"\n"
        with self._lock:
            handle = self._open()
            handle.write(data)
            handle.flush()
        return len(data)

    def close(self) -> None:
        """Close the current file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._mark is not None:
                self._mark.close()
                self._mark = None
                self._key = None  # a write after this starts afresh: new files under a new mark


# --- reading: moved to spool_read.py (skips malformed lines, never raises); re-exported for importers ------

from otelflow._internal.spool.reader import decode_attributes, iter_spool, read_spool  # noqa: E402

__all__ += ["decode_attributes"]

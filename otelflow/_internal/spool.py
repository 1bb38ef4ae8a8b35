"""The embedded telemetry default: OTLP-JSON lines in a local spool folder.

Each line is one OTLP/JSON export request (``ExportTraceServiceRequest`` / ``ExportLogsServiceRequest``),
the format the Collector's ``otlpjsonfile`` receiver reads, so offline runs can be shipped later. Per the
OTLP/JSON mapping, trace and span ids are lowercase hex (not base64), 64-bit integers are strings and
enums are integers.

Each process writes its own files (``traces-<date>-<pid>-<n>.jsonl``): lines from different processes
never interleave, and no lock is needed across processes. Files are rotated by day and by size.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["SpoolWriter", "encode_logs", "encode_spans", "iter_spool", "read_spool"]

_MAX_FILE_BYTES = 64 * 1024 * 1024


def _any_value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    if isinstance(value, bytes):
        import base64

        return {"bytesValue": base64.b64encode(value).decode("ascii")}
    if isinstance(value, Sequence):
        return {"arrayValue": {"values": [_any_value(v) for v in value]}}
    if isinstance(value, Mapping):
        return {"kvlistValue": {"values": [{"key": str(k), "value": _any_value(v)} for k, v in value.items()]}}
    if value is None:
        return {}
    return {"stringValue": str(value)}


def _attributes(attrs: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    if not attrs:
        return []
    return [{"key": key, "value": _any_value(value)} for key, value in attrs.items()]


def _scope(scope: Any) -> dict[str, Any]:
    if scope is None:
        return {}
    out: dict[str, Any] = {"name": scope.name}
    if scope.version:
        out["version"] = scope.version
    return out


def _group(items: Sequence[Any], scope_of: Any) -> dict[Any, dict[Any, list[Any]]]:
    grouped: dict[Any, dict[Any, list[Any]]] = defaultdict(lambda: defaultdict(list))
    for item in items:
        grouped[item.resource][scope_of(item)].append(item)
    return grouped


def _span(span: Any) -> dict[str, Any]:
    ctx = span.context
    out: dict[str, Any] = {
        "traceId": f"{ctx.trace_id:032x}",
        "spanId": f"{ctx.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP enums start at SPAN_KIND_UNSPECIFIED = 0
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": _attributes(span.attributes),
        "status": {"code": span.status.status_code.value},
        "flags": 0x100 | int(ctx.trace_flags) | (0x200 if span.parent is not None and span.parent.is_remote else 0),
    }
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if ctx.trace_state:
        out["traceState"] = ctx.trace_state.to_header()
    if span.status.description:
        out["status"]["message"] = span.status.description
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _attributes(e.attributes)}
            for e in span.events
        ]
    if span.links:
        out["links"] = [
            {"traceId": f"{link.context.trace_id:032x}", "spanId": f"{link.context.span_id:016x}",
             "attributes": _attributes(link.attributes)}
            for link in span.links
        ]
    return out


def encode_spans(spans: Sequence[Any]) -> dict[str, Any]:
    """An OTLP/JSON ``ExportTraceServiceRequest`` for SDK ``ReadableSpan`` objects."""
    return {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes(resource.attributes)},
                "scopeSpans": [
                    {"scope": _scope(scope), "spans": [_span(s) for s in scope_spans]}
                    for scope, scope_spans in by_scope.items()
                ],
            }
            for resource, by_scope in _group(spans, lambda s: s.instrumentation_scope).items()
        ]
    }


def _log(data: Any) -> dict[str, Any]:
    record = data.log_record
    out: dict[str, Any] = {
        "timeUnixNano": str(record.timestamp or record.observed_timestamp or 0),
        "observedTimeUnixNano": str(record.observed_timestamp or 0),
        "severityNumber": record.severity_number.value if record.severity_number is not None else 0,
        "body": _any_value(record.body),
        "attributes": _attributes(record.attributes),
    }
    if record.severity_text:
        out["severityText"] = record.severity_text
    if record.trace_id:
        out["traceId"] = f"{record.trace_id:032x}"
        out["spanId"] = f"{record.span_id:016x}"
        out["flags"] = int(record.trace_flags or 0)
    if getattr(record, "event_name", None):
        out["eventName"] = record.event_name
    return out


def encode_logs(records: Sequence[Any]) -> dict[str, Any]:
    """An OTLP/JSON ``ExportLogsServiceRequest`` for SDK ``ReadableLogRecord``/``ReadWriteLogRecord``."""
    return {
        "resourceLogs": [
            {
                "resource": {"attributes": _attributes(resource.attributes if resource else {})},
                "scopeLogs": [
                    {"scope": _scope(scope), "logRecords": [_log(r) for r in scope_records]}
                    for scope, scope_records in by_scope.items()
                ],
            }
            for resource, by_scope in _group(records, lambda r: r.instrumentation_scope).items()
        ]
    }


class SpoolWriter:
    """Appends one JSON line per export request to this process's file for a signal."""

    def __init__(self, directory: Path, signal: str) -> None:
        self.directory = directory
        self.signal = signal
        self._lock = threading.Lock()
        self._file: Any = None
        self._key: tuple[str, int] | None = None
        self._part = 0

    def _open(self) -> Any:
        today = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d")
        pid = os.getpid()
        if self._file is not None and (self._key != (today, pid) or self._file.tell() > _MAX_FILE_BYTES):
            self._file.close()
            self._file = None
            self._part = self._part + 1 if self._key == (today, pid) else 0
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._key = (today, pid)
            path = self.directory / f"{self.signal}-{today}-{pid}-{self._part}.jsonl"
            self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open across exports
        return self._file

    def write(self, request: dict[str, Any]) -> None:
        """Write one request as one line and flush it to the OS (a crash loses at most the open batch)."""
        line = json.dumps(request, separators=(",", ":"), ensure_ascii=False, default=str)
        with self._lock:
            handle = self._open()
            handle.write(line + "\n")
            handle.flush()

    def close(self) -> None:
        """Close the current file."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


# --- reading (for `otelflow runs` / `otelflow show`) --------------------------------------------------


def _decode_value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_decode_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return {kv["key"]: _decode_value(kv.get("value", {})) for kv in value["kvlistValue"].get("values", [])}
    if "bytesValue" in value:
        return value["bytesValue"]
    return None


def decode_attributes(attrs: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """OTLP/JSON ``KeyValue`` list -> plain dict."""
    return {kv["key"]: _decode_value(kv.get("value", {})) for kv in attrs or []}


def iter_spool(directory: Path, signal: str) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """Yield ``(resource attributes, span-or-log dict)`` for every item of a signal in the spool.

    Lines that do not parse (a file being written, a truncated crash) are skipped.
    """
    if not directory.is_dir():
        return
    outer, inner, leaf = (
        ("resourceSpans", "scopeSpans", "spans") if signal == "traces" else ("resourceLogs", "scopeLogs", "logRecords")
    )
    for path in sorted(directory.glob(f"{signal}-*.jsonl")):
        try:
            handle = open(path, encoding="utf-8")  # noqa: SIM115
        except OSError:
            continue
        with handle:
            for line in handle:
                try:
                    request = json.loads(line)
                except ValueError:
                    continue
                for resource_block in request.get(outer, []):
                    resource = decode_attributes(resource_block.get("resource", {}).get("attributes"))
                    for scope_block in resource_block.get(inner, []):
                        for item in scope_block.get(leaf, []):
                            yield resource, item


def read_spool(directory: Path, signal: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """All items of a signal in the spool (see :func:`iter_spool`)."""
    return list(iter_spool(directory, signal))

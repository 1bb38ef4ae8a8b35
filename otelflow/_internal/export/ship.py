"""Shipping OTLP/JSON lines (the spool and outage-buffer format) to a collector.

Each line is one OTLP/JSON export request written by :func:`otelflow._internal.spool.writer.encode_spans` /
:func:`~otelflow._internal.spool.writer.encode_logs`. :func:`decode_spans` / :func:`decode_logs` turn a line back
into the SDK objects the OTLP exporters take (``ReadableSpan``, ``ReadableLogRecord``), so that
``encode(decode(line)) == line``; :func:`ship_directory` sends a folder of such files through an exporter,
oldest first, line by line.

Progress is durable: after each line is delivered, the byte offset of the next one is written (atomically)
to a ``<file>.shipped`` sidecar, so a ship that is interrupted resumes where it stopped and a crash between
a delivery and its bookkeeping resends at most that one line. A file another process holds an exclusive
``flock`` on (a live process's outage buffer, or another ship) is skipped. Malformed lines and a partial
last line (a crashed writer) are skipped and counted, never sent.

Example (what ``otelflow spool ship --endpoint URL`` does)::

    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    result = ship_directory(Path("~/.otelflow/spool").expanduser(), "traces",
                            OTLPSpanExporter(endpoint="http://collector:4318/v1/traces"))
    print(result.items_sent, result.failed)
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

__all__ = [
    "PROGRESS_SUFFIX",
    "ShipResult",
    "decode_line",
    "decode_logs",
    "decode_spans",
    "exporter_callable",
    "iter_lines",
    "read_progress",
    "ship_directory",
    "ship_file",
    "shippable_files",
    "write_progress",
]

PROGRESS_SUFFIX = ".shipped"

_LAYOUT = {
    "traces": ("resourceSpans", "scopeSpans", "spans"),
    "logs": ("resourceLogs", "scopeLogs", "logRecords"),
}


# --- decoding ---------------------------------------------------------------------------------------------


def _value(value: Mapping[str, Any]) -> Any:
    if "stringValue" in value:
        return value["stringValue"]
    if "intValue" in value:
        return int(value["intValue"])
    if "doubleValue" in value:
        return float(value["doubleValue"])  # also "NaN", "Infinity", "-Infinity"
    if "boolValue" in value:
        return bool(value["boolValue"])
    if "arrayValue" in value:
        return [_value(v) for v in value["arrayValue"].get("values", [])]
    if "kvlistValue" in value:
        return _attributes(value["kvlistValue"].get("values"))
    if "bytesValue" in value:
        return base64.b64decode(value["bytesValue"])
    return None


def _attributes(attrs: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {kv["key"]: _value(kv.get("value", {})) for kv in attrs or []}


def _resource(block: Mapping[str, Any]) -> Any:
    from opentelemetry.sdk.resources import Resource

    return Resource(_attributes(block.get("resource", {}).get("attributes")))


def _scope(block: Mapping[str, Any]) -> Any:
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    scope = block.get("scope") or {}
    if not scope:
        return None
    return InstrumentationScope(scope.get("name", ""), scope.get("version") or None)


def _span_context(trace_id: str, span_id: str, flags: int = 0, remote: bool = False, state: str = "") -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    return SpanContext(
        int(trace_id, 16), int(span_id, 16), is_remote=remote, trace_flags=TraceFlags(flags & 0xFF),
        trace_state=TraceState.from_header([state]) if state else None,
    )


def _span(item: Mapping[str, Any], resource: Any, scope: Any) -> Any:
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, SpanKind, Status, StatusCode

    flags = int(item.get("flags", 0))
    trace_id = item["traceId"]
    parent_id = item.get("parentSpanId")
    status = item.get("status") or {}
    code = StatusCode(int(status.get("code", 0)))
    return ReadableSpan(
        name=item.get("name", ""),
        context=_span_context(trace_id, item["spanId"], flags, False, item.get("traceState", "")),
        parent=_span_context(trace_id, parent_id, 0, bool(flags & 0x200)) if parent_id else None,
        resource=resource,
        attributes=_attributes(item.get("attributes")),
        events=[
            Event(e.get("name", ""), _attributes(e.get("attributes")), int(e.get("timeUnixNano", 0)))
            for e in item.get("events", [])
        ],
        links=[
            Link(_span_context(lk["traceId"], lk["spanId"]), _attributes(lk.get("attributes")))
            for lk in item.get("links", [])
        ],
        kind=SpanKind(max(0, int(item.get("kind", 1)) - 1)),
        status=Status(code, status.get("message") if code is StatusCode.ERROR else None),
        start_time=int(item.get("startTimeUnixNano", 0)),
        end_time=int(item.get("endTimeUnixNano", 0)),
        instrumentation_scope=scope,
    )


def _log(item: Mapping[str, Any], resource: Any, scope: Any) -> Any:
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.context import Context
    from opentelemetry.sdk._logs import ReadableLogRecord
    from opentelemetry.trace import TraceFlags

    severity = int(item.get("severityNumber", 0))
    record = LogRecord(
        timestamp=int(item.get("timeUnixNano", 0)),
        observed_timestamp=int(item.get("observedTimeUnixNano", 0)),
        context=Context({"otelflow.ship": True}),  # non-empty: never the shipping thread's current span
        severity_text=item.get("severityText") or None,
        severity_number=SeverityNumber(severity),
        body=_value(item.get("body", {})),
        attributes=_attributes(item.get("attributes")),
        event_name=item.get("eventName") or None,
    )
    if item.get("traceId"):
        record.trace_id = int(item["traceId"], 16)
        record.span_id = int(item.get("spanId") or "0", 16)
        record.trace_flags = TraceFlags(int(item.get("flags", 0)) & 0xFF)
    else:
        record.trace_id, record.span_id, record.trace_flags = 0, 0, TraceFlags(0)
    return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=scope)


def _decode(request: Mapping[str, Any], signal: str) -> list[Any]:
    outer, inner, leaf = _LAYOUT[signal]
    make = _span if signal == "traces" else _log
    items: list[Any] = []
    for resource_block in request.get(outer, []):
        resource = _resource(resource_block)
        for scope_block in resource_block.get(inner, []):
            scope = _scope(scope_block)
            items.extend(make(item, resource, scope) for item in scope_block.get(leaf, []))
    return items


def decode_spans(line: str | bytes) -> list[Any]:
    """SDK ``ReadableSpan`` objects from one OTLP/JSON ``ExportTraceServiceRequest`` line."""
    return _decode(json.loads(line), "traces")


def decode_logs(line: str | bytes) -> list[Any]:
    """SDK ``ReadableLogRecord`` objects from one OTLP/JSON ``ExportLogsServiceRequest`` line."""
    return _decode(json.loads(line), "logs")


def decode_line(line: str | bytes, signal: str) -> list[Any]:
    """:func:`decode_spans` or :func:`decode_logs` for ``signal`` (``traces``/``logs``). Raises on bad input."""
    if signal not in _LAYOUT:
        raise ValueError(f"signal must be 'traces' or 'logs', not {signal!r}")
    return _decode(json.loads(line), signal)


# --- progress and files ----------------------------------------------------------------------------------


def read_progress(path: Path) -> int:
    """Byte offset of the first line of ``path`` not shipped yet (0 when nothing was)."""
    try:
        return max(0, int((path.parent / (path.name + PROGRESS_SUFFIX)).read_text().strip() or 0))
    except (OSError, ValueError):
        return 0


def write_progress(path: Path, offset: int) -> None:
    """Record durably that ``path`` is shipped up to byte ``offset`` (write to a temp file, then rename)."""
    target = path.parent / (path.name + PROGRESS_SUFFIX)
    temp = path.parent / f".{path.name}{PROGRESS_SUFFIX}.{os.getpid()}.tmp"
    with open(temp, "w", encoding="ascii") as handle:
        handle.write(str(offset))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temp, target)


def shippable_files(directory: Path, signal: str) -> list[Path]:
    """The ``<signal>-*.jsonl`` files of a folder, oldest first (by last write, then name)."""
    if not directory.is_dir():
        return []

    def key(path: Path) -> tuple[int, str]:
        try:
            return (path.stat().st_mtime_ns, path.name)
        except OSError:
            return (0, path.name)

    return sorted(directory.glob(f"{signal}-*.jsonl"), key=key)


def iter_lines(path: Path, offset: int) -> Iterator[tuple[int, bytes]]:
    """``(offset after the line, line)`` for each complete line from ``offset`` (a partial last line is not)."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        position = offset
        for line in handle:
            if not line.endswith(b"\n"):
                return  # a partial last line: being written, or left by a crash
            position += len(line)
            yield position, line


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[bool]:
    """An exclusive non-blocking ``flock`` on ``path``: yields False when another process holds it."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no cross-process guard
        yield True
        return
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError:
        yield False
        return
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        yield True
    finally:
        handle.close()


# --- shipping ---------------------------------------------------------------------------------------------


@dataclass
class ShipResult:
    """What a ship did: lines and items delivered, lines skipped as malformed, and whether it stopped early."""

    files: int = 0
    files_completed: list[Path] = field(default_factory=list)
    lines_sent: int = 0
    items_sent: int = 0
    lines_skipped: int = 0
    files_locked: int = 0
    failed: bool = False  # an export failed: shipping stopped there, to resume later from the same line
    error: str | None = None


def exporter_callable(exporter: Any) -> Callable[[Sequence[Any]], bool]:
    """``export(batch) -> bool`` for an SDK exporter (``SpanExporter``/``LogRecordExporter``) or a callable."""
    if not hasattr(exporter, "export"):
        return cast("Callable[[Sequence[Any]], bool]", exporter)

    def export(batch: Sequence[Any]) -> bool:
        return getattr(exporter.export(batch), "name", "") == "SUCCESS"

    return export


def ship_file(
    path: Path,
    signal: str,
    export: Callable[[Sequence[Any]], bool],
    *,
    result: ShipResult | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> ShipResult:
    """Send the unshipped complete lines of one file, in order, recording progress after each line.

    Stops at the first failed export (``result.failed``); the next call resumes from that line. Does not
    lock: callers that may race another process use :func:`ship_directory`.
    """
    result = result if result is not None else ShipResult()
    result.files += 1
    offset = read_progress(path)
    for end, line in iter_lines(path, offset):
        if should_stop():
            return result
        try:
            items = decode_line(line, signal)
        except Exception:
            result.lines_skipped += 1  # malformed: never sendable, never retried
            write_progress(path, end)
            continue
        try:
            ok = bool(export(items)) if items else True
        except Exception as exc:
            ok, result.error = False, f"{type(exc).__name__}: {exc}"
        if not ok:
            result.failed = True
            result.error = result.error or "exporter reported failure"
            return result
        write_progress(path, end)
        result.lines_sent += 1
        result.items_sent += len(items)
    return result


def ship_directory(
    directory: Path,
    signal: str,
    exporter: Any,
    *,
    delete_shipped: bool = False,
    should_stop: Callable[[], bool] = lambda: False,
) -> ShipResult:
    """Send every unshipped line of a folder's ``<signal>-*.jsonl`` files through ``exporter``, oldest first.

    ``exporter`` is an SDK OTLP exporter or an ``export(batch) -> bool`` callable. Files another process holds
    a lock on are skipped (``files_locked``). With ``delete_shipped`` a file (and its progress sidecar) is
    deleted once fully shipped (the outage buffer does this; the spool keeps its files for ``otelflow runs``).
    Stops at the first failed export, leaving the rest for the next call.
    """
    if signal not in _LAYOUT:
        raise ValueError(f"signal must be 'traces' or 'logs', not {signal!r}")
    export = exporter_callable(exporter)
    result = ShipResult()
    for path in shippable_files(directory, signal):
        if should_stop() or result.failed:
            break
        with _locked(path) as mine:
            if not mine:
                result.files_locked += 1
                continue
            ship_file(path, signal, export, result=result, should_stop=should_stop)
            if result.failed or should_stop():
                break
            size = path.stat().st_size
            if read_progress(path) >= size or not _has_complete_line_after(path, read_progress(path)):
                result.files_completed.append(path)
                if delete_shipped:
                    path.unlink(missing_ok=True)
                    (path.parent / (path.name + PROGRESS_SUFFIX)).unlink(missing_ok=True)
    return result


def _has_complete_line_after(path: Path, offset: int) -> bool:
    return any(True for _ in iter_lines(path, offset))

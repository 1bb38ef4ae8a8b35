"""Size limits on what otelflow exports, so that no single record can poison a batch.

A 5 MB exception message used to ride on a span three times (status, ``exception.message``, stack trace);
over gRPC the 15 MB request was rejected (receivers refuse more than 4 MiB) and every span of the batch
was lost with it. Texts are therefore truncated where they are made (:func:`truncate_text`,
:func:`truncate_stacktrace`, the engine and the log handler call them), with a visible
``...[truncated N chars]`` marker, and once more as a last line of defence in the export path
(:func:`shrink`), which also splits batches whose requests would exceed the receiver's limit
(:func:`split_batch`).

Limits come from settings (``OTELFLOW_*``) and honour ``OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

from otelflow._internal.per_settings import PerSettings

__all__ = [
    "Limits",
    "approx_size",
    "get_limits",
    "limits_from_settings",
    "plain_items",
    "shrink",
    "shrinking",
    "split_batch",
    "truncate_stacktrace",
    "truncate_text",
    "truncate_value",
]

_DEFAULT_ATTRIBUTE_LENGTH = 16_384
_MAX_ITEMS = 1_000  # elements of one sequence/mapping attribute value kept by truncate_value
_MAX_DEPTH = 8


def _marker(cut: int) -> str:
    return f"...[truncated {cut} chars]"


def truncate_text(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, ending with a visible ``...[truncated N chars]`` marker.

    Example::

        >>> truncate_text("E" * 100, 40)
        'EEEEEEEEEEEEEEEEE...[truncated 83 chars]'
    """
    if len(text) <= limit:
        return text
    if limit < 32:
        return text[:max(0, limit)]  # no room for a marker
    keep = limit - len(_marker(len(text)))
    return text[:keep] + _marker(len(text) - keep)


def truncate_stacktrace(text: str, limit: int) -> str:
    """A stack trace cut to at most ``limit`` characters, keeping its head and its tail (where the error is)."""
    if len(text) <= limit:
        return text
    if limit < 64:
        return truncate_text(text, limit)
    marker_len = len(f"\n...[truncated {len(text)} chars]...\n")
    room = limit - marker_len
    head, tail = room // 2, room - room // 2
    return f"{text[:head]}\n...[truncated {len(text) - head - tail} chars]...\n{text[len(text) - tail:]}"


@dataclass(frozen=True, slots=True)
class Limits:
    """Exported size limits: characters for texts, bytes for one export request."""

    attribute_value: int = _DEFAULT_ATTRIBUTE_LENGTH
    exception_message: int = 8192
    stacktrace: int = 32_768
    log_body: int = 32_768
    max_request_bytes: int = 4 * 1024 * 1024


def limits_from_settings(settings: Any) -> Limits:
    """The :class:`Limits` for a :class:`otelflow.settings.Settings` object (and ``OTEL_*`` variables)."""
    attribute = settings.attribute_value_max_length
    if attribute is None:
        try:
            attribute = int(os.environ.get("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "").strip() or 0) or None
        except ValueError:
            attribute = None
    return Limits(
        attribute_value=attribute or _DEFAULT_ATTRIBUTE_LENGTH,
        exception_message=settings.exception_message_max_length,
        stacktrace=settings.stacktrace_max_length,
        log_body=settings.logging_max_message_length,
        max_request_bytes=settings.export_max_request_bytes,
    )


_limits = PerSettings(limits_from_settings)


def get_limits() -> Limits:
    """The configured limits (re-read when settings are reset)."""
    return _limits()


def truncate_value(value: Any, limit: int, depth: int = 0) -> Any:
    """An attribute value with every string longer than ``limit`` truncated (and huge containers cut)."""
    kind = type(value)
    if kind is str:
        return value if len(value) <= limit else truncate_text(value, limit)
    if kind in (int, float, bool) or value is None:
        return value
    if isinstance(value, bytes):
        return value if len(value) <= limit else value[:limit]
    if isinstance(value, str):
        return value if len(value) <= limit else truncate_text(str(value), limit)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        items = list(value.items())[:_MAX_ITEMS]
        return {k: truncate_value(v, limit, depth + 1) for k, v in items}
    if isinstance(value, Sequence):
        return tuple(truncate_value(v, limit, depth + 1) for v in list(value[:_MAX_ITEMS]))
    return value


# --- the export path -------------------------------------------------------------------------------------


def _size(value: Any, depth: int = 0) -> int:
    kind = type(value)
    if kind is str:
        return len(value) if value.isascii() else 4 * len(value)
    if kind in (int, float, bool) or value is None:
        return 10
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, str):
        return 4 * len(value)
    if depth < _MAX_DEPTH and isinstance(value, Mapping):
        return sum(_size(k) + _size(v, depth + 1) + 8 for k, v in value.items())
    if depth < _MAX_DEPTH and isinstance(value, Sequence):
        return sum(_size(v, depth + 1) + 4 for v in value)
    return 64


def plain_items(attrs: Mapping[str, Any]) -> Iterable[tuple[str, Any]]:
    """``attrs.items()``, from the plain dict inside the SDK's ``BoundedAttributes`` when it has one: its mapping
    interface goes through ``collections.abc`` one key at a time (half the export thread's time went there)."""
    if type(attrs) is dict:
        return attrs.items()
    if type(attrs) is MappingProxyType:
        # A ReadableSpan's attributes: a read-only view of a BoundedAttributes, whose public copy() is a copy of
        # that plain dict (C speed, where reading through the view goes to Python one key at a time).
        try:
            copied = attrs.copy()
        except AttributeError:  # a view of a mapping with no copy()
            copied = None
        if type(copied) is dict:
            return copied.items()
        return attrs.items()
    inner = getattr(attrs, "_dict", None)
    return inner.items() if type(inner) is dict else attrs.items()


def _attrs_size(attrs: Mapping[str, Any] | None) -> int:
    return sum(len(k) + _size(v) + 8 for k, v in plain_items(attrs)) if attrs else 0


def approx_size(item: Any) -> int:
    """An upper estimate of ``item``'s encoded OTLP size in bytes (a ``ReadableSpan`` or an SDK log record).

    Cheap (no encoding): strings count one byte per character when ASCII, four otherwise.
    """
    record = getattr(item, "log_record", None)
    if record is not None:
        return 160 + _size(record.body) + _attrs_size(record.attributes) + _size(record.severity_text or "")
    size = 200 + len(item.name) + _attrs_size(item.attributes)
    status = item.status
    if status is not None and status.description:
        size += _size(status.description)
    for event in item.events:
        size += 40 + len(event.name) + _attrs_size(event.attributes)
    for link in item.links:
        size += 60 + _attrs_size(link.attributes)
    return size


def _shrink_attrs(attrs: Mapping[str, Any] | None, limits: Limits, factor: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (attrs or {}).items():
        if key == "exception.stacktrace" and isinstance(value, str):
            out[key] = truncate_stacktrace(value, max(64, limits.stacktrace // factor))
        elif key == "exception.message" and isinstance(value, str):
            out[key] = truncate_text(value, max(32, limits.exception_message // factor))
        else:
            out[key] = truncate_value(value, max(32, limits.attribute_value // factor))
    return out


def _rebuilt(item: Any, name: Callable[[str], str], message: Callable[[str], str], body: Callable[[Any], Any],
             attrs: Callable[[Mapping[str, Any] | None], dict[str, Any]]) -> Any:
    """``item`` (span or log record) with its texts passed through the functions: the span's and its events' names
    (``name``), its status message (``message``), a record's body (``body``), every attribute mapping (``attrs``).

    A span is copied; a log record is changed in place (it is ours: built for this export; rebuilding SDK
    internals would be worse)."""
    record = getattr(item, "log_record", None)
    if record is not None:
        record.body = body(record.body)
        record.attributes = attrs(record.attributes)
        return item
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, Status

    status = item.status
    if status is not None and status.description:
        description = message(status.description)
        if description != status.description:
            status = Status(status.status_code, description)
    return ReadableSpan(
        name=name(item.name),
        context=item.context,
        parent=item.parent,
        resource=item.resource,
        attributes=attrs(item.attributes),
        events=[Event(name(e.name), attrs(e.attributes), e.timestamp) for e in item.events],
        links=[Link(link.context, attrs(link.attributes)) for link in item.links],
        kind=item.kind,
        status=status,
        start_time=item.start_time,
        end_time=item.end_time,
        instrumentation_scope=item.instrumentation_scope,
    )


def shrink(item: Any, limits: Limits, factor: int = 1) -> Any:
    """A copy of ``item`` (span or log record) with every text cut to the limits divided by ``factor``.

    The export path's last line of defence: spans from application code, or texts nobody truncated.
    """
    name_limit = max(32, limits.attribute_value // factor)
    message_limit = max(32, limits.exception_message // factor)

    def body(value: Any) -> Any:
        if isinstance(value, str):
            return truncate_text(value, max(32, limits.log_body // factor))
        return None if value is None else truncate_value(value, name_limit)

    return _rebuilt(item, lambda text: truncate_text(text, name_limit),
                    lambda text: text if len(text) <= message_limit else truncate_text(text, message_limit),
                    body, lambda attrs: _shrink_attrs(attrs, limits, factor))


def _well_formed(text: str) -> str:
    """``text`` with each lone surrogate (``os.fsdecode`` of a name that is not UTF-8, a bad ``\\ud800`` escape)
    replaced by U+FFFD: the one kind of ``str`` UTF-8, hence protobuf, cannot carry."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    return text


def _well_formed_value(value: Any, depth: int = 0) -> Any:
    if isinstance(value, str):
        return _well_formed(str(value))
    if depth < _MAX_DEPTH and isinstance(value, Mapping):
        return {_well_formed(str(k)): _well_formed_value(v, depth + 1) for k, v in value.items()}
    if depth < _MAX_DEPTH and isinstance(value, Sequence) and not isinstance(value, bytes | bytearray):
        return tuple(_well_formed_value(v, depth + 1) for v in value)
    return value


def without_lone_surrogates(item: Any) -> Any:
    """``item`` (span or log record) with every lone surrogate in its texts replaced by U+FFFD.

    For the OTLP exporter, whose protobuf encoding refuses such a text (``UnicodeEncodeError``): one bad name in
    an attribute would otherwise take the whole request down. The spool keeps them exactly (as JSON escapes).
    """
    def attrs(mapping: Mapping[str, Any] | None) -> dict[str, Any]:
        return cast("dict[str, Any]", _well_formed_value(mapping or {}))  # a mapping comes back a dict

    return _rebuilt(item, _well_formed, _well_formed, _well_formed_value, attrs)


def shrinking(item: Any, limits: Limits) -> Iterator[Any]:
    """``item``, then ever smaller copies of it, each the last one :func:`shrink`-ed again (factor 1, 4, 16... up to
    1024): the caller takes the first that fits its request, else the last. The one rule for an item too big."""
    yield item
    factor = 1
    while factor <= 1024:
        item = shrink(item, limits, factor)
        yield item
        factor *= 4


def split_batch(items: Sequence[Any], limits: Limits) -> list[list[Any]]:
    """``items`` as consecutive batches whose requests stay under ``limits.max_request_bytes``.

    An item too big on its own is shrunk (:func:`shrink`) until it fits: one huge record is truncated, never
    allowed to take its neighbours down with it.
    """
    budget = limits.max_request_bytes * 3 // 4  # headroom for resource/scope blocks and estimate error
    item_budget = budget // 2
    batches: list[list[Any]] = []
    current: list[Any] = []
    used = 0
    for given in items:
        for item in shrinking(given, limits):
            size = approx_size(item)
            if size <= item_budget:
                break
        if current and used + size > budget:
            batches.append(current)
            current, used = [], 0
        current.append(item)
        used += size
    if current:
        batches.append(current)
    return batches

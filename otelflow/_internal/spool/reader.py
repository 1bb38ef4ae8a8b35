"""Reading the spool: OTLP/JSON lines back into plain records, never trusting a line.

Spool files are appended to by live processes and may hold anything a crash, a disk error or another
writer left behind: a partial last line, invalid UTF-8, JSON of the wrong shape, non-numeric times.
Readers here skip such a line (or item), count it in a :class:`Skipped`, and carry on; the CLI turns
the count into one warning. Nothing here raises on file contents. Decoding is the codec's
(:mod:`otelflow._internal.spool.otlp_json`); this module finds the lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from otelflow._internal.spool import otlp_json
from otelflow._internal.spool.otlp_json import (
    BAD_LINE,
    LogRecord,
    SpanRecord,
    decode_attributes,
    log_record,
    span_record,
)

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

_CHUNK = 1 << 20


class Skipped:
    """Counts malformed lines and damaged items met while reading, remembering where the first one was.

    An item met twice in one command (indexed, then read back for ``show``) is counted once: items are told
    apart by ``where`` and their rank in the line (up to ``_REMEMBERED`` of them; past that, every report counts).
    """

    def __init__(self) -> None:
        self.count = 0
        self.first: str | None = None
        self._seen: set[tuple[str, int]] = set()

    def add(self, where: str, item: int = -1) -> None:
        """Count one malformed line (``item`` -1) or item (its rank in the line) found at ``where``
        (``file:offset``)."""
        key = (where, item)
        if key in self._seen:
            return
        if len(self._seen) < _REMEMBERED:
            self._seen.add(key)
        self.count += 1
        if self.first is None:
            self.first = where

    def reset(self) -> None:
        """Forget what was counted (once reported)."""
        self.count, self.first = 0, None
        self._seen.clear()

    def first_location(self) -> tuple[str, int] | None:
        """``(file name, byte offset)`` of the first one, when ``where`` was ``file:offset``."""
        if self.first is None:
            return None
        name, _, offset = self.first.rpartition(":")
        return (name, int(offset)) if name and offset.isdigit() else None


_REMEMBERED = 100_000
_Item = TypeVar("_Item", SpanRecord, LogRecord)


def _decode_span(item: Any, resource: dict[str, Any], skipped: Skipped, where: str, rank: int) -> SpanRecord:
    return span_record(item, resource)


def _parse_line(
    line: bytes | str, signal: str, decode: Callable[[Any, dict[str, Any], Skipped, str, int], _Item],
    skipped: Skipped, where: str, damaged: list[int] | None = None,
) -> list[_Item]:
    out: list[_Item] = []
    resources: dict[int, dict[str, Any]] = {}

    def bad(rank: int) -> None:
        skipped.add(where, rank)
        if damaged is not None:
            damaged.append(rank)

    try:
        for n, (block, _scope, item) in enumerate(otlp_json.iter_items(line, signal)):
            resource = resources.get(id(block))
            if resource is None:
                resource, wrong = otlp_json.checked_resource_attributes(block)
                resources[id(block)] = resource
                if wrong:
                    bad(n)
            try:
                record = decode(item, resource, skipped, where, n)
            except BAD_LINE:
                bad(n)
                continue
            if record.damaged:
                bad(n)
            out.append(record)
    except BAD_LINE:
        bad(-1)
    return out


def parse_span_line(
    line: bytes | str, skipped: Skipped, where: str = "?", damaged: list[int] | None = None
) -> list[SpanRecord]:
    """The spans of one spool line; a line or span that does not decode (or is damaged) is counted in ``skipped``
    (and its rank in the line, -1 for the line, added to ``damaged`` when given)."""
    return _parse_line(line, "traces", _decode_span, skipped, where, damaged)


def parse_log_line(line: bytes | str, skipped: Skipped, where: str = "?") -> list[LogRecord]:
    """The log records of one spool line; what does not decode is counted in ``skipped``.

    A record's attributes are decoded when first used; damage found then is counted in ``skipped`` then.
    """
    return _parse_line(line, "logs", log_record, skipped, where)


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
                    items = [(otlp_json.resource_attributes(block), item)
                             for block, _scope, item in otlp_json.iter_items(line, signal)]
                except BAD_LINE:
                    counter.add(f"{path.name}:{offset}")
                    continue
                for resource, item in items:
                    yield resource, dict(item)


def read_spool(directory: Path, signal: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """All items of a signal in the spool (see :func:`iter_spool`)."""
    return list(iter_spool(directory, signal))


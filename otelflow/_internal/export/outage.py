"""The outage buffer: export batches the collector could not take, kept on disk until it can.

Batches are written as OTLP/JSON lines (the spool format: :mod:`otelflow._internal.spool.otlp_json`, written
whole or not at all by :mod:`otelflow._internal.spool.writer`) to this process's own files under
``$OTELFLOW_HOME/buffer``, held under an exclusive ``flock`` while the process lives. The export worker re-sends
them oldest first (:meth:`OutageBuffer.peek` / :meth:`OutageBuffer.commit`) when the collector answers again;
progress goes to the same ``.shipped`` sidecars :mod:`otelflow._internal.export.ship` uses, so what this process
leaves behind is re-sent by the next process that exports over OTLP (or by ``otelflow spool ship``), from where
this one stopped.

The buffer is bounded (``OTELFLOW_BUFFER_MAX_BYTES``): beyond it the oldest lines are dropped and counted.
Re-sending joins consecutive lines into one request (up to a batch's items and ``resend_bytes``): an outage of
a slow flow leaves a line per worker wake-up, often of one span, and re-sending those one request each could
not finish before the process exited.
Its methods hold one lock: the export worker calls it, and so does a child process's producer, which writes
each item through to disk (see :meth:`~otelflow._internal.export.pipeline.BatchProcessor.emit`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from otelflow._internal.export import ship
from otelflow._internal.spool.otlp_json import decode_line
from otelflow._internal.spool.writer import SpoolWriter

__all__ = ["OutageBuffer"]

_FILE_BYTES = 16 * 1024 * 1024
# Lines joined into one re-send request at most (OTLP/JSON bytes, larger than the protobuf sent): half the
# receivers' 4 MiB default. A request still refused as too large is halved by the processor.
_RESEND_BYTES = 2 * 1024 * 1024


_F = TypeVar("_F", bound=Callable[..., Any])


def _locked(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(self: OutageBuffer, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return cast(_F, wrapper)


@dataclass(slots=True)
class _Line:
    path: Path
    start: int
    end: int
    count: int


class OutageBuffer:
    """A bounded FIFO of encoded batches on disk, for one signal of one process."""

    def __init__(
        self,
        directory: Path,
        signal: str,
        encode: Callable[[Sequence[Any]], str],
        *,
        max_bytes: int,
        file_bytes: int = _FILE_BYTES,
        resend_bytes: int = _RESEND_BYTES,
    ) -> None:
        self.directory = directory
        self.signal = signal
        self.max_bytes = max_bytes
        self.resend_bytes = resend_bytes
        self._encode = encode
        self._lock = threading.RLock()
        self._writer = SpoolWriter(directory, signal, max_file_bytes=file_bytes, exclusive=True)
        self._writer.on_rotate = self._rotated
        self._lines: collections.deque[_Line] = collections.deque()
        self._closed_files: set[Path] = set()
        self.pending_items = 0
        self.pending_bytes = 0
        self._peeked = 0  # the oldest lines being re-sent (the last peek's), still on disk
        self.joined = 0  # how many lines the last peek joined
        self._joined_bytes = 0
        self.inflight_dropped = 0  # items of those lines dropped meanwhile to stay in bounds (see commit)

    @property
    def empty(self) -> bool:
        """True when nothing is waiting on disk."""
        return not self._lines

    @_locked
    def append(self, batch: Sequence[Any], in_flight: bool = False) -> int:
        """Write one batch as one line; returns how many older items were dropped to stay in bounds.

        ``in_flight``: the lines last peeked are being re-sent right now (see :meth:`commit`).
        """
        data = self._encode(batch)
        size = self._writer.write(data)
        path = self._writer.path
        assert path is not None
        end = self._writer.end
        self._lines.append(_Line(path, end - size, end, len(batch)))
        self.pending_items += len(batch)
        self.pending_bytes += size
        dropped = 0
        # Progress is one offset per file, so lines go oldest first. The oldest may be being re-sent right now
        # (``in_flight``): they are dropped all the same, and ``inflight_dropped`` says how many of their items.
        while self.pending_bytes > self.max_bytes and len(self._lines) > 1:
            line = self._lines[0]
            self._pop(line)
            dropped += line.count
            if in_flight and self._peeked:
                self._peeked -= 1
                self.inflight_dropped += line.count
        return dropped

    @_locked
    def in_flight_is_newest(self) -> None:
        """The line just appended is being sent right now (a live batch parked on disk while in flight)."""
        self._peeked, self.inflight_dropped = 1, 0

    @_locked
    def peek(self, max_items: int = 1) -> tuple[list[Any] | None, int, str | None]:
        """The oldest batches on disk, decoded and joined (``None`` when empty); unreadable lines are skipped.

        Joins whole consecutive lines while they hold at most ``max_items`` items and ``resend_bytes`` bytes
        (always at least one line). Also returns how many items the skipped lines held (gone: the caller counts
        them as dropped) and the first one's error.
        """
        self._peeked = self.inflight_dropped = self.joined = 0
        skipped, error = 0, None
        items: list[Any] = []
        size = 0
        with contextlib.ExitStack() as files:
            handles: dict[Path, Any] = {}
            while self._peeked < len(self._lines):
                line = self._lines[self._peeked]
                length = line.end - line.start
                if self._peeked and (len(items) + line.count > max_items or size + length > self.resend_bytes):
                    break
                try:
                    handle = handles.get(line.path)
                    if handle is None:
                        handle = handles[line.path] = files.enter_context(open(line.path, "rb"))
                    handle.seek(line.start)
                    decoded = decode_line(handle.read(length), self.signal)
                except Exception as exc:
                    if self._peeked:
                        break  # skipped once it is the oldest: progress is one offset per file, oldest first
                    self._pop(line)
                    skipped += line.count
                    error = error or f"{type(exc).__name__}: {exc}"
                    continue
                items.extend(decoded)
                size += length
                self._peeked += 1
        self.joined, self._joined_bytes = self._peeked, size
        return (items if self._peeked else None), skipped, error

    @_locked
    def join_less(self) -> None:
        """The receiver refused the joined lines as too large: join at most half as many bytes from now on."""
        self.resend_bytes = max(1, self._joined_bytes // 2)

    @_locked
    def commit(self) -> int:
        """The batches last peeked were delivered: forget them (on disk too). Returns their item count on disk.

        Lines among them dropped meanwhile to stay in bounds are gone already (``inflight_dropped``).
        """
        delivered = 0
        last: _Line | None = None
        while self._peeked and self._lines:
            line = self._lines[0]
            if last is not None and line.path != last.path:
                self._advance(last)  # a file finished within this commit
            self._take(line)
            delivered += line.count
            last = line
            self._peeked -= 1
        if last is not None:
            self._advance(last)  # one progress write per file, not per line
        self._peeked = self.inflight_dropped = 0
        return delivered

    def _pop(self, line: _Line) -> None:
        self._take(line)
        self._advance(line)

    def _take(self, line: _Line) -> None:
        self._lines.popleft()
        self.pending_items -= line.count
        self.pending_bytes -= line.end - line.start

    def _advance(self, line: _Line) -> None:
        """Record that ``line.path`` is consumed up to ``line.end``; delete a finished, closed file."""
        # A file's lines are consecutive (written in order, oldest first): it has lines left iff the head is one.
        if line.path in self._closed_files and not (self._lines and self._lines[0].path == line.path):
            self._delete(line.path)
            return
        with contextlib.suppress(OSError):  # worst case the next process re-sends this line
            ship.write_progress(line.path, line.end)

    def _rotated(self, path: Path) -> None:
        self._closed_files.add(path)
        if not any(x.path == path for x in self._lines):
            self._delete(path)

    def _delete(self, path: Path) -> None:
        self._closed_files.discard(path)
        path.unlink(missing_ok=True)
        (path.parent / (path.name + ship.PROGRESS_SUFFIX)).unlink(missing_ok=True)

    def after_fork(self) -> None:
        """In a forked child: the parent's lines and file are the parent's; start empty, in a file of our own."""
        self._lock = threading.RLock()  # the parent's worker may have held it at the fork
        self._writer.forget_after_fork()
        self._lines.clear()
        self._closed_files.clear()
        self.pending_items = self.pending_bytes = 0
        self._peeked = self.inflight_dropped = 0

    @_locked
    def close(self) -> None:
        """Close the file; delete it if everything in it was delivered (the rest stays for the next process)."""
        current = self._writer.path
        self._writer.close()
        if current is not None:
            self._rotated(current)

    @property
    def location(self) -> Path:
        """The folder the buffer writes to."""
        return self.directory

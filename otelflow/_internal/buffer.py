"""The outage buffer: export batches the collector could not take, kept on disk until it can.

Batches are written as OTLP/JSON lines (the spool format, :mod:`otelflow._internal.spool`) to this process's
own files under ``$OTELFLOW_HOME/buffer``, held under an exclusive ``flock`` while the process lives. The
export worker re-sends them oldest first (:meth:`OutageBuffer.peek` / :meth:`OutageBuffer.commit`) when the
collector answers again; progress goes to the same ``.shipped`` sidecars :mod:`otelflow._internal.ship`
uses, so what this process leaves behind is re-sent by the next process that exports over OTLP (or by
``otelflow spool ship``), from where this one stopped.

The buffer is bounded (``OTELFLOW_BUFFER_MAX_BYTES``): beyond it the oldest lines are dropped and counted.
Only the export worker thread calls it; it is not thread-safe and needs not be.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otelflow._internal import ship
from otelflow._internal.spool import SpoolWriter

__all__ = ["OutageBuffer"]

_FILE_BYTES = 16 * 1024 * 1024


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
    ) -> None:
        self.directory = directory
        self.signal = signal
        self.max_bytes = max_bytes
        self._encode = encode
        self._writer = SpoolWriter(directory, signal, max_file_bytes=file_bytes, exclusive=True)
        self._writer.on_rotate = self._rotated
        self._lines: collections.deque[_Line] = collections.deque()
        self._closed_files: set[Path] = set()
        self.pending_items = 0
        self.pending_bytes = 0
        self.head_dropped = False  # the line being re-sent was dropped meanwhile (see commit)

    @property
    def empty(self) -> bool:
        """True when nothing is waiting on disk."""
        return not self._lines

    def append(self, batch: Sequence[Any], in_flight: bool = False) -> int:
        """Write one batch as one line; returns how many older items were dropped to stay in bounds.

        ``in_flight``: the oldest line is being re-sent right now and must not be dropped.
        """
        data = self._encode(batch)
        size = self._writer.write(data)
        path = self._writer.path
        assert path is not None
        end = path.stat().st_size
        self._lines.append(_Line(path, end - size, end, len(batch)))
        self.pending_items += len(batch)
        self.pending_bytes += size
        dropped = 0
        # Progress is one offset per file, so lines go oldest first. The oldest may be being re-sent right now
        # (``in_flight``): it is dropped all the same, and :meth:`commit` then reports that it was.
        while self.pending_bytes > self.max_bytes and len(self._lines) > 1:
            line = self._lines[0]
            self._pop(line)
            dropped += line.count
            if in_flight:
                self.head_dropped = True
                in_flight = False
        return dropped

    def peek(self) -> tuple[list[Any] | None, int, str | None]:
        """The oldest batch on disk, decoded (``None`` when empty); lines that cannot be read back are skipped.

        Also returns how many items the skipped lines held (gone: the caller counts them as dropped) and the
        first one's error.
        """
        self.head_dropped = False
        skipped, error = 0, None
        while self._lines:
            line = self._lines[0]
            try:
                with open(line.path, "rb") as handle:
                    handle.seek(line.start)
                    raw = handle.read(line.end - line.start)
                return ship.decode_line(raw, self.signal), skipped, error
            except Exception as exc:
                self._pop(line)
                skipped += line.count
                error = error or f"{type(exc).__name__}: {exc}"
        return None, skipped, error

    def commit(self) -> int:
        """The batch last peeked was delivered: forget it (durably). Returns its item count.

        Returns 0 when that line had already been dropped to stay in bounds (``head_dropped``).
        """
        if self.head_dropped:
            self.head_dropped = False
            return 0
        if not self._lines:
            return 0
        line = self._lines[0]
        self._pop(line)
        return line.count

    def _pop(self, line: _Line) -> None:
        self._lines.popleft()
        self.pending_items -= line.count
        self.pending_bytes -= line.end - line.start
        self._advance(line)

    def _advance(self, line: _Line) -> None:
        """Record that ``line.path`` is consumed up to ``line.end``; delete a finished, closed file."""
        if line.path in self._closed_files and not any(x.path == line.path for x in self._lines):
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
        writer = self._writer
        if writer._file is not None:
            with contextlib.suppress(Exception):
                writer._file.close()  # this process's descriptor only: the parent keeps its file and lock
        writer._file = None
        writer._key = None
        writer.path = None
        self._lines.clear()
        self._closed_files.clear()
        self.pending_items = self.pending_bytes = 0
        self.head_dropped = False

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

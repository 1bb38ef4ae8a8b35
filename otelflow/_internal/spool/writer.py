"""Appending OTLP/JSON lines to this process's own files: the spool, and the outage buffer.

Each line is one export request encoded by :mod:`otelflow._internal.spool.otlp_json`. Each process writes its
own files (``traces-<date>-<pid>-<start>-<n>.jsonl``): lines from different processes never interleave, and no
lock is needed across processes. Files are rotated by day and by size, created ``0600`` in ``0700`` folders.

**A line is on disk whole or not at all.** Writes go through a raw descriptor (no user-space buffer that could
keep half a line to write later). When a write fails part-way (a full disk, an I/O error), the file is cut back
to where the line began before the error is raised; if even that fails, the file is left as it is (its partial
last line is what a crashed writer leaves, which every reader skips) and the next line starts a new file. So
no later line is ever appended to half of an earlier one, and a reader never sees a half line as a line.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from otelflow._internal.spool.files import open_private, private_dir
from otelflow._internal.spool.otlp_json import line_bytes

__all__ = ["SpoolWriter"]

_MAX_FILE_BYTES = 64 * 1024 * 1024


def _lock_file(fd: int) -> None:
    try:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (ImportError, OSError):  # pragma: no cover - no flock (Windows) or a filesystem without locks
        pass


def _cut_partial_tail(fd: int, size: int) -> int:
    """Cut a partial last line (a crashed writer's) off an existing file; returns the new size."""
    if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
        return size
    start = max(0, size - 65536)
    while True:
        chunk = os.pread(fd, size - start, start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            new_size = start + cut + 1
            break
        if start == 0:
            new_size = 0
            break
        start = max(0, start - 65536)
    os.ftruncate(fd, new_size)
    return new_size


class SpoolWriter:
    """Appends one JSON line per export request to this process's own file for a signal.

    File names are ``<signal>-<date>-<pid>-<start>-<part>.jsonl``, where ``<start>`` is unique per process
    start (its start time and random bits), not only per PID: a container restarted as PID 1 after a crash
    must not append to the file its previous life left with a partial last line.
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
        # called with a file's path when the writer leaves it for good (rotated, or abandoned after a failure)
        self.on_rotate: Callable[[Path], None] | None = None
        self.path: Path | None = None  # the file being written, once opened
        self._lock = threading.Lock()
        self._owner = os.getpid()  # a forked child makes its own lock: the parent's may have been held at the fork
        self._fd: int | None = None
        self._size = 0  # where the next line begins: the end of the last whole line
        self._key: tuple[str, int] | None = None
        self._part = 0
        self._start = ""

    def _leave(self) -> None:
        """Close the current file for good; the next write opens the next part."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
        if self.on_rotate is not None and self.path is not None:
            self.on_rotate(self.path)
        self._part += 1

    def _open(self) -> int:
        today = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d")
        pid = os.getpid()
        if self._fd is not None and (self._key != (today, pid) or self._size > self.max_file_bytes):
            self._leave()
            if self._key != (today, pid):
                self._part = 0
        if self._fd is None:
            if self._key is None or self._key[1] != pid:
                # A new process (first use, or a forked child): a fresh start token.
                self._start = f"{time.time_ns():x}{os.urandom(3).hex()}"
                self._part = 0
                if self.mark_alive:
                    from otelflow._internal.spool.liveness import WriterMark

                    # (a forked child's copy of its parent's mark was closed at fork: liveness' fork hook)
                    self._mark = WriterMark(self.directory, self.signal, pid, self._start)
            private_dir(self.directory)
            self._key = (today, pid)
            path = self.directory / f"{self.signal}-{today}-{pid}-{self._start}-{self._part}.jsonl"
            fd = open_private(path, os.O_RDWR | os.O_APPEND)
            try:
                if self.exclusive:
                    _lock_file(fd)
                self._size = _cut_partial_tail(fd, os.fstat(fd).st_size)
            except OSError:
                os.close(fd)
                raise
            self._fd, self.path = fd, path
        return self._fd

    def write(self, line: str) -> int:
        """Append one encoded request as one line, whole or not at all; returns its size in bytes.

        Raises OSError (nothing of the line is left in the file) when the disk refuses it.
        """
        data = line_bytes(line) + b"\n"
        if self._owner != os.getpid():
            self.forget_after_fork()
        with self._lock:
            fd = self._open()
            start = self._size
            view = memoryview(data)
            try:
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            except OSError:
                try:
                    os.ftruncate(fd, start)
                except OSError:
                    self._leave()  # cannot cut it: no later line may follow the partial one in this file
                raise
            self._size = start + len(data)
        return len(data)

    @property
    def end(self) -> int:
        """The size of the current file: where the last line written ends."""
        return self._size

    def forget_after_fork(self) -> None:
        """In a forked child: drop the parent's file (its descriptor copy only); the next write opens our own.

        Also a new lock: a thread of the parent may have held the old one at the fork, and no thread of this
        process would ever release it.
        """
        self._lock = threading.Lock()
        self._owner = os.getpid()
        with contextlib.suppress(OSError):
            if self._fd is not None:
                os.close(self._fd)  # the parent's flock stays: it is held by the parent's descriptor too
        self._fd = None
        self._key = None
        self.path = None

    def close(self) -> None:
        """Close the current file."""
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            if self._mark is not None:
                self._mark.close()
                self._mark = None
                self._key = None  # a write after this starts afresh: new files under a new mark

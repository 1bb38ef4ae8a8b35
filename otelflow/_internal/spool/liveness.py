"""Is the process that wrote a spool file still alive? (So the CLI can tell a running run from a killed one.)

A run known only by its pending record is in flight, or its process died before it could end the run's span:
SIGKILL, the OOM killer, a power cut. To tell the two apart, each process writing the spool holds an exclusive
``flock`` on a small lock file for as long as it lives, ``<spool>/.alive/<signal>-<pid>-<start>.lock``, named
after its spool files (``<signal>-<date>-<pid>-<start>-<part>.jsonl``). The kernel releases the lock when the
process ends, however it ends; a lock file nobody holds means its writer is gone. A PID that is reused, or a
writer in another PID namespace (a container sharing the spool volume), does not fool it.

The lock file is kept after the process ends (that is the evidence); ``otelflow spool prune`` deletes it with
the last spool file of its process. A spool file with no lock file (written by an older otelflow, or on a
platform without ``flock``) says nothing: its runs stay ``Running``.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from pathlib import Path

from otelflow._internal.spool.files import open_private, private_dir

__all__ = ["ALIVE_DIR", "WriterMark", "lock_path_for", "orphaned_locks", "writer_gone_at"]

ALIVE_DIR = ".alive"

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock, so no liveness (runs stay Running)
    fcntl = None  # type: ignore[assignment]

_marks: weakref.WeakSet[WriterMark] = weakref.WeakSet()


def lock_path_for(spool: Path, data_file: str) -> Path | None:
    """The lock file of the process that wrote ``data_file`` (a spool file name), or None for another name."""
    if not data_file.endswith(".jsonl"):
        return None
    parts = data_file[: -len(".jsonl")].split("-")
    if len(parts) != 5:
        return None
    signal, _, pid, start, _ = parts
    return spool / ALIVE_DIR / f"{signal}-{pid}-{start}.lock"


class WriterMark:
    """The lock a spool-writing process holds while it lives.

    Made by :class:`~otelflow._internal.spool.writer.SpoolWriter` before its first line, so a record is never on
    disk before its writer's mark.
    """

    def __init__(self, spool: Path, signal: str, pid: int, start: str) -> None:
        self.path = spool / ALIVE_DIR / f"{signal}-{pid}-{start}.lock"
        self._fd: int | None = None
        if fcntl is None:
            return
        try:
            private_dir(self.path.parent)
            fd = open_private(self.path, os.O_RDWR)
        except OSError:
            return  # no mark: this process's runs stay Running if it dies, as before
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return
        self._fd = fd
        _marks.add(self)

    def close(self) -> None:
        """Let go of the lock (the process is ending its writing; the file stays as the evidence)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


def _after_fork_in_child() -> None:
    # A forked child inherits the descriptors, and with them its parent's locks: close the child's copies, so the
    # parent's runs do not look alive for as long as the child lives.
    for mark in list(_marks):
        mark.close()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def writer_gone_at(spool: Path, data_file: str) -> int | None:
    """When the process that wrote ``data_file`` last wrote to it (ns), if that process is gone; else None.

    None also when it cannot be told (no lock file, no ``flock``): the caller keeps the run ``Running``.
    """
    lock = lock_path_for(spool, data_file)
    if lock is None or _held(lock) is not False:
        return None
    try:
        return (spool / data_file).stat().st_mtime_ns
    except OSError:
        return None


def _held(lock: Path) -> bool | None:
    """Whether a live process holds ``lock``; None when that cannot be told (no such file, no ``flock``)."""
    if fcntl is None:
        return None
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # also lets go of the shared lock just taken
    return False


def orphaned_locks(spool: Path) -> list[Path]:
    """Lock files whose process is gone and whose spool files are all deleted (``spool prune`` removes them)."""
    folder = spool / ALIVE_DIR
    if fcntl is None or not folder.is_dir():
        return []
    keys = set()
    for data in spool.glob("*.jsonl"):
        lock = lock_path_for(spool, data.name)
        if lock is not None:
            keys.add(lock.name)
    # Held: a live process that has not written a line yet, or whose files were pruned under it.
    return [lock for lock in sorted(folder.glob("*.lock")) if lock.name not in keys and _held(lock) is False]

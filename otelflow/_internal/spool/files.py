"""Owner-only folders and files under the otelflow home.

The spool, the outage buffer, the store and persisted results hold run logs, parameters, run input and
results: whatever the umask, otelflow creates its folders ``0700`` and its files ``0600``, and tightens a
folder of its own that an earlier version (or a ``mkdir -p``) left readable by others.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

__all__ = ["open_private", "private_dir"]

_DIR_MODE = 0o700
_FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create ``path`` (and its missing parents) owner-only; tighten it if it is ours and open to others.

    Parents that exist already are left alone (they may be the user's home or ``/tmp``); parents created here
    are ``0700`` too, unlike ``Path.mkdir(parents=True)``, which gives them the umask's mode.
    """
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(folder, _DIR_MODE)
    _tighten(path, _DIR_MODE)
    return path


def _tighten(path: Path, mode: int) -> None:
    """``chmod`` ``path`` to ``mode`` if this user owns it and others can read or write it (never raises)."""
    with contextlib.suppress(OSError):
        info = os.stat(path)
        if info.st_uid == os.getuid() and stat.S_IMODE(info.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(info.st_mode) & ~0o077)


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with ``O_CREAT`` and mode ``0600``: a raw descriptor, no user-space buffer.

    A descriptor, not a buffered file object, so that a failed write leaves nothing queued in memory to be
    written later behind the writer's back (see :class:`~otelflow._internal.spool.writer.LineFile`).
    """
    fd = os.open(path, flags | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), _FILE_MODE)
    with contextlib.suppress(OSError):
        if stat.S_IMODE(os.fstat(fd).st_mode) & 0o077:
            os.fchmod(fd, _FILE_MODE)
    return fd

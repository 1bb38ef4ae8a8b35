"""Shipping OTLP/JSON lines (the spool and outage-buffer format) to a collector.

Each line is one OTLP/JSON export request (the codec: :mod:`otelflow._internal.spool.otlp_json`, which turns a
line back into the SDK objects the OTLP exporters take, so that ``encode(decode(line)) == line``).
:func:`ship_directory` sends a folder of such files through an exporter (or the OTLP stage), oldest first,
line by line.

Progress is recorded at once: after each line is delivered, the byte offset of the next one is written
(atomically: a temp file renamed) to a ``<file>.shipped`` sidecar, so a ship that is interrupted resumes where it
stopped. No fsync: a process killed after the write has it on disk all the same, and the write is quick, which
keeps the window between a delivery and its record (where a kill means that line is sent again) small; a machine
crash can lose the latest record, and then lines are sent again, never lost. A file another process holds an exclusive
``flock`` on (a live process's outage buffer, or another ship) is skipped. A partial last line (a crashed
writer) is never read; a line that does not decode is never sent, counted, and keeps its file from deletion
(it is renamed ``.damaged``). Recording progress on a full disk stops the ship with a clean error.

Example (what ``otelflow spool ship --endpoint URL`` does)::

    from otelflow._internal.export.otlp import OtlpSender
    result = ship_directory(Path("~/.otelflow/spool").expanduser(), "traces",
                            OtlpSender("traces", "http", endpoint="http://collector:4318/v1/traces"))
    print(result.items_sent, result.failed)
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from otelflow._internal.spool.files import open_private
from otelflow._internal.spool.otlp_json import BAD_LINE, LAYOUT, decode_line

__all__ = [
    "PROGRESS_SUFFIX",
    "ShipResult",
    "exporter_callable",
    "iter_lines",
    "read_progress",
    "ship_directory",
    "ship_file",
    "shippable_files",
    "write_progress",
]

PROGRESS_SUFFIX = ".shipped"
# A fully shipped file that held lines no one could read keeps them, renamed out of the ``*.jsonl`` pattern.
DAMAGED_SUFFIX = ".damaged"


# --- progress and files ----------------------------------------------------------------------------------


def _progress_path(path: Path) -> Path:
    return path.parent / (path.name + PROGRESS_SUFFIX)


def read_progress(path: Path) -> int:
    """Byte offset of the first line of ``path`` not shipped yet (0 when nothing was)."""
    return _read_sidecar(path)[0]


def _read_sidecar(path: Path) -> tuple[int, int]:
    """(offset shipped up to, lines skipped as unreadable so far) from the sidecar; (0, 0) without one."""
    try:
        fields = _progress_path(path).read_text().split()
        offset = max(0, int(fields[0])) if fields else 0
        skipped = max(0, int(fields[1])) if len(fields) > 1 else 0
    except (OSError, ValueError):
        return 0, 0
    return offset, skipped


def write_progress(path: Path, offset: int, skipped: int = 0) -> None:
    """Record that ``path`` is shipped up to byte ``offset`` (write to a temp file, then rename; see the module).

    ``skipped``: lines of the file found unreadable so far (a file that had some is kept, see
    :func:`ship_directory`). Raises OSError (a full or read-only disk) with nothing left behind.
    """
    target = _progress_path(path)
    temp = path.parent / f".{path.name}{PROGRESS_SUFFIX}.{os.getpid()}.tmp"
    try:
        fd = open_private(temp, os.O_WRONLY | os.O_TRUNC)
        try:
            data = (f"{offset} {skipped}" if skipped else str(offset)).encode("ascii")
            if os.write(fd, data) != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        finally:
            os.close(fd)
        os.replace(temp, target)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise


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
    """What a ship did: lines and items delivered, lines skipped as unreadable, and whether it stopped early."""

    files: int = 0
    files_completed: list[Path] = field(default_factory=list)
    lines_sent: int = 0
    items_sent: int = 0
    lines_skipped: int = 0
    files_locked: int = 0
    # Fully shipped files that held unreadable lines: kept (renamed ``*.jsonl.damaged``), never deleted.
    files_damaged: list[Path] = field(default_factory=list)
    failed: bool = False  # an export (or recording progress) failed: stopped there, to resume from that line
    error: str | None = None


def exporter_callable(exporter: Any) -> Callable[[Sequence[Any]], bool]:
    """``export(batch) -> bool`` for an SDK exporter (``SpanExporter``/``LogRecordExporter``) or a callable."""
    if not hasattr(exporter, "export"):
        return cast("Callable[[Sequence[Any]], bool]", exporter)

    def export(batch: Sequence[Any]) -> bool:
        result = exporter.export(batch)
        return result if isinstance(result, bool) else getattr(result, "name", "") == "SUCCESS"

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

    Stops at the first failed export, or when progress cannot be recorded (``result.failed``, ``result.error``);
    the next call resumes from that line (a line delivered whose progress could not be written is sent again:
    at least once, never lost). An unreadable line is never sent; it is counted, in the result and in the
    file's progress, so that the file is kept. Does not lock: callers that may race another process use
    :func:`ship_directory`.
    """
    result = result if result is not None else ShipResult()
    result.files += 1
    offset, skipped = _read_sidecar(path)
    for end, line in iter_lines(path, offset):
        if should_stop():
            return result
        try:
            items = decode_line(line, signal)
        except BAD_LINE:
            result.lines_skipped += 1
            skipped += 1
            if not _record(path, end, skipped, result):
                return result
            continue
        try:
            ok = bool(export(items)) if items else True
        except Exception as exc:  # an ExportError says why in its cause; anything else by its name
            ok, result.error = False, getattr(exc, "cause", None) or f"{type(exc).__name__}: {exc}"
        if not ok:
            result.failed = True
            result.error = result.error or "exporter reported failure"
            return result
        result.lines_sent += 1
        result.items_sent += len(items)
        if not _record(path, end, skipped, result):
            return result
    return result


def _record(path: Path, offset: int, skipped: int, result: ShipResult) -> bool:
    try:
        write_progress(path, offset, skipped)
    except OSError as exc:
        result.failed = True
        result.error = f"could not record progress next to {path.name}: {exc.strerror or exc}"
        return False
    return True


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
    deleted once every line of it was delivered (the outage buffer does this; the spool keeps its files for
    ``otelflow runs``); one that held unreadable lines is kept, renamed ``<name>.damaged``
    (``files_damaged``). Stops at the first failure, leaving the rest for the next call.
    """
    if signal not in LAYOUT:
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
            offset, skipped = _read_sidecar(path)
            if _has_complete_line_after(path, offset):
                continue
            result.files_completed.append(path)
            if delete_shipped:
                _retire(path, skipped, result)
    return result


def _retire(path: Path, skipped: int, result: ShipResult) -> None:
    """A file fully shipped: delete it, or keep it as ``.damaged`` if some of its lines could not be read."""
    try:
        if skipped:
            damaged = path.parent / (path.name + DAMAGED_SUFFIX)
            os.replace(path, damaged)
            result.files_damaged.append(damaged)
        else:
            path.unlink(missing_ok=True)
        _progress_path(path).unlink(missing_ok=True)
    except OSError as exc:  # left as it is: the next ship finds it complete and tries again
        result.error = result.error or f"could not remove {path.name}: {exc.strerror or exc}"


def _has_complete_line_after(path: Path, offset: int) -> bool:
    return any(True for _ in iter_lines(path, offset))

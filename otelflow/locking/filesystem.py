"""Prefect's ``FileSystemLockManager``: locks in a sqlite store in ``lock_files_directory``."""

from __future__ import annotations

import os
from pathlib import Path

from otelflow._internal.spool.files import private_dir
from otelflow.locking.store import StoreLockManager

__all__ = ["FileSystemLockManager"]


class FileSystemLockManager(StoreLockManager):
    """Locks in ``<lock_files_directory>/locks.sqlite3`` (created owner-only), shared by the machine's processes."""

    def __init__(self, lock_files_directory: str | os.PathLike[str]) -> None:
        directory = Path(lock_files_directory).expanduser().absolute()
        private_dir(directory)
        self.lock_files_directory = directory
        super().__init__("sqlite:///" + str(directory / "locks.sqlite3"))

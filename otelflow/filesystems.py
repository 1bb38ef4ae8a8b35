"""Where persisted results live: :class:`LocalFileSystem` (a folder, the default) or a :class:`StoreFileSystem`.

Prefect's ``prefect.filesystems.LocalFileSystem`` under the same name and with the same ``basepath`` field,
so ``@task(result_storage=LocalFileSystem(basepath="/data/results"))`` carries over unchanged. otelflow has
no block documents (no API server): a path (``result_storage="/data/results"``) works too, and a store URL
(``result_storage="redis://cache:6379/0"``) keeps results in an :mod:`otelflow.stores` store, shared by
every machine that reaches it.

Results are the user's data, and the default serializer is ``pickle``: loading a pickle runs code. So a
local result folder is created readable by its owner only (``0700``, files ``0600``), and a folder or file
that another user owns or can write to is refused with :class:`UnsafeResultStorage` instead of being read.

Example::

    from otelflow.filesystems import LocalFileSystem

    storage = LocalFileSystem(basepath="/tmp/results")
    storage.write_path("answer", b"42")
    assert storage.read_path("answer") == b"42"
"""

from __future__ import annotations

import abc
import base64
import contextlib
import os
import stat
import tempfile
import threading
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, PrivateAttr

from otelflow._internal.spool.files import private_dir

__all__ = ["LocalFileSystem", "ReadableFileSystem", "StoreFileSystem", "UnsafeResultStorage",
           "WritableFileSystem"]


class UnsafeResultStorage(PermissionError):
    """A result folder or file that another user owns or can write to: otelflow will not read or write it."""


class ReadableFileSystem(BaseModel, abc.ABC):
    """Something results can be read from by key."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    @abc.abstractmethod
    def read_path(self, path: str) -> bytes:
        """The bytes stored under ``path``; ``FileNotFoundError`` when there are none."""


class WritableFileSystem(ReadableFileSystem, abc.ABC):
    """Something results can be written to and deleted from by key."""

    @abc.abstractmethod
    def write_path(self, path: str, content: bytes) -> str:
        """Store ``content`` under ``path`` (replacing it atomically); return where it went."""

    @abc.abstractmethod
    def delete_path(self, path: str) -> bool:
        """Delete ``path``; True when it existed."""

    @property
    @abc.abstractmethod
    def location(self) -> str:
        """Where this storage is, for messages, telemetry and ``otelflow cache``: a folder or a redacted URL."""

    def resolve_key(self, key: str) -> str:
        """The full storage key of ``key`` (an absolute path for a folder)."""
        return key


def _check_private(path: Path, what: str) -> os.stat_result:
    """Refuse ``path`` unless this user owns it and nobody else can write to it."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        info = path.stat()
    uid = os.getuid() if hasattr(os, "getuid") else info.st_uid
    if info.st_uid != uid or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise UnsafeResultStorage(
            f"Refusing to use {what} {str(path)!r}: it is owned by uid {info.st_uid} or writable by other users "
            f"(mode {stat.filemode(info.st_mode)}), so a stored result there could have been planted. Use a folder "
            "only you can write to (chmod go-w), or another result_storage."
        )
    return info


_ensure_lock = threading.Lock()
_BLOCKS_NAMESPACE = "blocks"
_BLOCK_TYPE = "local-file-system"
_private_folders: set[str] = set()  # result folders found private (owned by this user, written by nobody else)


class LocalFileSystem(WritableFileSystem):
    """Results as files in a folder (``basepath``; default: ``OTELFLOW_RESULTS_LOCAL_STORAGE_PATH``)."""

    basepath: str | None = None
    _checked: bool = PrivateAttr(default=False)
    _resolved: Path | None = PrivateAttr(default=None)  # the absolute basepath, made once

    def save(self, name: str, overwrite: bool = False) -> str:
        """Keep this storage under ``name`` in the otelflow store, so that ``result_storage="local-file-system/name"``
        (Prefect's block slug) finds it in any process sharing the store. Returns the slug."""
        import json

        from otelflow.stores import get_store

        if not isinstance(name, str) or not name:
            raise ValueError(f"A block name must be a non-empty string, got {name!r}.")
        value = json.dumps({"basepath": self.basepath})
        if not get_store().put(_BLOCKS_NAMESPACE, f"{_BLOCK_TYPE}/{name}", value, if_absent=not overwrite,
                               notify=False):
            raise ValueError(
                "You are attempting to save values with a name that is already in use for this block type. If you "
                "would like to overwrite the values that are saved, then save with `overwrite=True`."
            )
        return f"{_BLOCK_TYPE}/{name}"

    @classmethod
    def load(cls, name: str) -> LocalFileSystem:
        """The storage saved under ``name`` (or ``"local-file-system/name"``) with :meth:`save`."""
        import json

        from otelflow.stores import get_store

        slug = name if name.startswith(f"{_BLOCK_TYPE}/") else f"{_BLOCK_TYPE}/{name}"
        text = get_store().get(_BLOCKS_NAMESPACE, slug)
        if text is None:
            raise ValueError(f"Unable to find block document named {slug.split('/', 1)[1]} for block type "
                             f"{_BLOCK_TYPE}")
        data = json.loads(text)
        return cls(basepath=data.get("basepath") if isinstance(data, dict) else None)

    def _base(self) -> Path:
        if self.basepath is None:
            from otelflow.settings import get_current_settings

            return get_current_settings().results_storage_path.expanduser().absolute()
        base = self._resolved
        if base is None:
            base = self._resolved = Path(self.basepath).expanduser().absolute()
        return base

    @property
    def location(self) -> str:
        """The folder."""
        return str(self._base())

    def _resolve_path(self, path: str) -> Path:
        base = self._base()
        target = Path(path).expanduser()
        target = target if target.is_absolute() else base / target
        return target

    def resolve_key(self, key: str) -> str:
        """The absolute file path of ``key``."""
        return str(self._resolve_path(key))

    def _ensure_base(self) -> None:
        if self._checked:
            return
        with _ensure_lock:
            base = self._base()
            if not base.exists():
                private_dir(base)
            _check_private(base, "result folder")
            self._checked = True

    def read_path(self, path: str) -> bytes:
        """The file's bytes; ``FileNotFoundError`` when missing, :class:`UnsafeResultStorage` when unsafe."""
        # Strings, not Paths: a cache hit reads one file, and building Paths cost more than the read.
        target = path if path.startswith(os.sep) else str(self._resolve_path(path))
        with open(target, "rb") as handle:
            parent = os.path.dirname(target)
            if parent not in _private_folders:  # checked once per process: only its owner could change it after
                _check_private(Path(parent), "result folder")
                _private_folders.add(parent)
            info = os.fstat(handle.fileno())
            uid = os.getuid() if hasattr(os, "getuid") else info.st_uid
            if info.st_uid != uid or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
                raise UnsafeResultStorage(
                    f"Refusing to read result file {target!r}: it is owned by uid {info.st_uid} or writable by "
                    f"other users (mode {stat.filemode(info.st_mode)})."
                )
            return handle.read()

    def write_path(self, path: str, content: bytes) -> str:
        """Write the file atomically (a private temporary file renamed into place); return its path."""
        self._ensure_base()
        target = self._resolve_path(path)
        parent = target.parent
        if not parent.exists():
            private_dir(parent)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=parent)  # created 0600
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(content)
            # No fsync (it cost ~4 ms a result): a crash can at worst leave a damaged or empty record, which a lookup
            # treats as a miss (computed again), never as a value; the rename is still atomic for other readers.
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return str(target)

    def delete_path(self, path: str) -> bool:
        """Delete the file; True when it existed."""
        try:
            self._resolve_path(path).unlink()
        except FileNotFoundError:
            return False
        return True


class StoreFileSystem(WritableFileSystem):
    """Results kept in an :mod:`otelflow.stores` store (``sqlite:///...``, ``redis://...``), base64 in JSON."""

    url: str
    namespace: str = "results"

    def _store(self) -> Any:
        from otelflow.stores import get_store

        return get_store(self.url)

    @property
    def location(self) -> str:
        """The store URL, password redacted."""
        from otelflow.stores import redact_url

        return redact_url(self.url)

    def read_path(self, path: str) -> bytes:
        """The stored bytes; ``FileNotFoundError`` when there are none."""
        import json

        text = self._store().get(self.namespace, path)
        if text is None:
            raise FileNotFoundError(f"No result {path!r} in {self.location}")
        return base64.b64decode(json.loads(text))

    def write_path(self, path: str, content: bytes) -> str:
        """Store the bytes under ``path``."""
        import json

        self._store().put(self.namespace, path, json.dumps(base64.b64encode(content).decode()), notify=False)
        return path

    def delete_path(self, path: str) -> bool:
        """Delete the stored bytes."""
        return bool(self._store().delete(self.namespace, path))


_BLOCK_SLUG_PREFIXES = ("s3-bucket/", "gcs-bucket/", "azure-blob-storage/",
                        "remote-file-system/", "smb/", "github-repository/")


def is_block_slug(value: Any) -> bool:
    """True for ``"local-file-system/<name>"``: a saved storage, looked up when a run first needs it (as in Prefect,
    it may be saved after the task is defined)."""
    return isinstance(value, str) and value.startswith(f"{_BLOCK_TYPE}/")


def resolve_result_storage(value: Any) -> WritableFileSystem:
    """A ``result_storage`` option as storage: a :class:`WritableFileSystem`, a folder path, or a store URL.

    Prefect's block slugs (``"s3-bucket/my-results"``) name documents on a Prefect server; otelflow has none,
    so they are refused with a message saying what to pass instead.
    """
    if isinstance(value, WritableFileSystem):
        return value
    if isinstance(value, os.PathLike):
        return LocalFileSystem(basepath=os.fspath(value))
    if isinstance(value, str) and value:
        if value.startswith(f"{_BLOCK_TYPE}/"):
            return LocalFileSystem.load(value)
        if value.startswith(_BLOCK_SLUG_PREFIXES):
            raise ValueError(
                f"result_storage={value!r} names a Prefect block document of a type otelflow does not have (it keeps "
                "local-file-system blocks saved with LocalFileSystem.save(), no others). Pass "
                "LocalFileSystem(basepath=...), a folder path, or a store URL (sqlite:///..., redis://...)."
            )
        if "://" in value:
            if value.startswith("file://"):
                return LocalFileSystem(basepath=value[len("file://"):])
            from otelflow.stores import StoreError, get_store

            try:
                get_store(value)
            except StoreError as exc:
                raise ValueError(f"result_storage: {exc}") from None
            return StoreFileSystem(url=value)
        return LocalFileSystem(basepath=value)
    raise TypeError(
        f"result_storage must be a LocalFileSystem, a folder path or a store URL, got {type(value).__name__}."
    )

"""Persisted results and the task cache: Prefect 3's ``ResultRecord`` / ``ResultStore``, on otelflow's stores.

What a Prefect user writes works unchanged::

    from datetime import timedelta
    from otelflow import flow, task
    from otelflow.cache_policies import INPUTS, TASK_SOURCE

    @task(cache_policy=INPUTS + TASK_SOURCE, cache_expiration=timedelta(hours=1))
    def extract(url: str) -> bytes: ...

    @flow(persist_result=True)
    def pipeline(url: str) -> int:
        return len(extract(url))   # a second run within the hour: extract is Cached, not called

How it is kept:

- **The result** is a Prefect-shaped ``ResultRecord`` (JSON: ``metadata`` + the serialized ``result``) written
  to the run's result storage: a private folder (default ``$OTELFLOW_HOME/storage``, files named by the cache
  key, as Prefect's ``~/.prefect/storage``), another folder, or a store URL.
- **The cache entry** -- key, task, storage, serializer, expiration, when and by which run -- is one JSON value
  in namespace ``cache`` of the :mod:`otelflow.stores` store (the sqlite file on one machine, Redis for
  many). A lookup is one store read; ``otelflow cache ls|inspect|clear`` reads and deletes these entries.
- **Locks**: a cache policy configured with ``isolation_level="SERIALIZABLE"`` holds a leased store lock on its
  key from the lookup to the write, so two processes computing the same key at once compute it once.

A cache entry whose result cannot be read back (deleted, damaged, unpicklable) is a miss: the task runs again,
a warning says why, and the new result replaces it. ``state.result()`` of a run whose stored result is gone
raises :class:`~otelflow.exceptions.MissingResult` -- never a wrong value.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import json
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_serializer, field_validator

from otelflow._version import __version__
from otelflow.exceptions import MissingResult, SerializationError
from otelflow.filesystems import (
    LocalFileSystem,
    StoreFileSystem,
    WritableFileSystem,
    resolve_result_storage,
)
from otelflow.serializers import Serializer, resolve_serializer

if TYPE_CHECKING:
    from otelflow.stores import Store

__all__ = [
    "CacheEntry",
    "ResultRecord",
    "ResultRecordMetadata",
    "ResultStore",
    "delete_cache_entry",
    "get_default_result_storage",
    "get_result_store",
    "index_key",
    "list_cache_entries",
    "read_cache_entry",
    "resolve_result_storage",
    "resolve_serializer",
    "should_persist_result",
]

R = TypeVar("R")

#: The store namespace of cache entries.
CACHE_NAMESPACE = "cache"
_ENTRY_VERSION = 1
_log = logging.getLogger("otelflow.results")


def _serializer_from(value: Any) -> Serializer:
    if isinstance(value, Serializer):
        return value
    if isinstance(value, dict) and isinstance(value.get("type"), str):
        return _serializer_of_type(value)
    return resolve_serializer(value)


def _serializer_of_type(data: dict[str, Any]) -> Serializer:
    wanted = data["type"]
    stack: list[type[Serializer]] = [Serializer]
    while stack:
        cls = stack.pop()
        field = cls.model_fields.get("type")
        if field is not None and field.default == wanted and cls is not Serializer:
            return cls.model_validate(data)
        stack.extend(cls.__subclasses__())
    raise ValueError(f"Unknown serializer type {wanted!r} in a stored result record.")


class ResultRecordMetadata(BaseModel):
    """Where a persisted result is and how to read it: Prefect's record metadata."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    storage_key: str | None = None
    expiration: datetime.datetime | None = None
    serializer: Serializer = Field(default_factory=lambda: resolve_serializer("pickle"))
    otelflow_version: str = __version__
    #: Where the result was written (a folder or a redacted store URL); otelflow's addition.
    storage: str | None = None

    @field_validator("serializer", mode="before")
    @classmethod
    def _serializer(cls, value: Any) -> Serializer:
        return _serializer_from(value)

    @field_serializer("serializer")
    def _dump_serializer(self, value: Serializer) -> dict[str, Any]:
        return value.model_dump(mode="json", serialize_as_any=True)

    def dump_bytes(self) -> bytes:
        """The metadata as JSON bytes."""
        return self.model_dump_json().encode()

    @classmethod
    def load_bytes(cls, data: bytes) -> ResultRecordMetadata:
        """Metadata from :meth:`dump_bytes` output."""
        return cls.model_validate_json(data)

    def _storage(self) -> WritableFileSystem:
        if self.storage is not None and "://" in self.storage and not self.storage.startswith("file://"):
            return StoreFileSystem(url=self.storage)
        if self.storage_key is not None and os.path.isabs(self.storage_key):
            return LocalFileSystem(basepath=os.path.dirname(self.storage_key))
        return get_default_result_storage()

    def load(self) -> ResultRecord[Any]:
        """Read the record this metadata points to; :class:`MissingResult` when it is gone or unreadable."""
        if self.storage_key is None:
            raise MissingResult("The result record has no storage key: it was never persisted.")
        try:
            content = self._storage().read_path(self.storage_key)
            try:
                return ResultRecord.deserialize(content)
            except ValueError:  # a flow's result: the serializer's bytes alone (Prefect's layout)
                record: ResultRecord[Any] = ResultRecord.model_construct(
                    metadata=self, result=self.serializer.loads(content))
                record.mark_persisted()
                return record
        except Exception as exc:
            raise MissingResult(
                f"The persisted result {self.storage_key!r} could not be read: {type(exc).__name__}: {exc}"
            ) from exc


class ResultRecord(BaseModel, Generic[R]):
    """A run's return value and its metadata; ``state.data`` of a persisted run (as in Prefect)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    metadata: ResultRecordMetadata
    result: R
    _persisted: bool = PrivateAttr(default=False)

    @property
    def is_persisted(self) -> bool:
        """True once written to (or read from) storage."""
        return self._persisted

    def mark_persisted(self) -> None:
        """Note that the record is in storage."""
        self._persisted = True

    @property
    def expiration(self) -> datetime.datetime | None:
        """When a cached copy of this result stops being used."""
        return self.metadata.expiration

    @property
    def serializer(self) -> Serializer:
        """How the result is serialized."""
        return self.metadata.serializer

    def serialize_result(self) -> bytes:
        """The result through its serializer; Prefect's :class:`SerializationError` when it cannot be."""
        try:
            return self.serializer.dumps(self.result)
        except Exception as exc:
            raise SerializationError(
                f"Failed to serialize object of type {type(self.result).__name__!r} with serializer "
                f"{self.serializer.type!r}. You can try a different serializer (e.g. result_serializer=\"json\") "
                "or disabling persistence (persist_result=False) for this flow or task."
            ) from exc

    def serialize(self) -> bytes:
        """The whole record as JSON bytes (Prefect's file format: ``{"metadata": ..., "result": ...}``)."""
        payload = self.serialize_result()
        # Every serializer's output is text (base64 for pickles, JSON for json), kept as a JSON string as in Prefect.
        return json.dumps(
            {"metadata": json.loads(self.metadata.dump_bytes()), "result": payload.decode("utf-8")},
            separators=(",", ":"),
        ).encode()

    @classmethod
    def deserialize(cls, data: bytes) -> ResultRecord[Any]:
        """A record from :meth:`serialize` output."""
        raw = json.loads(data)
        if not isinstance(raw, dict) or "metadata" not in raw or "result" not in raw:
            raise ValueError("not a result record (expected an object with 'metadata' and 'result')")
        metadata = _metadata_from(raw["metadata"])
        payload = raw["result"]
        blob = payload.encode("utf-8") if isinstance(payload, str) else json.dumps(payload).encode()
        record: ResultRecord[Any] = cls.model_construct(metadata=metadata, result=metadata.serializer.loads(blob))
        record.mark_persisted()
        return record

    def __reduce__(self) -> Any:
        return (_rebuild_record, (self.metadata.dump_bytes(), self.result, self._persisted))


_METADATA_FIELDS = frozenset(ResultRecordMetadata.model_fields)
_serializers: dict[Any, Serializer] = {}  # a serializer's settings -> the serializer (a handful per process)


def _metadata_from(data: Any) -> ResultRecordMetadata:
    """Record metadata from its JSON dict. The usual shape is checked by hand and its serializer reused (a cache hit
    reads one record; pydantic's validation of it costs more than reading the file); anything else is validated."""
    if type(data) is dict and data.keys() <= _METADATA_FIELDS:
        key, expiration, serializer = data.get("storage_key"), data.get("expiration"), data.get("serializer")
        if (type(key) is str and (expiration is None or type(expiration) is str) and type(serializer) is dict
                and type(data.get("storage")) in (str, type(None)) and type(data.get("otelflow_version", "")) is str):
            try:
                memo: Any = tuple(sorted(serializer.items()))
                resolved = _serializers.get(memo)
            except TypeError:  # unhashable settings (a dict of options): no memo
                memo, resolved = None, None
            if resolved is None:
                resolved = _serializer_from(serializer)
                if memo is not None:
                    _serializers[memo] = resolved
            fields = dict(data, serializer=resolved)
            if expiration is not None:
                parsed = datetime.datetime.fromisoformat(expiration)
                fields["expiration"] = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)
            return ResultRecordMetadata.model_construct(**fields)
    return ResultRecordMetadata.model_validate(data)


def _rebuild_record(metadata: bytes, result: Any, persisted: bool) -> ResultRecord[Any]:
    record: ResultRecord[Any] = ResultRecord.model_construct(
        metadata=ResultRecordMetadata.load_bytes(metadata), result=result)
    if persisted:
        record.mark_persisted()
    return record


from otelflow import states as _states  # noqa: E402 - registers the record types with State.result()

_states._RESULT_TYPES = (ResultRecord, ResultRecordMetadata)


# --- defaults -----------------------------------------------------------------------------------------------


def get_default_result_storage() -> WritableFileSystem:
    """The storage of runs that name none: the folder ``OTELFLOW_RESULTS_LOCAL_STORAGE_PATH``
    (default ``$OTELFLOW_HOME/storage``)."""
    from otelflow.settings import get_current_settings

    path = str(get_current_settings().results_storage_path.expanduser().absolute())
    storage = _default_storages.get(path)
    if storage is None:
        storage = _default_storages[path] = LocalFileSystem(basepath=path)
    return storage


_default_storages: dict[str, WritableFileSystem] = {}


def _flow_persist(ctx: Any) -> bool:
    """A flow run's persist_result (decided when it started), or the setting outside a flow run."""
    flow_run = getattr(ctx, "flow_run", None) if ctx is not None else None
    if flow_run is not None:
        return bool(flow_run.persist_result)
    from otelflow.settings import get_current_settings

    return get_current_settings().results_persist_by_default


def should_persist_result() -> bool:
    """Whether results are persisted here: the current task's choice, else its flow's, else
    ``OTELFLOW_RESULTS_PERSIST_BY_DEFAULT`` (Prefect's ``should_persist_result``)."""
    from otelflow.context import FlowRunContext, TaskRunContext
    from otelflow.settings import get_current_settings

    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task is not None:
        plan = getattr(task_ctx.task, "_cache_plan", None)
        if plan is not None:
            return bool(plan.persists(FlowRunContext.get()))
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None:
        return _flow_persist(flow_ctx)
    return get_current_settings().results_persist_by_default


# --- the store of results ---------------------------------------------------------------------------------


def _new_storage_key() -> str:
    return uuid.uuid4().hex


class ResultStore:
    """Reads and writes result records in ``result_storage`` with ``serializer`` (Prefect's ``ResultStore``).

    ``ResultStore(result_storage=None, serializer=None, cache_result_in_memory=True, storage_key_fn=None)``;
    ``None`` means the default (``$OTELFLOW_HOME/storage``, ``OTELFLOW_RESULTS_DEFAULT_SERIALIZER``).
    """

    def __init__(
        self,
        result_storage: WritableFileSystem | str | os.PathLike[str] | None = None,
        serializer: Serializer | str | None = None,
        cache_result_in_memory: bool = True,
        storage_key_fn: Callable[[], str] | None = None,
    ) -> None:
        from otelflow.settings import get_current_settings

        self.result_storage: WritableFileSystem = (
            resolve_result_storage(result_storage) if result_storage is not None else get_default_result_storage())
        self.serializer: Serializer = resolve_serializer(
            serializer if serializer is not None else get_current_settings().results_default_serializer)
        self.cache_result_in_memory = cache_result_in_memory
        self.storage_key_fn: Callable[[], str] = storage_key_fn or _new_storage_key

    def create_result_record(self, obj: Any, key: str | None = None,
                             expiration: datetime.datetime | None = None) -> ResultRecord[Any]:
        """A record of ``obj`` under ``key`` (a new unique key when ``None``); not written yet."""
        storage_key = self.result_storage.resolve_key(key or self.storage_key_fn())
        metadata = ResultRecordMetadata(storage_key=storage_key, expiration=expiration, serializer=self.serializer,
                                        storage=self.result_storage.location)
        return ResultRecord(metadata=metadata, result=obj)

    def persist_result_record(self, result_record: ResultRecord[Any]) -> int:
        """Write the record; returns its size in bytes. Raises :class:`SerializationError` or ``OSError``."""
        assert result_record.metadata.storage_key is not None
        content = result_record.serialize()
        self.result_storage.write_path(result_record.metadata.storage_key, content)
        result_record.mark_persisted()
        if self.cache_result_in_memory:
            _memory.put((self.result_storage.location, result_record.metadata.storage_key), result_record)
        return len(content)

    def write(self, obj: Any, key: str | None = None, expiration: datetime.datetime | None = None) -> ResultRecord[Any]:
        """Create and persist a record of ``obj``; return it."""
        record = self.create_result_record(obj, key=key, expiration=expiration)
        self.persist_result_record(record)
        return record

    def read(self, key: str) -> ResultRecord[Any]:
        """The record stored under ``key`` (from memory when this process wrote or read it before)."""
        storage_key = self.result_storage.resolve_key(key)
        memo = (self.result_storage.location, storage_key)
        item = _memory.get(memo) if self.cache_result_in_memory else None
        record = item[0] if item is not None else None
        if record is None or _expired(record.metadata.expiration):
            record = ResultRecord.deserialize(self.result_storage.read_path(storage_key))
            if self.cache_result_in_memory:
                _memory.put(memo, record)
        return record

    def exists(self, key: str) -> bool:
        """True when a readable, unexpired record is stored under ``key``."""
        try:
            return not _expired(self.read(key).metadata.expiration)
        except Exception:
            return False

    def __repr__(self) -> str:
        return f"ResultStore(result_storage={self.result_storage.location!r}, serializer={self.serializer.type!r})"


def get_result_store() -> ResultStore:
    """The result store of the current run (its task's or flow's options), else the default one."""
    from otelflow.context import FlowRunContext, TaskRunContext

    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task is not None:
        plan = getattr(task_ctx.task, "_cache_plan", None)
        if plan is not None:
            store: ResultStore = plan.result_store(FlowRunContext.get())
            return store
    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        return flow_result_store(flow_ctx.flow_run)
    return ResultStore()


def flow_result_store(flow: Any) -> ResultStore:
    """The result store a flow's (or a flow run's) options describe."""
    return ResultStore(result_storage=getattr(flow, "result_storage", None),
                       serializer=getattr(flow, "result_serializer", None),
                       cache_result_in_memory=getattr(flow, "cache_result_in_memory", True))


def _expired(expiration: datetime.datetime | None) -> bool:
    return expiration is not None and expiration <= datetime.datetime.now(datetime.UTC)


class _Memory:
    """Results this process wrote or read, newest 1000 (Prefect's in-memory result cache), each with the creation
    time of the cache entry it belongs to (``None`` outside the cache), so a replaced entry is read again."""

    def __init__(self, size: int = 1000) -> None:
        self._items: collections.OrderedDict[tuple[str, str], tuple[ResultRecord[Any], float | None]] = (
            collections.OrderedDict())
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> tuple[ResultRecord[Any], float | None] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: tuple[str, str], record: ResultRecord[Any], created: float | None = None) -> None:
        with self._lock:
            self._items[key] = (record, created)
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)

    def drop(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._items.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


_memory = _Memory()


# --- cache entries (the index in the store) --------------------------------------------------------------


@dataclasses.dataclass(slots=True)
class CacheEntry:
    """One cached task result, as ``otelflow cache ls`` shows it (JSON in store namespace ``cache``).

    A plain dataclass, checked by hand when read (:meth:`from_json`): a cache hit reads one, and pydantic's
    validation costs more than the store read.
    """

    key: str
    task: str
    created: float
    storage: str
    storage_key: str
    serializer: str
    size: int
    expiration: datetime.datetime | None = None
    policy: str = ""
    flow_run_id: str | None = None
    task_run_id: str | None = None
    trace_id: str | None = None
    v: int = _ENTRY_VERSION

    def to_json(self) -> str:
        """The entry as compact JSON (``None`` fields left out)."""
        data = {name: getattr(self, name) for name in _ENTRY_FIELD_NAMES}
        if self.expiration is not None:
            data["expiration"] = self.expiration.isoformat()
        return json.dumps({k: v for k, v in data.items() if v is not None}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> CacheEntry:
        """An entry from :meth:`to_json` output; ``ValueError`` for anything that is not one."""
        data = json.loads(text)
        if type(data) is not dict:
            raise ValueError("not a cache entry (not an object)")
        try:
            entry = cls(**data)
        except TypeError as exc:
            raise ValueError(f"not a cache entry ({exc})") from None
        if not (type(entry.key) is str and type(entry.task) is str and type(entry.storage) is str
                and type(entry.storage_key) is str and type(entry.serializer) is str and type(entry.size) is int
                and type(entry.created) in (float, int) and type(entry.policy) is str and type(entry.v) is int
                and all(v is None or type(v) is str for v in (entry.flow_run_id, entry.task_run_id, entry.trace_id))):
            raise ValueError("not a cache entry (a field has the wrong type)")
        expiration: Any = entry.expiration
        if expiration is not None:
            if type(expiration) is not str:
                raise ValueError("not a cache entry ('expiration' is not a date)")
            parsed = datetime.datetime.fromisoformat(expiration)
            entry.expiration = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=datetime.UTC)
        return entry

    @property
    def index_key(self) -> str:
        """Where this entry is kept in the store (:func:`index_key`)."""
        return index_key(self.key, self.storage)

    @property
    def expired(self) -> bool:
        """True once past its expiration."""
        return _expired(self.expiration)

    def storage_for_read(self, known_urls: Iterable[str] = ()) -> WritableFileSystem:
        """The storage the result was written to. An entry keeps a store URL with its password masked: one that
        names a store this process knows (``known_urls``, the configured store) is reached through its real URL."""
        if "://" in self.storage and not self.storage.startswith("file://"):
            from otelflow.settings import get_current_settings
            from otelflow.stores import redact_url

            for url in (*known_urls, get_current_settings().store_url_or_default):
                if redact_url(url) == self.storage:
                    return StoreFileSystem(url=url)
            return StoreFileSystem(url=self.storage)
        storage = _folders.get(self.storage)
        if storage is None:
            storage = _folders[self.storage] = LocalFileSystem(basepath=self.storage)
        return storage


_folders: dict[str, LocalFileSystem] = {}  # result folders named by cache entries, one object each
_parsed: dict[str, tuple[str, CacheEntry]] = {}  # key -> the entry text last read and its entry
_PARSED_MAX = 4096


def _index_store(url: Store | str | None = None) -> Store:
    from otelflow.stores import get_store

    return get_store(url)


def index_key(key: str, storage: str | None = None) -> str:
    """Where the entry of cache key ``key`` for result storage ``storage`` (a location) is kept in the store: the key
    itself for the default storage, ``key@storage`` for another one -- as in Prefect, a key cached in one storage is
    not a hit for a task that keeps its results in another."""
    if storage is None or storage == _default_location():
        return key
    return f"{key}@{storage}"


def _default_location() -> str:
    from otelflow.settings import get_current_settings

    settings = get_current_settings()
    memo = _default_location_memo
    if memo is not None and memo[0] is settings:
        return memo[1]
    location = get_default_result_storage().location
    globals()["_default_location_memo"] = (settings, location)
    return location


_default_location_memo: tuple[Any, str] | None = None


def read_cache_entry(key: str, store: Store | str | None = None, storage: str | None = None) -> CacheEntry | None:
    """The cache entry of ``key`` (for results kept in ``storage``, default: the default storage), or ``None`` (also
    for an entry that is not valid JSON: it is logged)."""
    key = index_key(key, storage)
    text = _index_store(store).get(CACHE_NAMESPACE, key)
    if text is None:
        return None
    seen = _parsed.get(key)
    if seen is not None and seen[0] == text:
        return seen[1]  # the same text as last time: the same entry (parsing costs more than the read)
    try:
        entry = CacheEntry.from_json(text)
        if len(_parsed) >= _PARSED_MAX:
            _parsed.clear()
        _parsed[key] = (text, entry)
        return entry
    except ValueError as exc:
        _log.warning("Ignoring the damaged cache entry %s (%s).", exported_key(key), exc)
        return None


_ENTRY_FIELD_NAMES = tuple(field.name for field in dataclasses.fields(CacheEntry))


def list_cache_entries(store: Store | str | None = None, task: str | None = None,
                       older_than: float | None = None) -> list[CacheEntry]:
    """Every readable cache entry (oldest first), optionally only ``task``'s and only older than
    ``older_than`` seconds."""
    now = time.time()
    entries: list[CacheEntry] = []
    for item in _index_store(store).items(CACHE_NAMESPACE):
        try:
            entry = CacheEntry.from_json(item.value)
        except ValueError:
            continue
        if task is not None and entry.task != task:
            continue
        if older_than is not None and now - entry.created < older_than:
            continue
        entries.append(entry)
    entries.sort(key=lambda e: e.created)
    return entries


def delete_cache_entry(entry: CacheEntry, store: Store | str | None = None, known_urls: Iterable[str] = ()) -> bool:
    """Delete the entry and its stored result; True when the entry existed.

    An entry is data from a store (possibly shared): the file it names is deleted only if it is a result record --
    a regular file this user owns that starts like one -- never any other file an entry could point at.
    """
    existed = _index_store(store).delete(CACHE_NAMESPACE, entry.index_key)
    storage = entry.storage_for_read(known_urls)
    try:
        if not isinstance(storage, LocalFileSystem) or _is_result_file(storage.resolve_key(entry.storage_key)):
            storage.delete_path(entry.storage_key)
    except OSError as exc:
        _log.warning("Could not delete the stored result of cache key %s: %s", exported_key(entry.key), exc)
    _memory.drop((storage.location, entry.storage_key))
    return bool(existed)


def _is_result_file(path: str) -> bool:
    import stat as _stat

    try:
        info = os.lstat(path)
        if not _stat.S_ISREG(info.st_mode) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
            return False
        with open(path, "rb") as handle:
            return handle.read(12) == b'{"metadata":'
    except OSError:
        return False


def write_cache_entry(entry: CacheEntry, store: Store | str | None = None) -> None:
    """Store (replace) a cache entry."""
    _index_store(store).put(CACHE_NAMESPACE, entry.index_key, entry.to_json())


_HEX_KEY = re.compile(r"^[0-9a-f]{16,128}$")


def exported_key(key: str) -> str:
    """The cache key as telemetry shows it: a policy's hex digest as is; any other key (a ``cache_key_fn`` may
    build it from the inputs) as ``md5:<digest>``, so no input value reaches a span."""
    if _HEX_KEY.match(key):
        return key
    import hashlib

    return "md5:" + hashlib.md5(key.encode("utf-8", "surrogatepass"), usedforsecurity=False).hexdigest()


def format_storage_key(template: str, parameters: Mapping[str, Any]) -> str:
    """A ``result_storage_key`` template filled in, as Prefect does: ``{parameters[x]}`` and the runtime
    modules (``{flow_run.id}``, ``{task_run.name}``...)."""
    from otelflow import runtime

    values = {name: getattr(runtime, name) for name in ("deployment", "flow_run", "task_run") if hasattr(runtime, name)}
    return template.format(**values, parameters=dict(parameters))

"""The task cache in the engine: a task's cache options resolved once (:class:`CachePlan`), and one run's cache
work -- key, lock, lookup, write -- (:class:`CacheRun`).

The engine calls, for a task run whose plan is active: :meth:`CacheRun.begin` after the run context is entered
(returns the cached value, or :data:`MISS`), then :meth:`CacheRun.finish` with the final state, and
:meth:`CacheRun.release` when the run ends whatever happened. Everything else stays here.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from otelflow import results as _results
from otelflow import semconv
from otelflow.cache_policies import (
    CacheKeyFnPolicy,
    CachePolicy,
    CompoundCachePolicy,
    FlowParameters,
    Inputs,
    RunId,
    TaskSource,
    _None,
)
from otelflow.exceptions import SerializationError
from otelflow.filesystems import LocalFileSystem, StoreFileSystem
from otelflow.settings import get_current_settings
from otelflow.states import StateType
from otelflow.stores import Store, get_store
from otelflow.stores.leases import keeper

if TYPE_CHECKING:
    from otelflow.results import ResultRecord, ResultStore

__all__ = ["MISS", "CachePlan", "CacheRun", "NotSet", "policy_name"]



class _NotSetType:
    """An option left out (Prefect's ``NotSet``): different from an explicit ``None``."""

    _instance: _NotSetType | None = None

    def __new__(cls) -> _NotSetType:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NotSet"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        return "NotSet"


NotSet: Any = _NotSetType()
MISS: Any = object()

_CONSTANT_NAMES = {Inputs: "INPUTS", TaskSource: "TASK_SOURCE", FlowParameters: "FLOW_PARAMETERS", RunId: "RUN_ID",
                   _None: "NO_CACHE"}


def policy_name(policy: Any) -> str:
    """A short name of a cache policy for telemetry and the CLI: ``INPUTS+TASK_SOURCE``, ``INPUTS-debug``..."""
    if isinstance(policy, CompoundCachePolicy):
        return "+".join(policy_name(p) for p in policy.policies)
    if isinstance(policy, CacheKeyFnPolicy):
        fn = policy.cache_key_fn
        return f"CacheKeyFnPolicy({getattr(fn, '__qualname__', None) or type(fn).__name__})"
    if isinstance(policy, Inputs) and policy.exclude:
        return "INPUTS-" + "-".join(policy.exclude)
    name = _CONSTANT_NAMES.get(type(policy))
    return name if name is not None else type(policy).__name__


def _task_logger() -> logging.Logger:
    from otelflow.logging import get_logger

    return get_logger("tasks")


def _is_no_cache(policy: Any) -> bool:
    return isinstance(policy, _None)


def _store_of(value: Any) -> Store | None:
    """A ``lock_manager`` / ``key_storage`` option as a store: a Store, a store URL, a folder, or a lock manager
    object that names one (:mod:`otelflow.locking`)."""
    if value is None:
        return None
    if isinstance(value, Store):
        return value
    store = getattr(value, "store", None)
    if isinstance(store, Store):
        return store
    if callable(store):
        result = store()
        if isinstance(result, Store):
            return result
    if isinstance(value, str) and "://" in value:
        return get_store(value)
    basepath = getattr(value, "basepath", None)
    if isinstance(value, str | os.PathLike) or isinstance(basepath, str):
        folder = os.path.abspath(os.fspath(basepath if isinstance(basepath, str) else value))
        return get_store("sqlite:///" + os.path.join(folder, "cache-keys.sqlite3"))
    raise TypeError(
        f"Cannot use {value!r} as a cache key store or lock manager: pass a store URL (sqlite:///..., redis://...), "
        "an otelflow.stores.Store, a folder, or an otelflow.locking lock manager."
    )


class CachePlan:
    """A task's cache and result options, resolved once with Prefect's rules (``Task.__init__``)."""

    __slots__ = (
        "_label",
        "_store_memo",
        "cache_result_in_memory",
        "expiration",
        "explicit_persist",
        "may_cache",
        "persist",
        "policy",
        "refresh",
        "result_serializer",
        "result_storage",
        "storage_key",
        "task_name",
    )

    def __init__(self, task_name: str, options: dict[str, Any]) -> None:
        from otelflow.cache_policies import DEFAULT, NO_CACHE

        settings = get_current_settings()
        self.task_name = task_name
        policy = options.get("cache_policy", NotSet)
        key_fn = options.get("cache_key_fn")
        persist = options.get("persist_result")
        storage = options.get("result_storage")
        serializer = options.get("result_serializer")
        storage_key = options.get("result_storage_key")
        if policy is not NotSet and policy is not None and not isinstance(policy, CachePolicy):
            raise TypeError(
                f"cache_policy must be a CachePolicy (from otelflow.cache_policies), got {type(policy).__name__}."
            )
        if key_fn is not None and not callable(key_fn):
            raise TypeError(f"cache_key_fn must be callable, got {type(key_fn).__name__}.")
        expiration = options.get("cache_expiration")
        if expiration is not None and not isinstance(expiration, datetime.timedelta):
            raise TypeError(f"cache_expiration must be a datetime.timedelta, got {type(expiration).__name__}.")
        if storage_key is not None and not isinstance(storage_key, str):
            raise TypeError(f"result_storage_key must be a string, got {type(storage_key).__name__}.")
        if settings.tasks_default_no_cache and policy is NotSet:
            policy = NO_CACHE
        if policy is not NotSet and key_fn is not None:
            _task_logger().warning(
                "Both `cache_policy` and `cache_key_fn` are set on task %s. `cache_key_fn` will be used.",
                f"Task(name={task_name!r})")
        if key_fn is not None:
            policy = CacheKeyFnPolicy(cache_key_fn=key_fn)
        if persist is None and any((
            policy is not NotSet and policy is not None and not _is_no_cache(policy),
            key_fn is not None, storage_key is not None, storage is not None, serializer is not None,
        )):
            persist = True
        if settings.tasks_disable_caching:
            policy = NO_CACHE
        if persist is False:
            if policy is not NotSet and policy is not None and not _is_no_cache(policy):
                _task_logger().warning("Ignoring `cache_policy` because `persist_result` is False")
            policy = None if policy is None else NO_CACHE
        elif policy is NotSet and storage_key is None:
            policy = DEFAULT
        elif not _is_no_cache(policy) and storage_key:
            policy = None
        if storage is not None:
            from otelflow.filesystems import is_block_slug, resolve_result_storage

            if not is_block_slug(storage):  # a saved block is looked up at run time
                storage = resolve_result_storage(storage)
        if serializer is not None:
            from otelflow.serializers import resolve_serializer

            serializer = resolve_serializer(serializer)
        self.policy: CachePolicy | None = None if policy is NotSet else policy
        self.explicit_persist: bool | None = persist
        self.persist = persist
        self.refresh: bool | None = options.get("refresh_cache")
        self.expiration: datetime.timedelta | None = expiration
        self.result_storage = storage
        self.result_serializer = serializer
        self.storage_key: str | None = storage_key
        cache_in_memory = options.get("cache_result_in_memory")
        self.cache_result_in_memory = True if cache_in_memory is None else bool(cache_in_memory)
        self._store_memo: tuple[Any, Any, Any, ResultStore] | None = None
        self._label: str | None = None
        # False when no run of this task can compute a key (NO_CACHE and no result_storage_key): decided once, as
        # every run of a task that does not cache asks.
        self.may_cache: bool = storage_key is not None or (self.policy is not None and not _is_no_cache(self.policy))

    @property
    def policy_label(self) -> str:
        """The policy's short name (:func:`policy_name`), made once."""
        label = self._label
        if label is None:
            label = self._label = policy_name(self.policy) if self.policy is not None else ""
        return label

    @property
    def serializable(self) -> bool:
        """True when the policy asks for SERIALIZABLE isolation (a lock on the key from lookup to write)."""
        level = getattr(self.policy, "isolation_level", None)
        return getattr(level, "value", level) == "SERIALIZABLE"

    def persists(self, flow_ctx: Any) -> bool:
        """Does a run persist its result: the task's option, else the setting for tasks, else its flow's."""
        if self.persist is not None:
            return bool(self.persist)

        default = get_current_settings().tasks_default_persist_result
        if default is not None:
            return bool(default)

        return _results._flow_persist(flow_ctx)

    def result_store(self, flow_ctx: Any) -> ResultStore:
        """Where a run's result goes: the task's options, else its flow's, else the defaults (one store object per
        combination and settings, reused by the task's runs)."""
        flow_run = flow_ctx.flow_run if flow_ctx is not None else None
        storage = (self.result_storage if self.result_storage is not None
                   else getattr(flow_run, "result_storage", None))
        serializer = (self.result_serializer if self.result_serializer is not None
                      else getattr(flow_run, "result_serializer", None))
        settings = get_current_settings()
        memo = self._store_memo
        if memo is not None and memo[0] is storage and memo[1] is serializer and memo[2] is settings:
            store: ResultStore = memo[3]
            return store
        store = _results.ResultStore(result_storage=storage, serializer=serializer,
                                     cache_result_in_memory=self.cache_result_in_memory)
        self._store_memo = (storage, serializer, settings, store)
        return store


def _lock_name(key: str) -> str:
    return f"cache:{key}"


class CacheRun:
    """One task run's cache work. Made by the engine only when the plan may cache and the run persists."""

    __slots__ = (
        "_holder",
        "_logger",
        "_logger_factory",
        "attrs",
        "hit",
        "index",
        "key",
        "lease",
        "plan",
        "policy_label",
        "record",
        "result_store",
        "span",
        "txn",
    )

    def __init__(self, plan: CachePlan, span: Any, logger_factory: Callable[[], Any]) -> None:
        self.plan = plan
        self.span = span
        self._logger_factory = logger_factory
        self._logger: Any = None
        self.key: str | None = None
        self.hit = False
        self.lease: Any = None
        self.index: Store | None = None
        self.record: ResultRecord[Any] | None = None
        self.txn: Any = None
        self.attrs: dict[str, Any] = {}
        self.result_store: ResultStore | None = None
        self.policy_label = ""
        self._holder = ""

    @property
    def logger(self) -> Any:
        """The run logger (looked up when first needed: a hit logs nothing of its own)."""
        if self._logger is None:
            self._logger = self._logger_factory()
        return self._logger

    # --- before the call ------------------------------------------------------------------------------
    def begin(self, task_ctx: Any, flow_ctx: Any, parameters: dict[str, Any], txn: Any) -> Any:
        """Compute the key, take the lock when asked, and look the key up: the cached value, or :data:`MISS`."""

        plan = self.plan
        self.txn = txn
        self.result_store = plan.result_store(flow_ctx)
        policy = plan.policy
        attrs = self.attrs
        key: str | None = None
        if isinstance(policy, CachePolicy):
            self.policy_label = plan.policy_label
            try:
                key = policy.compute_key(task_ctx=task_ctx, inputs=parameters or {},
                                         flow_parameters=(flow_ctx.parameters if flow_ctx is not None else None) or {})
            except Exception:
                self.logger.exception("Error encountered when computing cache key - result will not be persisted.")
                key = None
        elif plan.storage_key is not None:
            self.policy_label = "result_storage_key"
            key = _results.format_storage_key(plan.storage_key, parameters)
        if key is not None and not isinstance(key, str):
            key = str(key)
        self.key = key
        if self.policy_label:
            attrs[semconv.CACHE_POLICY] = self.policy_label
        if not key:
            self.key = None
            attrs[semconv.CACHE_OUTCOME] = "no_key"
            return MISS

        attrs[semconv.CACHE_KEY] = _results.exported_key(key)
        key_storage = getattr(policy, "key_storage", None) if policy is not None else None
        self.index = _store_of(key_storage) if key_storage is not None else get_store()
        isolation = getattr(policy, "isolation_level", None) if policy is not None else None
        if isolation is not None and getattr(isolation, "value", isolation) == "SERIALIZABLE":
            self._lock(policy, txn)
        refresh = plan.refresh if plan.refresh is not None else get_current_settings().tasks_refresh_cache
        if refresh:
            attrs[semconv.CACHE_OUTCOME] = "refresh"
            return MISS
        return self._lookup(key)

    def _lock(self, policy: Any, txn: Any) -> None:
        from otelflow.transactions import _Lease

        settings = get_current_settings()
        lock_store = _store_of(getattr(policy, "lock_manager", None)) or self.index
        assert lock_store is not None and self.key is not None
        self._holder = uuid.uuid4().hex
        name = _lock_name(self.key)
        self.logger.debug("Acquiring lock for cache key %r", self.attrs[semconv.CACHE_KEY])
        lock_store.acquire_lock(name, self._holder, settings.lock_lease_seconds, settings.lock_wait_seconds)
        self.lease = _Lease(lock_store, name, self._holder, settings.lock_lease_seconds, None)
        keeper.add(self.lease)
        self.attrs[semconv.CACHE_ISOLATION_LEVEL] = "SERIALIZABLE"

    def _lookup(self, key: str) -> Any:
        assert self.index is not None
        own = self.result_store.result_storage if self.result_store is not None else None
        entry = _results.read_cache_entry(key, self.index, own.location if own is not None else None)
        attrs = self.attrs
        if entry is None:
            attrs[semconv.CACHE_OUTCOME] = "miss"
            return MISS
        if entry.expired:
            attrs[semconv.CACHE_OUTCOME] = "expired"
            return MISS
        storage = entry.storage_for_read((own.url,) if isinstance(own, StoreFileSystem) else ())
        memo = (entry.storage, entry.storage_key)
        in_memory = self.plan.cache_result_in_memory
        item = _results._memory.get(memo) if in_memory else None
        record = item[0] if item is not None and item[1] == entry.created else None  # another writer replaced it?
        if record is not None and isinstance(storage, LocalFileSystem) and not os.path.exists(entry.storage_key):
            record = None  # deleted by hand (Prefect users clear a cache so): read below, which makes it a miss
        if record is None:
            try:
                record = _results.ResultRecord.deserialize(storage.read_path(entry.storage_key))
            except FileNotFoundError:
                # Its result was deleted: an ordinary miss (recomputed and written again), as in Prefect.
                self.logger.debug("The cached result of this task (key %s) is gone; running the task again.",
                                  attrs[semconv.CACHE_KEY])
                attrs[semconv.CACHE_OUTCOME] = "miss"
                return MISS
            except Exception as exc:
                self.logger.warning(
                    "The cached result of this task (key %s) could not be read back (%s: %s); running the task again.",
                    attrs[semconv.CACHE_KEY], type(exc).__name__, exc)
                attrs[semconv.CACHE_OUTCOME] = "unreadable"
                return MISS
            if in_memory:
                _results._memory.put(memo, record, entry.created)
        self.hit = True
        self.record = record
        attrs[semconv.CACHE_OUTCOME] = "hit"
        attrs[semconv.TASK_CACHED] = True
        if entry.expiration is not None:
            attrs[semconv.CACHE_EXPIRATION] = entry.expiration.isoformat()
        attrs[semconv.RESULT_STORAGE] = entry.storage
        return record.result

    # --- after the call -------------------------------------------------------------------------------
    def finish(self, final: Any, task_run: Any) -> None:
        """The run ended in ``final``: name a hit ``Cached``, persist a fresh result (the state's data), and put
        what happened on the span."""

        if final is None or final.type is not StateType.COMPLETED:
            return
        if self.hit:
            final.name = "Cached"
            final.data = self.record
            return
        if self.key is None or self.result_store is None:
            return
        store = self.result_store
        expiration = (datetime.datetime.now(datetime.UTC) + self.plan.expiration
                      if self.plan.expiration is not None else None)
        # The state's data, as Prefect stores it (a returned generator is a list there; a returned State its data).
        record = store.create_result_record(final.data, key=self.key, expiration=expiration)
        final.data = record
        self._set(semconv.RESULT_STORAGE, store.result_storage.location)
        self._set(semconv.RESULT_SERIALIZER, store.serializer.type)
        if expiration is not None:
            self._set(semconv.CACHE_EXPIRATION, expiration.isoformat())
        pending = PendingWrite(
            record=record, key=self.key, task=self.plan.task_name, policy=self.policy_label,
            flow_run_id=str(task_run.flow_run_id) if task_run.flow_run_id is not None else None,
            task_run_id=str(task_run.id), trace_id=_trace_id(self.span), storage=store.result_storage,
            serializer_type=store.serializer.type, in_memory=store.cache_result_in_memory,
            index_url=self.index.url if self.index is not None else None,
        )
        lease, self.lease = self.lease, None
        txn = self.txn
        if txn is not None and hasattr(txn, "_defer"):
            # Inside a transaction the entry is written when it commits (nothing when it rolls back), as in
            # Prefect where the task's transaction is a child of the enclosing one.
            logger = self.logger  # this run's, while it is current: the write comes later

            def commit() -> None:
                try:
                    write_pending(pending, lambda: logger, None)
                finally:
                    _release(lease)

            txn._defer(commit, lambda: _release(lease), pending)
            return
        try:
            if write_pending(pending, lambda: self.logger, self.span):
                self._set(semconv.RESULT_PERSISTED, True)
        finally:
            _release(lease)

    def _set(self, name: str, value: Any) -> None:
        self.attrs[name] = value
        if self.span.is_recording():
            self.span.set_attribute(name, value)

    def release(self) -> None:
        """Release the key's lock if this run still holds it (the run ended without handing it on)."""
        lease, self.lease = self.lease, None
        _release(lease)


@dataclasses.dataclass(slots=True)
class PendingWrite:
    """A fresh result and its cache entry, waiting to be written (at once, or when a transaction commits -- possibly
    in another process: it pickles)."""

    record: ResultRecord[Any]
    key: str
    task: str
    policy: str
    flow_run_id: str | None
    task_run_id: str | None
    trace_id: str | None
    storage: Any  # a WritableFileSystem
    serializer_type: str
    in_memory: bool
    index_url: str | None


def write_pending(pending: PendingWrite, logger: Callable[[], Any], span: Any) -> bool:
    """Persist the result, then its cache entry. A failure is logged (Prefect's lines) and put on ``span``; the run
    is not affected. True when both were written."""

    record = pending.record
    try:
        content = record.serialize()
        storage_key = record.metadata.storage_key or pending.key
        pending.storage.write_path(storage_key, content)
        record.mark_persisted()
        entry = _results.CacheEntry(
            key=pending.key, task=pending.task, created=time.time(), expiration=record.metadata.expiration,
            storage=pending.storage.location, storage_key=storage_key, serializer=pending.serializer_type,
            size=len(content), policy=pending.policy, flow_run_id=pending.flow_run_id,
            task_run_id=pending.task_run_id, trace_id=pending.trace_id,
        )
        if pending.in_memory:
            _results._memory.put((pending.storage.location, storage_key), record, entry.created)
        _results.write_cache_entry(entry, pending.index_url)
    except SerializationError as exc:
        logger().warning(
            "Encountered an error while serializing result for transaction %r: %s Code execution will continue, "
            "but the transaction will not be committed.", _results.exported_key(pending.key), exc)
        if span is not None:
            _persist_failed_event(span, exc)
        return False
    except Exception as exc:
        logger().error("An error was encountered while committing transaction %r: %s: %s",
                     _results.exported_key(pending.key), type(exc).__name__, exc)
        if span is not None:
            _persist_failed_event(span, exc)
        return False
    return True


def _release(lease: Any) -> None:
    if lease is not None:
        lease.release()


def _trace_id(span: Any) -> str | None:
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None


def _persist_failed_event(span: Any, exc: BaseException) -> None:
    from otelflow._internal.export.limits import get_limits
    from otelflow._internal.runs.redact import exported_message

    if span.is_recording():
        span.set_attribute(semconv.RESULT_PERSISTED, False)
        span.add_event(semconv.EVENT_RESULT_PERSIST_FAILED, {
            semconv.EXCEPTION_TYPE: type(exc).__qualname__,
            semconv.EXCEPTION_MESSAGE: exported_message(str(exc), get_limits().exception_message),
        })


def persist_flow_result(flow: Any, final: Any, span: Any, logger: Any) -> None:
    """Persist a completed flow run's return value under a new key (Prefect: flows persist, they do not cache);
    the run's state then holds the record. A failure is logged and on the span; the run still completes."""

    if final is None or final.type is not StateType.COMPLETED:
        return
    try:
        store = _results.flow_result_store(flow)
        record = store.create_result_record(final.data)
        final.data = record
        # As Prefect: a flow's result file holds the serializer's bytes alone (its metadata is on the state).
        store.result_storage.write_path(record.metadata.storage_key or "", record.serialize_result())
        record.mark_persisted()
    except Exception as exc:
        logger.warning("Encountered an error while persisting result: %s Execution will continue, but the result has "
                       "not been persisted", exc)
        _persist_failed_event(span, exc)
        return
    if span.is_recording():
        span.set_attribute(semconv.RESULT_PERSISTED, True)
        span.set_attribute(semconv.RESULT_STORAGE, store.result_storage.location)
        span.set_attribute(semconv.RESULT_SERIALIZER, store.serializer.type)

"""Transactions: run tasks as a unit -- commit hooks, rollback hooks, idempotent keys, locks -- as a span.

Prefect 3's API and rules (``Transaction``, ``transaction()``, ``CommitMode``, ``IsolationLevel``,
``task.on_commit`` / ``task.on_rollback``), with the record of a committed key kept in a shared
:mod:`otelflow.stores` store (a sqlite file by default, Redis for several machines)::

    from otelflow import flow, task
    from otelflow.transactions import Transaction

    @task
    def update_database(data): ...

    @update_database.on_rollback
    def undo_update(txn):
        delete_rows(txn.key)

    @flow
    def transactional_workflow(data):
        try:
            with Transaction(key="data-update", timeout=300) as txn:
                update_database(data)
                send_notification(f"Data updated: {data}")  # if this fails, undo_update runs
                return {"transaction_id": txn.key}
        except Exception as e:
            return {"error": str(e), "status": "rolled_back"}

The rules:

- Exit without an exception commits (``CommitMode.LAZY``, the default: the outermost transaction commits
  itself and its children; ``EAGER``: each commits at its own exit; ``OFF``: nothing commits unless
  ``commit()`` is called, the rest is rolled back). Commit order: children, ``on_commit`` hooks, the
  record write, then the task runs' cache entries. A commit that cannot finish (a hook raised, a result
  that is not JSON, the store is down, the timeout passed) rolls back and raises: it is all or nothing.
  The record write is now-or-never (:meth:`~otelflow.stores.Store.put`): one that times out cannot land
  later on a store that resumes, and the rollback revokes it in case it landed before its reply was lost.
- Exit with an exception rolls back -- every completed task's ``on_rollback`` hooks in reverse order,
  then the children -- and re-raises. A failing hook is logged and recorded on the span; the other
  hooks still run. A child that rolls back rolls back its parent, even when the parent catches the error.
- Idempotency: a transaction with a ``key`` stores, on commit, one JSON record with the results of its
  tasks. Running the same key again (in any process that shares the store) starts COMMITTED: its tasks
  are not called, they return their recorded results (``overwrite=True`` runs them again). Task calls
  are matched by task name, map index and call order within the transaction.
- Isolation: ``IsolationLevel.SERIALIZABLE`` takes a store lock on the key for the whole transaction.
  The lock has a lease (``OTELFLOW_LOCK_LEASE_SECONDS``) renewed in the background while the holder
  lives, so a crashed holder frees the key when the lease runs out; waiting for it is bounded
  (``OTELFLOW_LOCK_WAIT_SECONDS``, and ``timeout``). Writes under the lock are fenced: a holder that lost
  its lease cannot overwrite the next holder's record.
- ``timeout`` (seconds from entering) bounds the transaction: it is checked when each task starts and
  at commit; past it the transaction rolls back with :class:`TransactionTimeout`, and the lock lease
  stops being renewed.

Telemetry: span ``transaction {key}`` (a child of the current run; task runs inside are its children
and carry ``otelflow.transaction.key``), events ``transaction.commit`` / ``transaction.rollback`` /
``transaction.hook_failed``, attribute ``otelflow.transaction.outcome``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import copy
import enum
import inspect
import json
import logging
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Any, Self

from opentelemetry import context as otel_context
from opentelemetry import trace

from otelflow import semconv
from otelflow.context import FlowRunContext, _PlainContext
from otelflow.exceptions import SerializationError
from otelflow.stores import Store, StoreError, get_store
from otelflow.stores.leases import Lease, keeper

if TYPE_CHECKING:
    from otelflow.context import TaskRun
    from otelflow.tasks import Task

__all__ = [
    "CommitMode",
    "IsolationLevel",
    "SerializationError",
    "Transaction",
    "TransactionContext",
    "TransactionState",
    "TransactionTimeout",
    "atransaction",
    "get_transaction",
    "transaction",
]

_NAMESPACE = "txn"
_RECORD_VERSION = 1
_NOT_SET: Any = object()

Hook = Callable[["Transaction"], Any]


class IsolationLevel(enum.Enum):
    """How concurrent transactions on one key see each other."""

    READ_COMMITTED = "READ_COMMITTED"  # no lock: a key committed by another run is seen at the next start
    SERIALIZABLE = "SERIALIZABLE"  # a store lock on the key for the whole transaction


class CommitMode(enum.Enum):
    """When a transaction commits: at its own exit (EAGER), with the outermost one (LAZY), or never (OFF)."""

    EAGER = "EAGER"
    LAZY = "LAZY"
    OFF = "OFF"


class TransactionState(enum.Enum):
    """Where a transaction is in its life."""

    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    STAGED = "STAGED"
    COMMITTED = "COMMITTED"
    ROLLED_BACK = "ROLLED_BACK"


class TransactionTimeout(TimeoutError):
    """The transaction ran past its ``timeout`` and was rolled back."""


class _StateFlag:
    """``txn.is_committed`` works both as the seed's property (truthy) and as Prefect's method (called)."""

    __slots__ = ("_value",)

    def __init__(self, value: bool) -> None:
        self._value = value

    def __bool__(self) -> bool:
        return self._value

    def __call__(self) -> bool:
        return self._value

    def __eq__(self, other: object) -> bool:
        return bool(other) is self._value if isinstance(other, bool | _StateFlag) else NotImplemented

    def __hash__(self) -> int:
        return hash(self._value)

    def __repr__(self) -> str:
        return repr(self._value)


# --- lock leases: renewed by the process's one lease keeper (otelflow.stores.leases) -------------------------


class _Lease(Lease):
    """A store lock held by a transaction or a cache key."""

    __slots__ = ("holder", "name", "store")

    def __init__(self, store: Store, name: str, holder: str, lease_seconds: float, deadline: float | None) -> None:
        super().__init__(lease_seconds, deadline)
        self.store, self.name, self.holder = store, name, holder

    def renew(self) -> bool:
        try:
            return self.store.renew_lock(self.name, self.holder, self.lease_seconds)
        except StoreError:
            return True  # a blip: try again next time; the fenced write is the real check

    def release(self) -> None:
        """Stop renewing and release the lock (the lease runs out by itself if the store is gone)."""
        keeper.remove(self)
        with contextlib.suppress(StoreError):
            self.store.release_lock(self.name, self.holder)




# --- task results as JSON ---------------------------------------------------------------------------------

_adapters: dict[Any, Any] = {}


def _encode_result(value: Any, where: str) -> dict[str, Any]:
    """A JSON-safe entry for a task result: pydantic models by their JSON dump, the rest as JSON values."""
    import pydantic
    import pydantic_core

    try:
        if isinstance(value, pydantic.BaseModel):
            cls = type(value)
            return {"model": f"{cls.__module__}:{cls.__qualname__}", "json": value.model_dump(mode="json")}
        return {"json": pydantic_core.to_jsonable_python(value)}
    except (pydantic_core.PydanticSerializationError, ValueError, TypeError) as exc:
        raise SerializationError(
            f"The result of {where} ({type(value).__name__}) cannot be stored as JSON: {exc}. Return JSON values "
            "(dict, list, str, numbers, bool, None) or a pydantic model, or open the transaction with "
            "write_on_commit=False."
        ) from exc


def _return_hint(fn: Callable[..., Any]) -> Any:
    try:
        import typing

        return typing.get_type_hints(fn).get("return", _NOT_SET)
    except Exception:
        return _NOT_SET


def _decode_result(entry: dict[str, Any], task: Task[..., Any], logger: logging.Logger | logging.LoggerAdapter[Any]
                   ) -> Any:
    """A recorded result back as a value: through the task's return annotation when it has one, else the
    recorded pydantic model (only if its module is already imported: stored data never triggers imports)."""
    import pydantic

    data = entry.get("json")
    hint = _return_hint(task.fn)
    if hint is not _NOT_SET and hint is not Any and hint is not None:
        try:
            adapter = _adapters.get(hint)
            if adapter is None:
                adapter = _adapters[hint] = pydantic.TypeAdapter(hint)
            return adapter.validate_python(data)
        except (pydantic.ValidationError, TypeError, pydantic.PydanticSchemaGenerationError) as exc:
            logger.warning("Recorded result of task %r does not match its return annotation (%s); "
                           "replaying the stored JSON value.", task.name, exc)
            return data
    model = entry.get("model")
    if isinstance(model, str) and ":" in model:
        module_name, _, qualname = model.partition(":")
        obj: Any = sys.modules.get(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part, None)
        if isinstance(obj, type) and issubclass(obj, pydantic.BaseModel):
            return obj.model_validate(data)
    return data


def _exported_message(exc: BaseException, *, with_type: bool = False) -> str:
    """``exc``'s message as exported on a span (status, events): secrets masked, bounded in size."""
    from otelflow._internal.export.limits import get_limits
    from otelflow._internal.runs.redact import exported_message

    try:
        text = str(exc)
    except Exception:  # a broken __str__ must not break the transaction's record
        text = "<unprintable>"
    return exported_message(f"{type(exc).__name__}: {text}" if with_type else text, get_limits().exception_message)


def _hook_name(hook: Callable[..., Any]) -> str:
    # Prefect's rule (get_hook_name): the function's name, a partial's function's name, else the class name.
    name = getattr(hook, "__name__", None)
    if name is None:
        import functools

        name = hook.func.__name__ if isinstance(hook, functools.partial) else type(hook).__name__
    return str(name)


def _call_hook(hook: Hook, txn: Transaction) -> None:
    if not inspect.iscoroutinefunction(hook):
        hook(txn)
        return
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(hook(txn))
        return
    # Called from inside an event loop (an async flow): run the coroutine on a loop of its own.
    error: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(hook(txn))
        except BaseException as exc:  # handed back to the caller's thread below
            error.append(exc)

    worker = threading.Thread(target=run, name="otelflow-txn-hook")
    worker.start()
    worker.join()
    if error:
        raise error[0]


def _default_logger() -> logging.Logger | logging.LoggerAdapter[Any]:
    from otelflow.context import MissingContextError
    from otelflow.logging import get_logger, get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return get_logger("transactions")


class _GetDescriptor:
    """On the class: the current transaction; on an instance: its value lookup."""

    def __get__(self, obj: Transaction | None, objtype: type[Transaction] | None = None) -> Callable[..., Any]:
        if obj is None:
            return get_transaction
        return obj.get_value


class Transaction(_PlainContext):
    """A unit of work: its tasks commit together or roll back together; with a ``key``, it runs once.

    ``Transaction(key=None, timeout=None, store=None, commit_mode=None, isolation_level=None,
    overwrite=False, write_on_commit=True, logger=None)``. Use it as a context manager (``with`` or
    ``async with``), or by hand::

        txn = Transaction(key="manual-txn")
        try:
            txn.__enter__()
            update_database("batch1")
            txn.commit()
        except Exception:
            txn.rollback()
        finally:
            if not (txn.is_committed or txn.is_rolled_back):
                txn.__exit__(None, None, None)

    ``is_committed`` / ``is_rolled_back`` / ``is_staged`` / ``is_pending`` / ``is_active`` are truthy
    flags that can also be called (``txn.is_committed()``, Prefect's spelling).
    """

    def __init__(
        self,
        key: str | None = None,
        timeout: float | None = None,
        *,
        store: Store | str | None = None,
        commit_mode: CommitMode | None = None,
        isolation_level: IsolationLevel | None = None,
        overwrite: bool = False,
        write_on_commit: bool = True,
        logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    ) -> None:
        super().__init__()
        if key is not None and (not isinstance(key, str) or not key):
            raise ValueError(f"Transaction key must be a non-empty string or None, got {key!r}.")
        if timeout is not None and timeout <= 0:
            raise ValueError(f"Transaction timeout must be > 0 seconds, got {timeout}.")
        self.key = key
        self.timeout = timeout
        self._store_arg = store
        self.store: Store | None = store if isinstance(store, Store) else None
        self.commit_mode = commit_mode
        self.isolation_level = isolation_level
        self.overwrite = overwrite
        self.write_on_commit = write_on_commit
        self._logger = logger
        self.children: list[Transaction] = []
        self.on_commit_hooks: list[Hook] = []
        self.on_rollback_hooks: list[Hook] = []
        self._state = TransactionState.PENDING
        self._stored_values: dict[str, Any] = {}
        self._staged_value: Any = None
        self._holder_id: str | None = None
        self._parent: Transaction | None = None
        self._resolved = False  # has the store record been read?
        self._record: dict[str, Any] | None = None
        self._tasks: dict[str, dict[str, Any]] = {}  # staged results: call key -> JSON entry
        self._stage_errors: list[SerializationError] = []
        self._calls: dict[Any, str] = {}  # task run id -> call key
        self._call_counts: collections.Counter[str] = collections.Counter()
        self._mutex = threading.Lock()
        self._deadline: float | None = None
        self._lease: _Lease | None = None
        self._span: trace.Span = trace.INVALID_SPAN
        self._otel_token: Any = None
        self._span_ended = False
        self._wrote = False  # did our commit write the record (False: the key was committed before)?
        self._unsettled: str | None = None  # a record write that may have landed: taken back if we roll back
        self._closed = False  # finished by commit()/rollback(): no longer the current transaction
        # Work handed over by task runs inside (their cache entries): done at commit, dropped at rollback.
        self._deferred: list[tuple[Callable[[], None], Callable[[], None]]] = []

    @property
    def logger(self) -> logging.Logger | logging.LoggerAdapter[Any]:
        """Where hook runs and failures are logged: the ``logger`` given, else the run logger (looked up once,
        when first needed: most transactions never log)."""
        if self._logger is None:
            self._logger = _default_logger()
        return self._logger

    @logger.setter
    def logger(self, value: logging.Logger | logging.LoggerAdapter[Any]) -> None:
        self._logger = value

    @property
    def _holder(self) -> str:
        """This transaction's lock holder id (made when first needed)."""
        if self._holder_id is None:
            self._holder_id = f"{uuid.uuid4()}"
        return self._holder_id

    # --- state ------------------------------------------------------------------------------------
    @property
    def state(self) -> TransactionState:
        """The transaction's state; reading it looks up the key's record if that was not needed yet."""
        if self._state in (TransactionState.ACTIVE, TransactionState.STAGED):
            self._resolve()
        return self._state

    @state.setter
    def state(self, value: TransactionState) -> None:
        self._state = value

    @property
    def is_committed(self) -> _StateFlag:
        """True once committed (or when the key was already committed when this transaction started)."""
        return _StateFlag(self.state is TransactionState.COMMITTED)

    @property
    def is_rolled_back(self) -> _StateFlag:
        """True once rolled back."""
        return _StateFlag(self._state is TransactionState.ROLLED_BACK)

    @property
    def is_staged(self) -> _StateFlag:
        """True when a value or task result waits for the commit."""
        return _StateFlag(self.state is TransactionState.STAGED)

    @property
    def is_pending(self) -> _StateFlag:
        """True before the transaction is entered."""
        return _StateFlag(self._state is TransactionState.PENDING)

    @property
    def is_active(self) -> _StateFlag:
        """True while entered and neither staged, committed nor rolled back."""
        return _StateFlag(self.state is TransactionState.ACTIVE)

    def _current_state(self) -> TransactionState:
        return self._state  # a method call, so type checkers do not assume the state is unchanged

    def _resolve(self) -> None:
        """Read the key's committed record once; a committed key (and no overwrite) makes us COMMITTED."""
        if self._resolved or self.store is None or self.key is None:
            self._resolved = True
            return
        with self._mutex:
            if self._resolved:
                return
            text = self.store.get(_NAMESPACE, self.key)
            record: dict[str, Any] | None = None
            if text is not None:
                try:
                    record = json.loads(text)
                except ValueError as exc:
                    raise StoreError(f"The record of transaction {self.key!r} in {self.store.display_url} is not "
                                     f"valid JSON ({exc}); delete it or run with overwrite=True.") from exc
                if not isinstance(record, dict):
                    record = None
            self._record = record
            self._resolved = True
            if record is not None and not self.overwrite and self._state is not TransactionState.ROLLED_BACK:
                self._state = TransactionState.COMMITTED

    # --- context ----------------------------------------------------------------------------------
    # ``Transaction.get()`` / ``TransactionContext.get()``: the current transaction (as for every run
    # context); ``txn.get(name, default)``: Prefect's per-transaction value lookup. One descriptor serves both.
    get = _GetDescriptor()

    @classmethod
    def get_active(cls) -> Transaction | None:
        """Prefect's name for :meth:`get`."""
        return get_transaction()

    def get_parent(self) -> Transaction | None:
        """The transaction this one was entered in, if any."""
        return self._parent

    def add_child(self, transaction: Transaction) -> None:
        """Make ``transaction`` commit and roll back with this one."""
        self.children.append(transaction)

    def set(self, name: str, value: Any) -> None:
        """Keep ``value`` under ``name`` for this transaction (hooks read it with :meth:`get`)."""
        self._stored_values[name] = value

    def get_value(self, name: str, default: Any = _NOT_SET) -> Any:
        """The value set under ``name`` here, else in the parent transaction, else ``default`` (a deep copy:
        change it with :meth:`set`). ``txn.get(name, default)`` calls this. Without a default, an unknown
        name raises ``ValueError``."""
        if name in self._stored_values:
            return copy.deepcopy(self._stored_values[name])
        if self._parent is not None:
            return self._parent.get_value(name, default)
        if default is _NOT_SET:
            raise ValueError(f"Could not retrieve value for unknown key: {name!r}; set it with txn.set().")
        return default

    def stage(
        self, value: Any, on_rollback_hooks: list[Hook] | None = None, on_commit_hooks: list[Hook] | None = None
    ) -> None:
        """Stage ``value`` (JSON) as the record's value, and hooks, for the commit (ignored once committed)."""
        if self.state is TransactionState.COMMITTED:
            return
        self._staged_value = _encode_result(value, f"the value staged in transaction {self.key!r}")["json"]
        self.on_rollback_hooks += on_rollback_hooks or []
        self.on_commit_hooks += on_commit_hooks or []
        self._state = TransactionState.STAGED

    def read(self) -> Any:
        """The value staged by the committed record of this key (``None`` when none)."""
        self._resolve()
        return None if self._record is None else self._record.get("value")

    def __enter__(self) -> Self:
        if self._token is not None:
            raise RuntimeError("Context already entered. Context enter calls cannot be nested.")
        from otelflow.settings import get_settings
        from otelflow.telemetry import get_tracer

        parent = get_transaction()
        self._parent = parent
        commit_mode = self.commit_mode or (parent.commit_mode if parent else None) or CommitMode.LAZY
        isolation = (self.isolation_level or (parent.isolation_level if parent else None)
                     or IsolationLevel.READ_COMMITTED)
        self.commit_mode, self.isolation_level = commit_mode, isolation
        if self.key is not None and self.store is None:
            self.store = get_store(self._store_arg)
        settings = get_settings()
        self._state = TransactionState.ACTIVE
        self._deadline = time.monotonic() + self.timeout if self.timeout is not None else None
        attributes: dict[str, Any] = {
            semconv.TRANSACTION_ISOLATION_LEVEL: isolation.value,
            semconv.TRANSACTION_COMMIT_MODE: commit_mode.value,
        }
        if self.key is not None:
            attributes[semconv.TRANSACTION_KEY] = self.key
        if self.store is not None:
            attributes[semconv.STORE_BACKEND] = self.store.backend
        name = semconv.transaction_span_name(self.key) if self.key else semconv.TRANSACTION_SPAN_NAME
        self._span = get_tracer().start_span(name, attributes=attributes)
        self._otel_token = otel_context.attach(trace.set_span_in_context(self._span))
        try:
            if self.store is not None and self.key is not None and self.isolation_level is IsolationLevel.SERIALIZABLE:
                wait = settings.lock_wait_seconds if self.timeout is None else min(settings.lock_wait_seconds,
                                                                                   self.timeout)
                self.logger.debug("Acquiring lock for transaction %r", self.key)
                self.store.acquire_lock(self._lock_name, self._holder, settings.lock_lease_seconds, wait)
                self._lease = _Lease(self.store, self._lock_name, self._holder, settings.lock_lease_seconds,
                                     self._deadline)
                keeper.add(self._lease)
                self._resolve()  # under the lock: what we read stays true until we commit
        except BaseException as exc:
            self._fail_span(exc)
            self._end_span(semconv.TRANSACTION_OUTCOMES[1])
            otel_context.detach(self._otel_token)
            self._otel_token = None
            self._state = TransactionState.ROLLED_BACK
            raise
        return super().__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        exc_type, exc_value, _ = exc_info
        if self._token is None:
            raise RuntimeError("Asymmetric use of context. Context exit called without an enter.")
        try:
            if exc_type is not None:
                if isinstance(exc_value, BaseException):
                    self._fail_span(exc_value)
                self.rollback()
                return  # the exception propagates
            if self.commit_mode is CommitMode.EAGER:
                self.commit()
            if self._parent is not None:
                return  # the parent takes responsibility (LAZY / OFF)
            if self.commit_mode is CommitMode.OFF:
                self.rollback()
            elif self.commit_mode is CommitMode.LAZY:
                self.commit()
        finally:
            self._reset()

    async def __aenter__(self) -> Self:
        return self.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self.__exit__(*exc_info)

    def _reset(self) -> None:
        parent = self._parent
        if parent is not None:
            parent.add_child(self)
        super().__exit__()
        if self._otel_token is not None:
            otel_context.detach(self._otel_token)
            self._otel_token = None
        outcome = self._outcome()
        self._end_span(outcome)
        if parent is not None and self._state is TransactionState.ROLLED_BACK:
            parent.rollback()

    def _outcome(self) -> str:
        committed, rolled_back, cached, deferred = semconv.TRANSACTION_OUTCOMES
        if self._state is TransactionState.ROLLED_BACK:
            return rolled_back
        if self._state is TransactionState.COMMITTED:
            return committed if self._wrote else cached
        return deferred

    @property
    def _lock_name(self) -> str:
        return f"txn:{self.key}"

    # --- engine hook-in (called by otelflow's engine for each task run inside a transaction) ---------
    def task_begin(self, task: Task[..., Any], task_run: TaskRun) -> tuple[bool, Any]:
        """Before a task run: ``(True, recorded result)`` when this key was committed with that task call
        (the engine then skips the call), else ``(False, None)``. Raises :class:`TransactionTimeout` past
        the timeout."""
        self._check_deadline()
        base = task.name if task_run.map_index is None else f"{task.name}[{task_run.map_index}]"
        with self._mutex:
            self._call_counts[base] += 1
            call_key = f"{base}#{self._call_counts[base]}"
            self._calls[task_run.id] = call_key
        if self.key is None or self.store is None:
            return False, None
        if self.state is TransactionState.COMMITTED and self._record is not None:
            entry = (self._record.get("tasks") or {}).get(call_key)
            if isinstance(entry, dict):
                return True, _decode_result(entry, task, self.logger)
        return False, None

    def task_completed(self, task: Task[..., Any], task_run: TaskRun, result: Any) -> None:
        """After a task run returned: stage its result for the record and register its hooks."""
        with self._mutex:
            call_key = self._calls.pop(task_run.id, None)
        if call_key is None:  # task_begin was not called (a direct call): number it now
            self.task_begin(task, task_run)
            with self._mutex:
                call_key = self._calls.pop(task_run.id)
        if self._state is TransactionState.COMMITTED or self._state is TransactionState.ROLLED_BACK:
            return
        with self._mutex:
            self.on_commit_hooks.extend(getattr(task, "on_commit_hooks", ()))
            self.on_rollback_hooks.extend(getattr(task, "on_rollback_hooks", ()))
            if self.key is not None and self.write_on_commit:
                try:
                    self._tasks[call_key] = _encode_result(result, f"task {task.name!r} (call {call_key})")
                except SerializationError as exc:
                    self._stage_errors.append(exc)  # raised at commit, which then rolls back
            self._state = TransactionState.STAGED

    def _defer(self, commit_step: Callable[[], None], rollback_step: Callable[[], None], pending: Any = None) -> None:
        """Run ``commit_step`` when this transaction commits, ``rollback_step`` when it rolls back (once).
        ``pending`` describes the work (a task run on a remote worker hands it back to the flow's transaction)."""
        if self._state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            (commit_step if self._state is TransactionState.COMMITTED else rollback_step)()
            return
        with self._mutex:
            self._deferred.append((commit_step, rollback_step))

    def _check_deadline(self) -> None:
        if self._deadline is not None and time.monotonic() > self._deadline:
            raise TransactionTimeout(
                f"Transaction {self.key!r} ran past its timeout of {self.timeout:g}s and is rolled back; "
                "raise timeout= or split the work into smaller transactions."
            )

    # --- commit / rollback ----------------------------------------------------------------------------
    def commit(self) -> bool:
        """Commit: children, then ``on_commit`` hooks, then the record write. True when this call committed;
        False when already committed or rolled back. On any failure: roll back, then raise."""
        if self._state in (TransactionState.ROLLED_BACK, TransactionState.COMMITTED):
            self._finish()
            return False
        try:
            self._check_deadline()
            if self._lease is not None and self._lease.lost:
                raise StoreError(f"Transaction {self.key!r} lost its lock (lease expired); rolled back.")
            if self.children or self.on_commit_hooks or self._staged_value is not None:
                self._resolve()
                if self._current_state() is TransactionState.COMMITTED:
                    self._finish()
                    return False
            if self._stage_errors:
                raise self._stage_errors[0]
            for child in self.children:
                child.commit()
            for hook in self.on_commit_hooks:
                self._run_hook(hook, "commit", raise_errors=True)
            if self.store is not None and self.key is not None and self.write_on_commit:
                self._write()
            else:
                self._wrote = True
            # The commit holds from here: only now the work task runs handed over (their cache entries) is done, so
            # a commit that fails leaves none of it behind. One at a time: a step that raises leaves the rest to the
            # rollback (their locks released).
            while self._deferred:
                commit_step, _ = self._deferred.pop(0)
                commit_step()
            self._unsettled = None
            if self._current_state() is not TransactionState.COMMITTED:
                self._state = TransactionState.COMMITTED
                self._event(semconv.EVENT_TRANSACTION_COMMIT)
        except BaseException as exc:
            self.logger.error("Transaction %r could not commit and is rolled back: %s", self.key, exc)
            self._fail_span(exc)
            self.rollback()
            raise
        self._finish()
        return True

    def _write(self) -> None:
        assert self.store is not None and self.key is not None
        ctx = FlowRunContext.get()
        record = {
            "version": _RECORD_VERSION,
            "key": self.key,
            "committed_at": time.time(),
            "flow_run_id": str(ctx.flow_run.id) if ctx is not None and ctx.flow_run is not None else None,
            "value": self._staged_value,
            "tasks": self._tasks,
        }
        try:
            text = json.dumps(record, separators=(",", ":"))
        except (TypeError, ValueError) as exc:  # pragma: no cover - entries are JSON-safe by construction
            raise SerializationError(f"Transaction {self.key!r} record is not JSON: {exc}") from exc
        fence = (self._lock_name, self._holder) if self._lease is not None else None
        # Not read yet (an empty transaction) and no overwrite: write only if absent -- one round trip that
        # also tells whether the key had been committed before.
        if_absent = not self._resolved and not self.overwrite
        # Now or never: if this call fails, the rollback must not be undone by the write landing later (a stalled
        # Redis runs it when it resumes). Until the call returns, the record may be there: the rollback revokes it.
        self._unsettled = text
        written = self.store.put(_NAMESPACE, self.key, text, if_absent=if_absent, fence=fence, notify=False,
                                 now_or_never=True)
        if written:
            self._wrote = True
        else:
            self._unsettled = None
            self._resolved = True
            self._state = TransactionState.COMMITTED  # it was committed before: a cache hit

    def rollback(self) -> bool:
        """Roll back: ``on_rollback`` hooks in reverse order (a failing one is logged and recorded, the others
        still run), then the children. True when this call rolled back; False when already finished or a
        hook failed."""
        if self._state in (TransactionState.ROLLED_BACK, TransactionState.COMMITTED):
            self._finish()
            return False
        ok = True
        try:
            self._revoke_record()  # the reverse of the commit: the record first, then the hooks
            for hook in reversed(self.on_rollback_hooks):
                ok = self._run_hook(hook, "rollback", raise_errors=False) and ok
            self._state = TransactionState.ROLLED_BACK
            deferred, self._deferred = self._deferred, []
            for _, rollback_step in reversed(deferred):
                rollback_step()
            for child in reversed(self.children):
                child.rollback()
            self._event(semconv.EVENT_TRANSACTION_ROLLBACK)
        finally:
            self._state = TransactionState.ROLLED_BACK
            self._finish()
        return ok

    def _revoke_record(self) -> None:
        """Take back the record of a commit that failed at or after its write (the write may have landed and its
        reply been lost). Best effort: when the store is unreachable, the write is refused if it lands later, but
        one that landed before its deadline stays (logged)."""
        text, self._unsettled = self._unsettled, None
        if text is None or self.store is None or self.key is None:
            return
        try:
            self.store.revoke(_NAMESPACE, self.key, text)
        except StoreError as exc:
            self.logger.warning(
                "Transaction %r is rolled back, but its record could not be taken back from %s (%s). If the store "
                "wrote it before the error, the key stays committed: delete it from namespace %r of the store.",
                self.key, self.store.display_url, exc, _NAMESPACE)

    def _run_hook(self, hook: Hook, kind: str, *, raise_errors: bool) -> bool:
        name = _hook_name(hook)
        should_log = getattr(hook, "log_on_run", True)
        if should_log:
            self.logger.info("Running %s hook %r", kind, name)
        try:
            _call_hook(hook, self)
        except Exception as exc:
            self.logger.error("An error was encountered while running %s hook %r: %s", kind, name, exc,
                              exc_info=True)
            self._event(semconv.EVENT_TRANSACTION_HOOK_FAILED, {
                semconv.TRANSACTION_HOOK_NAME: name,
                semconv.TRANSACTION_HOOK_KIND: kind,
                semconv.EXCEPTION_TYPE: type(exc).__name__,
                semconv.EXCEPTION_MESSAGE: _exported_message(exc),
            })
            if raise_errors:
                raise
            return False
        if should_log:
            self.logger.info("%s hook %r finished running successfully", kind.capitalize(), name)
        return True

    def _finish(self) -> None:
        """Done: release the lock, stop being current, end the span (also when ``__exit__`` never comes)."""
        if self._lease is not None:
            lease, self._lease = self._lease, None
            lease.release()
        if self._state in (TransactionState.COMMITTED, TransactionState.ROLLED_BACK):
            self._closed = True
            if self._otel_token is not None:
                # Its span stops being current with it: a transaction committed by hand, whose __exit__ never
                # comes, left its ended span current for everything after it in the thread.
                otel_context.detach(self._otel_token)
                self._otel_token = None
            if self._token is None or self._parent is None:
                self._end_span(self._outcome())

    # --- telemetry ------------------------------------------------------------------------------------
    def _event(self, name: str, attributes: dict[str, Any] | None = None) -> None:
        if self._span.is_recording():
            self._span.add_event(name, attributes)
            return
        # Our span has ended (a child committed or rolled back by its parent): tell the current span, by key.
        attrs: dict[str, Any] = dict(attributes or {})
        if self.key is not None:
            attrs[semconv.TRANSACTION_KEY] = self.key
        trace.get_current_span().add_event(name, attrs)

    def _fail_span(self, exc: BaseException) -> None:
        if self._span.is_recording():
            self._span.set_status(trace.Status(trace.StatusCode.ERROR, _exported_message(exc, with_type=True)))
            self._span.set_attribute(semconv.ERROR_TYPE, type(exc).__name__)

    def _end_span(self, outcome: str) -> None:
        if self._span_ended:
            return
        self._span_ended = True
        self._span.set_attribute(semconv.TRANSACTION_OUTCOME, outcome)
        self._span.end()

    def __repr__(self) -> str:
        return f"Transaction(key={self.key!r}, state={self._state.value})"


#: Prefect exposes the current transaction as ``TransactionContext.get()``.
TransactionContext = Transaction


def get_transaction() -> Transaction | None:
    """The current transaction, or ``None``. A transaction finished by an explicit ``commit()`` /
    ``rollback()`` stops being current even if its ``__exit__`` never runs."""
    txn: Transaction | None = Transaction.__var__.get(None)
    while txn is not None and txn._closed:
        txn = txn._parent
    return txn


@contextlib.contextmanager
def transaction(
    key: str | None = None,
    store: Store | str | None = None,
    commit_mode: CommitMode | None = None,
    isolation_level: IsolationLevel | None = None,
    overwrite: bool = False,
    write_on_commit: bool = True,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    timeout: float | None = None,
) -> Iterator[Transaction]:
    """Open a transaction for the block (Prefect's signature, plus ``timeout``).

    Example::

        with transaction(key="nightly-load", isolation_level=IsolationLevel.SERIALIZABLE) as txn:
            load()
            txn.set("rows", 10)
    """
    with Transaction(key=key, timeout=timeout, store=store, commit_mode=commit_mode,
                     isolation_level=isolation_level, overwrite=overwrite, write_on_commit=write_on_commit,
                     logger=logger) as txn:
        yield txn


@contextlib.asynccontextmanager
async def atransaction(
    key: str | None = None,
    store: Store | str | None = None,
    commit_mode: CommitMode | None = None,
    isolation_level: IsolationLevel | None = None,
    overwrite: bool = False,
    write_on_commit: bool = True,
    logger: logging.Logger | logging.LoggerAdapter[Any] | None = None,
    timeout: float | None = None,
) -> AsyncIterator[Transaction]:
    """``async with`` twin of :func:`transaction` (the same :class:`Transaction` underneath)."""
    async with Transaction(key=key, timeout=timeout, store=store, commit_mode=commit_mode,
                           isolation_level=isolation_level, overwrite=overwrite, write_on_commit=write_on_commit,
                           logger=logger) as txn:
        yield txn

"""The embedded store: one sqlite file, shared by the threads and processes of one machine.

Every operation is one sqlite statement or one ``BEGIN IMMEDIATE`` transaction, so concurrent
processes see each other's writes whole or not at all. The journal is WAL (readers never block the
writer); a writer waits up to ``busy_timeout`` for another writer. Locks are rows with a holder and
an expiry time (wall clock: all processes share the machine's clock).

Waiting (:meth:`SqliteStore.watch`): writes from this process wake waiters at once; writes from other
processes are noticed through ``PRAGMA data_version`` (a counter sqlite bumps when another connection
commits), checked every 25 ms -- a few microseconds per check.

URL: ``sqlite:////absolute/path.sqlite3`` (SQLAlchemy's convention: three slashes, then the path).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from otelflow.stores import (
    LockLost,
    SlotGrant,
    SlotUsage,
    Store,
    StoreError,
    StoreItem,
    StoreUnavailable,
    Watch,
    _check_names,
    _check_slot_request,
    _no_decay_error,
    _too_many_error,
)

__all__ = ["SqliteStore", "sqlite_url"]

_BUSY_TIMEOUT_MS = 30_000
_CHANGE_POLL_S = 0.025

_SCHEMA = (
    # Rowids grow with each insert (a replace is a new row), so ORDER BY id is write order.
    "CREATE TABLE IF NOT EXISTS kv (id INTEGER PRIMARY KEY, ns TEXT NOT NULL, key TEXT NOT NULL, "
    "value TEXT NOT NULL, UNIQUE (ns, key))",
    "CREATE TABLE IF NOT EXISTS locks (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires REAL NOT NULL)",
    # Counted slots: one row per (limit, holder) with its lease expiry; the decaying rate-limit level of a limit
    # as (level at time `at`), read as max(0, level - decay * (now - at)).
    "CREATE TABLE IF NOT EXISTS slots (ns TEXT NOT NULL, name TEXT NOT NULL, holder TEXT NOT NULL, "
    "occupy INTEGER NOT NULL, expires REAL NOT NULL, PRIMARY KEY (ns, name, holder))",
    "CREATE TABLE IF NOT EXISTS slot_decay (ns TEXT NOT NULL, name TEXT NOT NULL, level REAL NOT NULL, "
    "at REAL NOT NULL, PRIMARY KEY (ns, name))",
)


_INSERT = "INSERT OR REPLACE INTO kv (ns, key, value) VALUES (?, ?, ?)"
_INSERT_IF_ABSENT = "INSERT OR IGNORE INTO kv (ns, key, value) VALUES (?, ?, ?)"


def sqlite_url(path: str | os.PathLike[str]) -> str:
    """The store URL of a sqlite file: ``sqlite:///`` + its absolute path."""
    return "sqlite:///" + str(Path(path).absolute())


def _path_from_url(url: str) -> Path:
    if not url.startswith("sqlite:///") or len(url) <= len("sqlite:///"):
        raise StoreError(f"Bad sqlite store URL {url!r}: use sqlite:////absolute/path/to/store.sqlite3.")
    path = url[len("sqlite:///"):].split("?", 1)[0]
    if path == ":memory:":
        raise StoreError("An in-memory sqlite store cannot be shared between connections; use a file path.")
    return Path(path)


def _use_wal(conn: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (once per file; a no-op after that).

    The switch takes an exclusive lock and sqlite answers SQLITE_BUSY at once, without its busy handler, while
    another process opens or switches the same new file: two processes starting together (a flow and its input
    sender) made one fail with "database is locked". Retried for as long as any other statement would wait.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
            time.sleep(0.005)


_SELECT = "SELECT value FROM kv WHERE ns = ? AND key = ?"


def _private_file(path: Path) -> None:
    """Make the store file readable by its owner only before sqlite opens it: it holds variables, artifacts, cache
    entries and run input, which may be secrets. A folder it creates is 0700; a new file 0600 (sqlite gives its
    -wal and -shm files the same mode); an existing file of this user's that others could read is tightened."""
    from otelflow._internal.spool.files import open_private, private_dir

    private_dir(path.parent)
    os.close(open_private(path, os.O_RDWR))


class SqliteStore(Store):
    """:class:`~otelflow.stores.Store` on a sqlite file (the embedded default)."""

    backend = "sqlite"

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.path = _path_from_url(url)
        self._local = threading.local()
        self._changed = threading.Condition()
        self._generation = 0
        try:
            _private_file(self.path)
            conn = self._conn()
            _use_wal(conn)
            for statement in _SCHEMA:
                conn.execute(statement)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"Cannot open the sqlite store {self.path}: {exc}. Check that the folder is "
                                   "writable (OTELFLOW_HOME) or set OTELFLOW_STORE_URL.") from exc

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
        conn.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _conn(self) -> sqlite3.Connection:
        # One connection per thread (sqlite connections must not be shared), re-made after fork.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.pid != os.getpid():
            conn = self._connect()
            self._local.conn, self._local.pid = conn, os.getpid()
        return conn

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: {what} failed: {exc}") from exc

    def _notify(self) -> None:
        with self._changed:
            self._generation += 1
            self._changed.notify_all()

    # --- values ---------------------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> str | None:
        try:  # the hot path (every cache lookup): no context manager
            row = self._conn().execute(_SELECT, (namespace, key)).fetchone()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"sqlite store {self.path}: read failed: {exc}") from exc
        return None if row is None else str(row[0])

    def put(
        self,
        namespace: str,
        key: str,
        value: str,
        *,
        if_absent: bool = False,
        fence: tuple[str, str] | None = None,
        notify: bool = True,
        now_or_never: bool = False,
    ) -> bool:
        # now_or_never needs nothing here: a sqlite write is done or rolled back by the time the call returns or
        # raises; nothing is left queued that could land later.
        _check_names(namespace, key)
        sql = _INSERT_IF_ABSENT if if_absent else _INSERT
        conn = self._conn()
        if fence is None:  # the hot path (every transaction commit): no context manager
            try:
                written = conn.execute(sql, (namespace, key, value)).rowcount > 0
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: write failed: {exc}") from exc
            if written and notify:
                self._notify()
            return written
        with self._errors("write"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT holder, expires FROM locks WHERE name = ?", (fence[0],)).fetchone()
                if row is None or row[0] != fence[1] or row[1] <= time.time():
                    raise LockLost(
                        f"Lock {fence[0]!r} is no longer held by {fence[1]} (its lease expired"
                        f"{' and ' + str(row[0]) + ' took it' if row and row[0] != fence[1] else ''}); "
                        "nothing was written."
                    )
                written = conn.execute(sql, (namespace, key, value)).rowcount > 0
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if written and notify:
            self._notify()
        return written

    def delete(self, namespace: str, key: str) -> bool:
        with self._errors("delete"):
            deleted = self._conn().execute("DELETE FROM kv WHERE ns = ? AND key = ?", (namespace, key)).rowcount > 0
        if deleted:
            self._notify()
        return deleted

    def revoke(self, namespace: str, key: str, value: str) -> bool:
        # Only the compare-and-delete: no sqlite write can arrive after its call gave up (see put).
        with self._errors("revoke"):
            deleted = self._conn().execute("DELETE FROM kv WHERE ns = ? AND key = ? AND value = ?",
                                           (namespace, key, value)).rowcount > 0
        if deleted:
            self._notify()
        return deleted

    def items(self, namespace: str, prefix: str = "") -> list[StoreItem]:
        with self._errors("list"):
            rows = self._conn().execute(
                "SELECT key, value FROM kv WHERE ns = ? AND substr(key, 1, ?) = ? ORDER BY id",
                (namespace, len(prefix), prefix),
            ).fetchall()
        return [StoreItem(str(k), str(v)) for k, v in rows]

    def watch(self, namespace: str) -> Watch:
        return _SqliteWatch(self)

    # --- locks ----------------------------------------------------------------------------------
    def try_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        _check_names(name, holder)
        now = time.time()
        with self._errors("lock"):
            # One statement: insert, or take over an expired lock, or renew our own.
            return self._conn().execute(
                "INSERT INTO locks (name, holder, expires) VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET "
                "holder = excluded.holder, expires = excluded.expires "
                "WHERE locks.expires <= ? OR locks.holder = excluded.holder",
                (name, holder, now + lease_seconds, now),
            ).rowcount > 0

    def renew_lock(self, name: str, holder: str, lease_seconds: float) -> bool:
        with self._errors("lock renewal"):
            return self._conn().execute(
                "UPDATE locks SET expires = ? WHERE name = ? AND holder = ?",
                (time.time() + lease_seconds, name, holder),
            ).rowcount > 0

    def release_lock(self, name: str, holder: str) -> bool:
        with self._errors("lock release"):
            return self._conn().execute(
                "DELETE FROM locks WHERE name = ? AND holder = ?", (name, holder)
            ).rowcount > 0

    def lock_holder(self, name: str) -> str | None:
        with self._errors("lock read"):
            row = self._conn().execute(
                "SELECT holder FROM locks WHERE name = ? AND expires > ?", (name, time.time())
            ).fetchone()
        return None if row is None else str(row[0])

    # --- counted slots --------------------------------------------------------------------------
    def try_acquire_slots(
        self,
        names: list[str],
        occupy: int,
        holder: str,
        lease_seconds: float,
        *,
        namespace: str,
        mode: str = "concurrency",
    ) -> SlotGrant:
        _check_slot_request(names, occupy, holder, lease_seconds, mode)
        unique = list(dict.fromkeys(names))
        conn = self._conn()
        with self._errors("slot acquisition"):
            conn.execute("BEGIN IMMEDIATE")
            try:
                grant = self._acquire_in_txn(conn, unique, occupy, holder, lease_seconds, namespace, mode)
                conn.execute("COMMIT" if grant.acquired and grant.limited else "ROLLBACK")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return grant

    @staticmethod
    def _acquire_in_txn(conn: sqlite3.Connection, names: list[str], occupy: int, holder: str,
                        lease_seconds: float, namespace: str, mode: str) -> SlotGrant:
        now = time.time()
        found: list[str] = []
        limited: list[tuple[str, float]] = []  # (name, decay per second)
        too_many: list[str] = []
        no_decay: list[str] = []
        busy = False
        for name in names:
            row = conn.execute(_SELECT, (namespace, name)).fetchone()
            if row is None:
                continue
            found.append(name)
            record = json.loads(row[0])
            if not record.get("active", True):
                continue
            limit = int(record.get("limit", 0))
            decay = float(record.get("slot_decay_per_second") or 0.0)
            if occupy > limit:
                too_many.append(name)
                continue
            if mode == "rate_limit" and decay <= 0:
                no_decay.append(name)
                continue
            limited.append((name, decay))
            held = conn.execute(
                "SELECT COALESCE(SUM(occupy), 0) FROM slots WHERE ns = ? AND name = ? AND expires > ? AND holder != ?",
                (namespace, name, now, holder),
            ).fetchone()[0]
            level = 0.0
            if decay > 0:
                drow = conn.execute("SELECT level, at FROM slot_decay WHERE ns = ? AND name = ?",
                                    (namespace, name)).fetchone()
                if drow is not None:
                    level = max(0.0, float(drow[0]) - decay * max(0.0, now - float(drow[1])))
            if int(held) + level + occupy > limit + 1e-9:
                busy = True
        if too_many:
            raise _too_many_error(tuple(too_many))
        if no_decay:
            raise _no_decay_error(tuple(no_decay))
        if busy:
            return SlotGrant(False, tuple(found), tuple(n for n, _ in limited))
        for name, decay in limited:
            conn.execute("DELETE FROM slots WHERE ns = ? AND name = ? AND expires <= ?", (namespace, name, now))
            if mode == "rate_limit":
                drow = conn.execute("SELECT level, at FROM slot_decay WHERE ns = ? AND name = ?",
                                    (namespace, name)).fetchone()
                level = 0.0 if drow is None else max(0.0, float(drow[0]) - decay * max(0.0, now - float(drow[1])))
                conn.execute("INSERT OR REPLACE INTO slot_decay (ns, name, level, at) VALUES (?, ?, ?, ?)",
                             (namespace, name, level + occupy, now))
            else:
                conn.execute("INSERT OR REPLACE INTO slots (ns, name, holder, occupy, expires) VALUES (?, ?, ?, ?, ?)",
                             (namespace, name, holder, occupy, now + lease_seconds))
        return SlotGrant(True, tuple(found), tuple(n for n, _ in limited))

    def renew_slots(self, names: list[str], holder: str, lease_seconds: float, *, namespace: str) -> bool:
        marks = ",".join("?" * len(names))
        with self._errors("slot renewal"):
            return self._conn().execute(
                f"UPDATE slots SET expires = ? WHERE ns = ? AND holder = ? AND name IN ({marks}) AND expires > ?",
                (time.time() + lease_seconds, namespace, holder, *names, time.time()),
            ).rowcount > 0

    def release_slots(self, names: list[str], holder: str, *, namespace: str) -> int:
        marks = ",".join("?" * len(names))
        with self._errors("slot release"):
            return int(self._conn().execute(
                f"DELETE FROM slots WHERE ns = ? AND holder = ? AND name IN ({marks})", (namespace, holder, *names)
            ).rowcount)

    def slot_usage(self, name: str, *, namespace: str) -> SlotUsage:
        now = time.time()
        with self._errors("slot read"):
            conn = self._conn()
            rows = conn.execute("SELECT holder, occupy FROM slots WHERE ns = ? AND name = ? AND expires > ? "
                                "ORDER BY expires", (namespace, name, now)).fetchall()
            drow = conn.execute("SELECT level, at FROM slot_decay WHERE ns = ? AND name = ?",
                                (namespace, name)).fetchone()
            record = self.get(namespace, name)
        decaying = 0.0
        if drow is not None and record is not None:
            decay = float(json.loads(record).get("slot_decay_per_second") or 0.0)
            decaying = max(0.0, float(drow[0]) - decay * max(0.0, now - float(drow[1])))
        return SlotUsage({str(h): int(o) for h, o in rows}, decaying)

    def reset_slots(self, name: str, *, namespace: str) -> None:
        with self._errors("slot reset"):
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute("DELETE FROM slots WHERE ns = ? AND name = ?", (namespace, name))
                conn.execute("DELETE FROM slot_decay WHERE ns = ? AND name = ?", (namespace, name))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def close(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


class _SqliteWatch(Watch):
    """Wakes on this process's writes at once and on other processes' within ``_CHANGE_POLL_S``."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        with store._errors("watch"):
            self._conn = store._connect()
            self._version = self._data_version()
        self._generation = store._generation

    def _data_version(self) -> int:
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + max(timeout, 0.0)
        store = self._store
        while True:
            with store._changed:
                if store._generation != self._generation:
                    self._generation = store._generation
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                store._changed.wait(min(remaining, _CHANGE_POLL_S))
                if store._generation != self._generation:
                    self._generation = store._generation
                    return True
            with store._errors("watch"):
                version = self._data_version()
            if version != self._version:
                self._version = version
                return True

    def close(self) -> None:
        self._conn.close()

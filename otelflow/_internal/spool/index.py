"""An index of the spool: which flow runs it holds, and where each trace's lines are.

``otelflow runs`` / ``show`` / ``logs`` read this small sqlite file (next to the spool folder) instead of
re-parsing every spool file on every call. It is brought up to date incrementally on every call: each spool
file's indexed length is remembered, and only the complete lines appended since are parsed. A spool file
that shrank, was replaced or was deleted (``spool prune``) has its rows dropped and is re-read; an index of
another schema version, or one sqlite cannot read, is rebuilt from the spool (the spool is the truth, the
index a cache).

Several writers appending while several CLI processes read is normal: each file's update is one
``BEGIN IMMEDIATE`` transaction that re-checks the file's indexed length, so two readers never index a line
twice, and a line still being written (no newline yet) is left for the next call.

Tables: ``runs`` holds one row per flow-run span (and one per span known by pending records: the latest of them
gives its state, ``Running`` or what it says, e.g. ``Paused``), ``lines`` one row per (spool line, trace) with
the line's offset and length and the earliest and latest time of the trace's items in it, so a trace is read back
from only its own lines, and its logs in time order one line at a time (:meth:`RunIndex.iter_logs`), and
``task_counts`` how many task runs each flow run had (and how many did not complete), per spool file.
"""

from __future__ import annotations

import contextlib
import gc
import heapq
import json
import os
import sqlite3
import zlib
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otelflow import semconv
from otelflow._internal.spool.liveness import writer_gone_at
from otelflow._internal.spool.otlp_json import cached_span, line_bytes
from otelflow._internal.spool.reader import (
    LogRecord,
    Skipped,
    SpanRecord,
    iter_complete_lines,
    parse_log_line,
    parse_span_line,
    spool_files,
)

__all__ = [
    "FAILED_STATES",
    "LIVE_STATES",
    "PENDING_ATTR",
    "PENDING_PARENT_ATTR",
    "LogStream",
    "RunIndex",
    "RunRow",
    "index_path_for",
    "no_gc",
]

# Written by the engine on an early 1 µs record of a run's span (see DESIGN: pending spans). A later pending
# record of the same span (a paused run, one waiting for input) says its state (``otelflow.run.state``,
# e.g. ``Paused``) and why (``otelflow.run.state_message``).
PENDING_ATTR = semconv.SPAN_PENDING
PENDING_PARENT_ATTR = semconv.PENDING_PARENT_SPAN_ID
# States of a run not ended yet (known by its pending records): settled Crashed once its process is gone.
LIVE_STATES = ("Running", "Paused")
_LIVE_SQL = "('Running', 'Paused')"

_SCHEMA_VERSION = "5"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, signal TEXT NOT NULL,
    ino INTEGER NOT NULL, head BLOB NOT NULL, offset INTEGER NOT NULL, bad INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS runs (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, pending INTEGER NOT NULL, parent_id TEXT,
    flow_name TEXT, run_id TEXT, run_name TEXT, state TEXT, start INTEGER NOT NULL, end INTEGER NOT NULL,
    status_code INTEGER, tags TEXT, service TEXT, file_id INTEGER NOT NULL, seen INTEGER NOT NULL,
    PRIMARY KEY (trace_id, span_id, pending));
CREATE INDEX IF NOT EXISTS runs_start ON runs (start);
CREATE INDEX IF NOT EXISTS runs_run_id ON runs (run_id);
CREATE INDEX IF NOT EXISTS runs_file ON runs (file_id);
CREATE TABLE IF NOT EXISTS lines (
    id INTEGER PRIMARY KEY AUTOINCREMENT, trace_id TEXT NOT NULL, file_id INTEGER NOT NULL,
    offset INTEGER NOT NULL, length INTEGER NOT NULL, items INTEGER NOT NULL, tmin INTEGER NOT NULL,
    tmax INTEGER NOT NULL, spans BLOB);
CREATE INDEX IF NOT EXISTS lines_trace ON lines (trace_id, tmin);
CREATE INDEX IF NOT EXISTS lines_file ON lines (file_id);
CREATE TABLE IF NOT EXISTS task_counts (
    flow_run_id TEXT NOT NULL, file_id INTEGER NOT NULL, tasks INTEGER NOT NULL, not_completed INTEGER NOT NULL,
    PRIMARY KEY (flow_run_id, file_id));
CREATE INDEX IF NOT EXISTS task_counts_file ON task_counts (file_id);
"""
# A span's row replaces what was there. Of a span's pending records the latest gives the row's state and the rest:
# the one ending last (``seen``), a tie going to the one indexed last. The engine starts every pending record when
# the run started and ends a later one when it is written (a record starting then would do as well). The row's
# start stays the earliest.
_NEWER = "(excluded.pending = 0 OR excluded.seen >= runs.seen)"
_UPSERT_RUN = (
    "INSERT INTO runs (trace_id, span_id, pending, parent_id, flow_name, run_id, run_name, state, start, end,"
    " status_code, tags, service, file_id, seen) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT (trace_id, span_id, pending) DO UPDATE SET "
    + ", ".join(f"{column} = CASE WHEN {_NEWER} THEN excluded.{column} ELSE runs.{column} END" for column in (
        "parent_id", "flow_name", "run_id", "run_name", "state", "status_code", "tags", "service", "file_id"))
    + ", start = CASE WHEN excluded.pending = 0 THEN excluded.start ELSE MIN(runs.start, excluded.start) END"
    ", end = CASE WHEN excluded.pending = 0 THEN excluded.end ELSE MAX(runs.end, excluded.end) END"
    ", seen = MAX(runs.seen, excluded.seen)"
)
_HEAD = 64  # bytes of a file's start remembered to notice a file replaced under the same name and inode
_BATCH = 2000


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector off for a while: reading a large trace makes millions of objects that all live
    on, and each of the collector's passes would walk them (the reading took twice as long). Nothing read from the
    spool makes reference cycles. What is alive at the end is then frozen (``gc.freeze``): the collector never
    walks it again (the first pass after a 100k-span read took 0.4 s); reference counting still frees it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was:
            gc.enable()


def index_path_for(spool: Path) -> Path:
    """The index file for a spool folder: next to it (``~/.otelflow/spool-index.sqlite``)."""
    return spool.parent / f"{spool.name}-index.sqlite"


@dataclass(slots=True)
class RunRow:
    """A flow run as the index knows it.

    A run known only by its pending records shows as ``Running`` (or the state its latest pending record says,
    e.g. ``Paused``: still ``running``), or as ``Crashed`` once the process that wrote it is gone
    (:mod:`otelflow._internal.spool.liveness`); ``end`` is then that process's last write.
    """

    trace_id: str
    span_id: str
    parent_id: str | None
    flow_name: str
    run_id: str
    run_name: str
    state: str
    start: int
    end: int
    status_code: int
    tags: list[str]
    service: str
    running: bool
    task_runs: int = 0
    task_runs_not_completed: int = 0
    pending: bool = False  # known only by its pending record (no span yet): running, or crashed


_RUN_SELECT = (
    "SELECT r.trace_id, r.span_id, r.parent_id, r.flow_name, r.run_id, r.run_name, r.state, r.start, r.end,"
    " r.status_code, r.tags, r.service, r.pending,"
    " (SELECT COALESCE(SUM(t.tasks), 0) FROM task_counts t WHERE t.flow_run_id = r.run_id),"
    " (SELECT COALESCE(SUM(t.not_completed), 0) FROM task_counts t WHERE t.flow_run_id = r.run_id)"
    " FROM runs r"
)
# The final states of a run that did not complete (NotReady: it never ran); one list for the index, the CLI and the UI.
FAILED_STATES = frozenset({"Failed", "Crashed", "TimedOut", "Cancelled", "NotReady"})


def _row(values: Sequence[Any]) -> RunRow:
    try:
        tags = json.loads(values[10]) if values[10] else []
    except ValueError:
        tags = []
    return RunRow(
        trace_id=values[0], span_id=values[1], parent_id=values[2], flow_name=values[3] or "",
        run_id=values[4] or "", run_name=values[5] or "", state=values[6] or "", start=values[7], end=values[8],
        status_code=values[9] or 0, tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        service=values[11] or "", running=bool(values[12]) and values[6] in LIVE_STATES, task_runs=values[13] or 0,
        task_runs_not_completed=values[14] or 0, pending=bool(values[12]),
    )


class RunIndex:
    """The spool's run index; use as a context manager. :meth:`refresh` brings it up to date."""

    def __init__(self, spool: Path, path: Path | None = None) -> None:
        self.spool = spool
        self.path = path if path is not None else index_path_for(spool)
        self.skipped = Skipped()
        self._gone: dict[str, int] = {}
        self._db = self._open()

    # --- opening ----------------------------------------------------------------------------------
    def _connect(self, target: str) -> sqlite3.Connection:
        if target != ":memory:":
            # Owner-only before sqlite opens it (its -wal and -shm files take the same mode): run names, states.
            from otelflow._internal.spool.files import open_private

            os.close(open_private(Path(target), os.O_RDWR))
        db = sqlite3.connect(target, timeout=30.0, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 30000")
        if target != ":memory:":
            db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        return db

    def _open(self) -> sqlite3.Connection:
        if not self.spool.is_dir():
            # Nothing recorded yet: answer from memory rather than create files in a home nobody has used.
            db = self._connect(":memory:")
            self._ensure_schema(db)
            return db
        try:
            db = self._connect(str(self.path))
            self._ensure_schema(db)
            return db
        except sqlite3.DatabaseError:
            # Not a database we can read (truncated, foreign, another version gone wrong): it is only a cache.
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(f"{self.path}{suffix}")
            try:
                db = self._connect(str(self.path))
                self._ensure_schema(db)
                return db
            except (sqlite3.DatabaseError, OSError):
                pass
        except OSError:
            pass
        # A read-only home: index in memory for this call (slower, still correct).
        db = self._connect(":memory:")
        self._ensure_schema(db)
        return db

    def _ensure_schema(self, db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            found = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if found is None or found[0] != _SCHEMA_VERSION:
                for table in ("files", "runs", "lines", "task_counts"):
                    db.execute(f"DROP TABLE IF EXISTS {table}")
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema', ?)", (_SCHEMA_VERSION,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- keeping it up to date ----------------------------------------------------------------------
    def refresh(self) -> None:
        """Index the complete lines appended to the spool since the last call; forget deleted files."""
        with no_gc():
            self._refresh()

    def _refresh(self) -> None:
        db = self._db
        present = {p.name: p for signal in ("traces", "logs") for p in spool_files(self.spool, signal)}
        known = {name: (fid, ino, offset) for fid, name, ino, offset in
                 db.execute("SELECT id, name, ino, offset FROM files")}
        gone = [fid for name, (fid, _, _) in known.items() if name not in present]
        if gone:
            with self._write():
                for fid in gone:
                    self._forget(fid)
        for name, path in present.items():
            try:
                st = path.stat()
            except OSError:
                continue
            seen = known.get(name)
            if seen is not None and seen[1] == st.st_ino and seen[2] == st.st_size:
                continue  # unchanged: the common case costs one stat
            self._index_file(path, name.split("-", 1)[0])
        self._settle_orphans()

    def _settle_orphans(self) -> None:
        """Mark ``Crashed`` the runs still live (``Running``, ``Paused``) whose process is gone (SIGKILL, OOM killer,
        power cut).

        Only files holding such runs are checked (one ``flock`` attempt each). Settled for good: a gone process
        never comes back, and a real span that arrives later (shipped from elsewhere) still supersedes the row.
        """
        files = self._db.execute(
            "SELECT DISTINCT f.id, f.name FROM runs r JOIN files f ON f.id = r.file_id"
            f" WHERE r.pending = 1 AND r.state IN {_LIVE_SQL} AND NOT EXISTS (SELECT 1 FROM runs x"
            " WHERE x.trace_id = r.trace_id AND x.span_id = r.span_id AND x.pending = 0)"
        ).fetchall()
        for fid, name in files:
            when = self.writer_gone_at(name)
            if when is not None:
                with self._write():
                    self._db.execute(
                        "UPDATE runs SET state = 'Crashed', status_code = 2, end = MAX(start, ?)"
                        f" WHERE file_id = ? AND pending = 1 AND state IN {_LIVE_SQL}", (when, fid))

    def writer_gone_at(self, name: str) -> int | None:
        """When the process that wrote spool file ``name`` last wrote to it, if that process is gone (ns).

        Only "gone" is remembered (it is final): a writer alive now is asked again on the next refresh.
        """
        when = self._gone.get(name)
        if when is None:
            when = writer_gone_at(self.spool, name)
            if when is not None:
                self._gone[name] = when
        return when

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _forget(self, fid: int) -> None:
        for table in ("lines", "runs", "task_counts"):
            self._db.execute(f"DELETE FROM {table} WHERE file_id = ?", (fid,))
        self._db.execute("DELETE FROM files WHERE id = ?", (fid,))

    def _index_file(self, path: Path, signal: str) -> None:
        db = self._db
        try:
            handle = open(path, "rb")  # noqa: SIM115
        except OSError:
            return
        with handle, self._write():
            st = os.fstat(handle.fileno())
            head = handle.read(_HEAD)
            row = db.execute("SELECT id, ino, head, offset FROM files WHERE name = ?", (path.name,)).fetchone()
            if row is not None:
                fid, ino, old_head, offset = row
                if ino != st.st_ino or st.st_size < offset or head[: len(old_head)] != old_head:
                    self._forget(fid)  # replaced or truncated: read it again from the start
                    row = None
            if row is None:
                fid = db.execute("INSERT INTO files (name, signal, ino, head, offset) VALUES (?, ?, ?, ?, 0)",
                                 (path.name, signal, st.st_ino, head)).lastrowid
                offset = 0
            elif offset >= st.st_size:
                return
            if len(head) > len(row[2] if row is not None else b""):
                db.execute("UPDATE files SET head = ? WHERE id = ?", (head, fid))
            before = self.skipped.count
            end = self._scan(handle, path.name, signal, fid, offset, st.st_size)
            db.execute("UPDATE files SET offset = ?, bad = bad + ? WHERE id = ?",
                       (end, self.skipped.count - before, fid))

    def _scan(self, handle: Any, name: str, signal: str, fid: int, start: int, size: int) -> int:
        lines: list[tuple[str, int, int, int, int, int, int, bytes | None]] = []
        runs: list[tuple[Any, ...]] = []
        tasks: dict[str, list[int]] = {}  # flow run id -> [task runs, not completed]
        end = start
        for offset, line in iter_complete_lines(handle, start, size):
            end = offset + len(line) + 1
            if not line.strip():
                continue
            where = f"{name}:{offset}"
            if signal == "traces":
                damaged: list[int] = []
                by_trace: dict[str, list[SpanRecord]] = {}
                for span in parse_span_line(line, self.skipped, where, damaged):
                    by_trace.setdefault(span.trace_id, []).append(span)
                    kind = span.attributes.get(semconv.RUN_TYPE)
                    if kind == semconv.RUN_TYPE_FLOW:
                        runs.append(self._run_values(span, fid))
                    elif kind == semconv.RUN_TYPE_TASK and span.attributes.get(PENDING_ATTR) is not True:
                        flow_run = span.attributes.get(semconv.FLOW_RUN_ID)
                        if isinstance(flow_run, str):
                            tally = tasks.setdefault(_storable(flow_run), [0, 0])
                            tally[0] += 1
                            tally[1] += span.attributes.get(semconv.RUN_STATE) in FAILED_STATES
                for trace_id, spans in by_trace.items():
                    starts = [span.start for span in spans]
                    lines.append((trace_id, fid, offset, len(line), len(spans), min(starts), max(starts),
                                  _encode_spans(spans, damaged)))
            else:
                counts: dict[str, list[int]] = {}  # trace id -> [items, earliest time, latest time]
                per_span: dict[str, dict[str, int]] = {}  # trace id -> span id -> items
                for record in parse_log_line(line, self.skipped, where):
                    if record.trace_id:
                        seen = counts.get(record.trace_id)
                        if seen is None:
                            counts[record.trace_id] = [1, record.time, record.time]
                            per_span[record.trace_id] = {record.span_id or "": 1}
                        else:
                            seen[0] += 1
                            seen[1] = min(seen[1], record.time)
                            seen[2] = max(seen[2], record.time)
                            spans_seen = per_span[record.trace_id]
                            key = record.span_id or ""
                            spans_seen[key] = spans_seen.get(key, 0) + 1
                lines.extend((trace_id, fid, offset, len(line), n, low, high, _encode_counts(per_span[trace_id]))
                             for trace_id, (n, low, high) in counts.items())
            if len(lines) >= _BATCH or len(runs) >= _BATCH:
                self._flush(lines, runs)
        self._flush(lines, runs)
        self._db.executemany(
            "INSERT INTO task_counts (flow_run_id, file_id, tasks, not_completed) VALUES (?,?,?,?) ON CONFLICT"
            " (flow_run_id, file_id) DO UPDATE SET tasks = tasks + excluded.tasks,"
            " not_completed = not_completed + excluded.not_completed",
            [(flow_run, fid, n, bad) for flow_run, (n, bad) in tasks.items()],
        )
        return end

    def _flush(self, lines: list[tuple[str, int, int, int, int, int, int, bytes | None]],
               runs: list[tuple[Any, ...]]) -> None:
        if lines:
            self._db.executemany(
                "INSERT INTO lines (trace_id, file_id, offset, length, items, tmin, tmax, spans)"
                " VALUES (?,?,?,?,?,?,?,?)", lines)
            lines.clear()
        if runs:
            self._db.executemany(_UPSERT_RUN, runs)
            runs.clear()

    @staticmethod
    def _run_values(span: SpanRecord, fid: int) -> tuple[Any, ...]:
        attrs = span.attributes
        pending = attrs.get(PENDING_ATTR) is True and span.parent_id is not None
        if pending:
            span_id: str = span.parent_id or ""
            parent = attrs.get(PENDING_PARENT_ATTR)
            parent_id = parent.lower() if isinstance(parent, str) and parent else None
            said = attrs.get(semconv.RUN_STATE)
            state = said if isinstance(said, str) and said else "Running"
        else:
            span_id, parent_id = span.span_id, span.parent_id
            state = str(attrs.get(semconv.RUN_STATE) or ("Failed" if span.status_code == 2 else "Completed"))
        tags = attrs.get(semconv.TAGS)
        return (
            span.trace_id, span_id, int(pending), parent_id, _storable(str(attrs.get(semconv.FLOW_NAME, "") or "")),
            _storable(str(attrs.get(semconv.RUN_ID, "") or "")), _storable(str(attrs.get(semconv.RUN_NAME, "") or "")),
            _storable(state), span.start, span.end, span.status_code,
            json.dumps(tags) if isinstance(tags, list) else None,
            _storable(str(span.resource.get("service.name", "") or "")), fid, span.end,
        )

    # --- queries ----------------------------------------------------------------------------------------
    def runs(
        self,
        *,
        flow: str | None = None,
        states: Sequence[str] = (),
        since: int | None = None,
        until: int | None = None,
        text: str | None = None,
        limit: int | None = None,
        offset: int = 0,
        roots: bool = False,
    ) -> list[RunRow]:
        """Flow runs, newest first; a run with only pending records is ``Running`` (or ``Paused``...).

        ``since``/``until``: started in that time range. ``text``: a run id or trace id starting with it, or a run
        name containing it (case-insensitive). ``roots``: only flow runs with no parent span (not subflows, not runs
        started from another process's span). ``limit``/``offset`` page through them.
        """
        where, params = self._run_filter(flow=flow, states=states, since=since, until=until, text=text, roots=roots)
        sql = f"{_RUN_SELECT} WHERE {where} ORDER BY r.start DESC"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            params.extend((-1 if limit is None else limit, offset))
        return [_row(v) for v in self._db.execute(sql, params)]

    def count_matching(
        self,
        *,
        flow: str | None = None,
        states: Sequence[str] = (),
        since: int | None = None,
        until: int | None = None,
        text: str | None = None,
        roots: bool = False,
    ) -> int:
        """How many flow runs :meth:`runs` gives with these filters (and no limit)."""
        where, params = self._run_filter(flow=flow, states=states, since=since, until=until, text=text, roots=roots)
        return int(self._db.execute(f"SELECT COUNT(*) FROM runs r WHERE {where}", params).fetchone()[0])

    @staticmethod
    def _run_filter(*, flow: str | None, states: Sequence[str], since: int | None, until: int | None,
                    text: str | None, roots: bool) -> tuple[str, list[Any]]:
        where = ["(r.pending = 0 OR NOT EXISTS (SELECT 1 FROM runs x WHERE x.trace_id = r.trace_id"
                 " AND x.span_id = r.span_id AND x.pending = 0))"]
        params: list[Any] = []
        if flow is not None:
            where.append("lower(r.flow_name) = lower(?)")
            params.append(flow)
        if states:
            where.append(f"lower(r.state) IN ({','.join('?' * len(states))})")
            params.extend(s.lower() for s in states)
        if since is not None:
            where.append("r.start >= ?")
            params.append(since)
        if until is not None:
            where.append("r.start <= ?")
            params.append(until)
        if text is not None and text.strip():
            needle = text.strip().lower()
            escaped = needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("(lower(r.run_id) LIKE ? ESCAPE '\\' OR r.trace_id LIKE ? ESCAPE '\\'"
                         " OR lower(r.run_name) LIKE ? ESCAPE '\\')")
            params.extend((escaped + "%", escaped + "%", "%" + escaped + "%"))
        if roots:
            where.append("r.parent_id IS NULL")
        return " AND ".join(where), params

    def count_runs(self) -> int:
        """How many flow runs (pending or finished) the index knows."""
        return int(self._db.execute("SELECT COUNT(DISTINCT trace_id || span_id) FROM runs").fetchone()[0])

    def flow_names(self) -> list[str]:
        """The names of the flows with runs in the index, sorted."""
        return [name for (name,) in self._db.execute(
            "SELECT DISTINCT flow_name FROM runs WHERE flow_name IS NOT NULL ORDER BY lower(flow_name)")]

    def state_names(self) -> list[str]:
        """The states flow runs are in, sorted."""
        where, params = self._run_filter(flow=None, states=(), since=None, until=None, text=None, roots=False)
        return [name for (name,) in self._db.execute(
            f"SELECT DISTINCT r.state FROM runs r WHERE {where} AND r.state IS NOT NULL AND r.state != ''"
            " ORDER BY r.state", params)]

    def damaged(self) -> tuple[int, str | None]:
        """How many damaged lines indexing has met in the spool files still there (by anyone, ever), and the first
        file holding one."""
        total, first = self._db.execute(
            "SELECT COALESCE(SUM(bad), 0), (SELECT name FROM files WHERE bad > 0 ORDER BY name LIMIT 1)"
            " FROM files").fetchone()
        return int(total), first

    def version(self) -> str:
        """A token that changes whenever what the index knows changes (lines indexed, files gone, runs settled
        ``Crashed``): a cache key for what is read from it."""
        files = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(offset), 0), COALESCE(MAX(id), 0) FROM files").fetchone()
        lines = self._db.execute("SELECT COALESCE(MAX(id), 0) FROM lines").fetchone()
        crashed = self._db.execute("SELECT COUNT(*) FROM runs WHERE state = 'Crashed'").fetchone()
        return f"{files[0]}.{files[1]}.{files[2]}.{lines[0]}.{crashed[0]}"

    def trace_runs(self, trace_id: str) -> list[RunRow]:
        """The flow runs of one trace (real and pending records), oldest first."""
        sql = f"{_RUN_SELECT} WHERE r.trace_id = ? ORDER BY r.start"
        return [_row(v) for v in self._db.execute(sql, (trace_id,))]

    def find(self, ident: str) -> list[RunRow]:
        """Flow runs ``ident`` may mean: a run id or its prefix, a run name, a trace id or its prefix.

        A trace id names the trace's root flow run(s). Newest first, pending records folded into real ones.
        """
        ident = ident.strip().lower()
        if not ident:
            return []
        like = ident.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        rows = self._db.execute(
            f"{_RUN_SELECT} WHERE lower(r.run_id) LIKE ? ESCAPE '\\' OR lower(r.run_name) = ?"
            " OR r.trace_id LIKE ? ESCAPE '\\' ORDER BY r.start DESC",
            (like, ident, like),
        ).fetchall()
        found: dict[tuple[str, str], RunRow] = {}
        for values in rows:
            row = _row(values)
            by_trace = row.trace_id.startswith(ident) and not (
                row.run_id.lower().startswith(ident) or row.run_name.lower() == ident)
            if by_trace and row.parent_id is not None and self._has_flow(row.trace_id, row.parent_id):
                continue  # a trace id means its root run, not every flow run in it
            key = (row.trace_id, row.span_id)
            if key not in found or (found[key].pending and not row.pending):
                found[key] = row
        return sorted(found.values(), key=lambda r: r.start, reverse=True)

    def log_writers_gone(self, trace_id: str) -> bool:
        """True when every process that wrote log records of the trace is gone (nothing more will come from them;
        False when that cannot be told)."""
        names = [name for (name,) in self._db.execute(
            "SELECT DISTINCT f.name FROM lines l JOIN files f ON f.id = l.file_id WHERE l.trace_id = ?"
            " AND f.signal = 'logs'", (trace_id,))]
        return bool(names) and all(self.writer_gone_at(name) is not None for name in names)

    def _has_flow(self, trace_id: str, span_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM runs WHERE trace_id = ? AND span_id = ?",
                                (trace_id, span_id)).fetchone() is not None

    def line_locations(self, trace_id: str, signal: str) -> list[tuple[str, int, int]]:
        """``(file name, offset, length)`` of the spool lines holding items of one trace, in file order."""
        return [(name, offset, length) for name, offset, length in self._db.execute(
            "SELECT f.name, l.offset, l.length FROM lines l JOIN files f ON f.id = l.file_id"
            " WHERE l.trace_id = ? AND f.signal = ? ORDER BY f.name, l.offset",
            (trace_id, signal),
        )]

    def read_spans(self, trace_id: str) -> list[SpanRecord]:
        """Every span record (pending ones included, with their ``source`` file) of one trace.

        From the decoded copy the index keeps of each of the trace's lines (see :func:`_encode_spans`: 4x quicker
        than parsing OTLP/JSON again); from the spool line itself when that copy cannot be used. Damage found in a
        line when it was indexed is counted again, as if the line had been read.
        """
        out: list[SpanRecord] = []
        rows = self._db.execute(
            "SELECT f.name, l.offset, l.length, l.spans FROM lines l JOIN files f ON f.id = l.file_id"
            " WHERE l.trace_id = ? AND f.signal = 'traces' ORDER BY f.name, l.offset", (trace_id,))
        with self.open_lines() as reader:
            for name, offset, length, blob in rows:
                where = f"{name}:{offset}"
                cached = _decode_spans(blob, trace_id) if blob is not None else None
                if cached is not None:
                    spans, damaged = cached
                    for rank in damaged:
                        self.skipped.add(where, rank)
                else:
                    line = reader.read(name, offset, length)
                    if line is None:
                        continue
                    spans = [span for span in parse_span_line(line, self.skipped, where) if span.trace_id == trace_id]
                for span in spans:
                    if span.attributes.get(PENDING_ATTR) is True:
                        span.source = name  # its writer's liveness decides Running/Crashed
                    out.append(span)
        return out

    def log_lines(self, trace_id: str) -> list[tuple[int, dict[str, int] | None]]:
        """The trace's log lines: ``(line id, how many records of each span it holds)`` (None: not known, read it
        to know), for reading only the lines of some runs (``LogStream.read(lines)``)."""
        return [(line_id, _decode_counts(blob)) for line_id, blob in self._db.execute(
            "SELECT l.id, l.spans FROM lines l JOIN files f ON f.id = l.file_id WHERE l.trace_id = ?"
            " AND f.signal = 'logs'", (trace_id,))]

    def read_logs(self, trace_id: str) -> list[LogRecord]:
        """Every log record of one trace, in time order (all in memory: :meth:`iter_logs` streams them)."""
        return list(self.iter_logs(trace_id))

    def iter_logs(self, trace_id: str) -> Iterator[LogRecord]:
        """The log records of one trace in time order, read one spool line at a time (see :class:`LogStream`)."""
        return LogStream(self, trace_id).read()

    def open_lines(self) -> _LineReader:
        """A reader of spool lines by (file name, offset, length); close it (or use it as a context manager)."""
        return _LineReader(self.spool)


# --- the decoded copy of a trace line's spans ------------------------------------------------------------------
#
# `show` of a 100k-task run spent 1.2 s in json.loads of 140 MB of OTLP/JSON (two objects per attribute) and 1.5 s
# decoding it. The index keeps, per (trace line, trace), the spans as decoded, zlib-compressed (~50 bytes a span):
# plain JSON; when the spans of the line have the same attribute names (a map's runs), those names and the values
# they all share once, and each span's other values as a list. Written from records the codec checked; read back
# with light checks, and any surprise sends the reader back to the spool line (the spool is the truth).

_SHAREABLE = (str, int, float, bool, type(None))  # values one object may stand for in every span (not lists)


def _shared_attributes(spans: list[SpanRecord]) -> tuple[dict[str, Any], list[str]] | None:
    """(the attributes every span has, the values common to all filled in, the others None; the other names), when
    every span has the same attribute names in the same order."""
    if len(spans) < 2:
        return None
    first = spans[0].attributes
    names = list(first)
    if any(len(span.attributes) != len(names) or list(span.attributes) != names for span in spans):
        return None
    template: dict[str, Any] = {}
    varying: list[str] = []
    for name in names:
        value = first[name]
        kind = type(value)
        if kind in _SHAREABLE and value == value and all(
                type(other := span.attributes[name]) is kind and other == value for span in spans):
            template[name] = value
        else:
            template[name] = None
            varying.append(name)
    return template, varying


def _encode_spans(spans: list[SpanRecord], damaged: list[int]) -> bytes | None:
    """The spans of one line (and the ranks of its damaged items) as a compact blob; None if they cannot be.

    Events and links are JSON text inside it: decoded only for the spans that need them (``SpanRecord.events``).
    """
    resources: dict[int, int] = {}
    distinct: list[dict[str, Any]] = []
    shared = _shared_attributes(spans)
    items = []
    try:
        for span in spans:
            rank = resources.get(id(span.resource))
            if rank is None:
                rank = resources[id(span.resource)] = len(distinct)
                distinct.append(span.resource)
            events, links = span.events, span.links
            attributes: Any = span.attributes
            if shared is not None:
                attributes = [attributes[name] for name in shared[1]]
            items.append((span.span_id, span.parent_id, span.name, span.start, span.end, span.status_code,
                          span.status_message, attributes, json.dumps(events) if events else 0,
                          json.dumps(links) if links else 0, rank))
        text = json.dumps((distinct, shared or 0, items, sorted(set(damaged))), separators=(",", ":"))
    except (ValueError, TypeError, RecursionError):
        return None
    return zlib.compress(text.encode("ascii"), 1)


def _decode_spans(blob: bytes, trace_id: str) -> tuple[list[SpanRecord], list[int]] | None:
    """What :func:`_encode_spans` wrote, as records of ``trace_id``; None when the blob is not what it wrote."""
    try:
        distinct, shared, items, damaged = json.loads(zlib.decompress(blob))
        template: dict[str, Any] | None = None
        varying: list[str] = []
        if shared:
            template, varying = shared
            if type(template) is not dict or type(varying) is not list:
                return None
        out = []
        names: dict[str, str] = {}  # one copy of each span name
        for span_id, parent_id, name, start, end, code, message, attributes, events, links, rank in items:
            if not (type(span_id) is str and type(name) is str and type(start) is int and type(end) is int
                    and (parent_id is None or type(parent_id) is str) and type(code) is int
                    and type(message) is str):
                return None
            if type(attributes) is list and template is not None and len(attributes) == len(varying):
                values = attributes
                attributes = template.copy()  # the names in their order, the shared values: one object for all
                attributes.update(zip(varying, values, strict=True))
            elif type(attributes) is not dict:
                return None
            resource = distinct[rank]
            if type(resource) is not dict:
                return None
            out.append(cached_span(trace_id, span_id, parent_id, names.setdefault(name, name), start, end, attributes,
                                   code, message, resource, events if type(events) is str else None,
                                   links if type(links) is str else None))
        return out, [rank for rank in damaged if type(rank) is int]
    except (ValueError, TypeError, IndexError, KeyError, RecursionError, zlib.error):
        return None


def _storable(text: str) -> str:
    """``text`` as sqlite can store it: a lone surrogate (from a JSON escape in a spool line) as the escape itself,
    as the spool writes it (:func:`line_bytes`) and the CLI shows it, where sqlite's UTF-8 encoding would raise and
    stop the whole index."""
    return text if text.isascii() else line_bytes(text).decode("utf-8")


def _encode_counts(counts: dict[str, int]) -> bytes:
    """How many records of each span (``""``: none) a log line holds, compact."""
    return zlib.compress(json.dumps(counts, separators=(",", ":")).encode("ascii"), 1)


def _decode_counts(blob: bytes | None) -> dict[str, int] | None:
    if blob is None:
        return None
    try:
        counts = json.loads(zlib.decompress(blob))
    except (ValueError, zlib.error, RecursionError):
        return None
    if type(counts) is not dict:
        return None
    return {str(span): n for span, n in counts.items() if type(n) is int}


class _LineReader:
    """Reads spool lines by location, keeping one open handle per file."""

    def __init__(self, spool: Path) -> None:
        self.spool = spool
        self._handles: dict[str, Any] = {}

    def read(self, name: str, offset: int, length: int) -> bytes | None:
        """The ``length`` bytes at ``offset`` of spool file ``name``; None when the file is gone."""
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = self._handles[name] = open(self.spool / name, "rb")  # noqa: SIM115
            except OSError:
                return None
        try:
            handle.seek(offset)
            data: bytes = handle.read(length)
        except OSError:
            return None
        return data

    def close(self) -> None:
        """Close the files."""
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()

    def __enter__(self) -> _LineReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LogStream:
    """A trace's log records in time order, with memory bounded by the lines that overlap in time, not the run.

    The index knows the earliest and latest time of the trace's records in each spool line: lines are read in
    order of their earliest time, their records go into a heap, and a record is given out as soon as it is
    earlier than the next line's earliest time (no line still to read can hold an earlier one). A writer's lines
    follow each other in time, so only lines of processes writing at the same time overlap: the heap holds about
    one line per such process, whatever the run's size.

    :meth:`read` gives the records of the lines indexed since its last complete call (``logs --follow``), or of
    the lines asked for. ``held_peak`` (the most records held at once) and ``lines_read`` say what it cost.
    """

    def __init__(self, index: RunIndex, trace_id: str) -> None:
        self.index = index
        self.trace_id = trace_id
        self.after = 0  # lines.id of the newest line read
        self.held_peak = 0
        self.lines_read = 0

    def read(self, lines: Collection[int] | None = None) -> Iterator[LogRecord]:
        """The records of the lines not read yet (or of the lines with these ids), in time order (ties: in the order
        read)."""
        trace_id, skipped = self.trace_id, self.index.skipped
        rows = self.index._db.execute(
            "SELECT l.id, f.name, l.offset, l.length, l.tmin FROM lines l JOIN files f ON f.id = l.file_id"
            " WHERE l.trace_id = ? AND f.signal = 'logs' AND l.id > ? ORDER BY l.tmin, l.id",
            (trace_id, self.after if lines is None else 0),
        )
        heap: list[tuple[int, int, LogRecord]] = []
        push, pop = heapq.heappush, heapq.heappop
        rank = 0
        newest = self.after
        with self.index.open_lines() as reader:
            for line_id, name, offset, length, earliest in rows:
                if lines is not None and line_id not in lines:
                    continue
                while heap and heap[0][0] < earliest:
                    yield pop(heap)[2]
                newest = max(newest, line_id)
                line = reader.read(name, offset, length)
                if line is None:
                    continue
                self.lines_read += 1
                for record in parse_log_line(line, skipped, f"{name}:{offset}"):
                    if record.trace_id == trace_id:
                        push(heap, (record.time, rank, record))
                        rank += 1
                if len(heap) > self.held_peak:
                    self.held_peak = len(heap)
            while heap:
                yield pop(heap)[2]
        if lines is None:
            self.after = newest

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

Tables: ``runs`` holds one row per flow-run span (and per pending flow-run record), ``lines`` one row per
(spool line, trace) with the line's offset and length, so a trace is read back from only its own lines, and
``task_counts`` how many task runs each flow run had (and how many did not complete), per spool file.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from otelflow import semconv
from otelflow._internal.spool.liveness import writer_gone_at
from otelflow._internal.spool.reader import (
    LogRecord,
    Skipped,
    SpanRecord,
    iter_complete_lines,
    parse_log_line,
    parse_span_line,
    spool_files,
)

__all__ = ["PENDING_ATTR", "PENDING_PARENT_ATTR", "RunIndex", "RunRow", "index_path_for"]

# Written by the engine on an early 1 µs record of a run's span (see DESIGN: pending spans).
PENDING_ATTR = semconv.SPAN_PENDING
PENDING_PARENT_ATTR = semconv.PENDING_PARENT_SPAN_ID

_SCHEMA_VERSION = "4"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS files (
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, signal TEXT NOT NULL,
    ino INTEGER NOT NULL, head BLOB NOT NULL, offset INTEGER NOT NULL, bad INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS runs (
    trace_id TEXT NOT NULL, span_id TEXT NOT NULL, pending INTEGER NOT NULL, parent_id TEXT,
    flow_name TEXT, run_id TEXT, run_name TEXT, state TEXT, start INTEGER NOT NULL, end INTEGER NOT NULL,
    status_code INTEGER, tags TEXT, service TEXT, file_id INTEGER NOT NULL,
    PRIMARY KEY (trace_id, span_id, pending));
CREATE INDEX IF NOT EXISTS runs_start ON runs (start);
CREATE INDEX IF NOT EXISTS runs_run_id ON runs (run_id);
CREATE INDEX IF NOT EXISTS runs_file ON runs (file_id);
CREATE TABLE IF NOT EXISTS lines (
    trace_id TEXT NOT NULL, file_id INTEGER NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL,
    items INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS lines_trace ON lines (trace_id);
CREATE INDEX IF NOT EXISTS lines_file ON lines (file_id);
CREATE TABLE IF NOT EXISTS task_counts (
    flow_run_id TEXT NOT NULL, file_id INTEGER NOT NULL, tasks INTEGER NOT NULL, not_completed INTEGER NOT NULL,
    PRIMARY KEY (flow_run_id, file_id));
CREATE INDEX IF NOT EXISTS task_counts_file ON task_counts (file_id);
"""
_HEAD = 64  # bytes of a file's start remembered to notice a file replaced under the same name and inode
_BATCH = 2000


def index_path_for(spool: Path) -> Path:
    """The index file for a spool folder: next to it (``~/.otelflow/spool-index.sqlite``)."""
    return spool.parent / f"{spool.name}-index.sqlite"


@dataclass(slots=True)
class RunRow:
    """A flow run as the index knows it.

    A run known only by its pending record shows as ``Running``, or as ``Crashed`` once the process that wrote
    it is gone (:mod:`otelflow._internal.spool.liveness`); ``end`` is then that process's last write.
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
_NOT_COMPLETED = frozenset({"Failed", "Crashed", "TimedOut", "Cancelled", "NotReady"})


def _row(values: Sequence[Any]) -> RunRow:
    try:
        tags = json.loads(values[10]) if values[10] else []
    except ValueError:
        tags = []
    return RunRow(
        trace_id=values[0], span_id=values[1], parent_id=values[2], flow_name=values[3] or "",
        run_id=values[4] or "", run_name=values[5] or "", state=values[6] or "", start=values[7], end=values[8],
        status_code=values[9] or 0, tags=[str(t) for t in tags] if isinstance(tags, list) else [],
        service=values[11] or "", running=bool(values[12]) and values[6] == "Running", task_runs=values[13] or 0,
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
        """Mark ``Crashed`` the runs still ``Running`` whose process is gone (SIGKILL, OOM killer, power cut).

        Only files holding such runs are checked (one ``flock`` attempt each). Settled for good: a gone process
        never comes back, and a real span that arrives later (shipped from elsewhere) still supersedes the row.
        """
        files = self._db.execute(
            "SELECT DISTINCT f.id, f.name FROM runs r JOIN files f ON f.id = r.file_id"
            " WHERE r.pending = 1 AND r.state = 'Running' AND NOT EXISTS (SELECT 1 FROM runs x"
            " WHERE x.trace_id = r.trace_id AND x.span_id = r.span_id AND x.pending = 0)"
        ).fetchall()
        for fid, name in files:
            when = self.writer_gone_at(name)
            if when is not None:
                with self._write():
                    self._db.execute(
                        "UPDATE runs SET state = 'Crashed', status_code = 2, end = MAX(start, ?)"
                        " WHERE file_id = ? AND pending = 1 AND state = 'Running'", (when, fid))

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
        lines: list[tuple[str, int, int, int, int]] = []
        runs: list[tuple[Any, ...]] = []
        tasks: dict[str, list[int]] = {}  # flow run id -> [task runs, not completed]
        end = start
        for offset, line in iter_complete_lines(handle, start, size):
            end = offset + len(line) + 1
            if not line.strip():
                continue
            where = f"{name}:{offset}"
            counts: dict[str, int] = {}
            if signal == "traces":
                for span in parse_span_line(line, self.skipped, where):
                    counts[span.trace_id] = counts.get(span.trace_id, 0) + 1
                    kind = span.attributes.get(semconv.RUN_TYPE)
                    if kind == semconv.RUN_TYPE_FLOW:
                        runs.append(self._run_values(span, fid))
                    elif kind == semconv.RUN_TYPE_TASK and span.attributes.get(PENDING_ATTR) is not True:
                        flow_run = span.attributes.get(semconv.FLOW_RUN_ID)
                        if isinstance(flow_run, str):
                            tally = tasks.setdefault(flow_run, [0, 0])
                            tally[0] += 1
                            tally[1] += span.attributes.get(semconv.RUN_STATE) in _NOT_COMPLETED
            else:
                for record in parse_log_line(line, self.skipped, where):
                    if record.trace_id:
                        counts[record.trace_id] = counts.get(record.trace_id, 0) + 1
            lines.extend((trace_id, fid, offset, len(line), n) for trace_id, n in counts.items())
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

    def _flush(self, lines: list[tuple[str, int, int, int, int]], runs: list[tuple[Any, ...]]) -> None:
        if lines:
            self._db.executemany("INSERT INTO lines (trace_id, file_id, offset, length, items) VALUES (?,?,?,?,?)",
                                 lines)
            lines.clear()
        if runs:
            self._db.executemany(
                "INSERT OR REPLACE INTO runs (trace_id, span_id, pending, parent_id, flow_name, run_id, run_name,"
                " state, start, end, status_code, tags, service, file_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                runs,
            )
            runs.clear()

    @staticmethod
    def _run_values(span: SpanRecord, fid: int) -> tuple[Any, ...]:
        attrs = span.attributes
        pending = attrs.get(PENDING_ATTR) is True and span.parent_id is not None
        if pending:
            span_id: str = span.parent_id or ""
            parent = attrs.get(PENDING_PARENT_ATTR)
            parent_id = parent.lower() if isinstance(parent, str) and parent else None
            state = "Running"
        else:
            span_id, parent_id = span.span_id, span.parent_id
            state = str(attrs.get(semconv.RUN_STATE) or ("Failed" if span.status_code == 2 else "Completed"))
        tags = attrs.get(semconv.TAGS)
        return (
            span.trace_id, span_id, int(pending), parent_id, str(attrs.get(semconv.FLOW_NAME, "") or ""),
            str(attrs.get(semconv.RUN_ID, "") or ""), str(attrs.get(semconv.RUN_NAME, "") or ""), state,
            span.start, span.end, span.status_code, json.dumps(tags) if isinstance(tags, list) else None,
            str(span.resource.get("service.name", "") or ""), fid,
        )

    # --- queries ----------------------------------------------------------------------------------------
    def runs(
        self,
        *,
        flow: str | None = None,
        states: Sequence[str] = (),
        since: int | None = None,
        limit: int | None = None,
    ) -> list[RunRow]:
        """Flow runs, newest first; a run with only a pending record is ``Running``."""
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
        sql = f"{_RUN_SELECT} WHERE {' AND '.join(where)} ORDER BY r.start DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return [_row(v) for v in self._db.execute(sql, params)]

    def count_runs(self) -> int:
        """How many flow runs (pending or finished) the index knows."""
        return int(self._db.execute("SELECT COUNT(DISTINCT trace_id || span_id) FROM runs").fetchone()[0])

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
        """Every span record (pending ones included, with their ``source`` file) of one trace, from its own lines."""
        out: list[SpanRecord] = []
        for where, line in self._read_lines(trace_id, "traces"):
            for span in parse_span_line(line, self.skipped, where):
                if span.trace_id == trace_id:
                    if span.attributes.get(PENDING_ATTR) is True:
                        span.source = where.rsplit(":", 1)[0]  # its writer's liveness decides Running/Crashed
                    out.append(span)
        return out

    def read_logs(self, trace_id: str, after: set[tuple[str, int]] | None = None) -> list[LogRecord]:
        """Every log record of one trace; with ``after``, only lines not in it (and adds those read to it)."""
        out: list[LogRecord] = []
        for name, line in self._read_lines(trace_id, "logs", after):
            out.extend(r for r in parse_log_line(line, self.skipped, name) if r.trace_id == trace_id)
        return out

    def _read_lines(
        self, trace_id: str, signal: str, after: set[tuple[str, int]] | None = None
    ) -> Iterator[tuple[str, bytes]]:
        handles: dict[str, Any] = {}
        try:
            for name, offset, length in self.line_locations(trace_id, signal):
                if after is not None:
                    if (name, offset) in after:
                        continue
                    after.add((name, offset))
                handle = handles.get(name)
                if handle is None:
                    try:
                        handle = handles[name] = open(self.spool / name, "rb")  # noqa: SIM115
                    except OSError:
                        continue
                handle.seek(offset)
                yield f"{name}:{offset}", handle.read(length)
        finally:
            for handle in handles.values():
                handle.close()


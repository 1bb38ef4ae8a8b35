"""The JSON answers of ``otelflow ui``'s API (``docs/ui.md``), read from the spool's run index.

The same index, tree and log stream as ``otelflow runs``, ``show`` and ``logs``: :class:`Api` holds one
:class:`~otelflow._internal.spool.index.RunIndex` (one SQLite connection, used under one lock) and a few built
trees, so a page polled every second does not rebuild a 10k-run tree that has not changed. Everything here
returns plain dicts; :mod:`otelflow._internal.ui.server` turns them into HTTP answers.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as _dt
import itertools
import json
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from otelflow import semconv
from otelflow._internal.cli.tracetree import (
    LEVELS,
    SHOW_LOG_CAP,
    Group,
    LazyLogs,
    Node,
    build_tree,
    group_children,
    log_attributes,
    severity,
)
from otelflow._internal.spool.index import FAILED_STATES, LogStream, RunIndex, RunRow, no_gc
from otelflow._internal.spool.reader import LogRecord

__all__ = ["MAX_ROWS", "Api", "ApiError", "Query"]

MAX_ROWS: Final = 10_000  # waterfall rows in one answer; a run with more says how many (rows_total)
_RUNS_LIMIT: Final = 200
_MAX_LIMIT: Final = 5000
_LOGS_LIMIT: Final = 500
_MESSAGE_CHARS: Final = 65_536  # of one log message in an answer (the page cuts it further; the CLI shows it all)
_TREES_KEPT: Final = 3
LOKI_DATASOURCE_UID: Final = "loki"  # dashboards/provisioning/datasources/datasources.yaml


class ApiError(Exception):
    """An answer that is not a success: ``status`` (400, 404) and a message for the page."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


Query = Mapping[str, list[str]]  # a parsed query string (urllib.parse.parse_qs)


def _one(query: Query, name: str) -> str | None:
    values = query.get(name)
    if not values:
        return None
    value = values[-1].strip()
    return value or None


def _int(query: Query, name: str, default: int, most: int) -> int:
    value = _one(query, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ApiError(400, f"{name}={value!r} is not a whole number.") from None
    if number < 0:
        raise ApiError(400, f"{name} must be 0 or more.")
    return min(number, most)


def _when(query: Query, name: str) -> int | None:
    value = _one(query, name)
    if value is None:
        return None
    from otelflow._internal.cli.runs import parse_since

    try:
        return parse_since(value)
    except Exception as exc:  # click.BadParameter: the same words as the CLI's --since
        raise ApiError(400, f"{name}: {getattr(exc, 'message', exc)}") from None


def _iso(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9).astimezone().isoformat(timespec="milliseconds")


def _ms(ns: int) -> float:
    return round(ns / 1e6, 3)


@dataclass
class _Tree:
    """A flow run's tree as built for the page: the run's node, its rows, the critical path."""

    version: str
    row: RunRow
    roots: list[Node]
    top: Node | None  # the flow run's node (None: only its pending record's trace is known)
    by_span: dict[str, Node]
    critical: set[int]
    running: bool


class Api:
    """Answers the API's questions from the spool under ``spool``; thread-safe."""

    def __init__(self, spool: Path, *, store: str | None = None, jaeger_url: str | None = None,
                 grafana_url: str | None = None, clock: Callable[[], int] = time.time_ns) -> None:
        self.spool = spool
        self.store = store  # the otelflow store's URL (artifacts); None: the configured one
        self.jaeger_url = _http_url(jaeger_url)
        self.grafana_url = _http_url(grafana_url)
        self._clock = clock
        self._lock = threading.RLock()
        self._index = RunIndex(spool)
        self._trees: collections.OrderedDict[str, _Tree] = collections.OrderedDict()
        self._skipped: tuple[int, str] | None = None

    def close(self) -> None:
        """Close the index."""
        with self._lock:
            self._index.close()

    # --- keeping up with the spool -------------------------------------------------------------------------------
    def version(self) -> str:
        """The index's version after looking at the spool (one ``stat`` per spool file): an ETag's base.

        Every answer looks again: a run whose process is gone is ``Crashed`` only if its last records, written
        just before the process went, are not in the spool either."""
        with self._lock:
            self._index.refresh()
            self._note_skipped()
            return self._index.version()

    def _note_skipped(self) -> None:
        skipped = self._index.skipped
        if skipped.count:
            from otelflow._internal.cli.runs import _place

            before = self._skipped[0] if self._skipped else 0
            first = self._skipped[1] if self._skipped else _place(self._index.spool, skipped)
            self._skipped = (before + skipped.count, first)
            skipped.reset()

    def skipped(self) -> dict[str, Any] | None:
        """How many damaged spool records were skipped, and where the first one is: those met by this server, or
        (found when the index was built, by this server or an earlier command) the index's count of damaged
        lines, whichever is more."""
        with self._lock:
            self._note_skipped()
            stored, first_file = self._index.damaged()
        if self._skipped is not None and self._skipped[0] >= stored:
            return {"count": self._skipped[0], "first": self._skipped[1]}
        if stored:
            return {"count": stored, "first": first_file}
        return None

    # --- /api/config -------------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        """What the page needs to know once."""
        from otelflow._version import __version__

        return {"version": __version__, "spool": str(self.spool), "jaeger_url": self.jaeger_url,
                "grafana_url": self.grafana_url, "loki_datasource_uid": LOKI_DATASOURCE_UID}

    # --- /api/runs ---------------------------------------------------------------------------------------------
    def runs(self, query: Query) -> dict[str, Any]:
        """The runs list, filtered and paged (see docs/ui.md)."""
        from otelflow._internal.cli.runs import nested, parent_runs, run_json

        limit = _int(query, "limit", _RUNS_LIMIT, _MAX_LIMIT)
        offset = _int(query, "offset", 0, 10**9)
        states = [s.strip() for value in query.get("state", []) for s in value.split(",") if s.strip()]
        states = [s for s in states if s.lower() not in ("any", "all")]
        filters: dict[str, Any] = {"flow": _one(query, "flow"), "states": states, "since": _when(query, "since"),
                                   "until": _when(query, "until"), "text": _one(query, "q")}
        version = self.version()
        with self._lock:
            index = self._index
            rows = index.runs(limit=limit, offset=offset, **filters)
            total = index.count_matching(**filters) if (rows or offset) else 0
            parents = parent_runs(index, rows)
            now = self._clock()
            out = []
            for row, level, _ in nested(rows, parents):
                item = run_json(row, parents.get((row.trace_id, row.span_id)), now)
                item["level"] = level
                out.append(item)
            return {"version": version, "now_unix_nano": now, "total": total, "offset": offset, "limit": limit,
                    "flows": index.flow_names(), "states": index.state_names(), "skipped": self.skipped(),
                    "spool": str(self.spool), "runs": out}

    # --- /api/flows/<name> -------------------------------------------------------------------------------------
    def flow(self, name: str, query: Query) -> dict[str, Any]:
        """One flow's runs over time and their statistics."""
        from otelflow._internal.cli.runs import run_json

        limit = _int(query, "limit", 500, _MAX_LIMIT)
        version = self.version()
        with self._lock:
            rows = self._index.runs(flow=name, limit=limit)
            if not rows:
                known = self._index.flow_names()
                import difflib

                close = difflib.get_close_matches(name, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ApiError(404, f"No runs of a flow named {name!r} in {self.spool}.{hint}")
            now = self._clock()
            runs = [run_json(row, None, now) for row in rows]
        ended = sorted(r["duration_ms"] for r in runs if not r["running"])
        return {
            "flow": rows[0].flow_name, "version": version, "now_unix_nano": now, "skipped": self.skipped(),
            "runs": runs,
            "stats": {"runs": len(runs), "failed": sum(1 for r in runs if r["state"] in FAILED_STATES),
                      "running": sum(1 for r in runs if r["running"]), "p50_ms": _percentile(ended, 0.5),
                      "p95_ms": _percentile(ended, 0.95), "max_ms": ended[-1] if ended else None},
        }

    # --- /api/runs/<ident> -------------------------------------------------------------------------------------
    def run(self, ident: str) -> dict[str, Any]:
        """One flow run: its header, links, waterfall rows and critical path."""
        tree = self._tree(ident)
        now = self._clock()
        with self._lock:
            shown = [tree.top] if tree.top is not None else tree.roots
            rows: list[dict[str, Any]] = []
            total = _rows(shown, 0, now, tree.critical, rows, MAX_ROWS)
            start = min((n.span.start for n in shown), default=tree.row.start)
            end = max([_end(n, now) for n in shown] + [r["end_unix_nano"] or now for r in rows], default=now)
            return {
                "version": tree.version, "now_unix_nano": now, "skipped": self.skipped(),
                "run": self._header(tree, now), "links": self._links(tree.row),
                "axis": {"start_unix_nano": start, "end_unix_nano": max(end, start + 1)},
                "rows": rows, "rows_total": total,
                "critical_path": [n.span.span_id for n in (tree.top.walk() if tree.top else [])
                                  if id(n) in tree.critical],
            }

    def group(self, ident: str, query: Query) -> dict[str, Any]:
        """The runs of one folded map, as rows."""
        parent_id, name = _one(query, "parent"), _one(query, "name")
        if parent_id is None or name is None:
            raise ApiError(400, "Give the map's parent span id (parent=) and task name (name=).")
        offset = _int(query, "offset", 0, 10**9)
        limit = _int(query, "limit", 2000, MAX_ROWS)
        tree = self._tree(ident)
        parent = tree.by_span.get(parent_id.lower())
        if parent is None:
            raise ApiError(404, f"No run with span id {parent_id!r} in this flow run.")
        members = [c for c in parent.children if c.map_index is not None
                   and name in (c.attrs.get(semconv.TASK_NAME), c.span.name)]
        if not members:
            raise ApiError(404, f"No mapped runs of {name!r} under span {parent_id!r}.")
        members.sort(key=lambda n: (n.map_index or 0, n.span.start))
        now = self._clock()
        with self._lock:
            depth = _depth(parent) + 1 - _depth(tree.top if tree.top is not None else parent)
            rows: list[dict[str, Any]] = []
            for node in members[offset: offset + limit]:
                rows.append(_run_row(node, depth, now, tree.critical))
                for child in node.children:
                    _rows([child], depth + 1, now, tree.critical, rows, MAX_ROWS)
            return {"version": tree.version, "rows": rows, "total": len(members), "offset": offset}

    def span(self, ident: str, span_id: str) -> dict[str, Any]:
        """One run of the trace in full: attributes, events, inputs, artifacts, its first logs."""
        tree = self._tree(ident)
        node = tree.by_span.get(span_id.lower())
        if node is None:
            raise ApiError(404, f"No run with span id {span_id!r} in this flow run.")
        now = self._clock()
        with self._lock:
            out = _run_row(node, _depth(node), now, tree.critical)
            span = node.span
            inputs = []
            for _, linked_id, attrs in span.links:
                linked = tree.by_span.get(linked_id)
                inputs.append({"parameter": attrs.get(semconv.INPUT_NAME), "span_id": linked_id,
                               "run_name": linked.run_name if linked is not None else None,
                               "state": linked.state if linked is not None else None})
            out.update({
                "tags": node.tags, "status": {"code": span.status_code, "message": span.status_message},
                "exception": node.exception, "attributes": span.attributes,
                "events": [{"name": n, "time_unix_nano": t, "attributes": a} for n, t, a in span.events],
                "inputs": inputs, "artifacts": node.artifacts, "service": span.resource.get("service.name"),
                "logs": [_log_json(log) for log in node.logs], "logs_omitted": node.logs_omitted,
                "upstream_failed_guessed": node.upstream_guessed if node.upstream else None,
            })
            return out

    # --- /api/runs/<ident>/logs ----------------------------------------------------------------------------------
    def logs(self, ident: str, query: Query) -> dict[str, Any]:
        """A page of the run's log records in time order, filtered by level, text and run."""
        level_name = _one(query, "level")
        threshold = 0
        if level_name is not None and level_name.lower() not in ("all", "any"):
            if level_name.lower() not in LEVELS:
                raise ApiError(400, f"level={level_name!r}: use one of debug, info, warning, error, critical.")
            threshold = LEVELS[level_name.lower()]
        text = (_one(query, "q") or "").casefold()
        span_id = (_one(query, "span") or "").lower() or None
        offset = _int(query, "offset", 0, 10**12)
        limit = max(1, _int(query, "limit", _LOGS_LIMIT, _MAX_LIMIT))
        tree = self._tree(ident)
        with self._lock:
            spans: set[str] | None = None
            flow_run_ids: set[str] = set()
            if span_id is not None:
                node = tree.by_span.get(span_id)
                if node is None:
                    raise ApiError(404, f"No run with span id {span_id!r} in this flow run.")
                spans = {span_id}
                if node.attrs.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_FLOW:
                    flow_run_ids.add(str(node.attrs.get(semconv.RUN_ID)))  # records of runs with no span yet
            elif tree.top is not None and tree.row.parent_id is not None:
                spans = {n.span.span_id for n in tree.top.walk()}  # a subflow: its own subtree
                flow_run_ids = {str(n.attrs.get(semconv.RUN_ID)) for n in tree.top.walk()
                                if n.attrs.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_FLOW}

            def wanted(log: LogRecord) -> bool:
                if spans is not None and log.span_id not in spans and (
                        log.span_id in tree.by_span
                        or str(log.attributes.get(semconv.FLOW_RUN_ID)) not in flow_run_ids):
                    return False
                if threshold and severity(log) < threshold:
                    return False
                return not text or text in log.body.casefold()

            matches: Iterator[LogRecord] = (log for log in LogStream(self._index, tree.row.trace_id).read()
                                            if wanted(log))
            page = list(itertools.islice(matches, offset, offset + limit + 1))
            more = len(page) > limit
            return {"logs": [_log_json(log, tree.by_span) for log in page[:limit]], "offset": offset,
                    "next_offset": offset + limit if more else None, "version": tree.version}

    # --- /api/artifacts/<id> -----------------------------------------------------------------------------------
    def artifact(self, artifact_id: str) -> dict[str, Any]:
        """One artifact from the otelflow store."""
        from otelflow.artifacts import read_artifact
        from otelflow.stores import StoreError

        try:
            uuid.UUID(artifact_id)
        except ValueError:
            raise ApiError(400, f"{artifact_id!r} is not an artifact id.") from None
        try:
            found = read_artifact(artifact_id, store=self.store)
        except StoreError as exc:
            raise ApiError(503, f"Cannot read the otelflow store: {exc}") from None
        if found is None:
            raise ApiError(404, f"No artifact {artifact_id!r} in the otelflow store.")
        data: Any = found.data
        if isinstance(data, str) and found.type == "table":
            with contextlib.suppress(ValueError):
                data = json.loads(data)
        return {"id": str(found.id), "key": found.key, "type": found.type, "description": found.description,
                "data": data, "flow_run_id": _str_or_none(getattr(found, "flow_run_id", None)),
                "task_run_id": _str_or_none(getattr(found, "task_run_id", None)),
                "created": _str_or_none(getattr(found, "created", None))}

    # --- building a run's tree ---------------------------------------------------------------------------------
    def _pick(self, ident: str) -> RunRow:
        ident = ident.strip()
        if not ident or ident.lower() == "latest":
            rows = self._index.runs(limit=1, roots=True) or self._index.runs(limit=1)
            if not rows:
                raise ApiError(404, f"No flow runs in {self.spool}. Run a flow first.")
            return rows[0]
        found = self._index.find(ident)
        if not found:
            raise ApiError(404, f"No flow run matching {ident!r} in {self.spool}.")
        if len(found) > 1:
            exact = [r for r in found if r.run_id.lower() == ident.lower()]
            if len(exact) == 1:
                return exact[0]
            raise ApiError(404, f"{ident!r} matches {len(found)} flow runs; give more of a run id or trace id.")
        return found[0]

    def _tree(self, ident: str) -> _Tree:
        version = self.version()
        with self._lock:
            row = self._pick(ident)
            key = f"{row.trace_id}/{row.span_id}"
            kept = self._trees.get(key)
            if kept is not None and kept.version == version:
                self._trees.move_to_end(key)
                return kept
            tree = self._build(row, version)
            if tree.running:
                self._trees.pop(key, None)  # the page asks again in a second; a running run changes
            else:
                self._trees[key] = tree
                while len(self._trees) > _TREES_KEPT:
                    self._trees.popitem(last=False)
            return tree

    def _build(self, row: RunRow, version: str) -> _Tree:
        index, trace_id = self._index, row.trace_id

        def read(lines: Collection[int]) -> Iterator[LogRecord]:
            return LogStream(index, trace_id).read(lines)

        with no_gc():
            spans = index.read_spans(trace_id)
            lazy = LazyLogs(index.log_lines(trace_id), read)
            roots = build_tree(spans, (), index.writer_gone_at, cap=SHOW_LOG_CAP, lazy=lazy)
            del spans
            by_span: dict[str, Node] = {}
            for root in roots:
                for node in root.walk():
                    by_span[node.span.span_id] = node
        self._note_skipped()
        top = by_span.get(row.span_id)
        now = self._clock()
        critical: set[int] = set()
        if top is not None:
            _critical_path(top, now, critical)
        running = any(node.running for node in by_span.values()) or row.running
        return _Tree(version, row, roots, top, by_span, critical, running)

    def _header(self, tree: _Tree, now: int) -> dict[str, Any]:
        row, top = tree.row, tree.top
        header: dict[str, Any] = {
            "flow": row.flow_name, "flow_run_id": row.run_id, "flow_run_name": row.run_name,
            "trace_id": row.trace_id, "span_id": row.span_id, "state": row.state, "running": row.running,
            "start_unix_nano": row.start, "end_unix_nano": None if row.running else row.end,
            "duration_ms": _ms((now if row.running else row.end) - row.start), "tags": row.tags,
            "service": row.service, "parent_flow_run_id": None, "task_runs": row.task_runs,
            "state_message": "", "parameters": {}, "states": {}, "exception": None,
        }
        nodes = top.walk() if top is not None else [n for r in tree.roots for n in r.walk()]
        if top is not None:
            header["state"] = top.state or row.state
            header["running"] = top.running
            message = top.span.status_message or top.attrs.get(semconv.RUN_STATE_MESSAGE) or ""
            header["state_message"] = str(message)
            cut = len(semconv.PARAMETER_PREFIX)
            header["parameters"] = {k[cut:]: v for k, v in top.attrs.items()
                                    if k.startswith(semconv.PARAMETER_PREFIX)}
            header["exception"] = top.exception
            parent = top.parent
            while parent is not None and parent.attrs.get(semconv.RUN_TYPE) != semconv.RUN_TYPE_FLOW:
                parent = parent.parent
            if parent is not None:
                header["parent_flow_run_id"] = parent.attrs.get(semconv.RUN_ID)
        states: dict[str, int] = {}
        tasks = 0
        for node in nodes:
            if node.attrs.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_TASK:
                tasks += 1
                states[node.state or "Unknown"] = states.get(node.state or "Unknown", 0) + 1
        header["task_runs"] = tasks
        header["states"] = states
        header["services"] = list(dict.fromkeys(
            s for s in (str(n.span.resource.get("service.name", "") or "") for n in nodes) if s)) or [row.service]
        return header

    def _links(self, row: RunRow) -> dict[str, Any]:
        loki = (f'{{service_name="{_loki_string(row.service)}"}} | '
                f'{semconv.loki_name(semconv.FLOW_RUN_ID)}="{_loki_string(row.run_id)}"')
        links: dict[str, Any] = {"show_command": f"otelflow show {row.run_id}",
                                 "logs_command": f"otelflow logs {row.run_id}", "loki_query": loki,
                                 "jaeger": None, "grafana": None}
        if self.jaeger_url:
            links["jaeger"] = f"{self.jaeger_url}/trace/{row.trace_id}"
        if self.grafana_url:
            end = row.end if not row.running else self._clock()
            pane = {"otelflow": {
                "datasource": LOKI_DATASOURCE_UID,
                "queries": [{"refId": "A", "expr": loki, "queryType": "range",
                             "datasource": {"type": "loki", "uid": LOKI_DATASOURCE_UID}}],
                "range": {"from": str(row.start // 1_000_000 - 60_000), "to": str(end // 1_000_000 + 300_000)},
            }}
            links["grafana"] = (f"{self.grafana_url}/explore?schemaVersion=1&orgId=1&panes="
                                + urllib.parse.quote(json.dumps(pane, separators=(",", ":")), safe=""))
        return links


# --- rows --------------------------------------------------------------------------------------------------------


def _depth(node: Node) -> int:
    depth, parent = 0, node.parent
    while parent is not None:
        depth, parent = depth + 1, parent.parent
    return depth


def _end(node: Node, now: int) -> int:
    return now if node.running else node.span.end


def _run_row(node: Node, depth: int, now: int, critical: set[int]) -> dict[str, Any]:
    span, attrs = node.span, node.attrs
    message = span.status_message or attrs.get(semconv.RUN_STATE_MESSAGE) or ""
    return {
        "kind": "run", "span_id": span.span_id, "parent_span_id": span.parent_id, "depth": depth,
        "name": span.name, "type": attrs.get(semconv.RUN_TYPE), "run_id": attrs.get(semconv.RUN_ID),
        "run_name": node.run_name or None, "task_name": attrs.get(semconv.TASK_NAME), "state": node.state or None,
        "cached": node.cached, "running": node.running, "failed": node.failed, "start_unix_nano": span.start,
        "end_unix_nano": None if node.running else span.end, "duration_ms": _ms(node.duration_ns(now)),
        "attempts": node.attempts, "map_index": node.map_index, "children": len(node.children),
        "log_count": node.log_count, "critical": id(node) in critical,
        "upstream_failed": node.upstream or None, "state_message": str(message),
    }


def _group_row(group: Group, parent: Node, depth: int, now: int, critical: set[int]) -> dict[str, Any]:
    members = group.members
    name = str(members[0].attrs.get(semconv.TASK_NAME) or group.name)  # the query of its runs says it
    p50, most = group.durations(now)
    return {
        "kind": "group", "group": f"{parent.span.span_id}/{name}", "parent_span_id": parent.span.span_id,
        "depth": depth, "name": name, "count": len(members), "states": group.states(),
        "running": sum(1 for n in members if n.running),
        "start_unix_nano": min(n.span.start for n in members),
        "end_unix_nano": max(_end(n, now) for n in members), "p50_ms": _ms(p50), "max_ms": _ms(most),
        "log_count": sum(n.log_count for n in members), "critical": any(id(n) in critical for n in members),
    }


def _rows(nodes: list[Node], depth: int, now: int, critical: set[int], out: list[dict[str, Any]],
          most: int) -> int:
    """Append the rows of ``nodes`` and what runs under them (maps folded), depth first, up to ``most`` rows in
    ``out``; returns how many rows there are in all."""
    total = 0
    stack: list[tuple[Node | Group, Node | None, int]] = [(node, None, depth) for node in reversed(nodes)]
    while stack:
        item, parent, level = stack.pop()
        total += 1
        if isinstance(item, Group):
            if len(out) < most and parent is not None:
                out.append(_group_row(item, parent, level, now, critical))
            continue
        if len(out) < most:
            out.append(_run_row(item, level, now, critical))
        if item.children:
            folded = group_children(item.children, expand=False)
            stack.extend((child, item, level + 1) for child in reversed(folded))
    return total


def _critical_path(node: Node, now: int, into: set[int]) -> None:
    """Mark (``id()`` in ``into``) the runs that decided when ``node`` ended: the child ending last, then the
    child that ended last before that one started, and so on back; the same inside each of them."""
    into.add(id(node))
    stack = [node]
    while stack:
        current = stack.pop()
        children = sorted(current.children, key=lambda n: _end(n, now), reverse=True)
        if not children:
            continue
        chain = [children[0]]
        bound = children[0].span.start
        for child in children[1:]:
            if _end(child, now) <= bound:
                chain.append(child)
                bound = child.span.start
        for member in chain:
            into.add(id(member))
            stack.append(member)


def _log_json(log: LogRecord, by_span: Mapping[str, Node] | None = None) -> dict[str, Any]:
    attrs = log.attributes
    body = log.body
    cut = len(body) - _MESSAGE_CHARS
    if cut > 0:
        body = body[:_MESSAGE_CHARS]
    exception = None
    if attrs.get(semconv.EXCEPTION_TYPE) or attrs.get(semconv.EXCEPTION_STACKTRACE):
        exception = {"type": str(attrs.get(semconv.EXCEPTION_TYPE, "") or ""),
                     "message": str(attrs.get(semconv.EXCEPTION_MESSAGE, "") or ""),
                     "stacktrace": str(attrs.get(semconv.EXCEPTION_STACKTRACE, "") or "")}
    run_name = attrs.get(semconv.TASK_RUN_NAME) or attrs.get(semconv.FLOW_RUN_NAME)
    if not run_name and by_span is not None and log.span_id is not None and log.span_id in by_span:
        run_name = by_span[log.span_id].run_name
    extra = {k: v for k, v in log_attributes(attrs).items()
             if not k.startswith((f"{semconv.NAMESPACE}.", "exception.", "code."))}
    return {"time_unix_nano": log.time, "severity": log.severity_text or None,
            "severity_number": log.severity_number, "message": body, "message_cut": max(cut, 0),
            "span_id": log.span_id, "run_name": str(run_name or "") or None, "exception": exception,
            "attributes": extra}


def _percentile(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _http_url(value: str | None) -> str | None:
    """A configured base URL the page may link to: http(s) only, without its trailing slash."""
    if not value:
        return None
    value = value.strip().rstrip("/")
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        return None
    return value


def _loki_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)

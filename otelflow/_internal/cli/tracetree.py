"""A trace's spans as a tree of runs: pending records resolved, logs attached, NotReady explained.

Built from the span and log records of one trace (see ``runindex``); rendered by ``render`` or dumped as JSON.
"""

from __future__ import annotations

import bisect
import collections
import datetime as _dt
import re
import statistics
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from otelflow import semconv
from otelflow._internal.spool.index import FAILED_STATES, PENDING_ATTR, PENDING_PARENT_ATTR
from otelflow._internal.spool.reader import LogRecord, SpanRecord

__all__ = [
    "SHOW_LOG_CAP",
    "Group",
    "LazyLogs",
    "LogCap",
    "Node",
    "build_tree",
    "group_children",
    "log_attributes",
    "log_json",
    "matching",
    "node_json",
    "severity",
    "subtree",
]

# The NotReady message names the upstream run by name or id ("Upstream task run 'x' ended Failed", Prefect 3's
# "Upstream task run '<id>' did not reach a 'COMPLETED' state.").
_UPSTREAM = re.compile(r"[Uu]pstream task run '([^']+)' (?:ended|did not reach)")


class Node:
    """One run (or other span) of a trace, with its children and its log records.

    ``logs`` are the run's records kept to show (all of them, or with a :class:`LogCap` the first ones and
    the warnings); ``logs_omitted`` counts the others (``otelflow logs`` prints them all); ``log_count`` is both
    together. A tree built with :class:`LazyLogs` reads a run's records when its ``logs`` (or ``logs_omitted``)
    are first asked for; ``log_count`` of a task run is known without reading them (a folded map of 100k runs
    is drawn without reading their records).

    ``state`` is the final state name; for a run known only by its pending records (its process alive), the state
    the latest of them says (``Paused``), else ``Running``. ``map_index`` is the mapped run's index, if it is one.
    Both are worked out once (a 100k-run map asks for them a million times while it is drawn).
    """

    __slots__ = ("_loader", "_logs", "_omitted", "_tail", "attrs", "children", "map_index", "parent", "running",
                 "span", "state", "upstream", "upstream_guessed")

    def __init__(self, span: SpanRecord, running: bool = False) -> None:
        self.span = span
        attrs = self.attrs = span.attributes  # the span's attributes
        self.running = running  # known only by pending records, its process alive
        state = attrs.get(semconv.RUN_STATE)
        if state:
            self.state = str(state)
        else:
            self.state = "Running" if running else ("Failed" if span.status_code == 2 else "")
        index = attrs.get(semconv.TASK_MAP_INDEX)
        self.map_index: int | None = index if type(index) is int else None
        self.children: list[Node] = []
        self._logs: list[LogRecord] | None = []
        self._omitted = 0
        self._loader: _LogLoader | None = None
        self.parent: Node | None = None
        self.upstream: list[str] = []
        self.upstream_guessed = False  # named from timing (failed before it started), not from a link or message
        self._tail: collections.deque[LogRecord] | None = None

    def __repr__(self) -> str:
        return f"Node({self.span.name!r}, {self.span.span_id}, {len(self.children)} children)"

    @property
    def logs(self) -> list[LogRecord]:
        """The run's log records kept to show, in time order."""
        if self._logs is None and self._loader is not None:
            self._loader.load(self)
        return self._logs if self._logs is not None else []

    @property
    def logs_omitted(self) -> int:
        """How many of the run's log records are not in ``logs``."""
        if self._logs is None and self._loader is not None:
            self._loader.load(self)
        return self._omitted

    @property
    def log_count(self) -> int:
        """How many log records the run has (``len(logs) + logs_omitted``), read only when it must be."""
        if self._logs is None and self._loader is not None:
            known = self._loader.count(self)
            if known is not None:
                return known
        return len(self.logs) + self.logs_omitted

    @property
    def cached(self) -> bool:
        """True for a task run that returned a cached result (state ``Cached``, or ``otelflow.task.cached``)."""
        return self.state == "Cached" or self.attrs.get(semconv.TASK_CACHED) is True

    @property
    def failed(self) -> bool:
        """True for a run that ended in a failed (or not-run) state."""
        return self.state in FAILED_STATES or (not self.state and self.span.status_code == 2)

    @property
    def run_name(self) -> str:
        """The run name (``crimson-jaguar``, ``transform-3``)."""
        return str(self.attrs.get(semconv.RUN_NAME, "") or "")

    @property
    def attempts(self) -> int:
        """How many attempts ran (1 when not retried)."""
        value = self.attrs.get(semconv.RUN_ATTEMPT)
        return value if isinstance(value, int) else 1

    @property
    def tags(self) -> list[str]:
        """The run's tags."""
        value = self.attrs.get(semconv.TAGS)
        return [str(v) for v in value] if isinstance(value, list) else []

    @property
    def exception(self) -> dict[str, str] | None:
        """Type, message and stack trace of the exception event (the final failure), if any."""
        for name, _, attrs in reversed(self.span.events):
            if name == "exception":
                return {
                    "type": str(attrs.get(semconv.EXCEPTION_TYPE, "") or ""),
                    "message": str(attrs.get(semconv.EXCEPTION_MESSAGE, "") or ""),
                    "stacktrace": str(attrs.get(semconv.EXCEPTION_STACKTRACE, "") or ""),
                }
        return None

    @property
    def artifacts(self) -> list[dict[str, Any]]:
        """The artifacts the run made (its ``artifact`` span events): id, key, type, short description."""
        return [
            {"id": attrs.get(semconv.ARTIFACT_ID), "key": attrs.get(semconv.ARTIFACT_KEY),
             "type": attrs.get(semconv.ARTIFACT_TYPE), "description": attrs.get(semconv.ARTIFACT_DESCRIPTION)}
            for name, _, attrs in self.span.events if name == semconv.EVENT_ARTIFACT
        ]

    def duration_ns(self, now: int) -> int:
        """Run duration; a running run's is measured up to ``now``."""
        return max(0, (now if self.running else self.span.end) - self.span.start)

    def walk(self) -> list[Node]:
        """This node and every descendant, depth first (iteratively: a trace may nest deeper than Python recurses)."""
        if not self.children:
            return [self]
        out: list[Node] = []
        stack = [self]
        while stack:
            node = stack.pop()
            out.append(node)
            if node.children:
                stack.extend(reversed(node.children))
        return out

    def size(self) -> int:
        """How many nodes :meth:`walk` gives, without the list."""
        count, stack = 0, [self]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children)
        return count


@dataclass
class Group:
    """Several mapped runs of one task under one parent, shown as one summary line."""

    name: str
    members: list[Node]

    def states(self) -> dict[str, int]:
        """How many members ended in each state."""
        counts: dict[str, int] = {}
        for node in self.members:
            counts[node.state] = counts.get(node.state, 0) + 1
        return counts

    def durations(self, now: int) -> tuple[int, int]:
        """(p50, max) duration in ns."""
        values = [n.duration_ns(now) for n in self.members]
        return int(statistics.median(values)), max(values)


# OTel severity numbers of the level names the CLI reads and accepts (``--level warning``).
LEVELS = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "warning": 13, "error": 17, "critical": 21, "fatal": 21}


@dataclass(frozen=True, slots=True)
class LogCap:
    """How many of a run's log records ``show`` keeps: the ``first`` ones, then records at ``severe`` or above
    (the first ``severe_first`` and the last ``severe_last`` of them); the rest are counted in ``logs_omitted``.
    Memory is then bounded by the number of runs, not by how much they log."""

    first: int = 20
    severe_first: int = 50
    severe_last: int = 50
    severe: int = LEVELS["warning"]


SHOW_LOG_CAP = LogCap()
def severity(log: LogRecord) -> int:
    """A record's severity number (from its level name when the number is missing)."""
    return log.severity_number or LEVELS.get(log.severity_text.lower(), 0)


def build_tree(
    spans: list[SpanRecord],
    logs: Iterable[LogRecord],
    gone_at: Callable[[str], int | None] | None = None,
    *,
    cap: LogCap | None = None,
    lazy: LazyLogs | None = None,
) -> list[Node]:
    """Roots of the trace's tree (more than one when parents are in another process or not exported).

    A run known only by its pending records is ``Running`` (or in the state the latest of them says, e.g.
    ``Paused``); ``gone_at(record.source)`` says when the process that wrote it was last heard of, if it is gone:
    the run is then ``Crashed``, ending there. ``logs`` come in time order (see ``RunIndex.iter_logs``); with
    ``cap``, each run keeps only some of its records (see :class:`LogCap`), and the others are counted. With
    ``lazy``, ``logs`` is not used: each run reads its records from there when they are first asked for.
    """
    real: dict[str, Node] = {}
    pending: dict[str, tuple[SpanRecord, int]] = {}  # real span id -> (its latest pending record, earliest start)
    for span in spans:
        if span.attributes.get(PENDING_ATTR) is True and span.parent_id is not None:
            seen = pending.get(span.parent_id)
            if seen is None:
                pending[span.parent_id] = (span, span.start)
            else:
                latest, earliest = seen
                if (span.end, span.start) >= (latest.end, latest.start):
                    latest = span
                pending[span.parent_id] = (latest, min(earliest, span.start))
        else:
            real[span.span_id] = Node(span)
    for real_id, (record, earliest) in pending.items():
        if real_id in real:
            continue  # the run ended: its real span supersedes the early record
        real[real_id] = _stand_in(real_id, record, earliest, gone_at)
    flows = {str(n.attrs.get(semconv.RUN_ID)): n for n in real.values()
             if n.attrs.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_FLOW}
    if lazy is not None and _LogLoader.usable(lazy):
        loader = _LogLoader(real, flows, lazy, cap)
        for node in real.values():
            node._logs, node._loader = None, loader
    else:
        _attach_logs(real, flows, logs, cap)
    roots: list[Node] = []
    for node in sorted(real.values(), key=lambda n: (n.span.start, n.span.end)):
        parent = real.get(node.span.parent_id or "")
        if parent is not None and parent is not node:
            node.parent = parent
            parent.children.append(node)
        else:
            roots.append(node)
    _cut_deep(roots)
    runs = _Runs(real)
    for node in real.values():
        if node.state == "NotReady":
            node.upstream, node.upstream_guessed = _upstream(node, real, runs)
    return roots


MAX_DEPTH = 200  # runs nested deeper than this start a tree of their own (see _cut_deep)


def _cut_deep(roots: list[Node]) -> None:
    """Make each run nested ``MAX_DEPTH`` levels down a root of its own (its parent span named, as for a parent in
    another process): drawing a tree recurses once per level, and a spool line can claim any nesting (spans whose
    parents form a chain thousands long). Real runs do not nest that deep."""
    level, depth = list(roots), 0
    cut: list[Node] = []
    while level:
        level = [child for node in level for child in node.children]
        depth += 1
        if depth >= MAX_DEPTH and level:
            cut.extend(level)  # roots of their own, their children one level down again
            depth = 0
    gone = {id(node) for node in cut}
    parents = {id(node.parent): node.parent for node in cut if node.parent is not None}
    for parent in parents.values():
        parent.children = [child for child in parent.children if id(child) not in gone]
    for node in cut:
        node.parent = None
    roots.extend(cut)


def _log_time(log: LogRecord) -> int:
    return log.time


def _stand_in(
    real_id: str, record: SpanRecord, earliest: int, gone_at: Callable[[str], int | None] | None
) -> Node:
    """The node of a run known only by its pending records: ``record`` is the latest of them."""
    parent = record.attributes.get(PENDING_PARENT_ATTR)
    parent_id = parent.lower() if isinstance(parent, str) and parent else None
    gone = gone_at(record.source) if gone_at is not None and record.source else None
    attributes = dict(record.attributes)
    if not attributes.get(semconv.RUN_STATE):
        attributes.pop(semconv.RUN_STATE, None)
    status_code, status_message, end = 0, "", max(record.end, earliest)
    if gone is not None:
        attributes[semconv.RUN_STATE] = "Crashed"
        status_code, end = 2, max(earliest, gone)
        last = _dt.datetime.fromtimestamp(gone / 1e9).strftime("%Y-%m-%d %H:%M:%S")
        status_message = (f"its process is gone: it ended without ending this run (killed: SIGKILL, the OOM "
                          f"killer, a power cut); last heard of at {last}")
    else:
        message = attributes.get(semconv.RUN_STATE_MESSAGE)
        status_message = message if isinstance(message, str) else ""
    stand_in = SpanRecord(
        trace_id=record.trace_id, span_id=real_id, parent_id=parent_id, name=record.name, start=earliest,
        end=end, attributes=attributes, status_code=status_code, status_message=status_message, events=[],
        links=[], resource=record.resource, source=record.source,
    )
    return Node(stand_in, running=gone is None)


def _attach_logs(
    real: dict[str, Node], flows: dict[str, Node], logs: Iterable[LogRecord], cap: LogCap | None,
    batch: set[int] | None = None,
) -> None:
    """Give each record to its run (a run with no span yet: to its flow run), keeping what ``cap`` allows
    (records in time order); with ``batch`` (``id()`` of nodes), only to those runs."""
    touched: list[Node] = []
    for log in logs:
        node = real.get(log.span_id or "")
        if node is None:
            # A run still in flight has no span yet: its records go under its flow run (named by the renderer).
            node = flows.get(str(log.attributes.get(semconv.FLOW_RUN_ID)))
            if node is None:
                continue
        if batch is not None and id(node) not in batch:
            continue
        kept = node._logs
        if kept is None:
            continue
        if cap is None or len(kept) < cap.first:
            kept.append(log.decode() if cap is not None else log)
        elif severity(log) < cap.severe:
            node._omitted += 1
        elif len(kept) < cap.first + cap.severe_first:
            kept.append(log.decode())
        elif cap.severe_last > 0:
            tail = node._tail
            if tail is None:
                tail = node._tail = collections.deque(maxlen=cap.severe_last)
                touched.append(node)
            elif len(tail) == cap.severe_last:
                node._omitted += 1  # the oldest of the last ones makes room
            tail.append(log.decode())
        else:
            node._omitted += 1
    for node in touched:
        if node._tail is not None and node._logs is not None:
            node._logs.extend(node._tail)
            node._tail = None
    for node in real.values() if batch is None else ():
        if node._logs is not None and len(node._logs) > 1:
            node._logs.sort(key=_log_time)


@dataclass(frozen=True)
class LazyLogs:
    """Where a tree's runs read their log records when first asked for: ``lines`` are the trace's log lines as
    ``(line id, records of each span id in it)`` (``RunIndex.log_lines``), ``read(line ids)`` gives the records
    of those lines in time order (``LogStream.read``)."""

    lines: list[tuple[int, dict[str, int] | None]]
    read: Callable[[Collection[int]], Iterable[LogRecord]]


class _LogLoader:
    """Reads the log records of some runs of a tree: the lines holding a run's records, and with them every run
    whose records are all in those lines (a map's runs share lines: one read serves hundreds)."""

    def __init__(self, real: dict[str, Node], flows: dict[str, Node], lazy: LazyLogs, cap: LogCap | None) -> None:
        self.real, self.flows, self.cap, self.read = real, flows, cap, lazy.read
        self.line_spans: dict[int, dict[str, int]] = {}
        self.span_lines: dict[str, list[int]] = {}
        self.totals: dict[str, int] = {}
        self.loose: set[int] = set()  # lines with records of no run in the tree: they go to flow runs
        for line_id, counts in lazy.lines:
            assert counts is not None  # see usable()
            self.line_spans[line_id] = counts
            for span_id, n in counts.items():
                if span_id in real:
                    self.span_lines.setdefault(span_id, []).append(line_id)
                    self.totals[span_id] = self.totals.get(span_id, 0) + n
                else:
                    self.loose.add(line_id)
        self.flow_ids = {id(node) for node in flows.values()}

    @staticmethod
    def usable(lazy: LazyLogs) -> bool:
        """Whether every line says which runs it holds (else the tree is given all its records at once)."""
        return all(counts is not None for _, counts in lazy.lines)

    def count(self, node: Node) -> int | None:
        """The run's record count when the index knows it (task runs; a flow run's depends on the records)."""
        if id(node) in self.flow_ids:
            return None
        return self.totals.get(node.span.span_id, 0)

    def load(self, node: Node) -> None:
        """Read the records of ``node`` (and of the runs whose records are all in the same lines)."""
        if id(node) in self.flow_ids:
            # Records of runs with no span yet go to their flow run: flow runs read them all, together.
            batch = [n for n in self.flows.values() if n._logs is None]
            lines = set(self.loose)
        else:
            batch = [node]
            lines = set()
        for member in batch:
            lines.update(self.span_lines.get(member.span.span_id, ()))
        in_batch = {id(member) for member in batch}
        for line_id in lines:
            for span_id in self.line_spans[line_id]:
                other = self.real.get(span_id)
                if (other is not None and other._logs is None and id(other) not in in_batch
                        and id(other) not in self.flow_ids
                        and all(line in lines for line in self.span_lines.get(span_id, ()))):
                    batch.append(other)
                    in_batch.add(id(other))
        for member in batch:
            member._logs, member._omitted = [], 0
        if lines:
            _attach_logs(self.real, self.flows, self.read(lines), self.cap, in_batch)


class _Runs:
    """Look-ups for explaining NotReady runs, built once per trace (a 10k-run map may be all NotReady)."""

    def __init__(self, by_id: dict[str, Node]) -> None:
        self.by_id = by_id
        self._by_key: dict[str, Node] | None = None
        self._failed_under: dict[int, tuple[list[int], list[Node]]] = {}

    def by_key(self, key: str) -> Node | None:
        """The run with this run name or run id."""
        if self._by_key is None:
            self._by_key = {}
            for n in self.by_id.values():
                for k in (n.run_name, str(n.attrs.get(semconv.RUN_ID, "") or "")):
                    if k:
                        self._by_key[k] = n
        return self._by_key.get(key)

    def failed_before(self, parent: Node, start: int) -> list[Node]:
        """Runs under ``parent`` that failed (not merely NotReady) and ended by ``start``, earliest first."""
        cached = self._failed_under.get(id(parent))
        if cached is None:
            failed = sorted((n for n in parent.walk()[1:] if n.failed and n.state != "NotReady"),
                            key=lambda n: n.span.end)
            cached = self._failed_under[id(parent)] = ([n.span.end for n in failed], failed)
        ends, failed = cached
        return failed[: bisect.bisect_right(ends, start)]


def _upstream(node: Node, by_id: dict[str, Node], runs: _Runs) -> tuple[list[str], bool]:
    """Which upstream runs failed, for a NotReady run, and whether that is a guess.

    From its links (to the runs that produced its inputs) or the "Upstream task run 'x' ended Failed" message
    (NotReady event, status, logs); failing those, a guess: the runs of the same flow run that failed before
    it started.
    """
    found: list[str] = []
    for _, span_id, _ in node.span.links:
        linked = by_id.get(span_id)
        if linked is not None and linked.failed:
            found.append(f"{linked.run_name} ({linked.state})")
    if found:
        return found, False
    texts = [node.span.status_message] + [value for _, _, attrs in node.span.events for value in attrs.values()
                                          if isinstance(value, str)] + [log.body for log in node.logs]
    named = [name for text in texts for name in _UPSTREAM.findall(text or "")]
    if named:
        for name in dict.fromkeys(named):
            upstream = runs.by_key(name)
            found.append(f"{upstream.run_name} ({upstream.state})" if upstream is not None else name)
        return found, False
    # Nothing recorded says which input it was: name the runs of the same flow run that failed before it started.
    if node.parent is not None:
        earlier = runs.failed_before(node.parent, node.span.start)
        if earlier:
            return [f"{n.run_name} ({n.state})" for n in earlier[:5]] + (
                [f"... {len(earlier) - 5} more"] if len(earlier) > 5 else []), True
    return [], False


def subtree(roots: list[Node], span_id: str) -> Node | None:
    """The node of ``span_id`` in the tree, if there."""
    for root in roots:
        for node in root.walk():
            if node.span.span_id == span_id:
                return node
    return None


def matching(roots: list[Node], states: set[str], task: str | None) -> set[int]:
    """``id()`` of the runs in a state of ``states`` (lower case; any if empty) of task ``task`` (any if None),
    and of their ancestors, so a filtered tree still shows where each match sits."""
    keep: set[int] = set()
    for root in roots:
        for node in root.walk():
            if states and node.state.lower() not in states:
                continue
            if task is not None and task not in (node.attrs.get(semconv.TASK_NAME), node.run_name):
                continue
            current: Node | None = node
            while current is not None and id(current) not in keep:
                keep.add(id(current))
                current = current.parent
    return keep


def group_children(children: list[Node], expand: bool, threshold: int = 2) -> list[Node | Group]:
    """``children`` of a run, with mapped runs of one task folded into one :class:`Group` unless ``expand``."""
    if expand:
        return list(children)
    mapped: dict[str, list[Node]] = {}
    for child in children:
        if child.map_index is not None:
            mapped.setdefault(child.span.name, []).append(child)
    out: list[Node | Group] = []
    placed: set[str] = set()
    for child in children:
        members = mapped.get(child.span.name) if child.map_index is not None else None
        if members is None or len(members) < threshold:
            out.append(child)
        elif child.span.name not in placed:
            placed.add(child.span.name)
            out.append(Group(child.span.name, members))
    return out


def node_json(node: Node, now: int) -> dict[str, Any]:
    """A run as a JSON-ready dict (children listed by span id, logs inline)."""
    span = node.span
    return {
        "span_id": span.span_id,
        "parent_span_id": span.parent_id,
        "name": span.name,
        "type": node.attrs.get(semconv.RUN_TYPE),
        "run_id": node.attrs.get(semconv.RUN_ID),
        "run_name": node.run_name or None,
        "flow_name": node.attrs.get(semconv.FLOW_NAME),
        "task_name": node.attrs.get(semconv.TASK_NAME),
        "map_index": node.map_index,
        "state": node.state or None,
        "cached": node.cached,
        "running": node.running,
        "start_unix_nano": span.start,
        "end_unix_nano": None if node.running else span.end,
        "duration_ms": round(node.duration_ns(now) / 1e6, 3),
        "attempts": node.attempts,
        "tags": node.tags,
        "status": {"code": span.status_code, "message": span.status_message},
        "exception": node.exception,
        "upstream_failed": node.upstream or None,
        "upstream_failed_guessed": node.upstream_guessed if node.upstream else None,
        "attributes": span.attributes,
        "events": [{"name": n, "time_unix_nano": t, "attributes": a} for n, t, a in span.events],
        "links": [{"trace_id": t, "span_id": s, "attributes": a} for t, s, a in span.links],
        "artifacts": node.artifacts,
        "children": [c.span.span_id for c in node.children],
        "logs": [log_json(log) for log in node.logs],
        "logs_omitted": node.logs_omitted,
    }


# Prefect's record fields some handlers copy into attributes, beside otelflow's own name for the same value.
_PREFECT_NAMES = {
    "flow_run_id": semconv.FLOW_RUN_ID, "flow_run_name": semconv.FLOW_RUN_NAME, "flow_name": semconv.FLOW_NAME,
    "task_run_id": semconv.TASK_RUN_ID, "task_run_name": semconv.TASK_RUN_NAME, "task_name": semconv.TASK_NAME,
}


def log_attributes(attributes: dict[str, Any]) -> dict[str, Any]:
    """A record's attributes with each run attribute once, under otelflow's name: a Prefect-named copy
    (``flow_run_id``...) is left out when the otelflow-named one (``otelflow.flow_run.id``...) is there."""
    if not any(key in attributes for key in _PREFECT_NAMES):
        return attributes
    return {key: value for key, value in attributes.items()
            if key not in _PREFECT_NAMES or _PREFECT_NAMES[key] not in attributes}


def log_json(log: LogRecord) -> dict[str, Any]:
    """A log record as a JSON-ready dict (run attributes once each, see :func:`log_attributes`)."""
    return {
        "time_unix_nano": log.time,
        "severity": log.severity_text or None,
        "severity_number": log.severity_number,
        "message": log.body,
        "trace_id": log.trace_id,
        "span_id": log.span_id,
        "attributes": log_attributes(log.attributes),
    }

"""A trace's spans as a tree of runs: pending records resolved, logs attached, NotReady explained.

Built from the span and log records of one trace (see ``runindex``); rendered by ``render`` or dumped as JSON.
"""

from __future__ import annotations

import bisect
import datetime as _dt
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from otelflow import semconv
from otelflow._internal.spool.index import PENDING_ATTR, PENDING_PARENT_ATTR
from otelflow._internal.spool.reader import LogRecord, SpanRecord

__all__ = ["Group", "Node", "build_tree", "group_children", "log_json", "matching", "node_json", "subtree"]

# The NotReady message names the upstream run by name or id ("Upstream task run 'x' ended Failed", Prefect 3's
# "Upstream task run '<id>' did not reach a 'COMPLETED' state.").
_UPSTREAM = re.compile(r"[Uu]pstream task run '([^']+)' (?:ended|did not reach)")
_FAILED_STATES = {"Failed", "Crashed", "TimedOut", "Cancelled", "NotReady"}


@dataclass(eq=False)
class Node:
    """One run (or other span) of a trace, with its children and its log records."""

    span: SpanRecord
    running: bool = False
    children: list[Node] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    parent: Node | None = None
    upstream: list[str] = field(default_factory=list)
    upstream_guessed: bool = False  # named from timing (failed before it started), not from a link or message

    @property
    def attrs(self) -> dict[str, Any]:
        """The span's attributes."""
        return self.span.attributes

    @property
    def state(self) -> str:
        """Final state name; ``Running`` for a run known only by its pending record (its process alive)."""
        if self.running:
            return "Running"
        state = self.attrs.get(semconv.RUN_STATE)
        if state:
            return str(state)
        return "Failed" if self.span.status_code == 2 else ""

    @property
    def cached(self) -> bool:
        """True for a task run that returned a cached result (state ``Cached``, or ``otelflow.task.cached``)."""
        return self.state == "Cached" or self.attrs.get(semconv.TASK_CACHED) is True

    @property
    def failed(self) -> bool:
        """True for a run that ended in a failed (or not-run) state."""
        return self.state in _FAILED_STATES or (not self.state and self.span.status_code == 2)

    @property
    def run_name(self) -> str:
        """The run name (``crimson-jaguar``, ``transform-3``)."""
        return str(self.attrs.get(semconv.RUN_NAME, "") or "")

    @property
    def map_index(self) -> int | None:
        """The mapped run's index, if it is one."""
        value = self.attrs.get(semconv.TASK_MAP_INDEX)
        return value if isinstance(value, int) else None

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
        """This node and every descendant, depth first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


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


def build_tree(
    spans: list[SpanRecord], logs: list[LogRecord], gone_at: Callable[[str], int | None] | None = None
) -> list[Node]:
    """Roots of the trace's tree (more than one when parents are in another process or not exported).

    A run known only by its pending record is ``Running``; ``gone_at(record.source)`` says when the process
    that wrote it was last heard of, if it is gone: the run is then ``Crashed``, ending there.
    """
    real: dict[str, Node] = {}
    pending: dict[str, SpanRecord] = {}
    for span in spans:
        if span.attributes.get(PENDING_ATTR) is True and span.parent_id is not None:
            pending.setdefault(span.parent_id, span)
        else:
            real[span.span_id] = Node(span)
    for real_id, record in pending.items():
        if real_id in real:
            continue  # the run ended: its real span supersedes the early record
        parent = record.attributes.get(PENDING_PARENT_ATTR)
        parent_id = parent.lower() if isinstance(parent, str) and parent else None
        gone = gone_at(record.source) if gone_at is not None and record.source else None
        attributes = dict(record.attributes)
        status_code, status_message, end = 0, "", record.end
        if gone is not None:
            attributes[semconv.RUN_STATE] = "Crashed"
            status_code, end = 2, max(record.start, gone)
            last = _dt.datetime.fromtimestamp(gone / 1e9).strftime("%Y-%m-%d %H:%M:%S")
            status_message = (f"its process is gone: it ended without ending this run (killed: SIGKILL, the OOM "
                              f"killer, a power cut); last heard of at {last}")
        stand_in = SpanRecord(
            trace_id=record.trace_id, span_id=real_id, parent_id=parent_id, name=record.name, start=record.start,
            end=end, attributes=attributes, status_code=status_code, status_message=status_message, events=[],
            links=[], resource=record.resource, source=record.source,
        )
        real[real_id] = Node(stand_in, running=gone is None)
    flows = {str(n.attrs.get(semconv.RUN_ID)): n for n in real.values()
             if n.attrs.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_FLOW}
    for log in logs:
        node = real.get(log.span_id or "")
        if node is None:
            # A run still in flight has no span yet: its records go under its flow run (named by the renderer).
            node = flows.get(str(log.attributes.get(semconv.FLOW_RUN_ID)))
        if node is not None:
            node.logs.append(log)
    roots: list[Node] = []
    for node in sorted(real.values(), key=lambda n: (n.span.start, n.span.end)):
        node.logs.sort(key=lambda r: r.time)
        parent = real.get(node.span.parent_id or "")
        if parent is not None and parent is not node:
            node.parent = parent
            parent.children.append(node)
        else:
            roots.append(node)
    runs = _Runs(real)
    for node in real.values():
        if node.state == "NotReady":
            node.upstream, node.upstream_guessed = _upstream(node, real, runs)
    return roots


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
    }


def log_json(log: LogRecord) -> dict[str, Any]:
    """A log record as a JSON-ready dict."""
    return {
        "time_unix_nano": log.time,
        "severity": log.severity_text or None,
        "severity_number": log.severity_number,
        "message": log.body,
        "trace_id": log.trace_id,
        "span_id": log.span_id,
        "attributes": log.attributes,
    }

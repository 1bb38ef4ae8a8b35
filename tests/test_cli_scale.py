"""`show` of a large run reads what it draws: spans from the index's decoded copy, log records only of the runs shown.

Was (issue 25): `show` of a 100k-task run parsed every span and log record of the trace as OTLP/JSON (4-12 s,
0.4-1.1 GB) to draw six lines. Timings are the benchmark's (``bench/bench_cli.py``); these tests check the
structure: which lines are read, and that what is read from the index's copy is what the spool holds.
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import pytest
from spool_lines import T0, flow_attrs, log, log_attrs, logs_line, span, task_attrs, traces_line, write

from otelflow._internal.cli import runs as shared
from otelflow._internal.cli.tracetree import Group, group_children, node_json
from otelflow._internal.spool.index import LogStream, RunIndex
from otelflow._internal.spool.reader import LogRecord, Skipped, parse_span_line

TRACE = "8bf92f3577b34da6a3ce929d0e0e4736"
FLOW_SPAN = "30f067aa0ba902b7"
RUN_ID, RUN_NAME = "aaaaaaaa-2222-3333-4444-555555555555", "busy-beaver"
TASKS, PER_LINE = 2000, 250


def mapped_run(spool: Path) -> None:
    """A flow run mapping a task over TASKS inputs (the 1001st fails); one record per task run, the flow's own."""
    spans = [span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10**10, flow_attrs(RUN_ID, RUN_NAME))]
    records = [log(TRACE, FLOW_SPAN, T0 + 1, "flow begins", log_attrs(RUN_ID, RUN_NAME))]
    for i in range(TASKS):
        start = T0 + 1000 + i * 1000
        spans.append(span(TRACE, f"{0x1000 + i:016x}", FLOW_SPAN, "task square", start, start + 500,
                          task_attrs(f"sq-{i}", RUN_ID, f"square-{i}", index=i,
                                     state="Failed" if i == 1000 else "Completed"), code=2 if i == 1000 else 0))
        records.append(log(TRACE, f"{0x1000 + i:016x}", start + 100, f"square {i}",
                           log_attrs(RUN_ID, RUN_NAME, f"square-{i}")))
    records.append(log(TRACE, FLOW_SPAN, T0 + 10**10 - 1, "flow ends", log_attrs(RUN_ID, RUN_NAME)))
    write(spool, "traces-20261124-100-1-0.jsonl", [traces_line(spans[i:i + 500]) for i in range(0, len(spans), 500)])
    write(spool, "logs-20261124-100-1-0.jsonl",
          [logs_line(records[i:i + PER_LINE]) for i in range(0, len(records), PER_LINE)])


def test_show_reads_the_log_lines_of_the_runs_it_draws_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mapped_run(tmp_path / "spool")
    reads: list[set[int]] = []
    original = LogStream.read

    def counting(self: LogStream, lines: Collection[int] | None = None) -> Iterator[LogRecord]:
        reads.append(set(lines) if lines is not None else {-1})  # once read from
        yield from original(self, lines)

    monkeypatch.setattr(LogStream, "read", counting)
    with RunIndex(tmp_path / "spool") as index:
        index.refresh()
        row = shared.pick(index, None)
        _, shown, count = shared.load(index, row)
        assert count == TASKS + 1 and reads == []  # nothing read yet
        (flow,) = shown
        assert [r.body for r in flow.logs] == ["flow begins", "flow ends"]
        assert len(reads) == 1 and len(reads[0]) == 2  # the flow's two lines, not the map's
        (group,) = group_children(flow.children, expand=False)
        assert isinstance(group, Group) and len(group.members) == TASKS
        assert sum(member.log_count for member in group.members) == TASKS and len(reads) == 1  # counted, not read
        failed = [member for member in group.members if member.failed]
        assert [r.body for r in failed[0].logs] == ["square 1000"] and len(reads) == 2 and len(reads[1]) == 1
        # everything, as --expand and --json do: each line read once more at most
        spans = [node_json(node, 0) for node in flow.walk()]
        assert sum(len(s["logs"]) for s in spans) == TASKS + 2 and all(s["logs_omitted"] == 0 for s in spans)
        assert len(reads) <= 2 + math.ceil((TASKS + 2) / PER_LINE)
        assert len(set().union(*reads[2:])) == len(reads) - 2  # no line read twice
        assert index.skipped.count == 0


RICH_ATTRS: dict[str, Any] = {"s": "text", "i": -42, "big": 2**62, "f": 1.5, "b": True, "arr": ["a", "b"],
                              "nums": [1, 2.5], "esc": 'quote " and \\ and \u00e9 \ud83d\ude00'}


def test_spans_read_from_the_index_copy_are_those_of_the_spool(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    nested = {"kvlistValue": {"values": [{"key": "k", "value": {"arrayValue": {"values": [{"intValue": "1"}]}}}]}}
    item = span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10**9, {**flow_attrs(RUN_ID, RUN_NAME), **RICH_ATTRS},
                code=2, message="it failed", events=[
                    {"timeUnixNano": str(T0 + 5), "name": "exception", "attributes": [
                        {"key": "exception.type", "value": {"stringValue": "ValueError"}},
                        {"key": "n", "value": {"doubleValue": "NaN"}}, {"key": "kv", "value": nested}]},
                    {"timeUnixNano": str(T0 + 6), "name": "Completed", "attributes": []}])
    item["links"] = [{"traceId": TRACE, "spanId": "1" * 16,
                      "attributes": [{"key": "x", "value": {"boolValue": False}}]}]
    item["attributes"].append({"key": "bytes", "value": {"bytesValue": "AAEC"}})
    other = span("9" * 32, "2" * 16, None, "flow other", T0, T0 + 1, flow_attrs("other", "other"))
    line = traces_line([item, other, span(TRACE, "3" * 16, FLOW_SPAN, "task t", T0 + 9, T0 + 1,
                                          task_attrs("t", RUN_ID, "t-1"))])  # the third ends before it starts
    write(spool, "traces-20261124-100-1-0.jsonl", [line])
    expected = [s for s in parse_span_line(line, Skipped(), "x") if s.trace_id == TRACE]
    with RunIndex(spool) as index:
        index.refresh()
        assert index.skipped.count == 1
        index.skipped.reset()
        cached = index.read_spans(TRACE)
        assert index.skipped.count == 1 and index.skipped.first is not None  # the damaged span, counted again
    assert len(cached) == len(expected) == 2
    for got, want in zip(cached, expected, strict=True):
        for field in ("trace_id", "span_id", "parent_id", "name", "start", "end", "status_code", "status_message",
                      "resource"):
            assert getattr(got, field) == getattr(want, field), field
        assert repr(got.attributes) == repr(want.attributes)  # NaN included
        assert repr(got.events) == repr(want.events) and got.links == want.links

    # a copy that is not what the index wrote: read from the spool line instead
    with sqlite3.connect(tmp_path / "spool-index.sqlite") as db:
        db.execute("UPDATE lines SET spans = x'789c0300' WHERE trace_id = ?", (TRACE,))
    with RunIndex(spool) as index:
        index.refresh()
        again = index.read_spans(TRACE)
    assert [(s.span_id, repr(s.attributes), repr(s.events)) for s in again] == [
        (s.span_id, repr(s.attributes), repr(s.events)) for s in expected]

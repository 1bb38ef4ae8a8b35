"""A damaged or crafted spool never crashes or hangs `otelflow`: what does not decode is skipped, counted, located.

Was (issue 25): a log attribute ``{"intValue": "²"}`` was decoded after the reader's try (`show`/`logs` exited 1
with a traceback); the warning said ``file:byteoffset``; a span ending before it started (a clock stepped back)
hung `show`; a chain of nested spans took Python past its recursion limit. Each command runs in a subprocess on a
spool written by hand (``spool_lines``), then on many mutated lines (the fuzz test).
"""

from __future__ import annotations

import copy
import json
import random
import re
from pathlib import Path
from typing import Any

import pytest
from spool_lines import (
    T0,
    flow_attrs,
    log,
    log_attrs,
    logs_line,
    run_cli,
    span,
    task_attrs,
    traces_line,
    write,
)

pytestmark = pytest.mark.slow

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FLOW_SPAN, TASK_SPAN = "00f067aa0ba902b7", "a3ce929d0e0e4736"
RUN_ID, RUN_NAME = "11111111-2222-3333-4444-555555555555", "quiet-otter"
TASK_NAME = "extract-1"
WARNING = re.compile(r"^otelflow: warning: skipped (\d+) malformed spool record\(s\) \(first at (\S+) line (\d+)\); "
                     r"the rest of the spool was read\.$")
COMMANDS = (["runs"], ["runs", "--json"], ["show"], ["show", "--json"], ["show", "--expand"], ["logs"],
            ["logs", "--json"])


def flow_and_task(task_start: int = T0 + 1_000_000, task_end: int = T0 + 2_000_000) -> list[dict[str, Any]]:
    """A flow run with one task run, both ended."""
    return [
        span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10_000_000, flow_attrs(RUN_ID, RUN_NAME)),
        span(TRACE, TASK_SPAN, FLOW_SPAN, "task extract", task_start, task_end,
             task_attrs("66666666-2222-3333-4444-555555555555", RUN_ID, TASK_NAME)),
    ]


def flow_logs(damaged: dict[str, Any] | None = None) -> list[str]:
    """Three log lines of the run; the third's first record has ``damaged`` among its attributes."""
    attrs = log_attrs(RUN_ID, RUN_NAME)
    third = log(TRACE, FLOW_SPAN, T0 + 5_000_000, "third line's record", attrs)
    if damaged is not None:
        third["attributes"].append({"key": "bad", "value": damaged})
    return [
        logs_line([log(TRACE, FLOW_SPAN, T0 + 100, "flow started", attrs)]),
        logs_line([log(TRACE, TASK_SPAN, T0 + 1_500_000, "task says hi", log_attrs(RUN_ID, RUN_NAME, TASK_NAME))]),
        logs_line([third, log(TRACE, FLOW_SPAN, T0 + 6_000_000, "flow done", attrs)]),
    ]


def check_clean(proc: Any, *, allow_no_run: bool = False) -> list[str]:
    """No traceback; exit 0 (or 1 with one clean line, when allowed); the stderr lines besides the warning."""
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr.split(":", 1)[0], proc.stderr
    lines = proc.stderr.splitlines()
    if proc.returncode == 1 and allow_no_run:
        assert len(lines) >= 1 and not lines[-1].startswith(" "), proc.stderr
        return lines
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr
    assert len([line for line in lines if line.startswith("otelflow: warning")]) <= 1, proc.stderr  # said once
    return lines


@pytest.mark.parametrize("damaged", [{"intValue": "²"}, {"intValue": "9" * 5000}, {"kvlistValue": {"values": [
    {"key": "x", "value": {"intValue": "²"}}]}}], ids=["superscript-two", "5000-digits", "nested"])
def test_a_bad_attribute_value_is_counted_once_and_located_by_line(tmp_path: Path, damaged: dict[str, Any]) -> None:
    spool = tmp_path / "spool"
    write(spool, "traces-20261124-100-1-0.jsonl", [traces_line(flow_and_task())])
    logs_file = write(spool, "logs-20261124-100-1-0.jsonl", flow_logs(damaged))
    for args in (["show"], ["show", "--json"], ["logs"], ["logs", "--json"], ["logs", RUN_ID[:8], "--task", "x"]):
        proc = run_cli(tmp_path, *args)
        check_clean(proc)
        warnings = [WARNING.match(line) for line in proc.stderr.splitlines()]
        assert len(warnings) == 1 and warnings[0] is not None, (args, proc.stderr)
        assert warnings[0].groups() == ("1", logs_file.name, "3"), proc.stderr
        if args[0] == "logs" and "--task" not in args:
            assert "third line's record" in proc.stdout and "flow done" in proc.stdout  # the record is kept
    shown = json.loads(run_cli(tmp_path, "show", "--json").stdout)
    (flow,) = [s for s in shown["spans"] if s["span_id"] == FLOW_SPAN]
    third = next(r for r in flow["logs"] if r["message"] == "third line's record")
    assert "bad" not in third["attributes"] and third["attributes"]["otelflow.flow_run.id"] == RUN_ID


def test_a_span_ending_before_it_starts_is_kept_with_its_end_at_its_start(tmp_path: Path) -> None:
    """A clock stepped back between a run's start and end: its span ends before it starts."""
    spool = tmp_path / "spool"
    traces = write(spool, "traces-20261124-100-1-0.jsonl", [
        traces_line(flow_and_task()[:1]), traces_line(flow_and_task(T0 + 5_000_000, T0 + 1_000_000)[1:])])
    write(spool, "logs-20261124-100-1-0.jsonl", flow_logs())
    for args in (["runs"], ["show"], ["show", "--json"], ["runs"], ["logs"]):
        proc = run_cli(tmp_path, *args, timeout=60)
        check_clean(proc)
        if args == ["runs"] and "spool-index.sqlite" in {p.name for p in tmp_path.iterdir()} and proc.stderr == "":
            continue  # the index met the span on the first call; later ones read flow runs only
        if args[0] == "logs":
            assert proc.stderr == "", proc.stderr  # the logs of a root run: no span read
            continue
        (warning,) = [WARNING.match(line) for line in proc.stderr.splitlines()]
        assert warning is not None and warning.groups() == ("1", traces.name, "2"), proc.stderr
    shown = json.loads(run_cli(tmp_path, "show", "--json").stdout)
    (task,) = [s for s in shown["spans"] if s["span_id"] == TASK_SPAN]
    assert task["start_unix_nano"] == task["end_unix_nano"] == T0 + 5_000_000 and task["duration_ms"] == 0
    assert "task says hi" in run_cli(tmp_path, "show").stdout


def test_spans_nested_thousands_deep_are_shown(tmp_path: Path) -> None:
    """Each span the parent of the next, 3,000 deep: drawing recursed once per level (RecursionError)."""
    chain = [span(TRACE, FLOW_SPAN, None, "flow f", T0, T0 + 10**9, flow_attrs(RUN_ID, RUN_NAME))]
    for i in range(1, 3001):
        parent = chain[-1]["spanId"]
        chain.append(span(TRACE, f"{i:016x}", parent, "task step", T0 + i, T0 + 10**9 - i,
                          task_attrs(f"run-{i}", RUN_ID, f"step-{i}")))
    write(tmp_path / "spool", "traces-20261124-100-1-0.jsonl", [traces_line(chain[i:i + 500])
                                                                 for i in range(0, len(chain), 500)])
    for args in (["show"], ["show", "--json"], ["show", "--state", "completed"], ["logs"]):
        proc = run_cli(tmp_path, *args)
        check_clean(proc)
        assert proc.stderr == "", proc.stderr
    shown = json.loads(run_cli(tmp_path, "show", "--json").stdout)
    assert len(shown["spans"]) == 3001
    assert run_cli(tmp_path, "show").stdout.count("task step") == 3000


# --- fuzz -------------------------------------------------------------------------------------------------------

_STRANGE: list[Any] = [
    None, True, False, 0, -1, 2**64, -(2**63) - 1, 1.5, float("inf"), "", "x", "²", "٣", "9" * 5000, "-" + "9" * 30,
    "NaN", "Infinity", "-Infinity", "nan", "0x1f", "+12", "1_000", " 12 ", "1e9", "\ud800", "\x00\x1b[31m", "a" * 32,
    "A" * 16, "g" * 32, "0" * 32, "0" * 16, [], {}, [1, [2, [3]]], {"stringValue": 5}, {"intValue": "²"},
    {"intValue": "9" * 5000}, {"doubleValue": "NaN"}, {"doubleValue": "lots"}, {"boolValue": "yes"},
    {"bytesValue": "!!"}, {"arrayValue": {"values": "x"}}, {"kvlistValue": {"values": [{"key": 1}]}},
    {"stringValue": "a", "intValue": "1"}, {"unknownValue": 1}, [{"key": "k"}], [{"value": {"stringValue": "v"}}],
]


def _deep_value(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"stringValue": "bottom"}
    for _ in range(depth):
        value = {"kvlistValue": {"values": [{"key": "k", "value": value}]}}
    return value


def _strange(rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.05:
        return _deep_value(rng.choice([31, 33, 200]))
    if roll < 0.1:
        return rng.choice([[[]] * 3, {"a": {"b": {"c": [None]}}}, list(range(50))])
    return copy.deepcopy(rng.choice(_STRANGE))


def _mutate(rng: random.Random, item: dict[str, Any]) -> dict[str, Any]:
    item = copy.deepcopy(item)
    for _ in range(rng.choice([1, 1, 2, 3])):
        field = rng.choice([*item.keys(), "attributes", "attributes", "events", "links", "status"])
        attributes = item.get("attributes")
        if field == "attributes" and isinstance(attributes, list) and attributes and rng.random() < 0.7:
            entry = rng.choice(attributes)
            if rng.random() < 0.7:
                entry["value"] = _strange(rng)
            else:
                entry[rng.choice(["key", "value"])] = _strange(rng)
        elif field == "events" and rng.random() < 0.6:
            item["events"] = [{"name": _strange(rng), "timeUnixNano": _strange(rng), "attributes": _strange(rng)},
                              {"name": "exception", "timeUnixNano": "1", "attributes": [
                                  {"key": "exception.type", "value": _strange(rng)}]}]
        elif field == "links" and rng.random() < 0.6:
            item["links"] = [{"traceId": _strange(rng), "spanId": _strange(rng), "attributes": _strange(rng)},
                             {"traceId": TRACE, "spanId": TASK_SPAN, "attributes": []}]
        elif field == "endTimeUnixNano" and rng.random() < 0.5:
            item["startTimeUnixNano"], item[field] = str(T0 + 10**9), str(T0)  # a clock stepped back
        elif field == "parentSpanId" and rng.random() < 0.5:
            item[field] = item.get("spanId")  # its own parent
        else:
            item[field] = _strange(rng)
    return item


def _fuzzed_spool(spool: Path, seed: int) -> None:
    rng = random.Random(seed)
    spans = flow_and_task()
    spans += [span(TRACE, f"{0xb0 + i:016x}", FLOW_SPAN, "task square", T0 + 2_000_000 + i, T0 + 3_000_000 + i,
                   task_attrs(f"sq-{i}", RUN_ID, f"square-{i}", index=i, state="Failed" if i == 2 else "Completed"))
              for i in range(6)]
    records = [log(TRACE, s["spanId"], T0 + 1000 * i, f"record {i}", log_attrs(RUN_ID, RUN_NAME),
                   level=rng.choice(["INFO", "WARNING"]), number=rng.choice([9, 13])) for i, s in enumerate(spans)]
    traces: list[str | bytes] = [traces_line(spans)]
    logs: list[str | bytes] = [logs_line(records)]
    for _ in range(150):
        good_spans = [copy.deepcopy(rng.choice(spans)) for _ in range(rng.randint(0, 2))]
        good_logs = [copy.deepcopy(rng.choice(records)) for _ in range(rng.randint(0, 2))]
        traces.append(traces_line([_mutate(rng, rng.choice(spans)), *good_spans]))
        logs.append(logs_line([_mutate(rng, rng.choice(records)), *good_logs]))
    whole = traces_line(spans).encode()
    for junk in ([rng.randbytes(rng.randint(1, 300)) for _ in range(10)]
                 + [whole[: rng.randint(1, len(whole) - 1)] for _ in range(5)]
                 + [whole.replace(b"task", b"t\xff\xfesk", 1), b"[" * 100_000 + b"]" * 100_000,
                    b'{"resourceSpans": [' + b"[" * 5000 + b"]" * 5000 + b"]}", b"NaN", b"null", b"{}", b'"x"',
                    b'{"resourceSpans": [{"scopeSpans": [{"spans": [' + b"1" * 5000 + b"]}]}]}"]):
        traces.insert(rng.randint(0, len(traces)), junk)
        logs.insert(rng.randint(0, len(logs)), junk)
    write(spool, "traces-20261124-100-1-0.jsonl", traces)
    write(spool, "logs-20261124-100-1-0.jsonl", logs)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_fuzzed_lines_never_crash_or_hang_the_cli(tmp_path: Path, seed: int) -> None:
    """Mutated lines (random bytes, wrong types in every field, huge numbers, deep nesting, NaN strings, bad ids,
    non-UTF-8, spans ending before they start, their own parents) beside good ones: every command reads what it
    can, says once how much it skipped, and exits 0 (1 with one line when no run can be named)."""
    _fuzzed_spool(tmp_path / "spool", seed)
    for args in (*COMMANDS, ["show", TRACE], ["show", TRACE, "--json"], ["logs", TRACE], ["logs", TRACE, "--json"],
                 ["logs", RUN_ID, "--level", "warning", "--exit-status"]):
        proc = run_cli(tmp_path, *args, timeout=90)
        if args[-1] == "--exit-status":
            assert proc.returncode in (0, 1, 3) and "Traceback" not in proc.stderr, proc.stderr
            continue
        lines = check_clean(proc, allow_no_run=args[0] != "runs")
        for line in lines:
            assert line.startswith("otelflow: warning: skipped") or proc.returncode == 1, (args, proc.stderr)
        if proc.returncode == 0 and "--json" in args:
            for line in proc.stdout.splitlines() if args[0] != "show" else [proc.stdout]:
                json.loads(line)

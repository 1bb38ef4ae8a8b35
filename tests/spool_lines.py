"""Spool lines made by hand for the CLI tests (OTLP/JSON as the spool writer writes it), and the CLI in a subprocess.

Hand-made rather than written by a flow run: the tests choose every field (to damage it, to place records in time
across several "processes"), and need no run to wait for. ``tests/test_cli.py`` checks the same commands on
spools written by real runs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

from conftest import PYTHON, REPO_ROOT, subprocess_env

T0 = 1_796_500_000_000_000_000  # ns: a fixed start, so tests are reproducible


def value(v: Any) -> dict[str, Any]:
    """An OTLP/JSON AnyValue."""
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, list):
        return {"arrayValue": {"values": [value(x) for x in v]}}
    return {"stringValue": str(v)}


def kv(attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """OTLP/JSON attributes."""
    return [{"key": k, "value": value(v)} for k, v in attrs.items()]


def span(trace: str, span_id: str, parent: str | None, name: str, start: int, end: int, attrs: dict[str, Any],
         *, code: int = 0, message: str = "", events: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """An OTLP/JSON span object."""
    item: dict[str, Any] = {"traceId": trace, "spanId": span_id, "name": name, "kind": 1,
                            "startTimeUnixNano": str(start), "endTimeUnixNano": str(end), "attributes": kv(attrs),
                            "flags": 257, "status": {"code": code, **({"message": message} if message else {})}}
    if parent:
        item["parentSpanId"] = parent
    if events:
        item["events"] = events
    return item


def log(trace: str, span_id: str | None, when: int, body: str, attrs: dict[str, Any], *, level: str = "INFO",
        number: int = 9) -> dict[str, Any]:
    """An OTLP/JSON log record object."""
    item: dict[str, Any] = {"timeUnixNano": str(when), "observedTimeUnixNano": str(when), "severityNumber": number,
                            "severityText": level, "body": {"stringValue": body}, "attributes": kv(attrs)}
    if span_id:
        item.update(traceId=trace, spanId=span_id, flags=1)
    elif trace:
        item["traceId"] = trace
    return item


def traces_line(spans: list[Any], service: str = "svc") -> str:
    """One ExportTraceServiceRequest line."""
    return json.dumps({"resourceSpans": [{"resource": {"attributes": kv({"service.name": service})},
                                          "scopeSpans": [{"scope": {"name": "otelflow"}, "spans": spans}]}]})


def logs_line(records: list[Any], service: str = "svc") -> str:
    """One ExportLogsServiceRequest line."""
    return json.dumps({"resourceLogs": [{"resource": {"attributes": kv({"service.name": service})},
                                         "scopeLogs": [{"scope": {"name": "otelflow"}, "logRecords": records}]}]})


def flow_attrs(run_id: str, name: str, flow: str = "f") -> dict[str, Any]:
    """A flow run span's attributes."""
    return {"otelflow.run.type": "flow", "otelflow.flow.name": flow, "otelflow.run.id": run_id,
            "otelflow.run.name": name, "otelflow.flow_run.id": run_id, "otelflow.flow_run.name": name,
            "otelflow.run.state": "Completed"}


def task_attrs(run_id: str, flow_run_id: str, name: str, *, index: int | None = None,
               state: str = "Completed") -> dict[str, Any]:
    """A task run span's attributes."""
    attrs: dict[str, Any] = {"otelflow.run.type": "task", "otelflow.task.name": name.split("-")[0],
                             "otelflow.run.id": run_id, "otelflow.run.name": name,
                             "otelflow.flow_run.id": flow_run_id, "otelflow.run.state": state}
    if index is not None:
        attrs["otelflow.task.map_index"] = index
    return attrs


def log_attrs(flow_run_id: str, flow_run_name: str, task_run_name: str | None = None) -> dict[str, Any]:
    """A run log record's attributes (otelflow's names only)."""
    attrs = {"otelflow.flow_run.id": flow_run_id, "otelflow.flow_run.name": flow_run_name}
    if task_run_name:
        attrs.update({"otelflow.task_run.name": task_run_name, "otelflow.task.name": task_run_name.split("-")[0]})
    return attrs


def write(spool: Path, name: str, lines: list[str | bytes]) -> Path:
    """Write a spool file of these lines (each newline-terminated)."""
    spool.mkdir(parents=True, exist_ok=True)
    path = spool / name
    path.write_bytes(b"".join((line if isinstance(line, bytes) else line.encode()) + b"\n" for line in lines))
    return path


# The checkout whose CLI runs: this one, or another (OTELFLOW_CLI_REPO=/path/to/older/checkout) to see which tests
# an older version fails.
CLI_REPO = Path(os.environ.get("OTELFLOW_CLI_REPO") or REPO_ROOT)


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI subprocess with ``home`` as OTELFLOW_HOME."""
    env = subprocess_env(OTELFLOW_HOME=str(home), **extra)
    if CLI_REPO != REPO_ROOT:
        env["PYTHONPATH"] = os.pathsep.join([str(CLI_REPO), env["PYTHONPATH"]])
    return env


def run_cli(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``otelflow ARGS`` in a subprocess, piped, with ``home`` as OTELFLOW_HOME (exit status not checked)."""
    return subprocess.run([PYTHON, "-m", "otelflow", *args], cwd=CLI_REPO, capture_output=True, text=True,
                          timeout=timeout, env=cli_env(home))

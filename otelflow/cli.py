"""The ``otelflow`` command: look at runs recorded in the local spool (the embedded telemetry default).

    otelflow runs                 # recent flow runs, newest first
    otelflow show                 # the latest flow run's trace, with its logs under each span
    otelflow show <flow-run-id | flow-run-name | trace-id>
    otelflow spool prune --older-than 7   # delete spool files older than a week

Nothing imports this module; it reads the spool files only (it never configures telemetry).
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from otelflow import semconv
from otelflow._internal.spool import decode_attributes, iter_spool

__all__ = ["main"]

_SEVERITY_COLORS = {"DEBUG": "blue", "INFO": "green", "WARN": "yellow", "WARNING": "yellow", "ERROR": "red",
                    "CRITICAL": "red", "FATAL": "red"}
_STATE_COLORS = {"Completed": "green", "Failed": "red", "Crashed": "red", "Cancelled": "yellow",
                 "TimedOut": "red", "NotReady": "yellow"}


@dataclass
class _Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    start: int
    end: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str
    events: list[dict[str, Any]]
    resource: dict[str, Any]
    children: list[_Span] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        return (self.end - self.start) / 1e6

    @property
    def is_flow(self) -> bool:
        return self.attributes.get(semconv.RUN_TYPE) == semconv.RUN_TYPE_FLOW


def _load_spans(spool: Path) -> list[_Span]:
    spans = []
    for resource, item in iter_spool(spool, "traces"):
        status = item.get("status", {})
        spans.append(
            _Span(
                trace_id=item.get("traceId", ""),
                span_id=item.get("spanId", ""),
                parent_id=item.get("parentSpanId") or None,
                name=item.get("name", ""),
                start=int(item.get("startTimeUnixNano", 0)),
                end=int(item.get("endTimeUnixNano", 0)),
                attributes=decode_attributes(item.get("attributes")),
                status_code=int(status.get("code", 0)),
                status_message=status.get("message", ""),
                events=item.get("events", []),
                resource=resource,
            )
        )
    return spans


def _spool_dir(home: str | None) -> Path:
    if home:
        return Path(home).expanduser() / "spool"
    from otelflow.settings import get_settings

    return get_settings().spool_dir


def _time(ns: int) -> str:
    return _dt.datetime.fromtimestamp(ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")


def _state_text(span: _Span) -> str:
    state = str(span.attributes.get(semconv.RUN_STATE, "ERROR" if span.status_code == 2 else ""))
    return click.style(state, fg=_STATE_COLORS.get(state)) if state else ""


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="otelflow")
def main() -> None:
    """otelflow: Prefect-style flows on OpenTelemetry. Inspect runs recorded in the local spool."""


_home_option = click.option(
    "--home", envvar="OTELFLOW_HOME", default=None,
    help="otelflow home folder (default: $OTELFLOW_HOME or ~/.otelflow).",
)


@main.command()
@_home_option
@click.option("--limit", "-n", default=20, show_default=True, help="How many flow runs to list.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per run instead of a table.")
def runs(home: str | None, limit: int, as_json: bool) -> None:
    """List recent flow runs recorded in the local spool, newest first."""
    spool = _spool_dir(home)
    flows = sorted((s for s in _load_spans(spool) if s.is_flow), key=lambda s: s.start, reverse=True)[:limit]
    if not flows:
        click.echo(f"No flow runs in {spool}. Run a flow first (telemetry goes there when no OTLP endpoint is set).")
        return
    if as_json:
        for span in flows:
            click.echo(json.dumps({
                "flow": span.attributes.get(semconv.FLOW_NAME), "flow_run_id": span.attributes.get(semconv.RUN_ID),
                "flow_run_name": span.attributes.get(semconv.RUN_NAME),
                "state": span.attributes.get(semconv.RUN_STATE), "start": _time(span.start),
                "duration_ms": round(span.duration_ms, 3), "trace_id": span.trace_id,
                "service": span.resource.get("service.name"),
            }))
        return
    header = f"{'START':19}  {'FLOW':20}  {'RUN NAME':22}  {'STATE':10}  {'DURATION':>10}  {'FLOW RUN ID':36}  TRACE ID"
    click.echo(click.style(header, bold=True))
    for span in flows:
        state = str(span.attributes.get(semconv.RUN_STATE, ""))
        click.echo(
            f"{_time(span.start):19}  {str(span.attributes.get(semconv.FLOW_NAME, ''))[:20]:20}  "
            f"{str(span.attributes.get(semconv.RUN_NAME, ''))[:22]:22}  "
            f"{click.style(f'{state:10}', fg=_STATE_COLORS.get(state))}  {span.duration_ms:>8.1f}ms  "
            f"{span.attributes.get(semconv.RUN_ID, '')!s:36}  {span.trace_id}"
        )


def _pick_trace(spans: list[_Span], ident: str | None) -> str | None:
    flows = sorted((s for s in spans if s.is_flow), key=lambda s: s.start, reverse=True)
    if ident is None:
        roots = [s for s in flows if s.parent_id is None] or flows
        return roots[0].trace_id if roots else None
    ident = ident.strip().lower()
    for span in flows:
        if ident in (str(span.attributes.get(semconv.RUN_ID, "")).lower(),
                     str(span.attributes.get(semconv.RUN_NAME, "")).lower()):
            return span.trace_id
    matches = {s.trace_id for s in spans if s.trace_id.startswith(ident)}
    return matches.pop() if len(matches) == 1 else None


def _log_line(log: dict[str, Any], indent: str) -> str:
    attrs = decode_attributes(log.get("attributes"))
    severity = log.get("severityText") or str(log.get("severityNumber", ""))
    body = log.get("body", {})
    message = body.get("stringValue") if "stringValue" in body else json.dumps(body)
    extras = " ".join(
        f"{k}={v}" for k, v in attrs.items()
        if not k.startswith(f"{semconv.NAMESPACE}.") and not k.startswith("code.") and not k.startswith("exception.")
    )
    stamp = _dt.datetime.fromtimestamp(int(log.get("timeUnixNano", 0)) / 1e9).strftime("%H:%M:%S.%f")[:-3]
    line = f"{indent}{click.style(stamp, dim=True)} {click.style(f'{severity:7}', fg=_SEVERITY_COLORS.get(severity))} "
    line += str(message)
    if extras:
        line += "  " + click.style(extras, dim=True)
    if attrs.get(semconv.EXCEPTION_TYPE):
        line += f"\n{indent}        {attrs[semconv.EXCEPTION_TYPE]}: {attrs.get(semconv.EXCEPTION_MESSAGE, '')}"
    return line


def _render(span: _Span, prefix: str, last: bool, root: bool, out: list[str]) -> None:
    branch = "" if root else ("└── " if last else "├── ")
    attrs = span.attributes
    label = click.style(span.name, bold=True)
    details = [str(attrs.get(semconv.RUN_NAME, ""))]
    if semconv.TASK_MAP_INDEX in attrs:
        details.append(f"[map {attrs[semconv.TASK_MAP_INDEX]}]")
    details.append(_state_text(span))
    details.append(f"{span.duration_ms:.1f}ms")
    attempts = attrs.get(semconv.RUN_ATTEMPT)
    if isinstance(attempts, int) and attempts > 1:
        details.append(f"attempts={attempts}")
    if attrs.get(semconv.TAGS):
        details.append("tags=" + ",".join(attrs[semconv.TAGS]))
    out.append(f"{prefix}{branch}{label}  " + "  ".join(d for d in details if d))
    child_prefix = prefix if root else prefix + ("    " if last else "│   ")
    if span.status_code == 2 and span.status_message:
        out.append(f"{child_prefix}  {click.style('error: ' + span.status_message, fg='red')}")
    for event in span.events:
        if event.get("name") == semconv.EVENT_RETRY:
            ev = decode_attributes(event.get("attributes"))
            out.append(
                f"{child_prefix}  {click.style('retry', fg='yellow')} attempt {ev.get(semconv.RUN_ATTEMPT)} after "
                f"{ev.get(semconv.EXCEPTION_TYPE)}: {ev.get(semconv.EXCEPTION_MESSAGE)}"
            )
    for log in span.logs:
        out.append(_log_line(log, child_prefix + "  "))
    for i, child in enumerate(span.children):
        _render(child, child_prefix, i == len(span.children) - 1, False, out)


@main.command()
@_home_option
@click.argument("ident", required=False)
def show(home: str | None, ident: str | None) -> None:
    """Print a run's trace as a tree, with its logs under each span.

    IDENT is a flow run id, a flow run name or a trace id (prefix); default: the latest flow run.
    """
    spool = _spool_dir(home)
    spans = _load_spans(spool)
    trace_id = _pick_trace(spans, ident)
    if trace_id is None:
        what = f"matching {ident!r}" if ident else "at all"
        click.echo(f"No flow run {what} in {spool}. `otelflow runs` lists what is there.", err=True)
        sys.exit(1)
    in_trace = {s.span_id: s for s in spans if s.trace_id == trace_id}
    for _, log in iter_spool(spool, "logs"):
        if log.get("traceId") == trace_id and log.get("spanId") in in_trace:
            in_trace[log["spanId"]].logs.append(log)
    roots = []
    for span in sorted(in_trace.values(), key=lambda s: s.start):
        span.logs.sort(key=lambda log: int(log.get("timeUnixNano", 0)))
        parent = in_trace.get(span.parent_id or "")
        (parent.children if parent is not None else roots).append(span)
    service = next(iter(in_trace.values())).resource.get("service.name", "?")
    out = [click.style(f"trace {trace_id}", bold=True) + f"  service={service}  spans={len(in_trace)}"]
    for root in roots:
        if root.parent_id:
            out.append(click.style(f"(parent span {root.parent_id} is in another process or not exported)", dim=True))
        _render(root, "", True, True, out)
    click.echo("\n".join(out))


@main.group()
def spool() -> None:
    """Manage the local spool (the embedded telemetry default)."""


@spool.command("path")
@_home_option
def spool_path(home: str | None) -> None:
    """Print the spool folder (mount it into the Collector's `otlp_json_file` receiver to ship it)."""
    click.echo(str(_spool_dir(home)))


@spool.command("prune")
@_home_option
@click.option("--older-than", "days", type=click.FloatRange(min=0), required=True,
              help="Delete spool files last written more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
def spool_prune(home: str | None, days: float, dry_run: bool) -> None:
    """Delete old spool files. Files of running processes are kept: they were written recently."""
    import time

    folder = _spool_dir(home)
    cutoff = time.time() - days * 86400
    doomed = [p for p in sorted(folder.glob("*.jsonl")) if p.stat().st_mtime < cutoff] if folder.is_dir() else []
    freed = sum(p.stat().st_size for p in doomed)
    for path in doomed:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {path.name}")
        if not dry_run:
            path.unlink(missing_ok=True)
    click.echo(f"{len(doomed)} file(s), {freed / 2**20:.1f} MiB {'to free' if dry_run else 'freed'} in {folder}.")

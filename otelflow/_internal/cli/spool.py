"""``otelflow spool``: where the spool is, pruning it, and shipping it (and the outage buffer) to a collector."""

from __future__ import annotations

import time
from typing import Any

import click

from otelflow._internal.cli.runs import home_option, spool_dir
from otelflow._internal.cli.support import fail as _fail
from otelflow._internal.cli.support import shown

__all__ = ["spool_group"]


@click.group("spool")
def spool_group() -> None:
    """Manage the local spool (the embedded telemetry default)."""


@spool_group.command("path")
@home_option
def spool_path(home: str | None) -> None:
    """Print the spool folder (mount it into the Collector's `otlp_json_file` receiver to ship it)."""
    click.echo(str(spool_dir(home)))


@spool_group.command("prune")
@home_option
@click.option("--older-than", "days", type=click.FloatRange(min=0), required=True,
              help="Delete spool files last written more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
def spool_prune(home: str | None, days: float, dry_run: bool) -> None:
    """Delete old spool files. Files of running processes are kept: they were written recently."""
    folder = spool_dir(home)
    cutoff = time.time() - days * 86400
    doomed = [p for p in sorted(folder.glob("*.jsonl")) if p.stat().st_mtime < cutoff] if folder.is_dir() else []
    freed = sum(p.stat().st_size for p in doomed)
    for path in doomed:
        click.echo(f"{'would delete' if dry_run else 'deleted'} {shown(path.name)}")
        if not dry_run:
            path.unlink(missing_ok=True)
            # its `spool ship` progress file goes with it
            path.with_name(path.name + ".shipped").unlink(missing_ok=True)
    if not dry_run:
        from otelflow._internal.spool.liveness import orphaned_locks

        for lock in orphaned_locks(folder):  # an ended process's liveness lock, once its last file is gone
            lock.unlink(missing_ok=True)
    click.echo(f"{len(doomed)} file(s), {freed / 2**20:.1f} MiB {'to free' if dry_run else 'freed'} in {folder}.")


def _exporters(endpoint: str, protocol: str, timeout: float, headers: dict[str, str]) -> tuple[Any, Any]:
    """OTLP senders for spans and logs to a collector base URL (``http://host:4318`` / ``http://host:4317``).

    Each export is one request; a failure says why (connection refused, HTTP 413...), from the transport itself.
    """
    from otelflow._internal.export.otlp import OtlpSender

    base = endpoint.rstrip("/")
    kind = "grpc" if protocol == "grpc" else "http"
    if kind == "http":
        for suffix in ("/v1/traces", "/v1/logs"):
            base = base.removesuffix(suffix)
    path = {"traces": "", "logs": ""} if kind == "grpc" else {"traces": "/v1/traces", "logs": "/v1/logs"}
    return tuple(OtlpSender(signal, kind, endpoint=base + path[signal], timeout=timeout, headers=headers)
                 for signal in ("traces", "logs"))  # type: ignore[return-value]


@spool_group.command("ship")
@home_option
@click.option("--endpoint", envvar="OTEL_EXPORTER_OTLP_ENDPOINT", required=True, metavar="URL",
              help="Collector base URL: http://host:4318 (http/protobuf) or http://host:4317 (grpc). "
                   "Default: $OTEL_EXPORTER_OTLP_ENDPOINT.")
@click.option("--protocol", envvar="OTEL_EXPORTER_OTLP_PROTOCOL", default="http/protobuf", show_default=True,
              type=click.Choice(["http/protobuf", "grpc"]), help="OTLP transport.")
@click.option("--header", "header_values", multiple=True, metavar="KEY=VALUE", help="Extra request header.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds per export request.")
def spool_ship(home: str | None, endpoint: str, protocol: str, header_values: tuple[str, ...],
               timeout: float) -> None:
    """Send the spooled runs (made offline), and the outage buffer, to a collector over OTLP.

    What was shipped is remembered (a `.shipped` progress file next to each spool file), so running it again
    sends only what is new; an interrupted or failed ship resumes where it stopped. The outage buffer (batches
    an OTLP exporter could not deliver, `$OTELFLOW_HOME/buffer/`) is sent after the spool and its files are
    deleted once sent.
    """
    from otelflow._internal.export.ship import ship_directory

    headers: dict[str, str] = {}
    for value in header_values:
        key, sep, val = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r}: expected KEY=VALUE.", param_hint="--header")
        headers[key.strip()] = val.strip()
    folder = spool_dir(home)
    buffer = folder.parent / "buffer"
    span_exporter, log_exporter = _exporters(endpoint, protocol, timeout, headers)
    totals: dict[tuple[str, str], Any] = {}
    failed: str | None = None
    try:
        for source, directory, delete in (("spool", folder, False), ("buffer", buffer, True)):
            for signal, exporter in (("traces", span_exporter), ("logs", log_exporter)):
                try:
                    result = ship_directory(directory, signal, exporter, delete_shipped=delete)
                except OSError as exc:  # a folder or file that cannot be read: stop, say why, lose nothing
                    failed = f"cannot read {exc.filename or directory}: {exc.strerror or exc}"
                    break
                totals[source, signal] = result
                if result.failed:
                    failed = result.error or "the collector did not accept the data"
                    break
            if failed:
                break
    finally:
        span_exporter.shutdown()
        log_exporter.shutdown()

    def sent(source: str, signal: str) -> int:
        return int(totals[source, signal].items_sent) if (source, signal) in totals else 0

    spans, records = sent("spool", "traces"), sent("spool", "logs")
    skipped = sum(r.lines_skipped for r in totals.values())
    busy = sum(r.files_locked for r in totals.values())
    click.echo(f"shipped {spans} span(s) and {records} log record(s) from {folder} to {shown(endpoint)} "
               f"({shown(protocol)}).")
    buffered = sent("buffer", "traces") + sent("buffer", "logs")
    if buffered:
        click.echo(f"shipped {buffered} item(s) from the outage buffer {buffer}.")
    damaged = [path for r in totals.values() for path in r.files_damaged]
    if skipped:
        click.echo(f"otelflow: warning: skipped {skipped} unreadable line(s) (not sent).", err=True)
    if damaged:
        names = ", ".join(shown(path) for path in damaged)
        click.echo(f"otelflow: warning: kept {len(damaged)} file(s) holding them, for inspection: {names}", err=True)
    if busy:
        click.echo(f"{busy} file(s) in use by another process (or another ship) were left for later.")
    if failed:
        _fail(f"Stopped: {shown(failed)}. Nothing was lost: run `otelflow spool ship` again to resume from there.")

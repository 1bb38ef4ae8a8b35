"""``otelflow input``: send input to a waiting flow run, list its inputs, resume a paused run.

    otelflow input send FLOW_RUN_ID --key-prefix approval '{"decision": "approved"}'
    otelflow input list FLOW_RUN_ID [--key-prefix approval] [--json]
    otelflow input resume FLOW_RUN_ID ['{"approved": true}']

The store is the one the flow uses (``OTELFLOW_STORE_URL``, default ``$OTELFLOW_HOME/store.sqlite3``).
This module stays light to import: the stores load inside the commands.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

__all__ = ["input_group"]

_VALUE_WIDTH = 60


def _parse_json(text: str) -> Any:
    if text == "-":
        text = sys.stdin.read()
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc}). Quote it for the shell, e.g. '{{\"decision\": \"approved\"}}'.",
            param_hint="VALUE",
        ) from None
    except RecursionError:  # json's decoder recurses once per level: 10,000 nested lists exhaust the stack
        raise click.BadParameter("JSON nested too deeply to read (arrays or objects hundreds of levels within each "
                                 "other).", param_hint="VALUE") from None


def _fail(exc: Exception) -> click.ClickException:
    from otelflow._internal.terminal import terminal_safe

    return click.ClickException(terminal_safe(str(exc)))  # it may quote a stored key or sender


@click.group("input")
def input_group() -> None:
    """Send input to flow runs waiting in receive_input() / pause_flow_run(), and list it."""


@input_group.command("send")
@click.argument("flow_run_id")
@click.argument("value")
@click.option("--key-prefix", default=None, help="Must match the flow's receive_input(key_prefix=...).")
@click.option("--key", "key", default=None, help="Store under exactly this key instead of PREFIX-<uuid>.")
@click.option("--sender", default=None, help="Who sends it (shown to the flow and in telemetry).")
def send(flow_run_id: str, value: str, key_prefix: str | None, key: str | None, sender: str | None) -> None:
    """Send VALUE (JSON; '-' reads stdin) to flow run FLOW_RUN_ID; print the stored key."""
    from otelflow.input import create_flow_run_input, send_input
    from otelflow.stores import StoreError

    data = _parse_json(value)
    try:
        if key is not None:
            record = create_flow_run_input(key, data, flow_run_id=flow_run_id, sender=sender)
        else:
            record = send_input(data, flow_run_id, sender=sender, key_prefix=key_prefix).record
    except (ValueError, TypeError, RuntimeError, StoreError) as exc:
        raise _fail(exc) from None
    click.echo(record.key)


@input_group.command("list")
@click.argument("flow_run_id")
@click.option("--key-prefix", default="", help="Only keys starting with this.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per input.")
def list_inputs(flow_run_id: str, key_prefix: str, as_json: bool) -> None:
    """List the inputs of flow run FLOW_RUN_ID, oldest first."""
    from otelflow._internal.terminal import terminal_safe
    from otelflow.input import filter_flow_run_input
    from otelflow.stores import StoreError

    try:
        records = filter_flow_run_input(key_prefix, limit=None, flow_run_id=flow_run_id)
    except (ValueError, RuntimeError, StoreError) as exc:
        raise _fail(exc) from None
    if as_json:
        for record in records:
            click.echo(record.model_dump_json())
        return
    if not records:
        click.echo(f"No inputs for flow run {flow_run_id}" + (f" with key prefix {key_prefix!r}." if key_prefix
                                                                else "."))
        return
    for record in records:
        text = json.dumps(record.value, separators=(",", ":"))
        if len(text) > _VALUE_WIDTH:
            text = text[: _VALUE_WIDTH - 3] + "..."
        created = record.created.strftime("%Y-%m-%d %H:%M:%S")
        # keys and senders come from whoever sent the input: printed as text, never as terminal controls
        click.echo(terminal_safe(f"{created}  {record.key}  {record.sender or '-'}  {text}"))


@input_group.command("resume")
@click.argument("flow_run_id")
@click.argument("value", required=False)
def resume(flow_run_id: str, value: str | None) -> None:
    """Resume paused flow run FLOW_RUN_ID, with VALUE (JSON) when it waits for input."""
    from otelflow.flow_runs import FlowPauseTimeout, resume_flow_run
    from otelflow.stores import StoreError

    data = _parse_json(value) if value is not None else None
    try:
        resume_flow_run(flow_run_id, run_input=data)
    except (ValueError, RuntimeError, FlowPauseTimeout, StoreError) as exc:
        raise _fail(exc) from None
    click.echo(f"Resumed flow run {flow_run_id}.")

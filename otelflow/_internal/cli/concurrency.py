"""``otelflow gcl`` (global concurrency limits) and ``otelflow concurrency-limit`` (task-run tag limits).

    otelflow gcl create NAME --limit N [--slot-decay-per-second X] [--disable]
    otelflow gcl ls | inspect NAME [--output json] | update NAME [--limit N] [--slot-decay-per-second X]
    otelflow gcl enable NAME | disable NAME | delete NAME [--yes]
    otelflow concurrency-limit create TAG N | ls | inspect TAG | reset TAG | delete TAG

Messages follow ``prefect gcl`` / ``prefect concurrency-limit``. Names, tags and holders are untrusted text:
printed through :func:`~otelflow._internal.cli.support.terminal_safe`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import click

from otelflow._internal.cli.support import terminal_safe

__all__ = ["gcl_group", "tag_limit_group"]


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


def _ok(message: str) -> None:
    click.echo(message)


@contextmanager
def _store_errors() -> Iterator[None]:
    from otelflow.stores import StoreError

    try:
        yield
    except StoreError as exc:
        _fail(f"otelflow: {terminal_safe(str(exc))}")


def _q(text: str) -> str:
    return repr(terminal_safe(text))


_store_option = click.option("--store", "store_url", metavar="URL", default=None,
                             help="The otelflow store holding the limits (default: $OTELFLOW_STORE_URL, else "
                                  "$OTELFLOW_HOME/store.sqlite3).")


# --- global concurrency limits -----------------------------------------------------------------------------


@click.group("global-concurrency-limit")
@_store_option
@click.pass_context
def gcl_group(ctx: click.Context, store_url: str | None) -> None:
    """Manage global concurrency and rate limits (used by concurrency() and rate_limit())."""
    ctx.obj = store_url


@gcl_group.command("create")
@click.argument("name")
@click.option("--limit", "-l", type=int, required=True, help="The most slots in use at once.")
@click.option("--slot-decay-per-second", type=float, default=0.0, show_default=True,
              help="Slots freed per second (> 0 makes the limit a rate limit).")
@click.option("--disable", is_flag=True, help="Create it inactive.")
@click.pass_obj
def gcl_create(store_url: str | None, name: str, limit: int, slot_decay_per_second: float, disable: bool) -> None:
    """Create a global concurrency limit."""
    from otelflow.concurrency import limits

    with _store_errors():
        try:
            created = limits.create_global_concurrency_limit(
                name, limit, active=not disable, slot_decay_per_second=slot_decay_per_second, store=store_url)
        except limits.ConcurrencyLimitExists:
            _fail(f"Global concurrency limit {_q(name)} already exists. Please try creating with a different name.")
        except ValueError as exc:
            _fail(f"Invalid arguments provided: {terminal_safe(str(exc))}")
    _ok(f"Created global concurrency limit with name {_q(name)} and ID '{created.id}'. Run `otelflow gcl inspect "
        f"{terminal_safe(name)}` to view details.")


@gcl_group.command("ls")
@click.option("--output", "-o", type=click.Choice(["json"]), default=None, help="Print JSON instead of a table.")
@click.pass_obj
def gcl_ls(store_url: str | None, output: str | None) -> None:
    """List global concurrency limits."""
    from otelflow.concurrency import limits

    with _store_errors():
        found = limits.read_global_concurrency_limits(store=store_url)
    if output == "json":
        click.echo(json.dumps([limit.to_json() for limit in found], indent=2))
        return
    if not found:
        _ok("No global concurrency limits found.")
        return
    from rich.table import Table

    from otelflow._internal.cli.render import make_console

    table = Table(title="Global Concurrency Limits")
    for column in ("ID", "Name", "Active", "Limit", "Active Slots", "Slot Decay Per Second", "Updated"):
        table.add_column(column, no_wrap=column != "Name")
    for limit in found:
        table.add_row(limit.id, terminal_safe(limit.name), str(limit.active), str(limit.limit),
                      str(limit.active_slots), f"{limit.slot_decay_per_second:g}", limit.updated)
    make_console().print(table)


@gcl_group.command("inspect")
@click.argument("name")
@click.option("--output", "-o", type=click.Choice(["json"]), default=None, help="Print JSON.")
@click.pass_obj
def gcl_inspect(store_url: str | None, name: str, output: str | None) -> None:
    """Show one global concurrency limit and who holds its slots."""
    from otelflow.concurrency import limits

    with _store_errors():
        try:
            limit = limits.read_global_concurrency_limit(name, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"Global concurrency limit {_q(name)} not found.")
    data = limit.to_json()
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        shown = ", ".join(terminal_safe(h) for h in value) or "-" if isinstance(value, list) else terminal_safe(
            str(value))
        click.echo(f"{key}: {shown}")


@gcl_group.command("update")
@click.argument("name")
@click.option("--limit", "-l", type=int, default=None, help="The new limit.")
@click.option("--slot-decay-per-second", type=float, default=None, help="The new slot decay per second.")
@click.option("--enable", is_flag=True, help="Enable the limit.")
@click.option("--disable", is_flag=True, help="Disable the limit.")
@click.pass_obj
def gcl_update(store_url: str | None, name: str, limit: int | None, slot_decay_per_second: float | None,
               enable: bool, disable: bool) -> None:
    """Update a global concurrency limit."""
    from otelflow.concurrency import limits

    if enable and disable:
        _fail("Cannot enable and disable a global concurrency limit at the same time.")
    active = True if enable else (False if disable else None)
    if limit is None and slot_decay_per_second is None and active is None:
        _fail("No update arguments provided.")
    with _store_errors():
        try:
            limits.update_global_concurrency_limit(name, limit=limit, active=active,
                                                   slot_decay_per_second=slot_decay_per_second, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"Global concurrency limit {_q(name)} not found.")
        except ValueError as exc:
            _fail(f"Invalid arguments provided: {terminal_safe(str(exc))}")
    _ok(f"Updated global concurrency limit with name {_q(name)}.")


def _set_active(store_url: str | None, name: str, active: bool) -> None:
    from otelflow.concurrency import limits

    word = "enabled" if active else "disabled"
    with _store_errors():
        try:
            current = limits.read_global_concurrency_limit(name, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"Global concurrency limit {_q(name)} not found.")
        if current.active == active:
            _fail(f"Global concurrency limit with name {_q(name)} is already {word}.")
        limits.update_global_concurrency_limit(name, active=active, store=store_url)
    _ok(f"{word.capitalize()} global concurrency limit with name {_q(name)}.")


@gcl_group.command("enable")
@click.argument("name")
@click.pass_obj
def gcl_enable(store_url: str | None, name: str) -> None:
    """Enable a global concurrency limit."""
    _set_active(store_url, name, True)


@gcl_group.command("disable")
@click.argument("name")
@click.pass_obj
def gcl_disable(store_url: str | None, name: str) -> None:
    """Disable a global concurrency limit (it stops limiting)."""
    _set_active(store_url, name, False)


@gcl_group.command("delete")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def gcl_delete(store_url: str | None, name: str, yes: bool) -> None:
    """Delete a global concurrency limit."""
    from otelflow.concurrency import limits

    with _store_errors():
        try:
            limits.read_global_concurrency_limit(name, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"Global concurrency limit {_q(name)} not found.")
        if not yes and sys.stdin.isatty() and not click.confirm(
                f"Are you sure you want to delete global concurrency limit with name {_q(name)}?", default=False):
            _fail("Deletion aborted.")
        try:
            limits.delete_global_concurrency_limit(name, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"Global concurrency limit {_q(name)} not found.")
    _ok(f"Deleted global concurrency limit with name {_q(name)}.")


# --- task-run tag limits ---------------------------------------------------------------------------------------


@click.group("concurrency-limit")
@_store_option
@click.pass_context
def tag_limit_group(ctx: click.Context, store_url: str | None) -> None:
    """Manage task-run concurrency limits by tag."""
    ctx.obj = store_url


@tag_limit_group.command("create")
@click.argument("tag")
@click.argument("concurrency_limit", type=int)
@click.pass_obj
def tag_create(store_url: str | None, tag: str, concurrency_limit: int) -> None:
    """Create (or change) the concurrency limit of a tag."""
    from otelflow.concurrency import limits

    with _store_errors():
        try:
            limits.create_tag_limit(tag, concurrency_limit, store=store_url)
        except ValueError as exc:
            _fail(f"Invalid arguments provided: {terminal_safe(str(exc))}")
    shown = _q(tag)
    _ok(f"Created concurrency limit with properties:\n    tag - {shown}\n"
        f"    concurrency_limit - {concurrency_limit}\n\n"
        f"Delete the concurrency limit:\n    otelflow concurrency-limit delete {shown}\n\n"
        f"Inspect the concurrency limit:\n    otelflow concurrency-limit inspect {shown}")


@tag_limit_group.command("ls")
@click.option("--output", "-o", type=click.Choice(["json"]), default=None, help="Print JSON instead of a table.")
@click.pass_obj
def tag_ls(store_url: str | None, output: str | None) -> None:
    """List tag concurrency limits."""
    from otelflow.concurrency import limits

    with _store_errors():
        found = limits.read_tag_limits(store=store_url)
    if output == "json":
        click.echo(json.dumps([{"tag": t.tag, "id": t.id, "concurrency_limit": t.concurrency_limit,
                                "active_slots": list(t.active_slots)} for t in found], indent=2))
        return
    if not found:
        _ok("No concurrency limits found.")
        return
    from rich.table import Table

    from otelflow._internal.cli.render import make_console

    table = Table(title="Concurrency Limits")
    for column in ("Tag", "ID", "Concurrency Limit", "Active Task Runs"):
        table.add_column(column, no_wrap=True)
    for limit in found:
        table.add_row(terminal_safe(limit.tag), limit.id, str(limit.concurrency_limit), str(len(limit.active_slots)))
    make_console().print(table)


@tag_limit_group.command("inspect")
@click.argument("tag")
@click.option("--output", "-o", type=click.Choice(["json"]), default=None, help="Print JSON.")
@click.pass_obj
def tag_inspect(store_url: str | None, tag: str, output: str | None) -> None:
    """Show a tag's limit and the task runs holding its slots."""
    from otelflow.concurrency import limits

    with _store_errors():
        try:
            limit = limits.read_tag_limit(tag, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"No concurrency limit found for the tag: {terminal_safe(tag)}")
    data = {"id": limit.id, "tag": limit.tag, "concurrency_limit": limit.concurrency_limit,
            "active_slots": list(limit.active_slots), "created": limit.created, "updated": limit.updated}
    if output == "json":
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"Concurrency Limit ID: {limit.id}")
    click.echo(f"Tag: {terminal_safe(limit.tag)}\nConcurrency Limit: {limit.concurrency_limit}\n"
               f"Created: {limit.created}\nUpdated: {limit.updated}")
    click.echo("Active Task Run IDs: " + (", ".join(terminal_safe(h) for h in limit.active_slots) or "-"))


@tag_limit_group.command("reset")
@click.argument("tag")
@click.pass_obj
def tag_reset(store_url: str | None, tag: str) -> None:
    """Free every slot of a tag's limit."""
    from otelflow.concurrency import limits

    with _store_errors():
        try:
            limits.reset_tag_limit(tag, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"No concurrency limit found for the tag: {terminal_safe(tag)}")
    _ok(f"Reset concurrency limit set on the tag: {terminal_safe(tag)}")


@tag_limit_group.command("delete")
@click.argument("tag")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_obj
def tag_delete(store_url: str | None, tag: str, yes: bool) -> None:
    """Delete a tag's concurrency limit."""
    from otelflow.concurrency import limits

    with _store_errors():
        try:
            limits.read_tag_limit(tag, store=store_url)
            if not yes and sys.stdin.isatty() and not click.confirm(
                    f"Are you sure you want to delete concurrency limit with tag {_q(tag)}?", default=False):
                _fail("Deletion aborted.")
            limits.delete_tag_limit(tag, store=store_url)
        except limits.ConcurrencyLimitNotFound:
            _fail(f"No concurrency limit found for the tag: {terminal_safe(tag)}")
    _ok(f"Deleted concurrency limit set on the tag: {terminal_safe(tag)}")

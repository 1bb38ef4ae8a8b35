"""``otelflow variable``: Prefect's ``prefect variable`` commands, on the otelflow store.

    otelflow variable ls [--limit N] [--json | -o json]
    otelflow variable get NAME
    otelflow variable inspect NAME [--json | -o json]
    otelflow variable set NAME VALUE [--overwrite] [--tag TAG ...]
    otelflow variable unset NAME [--yes]          (alias: delete)
    otelflow variable --store URL ...             (default: OTELFLOW_STORE_URL, else $OTELFLOW_HOME/store.sqlite3)

Messages and exit codes are Prefect's (``Set variable 'x'.``, ``Variable 'x' not found.`` exit 1...); errors go
to stderr. A store that cannot be reached is one line on stderr and exit code 1. Everything read from the store
is untrusted text: names, tags and values are printed with control and format characters escaped. This module
stays light to import: pydantic, rich and the stores load inside the commands.
"""

from __future__ import annotations

import datetime as _dt
import json
import sys
import unicodedata
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, NoReturn

import click

from otelflow._internal.cli.support import StoreTarget, store_errors, target_of, terminal_safe

if TYPE_CHECKING:
    from otelflow.variables import StoredVariable

__all__ = ["variable_group"]

#: Widest value shown in the ``ls`` table (Prefect's).
_VALUE_WIDTH = 50
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _fail(message: str) -> NoReturn:
    click.echo(message, err=True)
    sys.exit(1)


def _json_safe(text: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with every control, format, separator or lone
    surrogate character written as a ``\\uXXXX`` escape: still valid JSON with the same meaning (such characters
    only occur inside strings: the line breaks of the indentation are kept), and nothing in it can drive the
    terminal."""
    if text.replace("\n", "").isprintable():
        return text
    return "".join(json.dumps(c)[1:-1] if c != "\n" and unicodedata.category(c) in _UNSAFE_CATEGORIES else c
                   for c in text)


def _shown_name(name: str) -> str:
    """``'name'`` as Prefect's messages quote it (``repr``), escaped for the terminal."""
    return terminal_safe(repr(name))


# --- the store ------------------------------------------------------------------------------------------


_Target = StoreTarget


_target = target_of


def _store_errors(target: _Target) -> AbstractContextManager[None]:
    return store_errors(target, "variable")


def _read(target: _Target, name: str) -> StoredVariable | None:
    from otelflow.variables import read_variable

    if target.missing_sqlite_file():
        return None
    return read_variable(name, target.store())


# --- formatting -----------------------------------------------------------------------------------------


def _parse_time(text: str) -> _dt.datetime | None:
    try:
        when = _dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=_dt.UTC)


def _ago(text: str, now: _dt.datetime) -> str:
    """``a few seconds ago``, ``1 minute ago``, ``3 days ago`` (as Prefect's table shows times)."""
    when = _parse_time(text)
    if when is None:
        return terminal_safe(text) or "-"
    seconds = (now - when).total_seconds()
    future = seconds < 0
    seconds = abs(seconds)
    if seconds < 10:
        return "a few seconds ago" if not future else "in a few seconds"
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("week", 7 * 86400), ("day", 86400),
                       ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = int(seconds // size)
            span = f"{count} {unit}{'' if count == 1 else 's'}"
            return f"in {span}" if future else f"{span} ago"
    raise AssertionError("unreachable")  # pragma: no cover


def _value_text(value: Any) -> str:
    """The value as ``prefect variable get`` prints it (``json.dumps``: ASCII, so terminal-safe), escaped anyway."""
    return terminal_safe(json.dumps(value))


def _as_json(data: Any) -> str:
    """Indented JSON (as Prefect's ``-o json``), non-ASCII text kept, unsafe characters escaped."""
    return _json_safe(json.dumps(data, indent=2, ensure_ascii=False))


def _wants_json(as_json: bool, output: str | None) -> bool:
    if output is not None and output.lower() != "json":
        _fail("Only 'json' output format is supported.")
    return as_json or output is not None


# --- commands -------------------------------------------------------------------------------------------


@click.group("variable")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="The otelflow store holding the variables (default: $OTELFLOW_STORE_URL, else "
                   "$OTELFLOW_HOME/store.sqlite3).")
@click.pass_context
def variable_group(ctx: click.Context, store_url: str | None) -> None:
    """Manage variables (Prefect's Variables, kept in the otelflow store)."""
    ctx.obj = _Target(store_url)


_json_option = click.option("--json", "as_json", is_flag=True, help="JSON output (same as -o json).")
_output_option = click.option("--output", "-o", "output", metavar="FORMAT", default=None,
                              help="Specify an output format. Currently supports: json")


@variable_group.command("ls")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="The maximum number of variables to return.")
@_json_option
@_output_option
@click.pass_context
def ls(ctx: click.Context, limit: int, as_json: bool, output: str | None) -> None:
    """List variables (by name)."""
    from otelflow.variables import list_variables

    wants_json = _wants_json(as_json, output)
    target = _target(ctx)
    damaged = 0
    variables: list[StoredVariable] = []
    if not target.missing_sqlite_file():
        with _store_errors(target):
            variables, damaged = list_variables(target.store())
    shown = variables[:limit]
    if damaged:
        click.echo(f"otelflow variable: {damaged} stored record{'' if damaged == 1 else 's'} in {target.display} "
                   "could not be read (not variable records); skipped.", err=True)
    if wants_json:
        click.echo(_as_json([v.to_json() for v in shown]))
        return
    from rich.table import Table

    from otelflow._internal.cli.render import make_console

    table = Table(title="Variables", caption="List Variables using `otelflow variable ls`", show_header=True)
    table.add_column("Name", style="blue", no_wrap=True)
    table.add_column("Value", style="blue", no_wrap=True, max_width=_VALUE_WIDTH)
    table.add_column("Created", style="blue", no_wrap=True)
    table.add_column("Updated", style="blue", no_wrap=True)
    now = _dt.datetime.now(_dt.UTC)
    from rich.text import Text

    for variable in shown:
        table.add_row(Text(terminal_safe(variable.name)), Text(_value_text(variable.value)),
                      Text(_ago(variable.created, now)), Text(_ago(variable.updated, now)))
    make_console().print(table)


@variable_group.command("get")
@click.argument("name")
@click.pass_context
def get(ctx: click.Context, name: str) -> None:
    """Get a variable's value (as JSON)."""
    target = _target(ctx)
    with _store_errors(target):
        variable = _read(target, name)
    if variable is None:
        _fail(f"Variable {_shown_name(name)} not found.")
    click.echo(_value_text(variable.value))


@variable_group.command("inspect")
@click.argument("name")
@_json_option
@_output_option
@click.pass_context
def inspect(ctx: click.Context, name: str, as_json: bool, output: str | None) -> None:
    """View details about a variable."""
    wants_json = _wants_json(as_json, output)
    target = _target(ctx)
    with _store_errors(target):
        variable = _read(target, name)
    if variable is None:
        _fail(f"Variable {_shown_name(name)} not found.")
    if wants_json:
        click.echo(_as_json(variable.to_json()))
        return
    fields = [
        ("name", terminal_safe(variable.name)),
        ("value", _value_text(variable.value)),
        ("tags", ", ".join(terminal_safe(t) for t in variable.tags) or "-"),
        ("created", terminal_safe(variable.created) or "-"),
        ("updated", terminal_safe(variable.updated) or "-"),
        ("id", terminal_safe(variable.id) or "-"),
        ("store", target.display),
    ]
    for label, text in fields:
        click.echo(f"{label:<8} {text}")


def _parse_value(text: str) -> Any:
    """VALUE as JSON when it is JSON (``42``, ``true``, ``'{"a": 1}'``, ``'"42"'``), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _validation_message(exc: Exception) -> str:
    """A pydantic error as one line: the rules broken, never the input (the value may be a secret)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(message if where in ("name", "value") else f"{where}: {message}")
    return "; ".join(parts)


@variable_group.command("set")
@click.argument("name")
@click.argument("value")
@click.option("--overwrite", is_flag=True, help="Overwrite the variable if it already exists.")
@click.option("--tag", "tags", multiple=True, metavar="TAG", help="Tag to associate with the variable (repeatable).")
@click.pass_context
def set_(ctx: click.Context, name: str, value: str, overwrite: bool, tags: tuple[str, ...]) -> None:
    """Set a variable. VALUE is JSON (42, true, '{"a": 1}', '"quoted"') or else plain text.

    If the variable already exists, use `--overwrite` to update it.
    """
    from otelflow.variables import _ALREADY_EXISTS, _write

    target = _target(ctx)
    with _store_errors(target):
        try:
            _write(name, _parse_value(value), list(tags), overwrite, target.store())
        except ValueError as exc:
            if str(exc).endswith(_ALREADY_EXISTS):
                _fail(f"Variable {_shown_name(name)} already exists. Use `--overwrite` to update it.")
            _fail(f"otelflow variable: {terminal_safe(_validation_message(exc))}")
    click.echo(f"Set variable {_shown_name(name)}.")


@variable_group.command("unset")
@click.argument("name")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation on a terminal.")
@click.pass_context
def unset(ctx: click.Context, name: str, yes: bool) -> None:
    """Unset a variable."""
    from otelflow.variables import _delete

    target = _target(ctx)
    with _store_errors(target):
        if _read(target, name) is None:
            _fail(f"Variable {_shown_name(name)} not found.")
        if not yes and _interactive() and not click.confirm(
                f"Are you sure you want to unset variable {_shown_name(name)}?", default=False):
            _fail("Unset aborted.")
        if not _delete(name, target.store()):
            _fail(f"Variable {_shown_name(name)} not found.")
    click.echo(f"Unset variable {_shown_name(name)}.")


variable_group.add_command(unset, "delete")


def _interactive() -> bool:
    """True when a person can answer the confirmation prompt (Prefect asks only then)."""
    return sys.stdin.isatty()

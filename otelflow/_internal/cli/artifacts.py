"""``otelflow artifacts``: list and show the artifacts runs made (``otelflow.artifacts``).

    otelflow artifacts ls [--key KEY] [--flow NAME] [--limit N] [--json]
    otelflow artifacts show KEY|ID [--json]
    otelflow artifacts --store URL ...   (default: OTELFLOW_STORE_URL, else $OTELFLOW_HOME/store.sqlite3)

Artifacts are JSON records in namespace ``artifacts`` of the otelflow store. Everything a record holds (keys,
descriptions, markdown, table cells, URLs, flow and run names) is untrusted text: printed with control and format
characters escaped (:func:`~otelflow._internal.cli.support.terminal_safe`; markdown keeps its line breaks, and is
escaped before rich renders it). ``--json`` output is JSON-escaped. This module stays light to import: rich, the
stores and the artifacts API load inside the commands.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import uuid
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Final

import click

from otelflow._internal.cli.support import StoreTarget, store_errors, target_of, terminal_safe
from otelflow._internal.cli.support import fail as _fail

if TYPE_CHECKING:
    from rich.console import Console, RenderableType

    from otelflow.artifacts import Artifact

__all__ = ["artifact_group", "render_data", "safe_multiline"]

#: Shortest id prefix ``show`` accepts.
MIN_ID_PREFIX: Final = 6
_TABLE_ROWS: Final = 500  # rows of a table artifact printed (the rest is counted)
_CELL_CHARS: Final = 200  # characters of one table cell printed
_DESCRIPTION_CHARS: Final = 60  # of a description in the `ls` table
_BAR: Final = 40  # progress bar width
_PIPED_MARKDOWN_WIDTH: Final = 100


def safe_multiline(text: str) -> str:
    """``text`` with line breaks kept (``\\r\\n`` and ``\\r`` become ``\\n``, tabs 4 spaces) and every other
    control, format or separator character escaped: fit for rich's Markdown, which then cannot emit them."""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "\n".join(terminal_safe(line.expandtabs(4)) for line in lines)


def _one_line(value: object, limit: int | None = None) -> str:
    """Untrusted text on one line: escaped (line breaks too), cut to ``limit`` characters with an ellipsis."""
    text = terminal_safe(str(value))
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


# --- the store ------------------------------------------------------------------------------------------


_Target = StoreTarget


def _store_errors(target: _Target) -> AbstractContextManager[None]:
    return store_errors(target, "artifacts")


_target = target_of


def _all(target: _Target, key: str | None = None) -> list[Artifact]:
    if target.missing_sqlite_file():
        return []
    from otelflow.artifacts import list_artifacts

    return list_artifacts(key, store=target.store())


# --- formatting -----------------------------------------------------------------------------------------


def _when(value: _dt.datetime | None, compact: bool = False) -> str:
    if value is None:
        return "-"
    return value.astimezone().strftime("%m-%d %H:%M:%S" if compact else "%Y-%m-%d %H:%M:%S")


def _record_json(artifact: Artifact, with_data: bool) -> dict[str, Any]:
    data = artifact.model_dump(mode="json", exclude=None if with_data else {"data"})
    data["created_unix"] = artifact.created.timestamp() if artifact.created else None
    data["updated_unix"] = artifact.updated.timestamp() if artifact.updated else None
    return data


def _table_rows(data: Any) -> tuple[list[str], list[list[Any]]] | None:
    """(headers, rows) of a table artifact's data (JSON text or already parsed): a list of row dicts, a dict of
    column lists or a list of row lists; ``None`` for anything else."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return None
    if isinstance(data, dict) and all(isinstance(v, list) for v in data.values()):
        headers = [str(k) for k in data]
        height = max((len(v) for v in data.values()), default=0)
        columns = list(data.values())
        return headers, [[col[i] if i < len(col) else None for col in columns] for i in range(height)]
    if isinstance(data, list) and all(isinstance(r, dict) for r in data):
        headers = list(dict.fromkeys(str(k) for row in data for k in row))
        return headers, [[{str(k): v for k, v in row.items()}.get(h) for h in headers] for row in data]
    if isinstance(data, list) and all(isinstance(r, list) for r in data):
        width = max((len(r) for r in data), default=0)
        return [str(i) for i in range(width)], [[r[i] if i < len(r) else None for i in range(width)] for r in data]
    return None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return _one_line(text, _CELL_CHARS)


def _progress(value: float) -> str:
    value = min(max(value, 0.0), 100.0)
    filled = round(value / 100 * _BAR)
    return "█" * filled + "░" * (_BAR - filled) + f" {value:g}%"


def render_data(artifact: Artifact) -> list[RenderableType]:
    """What ``show`` prints for an artifact's data, by type: markdown (links too) through rich's Markdown after
    escaping, tables as a rich table, progress as a bar, images as their URL; anything else as escaped JSON."""
    from rich.markdown import Markdown
    from rich.table import Table
    from rich.text import Text

    data = artifact.data
    kind = artifact.type or ""
    if kind == "markdown" and isinstance(data, str):
        # Links as ``text (url)``, never as terminal hyperlinks: untrusted text must not hide where a link goes.
        return [Markdown(safe_multiline(data), hyperlinks=False)]
    if kind == "table":
        shaped = _table_rows(data)
        if shaped is not None:
            headers, rows = shaped
            table = Table(header_style="bold", show_lines=False)
            for header in headers:
                table.add_column(_one_line(header, _CELL_CHARS), overflow="fold")
            for row in rows[:_TABLE_ROWS]:
                table.add_row(*(Text(_cell(v)) for v in row))
            out: list[RenderableType] = [table]
            if len(rows) > _TABLE_ROWS:
                out.append(Text(f"… {len(rows) - _TABLE_ROWS} more rows (--json prints them all)", style="dim"))
            return out
    if kind == "progress" and isinstance(data, int | float) and not isinstance(data, bool):
        return [Text(_progress(float(data)), style="cyan")]
    if kind == "image" and isinstance(data, str):
        text = Text("image ")
        text.append(_one_line(data), style="underline")
        text.append("  (open the URL to see it)", style="dim")
        return [text]
    if isinstance(data, str):
        return [Text(safe_multiline(data))]
    return [Text(safe_multiline(json.dumps(data, indent=2, default=str)))]


def _print(console: Console, renderables: list[RenderableType]) -> None:
    """Print through rich: on a terminal at its width; piped, 100 columns wide, trailing blanks stripped."""
    if console.is_terminal:
        for item in renderables:
            console.print(item)
        return
    from rich.console import Console as RichConsole

    buffer = io.StringIO()
    plain = RichConsole(file=buffer, width=_PIPED_MARKDOWN_WIDTH, color_system=None, highlight=False, emoji=False,
                        force_terminal=False)
    for item in renderables:
        plain.print(item)
    console.file.write("".join(line.rstrip() + "\n" for line in buffer.getvalue().splitlines()))
    console.file.flush()


# --- commands -------------------------------------------------------------------------------------------


@click.group("artifacts")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="The otelflow store holding the artifacts (default: $OTELFLOW_STORE_URL, else "
                   "$OTELFLOW_HOME/store.sqlite3).")
@click.pass_context
def artifact_group(ctx: click.Context, store_url: str | None) -> None:
    """List and show artifacts made by runs (create_markdown_artifact, create_table_artifact, ...)."""
    ctx.obj = _Target(store_url)


@artifact_group.command("ls")
@click.option("--key", "key", metavar="KEY", help="Every version of this key (newest first).")
@click.option("--flow", "flow", metavar="NAME", help="Only artifacts made by runs of this flow.")
@click.option("--limit", "-n", type=click.IntRange(min=1), default=100, show_default=True,
              help="How many artifacts to list (the most recently created or updated first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per artifact (JSON lines), without data.")
@click.pass_context
def ls(ctx: click.Context, key: str | None, flow: str | None, limit: int, as_json: bool) -> None:
    """List artifacts, the most recently created or updated first."""
    target = _target(ctx)
    with _store_errors(target):
        everything = _all(target, key)
    chosen = [a for a in everything if flow is None or a.flow_name == flow]
    if not chosen:
        what = f" with key {_one_line(key)!r}" if key else ""
        if everything:
            message = f"No artifacts{what} match these filters ({len(everything)} in {target.display})."
        else:
            message = f"No artifacts{what} in {target.display}."
        click.echo(message, err=as_json)
        return
    shown = chosen[:limit]
    if as_json:
        for artifact in shown:
            click.echo(json.dumps(_record_json(artifact, with_data=False)))
        return
    from rich.table import Table
    from rich.text import Text

    from otelflow._internal.cli.render import make_console

    console = make_console()
    compact = console.is_terminal and console.width < 150
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0))
    for header in ("UPDATED", "KEY", "TYPE", "FLOW", "RUN", "DESCRIPTION", "ID"):
        table.add_column(header, no_wrap=True, overflow="ellipsis")
    for artifact in shown:
        run = artifact.task_run_name or artifact.flow_run_name
        description = (artifact.description or "").strip().splitlines()[:1]
        table.add_row(
            Text(_when(artifact.updated, compact)),
            Text(_one_line(artifact.key) if artifact.key else "-", style="cyan" if artifact.key else "dim"),
            Text(_one_line(artifact.type or "-")),
            Text(_one_line(artifact.flow_name or "-")),
            Text(_one_line(run or "-")),
            Text(_one_line(description[0], _DESCRIPTION_CHARS) if description else "", style="dim"),
            Text(_one_line(artifact.id) if not compact else _one_line(artifact.id)[:8]),
        )
    console.print(table, soft_wrap=not console.is_terminal)
    footer = f"{len(chosen)} artifact{'' if len(chosen) == 1 else 's'} in {target.display}"
    if len(shown) < len(chosen):
        footer += f" (showing {len(shown)}; --limit shows more)"
    click.echo(footer)


def _pick(target: _Target, ident: str) -> tuple[Artifact, list[Artifact]]:
    """The artifact ``ident`` names (an id, a key: its latest version, or a unique id prefix) and the versions of
    its key; exit 1 saying why when there is none."""
    from otelflow.artifacts import read_artifact

    if target.missing_sqlite_file():
        _fail(f"otelflow artifacts: no artifact matches '{_one_line(ident)}': no artifacts in {target.display}.")
    found: Artifact | None = None
    try:
        as_id: uuid.UUID | None = uuid.UUID(ident)
    except ValueError:
        as_id = None
    if as_id is not None:
        found = read_artifact(as_id, store=target.store())
    if found is None:
        versions = _all(target, ident)
        if versions:
            return versions[0], versions
        if len(ident) >= MIN_ID_PREFIX:
            matches = [a for a in _all(target) if str(a.id).startswith(ident.lower())]
            if len(matches) > 1:
                lines = [f"otelflow artifacts: '{_one_line(ident)}' matches {len(matches)} artifacts; give more of "
                         "the id:"]
                lines += [f"  {a.id}  {_one_line(a.key or '-')}  {_one_line(a.type or '-')}" for a in matches[:10]]
                _fail("\n".join(lines))
            found = matches[0] if matches else None
    if found is None:
        _fail(f"otelflow artifacts: no artifact with key or id '{_one_line(ident)}' in {target.display}. "
              "`otelflow artifacts ls` lists them.")
    return found, (_all(target, found.key) if found.key else [found])


@artifact_group.command("show")
@click.argument("ident", metavar="KEY|ID")
@click.option("--json", "as_json", is_flag=True, help="The artifact as one JSON object, data included.")
@click.pass_context
def show(ctx: click.Context, ident: str, as_json: bool) -> None:
    """Show an artifact: its fields, then its data rendered (markdown, table, progress bar, image URL).

    KEY|ID is a key (its latest version), an artifact id, or a unique prefix (6+ characters) of one.
    """
    target = _target(ctx)
    with _store_errors(target):
        artifact, versions = _pick(target, ident)
    if as_json:
        data = _record_json(artifact, with_data=True)
        data["versions"] = len(versions)
        click.echo(json.dumps(data, default=str))
        return
    from rich.text import Text

    from otelflow._internal.cli.render import make_console

    console = make_console()
    index = next((i for i, v in enumerate(versions) if v.id == artifact.id), 0)
    fields: list[tuple[str, str]] = []
    if artifact.key:
        history = f"  (version {len(versions) - index} of {len(versions)}"
        history += f"; otelflow artifacts ls --key {_one_line(artifact.key)})" if len(versions) > 1 else ")"
        fields.append(("key", _one_line(artifact.key) + history))
    fields += [("type", _one_line(artifact.type or "-")), ("id", _one_line(artifact.id))]
    if artifact.description:
        fields.append(("description", _one_line(artifact.description)))
    if artifact.flow_run_id or artifact.flow_name:
        name = " / ".join(_one_line(n) for n in (artifact.flow_name, artifact.flow_run_name) if n)
        fields.append(("flow run", f"{name}  ({_one_line(artifact.flow_run_id or '-')})"))
    else:
        fields.append(("flow run", "- (made outside a run)"))
    if artifact.task_run_id:
        fields.append(("task run", f"{_one_line(artifact.task_run_name or '-')}  ({_one_line(artifact.task_run_id)})"))
    fields += [("created", _when(artifact.created)), ("updated", _when(artifact.updated))]
    if artifact.trace_id:
        trace_id = _one_line(artifact.trace_id)
        fields.append(("trace", f"{trace_id}  (otelflow show {trace_id})"))
    lines = [Text(f"{name:<12} {value}") for name, value in fields]
    _print(console, [*lines, Text(""), *render_data(artifact)])

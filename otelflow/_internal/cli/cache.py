"""``otelflow cache``: list, inspect and clear cached task results.

    otelflow cache ls [--task NAME] [--older-than AGE] [--expired] [--limit N] [--json]
    otelflow cache inspect KEY [--value] [--json]
    otelflow cache clear [--task NAME] [--older-than AGE] [--expired] [--all] [--yes] [--dry-run]
    otelflow [cache --store URL] ...   (default: OTELFLOW_STORE_URL, else $OTELFLOW_HOME/store.sqlite3)

Cache entries are JSON values in namespace ``cache`` of the otelflow store (see :mod:`otelflow.results`); each
points to a result record in its result storage (a private folder or a store URL). Everything an entry holds
(task names, keys a ``cache_key_fn`` built from inputs, storage paths, stored values) is untrusted text: it is
printed with control and format characters escaped (:func:`terminal_safe`) and URL/DSN passwords masked.
This module stays light to import: rich, the stores and the results API load inside the commands.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import re
import reprlib
import stat
import sys
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from otelflow._internal.cli.support import StoreTarget, fail, shown, store_errors, terminal_safe

if TYPE_CHECKING:
    from otelflow.filesystems import WritableFileSystem
    from otelflow.results import CacheEntry

__all__ = ["cache_group", "terminal_safe"]

#: Shortest prefix of a key (or of its digest) ``inspect`` accepts.
MIN_PREFIX = 6
#: Characters of a key's digest shown in the table on a terminal (more when needed to tell keys apart).
_SHORT_KEY = 12
#: Longest stored-value repr ``inspect --value`` prints.
_VALUE_CHARS = 2000
_RECORD_HEAD = re.compile(rb'^\s*\{\s*"metadata"\s*:')


# --- terminal safety: shared with the other store-backed groups ---------------------------------------


_shown = shown
_fail = fail


# --- the store ------------------------------------------------------------------------------------------


class _Target(StoreTarget):
    """The store the command group works on (``--store``, else the configured one)."""

    def real_urls(self) -> list[str]:
        """Store URLs this process knows with their passwords: an entry's (redacted) storage URL that names one
        of them is read and deleted through it."""
        urls = [self.url]
        from otelflow.settings import get_settings

        configured = get_settings().store_url_or_default
        if configured not in urls:
            urls.append(configured)
        return urls


def _store_errors(target: _Target) -> AbstractContextManager[None]:
    return store_errors(target, "cache")


def _target(ctx: click.Context) -> _Target:
    target = ctx.find_object(_Target)
    return target if target is not None else _Target(None)


def _entries(target: _Target) -> list[CacheEntry]:
    """Every readable cache entry of the store, newest first."""
    if target.missing_sqlite_file():
        return []
    from otelflow.results import list_cache_entries

    entries = list_cache_entries(store=target.store())
    entries.sort(key=lambda e: e.created, reverse=True)
    return entries


def _select(entries: list[CacheEntry], task: str | None, older_than: float | None, expired: bool) -> list[CacheEntry]:
    """The entries of ``task``, created before ``older_than`` (epoch seconds), expired only if ``expired``."""
    return [e for e in entries
            if (task is None or e.task == task)
            and (older_than is None or e.created < older_than)
            and (not expired or e.expired)]


def _age_cutoff(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    """``--older-than``: ``30m``/``12h``/``7d`` (or a local date/time) as an epoch-seconds cutoff."""
    if value is None:
        return None
    from otelflow._internal.cli.runs import parse_since as _parse_since

    return _parse_since(value) / 1e9


# --- formatting -----------------------------------------------------------------------------------------


def _human_size(size: int) -> str:
    """``512 B``, ``1.2 KiB``, ``3.4 MiB``, ``1.0 GiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _span(seconds: float) -> str:
    """``45s``, ``12m``, ``3h``, ``2d``."""
    seconds = abs(seconds)
    if seconds < 60:
        return f"{int(seconds)}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h"
    return f"{int(seconds // 86400)}d"


def _local(ts: float, compact: bool = False) -> str:
    return _dt.datetime.fromtimestamp(ts).strftime("%m-%d %H:%M" if compact else "%Y-%m-%d %H:%M:%S")


def _created(entry: CacheEntry, now: float, compact: bool = False) -> str:
    """``2026-11-24 10:00:00 (5m ago)`` (``11-24 10:00 (5m ago)`` when ``compact``)."""
    return f"{_local(entry.created, compact)} ({_span(now - entry.created)} ago)"


def _expires(entry: CacheEntry, now: float, compact: bool = False) -> str:
    """``never``, ``expired 5m ago`` or ``2026-11-24 10:00:00 (in 55m)``."""
    if entry.expiration is None:
        return "never"
    when = entry.expiration.timestamp()
    if entry.expired:
        return f"expired {_span(now - when)} ago"
    return f"{_local(when, compact)} (in {_span(when - now)})"


def _exported(key: str) -> str:
    from otelflow.results import exported_key

    return exported_key(key)


def _short_keys(entries: list[CacheEntry]) -> dict[str, str]:
    """Each entry's exported key cut to ``_SHORT_KEY`` digest characters, longer where two would look alike."""
    exported = {e.key: _exported(e.key) for e in entries}
    width = _SHORT_KEY
    while True:
        short = {k: v[: width + (4 if v.startswith("md5:") else 0)] for k, v in exported.items()}
        if len(set(short.values())) == len(short) or width >= 128:
            return short
        width += 4


def _entry_json(entry: CacheEntry) -> dict[str, Any]:
    """The entry as one JSON object: every field, strings with URL/DSN passwords masked."""
    from otelflow._internal.runs.redact import redact_text

    data: dict[str, Any] = {
        "key": entry.key, "exported_key": _exported(entry.key), "task": entry.task, "policy": entry.policy,
        "created": _dt.datetime.fromtimestamp(entry.created).astimezone().isoformat(timespec="milliseconds"),
        "created_unix": entry.created,
        "expiration": entry.expiration.isoformat() if entry.expiration is not None else None,
        "expired": entry.expired, "storage": entry.storage, "storage_key": entry.storage_key,
        "serializer": entry.serializer, "size": entry.size, "flow_run_id": entry.flow_run_id,
        "task_run_id": entry.task_run_id, "trace_id": entry.trace_id,
    }
    return {k: redact_text(v) if isinstance(v, str) else v for k, v in data.items()}


# --- stored results -------------------------------------------------------------------------------------


def _storage(entry: CacheEntry, target: _Target) -> WritableFileSystem:
    """The storage of the entry's result. Entries keep store URLs with the password masked; one that names a
    store this process knows (``--store``, the configured one) is reached through that store's real URL."""
    storage = entry.storage
    if "://" in storage and not storage.startswith("file://"):
        from otelflow.stores import redact_url

        real = next((url for url in target.real_urls() if redact_url(url) == storage and url != storage), None)
        if real is not None:
            entry = dataclasses.replace(entry, storage=real)
    return entry.storage_for_read()


def _local_path(entry: CacheEntry, storage: WritableFileSystem) -> Path | None:
    """The result file of an entry kept in a folder, else None."""
    from otelflow.filesystems import LocalFileSystem

    if not isinstance(storage, LocalFileSystem):
        return None
    return Path(storage.resolve_key(entry.storage_key))


@dataclass
class _Probe:
    """What is known of an entry's stored result."""

    present: bool
    size: int | None = None  # bytes on disk / in the store
    problem: str | None = None  # why it cannot be read
    content: bytes | None = None

    def describe(self) -> str:
        if not self.present:
            return "missing" + (f" ({self.problem})" if self.problem else "") + ": the next run computes it again"
        size = f", {_human_size(self.size)} stored" if self.size is not None else ""
        if self.problem:
            return f"present{size}, unreadable: {self.problem}"
        return f"present{size}, readable"


def _probe(entry: CacheEntry, target: _Target) -> _Probe:
    """Whether the entry's result record is there and readable (read, its JSON checked; never unpickled)."""
    from otelflow.results import ResultRecordMetadata
    from otelflow.stores import StoreError

    try:
        storage = _storage(entry, target)
    except (StoreError, ValueError, OSError) as exc:
        return _Probe(present=False, problem=f"storage unreachable: {type(exc).__name__}: {exc}")
    path = _local_path(entry, storage)
    size: int | None = None
    if path is not None:
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return _Probe(present=False)
        except OSError as exc:
            return _Probe(present=True, problem=f"{type(exc).__name__}: {exc}")
    try:
        content = storage.read_path(entry.storage_key)
    except FileNotFoundError:
        return _Probe(present=False)
    except (OSError, StoreError) as exc:
        return _Probe(present=True, size=size, problem=f"{type(exc).__name__}: {exc}")
    size = len(content) if size is None else size
    try:
        raw = json.loads(content)
        if not isinstance(raw, dict) or "metadata" not in raw or "result" not in raw:
            raise ValueError("not a result record (expected an object with 'metadata' and 'result')")
        ResultRecordMetadata.model_validate(raw["metadata"])
    except ValueError as exc:
        return _Probe(present=True, size=size, problem=f"damaged: {exc}")
    return _Probe(present=True, size=size, content=content)


_value_repr = reprlib.Repr()
_value_repr.maxstring = _value_repr.maxother = _VALUE_CHARS
_value_repr.maxlist = _value_repr.maxtuple = _value_repr.maxset = _value_repr.maxdict = 50
_value_repr.maxlevel = 5


def _short_repr(value: Any) -> str:
    """A bounded repr of a stored value (about ``_VALUE_CHARS`` characters), terminal-safe."""
    try:
        text = _value_repr.repr(value)
    except Exception as exc:
        text = f"<unrepresentable {type(value).__name__}: {type(exc).__name__}>"
    if len(text) > _VALUE_CHARS:
        text = text[:_VALUE_CHARS] + f"... ({len(text) - _VALUE_CHARS} more characters)"
    return _shown(text)


def _deletable(path: Path) -> str | None:
    """Why the result file at ``path`` must not be deleted (None: it may). An entry in a shared store could
    name any file: only this user's regular files that hold a result record are deleted."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if hasattr(os, "getuid") and info.st_uid != os.getuid():
        return f"owned by uid {info.st_uid}"
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if _RECORD_HEAD.match(head) else "not an otelflow result record"


def _remove(entry: CacheEntry, target: _Target) -> tuple[bool, int]:
    """Delete an entry and its stored result: (whether the entry existed, bytes of result deleted)."""
    from otelflow.results import CACHE_NAMESPACE
    from otelflow.stores import StoreError

    existed = bool(target.store().delete(CACHE_NAMESPACE, entry.index_key))
    try:
        storage = _storage(entry, target)
        path = _local_path(entry, storage)
        if path is not None:
            refused = _deletable(path)
            if refused is not None:
                click.echo(f"otelflow cache: kept {_shown(path)}: {refused}.", err=True)
                return existed, 0
            size = path.stat().st_size if path.exists() else 0
            return existed, size if storage.delete_path(entry.storage_key) else 0
        return existed, entry.size if storage.delete_path(entry.storage_key) else 0
    except (OSError, StoreError, ValueError) as exc:
        click.echo(f"otelflow cache: could not delete the stored result {_shown(entry.storage_key)}: "
                   f"{_shown(' '.join(str(exc).split()))}", err=True)
        return existed, 0


# --- looking an entry up --------------------------------------------------------------------------------


def _read_exact(target: _Target, key: str) -> CacheEntry | None:
    """The entry stored under exactly ``key`` (one store read), or None."""
    from otelflow.results import CACHE_NAMESPACE, CacheEntry

    if target.missing_sqlite_file():
        return None
    text = target.store().get(CACHE_NAMESPACE, key)
    if text is None:
        return None
    try:
        return CacheEntry.from_json(text)
    except ValueError:
        return None


def find_entry(entries: list[CacheEntry], ident: str) -> list[CacheEntry]:
    """Entries ``ident`` names: the one whose raw or exported key it is; else those whose raw key, exported key
    (``md5:...``) or digest starts with it (at least ``MIN_PREFIX`` characters, not counting ``md5:``)."""
    exact = [e for e in entries if e.key == ident] or [e for e in entries if _exported(e.key) == ident]
    if exact:
        return exact
    if len(ident.removeprefix("md5:")) < MIN_PREFIX:
        return []
    found = []
    for entry in entries:
        exported = _exported(entry.key)
        if (entry.key.startswith(ident) or exported.startswith(ident)
                or (exported.startswith("md5:") and exported[4:].startswith(ident))):
            found.append(entry)
    return found


def _pick(target: _Target, ident: str) -> CacheEntry:
    """The one entry ``ident`` names, or exit 1 saying why not."""
    entry = _read_exact(target, ident)
    if entry is not None:
        return entry
    entries = _entries(target)
    found = find_entry(entries, ident)
    if len(found) == 1:
        return found[0]
    if not found:
        short = len(ident.removeprefix("md5:")) < MIN_PREFIX
        hint = f" (a prefix needs at least {MIN_PREFIX} characters)" if short else ""
        _fail(f"otelflow cache: no cache entry matches '{_shown(ident)}'{hint} in {target.display} "
              f"({len(entries)} entr{'y' if len(entries) == 1 else 'ies'}). `otelflow cache ls` lists them.")
    now = time.time()
    lines = [f"otelflow cache: '{_shown(ident)}' matches {len(found)} cache entries; give more of the key:"]
    lines += [f"  {_shown(_exported(e.key))}  {_shown(e.task)}  {_created(e, now)}" for e in found[:10]]
    if len(found) > 10:
        lines.append(f"  ... and {len(found) - 10} more")
    _fail("\n".join(lines))


# --- commands -------------------------------------------------------------------------------------------


@click.group("cache")
@click.option("--store", "store_url", metavar="URL", default=None,
              help="The otelflow store holding the cache entries (default: $OTELFLOW_STORE_URL, else "
                   "$OTELFLOW_HOME/store.sqlite3).")
@click.pass_context
def cache_group(ctx: click.Context, store_url: str | None) -> None:
    """List, inspect and clear cached task results (tasks with a cache_policy / cache_key_fn)."""
    ctx.obj = _Target(store_url)


_task_option = click.option("--task", "task", metavar="NAME", help="Only entries of this task.")
_older_option = click.option("--older-than", "older_than", metavar="AGE", callback=_age_cutoff,
                             help="Only entries created more than AGE ago: 30m, 12h, 7d, 1w (or before a date/time).")
_expired_option = click.option("--expired", is_flag=True, help="Only entries past their cache_expiration.")


@cache_group.command("ls")
@_task_option
@_older_option
@_expired_option
@click.option("--limit", "-n", type=click.IntRange(min=1), default=100, show_default=True,
              help="How many entries to list (newest first).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry (JSON lines), every field.")
@click.pass_context
def ls(ctx: click.Context, task: str | None, older_than: float | None, expired: bool, limit: int,
       as_json: bool) -> None:
    """List cache entries, newest first, with the size of their stored results."""
    target = _target(ctx)
    with _store_errors(target):
        everything = _entries(target)
    chosen = _select(everything, task, older_than, expired)
    if not chosen:
        if everything:
            message = f"No cache entries match these filters ({len(everything)} in {target.display})."
        else:
            message = f"No cache entries in {target.display}."
        click.echo(message, err=as_json)
        return
    shown = chosen[:limit]
    if as_json:
        for entry in shown:
            click.echo(json.dumps(_entry_json(entry)))
        return
    _render_table(shown, everything, time.time())
    total = sum(e.size for e in chosen)
    footer = (f"{len(chosen)} cache entr{'y' if len(chosen) == 1 else 'ies'}, {_human_size(total)} of results, "
              f"in {target.display}")
    if len(shown) < len(chosen):
        footer += f" (showing the newest {len(shown)}; --limit shows more)"
    click.echo(footer)


def _render_table(entries: list[CacheEntry], everything: list[CacheEntry], now: float) -> None:
    """The ``ls`` table. Piped: every column, every cell whole. On a terminal: keys cut to a short unique prefix
    (``inspect`` takes it), shorter times below 150 columns and, when the table is still too wide, the storage,
    policy, expiry, then creation columns dropped before task names are cut (to 8 columns); keys and sizes never
    are."""
    from rich.table import Table
    from rich.text import Text

    from otelflow._internal.cli.render import make_console

    console = make_console()
    tty = console.is_terminal
    short = _short_keys(everything) if tty else {}
    compact = tty and console.width < 150
    columns: dict[str, list[Text]] = {name: [] for name in
                                      ("KEY", "TASK", "POLICY", "CREATED", "EXPIRES", "SIZE", "STORAGE")}
    for entry in entries:
        style = "red" if entry.expired else ("dim" if entry.expiration is None else "")
        columns["KEY"].append(Text(_shown(short.get(entry.key) or _exported(entry.key)), style="cyan"))
        columns["TASK"].append(Text(_shown(entry.task), style="bold"))
        columns["POLICY"].append(Text(_shown(entry.policy or "-")))
        columns["CREATED"].append(Text(_created(entry, now, compact)))
        columns["EXPIRES"].append(Text(_expires(entry, now, compact), style=style))
        columns["SIZE"].append(Text(_human_size(entry.size)))
        columns["STORAGE"].append(Text(_shown(entry.storage), style="dim"))
    widths = {name: max([len(name), *(c.cell_len for c in cells)]) for name, cells in columns.items()}
    if tty:
        def excess() -> int:
            return sum(widths.values()) + 2 * (len(widths) - 1) - console.width

        for droppable in ("STORAGE", "POLICY", "EXPIRES", "CREATED"):
            if excess() <= 0:
                break
            del widths[droppable]
        widths["TASK"] -= max(0, min(excess(), widths["TASK"] - 8))
    table = Table(box=None, show_edge=False, pad_edge=False, header_style="bold", padding=(0, 2, 0, 0))
    for name in widths:
        table.add_column(name, no_wrap=True, overflow="ellipsis", justify="right" if name == "SIZE" else "left",
                         min_width=widths[name] if name in ("KEY", "SIZE") else None,
                         max_width=widths[name] if tty else None)
    for i in range(len(entries)):
        table.add_row(*(columns[name][i] for name in widths))
    console.print(table, soft_wrap=not tty)


@cache_group.command("inspect")
@click.argument("key")
@click.option("--value", "with_value", is_flag=True,
              help="Also load the stored value (deserializes it: pickle runs code, so only from your own storage) "
                   "and print a short repr.")
@click.option("--json", "as_json", is_flag=True, help="The entry and its result's status as one JSON object.")
@click.pass_context
def inspect(ctx: click.Context, key: str, with_value: bool, as_json: bool) -> None:
    """Show one cache entry: every field, whether its stored result is there and readable, its trace.

    KEY is the raw key, its exported form (`md5:...`, as spans show it), or a unique prefix (at least 6
    characters) of either.
    """
    target = _target(ctx)
    with _store_errors(target):
        entry = _pick(target, key)
        probe = _probe(entry, target)
    value_text: str | None = None
    value_error: str | None = None
    if with_value:
        if probe.content is None:
            value_error = "the stored result is " + ("missing" if not probe.present else "unreadable")
        else:
            from otelflow.results import ResultRecord

            try:
                value_text = _short_repr(ResultRecord.deserialize(probe.content).result)
            except Exception as exc:  # unpickling can raise anything (a class that is gone, a damaged payload)
                value_error = f"cannot be loaded: {type(exc).__name__}: {exc}"
    if as_json:
        data = _entry_json(entry)
        data["result"] = {"present": probe.present, "readable": probe.content is not None, "size": probe.size,
                          "problem": probe.problem}
        if with_value:
            data["value_repr"] = value_text
            data["value_error"] = value_error
        click.echo(json.dumps(data))
    else:
        now = time.time()
        fields = [
            ("key", _shown(entry.key)),
            ("exported key", _shown(_exported(entry.key))),
            ("task", _shown(entry.task)),
            ("policy", _shown(entry.policy or "-")),
            ("created", _created(entry, now)),
            ("expires", _expires(entry, now)),
            ("serializer", _shown(entry.serializer)),
            ("size", f"{_human_size(entry.size)} ({entry.size} bytes when written)"),
            ("storage", _shown(entry.storage)),
            ("storage key", _shown(entry.storage_key)),
            ("result", _shown(probe.describe())),
            ("flow run id", _shown(entry.flow_run_id or "-")),
            ("task run id", _shown(entry.task_run_id or "-")),
            ("trace id", _shown(entry.trace_id) + f"  (otelflow show {_shown(entry.trace_id)})"
             if entry.trace_id else "-"),
            ("store", target.display),
        ]
        if with_value:
            fields.append(("value", value_text if value_text is not None else _shown(value_error or "")))
        for name, text in fields:
            click.echo(f"{name:<13} {text}")
    if value_error is not None:
        sys.exit(1)


@cache_group.command("clear")
@_task_option
@_older_option
@_expired_option
@click.option("--all", "everything", is_flag=True, help="Clear every entry (required when no filter is given).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (needed when not on a terminal).")
@click.option("--dry-run", is_flag=True, help="List what would be deleted, delete nothing.")
@click.pass_context
def clear(ctx: click.Context, task: str | None, older_than: float | None, expired: bool, everything: bool,
          yes: bool, dry_run: bool) -> None:
    """Delete cache entries and their stored results: the next run of those tasks computes them again."""
    if task is None and older_than is None and not expired and not everything:
        raise click.UsageError("Give a filter (--task, --older-than, --expired) or --all to clear every entry.")
    target = _target(ctx)
    with _store_errors(target):
        chosen = _select(_entries(target), task, older_than, expired)
        if not chosen:
            click.echo(f"No cache entries to clear in {target.display}.")
            return
        total = sum(e.size for e in chosen)
        what = f"{len(chosen)} cache entr{'y' if len(chosen) == 1 else 'ies'} ({_human_size(total)} of results)"
        if dry_run:
            now = time.time()
            for entry in chosen:
                click.echo(f"would delete {_shown(_exported(entry.key))}  {_shown(entry.task)}  "
                           f"{_human_size(entry.size)}  {_created(entry, now)}")
            click.echo(f"Would delete {what} from {target.display}.")
            return
        if not yes:
            if not _interactive():
                _fail(f"otelflow cache: refusing to delete {what} without confirmation: not a terminal. "
                      "Pass --yes.")
            click.confirm(f"Delete {what} from {target.display}?", abort=True)
        deleted = freed = 0
        for entry in chosen:
            existed, size = _remove(entry, target)
            deleted += existed
            freed += size
    click.echo(f"Deleted {deleted} cache entr{'y' if deleted == 1 else 'ies'} and {_human_size(freed)} of stored "
               f"results from {target.display}.")


def _interactive() -> bool:
    """True when a person can answer the confirmation prompt."""
    return sys.stdin.isatty()

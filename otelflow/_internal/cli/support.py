"""What the store-backed command groups share (``otelflow cache``, ``artifacts``, ``variable``, ``gcl``...): text
from a store made safe for the terminal, the one-line failure, and the store a group works on (``--store``).

Everything a store holds is untrusted: it is printed with control and format characters escaped
(:func:`terminal_safe`) and URL/DSN passwords masked (:func:`shown`).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from otelflow._internal.terminal import terminal_safe

if TYPE_CHECKING:
    from otelflow.stores import Store

__all__ = ["StoreTarget", "fail", "shown", "store_errors", "target_of", "terminal_safe"]


def shown(text: object) -> str:
    """Untrusted text for the terminal: passwords of embedded URLs/DSNs masked, then escaped."""
    from otelflow._internal.runs.redact import redact_text

    return terminal_safe(redact_text(str(text)))


def fail(message: str) -> NoReturn:
    """Print ``message`` on stderr and exit 1."""
    click.echo(message, err=True)
    sys.exit(1)


@dataclass
class StoreTarget:
    """The store a command group works on (``--store``, else the configured one)."""

    given: str | None

    @property
    def url(self) -> str:
        """The store URL (with its password, never printed)."""
        if self.given:
            return self.given
        from otelflow.settings import get_settings

        return get_settings().store_url_or_default

    @property
    def display(self) -> str:
        """The store URL for messages: password masked, escaped."""
        from otelflow.stores import redact_url

        return terminal_safe(redact_url(self.url))

    def missing_sqlite_file(self) -> bool:
        """True for a sqlite store whose file does not exist (yet): nothing stored, and nothing to create."""
        url = self.url
        if not url.startswith("sqlite:///"):
            return False
        return not Path(url[len("sqlite:///"):].split("?", 1)[0]).exists()

    def store(self) -> Store:
        """The store (opened once per process)."""
        from otelflow.stores import get_store

        return get_store(self.url)


def target_of(ctx: click.Context) -> StoreTarget:
    """The group's store target (its ``--store``), or the configured store when the group set none."""
    target = ctx.find_object(StoreTarget)
    return target if target is not None else StoreTarget(None)


@contextmanager
def store_errors(target: StoreTarget, command: str) -> Iterator[None]:
    """A store that cannot be reached or read: one line on stderr (``otelflow COMMAND: ...``), exit code 1, never a
    traceback; the store's password never shows."""
    from otelflow.stores import StoreError

    try:
        yield
    except StoreError as exc:
        message = shown(" ".join(str(exc).split()))
        if target.display not in message:
            message = f"cannot use the store {target.display}: {message}"
        fail(f"otelflow {command}: {message}")

"""Untrusted text made safe for a terminal: what a spool, a carrier or a log message holds is printed as text.

A log message, a run or task name, an exception message or a log ``extra`` value may hold escape sequences
(``\\x1b[2J`` clears the screen, ``\\x1b]0;title\\x07`` sets the window title and, left unterminated, hides what
follows), bidi overrides or zero-width characters. :func:`terminal_safe` writes every such character as a visible
Python-style escape, so the CLI and the run console show exactly what the record holds and nothing can move the
cursor, recolour the terminal or rewrite earlier lines. Imported by the run console on every record: no imports
beyond the standard library.
"""

from __future__ import annotations

import unicodedata
from typing import Final

__all__ = ["terminal_lines", "terminal_safe"]

# Control (C0, DEL, C1), format (bidi overrides, zero-width joiners...), lone surrogates, line/paragraph separators.
_UNSAFE_CATEGORIES: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def terminal_safe(text: str) -> str:
    """``text`` with every control, format (bidi overrides, zero-width), separator and lone-surrogate character
    written as a Python-style escape (``\\x1b``, ``\\u202e``): nothing in it can move the cursor, recolour the
    terminal, set its title or break the line. Printable text, non-ASCII letters included, is kept."""
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text)


def terminal_lines(text: str) -> list[str]:
    """The lines of a multi-line text (``\\n``, ``\\r\\n``), each made :func:`terminal_safe`, tabs expanded.

    For messages and tracebacks, whose line breaks are meant: they are kept as separate lines (the caller
    indents them), while a lone ``\\r`` (which would overwrite the line) and every other control is escaped.
    """
    if text.isprintable():
        return [text]
    return [terminal_safe(line.expandtabs(4)) for line in text.replace("\r\n", "\n").split("\n")]

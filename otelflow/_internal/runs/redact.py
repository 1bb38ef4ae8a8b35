"""Redaction of parameter values before they are exported (``OTELFLOW_RECORD_PARAMETER_VALUES=true``).

Values are walked, not ``repr()``-ed: a dataclass's repr prints its ``password`` field, a list of 40 dicts was
skipped by a size check and printed whole, and a DSN carries its password in plain sight. So
:func:`exportable` turns a value into plain JSON-able data, with

- secret-looking keys and field names (``OTELFLOW_REDACT_PATTERNS``) replaced by ``[REDACTED]`` at any depth,
  in mappings, dataclasses, pydantic models and attrs classes (duck-typed, attrs need not be installed);
- pydantic ``SecretStr``/``SecretBytes`` (and anything named ``Secret``) redacted wherever they appear;
- URLs and DSNs with an embedded password rewritten (``postgresql://user:***@host/db``), and
  ``password=...`` pairs of key/value connection strings masked;
- bounded work whatever the size: containers are truncated (the first items, then a ``"... N more"``
  marker), nesting is cut at a depth, and a node budget caps the whole walk. Nothing is skipped unredacted.
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
from collections.abc import Mapping, Sequence, Set
from typing import Any

__all__ = ["REDACTED", "exportable", "is_secret_name", "redact_text"]

REDACTED = "[REDACTED]"
_SECRET_TYPES = frozenset({"SecretStr", "SecretBytes", "Secret"})
_MAX_ITEMS = 32
_MAX_DEPTH = 6
_MAX_NODES = 512
_MAX_TEXT = 4096  # longest string kept while walking (the caller truncates the rendered text again)

# scheme://user:password@host -> scheme://user:***@host (also scheme://:password@host)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/?#@\s]*:)(?P<pw>[^@/?#\s]+)(?=@)")
# libpq / JDBC / ODBC style: password=..., pwd=... (up to a separator)
_KV_PASSWORD = re.compile(r"(?i)\b(?P<key>password|passwd|pwd)(?P<eq>\s*=\s*)(?P<pw>'[^']*'|\"[^\"]*\"|[^\s;&,]+)")


def is_secret_name(name: str, patterns: Sequence[str]) -> bool:
    """True if ``name`` contains one of the (lower-case) patterns, case-insensitively."""
    lowered = name.lower()
    return any(p in lowered for p in patterns)


def redact_text(text: str) -> str:
    """``text`` with the passwords of embedded URLs/DSNs and ``password=`` pairs replaced by ``***``."""
    if "://" in text:
        text = _URL_PASSWORD.sub(r"\g<head>***", text)
    if "=" in text:
        text = _KV_PASSWORD.sub(r"\g<key>\g<eq>***", text)
    return text


class _Budget:
    __slots__ = ("nodes",)

    def __init__(self) -> None:
        self.nodes = _MAX_NODES


def _fields(value: Any) -> list[tuple[str, Any]] | None:
    """``(name, value)`` of a dataclass instance, pydantic model or attrs instance, else None."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name, None)) for f in dataclasses.fields(value)]
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, Mapping) and hasattr(value, "model_dump"):  # pydantic v2 model
        return [(name, getattr(value, name, None)) for name in model_fields]
    attrs_fields = getattr(type(value), "__attrs_attrs__", None)
    if attrs_fields is not None:
        try:
            return [(a.name, getattr(value, a.name, None)) for a in attrs_fields]
        except Exception:
            return None
    return None


def _walk(value: Any, patterns: Sequence[str], depth: int, budget: _Budget) -> Any:
    budget.nodes -= 1
    if value is None or isinstance(value, bool | int | float):
        return value
    if type(value).__name__ in _SECRET_TYPES:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value[:_MAX_TEXT] + ("..." if len(value) > _MAX_TEXT else ""))
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if depth >= _MAX_DEPTH or budget.nodes <= 0:
        return f"<{type(value).__name__}>"
    fields = _fields(value)
    if fields is not None:
        return _mapping(fields, len(fields), patterns, depth, budget)
    if isinstance(value, Mapping):
        try:
            return _mapping(value.items(), len(value), patterns, depth, budget)
        except Exception:
            return f"<{type(value).__name__}>"
    if isinstance(value, Sequence | Set):
        out: list[Any] = []
        try:
            for index, item in enumerate(value):
                if index >= _MAX_ITEMS or budget.nodes <= 0:
                    out.append(f"... {len(value) - index} more")
                    break
                out.append(_walk(item, patterns, depth + 1, budget))
        except Exception:
            out.append("<unreadable>")
        return out
    return _text(value)


def _mapping(items: Any, size: int, patterns: Sequence[str], depth: int, budget: _Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, (key, item) in enumerate(items):
        if index >= _MAX_ITEMS or budget.nodes <= 0:
            out["..."] = f"{size - index} more"
            break
        name = str(key)
        out[name] = REDACTED if is_secret_name(name, patterns) else _walk(item, patterns, depth + 1, budget)
    return out


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 256


def _text(value: Any) -> str:
    try:
        text = _repr.repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return redact_text(text)


def exportable(value: Any, patterns: Sequence[str]) -> Any:
    """``value`` as bounded, JSON-able data with secrets redacted (see the module docstring).

    Example::

        >>> exportable({"dsn": "postgresql://app:hunter2@db/prod", "api_key": "k"}, ("key",))
        {'dsn': 'postgresql://app:***@db/prod', 'api_key': '[REDACTED]'}
    """
    return _walk(value, tuple(p.lower() for p in patterns), 0, _Budget())

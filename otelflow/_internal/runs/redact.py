"""Redaction of everything otelflow exports that may carry a secret (see ``docs/redaction.md``).

Three kinds of data pass through here before they leave the process:

- parameter values (``OTELFLOW_RECORD_PARAMETER_VALUES=true``) and run input values, walked by :func:`exportable`;
- log record bodies and attributes (the caller's ``extra``), always (:mod:`otelflow.logging.handlers`);
- exception text on spans, span events and log records (messages, stack traces, status descriptions), always
  (:func:`exported_message`, :func:`exported_stacktrace`).

Values are walked, not ``repr()``-ed: a dataclass's repr prints its ``password`` field, a list of 40 dicts was
skipped by a size check and printed whole, and a DSN carries its password in plain sight. So
:func:`exportable` turns a value into plain JSON-able data, with

- secret-looking keys and field names (``OTELFLOW_REDACT_PATTERNS``) replaced by ``[REDACTED]`` at any depth,
  in mappings, dataclasses, pydantic models, attrs classes (duck-typed, attrs need not be installed) and
  named tuples (walked as their fields);
- ``(name, value)`` pairs whose name is secret-looking (header lists: ``[("Authorization", "Bearer ...")]``)
  exported with the value redacted;
- pydantic ``SecretStr``/``SecretBytes`` (and anything named ``Secret``) redacted wherever they appear;
- every string passed through :func:`redact_text`;
- bounded work whatever the size: containers are truncated (the first items, then a ``"... N more"``
  marker), nesting is cut at a depth, and a node budget caps the whole walk. Nothing is skipped unredacted.

:func:`redact_text` masks, in free text, with ``***``:

- the password of a URL or DSN (``postgresql://app:***@db/x``): everything between the first ``:`` after the
  user name and the *last* ``@`` of the URL (up to the next whitespace), so a password holding ``/``, ``@``,
  ``:``, ``?`` or ``#`` is masked whole;
- the value of a secret-named ``key=value``, ``key: value``, ``"key": "value"`` or ``('key', 'value')`` pair
  (``api_key=***``, ``Authorization: Basic ***``, ``Pwd=***``), an authorization scheme kept;
- the token after ``Bearer``, and the body of a PEM ``PRIVATE KEY`` block.

Every rule is linear in the text's length: literal searches find where a rule may apply, and the regular
expressions that run there are bounded (no nested repetition, values looked for up to 4096 characters), so a
hostile 1 MB string is redacted in one pass. Text with nothing to mask is returned as the same object, at the
cost of a few substring checks (plus a lower-casing and one search when it holds a ``=``, ``:`` or ``,``).
"""

from __future__ import annotations

import dataclasses
import os
import re
import reprlib
from collections.abc import Iterable, Mapping, Sequence, Set
from typing import Any, Final

from otelflow._internal.export.limits import truncate_stacktrace, truncate_text
from otelflow._internal.per_settings import PerSettings

__all__ = [
    "MASK",
    "REDACTED",
    "Redactor",
    "exportable",
    "exported_message",
    "exported_stacktrace",
    "fields_of",
    "is_secret_name",
    "redact_text",
    "redactor",
    "strip_own_frames",
]

REDACTED: Final = "[REDACTED]"
#: What replaces a secret inside a text (a URL's password, a ``key=value`` pair's value).
MASK: Final = "***"
_SECRET_TYPES = frozenset({"SecretStr", "SecretBytes", "Secret"})
_MAX_ITEMS = 32
_MAX_DEPTH = 6
_MAX_NODES = 512
_MAX_TEXT = 4096  # longest string kept while walking (the caller truncates the rendered text again)
_SLACK = 1024  # characters past a cut that are redacted with the text before it

# Key names that are secret in text whatever the patterns: ODBC/ADO connection strings' ``Pwd=``.
_TEXT_ONLY_WORDS: Final = ("pwd",)
# Authorization schemes kept in front of a masked credential (``Authorization: Basic ***``).
_AUTH_SCHEMES: Final = ("bearer", "basic", "digest", "negotiate", "ntlm", "token", "apikey")

# After a secret-looking word: the rest of the key, then a separator (on lower-cased text): ``=``, ``:``,
# ``":`` (JSON, dict reprs) or ``',`` (a repr'd pair), and an authorization scheme that is kept.
_KEY_TAIL = re.compile(r"[\w.\-]{0,64}")
_SEPARATOR = re.compile(
    r"(?:[\"']?[ \t]{0,8}[:=][ \t]{0,8}|[\"'][ \t]{0,8},[ \t]{0,8})"
    rf"(?:(?:{'|'.join(_AUTH_SCHEMES)})[ \t]{{1,8}}(?=\S))?"
)
_BARE_VALUE = re.compile(r"[^\s;&,]{1,4096}")
_MAX_VALUE = 4096  # longest quoted or bracketed value looked for
_CLOSERS: Final = {'"': '"', "'": "'", "{": "}", "[": "]", "(": ")"}
# After ``bearer``: the token (RFC 6750's b64token).
_BEARER_TOKEN = re.compile(r"[ \t]{1,8}(?P<value>[\w\-.~+/]{1,4096}=*)")
_USER_END = re.compile(r"[:/?#\s]")
_WHITESPACE = re.compile(r"\s")
_PEM_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY-----")


def _word_regex(word: str) -> str:
    # ``_`` and ``-`` are the same in a name: the api_key pattern finds X-Api-Key too.
    return r"[_\-]".join(re.escape(part) for part in word.split("_"))


class Redactor:
    """The redaction rules for one set of secret-name patterns (lower-case substrings of a name).

    Get one with :func:`redactor` (cached); ``is_secret`` and ``text`` are what the exporters call per record.
    """

    __slots__ = ("_hint", "_names", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns: tuple[str, ...] = tuple(
            dict.fromkeys(p.lower().replace("-", "_") for p in patterns if p and p.strip())
        )
        words = sorted({*self.patterns, *_TEXT_ONLY_WORDS, "bearer"}, key=len, reverse=True)
        # Where a text rule may apply: a secret-looking word (searched in the lower-cased text).
        self._hint = re.compile("|".join(_word_regex(w) for w in words))
        self._names: dict[str, bool] = {}

    def is_secret(self, name: str) -> bool:
        """True if ``name`` contains one of the patterns, case-insensitively (``-`` counts as ``_``)."""
        known = self._names.get(name)
        if known is None:
            lowered = name.lower()
            if "-" in lowered:
                lowered = lowered.replace("-", "_")
            known = any(p in lowered for p in self.patterns)
            if len(self._names) >= 4096:
                self._names.clear()  # bounded: names come from user data
            self._names[name] = known
        return known

    def is_secret_pair(self, value: Any) -> bool:
        """True for a 2-item list/tuple whose first item is a secret-looking name: ``("Authorization", ...)``."""
        if len(value) != 2:
            return False
        name = value[0]
        if isinstance(name, bytes | bytearray):
            name = bytes(name).decode("latin-1")
        return isinstance(name, str) and len(name) <= 256 and self.is_secret(name)

    def text(self, text: str) -> str:
        """``text`` with URL/DSN passwords, secret-named ``key=value`` values, bearer tokens and private keys
        masked (``***``); the same object when there is nothing to mask."""
        if "://" in text and "@" in text:
            text = _mask_url_passwords(text)
        if "-----BEGIN" in text:
            text = _mask_private_keys(text)
        if not ("=" in text or ":" in text or "," in text or "earer" in text or "EARER" in text):
            return text  # no separator of a pair, no bearer token: nothing more to look for
        lowered = text.lower()
        hint = self._hint.search(lowered)
        if hint is None:
            return text
        start = hint.start()
        if len(lowered) != len(text):  # a character whose lower case is longer (İ): match on a copy that is not
            lowered = "".join(c if len(c.lower()) != 1 else c.lower() for c in text)
            start = 0
        return self._mask_pairs(text, lowered, start)

    def _mask_pairs(self, text: str, lowered: str, start: int) -> str:
        parts: list[str] = []
        last = checked = 0
        for hit in self._hint.finditer(lowered, start):
            end = hit.end()
            if end <= checked:
                continue  # inside a key already looked at, or a value already masked
            tail = _KEY_TAIL.match(lowered, end)
            checked = tail.end() if tail is not None else end
            separator = _SEPARATOR.match(lowered, checked)
            quote = ""
            if separator is not None:
                v_start = separator.end()
                v_end = _value_end(lowered, v_start)
                if v_end < 0:
                    continue
                if text[v_start] in "\"'" and text[v_end - 1] == text[v_start] and v_end - v_start >= 2:
                    quote = text[v_start]
            elif hit.group() == "bearer":
                token = _BEARER_TOKEN.match(lowered, end)
                if token is None:
                    continue
                v_start, v_end = token.span("value")
            else:
                continue
            parts.append(text[last:v_start])
            parts.append(f"{quote}{MASK}{quote}")
            last = checked = v_end
        if not parts:
            return text
        parts.append(text[last:])
        return "".join(parts)

    def value(self, value: Any) -> Any:
        """``value`` as bounded, JSON-able data with secrets redacted (see :func:`exportable`)."""
        return _walk(value, self, 0, _Budget())


def _value_end(lowered: str, start: int) -> int:
    """Where the value starting at ``start`` ends: a quoted string (on one line) or a bracketed group up to its
    first closer, else a bare word (up to whitespace, ``;``, ``&`` or ``,``); -1 for none."""
    if start >= len(lowered):
        return -1
    opener = lowered[start]
    closer = _CLOSERS.get(opener)
    if closer is not None:
        close = lowered.find(closer, start + 1, start + 1 + _MAX_VALUE)
        if close >= 0 and (closer not in "\"'" or lowered.find("\n", start + 1, close) < 0):
            return close + 1
    bare = _BARE_VALUE.match(lowered, start)
    return bare.end() if bare is not None else -1


def _mask_url_passwords(text: str) -> str:
    """Mask ``scheme://user:password@host``: the password is everything up to the URL's last ``@``.

    Linear: each ``://`` is looked at once, and a URL without ``@`` is skipped whole.
    """
    parts: list[str] = []
    last = 0
    pos = text.find("://")
    while pos >= 0:
        start = pos + 3
        user_end = _USER_END.search(text, start)
        if user_end is None:
            break
        colon = user_end.start()
        if text[colon] != ":":
            pos = text.find("://", start)
            continue
        space = _WHITESPACE.search(text, colon)
        end = space.start() if space is not None else len(text)
        at = text.rfind("@", colon + 1, end)
        if at < 0:
            pos = text.find("://", end)
            continue
        parts.append(text[last:colon + 1])
        parts.append(MASK)
        last = at
        pos = text.find("://", at)
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


def _mask_private_keys(text: str) -> str:
    parts: list[str] = []
    last = 0
    for begin in _PEM_BEGIN.finditer(text):
        if begin.start() < last:
            continue
        end = text.find("-----END", begin.end())
        parts.append(text[last:begin.end()])
        parts.append(MASK)
        last = end if end >= 0 else len(text)
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


_by_patterns: dict[tuple[str, ...], Redactor] = {}


def redactor(patterns: Sequence[str] | None = None) -> Redactor:
    """The (cached) :class:`Redactor` for ``patterns``; by default, for ``OTELFLOW_REDACT_PATTERNS``."""
    if patterns is None:
        return _configured()
    key = tuple(patterns)
    cached = _by_patterns.get(key)
    if cached is None:
        if len(_by_patterns) >= 64:
            _by_patterns.clear()
        cached = _by_patterns[key] = Redactor(key)
    return cached


_configured = PerSettings(lambda settings: redactor(settings.redact_patterns))


def is_secret_name(name: str, patterns: Sequence[str]) -> bool:
    """True if ``name`` contains one of the patterns, case-insensitively (``-`` counts as ``_``)."""
    return redactor(patterns).is_secret(name)


def redact_text(text: str, patterns: Sequence[str] | None = None) -> str:
    """``text`` with embedded URL/DSN passwords, secret-named ``key=value`` pairs, bearer tokens and private keys
    masked (``***``); ``patterns`` default to ``OTELFLOW_REDACT_PATTERNS``.

    Example::

        >>> redact_text("postgresql://app:pa/ss@db/x api_key=abc", ("api_key",))
        'postgresql://app:***@db/x api_key=***'
    """
    return redactor(patterns).text(text)


class _Budget:
    __slots__ = ("nodes",)

    def __init__(self) -> None:
        self.nodes = _MAX_NODES


def fields_of(value: Any) -> list[tuple[str, Any]] | None:
    """``(name, value)`` of a dataclass instance, pydantic model, attrs instance or named tuple, else None."""
    if isinstance(value, tuple):
        names = getattr(type(value), "_fields", None)
        if isinstance(names, tuple) and len(names) == len(value):  # a named tuple
            return [(str(name), item) for name, item in zip(names, value, strict=True)]
        return None
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


def _walk(value: Any, rules: Redactor, depth: int, budget: _Budget) -> Any:
    budget.nodes -= 1
    if value is None or isinstance(value, bool | int | float):
        return value
    if type(value).__name__ in _SECRET_TYPES:
        return REDACTED
    if isinstance(value, str):
        if len(value) <= _MAX_TEXT:
            return rules.text(value)
        # Redacted past the cut too, so a secret that straddles it is masked whole before the cut.
        return rules.text(value[:_MAX_TEXT + _SLACK])[:_MAX_TEXT] + "..."
    if isinstance(value, bytes | bytearray):
        return f"<{len(value)} bytes>"
    if depth >= _MAX_DEPTH or budget.nodes <= 0:
        return f"<{type(value).__name__}>"
    fields = fields_of(value)
    if fields is not None:
        return _mapping(fields, len(fields), rules, depth, budget)
    if isinstance(value, Mapping):
        try:
            return _mapping(value.items(), len(value), rules, depth, budget)
        except Exception:
            return f"<{type(value).__name__}>"
    if isinstance(value, list | tuple) and rules.is_secret_pair(value):
        return [_walk(value[0], rules, depth + 1, budget), REDACTED]
    if isinstance(value, Sequence | Set):
        out: list[Any] = []
        try:
            for index, item in enumerate(value):
                if index >= _MAX_ITEMS or budget.nodes <= 0:
                    out.append(f"... {len(value) - index} more")
                    break
                out.append(_walk(item, rules, depth + 1, budget))
        except Exception:
            out.append("<unreadable>")
        return out
    return _text(value, rules)


def _mapping(items: Any, size: int, rules: Redactor, depth: int, budget: _Budget) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for index, (key, item) in enumerate(items):
        if index >= _MAX_ITEMS or budget.nodes <= 0:
            out["..."] = f"{size - index} more"
            break
        name = str(key)
        out[name] = REDACTED if rules.is_secret(name) else _walk(item, rules, depth + 1, budget)
    return out


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 256


def _text(value: Any, rules: Redactor) -> str:
    try:
        text = _repr.repr(value)
    except Exception:
        return f"<unrepresentable {type(value).__name__}>"
    return rules.text(text)


def exportable(value: Any, patterns: Sequence[str]) -> Any:
    """``value`` as bounded, JSON-able data with secrets redacted (see the module docstring).

    Example::

        >>> exportable({"dsn": "postgresql://app:hunter2@db/prod", "api_key": "k"}, ("key",))
        {'dsn': 'postgresql://app:***@db/prod', 'api_key': '[REDACTED]'}
    """
    return redactor(patterns).value(value)


# --- exception text ---------------------------------------------------------------------------------------

_PACKAGE_DIRS: Final = tuple(dict.fromkeys(
    os.path.dirname(os.path.dirname(os.path.dirname(path))) + os.sep
    for path in (os.path.abspath(__file__), os.path.realpath(__file__))
))
_FRAME: Final = '  File "'
_OWN_FRAME_MARKS: Final = tuple(_FRAME + d for d in _PACKAGE_DIRS)
_TRACEBACK_HEADER: Final = "Traceback (most recent call last):"


def _is_own_frame(line: str) -> bool:
    return line.startswith(_OWN_FRAME_MARKS)


def strip_own_frames(stack: str) -> str:
    """``stack`` (a formatted traceback) without otelflow's own leading frames.

    After each ``Traceback (most recent call last):`` header (one per exception of a chain), the frames in files
    of the installed ``otelflow`` package that come before the first frame of other code (the user's) are
    dropped; the header, the user's frames and anything otelflow called from them are kept. A traceback with
    no frame but otelflow's is kept whole.
    """
    if not any(mark in stack for mark in _OWN_FRAME_MARKS):
        return stack
    lines = stack.splitlines(keepends=True)
    out: list[str] = []
    index, count = 0, len(lines)
    while index < count:
        line = lines[index]
        out.append(line)
        index += 1
        if line.rstrip("\r\n") != _TRACEBACK_HEADER:
            continue
        scan = index
        while scan < count and _is_own_frame(lines[scan]):
            scan += 1
            while scan < count and (lines[scan].startswith("    ") or lines[scan].startswith("  [Previous")):
                scan += 1  # the frame's source line, its carets, "[Previous line repeated N more times]"
        if scan > index and scan < count and lines[scan].startswith(_FRAME):
            index = scan  # the user's frame comes next: drop otelflow's before it
    return "".join(out)


def exported_message(text: str, limit: int) -> str:
    """An exception message (or any exported text) as exported: redacted, then cut to ``limit`` characters as
    :func:`~otelflow._internal.export.limits.truncate_text` cuts it.

    Only what is kept is redacted (plus a margin, so a secret that straddles the cut is masked whole): a 5 MB
    message costs what its first ``limit`` characters cost.
    """
    rules = redactor()
    if len(text) <= limit + _SLACK or limit < 32:
        return truncate_text(rules.text(text[:limit + _SLACK] if limit < 32 else text), limit)
    keep = limit - len(f"...[truncated {len(text)} chars]")
    return f"{rules.text(text[:keep + _SLACK])[:keep]}...[truncated {len(text) - keep} chars]"


def exported_stacktrace(text: str, limit: int) -> str:
    """A formatted traceback as exported: otelflow's leading frames dropped, redacted, then cut to ``limit`` as
    :func:`~otelflow._internal.export.limits.truncate_stacktrace` cuts it (head and tail kept; only they are
    redacted, each with a margin)."""
    rules = redactor()
    text = strip_own_frames(text)
    if len(text) <= limit + 2 * _SLACK or limit < 64:
        return truncate_stacktrace(rules.text(text), limit)
    room = limit - len(f"\n...[truncated {len(text)} chars]...\n")
    head, tail = room // 2, room - room // 2
    kept_head = rules.text(text[:head + _SLACK])[:head]
    kept_tail = rules.text(text[len(text) - tail - _SLACK:])
    kept_tail = kept_tail[len(kept_tail) - tail:] if tail else ""
    return f"{kept_head}\n...[truncated {len(text) - head - tail} chars]...\n{kept_tail}"

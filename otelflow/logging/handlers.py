"""Handlers on the ``otelflow`` logger: run logs to OpenTelemetry, and to the console.

:class:`OTelRunLogHandler` is the maintained OTel bridge (``opentelemetry-instrumentation-logging``'s
``LoggingHandler``; the SDK's own is deprecated) with three changes:

- trace_id/span_id and the run attributes come from the run the record was logged for (bound when the run
  logger was created), not from whatever span is current when the record is emitted;
- the logger provider is looked up at emit time (:func:`otelflow.telemetry.get_logger_provider`), so tests
  and applications can swap providers, and records are dropped at no cost when log export is off;
- no handler lock: the OTel pipeline is thread-safe, and the stdlib lock would serialise every task
  thread's logging through one handler.

It never exports OTel's own logs (``opentelemetry.*`` loggers) or anything logged while OTel suppresses
instrumentation (otelflow's export threads), and the bridge's re-entrancy guard stays in force, so an
exporter that logs cannot loop back into itself.

What it exports is redacted (``docs/redaction.md``, :mod:`otelflow._internal.runs.redact`): the body and every
string attribute pass through the text rules (URL/DSN passwords, secret-named ``key=value`` pairs, bearer
tokens), attributes with a secret-looking name are ``[REDACTED]`` at any depth, and ``exception.stacktrace``
loses otelflow's own leading frames. An attribute name Loki would reject (one with no ASCII letter or digit,
``".."``, ``"ようこそ"``) is exported as ``extra.<name>``. Only the exported record changes: the stdlib record,
and so the console, are left as they are.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import Mapping
from time import time_ns
from typing import Any, Final, TextIO, cast

from opentelemetry._logs import LogRecord
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context, get_current, get_value
from opentelemetry.instrumentation.log_utils import std_to_otel
from opentelemetry.instrumentation.logging.handler import LoggingHandler

from otelflow import telemetry
from otelflow._internal.export.limits import get_limits, truncate_value
from otelflow._internal.runs import redact as _redact
from otelflow.logging._runinfo import PLAIN_EMITTERS, PREFECT_RECORD_FIELDS, RUN_KEY, RunInfo, current_run_info

__all__ = ["ConsoleHandler", "OTelRunLogHandler", "clean_attribute", "truncate_message"]

_SEVERITY_TEXT: Final = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_PLAIN_TYPES: Final = frozenset({str, int, float, bool, bytes})
_MAX_DEPTH: Final = 8
# Set on a stdlib record once exported, so the same handler on two loggers of one hierarchy (``otelflow``
# and the root, say) exports it once.
_EXPORTED: Final = "_otelflow_exported"


def truncate_message(message: str, limit: int) -> str:
    """``message`` cut to ``limit`` characters plus a visible ``...[truncated N chars]`` marker."""
    if len(message) <= limit:
        return message
    return f"{message[:limit]}...[truncated {len(message) - limit} chars]"


def clean_attribute(value: Any, depth: int = 0) -> Any:
    """An OTel attribute value for ``value``: plain values and (nested) lists/dicts kept, the rest ``str()``;
    secrets redacted (``OTELFLOW_REDACT_PATTERNS``).

    The SDK would also stringify unknown types, but with a warning per record; a log call with
    ``extra={"path": Path(...)}`` should export the path, not spam stderr. Strings pass through the text rules
    (URL/DSN passwords, ``key=value`` secrets); in mappings, the value of a secret-looking key is ``[REDACTED]``,
    as is that of a ``(name, value)`` pair with a secret-looking name and a named tuple's secret-looking field.
    """
    return _clean(value, _redact.redactor(), depth)


def _clean(value: Any, rules: _redact.Redactor, depth: int) -> Any:
    kind = type(value)
    if kind is str:
        return rules.text(value)
    if kind in _PLAIN_TYPES:
        return value
    if depth < _MAX_DEPTH:
        if isinstance(value, list | tuple):
            if rules.is_secret_pair(value):
                return (_clean(value[0], rules, depth + 1), _redact.REDACTED)
            fields = _redact.fields_of(value) if isinstance(value, tuple) else None  # a named tuple
            if fields is not None:
                return tuple(_redact.REDACTED if rules.is_secret(name) else _clean(item, rules, depth + 1)
                             for name, item in fields)
            return tuple(_clean(v, rules, depth + 1) for v in value)
        if isinstance(value, Mapping):
            out: dict[str, Any] = {}
            for key, item in value.items():
                name = str(key)
                out[name] = _redact.REDACTED if rules.is_secret(name) else _clean(item, rules, depth + 1)
            return out
    if isinstance(value, str):
        return rules.text(value)
    if isinstance(value, int | float | bytes):  # subclasses: enums, numpy floats, ...
        return value
    if kind.__name__ in _SECRET_TYPES:
        return _redact.REDACTED
    fields = _redact.fields_of(value)  # a dataclass, pydantic model or attrs instance
    if fields is not None and any(rules.is_secret(name) for name, _ in fields):
        # Its str() shows the secret field: the same shape, from the fields.
        shown = ", ".join(f"{name}={_redact.REDACTED if rules.is_secret(name) else _clean(item, rules, depth + 1)!r}"
                          for name, item in fields)
        return f"{kind.__name__}({shown})"
    try:
        return rules.text(str(value))
    except Exception:
        return f"<unprintable {kind.__name__}>"


_SECRET_TYPES: Final = frozenset({"SecretStr", "SecretBytes", "Secret"})
_RUN_FIELDS: Final = frozenset(PREFECT_RECORD_FIELDS)
_EXCEPTION_MESSAGE: Final = "exception.message"
_EXCEPTION_STACKTRACE: Final = "exception.stacktrace"
# Redacted past the cut of a long body too, so a secret that straddles the cut is masked whole.
_BODY_SLACK: Final = 4096
_LOKI_PREFIX: Final = "extra."


def _exported_body(message: str, limit: int, rules: _redact.Redactor) -> str:
    """The record's message as exported: redacted, cut to ``limit`` (as :func:`truncate_message` cuts)."""
    if len(message) <= limit:
        return rules.text(message)
    return f"{rules.text(message[: limit + _BODY_SLACK])[:limit]}...[truncated {len(message) - limit} chars]"


def _loki_rejects(key: str) -> bool:
    """True if Loki would refuse ``key`` (it names it with underscores only: no ASCII letter or digit in it).

    Equivalent to :func:`otelflow.semconv.loki_name` raising, without building the name.
    """
    return not any(c.isascii() and c.isalnum() for c in key)


def _loki_safe_key(key: str, taken: Mapping[str, Any]) -> str:
    name = _LOKI_PREFIX + key  # ".." -> "extra...", which Loki names "extra_"
    while name in taken:
        name = _LOKI_PREFIX + name
    return name


class OTelRunLogHandler(LoggingHandler):
    """Export stdlib records as OTel log records correlated with their otelflow run.

    Installed on the ``otelflow`` logger by otelflow. To export another logger's records (your structlog
    setup, a library) with the same correlation, add an instance to that logger; see ``docs/logging.md``.
    """

    def __init__(self, level: int = logging.NOTSET, max_message_length: int | None = None) -> None:
        super().__init__(level=level)
        if max_message_length is None:
            from otelflow.settings import get_settings

            max_message_length = get_settings().logging_max_message_length
        self.max_message_length = max_message_length
        # (provider, {logger name: OTel logger}): swapped as a whole when the provider changes.
        self._otel_loggers: tuple[Any, dict[str, Any]] = (None, {})

    def handle(self, record: logging.LogRecord) -> bool:
        """Filter and emit without the handler lock (the OTel pipeline is thread-safe)."""
        if self.filters and not self.filter(record):
            return False
        self.emit(record)
        return True

    def emit(self, record: logging.LogRecord) -> None:
        """Translate the record and emit it through the current logger provider."""
        if record.name.startswith("opentelemetry") or _EXPORTED in record.__dict__:
            return  # OTel's own logs; or a record already exported by a handler on a child logger
        if record.__dict__.get("send_to_api") is False:
            return  # for the console only (Prefect's marker: its API log handler skips such records too)
        provider = telemetry.get_logger_provider()
        if provider is None or get_value(_SUPPRESS_INSTRUMENTATION_KEY):
            return
        if self._is_emitting.get():
            return  # a record logged while exporting one: exporting it could loop forever
        token = self._is_emitting.set(True)
        try:
            otel_logger = self._otel_logger(provider, record.name)
            otel_record = self._translate(record)
            record.__dict__[_EXPORTED] = True
            otel_logger.emit(otel_record)
        except RecursionError:  # pragma: no cover - see logging.StreamHandler.emit
            raise
        except Exception:
            self.handleError(record)
        finally:
            self._is_emitting.reset(token)

    def _otel_logger(self, provider: Any, name: str) -> Any:
        """The OTel logger of stdlib logger ``name`` from ``provider`` (cached; the cache goes with the provider)."""
        cached_provider, loggers = self._otel_loggers
        if cached_provider is not provider:
            loggers = {}
            self._otel_loggers = (provider, loggers)
        otel_logger = loggers.get(name)
        if otel_logger is None:
            otel_logger = loggers[name] = provider.get_logger(name)
        return otel_logger

    def plain_ok(self) -> bool:
        """Whether :meth:`emit_plain` can stand in for :meth:`emit` (always, for this handler)."""
        return True

    def emit_plain(self, logger_name: str, run: RunInfo, levelno: int, message: str, time_unix_nano: int) -> None:
        """Export a plain run log record (the run logger's own, no ``extra``, no exception) given only what the
        export needs, with no stdlib ``LogRecord``: :class:`~otelflow.logging.loggers.RunLoggerAdapter` calls this
        when this handler is the only one the record would reach, so nobody else could observe the difference.
        Exports what :meth:`emit` exports for such a record."""
        provider = telemetry.get_logger_provider()
        if provider is None or get_value(_SUPPRESS_INSTRUMENTATION_KEY) or self._is_emitting.get():
            return
        token = self._is_emitting.set(True)
        try:
            otel_logger = self._otel_logger(provider, logger_name)
            levelname = logging.getLevelName(levelno)
            otel_logger.emit(LogRecord(
                timestamp=time_unix_nano,
                observed_timestamp=time_ns(),
                context=run.context,
                severity_text=_SEVERITY_TEXT.get(levelname, levelname),
                severity_number=std_to_otel(levelno),
                body=_exported_body(message, self.max_message_length, _redact.redactor()),
                attributes=run.log_attributes,  # the SDK copies it into its own BoundedAttributes
            ))
        except RecursionError:  # pragma: no cover - see logging.StreamHandler.emit
            raise
        except Exception:
            self.handleError(logging.LogRecord(logger_name, levelno, "", 0, message, None, None))
        finally:
            self._is_emitting.reset(token)

    def _translate(self, record: logging.LogRecord) -> LogRecord:
        fields = record.__dict__
        run = fields.get(RUN_KEY)
        if (
            run is not None
            and len(fields) == run.plain_record_size
            and not record.exc_info
            and logging.getLogRecordFactory() is logging.LogRecord
        ):
            # A run logger's record with nothing of its own (no `extra` of the call, nothing a filter or record
            # factory added; no exception): its attributes are the run's, made once per run.
            attributes, context, event_name = dict(run.log_attributes), run.context, None
            rules = _redact.redactor()
        else:
            attributes, context, event_name, rules = self._attributes_of(record)
        return LogRecord(
            timestamp=int(record.created * 1e9),
            observed_timestamp=time_ns(),
            context=context,
            severity_text=_SEVERITY_TEXT.get(record.levelname, record.levelname),
            severity_number=std_to_otel(record.levelno),
            body=_exported_body(record.getMessage(), self.max_message_length, rules),
            attributes=attributes,
            event_name=event_name,
        )

    def _attributes_of(
        self, record: logging.LogRecord,
    ) -> tuple[dict[str, Any], Context, str | None, _redact.Redactor]:
        """Any record's attributes (bounded in size, redacted, named so Loki takes them), the context it
        correlates with, its event name, and the redaction rules in force."""
        attributes, event_name = self._get_attributes(record)
        bound = cast("RunInfo | None", attributes.pop(RUN_KEY, None))
        if bound is not None:
            # Bound when the run logger was created: right even from a helper thread with no current span.
            run: RunInfo | None = bound
            context = bound.context
        else:
            # get_logger() / structlog records: the current span, and the current run's attributes.
            context = get_current()
            run = current_run_info()
        if run is not None and not _RUN_FIELDS.isdisjoint(attributes):
            # Prefect's fields (a run logger's, or flow_run_logger()'s in a hook) say the run's ids and names,
            # exported once below under otelflow's names (run.log_attributes), not a second time under Prefect's.
            # A value of the call's own `extra` that differs is kept; None (deployment_name) cannot be exported.
            known = run.extra
            for key in _RUN_FIELDS.intersection(attributes):
                value = attributes[key]
                if value is None or value == known.get(key):
                    del attributes[key]
        limits = get_limits()
        rules = _redact.redactor()
        rejected: list[str] | None = None
        for key, value in attributes.items():
            kind = type(value)
            if key == _EXCEPTION_STACKTRACE and isinstance(value, str):
                attributes[key] = _redact.exported_stacktrace(value, limits.stacktrace)
            elif key == _EXCEPTION_MESSAGE and isinstance(value, str):
                attributes[key] = _redact.exported_message(value, limits.exception_message)
            elif rules.is_secret(key):
                attributes[key] = _redact.REDACTED
            elif isinstance(value, str):
                # One huge `extra` value must not poison the export batch: cut it, visibly.
                attributes[key] = (rules.text(value) if len(value) <= limits.attribute_value
                                   else _redact.exported_message(value, limits.attribute_value))
            elif kind not in _PLAIN_TYPES:
                attributes[key] = truncate_value(_clean(value, rules, 0), limits.attribute_value)
            first = key[:1]
            if not ("a" <= first <= "z" or "A" <= first <= "Z") and _loki_rejects(key):
                rejected = [key] if rejected is None else [*rejected, key]
        if rejected is not None:
            for key in rejected:
                value = attributes.pop(key)
                attributes[_loki_safe_key(key, attributes)] = value
        if run is not None:
            if "trace_id" in attributes and attributes["trace_id"] == run.trace_id:
                # add_run_context() put them there for rendering; the record carries them natively.
                del attributes["trace_id"]
                attributes.pop("span_id", None)
            attributes.update(run.log_attributes)
        return attributes, context, event_name, rules


class ConsoleHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Run logs on stderr (the formatter is built on the first record, so idle setups import nothing).

    Lines are written in batches, not one system call each: a write per record on the run's thread starved an
    application's own ``BatchSpanProcessor`` (a 5k-task flow logging once per task lost hundreds of spans and
    records from its 2048-item queue). A warning or worse is written at once with everything before it; other
    lines within ``FLUSH_SECONDS`` (by a small flusher thread), when ``FLUSH_BYTES`` are pending, when a flow
    run ends, and at exit. Written to whatever ``sys.stderr`` is then, so redirections (pytest's capture,
    contextlib) are honoured.
    """

    FLUSH_SECONDS = 0.05
    FLUSH_BYTES = 16_384

    def __init__(self, fmt: str, max_message_length: int) -> None:
        super().__init__(sys.stderr)
        self._fmt = fmt
        self._max_message_length = max_message_length
        self._pending: list[str] = []
        self._pending_bytes = 0
        self._wake = threading.Condition(threading.Lock())
        self._flusher: threading.Thread | None = None
        # In a child process (a Pool worker, os.fork) each line is written at once: the child may end by os._exit
        # or Pool.terminate(), with no exit hook to write what is pending.
        from otelflow._internal.export.pipeline import in_multiprocessing_child

        self._immediate = in_multiprocessing_child()

    def _at_fork_reinit(self) -> None:
        # logging calls this in a forked child. The flusher thread is gone and may have held _wake at the fork; the
        # pending lines are the parent's to write (writing them here too would print them twice).
        super()._at_fork_reinit()  # type: ignore[misc]
        self._wake = threading.Condition(threading.Lock())
        self._flusher = None
        self._pending = []
        self._pending_bytes = 0
        self._immediate = True

    def emit(self, record: logging.LogRecord) -> None:
        """Format the record and queue its line (written at once for warnings and worse)."""
        try:
            line = self.format(record) + "\n"
        except Exception:
            self.handleError(record)
            return
        self._queue(line, record.levelno)

    def plain_ok(self) -> bool:
        """Whether :meth:`emit_plain` can stand in for :meth:`emit`: with the console layout (the JSON layout
        renders a stdlib record through structlog)."""
        return self._fmt != "json"

    def emit_plain(self, logger_name: str, run: RunInfo, levelno: int, message: str, time_unix_nano: int) -> None:
        """Queue the console line of a plain run record (see ``OTelRunLogHandler.emit_plain``): the line
        :meth:`emit` writes for such a record, made without a stdlib ``LogRecord``."""
        try:
            formatter = self._formatter()
            from otelflow.logging.formatters import ConsoleFormatter

            if not isinstance(formatter, ConsoleFormatter):
                raise TypeError(f"{type(formatter).__name__} needs a LogRecord")
            line = formatter.format_plain(run, levelno, message, time_unix_nano) + "\n"
        except Exception:
            self.handleError(logging.LogRecord(logger_name, levelno, "", 0, message, None, None))
            return
        self._queue(line, levelno)

    def _queue(self, line: str, levelno: int) -> None:
        with self._wake:
            self._pending.append(line)
            self._pending_bytes += len(line)
            if levelno >= logging.WARNING or self._pending_bytes >= self.FLUSH_BYTES or self._immediate:
                self._write_pending()
                return
            if self._flusher is None or not self._flusher.is_alive():
                self._flusher = threading.Thread(target=self._flush_soon, name="otelflow-console", daemon=True)
                self._flusher.start()
            elif len(self._pending) == 1:
                self._wake.notify()

    def _write_pending(self) -> None:
        # Called with self._wake held.
        if not self._pending:
            return
        text = "".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        try:
            stream = sys.stderr
            stream.write(text)
            stream.flush()
        except Exception:  # a closed stderr must not break a run
            pass

    def _flush_soon(self) -> None:
        with self._wake:
            while True:
                if not self._pending:
                    self._wake.wait(5.0)
                    if not self._pending:
                        self._flusher = None
                        return  # idle: the next record starts a new flusher
                self._wake.wait(self.FLUSH_SECONDS)
                self._write_pending()

    def flush(self) -> None:
        """Write every pending line now."""
        with self._wake:
            self._write_pending()

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass  # always sys.stderr, looked up at emit time

    def _formatter(self) -> logging.Formatter:
        if self.formatter is None:
            from otelflow.logging.formatters import build_formatter

            colors = bool(getattr(sys.stderr, "isatty", lambda: False)())
            self.formatter = build_formatter(self._fmt, colors, self._max_message_length)
        return self.formatter

    def format(self, record: logging.LogRecord) -> str:
        """Render with structlog (console or JSON)."""
        return self._formatter().format(record)


PLAIN_EMITTERS.update((OTelRunLogHandler, ConsoleHandler))

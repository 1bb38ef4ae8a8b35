"""Lazy, idempotent setup of the ``otelflow`` logger: its level, the OTel handler, the console handler.

Runs on the first ``get_run_logger()``/``get_logger()`` and again whenever the settings object changes
(``reset_settings()``), never at ``import otelflow``: importing the OTel bridge and structlog costs tens of
milliseconds that a script which never logs should not pay.

The ``otelflow`` logger does not propagate while otelflow prints to the console (the application's root
handlers would print every line twice); with ``OTELFLOW_LOGGING_TO_CONSOLE=false`` it propagates, so the
application's own logging configuration receives run logs instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from otelflow.settings import Settings

__all__ = ["ensure_configured", "get_otel_handler", "setup_logging"]

_lock = threading.Lock()
_configured_for: Settings | None = None
_otel_handler: Any = None
_console_handler: logging.Handler | None = None
# otelflow.settings imports pydantic (~100 ms): bound on first setup, not at import.
_get_settings: Callable[[], Settings] | None = None


def ensure_configured() -> None:
    """Set up logging if the settings changed since the last setup (one identity check otherwise)."""
    if _get_settings is None or _get_settings() is not _configured_for:
        setup_logging()


def setup_logging(settings: Settings | None = None) -> None:
    """(Re)configure the ``otelflow`` logger from ``settings`` (default: the current settings)."""
    global _configured_for, _otel_handler, _console_handler, _get_settings
    from otelflow.logging.handlers import ConsoleHandler, OTelRunLogHandler
    from otelflow.settings import get_settings

    with _lock:
        _get_settings = get_settings
        settings = settings or get_settings()
        root = logging.getLogger("otelflow")
        root.setLevel(settings.logging_level)
        if _otel_handler is None:
            _otel_handler = OTelRunLogHandler(max_message_length=settings.logging_max_message_length)
        _otel_handler.max_message_length = settings.logging_max_message_length
        if _otel_handler not in root.handlers:
            root.addHandler(_otel_handler)
        if _console_handler is not None:
            root.removeHandler(_console_handler)
            _console_handler.flush()
            _console_handler = None
        if settings.logging_to_console:
            _console_handler = ConsoleHandler(settings.logging_format, settings.logging_max_message_length)
            root.addHandler(_console_handler)
            root.propagate = False
        else:
            root.propagate = True
        _configured_for = settings


def flush_console() -> None:
    """Write the console lines still pending (the engine calls it when a flow run ends)."""
    handler = _console_handler
    if handler is not None:
        handler.flush()


def get_otel_handler() -> Any:
    """The :class:`~otelflow.logging.handlers.OTelRunLogHandler` installed on the ``otelflow`` logger.

    Add it to another logger to export that logger's records with run correlation too.
    """
    ensure_configured()
    return _otel_handler

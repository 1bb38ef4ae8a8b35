"""Run loggers (placeholder: replaced by the logging issue's full implementation)."""

from __future__ import annotations

import builtins
import contextlib
import logging
from collections.abc import Iterator
from typing import Any

from otelflow.context import FlowRunContext, MissingContextError, TaskRunContext

__all__ = ["get_logger", "get_run_logger", "print_as_log"]


def get_logger(name: str | None = None) -> logging.Logger:
    """A logger under the ``otelflow`` hierarchy."""
    return logging.getLogger(f"otelflow.{name}" if name else "otelflow")


def get_run_logger(name: str | None = None, **kwargs: Any) -> logging.LoggerAdapter[logging.Logger]:
    """The logger of the current flow or task run."""
    ctx = TaskRunContext.get() or FlowRunContext.get()
    if ctx is None:
        raise MissingContextError("There is no active flow or task run context.")
    return logging.LoggerAdapter(get_logger(name or "runs"), kwargs)


@contextlib.contextmanager
def print_as_log() -> Iterator[None]:
    """Send print() to the run logger inside the block."""
    original = builtins.print
    yield
    builtins.print = original

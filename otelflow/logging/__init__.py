"""Run logs: Prefect's logging API, exported as OpenTelemetry log records correlated with each run's span.

Example::

    from otelflow import flow, task, get_run_logger
    from otelflow.logging import LogEavesdropper, disable_run_logger, get_logger

    @task
    def process_data(data):
        get_run_logger().info(f"Processing {len(data)} records")

    @flow
    def data_pipeline():
        get_run_logger().info("Configuration", extra={"batch_size": 1000, "env": "production"})

See ``docs/logging.md`` for the console formats, structlog and the wire format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from otelflow.logging.configuration import get_otel_handler, setup_logging
from otelflow.logging.loggers import (
    LogEavesdropper,
    PrefectLogAdapter,
    RunLoggerAdapter,
    disable_run_logger,
    get_logger,
    get_run_logger,
    print_as_log,
)
from otelflow.logging.processors import add_run_context

if TYPE_CHECKING:
    from otelflow.logging.handlers import OTelRunLogHandler

__all__ = [
    "LogEavesdropper",
    "OTelRunLogHandler",
    "PrefectLogAdapter",
    "RunLoggerAdapter",
    "add_run_context",
    "disable_run_logger",
    "get_logger",
    "get_otel_handler",
    "get_run_logger",
    "print_as_log",
    "setup_logging",
]


def __getattr__(name: str) -> Any:
    # The handler module imports the OTel logging bridge (~50 ms); only load it when asked for.
    if name == "OTelRunLogHandler":
        from otelflow.logging.handlers import OTelRunLogHandler

        return OTelRunLogHandler
    raise AttributeError(f"module 'otelflow.logging' has no attribute {name!r}")

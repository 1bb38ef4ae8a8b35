"""Test utilities for users' suites (Prefect's ``prefect.testing.utilities``): :func:`otelflow_test_harness`.

Example (pytest, once for the whole session, as Prefect's docs show for ``prefect_test_harness``)::

    # conftest.py
    import pytest
    from otelflow.testing.utilities import otelflow_test_harness

    @pytest.fixture(autouse=True, scope="session")
    def otelflow_test_fixture():
        with otelflow_test_harness():
            yield
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["otelflow_test_harness"]

# The settings the harness points at its own folder: everything otelflow keeps on disk lives under the home
# (spool, outage buffer, the sqlite store); the store URL is set too, so a shared store (redis) configured for
# the application is not used by the tests.
_HOME_ENV = "OTELFLOW_HOME"
_STORE_ENV = "OTELFLOW_STORE_URL"


@contextlib.contextmanager
def otelflow_test_harness(server_startup_timeout: int | None = 30) -> Iterator[Path]:
    """Run the block's flows against a throwaway otelflow home (Prefect's ``prefect_test_harness``).

    Prefect's harness points runs at a temporary database; otelflow has no server, and what it isolates is
    what otelflow keeps outside the process:

    - **settings**: ``OTELFLOW_HOME`` is a new temporary folder and ``OTELFLOW_STORE_URL`` a sqlite file in
      it, so transaction records, locks, run input and pause records start empty and never touch the
      developer's ``~/.otelflow`` or a shared redis store. Child processes (a Dask ``LocalCluster``'s workers,
      subprocesses) inherit both variables. The cached settings and open stores are reset on entry and exit.
    - **telemetry**: otelflow's spans and run logs go to the OTLP-JSON spool in that folder
      (``<home>/spool``, readable with ``OTELFLOW_HOME=<home> otelflow runs``), never to a collector the
      environment configures. This does not touch OTel's process-global providers (they can be set only once
      per process): the harness stacks its own providers on otelflow's, as :func:`otelflow.testing.capture_telemetry`
      does, so a ``capture_telemetry()`` block (or the ``otelflow_telemetry`` fixture) inside or after the
      harness still captures everything, and the application's own OTel instrumentation keeps exporting
      where it did. With ``OTEL_SDK_DISABLED=true`` telemetry stays off.

    On exit the environment variables are restored, the harness's telemetry is flushed and closed, and the
    folder is deleted. Yields the folder (Prefect's harness yields nothing; ``with otelflow_test_harness():``
    works the same). ``server_startup_timeout`` is accepted for compatibility and unused (no server starts).

    Example::

        from otelflow import flow
        from otelflow.testing.utilities import otelflow_test_harness

        @flow
        def my_flow():
            return "Done!"

        with otelflow_test_harness():
            assert my_flow() == "Done!"  # isolated home, store and spool
    """
    del server_startup_timeout
    from otelflow import telemetry
    from otelflow.settings import reset_settings
    from otelflow.stores import reset_stores

    home = Path(tempfile.mkdtemp(prefix="otelflow-test-"))  # owner-only (0o700), as the otelflow home must be
    saved = {key: os.environ.get(key) for key in (_HOME_ENV, _STORE_ENV)}
    with contextlib.ExitStack() as stack:
        # Undone in reverse: telemetry first (its last records land in the folder), then the stores opened on
        # the harness's settings, then the environment, and the settings cache only once it is restored.
        stack.callback(shutil.rmtree, home, ignore_errors=True)
        stack.callback(reset_settings)
        stack.callback(_restore_environment, saved)
        stack.callback(reset_stores)
        os.environ[_HOME_ENV] = str(home)
        os.environ[_STORE_ENV] = "sqlite:///" + str((home / "store.sqlite3").absolute())
        reset_settings()
        reset_stores()
        if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
            providers = _spool_providers(home / "spool")
            stack.callback(_shut_down, providers)
            stack.enter_context(telemetry.use_providers(*providers))
        yield home


def _restore_environment(saved: dict[str, str | None]) -> None:
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _shut_down(providers: Sequence[Any]) -> None:
    for provider in providers:
        with contextlib.suppress(Exception):
            provider.shutdown()


def _spool_providers(directory: Path) -> list[Any]:
    """A tracer and a logger provider writing each span and run log straight to the spool in ``directory``."""
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    from otelflow import telemetry
    from otelflow._internal.spool.otlp_json import encode_logs, encode_spans
    from otelflow._internal.spool.writer import SpoolWriter

    class SpoolSpanExporter(SpanExporter):
        def __init__(self) -> None:
            self.writer = SpoolWriter(directory, "traces", mark_alive=True)

        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            self.writer.write(encode_spans(spans))
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            self.writer.close()

    class SpoolLogExporter(LogRecordExporter):
        def __init__(self) -> None:
            self.writer = SpoolWriter(directory, "logs", mark_alive=True)

        def export(self, batch: Sequence[Any]) -> LogRecordExportResult:
            self.writer.write(encode_logs(batch))
            return LogRecordExportResult.SUCCESS

        def shutdown(self) -> None:
            self.writer.close()

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    # Same resource and id generator as the providers otelflow builds itself (service name, fork-safe ids).
    resource = telemetry._resource()
    tracer_provider = TracerProvider(
        resource=resource, shutdown_on_exit=False, id_generator=telemetry._id_generator()
    )
    # Synchronous processors: each record is on disk when the run that made it returns (a test reads it next).
    tracer_provider.add_span_processor(SimpleSpanProcessor(SpoolSpanExporter()))
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(SimpleLogRecordProcessor(SpoolLogExporter()))
    return [tracer_provider, logger_provider]

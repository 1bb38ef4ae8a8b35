"""otelflow settings: ``OTELFLOW_*`` environment variables, validated by pydantic-settings.

OpenTelemetry's own ``OTEL_*`` variables (service name, exporter endpoint, sampler, limits, ...) are
read by the SDK and by :mod:`otelflow.telemetry`; they are not duplicated here.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal, cast

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings", "get_current_settings", "get_settings", "reset_settings"]


class Settings(BaseSettings):
    """otelflow configuration. Every field is read from ``OTELFLOW_<FIELD_NAME>``.

    Example::

        OTELFLOW_HOME=/tmp/of OTELFLOW_RECORD_PARAMETER_VALUES=true python pipeline.py
    """

    model_config = SettingsConfigDict(env_prefix="OTELFLOW_", extra="ignore", validate_default=True)

    home: Path = Field(
        default_factory=lambda: Path.home() / ".otelflow",
        description="Folder for the local spool (embedded telemetry default) and the sqlite store.",
    )
    record_parameter_values: bool = Field(
        default=False,
        description="Export parameter values as span attributes (secret-looking ones redacted). "
        "Off: only each parameter's type name is exported.",
    )
    parameter_value_max_length: int = Field(
        default=256, ge=16, description="Longest exported parameter value (characters); longer is truncated."
    )
    redact_patterns: tuple[str, ...] = Field(
        default=("password", "passwd", "secret", "token", "api_key", "apikey", "credential", "private_key",
                 "auth", "access_key", "pwd", "passphrase", "cookie"),
        description="Secret names: a parameter name, log `extra` key or field name containing any of these "
        "(case-insensitive) is exported as '[REDACTED]', and `name=value` / `name: value` pairs in exported text "
        "are masked (docs/redaction.md). A JSON list; it replaces the defaults.",
    )
    jaeger_url: str | None = Field(
        default=None,
        description="Base URL of the Jaeger UI (http://localhost:16686): each flow run prints a link to its trace "
        "on the console when it starts, as Prefect prints its UI's 'View at' link.",
    )
    grafana_url: str | None = Field(
        default=None,
        description="Base URL of Grafana (http://localhost:3000): `otelflow ui` links each run to its logs in "
        "Grafana's Explore, on the stack's Loki data source (uid `loki`).",
    )
    ui_url: str | None = Field(
        default=None,
        description="Base URL of `otelflow ui` (http://127.0.0.1:4200): each flow run prints a link to its page on "
        "the console when it starts, as Prefect prints its UI's 'View at' link.",
    )
    shutdown_timeout_seconds: float = Field(
        default=5.0, ge=0, description="Upper bound on the telemetry flush when the process exits."
    )
    handle_signals: bool = Field(
        default=True,
        description="On SIGTERM/SIGHUP, end every open run Crashed, flush telemetry (bounded by "
        "shutdown_timeout_seconds), then let the signal take its usual effect (chaining the application's "
        "handler). Installed from the main thread only, when the first flow run starts.",
    )
    pending_span_after_seconds: float = Field(
        default=5.0, gt=0,
        description="A task run still running after this many seconds exports a pending record of its span "
        "(flow runs export one when they start), so long or killed runs are visible while they run.",
    )
    attribute_value_max_length: int | None = Field(
        default=None, ge=32,
        description="Longest exported attribute value / log `extra` value (characters), truncated with a visible "
        "marker. Default: OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT if set, else 16384.",
    )
    exception_message_max_length: int = Field(
        default=8192, ge=32, description="Longest exported exception message (span status, exception events, logs)."
    )
    stacktrace_max_length: int = Field(
        default=32_768, ge=64, description="Longest exported stack trace; the middle is cut, head and tail kept."
    )
    export_max_request_bytes: int = Field(
        default=4 * 1024 * 1024, ge=64 * 1024,
        description="Largest OTLP export request; bigger batches are split (gRPC receivers reject > 4 MiB).",
    )
    buffer_max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=0,
        description="Size bound of the outage buffer (batches the collector could not take, kept on disk and "
        "re-sent); beyond it the oldest are dropped and counted. 0 turns the buffer off.",
    )
    logging_level: str = Field(default="INFO", description="Level of otelflow's run loggers and console output.")
    logging_format: Literal["console", "json"] = Field(
        default="console", description="Console rendering: human-readable, or one JSON object per line."
    )
    logging_to_console: bool = Field(default=True, description="Also print run logs to stderr.")
    logging_max_message_length: int = Field(
        default=32_768, ge=64, description="Longer log messages are truncated, with a visible marker."
    )
    log_run_events: bool = Field(
        default=True,
        description="The engine logs run lifecycle events to the run loggers: flow run beginning and final "
        "state, task retries and failures (with tracebacks), as Prefect does.",
    )
    task_runner_max_workers: int | None = Field(
        default=None, ge=1, description="Threads of the default task runner (default: min(32, cpus + 4))."
    )
    task_runner_process_pool_max_workers: int | None = Field(
        default=None, ge=1, description="Worker processes of ProcessPoolTaskRunner (default: the number of CPUs)."
    )
    store_url: str | None = Field(
        default=None,
        description="Shared store for transaction records, locks and run input: sqlite:////path/file.sqlite3, "
        "redis://host:port/db or rediss://user:password@host:port/db. Default: a sqlite file under home.",
    )
    lock_lease_seconds: float = Field(
        default=30.0, gt=0, description="Lease of a transaction lock; renewed while the holder lives, so a crashed "
        "holder frees the key at most this long after it died."
    )
    lock_wait_seconds: float = Field(
        default=60.0, ge=0, description="Longest wait for a transaction lock held by another process."
    )
    results_persist_by_default: bool = Field(
        default=False, description="Persist task and flow results when no persist_result option decides "
        "(Prefect's PREFECT_RESULTS_PERSIST_BY_DEFAULT)."
    )
    results_default_serializer: str = Field(
        default="pickle", description="Serializer of persisted results when a run names none: pickle, json, "
        "compressed/pickle or compressed/json (Prefect's PREFECT_RESULTS_DEFAULT_SERIALIZER)."
    )
    results_local_storage_path: Path | None = Field(
        default=None, description="Folder of persisted results when a run names no result_storage "
        "(default: $OTELFLOW_HOME/storage; Prefect's PREFECT_RESULTS_LOCAL_STORAGE_PATH)."
    )
    tasks_default_persist_result: bool | None = Field(
        default=None, description="persist_result of tasks that set none, before the flow's choice applies "
        "(Prefect's PREFECT_TASKS_DEFAULT_PERSIST_RESULT)."
    )
    tasks_refresh_cache: bool = Field(
        default=False, description="Ignore cached results (recompute and overwrite them) for every task that "
        "does not set refresh_cache (Prefect's PREFECT_TASKS_REFRESH_CACHE)."
    )
    tasks_default_no_cache: bool = Field(
        default=False, description="Tasks that set no cache_policy get NO_CACHE instead of DEFAULT "
        "(Prefect's PREFECT_TASKS_DEFAULT_NO_CACHE)."
    )
    tasks_disable_caching: bool = Field(
        default=False, description="Turn caching off for every task (Prefect's PREFECT_TASKS_DISABLE_CACHING)."
    )
    input_max_bytes: int = Field(
        default=512 * 1024, ge=1024, description="Largest flow run input value accepted (bytes of JSON)."
    )

    @field_validator("logging_level")
    @classmethod
    def _level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("OTELFLOW_LOGGING_LEVEL must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return value

    @property
    def store_url_or_default(self) -> str:
        """``store_url``, or the embedded default ``sqlite:///$OTELFLOW_HOME/store.sqlite3``."""
        return self.store_url or "sqlite:///" + str((self.home / "store.sqlite3").absolute())

    @property
    def results_storage_path(self) -> Path:
        """Folder of persisted results: ``results_local_storage_path``, else ``$OTELFLOW_HOME/storage``."""
        return self.results_local_storage_path or self.home / "storage"

    @property
    def spool_dir(self) -> Path:
        """Folder of the OTLP-JSON spool (the embedded telemetry default)."""
        return self.home / "spool"

    @property
    def buffer_dir(self) -> Path:
        """Folder of the outage buffer: OTLP-JSON lines the collector could not take yet (re-sent later)."""
        return self.home / "buffer"


_settings: Settings | None = None
_lock = threading.Lock()


def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = Settings()
    return _settings


def get_current_settings() -> Settings:
    """The settings in force here: those of the entered :class:`~otelflow.context.SettingsContext`, else the
    environment's (:func:`get_settings`). Prefect's ``prefect.settings.get_current_settings``.

    Example::

        from otelflow.settings import get_current_settings

        home = get_current_settings().home
    """
    global _settings_var
    if _settings_var is None:
        from otelflow.context import SettingsContext

        _settings_var = SettingsContext.__var__
    entered = _settings_var.get(None)  # the fast path (no entered context): no context object, no import
    if entered is not None:
        return cast(Settings, entered.settings)
    return get_settings()


_settings_var: Any = None


def reset_settings() -> None:
    """Forget the cached settings so that the next :func:`get_settings` re-reads the environment."""
    global _settings
    with _lock:
        _settings = None

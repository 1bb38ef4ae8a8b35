"""Shared fixtures: captured telemetry, a clean otelflow home, settings from env."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browser import browser, page  # noqa: F401  (fixtures: headless Chromium)
from otlp_receiver import otlp_grpc_receiver, otlp_receiver  # noqa: F401  (fixtures)
from redis_server import redis_server  # noqa: F401  (fixture)

from otelflow.settings import reset_settings
from otelflow.testing import CapturedTelemetry, capture_telemetry

TESTS_DIR = Path(__file__).parent
REPO_ROOT = TESTS_DIR.parent


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every test gets its own OTELFLOW_HOME, so nothing writes to the developer's ~/.otelflow."""
    home = tmp_path_factory.mktemp("otelflow-home")
    monkeypatch.setenv("OTELFLOW_HOME", str(home))
    monkeypatch.setenv("OTELFLOW_LOGGING_TO_CONSOLE", "false")
    # Tests count exactly the records they log; the engine's lifecycle logs are tested on their own.
    monkeypatch.setenv("OTELFLOW_LOG_RUN_EVENTS", "false")
    reset_settings()
    yield home
    reset_settings()


@pytest.fixture
def captured() -> Iterator[CapturedTelemetry]:
    """otelflow's spans/logs/metrics for this test, in memory."""
    with capture_telemetry() as telemetry:
        yield telemetry


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, settings_env: Any) -> Iterator[str]:
    """The shared store (``OTELFLOW_STORE_URL``) on each backend: a sqlite file, then a throwaway redis-server."""
    from otelflow.stores import reset_stores
    from otelflow.stores.sqlite import sqlite_url

    url = str(request.getfixturevalue("redis_server")) if request.param == "redis" else sqlite_url(tmp_path / "s.db")
    if request.param == "redis":
        import redis

        redis.Redis.from_url(url).flushdb()  # the server is shared by the session: each test starts empty
    settings_env(STORE_URL=url)
    yield url
    reset_stores()


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Set OTELFLOW_* variables for one test: ``settings_env(RECORD_PARAMETER_VALUES="true")``."""

    def apply(**values: str) -> None:
        for key, value in values.items():
            monkeypatch.setenv(f"OTELFLOW_{key}", value)
        reset_settings()

    return apply


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a child Python process: no inherited OTEL_* settings, repo importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_") and k != "OTELFLOW_LOG_RUN_EVENTS"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), str(TESTS_DIR), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


PYTHON = sys.executable



@pytest.fixture(scope="module")
def ui_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose spool and store hold the `otelflow ui` scenarios (``ui_scenarios.SCENARIOS``), made once per
    module."""
    from ui_scenarios import make_spool

    home = tmp_path_factory.mktemp("ui-home")
    make_spool(home)
    return home


@pytest.fixture(scope="module")
def ui_url(ui_home: Path) -> Iterator[str]:
    """The `otelflow ui` page of ``ui_home``, served for the module."""
    from ui_server import serving

    with serving(ui_home) as base:
        yield base

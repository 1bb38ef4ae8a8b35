"""``otelflow.testing.utilities.otelflow_test_harness`` (Prefect's ``prefect_test_harness``) and the
``otelflow.testing`` package keeping its names where they were."""

from __future__ import annotations

import os
import subprocess
import textwrap
import uuid
from pathlib import Path

import pytest
from conftest import PYTHON, subprocess_env
from opentelemetry import trace

from otelflow import flow, get_run_logger, task
from otelflow._internal.spool.reader import read_spool
from otelflow.settings import get_settings
from otelflow.stores import get_store
from otelflow.testing import CapturedTelemetry, capture_telemetry
from otelflow.testing.utilities import otelflow_test_harness


@task
def double(x: int) -> int:
    get_run_logger().info("doubling %s", x)
    return 2 * x


@flow
def pipeline(x: int) -> int:
    return double(x)


@flow
async def apipeline(x: int) -> int:
    return await adouble(x)


@task
async def adouble(x: int) -> int:
    get_run_logger().info("doubling %s", x)
    return 2 * x


def span_names(home: Path) -> list[str]:
    return sorted({str(span["name"]) for _, span in read_spool(home / "spool", "traces")})


def log_bodies(home: Path) -> list[str]:
    return [str(record["body"]["stringValue"]) for _, record in read_spool(home / "spool", "logs")]


def test_the_old_names_are_importable_where_they_were() -> None:
    import otelflow.testing

    assert {"CapturedTelemetry", "capture_telemetry", "otelflow_telemetry"} <= set(otelflow.testing.__all__)
    for name in otelflow.testing.__all__:
        assert getattr(otelflow.testing, name) is not None
    assert Path(otelflow.testing.__file__).name == "__init__.py"


def test_settings_and_store_point_at_a_throwaway_home_and_are_restored(
    _isolated_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTELFLOW_STORE_URL", "redis://127.0.0.1:1/0")  # the application's shared store
    outer = get_settings()
    with otelflow_test_harness() as home:
        assert home.is_dir() and (home.stat().st_mode & 0o777) == 0o700
        settings = get_settings()
        assert settings is not outer and settings.home == home
        assert settings.store_url_or_default == f"sqlite:///{home / 'store.sqlite3'}"
        get_store().put("ns", "k", "v")
        assert (home / "store.sqlite3").exists()
    assert not home.exists()
    assert os.environ["OTELFLOW_HOME"] == str(_isolated_home)
    assert os.environ["OTELFLOW_STORE_URL"] == "redis://127.0.0.1:1/0"
    assert get_settings().home == _isolated_home and get_settings().store_url == "redis://127.0.0.1:1/0"


def test_a_variable_that_was_unset_is_unset_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTELFLOW_STORE_URL", raising=False)
    with otelflow_test_harness(server_startup_timeout=60):  # Prefect's argument is accepted
        assert "OTELFLOW_STORE_URL" in os.environ
    assert "OTELFLOW_STORE_URL" not in os.environ


def test_each_harness_starts_with_an_empty_store() -> None:
    key = uuid.uuid4().hex
    with otelflow_test_harness():
        get_store().put("ns", key, "first")
    with otelflow_test_harness():
        assert get_store().get("ns", key) is None
    assert get_store().get("ns", key) is None  # and the home outside never saw it


def test_nested_harnesses_restore_in_order() -> None:
    outer_home = get_settings().home
    with otelflow_test_harness() as first:
        with otelflow_test_harness() as second:
            assert get_settings().home == second != first
        assert get_settings().home == first
    assert get_settings().home == outer_home


def test_the_environment_is_restored_when_the_block_raises() -> None:
    outer_home = get_settings().home
    with pytest.raises(KeyError), otelflow_test_harness():
        raise KeyError("boom")
    assert get_settings().home == outer_home


def test_sync_and_async_runs_land_in_the_harness_spool_and_nowhere_else(_isolated_home: Path) -> None:
    import asyncio

    with otelflow_test_harness() as home:
        assert pipeline(2) == 4
        assert asyncio.run(apipeline(3)) == 6
        assert span_names(home) == ["flow apipeline", "flow pipeline", "task adouble", "task double"]
        assert sorted(log_bodies(home)) == ["doubling 2", "doubling 3"]
    assert not (_isolated_home / "spool").exists()


async def test_an_async_test_can_use_the_harness() -> None:
    with otelflow_test_harness() as home:
        assert await apipeline(5) == 10
        assert "flow apipeline" in span_names(home)


def test_capture_telemetry_works_inside_and_after_the_harness() -> None:
    global_provider = trace.get_tracer_provider()
    with otelflow_test_harness() as home:
        with capture_telemetry() as inside:
            pipeline(1)
        assert [s.name for s in inside.spans] == ["task double", "flow pipeline"]
        assert span_names(home) == []  # the innermost providers got it, as for nested capture blocks
        pipeline(1)
        assert span_names(home) == ["flow pipeline", "task double"]
    with capture_telemetry() as after:
        pipeline(1)
    assert [s.name for s in after.spans] == ["task double", "flow pipeline"]
    assert trace.get_tracer_provider() is global_provider  # OTel's process-global provider untouched


def test_a_capture_around_the_harness_gets_nothing_from_inside(captured: CapturedTelemetry) -> None:
    with otelflow_test_harness() as home:
        pipeline(1)
    pipeline(1)
    assert [s.name for s in captured.spans] == ["task double", "flow pipeline"]  # only the run after the harness
    assert not home.exists()


def test_with_the_sdk_disabled_nothing_is_written(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        from otelflow import flow
        from otelflow.testing.utilities import otelflow_test_harness

        @flow
        def pipeline():
            return 1

        with otelflow_test_harness() as home:
            assert pipeline() == 1
            print((home / "spool").exists())
        """
    )
    proc = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, timeout=60,
                          env=subprocess_env(OTEL_SDK_DISABLED="true", OTELFLOW_HOME=str(tmp_path / "home")))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"
    assert not (tmp_path / "home").exists()


def test_a_pytest_session_fixture_as_prefects_docs_show(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(
        """
        import pytest
        from otelflow.testing.utilities import otelflow_test_harness

        pytest_plugins = ["otelflow.testing"]

        @pytest.fixture(autouse=True, scope="session")
        def otelflow_test_fixture():
            with otelflow_test_harness():
                yield
        """
    ))
    (tmp_path / "test_user.py").write_text(textwrap.dedent(
        """
        import os
        from pathlib import Path

        from otelflow import flow, task
        from otelflow.settings import get_settings
        from otelflow.stores import get_store

        @task
        def extract():
            return [1, 2, 3]

        @flow
        def pipeline():
            return len(extract())

        def test_runs_in_the_harness():
            assert pipeline() == 3
            home = get_settings().home
            assert home.name.startswith("otelflow-test-") and home != Path(os.environ["USER_HOME"])
            assert any((home / "spool").glob("traces-*.jsonl"))
            get_store().put("ns", "k", "v")

        def test_shares_the_session_home():
            assert get_store().get("ns", "k") == "v"

        def test_capture_still_works(otelflow_telemetry):
            assert pipeline() == 3
            assert [s.name for s in otelflow_telemetry.spans] == ["task extract", "flow pipeline"]
        """
    ))
    user_home = tmp_path / "home"
    proc = subprocess.run(
        [PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
        env=subprocess_env(OTELFLOW_HOME=str(user_home), USER_HOME=str(user_home),
                           OTELFLOW_LOGGING_TO_CONSOLE="false"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 passed" in proc.stdout
    assert not user_home.exists()  # nothing was written to the user's otelflow home

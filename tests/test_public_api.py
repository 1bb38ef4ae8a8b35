"""Code written for Prefect's APIs runs after s/prefect/otelflow/: module paths, names and the seed examples."""

from __future__ import annotations

import importlib
import subprocess
import textwrap

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env

import otelflow
from otelflow import semconv as sc


@pytest.mark.parametrize(
    ("module", "names"),
    [
        ("otelflow", ["flow", "task", "get_run_logger", "tags", "Flow", "Task", "FlowRunContext", "TaskRunContext",
                      "unmapped", "allow_failure", "quote", "State"]),
        ("otelflow.context", ["ContextModel", "FlowRunContext", "TaskRunContext", "TagsContext", "SettingsContext",
                              "tags", "serialize_context", "hydrated_context", "get_run_context"]),
        ("otelflow.utilities.annotations", ["BaseAnnotation", "unmapped", "allow_failure", "quote", "Quote"]),
        ("otelflow.states", ["State", "Completed", "Failed", "Crashed", "Cancelled", "Pending", "Running",
                             "Retrying", "Paused", "StateType"]),
        ("otelflow.futures", ["PrefectFuture", "PrefectFutureList", "wait", "as_completed"]),
        ("otelflow.task_runners", ["ThreadPoolTaskRunner", "TaskRunner"]),
        ("otelflow.logging", ["get_run_logger", "get_logger"]),
    ],
)
def test_prefect_module_paths_exist(module, names):  # type: ignore[no-untyped-def]
    mod = importlib.import_module(module)
    missing = [n for n in names if not hasattr(mod, n)]
    assert not missing, f"{module} lacks {missing}"


def test_quote_alias_and_annotation_unwrap():  # type: ignore[no-untyped-def]
    from otelflow.utilities.annotations import BaseAnnotation, Quote, quote, unmapped

    assert Quote is quote
    assert unmapped([1, 2]).unwrap() == [1, 2]
    assert isinstance(quote("x"), BaseAnnotation)
    assert unmapped(5)[123] == 5  # indexable like a mapped iterable


def test_seed_context_examples_run_unchanged(captured, capsys):  # type: ignore[no-untyped-def]
    # The seed's example, with the helper tasks it calls but never defines.
    from otelflow import flow, tags, task
    from otelflow.context import FlowRunContext, TaskRunContext

    @task
    def analyze_data():  # type: ignore[no-untyped-def]
        context = TaskRunContext.get()
        if context:
            print(f"Task: {context.task.name}")
            print(f"Task Run ID: {context.task_run.id}")
        return "analysis complete"

    @flow
    def data_workflow():  # type: ignore[no-untyped-def]
        context = FlowRunContext.get()
        if context:
            print(f"Flow: {context.flow.name}")
            print(f"Flow Run ID: {context.flow_run.id}")
        with tags("critical", "production"):
            result1 = analyze_data()
            result2 = analyze_data()
        result3 = analyze_data()
        return [result1, result2, result3]

    assert data_workflow() == ["analysis complete"] * 3
    out = capsys.readouterr().out
    assert "Flow: data-workflow" in out and out.count("Task: analyze_data") == 3
    tagged = [dict(s.attributes).get(sc.TAGS) for s in captured.task_spans()]
    assert tagged == [("critical", "production"), ("critical", "production"), None]


def test_seed_mapping_example(captured):  # type: ignore[no-untyped-def]
    from otelflow import flow, task
    from otelflow.utilities.annotations import unmapped

    @task
    def process_item(item, config, multiplier):  # type: ignore[no-untyped-def]
        return item * config["factor"] * multiplier

    @flow
    def mapping_example():  # type: ignore[no-untyped-def]
        items = [1, 2, 3, 4, 5]
        config = {"factor": 10}
        multiplier = 2
        return process_item.map(items, unmapped(config), unmapped(multiplier))

    # Prefect 3: futures returned from a flow come back as their final states.
    states = mapping_example()
    assert [s.result() for s in states] == [20, 40, 60, 80, 100]
    assert len(captured.task_spans()) == 5


def test_settings_context_and_context_models():  # type: ignore[no-untyped-def]
    from otelflow.context import FlowRunContext, SettingsContext, TagsContext

    settings_ctx = SettingsContext.get()
    assert settings_ctx.profile.name == "default"
    assert settings_ctx.settings.record_parameter_values is False
    assert str(settings_ctx.settings.home) == settings_ctx.profile.settings["home"].as_posix()

    ctx = TagsContext({"a"})
    with ctx:
        assert TagsContext.get() is ctx
        with pytest.raises(RuntimeError, match="already entered"):
            ctx.__enter__()
    copy = ctx.model_copy(update={"current_tags": {"b"}})
    assert copy.current_tags == {"b"} and ctx.current_tags == {"a"}
    assert FlowRunContext().serialize()["flow"] is None


def test_version_and_cli_entry_points():  # type: ignore[no-untyped-def]
    assert otelflow.__version__
    proc = subprocess.run([PYTHON, "-m", "otelflow", "--help"], capture_output=True, text=True,
                          env=subprocess_env(), timeout=60)
    assert proc.returncode == 0 and "runs" in proc.stdout and "show" in proc.stdout


def test_users_pytest_plugin_captures_their_flows(tmp_path):  # type: ignore[no-untyped-def]
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["otelflow.testing"]\n')
    (tmp_path / "test_user.py").write_text(textwrap.dedent(
        """
        from otelflow import flow, task

        @task
        def extract():
            return [1, 2, 3]

        @flow
        def pipeline():
            return len(extract())

        def test_pipeline(otelflow_telemetry):
            assert pipeline() == 3
            assert [s.name for s in otelflow_telemetry.spans] == ["task extract", "flow pipeline"]
            assert otelflow_telemetry.spans[0].parent.span_id == otelflow_telemetry.spans[1].context.span_id

        def test_isolated(otelflow_telemetry):
            assert otelflow_telemetry.spans == []
        """
    ))
    proc = subprocess.run([PYTHON, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, cwd=tmp_path, env=subprocess_env(), timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout


def test_import_is_light():  # type: ignore[no-untyped-def]
    # Exporters, the SDK and pydantic-settings load on first run, not at import (import time is benchmarked).
    code = "import sys, otelflow; print(sorted(m for m in ('opentelemetry.sdk.trace', " \
           "'opentelemetry.exporter.otlp.proto.http', 'pydantic_settings', 'structlog', 'grpc') if m in sys.modules))"
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, env=subprocess_env(), timeout=60,
                          cwd=REPO_ROOT)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_the_version_is_written_once(captured):  # type: ignore[no-untyped-def]
    import importlib.metadata

    import otelflow
    from otelflow import flow

    @flow
    def versioned() -> None: ...

    versioned()
    (span,) = captured.flow_spans()
    assert importlib.metadata.version("otelflow") == otelflow.__version__
    assert span.instrumentation_scope.version == otelflow.__version__

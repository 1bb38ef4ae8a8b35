"""Artifacts (``otelflow.artifacts``): Prefect 3.9's API over otelflow's store, recorded in the trace.

Prefect's behaviours were checked against real Prefect 3.9.1 (ephemeral server): ids are UUIDs, keys are
lowercase letters, numbers and dashes (pydantic ``ValidationError`` "Artifact key must only contain lowercase
letters, numbers, and dashes."), link artifacts are markdown ``[text](link)``, tables are JSON text (NaN as null),
progress is clamped to 0..100 with two warnings, ``Artifact.get(key)`` is the latest version (an update makes a
version the latest), creating outside a run warns ``FutureWarning``, and in async code the sync names return
awaitables.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pydantic
import pytest
from click.testing import CliRunner
from conftest import PYTHON, REPO_ROOT, subprocess_env

from otelflow import flow, semconv, task
from otelflow.artifacts import (
    ARTIFACTS_NAMESPACE,
    LATEST_NAMESPACE,
    Artifact,
    ArtifactNotFound,
    acreate_image_artifact,
    acreate_link_artifact,
    acreate_markdown_artifact,
    acreate_progress_artifact,
    acreate_table_artifact,
    aupdate_progress_artifact,
    create_image_artifact,
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    list_artifacts,
    read_artifact,
    update_progress_artifact,
    versions_namespace,
)
from otelflow.context import FlowRunContext, TaskRunContext
from otelflow.stores import get_store
from otelflow.testing import CapturedTelemetry

KEY_MESSAGE = "Artifact key must only contain lowercase letters, numbers, and dashes."
OUTSIDE_MESSAGE = ("Artifact creation outside of a flow or task run is deprecated and will be removed in a later "
                   "version.")


def attrs(item: Any) -> dict[str, Any]:
    """Attributes of a span, span event or captured log record."""
    record = getattr(item, "log_record", item)
    return dict(record.attributes or {})


def artifact_events(span: Any, name: str = semconv.EVENT_ARTIFACT) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def artifact_logs(captured: CapturedTelemetry) -> list[Any]:
    return [log for log in captured.logs if semconv.ARTIFACT_ID in attrs(log)]


# --- Prefect's documented examples ------------------------------------------------------------------------


@task
def flag_irregular_data() -> uuid.UUID:
    return create_link_artifact(  # type: ignore[return-value]
        key="irregular-data",
        link="https://storage.example.com/my-bucket/highly_variable_data.csv",
        description="## Highly variable data",
    )


@task
def customers_to_call() -> uuid.UUID:
    rows = [
        {"customer_id": "12345", "name": "John Smith", "churn_probability": 0.85},
        {"customer_id": "56789", "name": "Jane Jones", "churn_probability": 0.65},
    ]
    return create_table_artifact(  # type: ignore[return-value]
        key="personalized-reachout", table=rows, description="# Please reach out to these customers today!"
    )


@flow
def sales_pipeline() -> dict[str, Any]:
    report = textwrap.dedent("""\
        # Sales Report

        ## Summary

        | Region | Revenue |
        |:-------|--------:|
        | North  | $1,250,000 |
        | South  | $980,000 |
        """)
    flow_run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
    return {
        "flow_run_id": flow_run_id,
        "markdown": create_markdown_artifact(key="gtm-report", markdown=report, description="Quarterly Sales Report"),
        "link": flag_irregular_data(),
        "table": customers_to_call(),
        "image": create_image_artifact(image_url="https://images.example.com/loss-curve.png",
                                       description="Training loss", key="loss-curve"),
    }


def test_prefect_doc_examples_store_artifacts_for_their_runs(captured: CapturedTelemetry) -> None:
    made = sales_pipeline()
    for name in ("markdown", "link", "table", "image"):
        assert isinstance(made[name], uuid.UUID)

    report = Artifact.get("gtm-report")
    assert report is not None and report.id == made["markdown"]
    assert (report.type, report.description) == ("markdown", "Quarterly Sales Report")
    assert report.data.startswith("# Sales Report\n") and report.flow_run_id == made["flow_run_id"]
    assert report.task_run_id is None and report.flow_name == "sales-pipeline"

    link = Artifact.get("irregular-data")
    assert link is not None and link.type == "markdown"  # Prefect stores links as markdown
    assert link.data == ("[https://storage.example.com/my-bucket/highly_variable_data.csv]"
                         "(https://storage.example.com/my-bucket/highly_variable_data.csv)")
    assert link.flow_run_id == made["flow_run_id"] and link.task_run_id is not None

    table = Artifact.get("personalized-reachout")
    assert table is not None and table.type == "table"
    assert json.loads(table.data)[0] == {"customer_id": "12345", "name": "John Smith", "churn_probability": 0.85}
    (task_span,) = captured.spans_named("task customers_to_call")
    assert str(table.task_run_id) == attrs(task_span)[semconv.RUN_ID]
    assert table.task_run_name == attrs(task_span)[semconv.RUN_NAME]
    assert table.trace_id == format(task_span.context.trace_id, "032x")
    assert table.span_id == format(task_span.context.span_id, "016x")

    image = Artifact.get("loss-curve")
    assert image is not None and (image.type, image.data) == ("image", "https://images.example.com/loss-curve.png")
    assert Artifact.get("not-there") is None


def test_link_text_and_generic_artifacts() -> None:
    @flow
    def links() -> Artifact:
        create_link_artifact("https://example.com/r.csv", link_text="the report", key="report-link")
        return Artifact(type="metrics", key="run-metrics", description="m", data={"rows": 3}).create()  # type: ignore[return-value]

    made = links()
    assert Artifact.get("report-link").data == "[the report](https://example.com/r.csv)"  # type: ignore[union-attr]
    assert isinstance(made, Artifact) and isinstance(made.id, uuid.UUID)
    stored = Artifact.get("run-metrics")
    assert stored is not None and stored.id == made.id
    assert (stored.type, stored.data) == ("metrics", '{"rows": 3}')  # Prefect stores json.dumps(data)


def test_get_or_create_and_latest_of_any_key() -> None:
    @flow
    def twice() -> tuple[bool, bool]:
        _, first = Artifact.get_or_create(key="settings", data=[1])  # type: ignore[misc]
        _, second = Artifact.get_or_create(key="settings", data=[2])  # type: ignore[misc]
        create_markdown_artifact("last")
        return first, second

    assert twice() == (True, False)
    assert Artifact.get("settings").data == "[1]"  # type: ignore[union-attr]
    latest = Artifact.get()
    assert latest is not None and latest.data == "last" and latest.key is None


# --- tables -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [
        [{"name": "a", "n": 1}, {"name": "b", "n": 2}],  # list of row dicts
        {"name": ["a", "b"], "n": [1, 2]},  # dict of column lists
        [["a", 1], ["b", 2]],  # list of row lists
    ],
    ids=["list-of-dicts", "dict-of-lists", "list-of-lists"],
)
def test_table_formats_are_stored_as_prefect_stores_them(table: Any) -> None:
    @flow
    def tabulate() -> None:
        create_table_artifact(table, key="shapes")

    tabulate()
    assert Artifact.get("shapes").data == json.dumps(table)  # type: ignore[union-attr]


def test_nan_cells_become_null() -> None:
    @flow
    def tabulate() -> None:
        create_table_artifact({"x": [1.0, float("nan")]}, key="nans")

    tabulate()
    assert Artifact.get("nans").data == '{"x": [1.0, null]}'  # type: ignore[union-attr]


@pytest.mark.parametrize("table", ["a string", 5, [1, 2], {"a": 1}])
def test_tables_of_other_shapes_are_refused_as_prefect_refuses_them(table: Any) -> None:
    with pytest.raises(pydantic.ValidationError, match="validation errors for TableArtifact"):
        create_table_artifact(table, key="bad", _sync=True)


# --- keys -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["Bad_Key", "UPPER", "a b", "x.y", "emoji-\N{ROCKET}", "tab\tkey", "line\n"])
def test_invalid_keys_raise_prefects_validation_error(key: str) -> None:
    with pytest.raises(pydantic.ValidationError) as raised:
        create_markdown_artifact("x", key=key, _sync=True)
    text = str(raised.value)
    assert text.startswith("1 validation error for MarkdownArtifact\nkey\n")
    assert f"Value error, {KEY_MESSAGE}" in text
    with pytest.raises(pydantic.ValidationError, match="1 validation error for LinkArtifact"):
        create_link_artifact("https://example.com", key=key, _sync=True)
    assert list_artifacts() == []  # nothing stored


@pytest.mark.parametrize("key", ["report", "a-1", "0", "2026-11-24-daily"])
def test_valid_keys(key: str) -> None:
    @flow
    def keyed() -> None:
        create_progress_artifact(1.0, key=key)

    keyed()
    assert Artifact.get(key).key == key  # type: ignore[union-attr]


def test_versions_of_a_key_latest_first_and_an_update_makes_one_latest() -> None:
    @flow
    def versions() -> tuple[uuid.UUID, uuid.UUID]:
        first = create_progress_artifact(10, key="load")
        second = create_progress_artifact(20, key="load")
        return first, second  # type: ignore[return-value]

    first, second = versions()
    assert [a.id for a in list_artifacts("load")] == [second, first]
    assert Artifact.get("load").id == second  # type: ignore[union-attr]
    update_progress_artifact(first, 90)  # Prefect: latest by update time
    assert Artifact.get("load").id == first  # type: ignore[union-attr]
    assert [a.id for a in list_artifacts("load")] == [first, second]


# --- progress ---------------------------------------------------------------------------------------------


@task
def fetch_batch(i: int) -> int:
    return i


def test_progress_example_updates_one_artifact(captured: CapturedTelemetry) -> None:
    @flow
    def batches() -> uuid.UUID:
        artifact_id = create_progress_artifact(progress=0.0, description="Indicates the progress of fetching data.")
        for i in range(1, 10):
            fetch_batch(i)
            assert update_progress_artifact(artifact_id=artifact_id, progress=i * 10) == artifact_id  # type: ignore[arg-type]
        return artifact_id  # type: ignore[return-value]

    artifact_id = batches()
    stored = read_artifact(artifact_id)
    assert stored is not None and (stored.type, stored.data) == ("progress", 90.0)
    assert stored.description == "Indicates the progress of fetching data."
    assert stored.updated is not None and stored.created is not None and stored.updated > stored.created
    (flow_span,) = captured.flow_spans()
    updates = artifact_events(flow_span, semconv.EVENT_ARTIFACT_UPDATED)
    assert [u[semconv.ARTIFACT_PROGRESS] for u in updates] == [float(i * 10) for i in range(1, 10)]
    assert {u[semconv.ARTIFACT_ID] for u in updates} == {str(artifact_id)}
    # updates log at DEBUG only (hundreds of them would drown the run's logs)
    assert [log.log_record.body for log in artifact_logs(captured)] == [f"Created progress artifact {artifact_id}"]


def test_progress_is_clamped_with_prefects_warnings_and_description_rules(captured: CapturedTelemetry) -> None:
    @flow
    def clamp() -> uuid.UUID:
        artifact_id = create_progress_artifact(-5, key="clamped", description="start")
        update_progress_artifact(artifact_id, 150, description="")  # "" keeps the description
        return artifact_id  # type: ignore[return-value]

    artifact_id = clamp()
    stored = read_artifact(artifact_id)
    assert stored is not None and (stored.data, stored.description) == (100.0, "start")
    bodies = [log.log_record.body for log in captured.logs]
    assert "ProgressArtifact received an invalid value, Progress: -5.0%" in bodies
    assert "Interpreting as 0.0% progress" in bodies
    assert "ProgressArtifact received an invalid value, Progress: 150.0%" in bodies
    assert "Interpreting as 100.0% progress" in bodies
    update_progress_artifact(artifact_id, 50, description="halfway")
    assert read_artifact(artifact_id).description == "halfway"  # type: ignore[union-attr]


def test_progress_must_be_a_number_and_updates_need_a_stored_id() -> None:
    with pytest.raises(pydantic.ValidationError, match="1 validation error for ProgressArtifact"):
        create_progress_artifact("abc", _sync=True)  # type: ignore[arg-type]
    with pytest.raises(ArtifactNotFound, match="not found in the store"):
        update_progress_artifact(uuid.uuid4(), 5, _sync=True)


# --- outside a run, subflows ------------------------------------------------------------------------------


def test_outside_a_run_it_works_with_prefects_future_warning(captured: CapturedTelemetry) -> None:
    with pytest.warns(FutureWarning, match="^" + OUTSIDE_MESSAGE.replace(".", r"\.") + "$") as warned:
        artifact_id = create_markdown_artifact("made by a script", key="script-note")
    assert warned[0].filename == __file__  # points at the caller
    stored = Artifact.get("script-note")
    assert stored is not None and stored.id == artifact_id
    assert (stored.flow_run_id, stored.task_run_id, stored.flow_name, stored.trace_id) == (None, None, None, None)
    assert artifact_logs(captured) == []  # no run: no run log record


def test_outside_a_run_the_event_goes_on_the_current_span(captured: CapturedTelemetry) -> None:
    tracer = captured.tracer_provider.get_tracer("app")
    with tracer.start_as_current_span("my span") as span, pytest.warns(FutureWarning):
        create_table_artifact([[1]], key="in-my-span")
    (event,) = artifact_events(captured.spans_named("my span")[0])
    assert event[semconv.ARTIFACT_KEY] == "in-my-span"
    assert Artifact.get("in-my-span").span_id == format(span.get_span_context().span_id, "016x")  # type: ignore[union-attr]


def test_a_subflow_called_in_a_task_owns_its_artifacts() -> None:
    @flow
    def child() -> uuid.UUID:
        create_markdown_artifact("child", key="child-note")
        return FlowRunContext.get().flow_run.id  # type: ignore[union-attr]

    @task
    def runs_child() -> uuid.UUID:
        return child()

    @flow
    def parent() -> uuid.UUID:
        return runs_child()  # type: ignore[return-value]

    child_run_id = parent()
    stored = Artifact.get("child-note")
    assert stored is not None and stored.flow_run_id == child_run_id and stored.task_run_id is None
    assert stored.flow_name == "child"


# --- async ------------------------------------------------------------------------------------------------


async def test_async_flow_and_task_await_the_same_names() -> None:
    @task
    async def atask() -> uuid.UUID:
        pending = create_table_artifact([{"a": 1}], key="async-table")
        assert asyncio.iscoroutine(pending)  # Prefect: in async code the sync names dispatch to the async ones
        artifact_id: uuid.UUID = await pending
        assert (TaskRunContext.get().task_run.id  # type: ignore[union-attr]
                == (await Artifact.get("async-table")).task_run_id)  # type: ignore[misc]
        return artifact_id

    @flow
    async def aflow() -> list[uuid.UUID]:
        ids = [await create_markdown_artifact("# async", key="async-md")]  # type: ignore[misc]
        ids.append(await atask())
        ids.append(await acreate_link_artifact("https://example.com", key="async-link"))
        ids.append(await acreate_markdown_artifact("x", key="async-md2"))
        ids.append(await acreate_table_artifact([[1]], key="async-t2"))
        ids.append(await acreate_image_artifact("https://example.com/i.png", key="async-img"))
        progress = await acreate_progress_artifact(5, key="async-progress")
        assert await aupdate_progress_artifact(progress, 60) == progress
        ids.append(create_markdown_artifact("forced sync", key="async-sync", _sync=True))  # type: ignore[arg-type]
        created = await Artifact(type="custom", key="async-custom", data=1).acreate()
        found, made = await Artifact.aget_or_create(key="async-custom")
        assert (found.id, made) == (created.id, False)
        return ids

    ids = await aflow()
    assert all(isinstance(i, uuid.UUID) for i in ids)
    stored = await Artifact.aget("async-progress")
    assert stored is not None and stored.data == 60.0
    flow_run_id = (await Artifact.aget("async-md")).flow_run_id  # type: ignore[union-attr]
    assert flow_run_id is not None and (await Artifact.aget("async-sync")).flow_run_id == flow_run_id  # type: ignore[union-attr]


async def test_outside_a_run_with_a_running_loop_the_sync_names_return_awaitables() -> None:
    pending = create_markdown_artifact("from a coroutine", key="loop-note")
    assert asyncio.iscoroutine(pending)
    with pytest.warns(FutureWarning):
        artifact_id = await pending
    found = Artifact.get("loop-note")
    assert asyncio.iscoroutine(found)
    assert (await found).id == artifact_id  # type: ignore[union-attr]


# --- telemetry --------------------------------------------------------------------------------------------


def test_span_event_and_run_log_record_carry_ids_not_data(captured: CapturedTelemetry) -> None:
    secret_markdown = "password=hunter2 and a 10k body " + "x" * 10_000
    description = "Loaded from postgresql://app:s3cret@db/prod " + "d" * 400

    @task
    def tabulate() -> uuid.UUID:
        return create_table_artifact([{"token": "tok-123"}], key="token-table")  # type: ignore[return-value]

    @flow
    def report() -> tuple[uuid.UUID, uuid.UUID]:
        return (create_markdown_artifact(secret_markdown, key="big-report", description=description),  # type: ignore[return-value]
                tabulate())

    markdown_id, table_id = report()
    (flow_span,) = captured.flow_spans()
    (task_span,) = captured.task_spans()
    (event,) = artifact_events(flow_span)
    assert event[semconv.ARTIFACT_ID] == str(markdown_id)
    assert (event[semconv.ARTIFACT_KEY], event[semconv.ARTIFACT_TYPE]) == ("big-report", "markdown")
    shown = event[semconv.ARTIFACT_DESCRIPTION]
    assert "s3cret" not in shown and "postgresql://app:***@db/prod" in shown
    assert len(shown) <= 256 and shown.endswith("chars]")
    (task_event,) = artifact_events(task_span)
    assert (task_event[semconv.ARTIFACT_ID], task_event[semconv.ARTIFACT_TYPE]) == (str(table_id), "table")
    assert semconv.ARTIFACT_DESCRIPTION not in task_event

    logs = artifact_logs(captured)
    assert [log.log_record.body for log in logs] == ["Created markdown artifact big-report",
                                                      "Created table artifact token-table"]
    flow_log, task_log = logs
    assert attrs(flow_log)[semconv.ARTIFACT_ID] == str(markdown_id)
    assert attrs(flow_log)[semconv.ARTIFACT_DESCRIPTION] == shown
    assert attrs(flow_log)[semconv.FLOW_RUN_ID] == attrs(flow_span)[semconv.RUN_ID]
    assert flow_log.log_record.severity_text == "INFO"
    assert (flow_log.log_record.trace_id, flow_log.log_record.span_id) == (flow_span.context.trace_id,
                                                                          flow_span.context.span_id)
    assert attrs(task_log)[semconv.ARTIFACT_KEY] == "token-table"
    assert attrs(task_log)[semconv.TASK_RUN_ID] == attrs(task_span)[semconv.RUN_ID]
    assert task_log.log_record.span_id == task_span.context.span_id
    everything = json.dumps([attrs(s) for s in captured.spans] + [artifact_events(s) for s in captured.spans]
                            + [attrs(log) for log in captured.logs]
                            + [str(log.log_record.body) for log in captured.logs])
    assert "hunter2" not in everything and "tok-123" not in everything and "x" * 100 not in everything


# --- the store --------------------------------------------------------------------------------------------


def test_data_over_the_input_limit_is_refused_and_nothing_is_stored(settings_env: Any) -> None:
    settings_env(INPUT_MAX_BYTES="2048")

    @flow
    def huge() -> None:
        create_markdown_artifact("x" * 5000, key="huge")

    with pytest.raises(ValueError, match=r"Artifact 'huge' is 5\d\d\d bytes of JSON with its data and description; "
                                         r"the limit is 2048 \(OTELFLOW_INPUT_MAX_BYTES\)"):
        huge()
    assert list_artifacts() == [] and Artifact.get("huge") is None


def test_record_layout_in_the_store(store_url: str) -> None:
    @flow
    def keyed() -> uuid.UUID:
        return create_table_artifact([[1, 2]], key="layout", description="d")  # type: ignore[return-value]

    artifact_id = keyed()
    store = get_store()
    record = json.loads(store.get(ARTIFACTS_NAMESPACE, str(artifact_id)) or "{}")
    assert {"id", "key", "type", "description", "data", "flow_run_id", "task_run_id", "trace_id", "span_id",
            "created", "updated"} <= set(record)
    assert (record["id"], record["key"], record["type"], record["data"]) == (str(artifact_id), "layout", "table",
                                                                           "[[1, 2]]")
    assert len(record["trace_id"]) == 32 and len(record["span_id"]) == 16
    assert store.get(LATEST_NAMESPACE, "layout") == str(artifact_id)
    assert [item.key for item in store.items(versions_namespace("layout"))] == [str(artifact_id)]


def test_damaged_records_are_skipped_not_fatal() -> None:
    store = get_store()
    store.put(ARTIFACTS_NAMESPACE, "junk", "not json")
    store.put(ARTIFACTS_NAMESPACE, "list", "[1, 2]")
    store.put(LATEST_NAMESPACE, "dangling", "junk")
    with pytest.warns(FutureWarning):
        good = create_markdown_artifact("ok", key="fine")
    assert [a.id for a in list_artifacts()] == [good]
    assert Artifact.get("dangling") is None and read_artifact("junk") is None


_MAKER = textwrap.dedent("""
    from otelflow import flow, telemetry
    from otelflow.artifacts import create_table_artifact

    @flow
    def nightly():
        return create_table_artifact({"day": ["mon", "tue"], "rows": [10, 12]}, key="nightly-rows",
                                     description="rows loaded")

    print(nightly(), flush=True)
    telemetry.flush()
""")
_READER = textwrap.dedent("""
    import json
    from otelflow.artifacts import Artifact

    found = Artifact.get("nightly-rows")
    print(json.dumps(found.model_dump(mode="json")))
""")


def test_a_second_process_reads_what_the_first_made(store_url: str, tmp_path: Path) -> None:
    def run(code: str, home: str) -> str:
        proc = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                              env=subprocess_env(OTELFLOW_STORE_URL=store_url, OTELFLOW_HOME=home,
                                                 OTELFLOW_LOGGING_TO_CONSOLE="false"))
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    made = run(_MAKER, str(tmp_path / "maker"))
    read = json.loads(run(_READER, str(tmp_path / "reader")))  # another home: only the store is shared
    assert read["id"] == made and read["key"] == "nightly-rows" and read["type"] == "table"
    assert json.loads(read["data"]) == {"day": ["mon", "tue"], "rows": [10, 12]}
    assert read["flow_name"] == "nightly" and read["flow_run_id"] and read["trace_id"]
    assert Artifact.get("nightly-rows").id == uuid.UUID(made)  # type: ignore[union-attr]  # and this process


def test_importing_artifacts_loads_neither_rich_nor_the_stores() -> None:
    code = ("import sys, otelflow.artifacts; "
            "print(sorted(m for m in ('rich', 'click', 'otelflow.stores', 'redis') if m in sys.modules))")
    out = subprocess.run([PYTHON, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60,
                         env=subprocess_env())
    assert out.stdout.strip() == "[]", out.stderr


# --- the CLI: otelflow artifacts ----------------------------------------------------------------------------


def _cli(*args: str) -> Any:
    from otelflow._internal.cli.artifacts import artifact_group

    return CliRunner().invoke(artifact_group, list(args), catch_exceptions=False)


@pytest.fixture
def made() -> dict[str, uuid.UUID]:
    """A flow run's artifacts, of every type, one key with two versions."""

    @task
    def tabulate() -> uuid.UUID:
        return create_table_artifact({"region": ["north", "south"], "revenue": [1250, 980]},  # type: ignore[return-value]
                                     key="revenue", description="Revenue by region")

    @flow
    def quarterly() -> dict[str, uuid.UUID]:
        ids: dict[str, Any] = {"old-report": create_markdown_artifact("# Q1", key="report")}
        ids["report"] = create_markdown_artifact("# Q2\n\n**up** 12%", key="report", description="Quarterly")
        ids["revenue"] = tabulate()
        ids["progress"] = create_progress_artifact(0.0)
        update_progress_artifact(ids["progress"], 25)
        ids["link"] = create_link_artifact("https://example.com/q2.csv", link_text="raw data", key="q2-data")
        ids["image"] = create_image_artifact("https://example.com/q2.png", key="q2-chart")
        return ids

    @flow
    def other() -> None:
        create_markdown_artifact("other", key="other-note")

    ids = quarterly()
    other()
    return ids


def test_cli_ls_lists_newest_first_and_filters(made: dict[str, uuid.UUID]) -> None:
    result = _cli("ls")
    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == ["UPDATED", "KEY", "TYPE", "FLOW", "RUN", "DESCRIPTION", "ID"]
    keys = [line.split()[2] for line in lines[1:-1]]
    assert keys == ["other-note", "q2-chart", "q2-data", "-", "revenue", "report", "report"]
    assert lines[-1].startswith("7 artifacts in sqlite:///")
    assert str(made["progress"]) in result.output and "Revenue by region" in result.output

    versions = _cli("ls", "--key", "report", "--json")
    assert [json.loads(line)["id"] for line in versions.output.splitlines()] == [str(made["report"]),
                                                                              str(made["old-report"])]
    assert "data" not in json.loads(versions.output.splitlines()[0])
    flow_only = _cli("ls", "--flow", "other", "--json")
    assert [json.loads(line)["key"] for line in flow_only.output.splitlines()] == ["other-note"]
    none = _cli("ls", "--flow", "missing")
    assert none.exit_code == 0 and "No artifacts match these filters (7 in" in none.output


def test_cli_show_renders_each_type(made: dict[str, uuid.UUID]) -> None:
    report = _cli("show", "report")
    assert report.exit_code == 0
    assert "version 2 of 2; otelflow artifacts ls --key report" in report.output
    assert "Q2" in report.output and "up 12%" in report.output and "**" not in report.output  # rendered markdown
    assert "flow run     quarterly / " in report.output and "trace " in report.output

    table = _cli("show", "revenue").output
    assert "region" in table and "revenue" in table and "north" in table and "1250" in table and "│" in table
    assert "task run     tabulate-" in table

    progress = _cli("show", str(made["progress"])[:8]).output  # a unique id prefix
    assert "██████████░░░░░░░░░░░░░░░░░░░░░░░░░░░░░░ 25%" in progress
    assert "raw data (https://example.com/q2.csv)" in _cli("show", "q2-data").output  # piped: the URL is shown
    assert "image https://example.com/q2.png" in _cli("show", "q2-chart").output

    old = _cli("show", str(made["old-report"])).output
    assert "version 1 of 2" in old and "Q1" in old
    as_json = json.loads(_cli("show", "revenue", "--json").output)
    assert as_json["id"] == str(made["revenue"]) and json.loads(as_json["data"])["region"] == ["north", "south"]
    assert as_json["versions"] == 1

    missing = _cli("show", "nope")
    assert missing.exit_code == 1 and "no artifact with key or id 'nope'" in missing.output


def test_cli_on_an_empty_home_creates_nothing(_isolated_home: Path) -> None:
    result = _cli("ls")
    assert result.exit_code == 0 and result.output.startswith("No artifacts in sqlite:///")
    assert _cli("show", "anything").exit_code == 1
    assert not (_isolated_home / "store.sqlite3").exists()


def test_cli_escapes_control_characters_from_the_store() -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J\u202e"

    @flow
    def sneaky() -> None:
        create_markdown_artifact(f"# Title{hostile}\n\nline two{hostile}\r\n\r\nline three", key="hostile-md",
                                 description=f"desc{hostile}")
        create_table_artifact([{f"col{hostile}": f"cell{hostile}"}], key="hostile-table")

    sneaky()
    # a record written to the shared store by someone else, bypassing the API (its key is not even valid)
    forged = {"id": str(uuid.uuid4()), "key": f"forged{hostile}", "type": f"markdown{hostile}", "data": hostile,
              "description": hostile, "flow_name": f"flow{hostile}", "flow_run_name": hostile}
    get_store().put(ARTIFACTS_NAMESPACE, forged["id"], json.dumps(forged))
    outputs = [_cli("ls").output, _cli("show", "hostile-md").output, _cli("show", "hostile-table").output,
               _cli("show", forged["id"]).output, _cli("ls", "--json").output]
    for output in outputs:
        assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output and "\r" not in output
    assert "\\x1b]0;pwned\\x07\\x1b[2J\\u202e" in outputs[0]
    md = outputs[1]
    assert "line two\\x1b]0;pwned" in md and "\nline three" in md  # line breaks kept, the rest escaped
    assert "cell\\x1b]0;pwned" in outputs[2] and "forged\\x1b" in outputs[3]


# --- otelflow show ----------------------------------------------------------------------------------------

_SPOOL_SCRIPT = textwrap.dedent("""
    from otelflow import flow, task, telemetry
    from otelflow.artifacts import create_markdown_artifact, create_table_artifact

    @task
    def tabulate():
        create_table_artifact([{"a": 1}], key="task-table", description="from the task")

    @flow
    def spooled():
        create_markdown_artifact("# hi", key="flow-note")
        create_markdown_artifact("no key here")
        tabulate()

    spooled()
    telemetry.flush()
""")


@pytest.mark.slow
def test_otelflow_show_lists_each_runs_artifacts(tmp_path: Path) -> None:
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOGGING_TO_CONSOLE="false")
    proc = subprocess.run([PYTHON, "-c", _SPOOL_SCRIPT], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr

    def otelflow(*args: str) -> str:
        out = subprocess.run([PYTHON, "-m", "otelflow", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=120, env=env)
        assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
        return out.stdout

    text = otelflow("show")
    lines = text.splitlines()
    flow_line = next(i for i, line in enumerate(lines) if line.startswith("flow spooled"))
    task_line = next(i for i, line in enumerate(lines) if "task tabulate" in line)
    assert lines[flow_line + 1].strip() == "artifact markdown  flow-note"
    assert lines[flow_line + 2].strip().startswith("artifact markdown  id=")
    assert lines[task_line + 1].strip() == "artifact table  task-table"

    spans = json.loads(otelflow("show", "--json"))["spans"]
    by_name = {s["name"]: s for s in spans}
    assert [a["key"] for a in by_name["flow spooled"]["artifacts"]] == ["flow-note", None]
    (task_artifact,) = by_name["task tabulate"]["artifacts"]
    assert (task_artifact["key"], task_artifact["type"], task_artifact["description"]) == (
        "task-table", "table", "from the task")
    stored = subprocess.run([PYTHON, "-c", "from otelflow.artifacts import Artifact; "
                             "print(Artifact.get('task-table').id)"], cwd=REPO_ROOT, capture_output=True, text=True,
                            timeout=60, env=env)
    assert stored.stdout.strip() == task_artifact["id"]


def test_module_has_prefects_public_names() -> None:
    import otelflow.artifacts as ours

    prefect_names = {
        "Artifact", "ImageArtifact", "LinkArtifact", "MarkdownArtifact", "ProgressArtifact", "TableArtifact",
        "acreate_image_artifact", "acreate_link_artifact", "acreate_markdown_artifact", "acreate_progress_artifact",
        "acreate_table_artifact", "aupdate_progress_artifact", "create_image_artifact", "create_link_artifact",
        "create_markdown_artifact", "create_progress_artifact", "create_table_artifact", "update_progress_artifact",
    }
    assert prefect_names <= set(ours.__all__)
    assert all(getattr(ours, name).__doc__ for name in ours.__all__ if not name.isupper())
    assert sys.modules["otelflow.artifacts"] is ours

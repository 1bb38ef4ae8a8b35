"""pause_flow_run / resume_flow_run / suspend_flow_run on the shared store, and the `otelflow input` CLI."""

from __future__ import annotations

import json
import subprocess
import textwrap
import threading
import time
import uuid
from typing import Any

import pydantic
import pytest
from click.testing import CliRunner
from conftest import PYTHON, subprocess_env

from otelflow import flow, semconv
from otelflow.context import FlowRunContext
from otelflow.flow_runs import FlowPauseTimeout, NotPausedError, pause_flow_run, resume_flow_run, suspend_flow_run
from otelflow.input import FlowRunInputExists, InvalidRunInput, RunInput, read_flow_run_input
from otelflow.input.cli import input_group
from otelflow.testing import CapturedTelemetry


class Approval(RunInput):
    approved: bool
    comments: str = ""


class Score(pydantic.BaseModel):
    value: int = pydantic.Field(ge=0, le=10)


def resume_when_paused(flow_run_id: uuid.UUID | str, run_input: Any = None, timeout: float = 30) -> None:
    """Resume as soon as the run is paused (resume_flow_run raises NotPausedError before that)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            resume_flow_run(flow_run_id, run_input=run_input)
            return
        except NotPausedError:
            assert time.monotonic() < deadline, "the flow run never paused"
            time.sleep(0.02)  # bounded by the deadline above


def in_thread(fn: Any, *args: Any) -> threading.Thread:
    thread = threading.Thread(target=fn, args=args)
    thread.start()
    return thread


_PAUSING_FLOW = textwrap.dedent("""
    from otelflow import flow
    from otelflow.context import FlowRunContext
    from otelflow.flow_runs import pause_flow_run
    from otelflow.input import RunInput

    class Approval(RunInput):
        approved: bool
        comments: str = ""

    @flow
    def publish(doc_id: str) -> str:
        print(FlowRunContext.get().flow_run.id, flush=True)
        approval = pause_flow_run(wait_for_input=Approval, timeout=60, poll_interval=30)
        return f"{doc_id}:{approval.approved}:{approval.comments}:{approval.metadata.key}"

    print(publish("doc-7"), flush=True)
""")


def test_pause_in_one_process_resume_with_input_from_another(store_url: str) -> None:
    child = subprocess.Popen([PYTHON, "-c", _PAUSING_FLOW], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=subprocess_env(OTELFLOW_STORE_URL=store_url, OTELFLOW_LOGGING_TO_CONSOLE="false"))
    try:
        assert child.stdout is not None
        flow_run_id = uuid.UUID(child.stdout.readline().strip())
        deadline = time.monotonic() + 30
        while read_flow_run_input("paused-1-schema", flow_run_id) is None:
            assert time.monotonic() < deadline and child.poll() is None, "the flow never stored its input schema"
            time.sleep(0.02)  # bounded by the deadline above
        schema = read_flow_run_input("paused-1-schema", flow_run_id)
        assert schema["required"] == ["approved"]
        with pytest.raises(ValueError, match=r"missing required fields \['approved'\]"):
            resume_flow_run(flow_run_id, run_input={"comments": "no decision"})
        with pytest.raises(ValueError, match="must be a JSON boolean"):
            resume_flow_run(flow_run_id, run_input={"approved": "yes"})
        with pytest.raises(ValueError, match="waiting for input"):
            resume_flow_run(flow_run_id)
        resume_when_paused(flow_run_id, {"approved": True, "comments": "ship it"})
        with pytest.raises(NotPausedError):
            resume_flow_run(flow_run_id, {"approved": False})
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert out.strip() == "doc-7:True:ship it:paused-1-response"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


def test_pause_without_input_and_paused_events(store_url: str, captured: CapturedTelemetry) -> None:
    errors: list[BaseException] = []

    def resume_with_unexpected_input_then_plainly(run_id: uuid.UUID) -> None:
        try:
            resume_when_paused(run_id, {"unexpected": 1})
        except ValueError as exc:
            errors.append(exc)
        resume_flow_run(run_id)

    @flow
    def waits() -> str:
        run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
        thread = in_thread(resume_when_paused, run_id)
        assert pause_flow_run(timeout=30) is None
        thread.join()
        thread = in_thread(resume_with_unexpected_input_then_plainly, run_id)
        assert pause_flow_run(timeout=30, key="second") is None
        thread.join()
        return "resumed"

    assert waits() == "resumed"
    assert len(errors) == 1 and "without waiting for input" in str(errors[0])
    (span,) = captured.flow_spans()
    names = [e.name for e in span.events]
    assert names.count(semconv.EVENT_PAUSED) == 2 and names.count(semconv.EVENT_RESUMED) == 2
    paused = [e for e in span.events if e.name == semconv.EVENT_PAUSED]
    assert [(e.attributes or {})[semconv.PAUSE_KEY] for e in paused] == ["1", "second"]


def test_pause_timeout_fails_and_a_late_resume_is_refused(store_url: str) -> None:
    run_ids: list[uuid.UUID] = []

    @flow
    def times_out() -> None:
        run_ids.append(FlowRunContext.get().flow_run.id)  # type: ignore[union-attr]
        pause_flow_run(wait_for_input=Approval, timeout=0.3)

    started = time.monotonic()
    with pytest.raises(FlowPauseTimeout, match="never resumed"):
        times_out()
    assert time.monotonic() - started < 10
    with pytest.raises(FlowPauseTimeout, match="can no longer be resumed"):
        resume_flow_run(run_ids[0], run_input={"approved": True})


def test_input_that_fails_the_model_is_a_clear_error_in_the_flow(store_url: str) -> None:
    @flow
    def scored() -> int:
        run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
        thread = in_thread(resume_when_paused, run_id, {"value": 99})
        try:
            return int(pause_flow_run(wait_for_input=Score, timeout=30).value)
        finally:
            thread.join()

    with pytest.raises(InvalidRunInput, match=r"paused-1-response.*less than or equal to 10"):
        scored()


def test_plain_type_input_and_a_second_resume_loses(store_url: str) -> None:
    @flow
    def number() -> int:
        run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
        thread = in_thread(resume_when_paused, run_id, {"n": 5})
        try:
            return int(pause_flow_run(wait_for_input=dict[str, int], timeout=30)["n"])
        finally:
            thread.join()
            with pytest.raises((FlowRunInputExists, NotPausedError)):
                resume_flow_run(run_id, {"n": 6})

    assert number() == 5


def test_errors_outside_a_flow_and_for_unknown_runs(store_url: str) -> None:
    with pytest.raises(RuntimeError, match="from within a flow run"):
        pause_flow_run(timeout=1)
    with pytest.raises(NotPausedError):
        resume_flow_run(uuid.uuid4())

    @flow
    def suspends_other() -> None:
        suspend_flow_run(flow_run_id=uuid.uuid4())

    with pytest.raises(RuntimeError, match="cannot suspend another flow run"):
        suspends_other()


def test_suspend_waits_like_pause(store_url: str) -> None:
    @flow
    def suspended() -> bool:
        run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
        thread = in_thread(resume_when_paused, run_id, {"approved": True})
        try:
            return bool(suspend_flow_run(wait_for_input=Approval).approved)
        finally:
            thread.join()

    assert suspended() is True


def test_cli_send_list_and_resume(store_url: str) -> None:
    runner = CliRunner()
    run_id = str(uuid.uuid4())
    sent = runner.invoke(input_group, ["send", run_id, "--key-prefix", "approval", "--sender", "ops",
                                       '{"decision": "approved"}'])
    assert sent.exit_code == 0, sent.output
    assert sent.output.strip().startswith("approval-")
    listed = runner.invoke(input_group, ["list", run_id])
    assert listed.exit_code == 0 and "approval-" in listed.output and "ops" in listed.output
    assert '{"decision":"approved"}' in listed.output
    as_json = runner.invoke(input_group, ["list", run_id, "--json"])
    assert json.loads(as_json.output.splitlines()[0])["value"] == {"decision": "approved"}
    bad = runner.invoke(input_group, ["send", run_id, "{not json"])
    assert bad.exit_code != 0 and "not valid JSON" in bad.output
    dup = runner.invoke(input_group, ["send", run_id, "--key", "fixed", "1"])
    again = runner.invoke(input_group, ["send", run_id, "--key", "fixed", "2"])
    assert dup.exit_code == 0 and again.exit_code != 0 and "write-once" in again.output
    not_paused = runner.invoke(input_group, ["resume", run_id])
    assert not_paused.exit_code != 0 and "isn't paused" in not_paused.output


def test_cli_as_a_real_process(store_url: str) -> None:
    run_id = str(uuid.uuid4())
    env = subprocess_env(OTELFLOW_STORE_URL=store_url)
    otelflow = [PYTHON, "-m", "otelflow", "input"]
    sent = subprocess.run([*otelflow, "send", run_id, "--key-prefix", "approval", '{"decision": "ok"}'],
                          capture_output=True, text=True, env=env, timeout=60)
    assert sent.returncode == 0, sent.stderr
    listed = subprocess.run([*otelflow, "list", run_id], capture_output=True, text=True, env=env, timeout=60)
    assert sent.stdout.strip() in listed.stdout and '{"decision":"ok"}' in listed.stdout

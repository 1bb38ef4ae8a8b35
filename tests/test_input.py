"""Flow run input against both real stores: a waiting flow in one process, the sender in another."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pydantic
import pytest
from conftest import PYTHON, subprocess_env

from otelflow import flow, semconv
from otelflow.context import FlowRunContext
from otelflow.input import (
    FlowRunInputExists,
    GetInputHandler,
    InvalidRunInput,
    Keyset,
    RunInput,
    RunInputMetadata,
    create_flow_run_input,
    delete_flow_run_input,
    filter_flow_run_input,
    keyset_from_base_key,
    read_flow_run_input,
    receive_input,
    send_input,
)
from otelflow.stores import reset_stores
from otelflow.testing import CapturedTelemetry


class Approval(RunInput):
    decision: str
    comments: str = ""


class Point(pydantic.BaseModel):
    x: int
    y: int


_WAITING_FLOW = textwrap.dedent("""
    import sys
    from otelflow import flow
    from otelflow.context import FlowRunContext
    from otelflow.input import receive_input

    @flow
    def approval_workflow(document_id: str) -> str:
        print(FlowRunContext.get().flow_run.id, flush=True)
        approval_input = receive_input(input_type=dict, timeout=float(sys.argv[1]), key_prefix="approval")
        approval = approval_input.get("decision")
        comments = approval_input.get("comments", "")
        return f"{approval}|{comments}"

    print(approval_workflow("doc-1"), flush=True)
""")


def test_flow_in_one_process_waits_for_input_sent_from_another(store_url: str) -> None:
    child = subprocess.Popen([PYTHON, "-c", _WAITING_FLOW, "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=subprocess_env(OTELFLOW_STORE_URL=store_url,
                                                           OTELFLOW_LOGGING_TO_CONSOLE="false"))
    try:
        assert child.stdout is not None
        flow_run_id = uuid.UUID(child.stdout.readline().strip())

        async def send_approval() -> None:  # the seed's sender, verbatim apart from the ids
            await send_input(
                run_input={"decision": "approved", "comments": "Looks good, approved for publication"},
                flow_run_id=flow_run_id,
                sender="manager@company.com",
                key_prefix="approval",
            )

        asyncio.run(send_approval())
        out, err = child.communicate(timeout=60)
        assert child.returncode == 0, err
        assert out.strip() == "approved|Looks good, approved for publication"
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(30)


def test_a_flow_that_times_out_gets_the_defaults(store_url: str) -> None:
    out = subprocess.run([PYTHON, "-c", _WAITING_FLOW, "0.3"], capture_output=True, text=True, timeout=60,
                         env=subprocess_env(OTELFLOW_STORE_URL=store_url, OTELFLOW_LOGGING_TO_CONSOLE="false"))
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "None|"


def _later(delay: float, fn: Any, *args: Any, **kwargs: Any) -> threading.Timer:
    timer = threading.Timer(delay, fn, args, kwargs)
    timer.start()
    return timer


def test_timeout_without_and_with_raise_timeout_error(store_url: str) -> None:
    run_id = uuid.uuid4()
    quiet = receive_input(dict, timeout=0.2, key_prefix="nothing", flow_run_id=run_id)
    started = time.monotonic()
    assert quiet.get("decision", "default") == "default"
    assert 0.2 <= time.monotonic() - started < 5
    assert quiet.keys() == set()
    with pytest.raises(KeyError, match="no input"):
        quiet["decision"]
    assert list(receive_input(dict, timeout=0.1, key_prefix="nothing", flow_run_id=run_id)) == []
    with pytest.raises(TimeoutError):
        receive_input(dict, timeout=0.1, key_prefix="nothing", flow_run_id=run_id).next()
    strict = receive_input(dict, timeout=0.1, raise_timeout_error=True, key_prefix="nothing", flow_run_id=run_id)
    with pytest.raises(TimeoutError, match="key prefix 'nothing'"):
        strict.get("decision")
    with pytest.raises(TimeoutError):
        list(receive_input(dict, timeout=0.1, raise_timeout_error=True, key_prefix="nothing", flow_run_id=run_id))


def test_waiting_wakes_when_input_arrives_not_at_the_poll_interval(store_url: str) -> None:
    run_id = uuid.uuid4()
    handler = receive_input(dict, timeout=30, poll_interval=30, key_prefix="wake", flow_run_id=run_id)
    timer = _later(0.2, send_input, {"go": True}, run_id, key_prefix="wake")
    started = time.monotonic()
    assert handler.get("go") is True
    assert time.monotonic() - started < 5  # far below the 30 s poll interval
    timer.join()


def test_iteration_yields_each_input_once_in_order_with_metadata(store_url: str) -> None:
    run_id = uuid.uuid4()
    for n in range(3):
        send_input({"n": n}, run_id, sender=f"sender-{n}", key_prefix="steps")
    send_input({"n": 99}, run_id, key_prefix="other")
    seen = list(receive_input(dict, timeout=0.2, key_prefix="steps", flow_run_id=run_id, with_metadata=True))
    assert [item.value for item in seen] == [{"n": 0}, {"n": 1}, {"n": 2}]
    meta = seen[0].metadata
    assert isinstance(meta, RunInputMetadata)
    assert meta.sender == "sender-0" and meta.receiver == run_id and meta.key.startswith("steps-")
    plain = list(receive_input(dict, timeout=0.1, key_prefix="steps", flow_run_id=run_id,
                               exclude_keys={seen[0].metadata.key}))
    assert plain == [{"n": 1}, {"n": 2}]


def test_typed_inputs_run_input_pydantic_model_and_plain_types(store_url: str) -> None:
    run_id = uuid.uuid4()
    send_input(Approval(decision="approved"), run_id, sender="boss")
    approval = receive_input(Approval, timeout=1, flow_run_id=run_id).next()
    assert isinstance(approval, Approval) and approval.decision == "approved"
    assert approval.metadata.sender == "boss" and approval.metadata.key.startswith("approval-auto-")

    send_input(Point(x=1, y=2), run_id)
    point = receive_input(Point, timeout=1, flow_run_id=run_id).next()
    assert isinstance(point, Point) and (point.x, point.y) == (1, 2)

    send_input(42, run_id)
    assert receive_input(int, timeout=1, flow_run_id=run_id).next() == 42

    other_run = uuid.uuid4()  # key prefixes match like str.startswith: "approval" would also see "approval-auto-*"
    handler = receive_input(Approval, timeout=1, key_prefix="approval", flow_run_id=other_run)
    send_input({"decision": "rejected", "comments": "typo"}, other_run, key_prefix="approval")
    assert handler.get("decision") == "rejected" and handler["comments"] == "typo"
    assert handler.keys() == {"decision", "comments"}


def test_invalid_input_is_a_clear_error_naming_key_and_sender(store_url: str) -> None:
    run_id = uuid.uuid4()
    sent = send_input({"decision": 3, "extra": 1}, run_id, sender="mallory", key_prefix="approval").record
    handler = receive_input(Approval, timeout=1, key_prefix="approval", flow_run_id=run_id)
    with pytest.raises(InvalidRunInput) as info:
        handler.next()
    message = str(info.value)
    assert sent.key in message and "mallory" in message and "decision" in message and "extra" in message
    # Not dropped silently, and not in the way: the next valid input comes through.
    send_input({"decision": "approved"}, run_id, sender="alice", key_prefix="approval")
    assert handler.next().decision == "approved"
    with pytest.raises(InvalidRunInput, match="not a valid int"):
        send_input("seven", run_id, key_prefix="number")
        receive_input(int, timeout=1, key_prefix="number", flow_run_id=run_id).next()


def test_inputs_are_write_once_json_only_and_size_limited(store_url: str, settings_env: Any) -> None:
    run_id = uuid.uuid4()
    record = create_flow_run_input(run_id, "answer", {"v": 1}, sender="alice")  # the seed's positional order
    assert record.key == "answer" and record.value == {"v": 1} and record.sender == "alice"
    with pytest.raises(FlowRunInputExists, match=r"alice.*write-once"):
        create_flow_run_input("answer", {"v": 2}, flow_run_id=run_id, sender="mallory")
    assert read_flow_run_input("answer", flow_run_id=run_id) == {"v": 1}
    with pytest.raises(TypeError, match="must be JSON data"):
        send_input(object(), run_id)
    with pytest.raises(ValueError, match="Invalid flow run input key"):
        create_flow_run_input("bad key with spaces", 1, flow_run_id=run_id)
    settings_env(INPUT_MAX_BYTES="1024")
    with pytest.raises(ValueError, match=r"limit is 1024.*OTELFLOW_INPUT_MAX_BYTES"):
        send_input({"blob": "x" * 2000}, run_id)
    delete_flow_run_input("answer", flow_run_id=run_id)
    assert read_flow_run_input("answer", flow_run_id=run_id) is None
    assert [r.key for r in filter_flow_run_input("", limit=None, flow_run_id=run_id)] == []


def test_receiving_inside_a_flow_pauses_the_run_and_records_events(store_url: str, captured: CapturedTelemetry
                                                                   ) -> None:
    states: list[str] = []

    @flow
    def waiting() -> str:
        run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]

        def send() -> None:
            deadline = time.monotonic() + 10
            while not states and time.monotonic() < deadline:  # send once the run was seen Paused
                time.sleep(0.01)  # bounded by the deadline
            send_input({"decision": "approved", "secret_token": "t0p"}, run_id, sender="manager@company.com",
                       key_prefix="approval")

        ctx = FlowRunContext.get()
        assert ctx is not None and ctx.flow_run is not None
        timer = threading.Timer(0.3, send)
        timer.start()
        handler = receive_input(dict, timeout=30, key_prefix="approval")
        watcher = threading.Thread(target=lambda: _record_state(ctx, states))
        watcher.start()
        decision = handler.get("decision")
        watcher.join()
        timer.join()
        states.append(ctx.flow_run.state.name if ctx.flow_run.state else "")
        return str(decision)

    assert waiting() == "approved"
    assert "Paused" in states and states[-1] == "Running"
    (span,) = captured.flow_spans()
    names = [e.name for e in span.events]
    assert semconv.EVENT_PAUSED in names and semconv.EVENT_RESUMED in names
    assert names.index(semconv.EVENT_PAUSED) < names.index(semconv.EVENT_RESUMED)
    (received,) = [e for e in span.events if e.name == semconv.EVENT_INPUT_RECEIVED]
    attrs = dict(received.attributes or {})
    assert attrs[semconv.RUN_INPUT_SENDER] == "manager@company.com"
    assert str(attrs[semconv.RUN_INPUT_KEY]).startswith("approval-")
    assert semconv.RUN_INPUT_VALUE not in attrs  # values only when parameter values are opted in


def _record_state(ctx: FlowRunContext, states: list[str]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        state = ctx.flow_run.state if ctx.flow_run else None
        if state is not None and state.name == "Paused":
            states.append("Paused")
            return
        time.sleep(0.005)  # sampling the state of another thread; bounded by the deadline


def test_input_values_are_recorded_only_when_opted_in_and_redacted(store_url: str, settings_env: Any,
                                                                   captured: CapturedTelemetry) -> None:
    settings_env(RECORD_PARAMETER_VALUES="true")

    @flow
    def receiver() -> str:
        run_id = FlowRunContext.get().flow_run.id  # type: ignore[union-attr]
        send_input({"decision": "ok", "api_token": "t0p-secret"}, run_id, key_prefix="approval")
        return str(receive_input(dict, timeout=5, key_prefix="approval").get("decision"))

    assert receiver() == "ok"
    (span,) = captured.flow_spans()
    (received,) = [e for e in span.events if e.name == semconv.EVENT_INPUT_RECEIVED]
    value = str((received.attributes or {})[semconv.RUN_INPUT_VALUE])
    assert '"decision":"ok"' in value and "t0p-secret" not in value and "REDACTED" in value


def test_receive_outside_a_flow_needs_a_flow_run_id() -> None:
    with pytest.raises(RuntimeError, match="flow run ID"):
        receive_input(dict)
    with pytest.raises(ValueError, match="not a flow run id"):
        receive_input(dict, flow_run_id="nope")


def test_keyset_is_a_set_of_keys_with_roles() -> None:
    keyset = keyset_from_base_key("paused-1")
    assert "paused-1-response" in keyset and "paused-2-response" not in keyset
    assert keyset["schema"] == "paused-1-schema"
    assert keyset == {"description": "paused-1-description", "response": "paused-1-response",
                      "schema": "paused-1-schema"}
    plain = Keyset({"a", "b"})
    assert "a" in plain and plain.keys == {"a", "b"}
    assert isinstance(receive_input(dict, timeout=0, flow_run_id=uuid.uuid4()), GetInputHandler)


def _redis_on(port: int, workdir: str) -> subprocess.Popen[bytes]:
    from redis_server import start_redis_on

    return start_redis_on(port, workdir, "--appendonly", "no")


def test_a_waiting_receiver_survives_a_redis_restart(redis_server: str, settings_env: Any, tmp_path: Path) -> None:
    from redis_server import _free_port

    port = _free_port()
    url = f"redis://127.0.0.1:{port}/0"
    settings_env(STORE_URL=url)
    run_id = uuid.uuid4()
    server = _redis_on(port, str(tmp_path))
    results: list[Any] = []
    try:
        handler = receive_input(dict, timeout=30, poll_interval=1, key_prefix="approval", flow_run_id=run_id)
        waiter = threading.Thread(target=lambda: results.append(handler.get("decision")))
        waiter.start()
        time.sleep(0.3)  # the receiver is in its wait
        server.terminate()
        server.wait(10)
        time.sleep(0.5)  # an outage while it waits
        server = _redis_on(port, str(tmp_path))
        send_input({"decision": "approved"}, run_id, key_prefix="approval")
        waiter.join(30)
        assert results == ["approved"]
    finally:
        reset_stores()
        server.terminate()
        server.wait(10)


def test_an_unreachable_store_fails_the_wait_at_once(redis_server: str, settings_env: Any) -> None:
    from redis_server import _free_port

    from otelflow.stores import StoreUnavailable

    settings_env(STORE_URL=f"redis://:pw-secret@127.0.0.1:{_free_port()}/0")
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as info:
            receive_input(dict, timeout=30, flow_run_id=uuid.uuid4()).get("x")
        assert time.monotonic() - started < 10 and "pw-secret" not in str(info.value)
    finally:
        reset_stores()

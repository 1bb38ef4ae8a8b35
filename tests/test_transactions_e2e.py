"""Transactions in real flows, real processes and a real redis-server: the seed's example end to end,
two processes contending for one key, a SIGKILLed lock holder, and Redis dying mid-transaction."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import tempfile
import textwrap
import time
import uuid
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env

from otelflow import flow, semconv, task
from otelflow.stores import StoreUnavailable, get_store, reset_stores
from otelflow.testing import CapturedTelemetry
from otelflow.transactions import IsolationLevel, Transaction, atransaction

log: list[Any] = []


@pytest.fixture(autouse=True)
def _fresh_log() -> None:
    log.clear()


@task
def update_database(data: str) -> str:
    log.append(f"update {data}")
    return f"Updated: {data}"


@update_database.on_rollback
def undo_update(txn: Transaction) -> None:
    log.append(f"undo {txn.key}")


@task
def send_notification(message: str) -> str:
    log.append("notify")
    if "fail" in message:
        raise RuntimeError("SMTP is down")
    return f"Sent: {message}"


@flow
def transactional_workflow(data: str, key: str) -> dict[str, Any]:
    try:
        with Transaction(key=key, timeout=300) as txn:
            update_result = update_database(data)
            notification_result = send_notification(f"Data updated: {data}")
            return {"update": update_result, "notification": notification_result, "transaction_id": txn.key}
    except Exception as e:
        return {"error": str(e), "status": "rolled_back"}


def test_seed_example_commits_replays_and_rolls_back(store_url: str, captured: CapturedTelemetry) -> None:
    key = f"data-update-{uuid.uuid4().hex[:8]}"
    first = transactional_workflow("a", key)
    assert first == {"update": "Updated: a", "notification": "Sent: Data updated: a", "transaction_id": key}
    assert log == ["update a", "notify"]

    log.clear()
    assert transactional_workflow("a", key) == first  # idempotent: recorded results, no task function ran
    assert log == []
    cached = [s for s in captured.task_spans() if (s.attributes or {}).get(semconv.TASK_CACHED)]
    assert len(cached) == 2

    log.clear()
    failed_key = f"fail-{uuid.uuid4().hex[:8]}"
    assert transactional_workflow("fail", failed_key) == {"error": "SMTP is down", "status": "rolled_back"}
    assert log == ["update fail", "notify", f"undo {failed_key}"]
    assert get_store(store_url).get("txn", failed_key) is None


def test_task_spans_are_children_of_the_transaction_span(store_url: str, captured: CapturedTelemetry) -> None:
    key = f"spans-{uuid.uuid4().hex[:8]}"
    transactional_workflow("b", key)
    (flow_span,) = captured.flow_spans()
    (txn_span,) = captured.spans_named(semconv.transaction_span_name(key))
    assert txn_span.parent is not None and txn_span.parent.span_id == flow_span.context.span_id
    tasks = captured.task_spans()
    assert len(tasks) == 2
    for span in tasks:
        assert span.parent is not None and span.parent.span_id == txn_span.context.span_id
        assert (span.attributes or {})[semconv.TRANSACTION_KEY] == key
    assert (txn_span.attributes or {})[semconv.TRANSACTION_OUTCOME] == "committed"


def test_async_flow_with_async_transaction(store_url: str) -> None:
    key = f"async-{uuid.uuid4().hex[:8]}"

    @flow
    async def async_workflow() -> str:
        async with atransaction(key=key) as txn:
            update_database("x")
            return str(txn.key)

    result: Any = asyncio.run(async_workflow())
    assert result == key
    assert get_store(store_url).get("txn", key) is not None


_CONTENDER = textwrap.dedent("""
    import sys, time
    from otelflow import flow, task
    from otelflow.transactions import Transaction, IsolationLevel

    @task
    def work(who: str) -> str:
        print("working", who, flush=True)
        return who

    @flow
    def contender(key: str, who: str, hold: float) -> None:
        with Transaction(key=key, isolation_level=IsolationLevel.SERIALIZABLE) as txn:
            print("entered", who, "cached" if txn.is_committed else "fresh", flush=True)
            result = work(who)
            print("result", result, flush=True)
            if hold:
                sys.stdin.readline()  # hold the lock until the test says so

    contender(sys.argv[1], sys.argv[2], float(sys.argv[3]))
    print("done", sys.argv[2], flush=True)
""")


def _spawn(code: str, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen([PYTHON, "-c", code, *args], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, f"child exited early: {proc.stderr.read() if proc.stderr else ''}"
    return line.strip()


def test_two_processes_contending_for_one_key_are_serialized(store_url: str) -> None:
    key = f"contended-{uuid.uuid4().hex[:8]}"
    env = subprocess_env(OTELFLOW_STORE_URL=store_url, OTELFLOW_LOGGING_TO_CONSOLE="false")
    first = _spawn(_CONTENDER, key, "first", "1", env=env)
    try:
        assert _line(first) == "entered first fresh"
        assert _line(first) == "working first"
        assert _line(first) == "result first"
        second = _spawn(_CONTENDER, key, "second", "0", env=env)
        # The second blocks on the lock: it cannot have entered while the first holds it.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            assert second.poll() is None
            time.sleep(0.05)  # observing that nothing happens for a while is the point here
        assert get_store(store_url).lock_holder(f"txn:{key}") is not None
        assert first.stdin is not None
        first.stdin.write("\n")
        first.stdin.flush()
        assert _line(first) == "done first"
        # Serialized: the second starts after the first committed, sees the key committed, and replays.
        assert _line(second) == "entered second cached"
        assert _line(second) == "result first"
        assert _line(second) == "done second"
        assert second.wait(30) == 0
    finally:
        for proc in (first,):
            if proc.poll() is None:
                proc.kill()
        first.wait(30)


def test_a_sigkilled_holder_frees_the_key_when_its_lease_expires(store_url: str, settings_env: Any) -> None:
    key = f"killed-{uuid.uuid4().hex[:8]}"
    lease = 1.0
    env = subprocess_env(OTELFLOW_STORE_URL=store_url, OTELFLOW_LOGGING_TO_CONSOLE="false",
                         OTELFLOW_LOCK_LEASE_SECONDS=str(lease))
    holder = _spawn(_CONTENDER, key, "doomed", "1", env=env)
    try:
        assert _line(holder) == "entered doomed fresh"
        assert _line(holder) == "working doomed"
        # The lease keeper renews the lock while the holder lives: it outlives its first lease.
        time.sleep(lease * 1.5)  # longer than one lease, to show the renewal keeps the lock
        assert get_store(store_url).lock_holder(f"txn:{key}") is not None
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(30)
        killed_at = time.monotonic()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(30)
    settings_env(LOCK_WAIT_SECONDS="20")
    with Transaction(key=key, isolation_level=IsolationLevel.SERIALIZABLE) as txn:
        waited = time.monotonic() - killed_at
        assert not txn.is_committed  # the killed holder committed nothing
        update_database("after")
    assert waited <= lease + 2.0, f"waited {waited:.2f}s for a {lease}s lease"
    assert get_store(store_url).get("txn", key) is not None


def _start_persistent_redis(workdir: str, port: int) -> subprocess.Popen[bytes]:
    from redis_server import start_redis_on

    return start_redis_on(port, workdir, "--appendonly", "yes", "--appendfsync", "always", password="s3cret-pw")


def test_redis_stopped_mid_transaction_rolls_back_and_writes_nothing(redis_server: str, settings_env: Any) -> None:
    from redis_server import _free_port

    port = _free_port()
    url = f"redis://:s3cret-pw@127.0.0.1:{port}/0"
    settings_env(STORE_URL=url)
    key, other = f"dying-{uuid.uuid4().hex[:8]}", f"kept-{uuid.uuid4().hex[:8]}"
    log.clear()
    with tempfile.TemporaryDirectory(prefix="otelflow-redis-aof-") as workdir:
        server = _start_persistent_redis(workdir, port)
        try:
            with Transaction(key=other):
                update_database("kept")
            txn = Transaction(key=key)
            with pytest.raises(StoreUnavailable) as info, txn:
                update_database("lost")
                server.terminate()  # Redis goes away in the middle of the transaction
                server.wait(10)
            assert txn.is_rolled_back
            assert log[-1] == f"undo {key}"
            message = str(info.value)
            assert "s3cret-pw" not in message and "unreachable" in message and f"127.0.0.1:{port}" in message
            reset_stores()
            server = _start_persistent_redis(workdir, port)  # same data directory: the AOF is replayed
            store = get_store(url)
            assert store.get("txn", other) is not None  # persistence works...
            assert store.get("txn", key) is None  # ...and the dying transaction left nothing behind
        finally:
            reset_stores()
            server.terminate()
            server.wait(10)


@task
def square(x: int) -> int:
    log.append(f"square {x}")
    return x * x


@square.on_rollback
def undo_square(txn: Transaction) -> None:
    log.append("undo square")


def test_mapped_tasks_in_a_transaction_replay_by_map_index(store_url: str) -> None:
    key = f"mapped-{uuid.uuid4().hex[:8]}"

    @flow
    def squares() -> list[int]:
        with Transaction(key=key):
            return [f.result() for f in square.map([1, 2, 3, 4])]

    assert squares() == [1, 4, 9, 16]
    assert sorted(log) == ["square 1", "square 2", "square 3", "square 4"]
    log.clear()
    assert squares() == [1, 4, 9, 16]
    assert log == []


def test_timeout_in_a_flow_rolls_back_completed_tasks(store_url: str) -> None:
    key = f"slow-{uuid.uuid4().hex[:8]}"
    from otelflow.transactions import TransactionTimeout

    @task
    def slow(x: int) -> int:
        time.sleep(0.2)  # the work itself overruns the transaction's timeout
        return x

    @flow
    def overruns() -> None:
        with Transaction(key=key, timeout=0.1):
            square(2)
            slow(1)
            square(3)  # never starts: the timeout is checked when a task starts

    with pytest.raises(TransactionTimeout, match=r"timeout of 0\.1s"):
        overruns()
    assert log == ["square 2", "undo square"]
    assert get_store(store_url).get("txn", key) is None

"""Transactions against both real stores: hooks, idempotent keys, nesting, timeouts, telemetry.

The engine calls ``txn.task_begin`` / ``txn.task_completed`` around each task run; these tests drive
the same two calls directly (``run``), so they pin the transaction rules independently of the engine.
End-to-end runs with real ``@flow``/``@task`` are in ``test_transactions_e2e.py``.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pydantic
import pytest
from opentelemetry import trace

from otelflow import semconv, task
from otelflow.context import TaskRun
from otelflow.stores import LockTimeout, get_store
from otelflow.testing import CapturedTelemetry
from otelflow.transactions import (
    CommitMode,
    IsolationLevel,
    SerializationError,
    Transaction,
    TransactionContext,
    TransactionState,
    TransactionTimeout,
    get_transaction,
    transaction,
)

calls: list[str] = []


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    calls.clear()


def key() -> str:
    return f"k-{uuid.uuid4().hex[:12]}"


def run(txn: Transaction, t: Any, *args: Any, map_index: int | None = None) -> Any:
    """What the engine does for one task run inside a transaction."""
    task_run = TaskRun(id=uuid.uuid4(), name=f"{t.name}-run", task_name=t.name, map_index=map_index)
    hit, value = txn.task_begin(t, task_run)
    if hit:
        return value
    result = t.fn(*args)
    txn.task_completed(t, task_run, result)
    return result


def record(url: str, k: str) -> dict[str, Any] | None:
    text = get_store(url).get("txn", k)
    return None if text is None else json.loads(text)


class Row(pydantic.BaseModel):
    id: int
    name: str


@task
def update(data: str) -> str:
    calls.append(f"update {data}")
    return f"Updated: {data}"


@update.on_rollback
def undo_update(txn: Transaction) -> None:
    calls.append(f"undo update {txn.key}")


@update.on_commit
def commit_update(txn: Transaction) -> None:
    calls.append("commit update")


@task
def notify(message: str) -> str:
    calls.append(f"notify {message}")
    return f"Sent: {message}"


@notify.on_rollback
def undo_notify(txn: Transaction) -> None:
    calls.append("undo notify")


@task
def make_row(i: int) -> Row:
    calls.append(f"row {i}")
    return Row(id=i, name=f"r{i}")


@task
def untyped_row(i: int):  # type: ignore[no-untyped-def]
    calls.append(f"untyped {i}")
    return Row(id=i, name="u")


@task
def not_json() -> object:
    return object()


@task
def broken_undo() -> int:
    return 1


@broken_undo.on_rollback
def explode(txn: Transaction) -> None:
    calls.append("explode")
    raise RuntimeError("undo failed")


def test_commit_writes_the_record_and_a_rerun_replays_it(store_url: str) -> None:
    k = key()
    with Transaction(key=k, timeout=300) as txn:
        assert get_transaction() is txn and TransactionContext.get() is txn and Transaction.get() is txn
        assert run(txn, update, "a") == "Updated: a"
        assert run(txn, notify, "done") == "Sent: done"
        assert run(txn, update, "b") == "Updated: b"
    assert txn.is_committed and txn.is_committed() and not txn.is_rolled_back
    assert calls == ["update a", "notify done", "update b", "commit update", "commit update"]
    saved = record(store_url, k)
    assert saved is not None and set(saved["tasks"]) == {"update#1", "notify#1", "update#2"}
    assert get_transaction() is None

    calls.clear()
    with Transaction(key=k) as again:
        assert again.is_committed  # started committed: a cache hit
        assert run(again, update, "a") == "Updated: a"
        assert run(again, notify, "done") == "Sent: done"
        assert run(again, update, "b") == "Updated: b"
    assert calls == []  # no task function ran, no hooks ran

    with Transaction(key=k, overwrite=True) as forced:
        assert not forced.is_committed
        run(forced, update, "c")
    assert calls == ["update c", "commit update"]
    assert set(record(store_url, k)["tasks"]) == {"update#1"}  # type: ignore[index]


def test_exception_rolls_back_hooks_in_reverse_and_reraises(store_url: str) -> None:
    k = key()
    with pytest.raises(ValueError, match="notification failed"), Transaction(key=k) as txn:
        run(txn, update, "a")
        run(txn, notify, "x")
        run(txn, update, "b")
        raise ValueError("notification failed")
    assert txn.is_rolled_back and not txn.is_committed
    assert calls[3:] == [f"undo update {k}", "undo notify", f"undo update {k}"]
    assert record(store_url, k) is None


def test_failing_rollback_hook_is_recorded_and_the_others_still_run(store_url: str, captured: CapturedTelemetry
                                                                    ) -> None:
    k = key()
    with pytest.raises(KeyError), Transaction(key=k) as txn:
        run(txn, update, "a")
        run(txn, broken_undo)
        raise KeyError("boom")
    assert calls == ["update a", "explode", f"undo update {k}"]
    (span,) = captured.spans_named(semconv.transaction_span_name(k))
    failed = [e for e in span.events if e.name == semconv.EVENT_TRANSACTION_HOOK_FAILED]
    assert len(failed) == 1 and failed[0].attributes is not None
    assert failed[0].attributes[semconv.TRANSACTION_HOOK_NAME] == "explode"
    assert failed[0].attributes[semconv.EXCEPTION_MESSAGE] == "undo failed"
    assert span.attributes is not None and span.attributes[semconv.TRANSACTION_OUTCOME] == "rolled_back"
    assert span.status.status_code.name == "ERROR"


def test_failing_commit_hook_rolls_back_writes_nothing_and_raises(store_url: str) -> None:
    k = key()

    def bad_commit(txn: Transaction) -> None:
        raise RuntimeError("commit hook failed")

    with pytest.raises(RuntimeError, match="commit hook failed"), Transaction(key=k) as txn:
        run(txn, update, "a")
        txn.on_commit_hooks.append(bad_commit)
    assert txn.is_rolled_back
    assert calls == ["update a", "commit update", f"undo update {k}"]
    assert record(store_url, k) is None


def test_result_that_is_not_json_is_a_clear_error_at_commit(store_url: str) -> None:
    k = key()
    with pytest.raises(SerializationError, match=r"not_json.*cannot be stored as JSON.*pydantic model"), \
            Transaction(key=k) as txn:
        run(txn, update, "a")
        run(txn, not_json)  # the task itself succeeds; the commit refuses
    assert txn.is_rolled_back
    assert calls[-1] == f"undo update {k}"
    assert record(store_url, k) is None


def test_pydantic_results_replay_as_models(store_url: str) -> None:
    k = key()
    with Transaction(key=k) as txn:
        assert run(txn, make_row, 1) == Row(id=1, name="r1")
        assert run(txn, untyped_row, 2) == Row(id=2, name="u")
    assert record(store_url, k)["tasks"]["make_row#1"]["json"] == {"id": 1, "name": "r1"}  # type: ignore[index]
    calls.clear()
    with Transaction(key=k) as again:
        assert run(again, make_row, 1) == Row(id=1, name="r1")  # by the return annotation
        assert run(again, untyped_row, 2) == Row(id=2, name="u")  # by the recorded model name
    assert calls == []


def test_mapped_calls_are_matched_by_map_index(store_url: str) -> None:
    k = key()
    with Transaction(key=k) as txn:
        for i in (2, 0, 1):
            run(txn, update, f"m{i}", map_index=i)
    calls.clear()
    with Transaction(key=k) as again:
        assert [run(again, update, f"m{i}", map_index=i) for i in (0, 1, 2)] == ["Updated: m0", "Updated: m1",
                                                                                 "Updated: m2"]
    assert calls == []


def test_child_commits_with_its_parent(store_url: str) -> None:
    parent_key, child_key = key(), key()
    with Transaction(key=parent_key) as parent:
        with Transaction(key=child_key) as child:
            assert get_transaction() is child and child.get_parent() is parent
            run(child, update, "child")
        assert record(store_url, child_key) is None  # LAZY: waits for the parent
        assert not child.is_committed and get_transaction() is parent
        run(parent, notify, "parent")
    assert parent.is_committed and child.is_committed
    assert record(store_url, child_key) is not None and record(store_url, parent_key) is not None
    assert calls == ["update child", "notify parent", "commit update"]


def test_eager_child_commits_at_its_own_exit(store_url: str) -> None:
    child_key = key()
    with Transaction(key=key()), Transaction(key=child_key, commit_mode=CommitMode.EAGER) as child:
        run(child, update, "x")
    assert record(store_url, child_key) is not None


def test_rolled_back_child_rolls_back_its_parent_even_when_caught(store_url: str) -> None:
    parent_key = key()
    with Transaction(key=parent_key) as parent:
        run(parent, notify, "first")
        try:
            with Transaction(key=key()) as child:
                run(child, update, "child")
                raise ValueError("child failed")
        except ValueError:
            pass
        assert child.is_rolled_back and parent.is_rolled_back
    assert calls == ["notify first", "update child", f"undo update {child.key}", "undo notify"]
    assert record(store_url, parent_key) is None


def test_commit_mode_off_rolls_back_unless_committed(store_url: str) -> None:
    k = key()
    with Transaction(key=k, commit_mode=CommitMode.OFF) as txn:
        run(txn, update, "x")
    assert txn.is_rolled_back and record(store_url, k) is None
    with Transaction(key=k, commit_mode=CommitMode.OFF) as txn2:
        run(txn2, update, "y")
        assert txn2.commit() is True
    assert txn2.is_committed and record(store_url, k) is not None


def test_values_fall_back_to_the_parent_and_are_copies(store_url: str) -> None:
    with transaction() as parent:
        parent.set("rows", [1, 2])
        with transaction() as child:
            assert child.get("rows") == [1, 2]
            child.get("rows").append(3)
            assert child.get("rows") == [1, 2]
            assert child.get("missing", "default") == "default"
            with pytest.raises(ValueError, match="unknown key"):
                child.get("missing")


def test_manual_control_as_in_the_seed(store_url: str) -> None:
    k = key()
    txn = Transaction(key=k)
    try:
        txn.__enter__()
        run(txn, update, "batch1")
        run(txn, update, "batch2")
        txn.commit()
    finally:
        if not (txn.is_committed or txn.is_rolled_back):
            txn.__exit__(None, None, None)
    assert txn.is_committed and record(store_url, k) is not None
    assert get_transaction() is None  # committed by hand: no longer current although __exit__ never ran
    assert not trace.get_current_span().get_span_context().is_valid  # nor is its span

    txn2 = Transaction(key=key())
    txn2.__enter__()
    run(txn2, update, "c")
    assert txn2.rollback() is True
    assert txn2.is_rolled_back and calls[-1] == f"undo update {txn2.key}"
    assert get_transaction() is None
    assert not trace.get_current_span().get_span_context().is_valid


def test_timeout_rolls_back_with_a_clear_error(store_url: str) -> None:
    import time

    k = key()
    with pytest.raises(TransactionTimeout, match=r"timeout of 0\.05s"), Transaction(key=k, timeout=0.05) as txn:
        run(txn, update, "a")
        time.sleep(0.1)  # the work overruns the transaction's timeout
        run(txn, update, "b")
    assert calls == ["update a", f"undo update {k}"]
    with pytest.raises(TransactionTimeout), Transaction(key=k, timeout=0.05) as txn2:
        run(txn2, update, "c")
        time.sleep(0.1)
    assert txn2.is_rolled_back and record(store_url, k) is None


def test_serializable_waits_for_the_lock_and_bounds_the_wait(store_url: str, settings_env: Any) -> None:
    settings_env(LOCK_WAIT_SECONDS="0.2")
    k = key()
    store = get_store(store_url)
    assert store.try_lock(f"txn:{k}", "someone-else", 30)
    with pytest.raises(LockTimeout, match="someone-else"), \
            Transaction(key=k, isolation_level=IsolationLevel.SERIALIZABLE):
        pass  # pragma: no cover - never entered
    store.release_lock(f"txn:{k}", "someone-else")
    with Transaction(key=k, isolation_level=IsolationLevel.SERIALIZABLE) as txn:
        assert store.lock_holder(f"txn:{k}") == txn._holder
        run(txn, update, "x")
    assert store.lock_holder(f"txn:{k}") is None
    assert record(store_url, k) is not None


def test_empty_transaction_is_recorded_once(store_url: str) -> None:
    k = key()
    with transaction(key=k) as txn:
        pass
    assert txn.is_committed and record(store_url, k) is not None
    with transaction(key=k) as again:
        pass
    assert again.is_committed and again._wrote is False


def test_span_is_a_child_of_the_current_span_with_outcome_and_events(store_url: str, captured: CapturedTelemetry
                                                                     ) -> None:
    from otelflow.telemetry import get_tracer

    k = key()
    with get_tracer().start_as_current_span("outer") as outer, transaction(key=k) as txn:
        run(txn, update, "x")
    (span,) = captured.spans_named(semconv.transaction_span_name(k))
    assert span.parent is not None and span.parent.span_id == outer.get_span_context().span_id
    assert span.attributes is not None
    assert span.attributes[semconv.TRANSACTION_KEY] == k
    assert span.attributes[semconv.TRANSACTION_OUTCOME] == "committed"
    assert span.attributes[semconv.STORE_BACKEND] in ("sqlite", "redis")
    assert [e.name for e in span.events] == [semconv.EVENT_TRANSACTION_COMMIT]
    with transaction(key=k):
        pass
    cached = captured.spans_named(semconv.transaction_span_name(k))[-1]
    assert cached.attributes is not None and cached.attributes[semconv.TRANSACTION_OUTCOME] == "cached"


def test_state_machine_names(store_url: str) -> None:
    txn = Transaction()
    assert txn.is_pending and txn.state is TransactionState.PENDING
    with txn:
        assert txn.is_active
        run(txn, update, "x")
        assert txn.is_staged
    assert txn.is_committed


def test_bad_arguments_are_clear() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Transaction(key="")
    with pytest.raises(ValueError, match="timeout must be > 0"):
        Transaction(timeout=0)

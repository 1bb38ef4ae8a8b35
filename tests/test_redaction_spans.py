"""Exception text on spans carries no secrets, with default settings (issue 25).

A DSN in an exception message used to be exported verbatim in the span status, the ``exception`` event (message
and stack trace), the retry event, hook events and transaction events. What the caller gets back (the state's
message, the exception) keeps it: only the exported copy is masked.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from otelflow import flow, semconv, task
from otelflow.context import TaskRun
from otelflow.states import Failed
from otelflow.testing import CapturedTelemetry
from otelflow.transactions import Transaction

DSN = "postgresql://app:pw-9/z@q@db:5432/prod"
MASKED = "postgresql://app:***@db:5432/prod"
SECRETS = ("pw-9", "z@q")


def everything_exported(span: Any) -> str:
    parts = [str(span.status.description), str(dict(span.attributes or {}))]
    parts.extend(f"{event.name} {dict(event.attributes or {})}" for event in span.events)
    return "\n".join(parts)


def events(span: Any, name: str) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def test_a_failing_task_exports_its_error_without_the_dsn_password(captured: CapturedTelemetry) -> None:
    @task(retries=1)
    def query() -> None:
        raise ConnectionError(f"could not connect to {DSN}")

    states: list[Any] = []

    @flow
    def pipeline() -> None:
        states.append(query(return_state=True))

    pipeline()
    assert DSN in (states[0].message or "")  # the state is Prefect's, untouched
    (span,) = captured.spans_named("task query")
    assert span.status.description == (
        f"Task run encountered an exception ConnectionError: could not connect to {MASKED}")
    (exception,) = events(span, "exception")
    assert exception[semconv.EXCEPTION_MESSAGE] == f"could not connect to {MASKED}"
    assert str(exception[semconv.EXCEPTION_STACKTRACE]).endswith(f"ConnectionError: could not connect to {MASKED}\n")
    (retry,) = events(span, semconv.EVENT_RETRY)
    assert retry[semconv.EXCEPTION_MESSAGE] == f"could not connect to {MASKED}"
    for span in captured.spans:
        assert not any(secret in everything_exported(span) for secret in SECRETS), everything_exported(span)


def test_a_failed_state_message_is_masked_in_the_status(captured: CapturedTelemetry) -> None:
    @task
    def check() -> Any:
        return Failed(message=f"health check of {DSN} failed")

    states: list[Any] = []

    @flow
    def pipeline() -> None:
        states.append(check(return_state=True))

    pipeline()
    assert states[0].message == f"health check of {DSN} failed"
    (span,) = captured.spans_named("task check")
    assert span.status.description == f"health check of {MASKED} failed"


def test_a_failing_hook_is_recorded_without_the_secret(captured: CapturedTelemetry) -> None:
    def notify(flow: Any, flow_run: Any, state: Any) -> None:
        raise RuntimeError(f"webhook https://hooks.example/x?token=pw-9 refused, db {DSN}")

    @flow(on_completion=[notify])
    def pipeline() -> int:
        return 1

    assert pipeline() == 1
    (span,) = captured.flow_spans()
    (hook,) = events(span, semconv.EVENT_HOOK)
    assert hook[semconv.HOOK_OUTCOME] == "failed"
    assert hook[semconv.EXCEPTION_MESSAGE] == f"webhook https://hooks.example/x?token=*** refused, db {MASKED}"


@task
def write(row: str) -> str:
    return row


@write.on_rollback
def broken_undo(txn: Transaction) -> None:
    raise RuntimeError(f"undo failed on {DSN}")


def test_transaction_events_and_status_are_masked(captured: CapturedTelemetry) -> None:
    key = f"k-{uuid.uuid4().hex[:12]}"
    with pytest.raises(ValueError, match="pw-9"), Transaction(key=key) as txn:
        task_run = TaskRun(id=uuid.uuid4(), name="write-run", task_name=write.name)
        txn.task_begin(write, task_run)
        txn.task_completed(write, task_run, write.fn("a"))
        raise ValueError(f"bad row for {DSN}")
    (span,) = captured.spans_named(semconv.transaction_span_name(key))
    assert span.status.description == f"ValueError: bad row for {MASKED}"
    (failed,) = events(span, semconv.EVENT_TRANSACTION_HOOK_FAILED)
    assert failed[semconv.EXCEPTION_MESSAGE] == f"undo failed on {MASKED}"
    assert not any(secret in everything_exported(span) for secret in SECRETS)

"""Exported run logs carry no secrets, with default settings (issue 25).

Secret-named ``extra`` keys are ``[REDACTED]`` at any depth, string values and bodies pass through the text rules
(DSN passwords, ``key=value`` secrets), the engine's own failure lines and their ``exception.*`` attributes are
redacted, ``exception.stacktrace`` starts at the user's code, and attribute names Loki would reject are renamed.
Only the exported record changes: the stdlib record (what the console prints) keeps everything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, NamedTuple

import pytest

from otelflow import flow, get_run_logger, semconv, task
from otelflow.logging.handlers import clean_attribute
from otelflow.testing import CapturedTelemetry

DSN = "postgresql://app:pw-dsn/9@x@db:5432/prod"
SECRETS = ("pw-extra", "pw-header", "pw-token", "pw-deep", "pw-dsn", "9@x", "pw-kv", "pw-nt", "pw-pair")


def attrs(log: Any) -> dict[str, Any]:
    return dict(log.log_record.attributes or {})


def body(log: Any) -> str:
    return str(log.log_record.body)


def exported_text(captured: CapturedTelemetry) -> str:
    """Everything the captured logs and spans would put on the wire, as one text."""
    parts = [f"{body(log)} {attrs(log)}" for log in captured.logs]
    for span in captured.spans:
        parts.append(f"{span.status.description} {dict(span.attributes or {})}")
        parts.extend(f"{event.name} {dict(event.attributes or {})}" for event in span.events)
    return "\n".join(parts)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def stdlib_records() -> Iterator[list[logging.LogRecord]]:
    """The stdlib records of otelflow's loggers, as the console handler gets them."""
    handler = _Records()
    logger = logging.getLogger("otelflow")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)


class Login(NamedTuple):
    user: str
    passwd: str


def test_secret_extra_keys_are_redacted_at_any_depth_by_default(captured, stdlib_records):  # type: ignore[no-untyped-def]
    @task
    def connect() -> None:
        get_run_logger().info("x", extra={
            "password": "pw-extra", "auth_header": "Bearer pw-header", "token": "pw-token",
            "cfg": {"db": {"password": "pw-deep", "host": "db"}}, "dsn": DSN, "opts": "sslmode=require password=pw-kv",
            "login": Login("app", "pw-nt"), "headers": [("Authorization", "Bearer pw-pair"), ("Accept", "*/*")],
            "rows": 3,
        })

    @flow
    def pipeline() -> None:
        connect()

    pipeline()
    (log,) = [log for log in captured.logs if body(log) == "x"]
    a = attrs(log)
    for key in ("password", "auth_header", "token"):
        assert a[key] == "[REDACTED]"
    assert a["cfg"] == {"db": {"password": "[REDACTED]", "host": "db"}}
    assert a["dsn"] == "postgresql://app:***@db:5432/prod"
    assert a["opts"] == "sslmode=require password=***"
    assert a["login"] == ("app", "[REDACTED]")
    assert a["headers"] == (("Authorization", "[REDACTED]"), ("Accept", "*/*"))
    assert a["rows"] == 3
    assert not any(secret in exported_text(captured) for secret in SECRETS)
    # The stdlib record, which the console formats, is the caller's, untouched (Prefect's console output).
    (record,) = [r for r in stdlib_records if r.getMessage() == "x"]
    assert record.__dict__["password"] == "pw-extra" and record.__dict__["cfg"]["db"]["password"] == "pw-deep"


def test_bodies_are_redacted_and_cut_after(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_MAX_MESSAGE_LENGTH="120")

    @flow
    def pipeline() -> None:
        logger = get_run_logger()
        logger.info("connecting to %s", DSN)
        logger.info("GET /items?api_key=%s&page=2", "pw-kv")
        logger.warning("x" * 100 + " " + DSN + " " + "y" * 5000)  # the password straddles the cut

    pipeline()
    bodies = [body(log) for log in captured.logs]
    assert "connecting to postgresql://app:***@db:5432/prod" in bodies
    assert "GET /items?api_key=***&page=2" in bodies
    (long,) = [b for b in bodies if b.startswith("xxx")]
    cut = 100 + 1 + len(DSN) + 1 + 5000 - 120
    assert long.startswith("x" * 100 + " postgresql://app:*") and long.endswith(f"...[truncated {cut} chars]")
    assert not any(secret in exported_text(captured) for secret in SECRETS)


def test_engine_failure_lines_and_exception_attributes_are_redacted(captured, settings_env,  # type: ignore[no-untyped-def]
                                                                     stdlib_records):
    settings_env(LOG_RUN_EVENTS="true")

    @task(retries=1)
    def query() -> None:
        raise ConnectionError(f"could not connect to {DSN}")

    @flow
    def pipeline() -> None:
        query()

    with pytest.raises(ConnectionError):
        pipeline()
    text = exported_text(captured)
    assert not any(secret in text for secret in SECRETS), text
    failed = [log for log in captured.logs if body(log).startswith("Task run failed with exception")]
    assert [body(log) for log in failed] == [
        "Task run failed with exception: ConnectionError('could not connect to postgresql://app:***@db:5432/prod')"
        " - Retry 1/1 will start immediately",
        "Task run failed with exception: ConnectionError('could not connect to postgresql://app:***@db:5432/prod')"
        " - Retries are exhausted",
    ]
    a = attrs(failed[-1])
    assert a[semconv.EXCEPTION_MESSAGE] == "could not connect to postgresql://app:***@db:5432/prod"
    (flow_line,) = [log for log in captured.logs if body(log).startswith("Encountered exception during execution")]
    assert semconv.EXCEPTION_STACKTRACE in attrs(flow_line)
    # The console's records keep the message and traceback as Prefect prints them.
    assert any(DSN in r.getMessage() for r in stdlib_records)


def test_exported_stacktraces_start_at_the_users_code(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(LOG_RUN_EVENTS="true")

    @task
    def parse() -> int:
        return int("not a number")

    @flow
    def pipeline() -> None:
        parse()

    with pytest.raises(ValueError):
        pipeline()
    # The engine's line, with the exception as it left the user's code through otelflow's frames.
    (log,) = [log for log in captured.logs if body(log).startswith("Task run failed with exception")]
    for stack in (attrs(log)[semconv.EXCEPTION_STACKTRACE],
                  *(str((e.attributes or {})[semconv.EXCEPTION_STACKTRACE])
                    for e in captured.spans_named("task parse")[0].events if e.name == "exception")):
        lines = stack.splitlines()
        assert lines[0] == "Traceback (most recent call last):"
        assert lines[1].startswith(f'  File "{__file__}"') and lines[1].endswith("in parse"), stack
        assert "otelflow/engine.py" not in stack and lines[-1].startswith("ValueError: invalid literal")
    # A flow's traceback keeps otelflow's frames between the flow's code and the task's (only the leading go).
    (flow_span,) = captured.flow_spans()
    (event,) = [e for e in flow_span.events if e.name == "exception"]
    lines = str((event.attributes or {})[semconv.EXCEPTION_STACKTRACE]).splitlines()
    assert lines[1].endswith("in pipeline") and any("otelflow" in line for line in lines[2:])


LOKI_HOSTILE = ["ようこそ", "..", "", "__", "_", "-", "é", "²", "__.__", "日本"]


@pytest.mark.parametrize("key", LOKI_HOSTILE)
def test_attribute_names_loki_would_reject_are_renamed_not_lost(captured, key):  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="Loki rejects"):
        semconv.loki_name(key)

    @flow
    def pipeline() -> None:
        get_run_logger().info("hello", extra={key: "kept", "plain": 1})

    pipeline()
    (log,) = [log for log in captured.logs if body(log) == "hello"]
    a = attrs(log)
    for name in a:
        semconv.loki_name(name)  # Loki takes every attribute: none raises
    assert a["extra." + key] == "kept" and a["plain"] == 1 and key not in a


def test_the_loki_check_matches_loki_name() -> None:
    from otelflow.logging.handlers import _loki_rejects

    keys = [*LOKI_HOSTILE, "a", "1", "ok.key", "__x__", "é1", "key_", "ー", "Ⅻ", "٣", "a\u0301", "_1_", "\t",
            "\U0001d7d8"]
    for key in keys:
        try:
            semconv.loki_name(key)
            rejected = False
        except ValueError:
            rejected = True
        assert _loki_rejects(key) is rejected, key


def test_clean_attribute_redacts() -> None:
    class Config:
        def __str__(self) -> str:
            return "Config(dsn='postgresql://app:pw-dsn@db/x', token='pw-token')"

    value = {"nested": [Config(), {"client_secret": "pw-deep"}], "pair": ("X-Api-Key", "pw-pair")}
    cleaned = clean_attribute(value)
    assert not any(secret in str(cleaned) for secret in SECRETS), cleaned
    assert cleaned["nested"][0] == "Config(dsn='postgresql://app:***@db/x', token='***')"


def test_abbreviated_and_header_secret_names_are_secret_by_default(captured):  # type: ignore[no-untyped-def]
    """`pwd` (ODBC/JDBC's name for a password), a passphrase and cookies are secrets too, as keys and as pairs."""

    @flow
    def pipeline() -> None:
        get_run_logger().info("y", extra={
            "cfg": {"db": {"pwd": "pw-abbrev"}}, "key_passphrase": "pw-phrase",
            "headers": [["Cookie", "session=pw-cookie"], ["Accept", "*/*"]],
        })

    pipeline()
    (log,) = [log for log in captured.logs if body(log) == "y"]
    a = attrs(log)
    assert a["cfg"] == {"db": {"pwd": "[REDACTED]"}} and a["key_passphrase"] == "[REDACTED]"
    assert a["headers"] == (("Cookie", "[REDACTED]"), ("Accept", "*/*"))
    assert not any(s in exported_text(captured) for s in ("pw-abbrev", "pw-phrase", "pw-cookie"))

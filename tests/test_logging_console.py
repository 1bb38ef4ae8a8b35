"""Console output (structlog rendering), structlog users' setup, and import-time laziness."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import textwrap

import pytest
import structlog
from conftest import PYTHON, subprocess_env

from otelflow import flow, get_run_logger, task
from otelflow import semconv as sc
from otelflow.logging import add_run_context, get_otel_handler


def attrs(item):  # type: ignore[no-untyped-def]
    record = getattr(item, "log_record", item)
    return dict(record.attributes or {})


@task
def load(rows):  # type: ignore[no-untyped-def]
    get_run_logger().info("Loaded rows", extra={"batch_size": 1000, "env": "production"})
    return rows


@flow
def console_flow():  # type: ignore[no-untyped-def]
    get_run_logger().info("Starting")
    return load(3)


def test_console_is_human_readable_and_plain_when_not_a_tty(captured, settings_env, capsys):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_TO_CONSOLE="true")
    console_flow()
    err = capsys.readouterr().err
    flow_line, task_line = err.splitlines()
    (task_span,) = captured.task_spans()
    task_run_name = attrs(task_span)[sc.RUN_NAME]
    assert re.fullmatch(r"\d\d:\d\d:\d\d\.\d{3} \[info +\] \[Flow run '[a-z]+-[a-z]+'\] Starting", flow_line)
    assert re.fullmatch(
        rf"\d\d:\d\d:\d\d\.\d{{3}} \[info +\] \[Task run '{task_run_name}'\] Loaded rows batch_size=1000 "
        r"env=production",
        task_line,
    )
    assert "\x1b[" not in err  # no colour codes when stderr is not a terminal
    assert len(captured.logs) == 2  # console output does not replace export


def test_console_json_has_one_object_per_line_with_ids(captured, settings_env, capsys):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_TO_CONSOLE="true", LOGGING_FORMAT="json")
    console_flow()
    flow_event, task_event = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    (task_span,) = captured.task_spans()
    (flow_span,) = captured.flow_spans()
    assert task_event["event"] == "Loaded rows"
    assert task_event["level"] == "info"
    assert task_event["logger"] == "otelflow.task_runs"
    assert task_event["batch_size"] == 1000
    assert task_event["trace_id"] == format(task_span.context.trace_id, "032x")
    assert task_event["span_id"] == format(task_span.context.span_id, "016x")
    assert task_event[sc.TASK_RUN_ID] == attrs(task_span)[sc.RUN_ID]
    assert task_event[sc.FLOW_RUN_ID] == attrs(flow_span)[sc.RUN_ID]
    assert flow_event["span_id"] == format(flow_span.context.span_id, "016x")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", task_event["timestamp"])


def test_console_json_renders_exceptions(captured, settings_env, capsys):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_TO_CONSOLE="true", LOGGING_FORMAT="json")

    @flow
    def failing():  # type: ignore[no-untyped-def]
        try:
            1 / 0  # noqa: B018
        except ZeroDivisionError:
            get_run_logger().exception("boom", extra={"where": object()})

    failing()
    (event,) = (json.loads(line) for line in capsys.readouterr().err.splitlines())
    assert "ZeroDivisionError" in event["exception"]
    assert event["where"].startswith("<object object")


def test_console_level_and_switch(captured, settings_env, capsys):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_TO_CONSOLE="true", LOGGING_LEVEL="WARNING")

    @flow
    def f():  # type: ignore[no-untyped-def]
        get_run_logger().info("info-level-record")
        get_run_logger().warning("warning-level-record")

    f()
    err = capsys.readouterr().err
    assert "warning-level-record" in err and "info-level-record" not in err
    settings_env(LOGGING_TO_CONSOLE="false", LOGGING_LEVEL="INFO")
    f()
    assert capsys.readouterr().err == ""
    bodies = [log.log_record.body for log in captured.logs]
    assert bodies == ["warning-level-record", "info-level-record", "warning-level-record"]


# --- structlog users --------------------------------------------------------------------------------------


@pytest.fixture
def structlog_to_otel():  # type: ignore[no-untyped-def]
    """The setup docs/logging.md documents: structlog -> stdlib logger -> otelflow's OTel handler."""
    app_logger = logging.getLogger("myapp")
    app_logger.setLevel(logging.INFO)
    app_logger.addHandler(get_otel_handler())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_run_context,
            structlog.stdlib.render_to_log_kwargs,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    yield structlog.get_logger("myapp")
    structlog.reset_defaults()
    app_logger.removeHandler(get_otel_handler())
    app_logger.setLevel(logging.NOTSET)


def test_structlog_events_are_exported_with_run_correlation(captured, structlog_to_otel):  # type: ignore[no-untyped-def]
    log = structlog_to_otel

    @task
    def transform():  # type: ignore[no-untyped-def]
        log.info("transformed", rows=3, table="sales")
        try:
            raise KeyError("col")
        except KeyError:
            log.exception("missing column")

    @flow
    def pipeline():  # type: ignore[no-untyped-def]
        transform()

    pipeline()
    (task_span,) = captured.task_spans()
    info, error = captured.logs
    assert info.log_record.body == "transformed"
    assert (info.log_record.trace_id, info.log_record.span_id) == (
        task_span.context.trace_id,
        task_span.context.span_id,
    )
    a = attrs(info)
    assert a["rows"] == 3 and a["table"] == "sales"
    assert a[sc.TASK_RUN_ID] == attrs(task_span)[sc.RUN_ID]
    assert a[sc.FLOW_NAME] == "pipeline"
    assert "trace_id" not in a and "span_id" not in a  # carried by the record itself, not duplicated
    assert info.instrumentation_scope.name == "myapp"
    assert error.log_record.severity_text == "ERROR"
    assert attrs(error)[sc.EXCEPTION_TYPE] == "KeyError"


def test_add_run_context_processor(captured):  # type: ignore[no-untyped-def]
    events = []

    @task
    def t():  # type: ignore[no-untyped-def]
        events.append(add_run_context(None, "info", {"event": "x"}))

    @flow
    def f():  # type: ignore[no-untyped-def]
        t()

    f()
    assert add_run_context(None, "info", {"event": "outside"}) == {"event": "outside"}
    (task_span,) = captured.task_spans()
    (event,) = events
    assert event["trace_id"] == format(task_span.context.trace_id, "032x")
    assert event["span_id"] == format(task_span.context.span_id, "016x")
    assert event[sc.TASK_RUN_ID] == attrs(task_span)[sc.RUN_ID]
    assert event[sc.FLOW_RUN_ID] == attrs(task_span)[sc.FLOW_RUN_ID]


# --- laziness ---------------------------------------------------------------------------------------------


def test_import_is_lazy_and_console_off_never_imports_structlog(tmp_path):  # type: ignore[no-untyped-def]
    script = tmp_path / "lazy.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys
            import otelflow
            heavy = ("structlog", "opentelemetry.instrumentation.logging", "otelflow.settings")
            print(sorted(m for m in heavy if m in sys.modules))
            from otelflow import flow, get_run_logger

            @flow
            def f():
                get_run_logger().info("hi")

            f()
            print(sorted(m for m in heavy if m in sys.modules))
            """
        )
    )
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOGGING_TO_CONSOLE="false")
    result = subprocess.run([PYTHON, str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    at_import, after_run = result.stdout.splitlines()
    assert at_import == "[]"
    assert "structlog" not in after_run and "opentelemetry.instrumentation.logging" in after_run


class _CountingStderr:
    """A stderr that counts write calls (each one a system call on a real stderr)."""

    def __init__(self) -> None:
        self.writes: list[str] = []

    def write(self, text: str) -> int:
        self.writes.append(text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def test_console_lines_are_written_in_batches_warnings_at_once(settings_env, monkeypatch):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_TO_CONSOLE="true", LOG_RUN_EVENTS="true")
    fake = _CountingStderr()
    monkeypatch.setattr(sys, "stderr", fake)
    seen_after_warning: list[int] = []

    @task
    def chatty() -> None:
        logger = get_run_logger()
        for i in range(200):
            logger.info("line %d", i)
        logger.warning("disk almost full")
        seen_after_warning.append(sum(w.count("\n") for w in fake.writes))

    @flow
    def f() -> None:
        chatty()

    f()
    lines = "".join(fake.writes).splitlines()
    assert len([line for line in lines if "line " in line]) == 200  # nothing lost, in order
    assert [int(line.rsplit(" ", 1)[1]) for line in lines if "] line " in line] == list(range(200))
    assert seen_after_warning[0] >= 201  # the warning (and everything before it) was written at once
    assert len(fake.writes) < 20  # 200+ lines, a handful of writes: not one system call per record
    assert any("Finished in state" in line for line in lines)  # the flow's end writes what is pending


def test_a_child_forked_while_the_console_flusher_held_its_lock_can_log() -> None:
    """Was: the child inherited the console's lock held by the parent's flusher thread and hung on its first line."""
    import os
    import signal

    from otelflow.logging.handlers import ConsoleHandler

    handler = ConsoleHandler("console", 1000)
    record = logging.LogRecord("otelflow", logging.INFO, __file__, 1, "hello %s", ("child",), None)
    with handler._wake:  # the flusher is between two waits when the program forks
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports by its exit status
            signal.alarm(10)
            try:
                handler.emit(record)
                handler.flush()
                os._exit(0)
            except BaseException:
                os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


def test_each_flow_run_prints_its_ids_and_jaeger_link_on_the_console_only(captured, settings_env, capsys):  # type: ignore[no-untyped-def]
    """What a user searches Jaeger and Loki with is on the console when a run starts; it is not a run log record
    (Prefect's "View at" line is console-only too: ``send_to_api=False``)."""
    settings_env(LOGGING_TO_CONSOLE="true", LOG_RUN_EVENTS="true", JAEGER_URL="http://jaeger.local:16686/")
    console_flow()
    err = capsys.readouterr().err
    (flow_span,) = captured.flow_spans()
    trace_id = format(flow_span.context.trace_id, "032x")
    run_id = attrs(flow_span)[sc.RUN_ID]
    assert f"Flow run id {run_id}, trace id {trace_id}" in err
    assert f"View at http://jaeger.local:16686/trace/{trace_id}" in err
    assert "send_to_api" not in err
    bodies = [str(item.log_record.body) for item in captured.logs]
    assert any(b.startswith("Beginning flow run") for b in bodies)
    assert not any("trace id" in b or "View at" in b for b in bodies)


def test_with_otelflow_ui_url_the_console_links_the_run_page_as_prefect_does(captured, settings_env, capsys):  # type: ignore[no-untyped-def]
    """Prefect's line is ``View at <UI>/runs/flow-run/<id>``; `otelflow ui` serves that address."""
    settings_env(LOGGING_TO_CONSOLE="true", LOG_RUN_EVENTS="true", UI_URL="http://127.0.0.1:4200/")
    console_flow()
    err = capsys.readouterr().err
    (flow_span,) = captured.flow_spans()
    assert f"View at http://127.0.0.1:4200/runs/flow-run/{attrs(flow_span)[sc.RUN_ID]}" in err
    assert not any("View at" in str(item.log_record.body) for item in captured.logs)


def test_without_a_jaeger_url_there_is_no_link(captured, settings_env, capsys):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_TO_CONSOLE="true", LOG_RUN_EVENTS="true")
    console_flow()
    err = capsys.readouterr().err
    assert "Flow run id " in err and "View at" not in err

"""Run logs: real flows, records captured in memory as the OTel SDK hands them to an exporter."""

from __future__ import annotations

import contextvars
import io
import logging
import threading
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk._logs import LogRecordProcessor

from otelflow import flow, get_run_logger, tags, task
from otelflow import semconv as sc
from otelflow.context import MissingContextError, hydrated_context, serialize_context
from otelflow.logging import LogEavesdropper, disable_run_logger, get_logger, get_otel_handler


def attrs(item):  # type: ignore[no-untyped-def]
    """Attributes of a span or of a captured log record."""
    record = getattr(item, "log_record", item)
    return dict(record.attributes or {})


def body(log):  # type: ignore[no-untyped-def]
    return log.log_record.body


def ids(item):  # type: ignore[no-untyped-def]
    """(trace_id, span_id) of a span or a captured log record."""
    if hasattr(item, "log_record"):
        return item.log_record.trace_id, item.log_record.span_id
    return item.context.trace_id, item.context.span_id


# --- the issue's example ----------------------------------------------------------------------------------


@task
def process_data(data):  # type: ignore[no-untyped-def]
    logger = get_run_logger()
    logger.info(f"Processing {len(data)} records")
    return len(data)


@flow
def data_pipeline():  # type: ignore[no-untyped-def]
    get_run_logger().info("Configuration", extra={"batch_size": 1000, "env": "production"})
    with tags("etl", "critical"):
        return process_data([1, 2, 3])


def test_issue_example_records_correlate_with_their_run_spans(captured):  # type: ignore[no-untyped-def]
    assert data_pipeline() == 3

    (flow_span,) = captured.flow_spans()
    (task_span,) = captured.task_spans()
    config_log, task_log = captured.logs
    assert body(config_log) == "Configuration"
    assert ids(config_log) == ids(flow_span)
    assert body(task_log) == "Processing 3 records"
    assert ids(task_log) == ids(task_span)

    flow_run_id = attrs(flow_span)[sc.FLOW_RUN_ID]
    a = attrs(config_log)
    assert a["batch_size"] == 1000 and isinstance(a["batch_size"], int)
    assert a["env"] == "production"
    assert a[sc.FLOW_RUN_ID] == flow_run_id
    assert a[sc.FLOW_RUN_NAME] == attrs(flow_span)[sc.RUN_NAME]
    assert a[sc.FLOW_NAME] == "data-pipeline"
    assert sc.TASK_RUN_ID not in a

    a = attrs(task_log)
    assert a[sc.FLOW_RUN_ID] == flow_run_id
    assert a[sc.FLOW_NAME] == "data-pipeline"
    assert a[sc.TASK_RUN_ID] == attrs(task_span)[sc.RUN_ID]
    assert a[sc.TASK_RUN_NAME] == attrs(task_span)[sc.RUN_NAME]
    assert a[sc.TASK_NAME] == "process_data"
    assert a[sc.TAGS] == ("critical", "etl")
    assert task_log.log_record.severity_text == "INFO"
    assert task_log.log_record.severity_number.value == 9
    assert task_log.instrumentation_scope.name == "otelflow.task_runs"
    assert config_log.instrumentation_scope.name == "otelflow.flow_runs"


@pytest.mark.parametrize(
    ("method", "severity_text", "severity_number"),
    [
        ("debug", "DEBUG", 5),
        ("info", "INFO", 9),
        ("warning", "WARN", 13),
        ("error", "ERROR", 17),
        ("critical", "FATAL", 21),
    ],
)
def test_severity(captured, settings_env, method, severity_text, severity_number):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_LEVEL="DEBUG")

    @flow
    def levels():  # type: ignore[no-untyped-def]
        getattr(get_run_logger(), method)("hello")

    levels()
    (log,) = captured.logs
    assert (log.log_record.severity_text, log.log_record.severity_number.value) == (
        severity_text,
        severity_number,
    )


def test_level_setting_filters_records(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_LEVEL="WARNING")

    @flow
    def noisy():  # type: ignore[no-untyped-def]
        logger = get_run_logger()
        logger.info("dropped")
        logger.warning("kept")

    noisy()
    assert [body(log) for log in captured.logs] == ["kept"]


# --- extra, exceptions, bad input -------------------------------------------------------------------------


class Opaque:
    __slots__ = ()

    def __str__(self) -> str:
        return "opaque!"


def test_extra_keeps_types_and_stringifies_the_rest(captured):  # type: ignore[no-untyped-def]
    @task
    def typed():  # type: ignore[no-untyped-def]
        get_run_logger(component="loader").info(
            "typed",
            extra={
                "n": 3,
                "ratio": 0.5,
                "ok": True,
                "label": "x",
                "ids": [1, 2],
                "nested": {"a": 1, "b": [True]},
                "path": Path("/tmp/x"),
                "opaque": Opaque(),
                "nothing": None,
                "mixed": {1: Opaque()},
            },
        )

    typed()
    a = attrs(captured.logs[0])
    assert a["n"] == 3 and type(a["n"]) is int
    assert a["ratio"] == 0.5 and a["ok"] is True and a["label"] == "x"
    assert a["ids"] == (1, 2)
    assert a["nested"] == {"a": 1, "b": (True,)}
    assert a["path"] == "/tmp/x"
    assert a["opaque"] == "opaque!"
    assert a["nothing"] == "None"
    assert a["mixed"] == {"1": "opaque!"}
    assert a["component"] == "loader"  # get_run_logger(**kwargs) become extra on every record


def test_call_extra_overrides_logger_extra(captured):  # type: ignore[no-untyped-def]
    @flow
    def f():  # type: ignore[no-untyped-def]
        logger = get_run_logger(stage="a")
        logger.info("one")
        logger.info("two", extra={"stage": "b"})

    f()
    assert [attrs(log)["stage"] for log in captured.logs] == ["a", "b"]


@pytest.mark.parametrize("other_handler", [False, True], ids=["otelflow-handlers-only", "with-another-handler"])
def test_extra_added_to_a_run_logger_stays_on_that_logger(captured, settings_env, other_handler):  # type: ignore[no-untyped-def]
    # Prefect (checked on 3.9.1): get_run_logger() makes a new logger each call, and the engine's closing line goes
    # through a logger of its own: a key a task adds to one logger's ``extra`` shows on that logger's records only.
    settings_env(LOG_RUN_EVENTS="true")
    seen: list[tuple[str, object]] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append((record.getMessage(), getattr(record, "k", None)))

    handler = Keep()
    task_runs = logging.getLogger("otelflow.task_runs")
    if other_handler:
        task_runs.addHandler(handler)

    @task
    def t():  # type: ignore[no-untyped-def]
        logger = get_run_logger()
        logger.extra["k"] = "v"  # type: ignore[index]
        logger.info("first")
        get_run_logger().info("second")

    @flow
    def f():  # type: ignore[no-untyped-def]
        t()

    try:
        f()
    finally:
        task_runs.removeHandler(handler)
    exported = {body(log): attrs(log).get("k") for log in captured.logs}
    assert exported["first"] == "v"
    assert exported["second"] is None
    assert exported["Finished in state Completed()"] is None
    if other_handler:
        assert seen == [("first", "v"), ("second", None), ("Finished in state Completed()", None)]


def test_a_plain_run_log_record_exports_what_the_full_translation_would(captured):  # type: ignore[no-untyped-def]
    # A record of the run's default logger with nothing of its own takes a shortcut (its attributes are made
    # once per run); anything that adds to the record (the call's extra, a filter, a record factory) takes the
    # full path. Both must export the same thing for the same record.
    class Tag(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            record.added_by_filter = "yes"
            return True

    default_factory = logging.getLogRecordFactory()

    def factory(*args, **kwargs):  # type: ignore[no-untyped-def]
        record = default_factory(*args, **kwargs)
        record.added_by_factory = 7
        return record

    @task
    def work():  # type: ignore[no-untyped-def]
        logger = get_run_logger()
        logger.info("plain %s", 1)
        logger.info("with extra", extra={"flow_name": "mine", "k": 1})
        logger.logger.addFilter(tag)
        try:
            logger.info("filtered")
        finally:
            logger.logger.removeFilter(tag)
        logging.setLogRecordFactory(factory)
        try:
            logger.info("factory")
        finally:
            logging.setLogRecordFactory(default_factory)

    @flow(name="outer")
    def f():  # type: ignore[no-untyped-def]
        work()

    tag = Tag()
    f()
    mine = [log for log in captured.logs if body(log) in ("plain 1", "with extra", "filtered", "factory")]
    plain, extra, filtered, made = (attrs(log) for log in mine)
    assert plain[sc.TASK_NAME] == "work" and plain[sc.FLOW_NAME] == "outer"
    # each run value once, under otelflow's names: Prefect's fields stay on the stdlib record
    assert len(plain) == 6 and not set(plain) & {"task_name", "flow_name", "flow_run_id", "task_run_id"}
    assert extra == {**plain, "flow_name": "mine", "k": 1}  # the call's own value of a Prefect field is kept
    assert filtered == {**plain, "added_by_filter": "yes"}
    assert made == {**plain, "added_by_factory": 7}
    assert len({ids(log) for log in mine}) == 1


@pytest.fixture
def made_records(monkeypatch):  # type: ignore[no-untyped-def]
    """The messages of the stdlib LogRecords made while the test runs (``Logger.makeRecord`` calls)."""
    made: list[str] = []
    real_make = logging.Logger.makeRecord

    def counting(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        record = real_make(self, *args, **kwargs)
        made.append(record.getMessage())
        return record

    monkeypatch.setattr(logging.Logger, "makeRecord", counting)
    return made


class _Keep(logging.Filter):
    """A filter that keeps every record: with any filter, someone may look at the record, so the full path runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return True


def _log_by_both_paths(logger: Any, calls: list[tuple[str, str, tuple[Any, ...]]]) -> None:
    """Make each ``(method, message, args)`` call on the run logger twice: plainly (the fast path when nothing else
    would see the record), then with a filter on the logger (the full path)."""
    for method, message, args in calls:
        getattr(logger, method)(message, *args)
    logger.logger.addFilter(_Keep())
    try:
        for method, message, args in calls:
            getattr(logger, method)(message, *args)
    finally:
        logger.logger.filters.clear()


def test_a_plain_record_with_no_other_handler_is_exported_without_a_stdlib_record_and_the_same(
        captured, monkeypatch, made_records):  # type: ignore[no-untyped-def]
    """When otelflow's OTel handler is the only one a plain run record would reach, no stdlib LogRecord is made
    (nobody could see it); what is exported is what the full path exports for the same call."""
    made = made_records
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's capture handlers would see every record

    calls = [("info", "n=%s", (3,)), ("info", "%(a)s and %(b)s", ({"a": 1, "b": "two"},)), ("info", "100%", ()),
             ("warning", "warned %d", (2,))]

    @task
    def work():  # type: ignore[no-untyped-def]
        _log_by_both_paths(get_run_logger(), calls)

    @flow
    def f():  # type: ignore[no-untyped-def]
        work()

    f()
    assert made == ["n=3", "1 and two", "100%", "warned 2"]  # the second half only: the full path
    exported = [log.log_record for log in captured.logs]
    fast, full = exported[:4], exported[4:]
    assert [r.body for r in fast] == [r.body for r in full] == made
    for one, other in zip(fast, full, strict=True):
        assert (one.severity_text, one.severity_number, one.trace_id, one.span_id) == (
            other.severity_text, other.severity_number, other.trace_id, other.span_id)
        assert dict(one.attributes) == dict(other.attributes)
    assert fast[3].severity_text == "WARN"


def test_a_plain_record_prints_the_same_console_line_without_a_stdlib_record(
        captured, settings_env, capsys, made_records):  # type: ignore[no-untyped-def]
    """With the console on (the default), a plain run record reaches otelflow's console and OTel handlers only:
    both take it without a stdlib LogRecord, and the console line is the one the full path prints."""
    settings_env(LOGGING_TO_CONSOLE="true")
    made = made_records

    @task(task_run_name="worker-1")
    def work():  # type: ignore[no-untyped-def]
        # (the escape sequence is escaped on the console either way)
        _log_by_both_paths(get_run_logger(), [("info", "plain %s \x1b[2J", (1,)), ("error", "failed %s", ("x",))])

    @flow
    def f():  # type: ignore[no-untyped-def]
        work()

    f()
    err = capsys.readouterr().err
    mine = [line.split(" ", 1)[1] for line in err.splitlines()
            if "worker-1" in line and ("plain" in line or "failed" in line)]
    assert len(mine) == 4 and mine[:2] == mine[2:], mine  # the same line (time stamp aside) by both paths
    assert mine[0] == "[info     ] [Task run 'worker-1'] plain 1 \\x1b[2J"
    assert made == ["plain 1 \x1b[2J", "failed x"]  # only the filtered half made stdlib records
    assert [str(log.log_record.body) for log in captured.logs if "worker" not in str(log.log_record.body)
            and str(log.log_record.body).startswith(("plain", "failed"))] == ["plain 1 \x1b[2J", "failed x"] * 2


def test_a_run_log_record_names_the_callers_function_and_line(caplog):  # type: ignore[no-untyped-def]
    """The record's funcName and lineno are the caller's, whichever method logs (the run logger adapter's own
    frame is not taken for the caller)."""
    import inspect

    lines: dict[str, int] = {}

    @task
    def caller():  # type: ignore[no-untyped-def]
        logger = get_run_logger()
        logger.info("info"); lines["info"] = inspect.currentframe().f_lineno  # type: ignore[union-attr]  # noqa: E702
        logger.log(logging.INFO, "log"); lines["log"] = inspect.currentframe().f_lineno  # type: ignore[union-attr]  # noqa: E702
        logger.warning("extra", extra={"k": 1}); lines["extra"] = inspect.currentframe().f_lineno  # type: ignore[union-attr]  # noqa: E702
        try:
            raise ValueError("x")
        except ValueError:
            logger.exception("exc"); lines["exc"] = inspect.currentframe().f_lineno  # type: ignore[union-attr]  # noqa: E702

    @flow
    def f():  # type: ignore[no-untyped-def]
        caller()

    with caplog.at_level(logging.INFO, logger="otelflow"):
        f()
    records = {r.getMessage(): r for r in caplog.records if r.getMessage() in lines}
    assert {m: (r.funcName, r.lineno) for m, r in records.items()} == {m: ("caller", n) for m, n in lines.items()}


def test_a_message_that_does_not_format_is_reported_as_the_stdlib_does(captured, capsys, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # pytest's handlers raise on a logging error

    @flow
    def f():  # type: ignore[no-untyped-def]
        get_run_logger().info("%d rows", "many")  # wrong type: the stdlib prints a logging error, the run goes on
        return 1

    assert f() == 1
    assert "--- Logging error ---" in capsys.readouterr().err


def test_a_copied_run_context_logs_as_the_run_it_was_given(captured):  # type: ignore[no-untyped-def]
    import dataclasses

    from otelflow.context import TaskRunContext

    @task
    def first():  # type: ignore[no-untyped-def]
        get_run_logger().info("as first")
        ctx = TaskRunContext.get()
        assert ctx is not None and ctx.task_run is not None
        renamed = dataclasses.replace(ctx.task_run, name="renamed-run")
        with ctx.model_copy(update={"task_run": renamed}):
            get_run_logger().info("as renamed")

    first()
    names = {body(log): attrs(log)[sc.TASK_RUN_NAME] for log in captured.logs}
    assert names["as renamed"] == "renamed-run" and names["as first"] != "renamed-run"


def test_huge_run_names_are_cut_in_plain_run_log_records_too(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(ATTRIBUTE_VALUE_MAX_LENGTH="64")

    @flow(flow_run_name="r" * 500)
    def long_named():  # type: ignore[no-untyped-def]
        get_run_logger().info("plain")
        get_run_logger().info("extra", extra={"k": 1})

    long_named()
    plain, extra = (attrs(log) for log in captured.logs if body(log) in ("plain", "extra"))
    assert plain[sc.FLOW_RUN_NAME] == extra[sc.FLOW_RUN_NAME]
    assert len(plain[sc.FLOW_RUN_NAME]) < 120 and "truncated" in plain[sc.FLOW_RUN_NAME]


def test_exception_attributes(captured):  # type: ignore[no-untyped-def]
    @task
    def fails_softly():  # type: ignore[no-untyped-def]
        try:
            raise ValueError("bad row 7")
        except ValueError:
            get_run_logger().exception("could not parse")

    fails_softly()
    (log,) = captured.logs
    a = attrs(log)
    assert body(log) == "could not parse"
    assert log.log_record.severity_text == "ERROR"
    assert a[sc.EXCEPTION_TYPE] == "ValueError"
    assert a[sc.EXCEPTION_MESSAGE] == "bad row 7"
    assert "Traceback" in a[sc.EXCEPTION_STACKTRACE] and "bad row 7" in a[sc.EXCEPTION_STACKTRACE]
    assert a[sc.TASK_NAME] == "fails_softly"


def test_huge_messages_are_truncated_with_a_marker(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(LOGGING_MAX_MESSAGE_LENGTH="100")

    @flow
    def chatty():  # type: ignore[no-untyped-def]
        get_run_logger().info("x" * 1000)
        get_run_logger().info("%s", "y" * 100)

    chatty()
    truncated, exact = (body(log) for log in captured.logs)
    assert truncated == "x" * 100 + "...[truncated 900 chars]"
    assert exact == "y" * 100


@pytest.mark.parametrize("key", ["msg", "name", "levelname", "message", "asctime", "args"])
def test_reserved_extra_keys_raise_key_error(captured, key):  # type: ignore[no-untyped-def]
    errors: list[str] = []

    @flow
    def f():  # type: ignore[no-untyped-def]
        with pytest.raises(KeyError) as call_error:
            get_run_logger().info("x", extra={key: 1})
        errors.append(str(call_error.value))
        if key != "name":  # get_run_logger(name=...) picks the logger
            with pytest.raises(KeyError) as logger_error:
                get_run_logger(**{key: 1})
            errors.append(str(logger_error.value))

    f()
    assert all(key in e and "LogRecord" in e and "rename" in e for e in errors)
    assert captured.logs == []


def test_missing_context_outside_runs(captured):  # type: ignore[no-untyped-def]
    with pytest.raises(MissingContextError, match="no active flow or task run context"):
        get_run_logger()


# --- get_logger -------------------------------------------------------------------------------------------


def test_get_logger_hierarchy_and_correlation(captured):  # type: ignore[no-untyped-def]
    assert get_logger().name == "otelflow"
    assert get_logger("etl.load").name == "otelflow.etl.load"
    assert get_logger("otelflow.etl").name == "otelflow.etl"
    assert isinstance(get_logger("x"), logging.Logger)

    @task
    def uses_module_logger():  # type: ignore[no-untyped-def]
        get_logger("etl").info("module-level", extra={"rows": 2})

    uses_module_logger()
    get_logger("etl").info("outside any run")
    (task_span,) = captured.task_spans()
    inside, outside = captured.logs
    assert ids(inside) == ids(task_span)
    assert attrs(inside)[sc.TASK_RUN_ID] == attrs(task_span)[sc.RUN_ID]
    assert attrs(inside)["rows"] == 2
    assert outside.log_record.span_id == 0 and sc.FLOW_RUN_ID not in attrs(outside)


# --- disable_run_logger -----------------------------------------------------------------------------------


def test_disable_run_logger_plain_call_silences_the_rest_of_that_run_only(captured):  # type: ignore[no-untyped-def]
    @task
    def quiet_task(i):  # type: ignore[no-untyped-def]
        get_run_logger().info(f"before {i}")
        if i == 0:
            disable_run_logger()
        get_run_logger().info(f"after {i}")

    @flow
    def quiet_flow():  # type: ignore[no-untyped-def]
        get_run_logger().info("flow before")
        quiet_task.map([0, 1]).wait()
        disable_run_logger()
        get_run_logger().info("flow after")

    @flow
    def loud_flow():  # type: ignore[no-untyped-def]
        get_run_logger().info("loud")

    quiet_flow()
    loud_flow()  # same caller context as quiet_flow: must not inherit its disable
    assert sorted(body(log) for log in captured.logs) == [
        "after 1",
        "before 0",
        "before 1",
        "flow before",
        "loud",
    ]


def test_disable_run_logger_plain_call_in_a_subflow_leaves_the_parent_alone(captured):  # type: ignore[no-untyped-def]
    @flow
    def child():  # type: ignore[no-untyped-def]
        disable_run_logger()
        get_run_logger().info("child")

    @flow
    def parent():  # type: ignore[no-untyped-def]
        child()
        get_run_logger().info("parent")

    parent()
    assert [body(log) for log in captured.logs] == ["parent"]


def test_disable_run_logger_context_manager_restores_on_exit(captured):  # type: ignore[no-untyped-def]
    @task
    def inner():  # type: ignore[no-untyped-def]
        get_run_logger().info("inner")

    @flow
    def f():  # type: ignore[no-untyped-def]
        logger = get_run_logger()
        with disable_run_logger():
            logger.info("hidden")
            inner()
        logger.info("visible")

    f()
    with disable_run_logger():
        f()  # a whole flow run inside the block
    f()
    assert [body(log) for log in captured.logs] == ["visible", "visible"]


# --- LogEavesdropper --------------------------------------------------------------------------------------


def test_log_eavesdropper_by_name_and_by_logger(captured):  # type: ignore[no-untyped-def]
    @task
    def t():  # type: ignore[no-untyped-def]
        get_run_logger().info("from the task")
        get_run_logger().debug("debug line")

    @flow
    def f():  # type: ignore[no-untyped-def]
        get_run_logger().warning("from the flow")
        t()

    with (
        LogEavesdropper("otelflow") as everything,
        LogEavesdropper(logging.getLogger("otelflow.task_runs"), level=logging.DEBUG) as tasks_only,
    ):
        f()
    # Prefect's eavesdropper format.
    assert everything.text() == "[WARNING]: from the flow\n[INFO]: from the task\n[DEBUG]: debug line"
    assert [r.getMessage() for r in tasks_only.get_logs()] == ["from the task", "debug line"]
    assert all(isinstance(r, logging.LogRecord) for r in everything.get_logs())
    # the level was lowered for the block only
    assert logging.getLogger("otelflow.task_runs").level == logging.NOTSET
    with LogEavesdropper("otelflow") as after:
        f()
    assert "debug line" not in after.text()


# --- log_prints -------------------------------------------------------------------------------------------


def test_log_prints_sends_prints_of_that_run_to_its_run_logger(captured, capsys):  # type: ignore[no-untyped-def]
    elsewhere = io.StringIO()

    @task
    def printing_task():  # type: ignore[no-untyped-def]
        print("from task", 2)

    @flow(log_prints=True)
    def printing_flow():  # type: ignore[no-untyped-def]
        print("hello", "world")
        print("to stdout", file=__import__("sys").stdout)  # stdout/stderr named explicitly: still a run log
        print("to a file", file=elsewhere)  # any other file: printed, as in Prefect
        printing_task()

    @flow
    def plain_flow():  # type: ignore[no-untyped-def]
        print("not a log")

    printing_flow()
    plain_flow()
    print("outside")
    out = capsys.readouterr().out
    assert out == "not a log\noutside\n"
    assert elsewhere.getvalue() == "to a file\n"
    (flow_span,) = captured.spans_named("flow printing-flow")
    (task_span,) = captured.task_spans()
    logs = {body(log): log for log in captured.logs}
    assert set(logs) == {"hello world", "to stdout", "from task 2"}
    assert ids(logs["hello world"]) == ids(flow_span)
    assert ids(logs["from task 2"]) == ids(task_span)
    assert logs["hello world"].log_record.severity_text == "INFO"


def test_log_prints_does_not_capture_other_threads(captured, capsys):  # type: ignore[no-untyped-def]
    started, release = threading.Event(), threading.Event()

    def other_thread() -> None:
        started.wait(5)
        print("other thread")
        release.set()

    @flow(log_prints=True)
    def printing_flow():  # type: ignore[no-untyped-def]
        started.set()
        release.wait(5)
        print("mine")

    thread = threading.Thread(target=other_thread)
    thread.start()
    printing_flow()
    thread.join()
    assert capsys.readouterr().out == "other thread\n"
    assert [body(log) for log in captured.logs] == ["mine"]


# --- correlation across threads, mapping, remote runs -----------------------------------------------------


def test_mapped_tasks_in_parallel_threads_each_carry_their_own_run(captured):  # type: ignore[no-untyped-def]
    @task
    def work(i):  # type: ignore[no-untyped-def]
        get_run_logger().info("index %d", i, extra={"index": i})
        return i

    @flow
    def fan_out():  # type: ignore[no-untyped-def]
        return work.map(range(200)).result()

    assert fan_out() == list(range(200))
    span_by_index = {attrs(s)[sc.TASK_MAP_INDEX]: s for s in captured.task_spans()}
    assert len(span_by_index) == 200 and len(captured.logs) == 200
    for log in captured.logs:
        span = span_by_index[attrs(log)["index"]]
        assert ids(log) == ids(span)
        assert attrs(log)[sc.TASK_RUN_ID] == attrs(span)[sc.RUN_ID]
        assert attrs(log)[sc.TASK_MAP_INDEX] == attrs(log)["index"]
        assert body(log) == f"index {attrs(log)['index']}"


def test_many_threads_logging_at_once_lose_nothing(captured):  # type: ignore[no-untyped-def]
    threads_per_task, per_thread = 8, 250

    @task
    def spawner(name):  # type: ignore[no-untyped-def]
        logger = get_run_logger()  # handed to plain threads: no run context there, still correlated

        def chatter(t: int) -> None:
            for i in range(per_thread):
                logger.info("%s %d %d", name, t, i, extra={"who": name})

        workers = [threading.Thread(target=chatter, args=(t,)) for t in range(threads_per_task)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    @flow
    def crowd():  # type: ignore[no-untyped-def]
        spawner.map(["a", "b", "c", "d"]).wait()

    # Two flows at once, from two threads of the caller.
    runners = [threading.Thread(target=contextvars.copy_context().run, args=(crowd,)) for _ in range(2)]
    for r in runners:
        r.start()
    for r in runners:
        r.join()

    spans = {attrs(s)[sc.RUN_ID]: s for s in captured.task_spans()}
    logs = captured.logs
    assert len(logs) == 2 * 4 * threads_per_task * per_thread
    assert len({(attrs(log)[sc.TASK_RUN_ID], body(log)) for log in logs}) == len(logs)  # no duplicates
    for log in logs:
        span = spans[attrs(log)[sc.TASK_RUN_ID]]
        assert ids(log) == ids(span)
        assert body(log).startswith(attrs(log)["who"])
        assert attrs(span)[sc.PARAMETER_PREFIX + "name"] == "str"


def test_subflow_called_inside_a_task_logs_as_the_subflow(captured):  # type: ignore[no-untyped-def]
    @flow
    def child():  # type: ignore[no-untyped-def]
        get_run_logger().info("in child")

    @task
    def runs_child():  # type: ignore[no-untyped-def]
        child()

    @flow
    def parent():  # type: ignore[no-untyped-def]
        runs_child()

    parent()
    (child_span,) = captured.spans_named("flow child")
    (log,) = captured.logs
    assert ids(log) == ids(child_span)
    assert attrs(log)[sc.FLOW_RUN_ID] == attrs(child_span)[sc.RUN_ID]
    assert sc.TASK_RUN_ID not in attrs(log)


def test_hydrated_remote_run_correlates_with_the_remote_span(captured):  # type: ignore[no-untyped-def]
    carriers = []

    @task
    def sender():  # type: ignore[no-untyped-def]
        carriers.append(serialize_context())

    @flow
    def sending_flow():  # type: ignore[no-untyped-def]
        with tags("remote-tag"):
            sender()

    sending_flow()
    (task_span,) = captured.task_spans()
    (flow_span,) = captured.flow_spans()

    # "Elsewhere": no local run, only the carrier.
    with pytest.raises(MissingContextError):
        get_run_logger()
    with hydrated_context(carriers[0]):
        get_run_logger().info("received", extra={"bytes": 12})
    (log,) = captured.logs
    assert ids(log) == ids(task_span)
    a = attrs(log)
    assert a[sc.FLOW_RUN_ID] == attrs(flow_span)[sc.RUN_ID]
    assert a[sc.FLOW_RUN_NAME] == attrs(flow_span)[sc.RUN_NAME]
    assert a[sc.FLOW_NAME] == "sending-flow"
    assert a[sc.TASK_RUN_ID] == attrs(task_span)[sc.RUN_ID]
    assert a[sc.TASK_RUN_NAME] == attrs(task_span)[sc.RUN_NAME]
    assert a[sc.TAGS] == ("remote-tag",)
    assert a["bytes"] == 12
    with pytest.raises(MissingContextError):
        get_run_logger()


# --- the handler never recurses and never exports OTel's own logs -----------------------------------------


def test_a_processor_that_logs_does_not_loop(captured):  # type: ignore[no-untyped-def]
    class LoggingProcessor(LogRecordProcessor):
        calls = 0

        def on_emit(self, log_record):  # type: ignore[no-untyped-def]
            LoggingProcessor.calls += 1
            get_logger("exporter").warning("exporting %s", log_record.log_record.body)
            logging.getLogger("opentelemetry.sdk.fake").warning("sdk complaint")

        emit = on_emit

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    captured.logger_provider.add_log_record_processor(LoggingProcessor())
    root = logging.getLogger()
    root.addHandler(get_otel_handler())  # also on the root logger: OTel's own records reach it there
    try:

        @flow
        def f():  # type: ignore[no-untyped-def]
            get_run_logger().info("once")

        f()
    finally:
        root.removeHandler(get_otel_handler())
    assert [body(log) for log in captured.logs] == ["once"]
    assert LoggingProcessor.calls == 1



_NO_CYCLES_SCRIPT = """
import gc, json
from otelflow import flow, get_run_logger, task
from otelflow.testing import capture_telemetry

@task
def logs(i):
    get_run_logger().info("item %s", i)
    get_run_logger().warning("again %s", i)  # the cached default run logger
    return i

@flow
def many():
    return sum(logs(i) for i in range(20))

with capture_telemetry() as captured:
    many()  # warm-up: first use configures things that live as long as the process
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    total = many()
    gc.collect()
    leaked = sorted({type(o).__name__ for o in gc.garbage})
    gc.set_debug(0)
    records = [log for log in captured.logs if str(log.log_record.body).startswith("item ")]
    print(json.dumps({"total": total, "leaked": leaked, "records": len(records),
                      "spans": len({log.log_record.span_id for log in records})}))
"""


def test_run_logging_leaves_no_reference_cycles(tmp_path: Path) -> None:
    """A run's logger, span and contexts are freed by reference counting when the run ends.

    The default run logger once referred to its run's RunInfo, which referred back to it: every task run that
    logged left a cycle holding its span and contexts, found only by the garbage collector (~8 µs per run in
    collections). In a subprocess: pytest's own log capture keeps every record (and so its run) alive.
    """
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("OTELFLOW_", "OTEL_"))}
    env["OTELFLOW_HOME"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-c", _NO_CYCLES_SCRIPT], env=env, capture_output=True, text=True,
                         timeout=120, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"total": 190, "leaked": [], "records": 40, "spans": 40}  # both runs: 40 task runs

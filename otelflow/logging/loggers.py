"""Run loggers, Prefect style: ``get_run_logger``, ``get_logger``, ``disable_run_logger``, ``print_as_log``.

Run loggers are ``logging.LoggerAdapter`` objects over the stdlib loggers ``otelflow.flow_runs`` and
``otelflow.task_runs``. The adapter is bound to its run when created, so a logger obtained in a task and
handed to a helper thread still correlates with that task's span. Every record it makes carries the run's
:class:`~otelflow.logging._runinfo.RunInfo`; the OTel handler on the ``otelflow`` logger turns it into an
OTel log record with the run's trace_id/span_id and attributes.

Example::

    from otelflow import flow, task, get_run_logger

    @task
    def process_data(data):
        get_run_logger().info(f"Processing {len(data)} records")

    @flow
    def data_pipeline():
        get_run_logger().info("Configuration", extra={"batch_size": 1000, "env": "production"})
"""

from __future__ import annotations

import builtins
import logging
import sys
import threading
import time
import uuid
from collections.abc import Mapping, MutableMapping
from contextvars import ContextVar, Token
from typing import Any, Final, cast

from otelflow.exceptions import MissingContextError
from otelflow.logging._runinfo import PLAIN_EMITTERS, RUN_KEY, RunInfo, current_entry, current_run_info
from otelflow.logging.configuration import ensure_configured

__all__ = [
    "LogEavesdropper",
    "PrefectLogAdapter",
    "RunLoggerAdapter",
    "disable_run_logger",
    "flow_run_logger",
    "get_logger",
    "get_run_logger",
    "print_as_log",
    "task_run_logger",
]

ROOT_LOGGER_NAME: Final = "otelflow"
FLOW_RUN_LOGGER_NAME: Final = "otelflow.flow_runs"
TASK_RUN_LOGGER_NAME: Final = "otelflow.task_runs"

# Attributes every stdlib LogRecord has (plus the two makeRecord refuses): ``extra`` may not use them.
_RESERVED_EXTRA_KEYS: Final = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", RUN_KEY}


def get_logger(name: str | None = None) -> logging.Logger:
    """A stdlib logger under the ``otelflow`` hierarchy, for module-level logging.

    Its records go to otelflow's console output and, inside a run, to OTel correlated with the current run.

    Example::

        logger = get_logger(__name__)   # "otelflow.<__name__>"
        logger.info("loaded %d rows", n)
    """
    ensure_configured()
    if not name or name == ROOT_LOGGER_NAME:
        return logging.getLogger(ROOT_LOGGER_NAME)
    if name.startswith(ROOT_LOGGER_NAME + "."):
        return logging.getLogger(name)
    return logging.getLogger(f"{ROOT_LOGGER_NAME}.{name}")


# --- disabling ------------------------------------------------------------------------------------------

# None: enabled. A frozenset: the ids of the runs (task run ids or flow run ids) whose loggers were disabled by
# a plain disable_run_logger() call; a flow's id disables its task runs too.
_disabled: ContextVar[frozenset[uuid.UUID] | None] = ContextVar("otelflow_disabled_run_loggers", default=None)


def _is_disabled(run: RunInfo) -> bool:
    disabled = _disabled.get()
    if disabled is None:
        return False
    return run.run_id in disabled or run.flow_run_id in disabled


_run_logger_pair: tuple[logging.Logger, logging.Logger] | None = None


def _run_loggers() -> tuple[logging.Logger, logging.Logger]:
    """The ``otelflow.flow_runs`` and ``otelflow.task_runs`` loggers (looked up once: getLogger takes a lock)."""
    global _run_logger_pair
    pair = _run_logger_pair
    if pair is None or logging.Logger.manager.loggerDict.get(TASK_RUN_LOGGER_NAME) is not pair[1]:
        pair = _run_logger_pair = (logging.getLogger(FLOW_RUN_LOGGER_NAME), logging.getLogger(TASK_RUN_LOGGER_NAME))
    return pair


class disable_run_logger:
    """Silence run loggers: as a plain call, for the rest of the current run; as ``with``, inside the block.

    Plain call inside a run: the run's logger (and those of task runs it starts afterwards) emits nothing
    for the rest of that run; the caller of the run and sibling runs are not affected. As a context
    manager (Prefect's form): the ``otelflow.flow_runs`` / ``otelflow.task_runs`` loggers are ``disabled``
    inside the block and restored on exit; there, ``get_run_logger()`` outside a run returns a disabled
    logger instead of raising, so a task's ``.fn()`` can be called directly.

    Example::

        @flow
        def quiet():
            disable_run_logger()
            get_run_logger().info("not emitted")

        with disable_run_logger():
            my_flow()   # no run logs
    """

    __slots__ = ("_saved", "_token")

    def __init__(self) -> None:
        self._token: Token[frozenset[uuid.UUID] | None] | None = None
        self._saved: list[tuple[logging.Logger, bool]] | None = None
        run = current_run_info()
        if run is not None and run.run_id is not None:
            # The variable lives in the context the run function runs in; keying it by run id (not a bare
            # flag) keeps it from silencing the caller or sibling runs after this run returns.
            self._token = _disabled.set((_disabled.get() or frozenset()) | {run.run_id})

    def __enter__(self) -> None:
        if self._token is not None:
            # Used as a block: the plain-call effect is replaced by the block's.
            _disabled.reset(self._token)
            self._token = None
        self._saved = [(logger, logger.disabled) for logger in _run_loggers()]
        for logger, _ in self._saved:
            logger.disabled = True

    def __exit__(self, *exc_info: object) -> None:
        if self._saved is not None:
            for logger, was_disabled in self._saved:
                logger.disabled = was_disabled
            self._saved = None
        if self._token is not None:
            _disabled.reset(self._token)
            self._token = None


# --- the run logger ---------------------------------------------------------------------------------------


def _plain_handlers(logger: logging.Logger, level: int) -> list[Any] | None:
    """The handlers a record of ``logger`` at ``level`` would reach, in order, if each is one of otelflow's own
    (its OTel handler, its console handler with the console layout) with no filters, the logger has no filters,
    is not disabled, and records are made by the default factory; else None (also when none would be reached:
    the stdlib's last-resort handler then speaks). Walks the hierarchy as ``Logger.callHandlers`` does."""
    if logger.filters or logger.disabled or logging.getLogRecordFactory() is not logging.LogRecord:
        return None
    found: list[Any] = []
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if level < handler.level:
                continue
            if handler.filters or type(handler) not in PLAIN_EMITTERS or not handler.plain_ok():  # type: ignore[attr-defined]
                return None
            found.append(handler)
        current = current.parent if current.propagate else None
    return found or None


def _log_plain(logger: logging.Logger, run: RunInfo, level: int, msg: object, args: tuple[Any, ...]) -> bool:
    """Log a plain record of ``run`` (the run's own fields, no ``extra`` of the call, no exception) straight to
    otelflow's handlers when they are the only ones it would reach: True when done (or filtered out), False when the
    record must go the stdlib way (another handler, filter or record factory would see it; a bad format)."""
    handlers = _plain_handlers(logger, level)
    if not handlers:
        return False
    if (_disabled.get() is not None and _is_disabled(run)) or not logger.isEnabledFor(level):
        return True
    try:
        message = _message(msg, args)
    except Exception:  # the stdlib path reports it ("--- Logging error ---")
        return False
    now = time.time_ns()
    name = logger.name
    for handler in handlers:
        handler.emit_plain(name, run, level, message, now)
    return True


def log_run_line(level: int, msg: str, *args: object) -> None:
    """The engine's own line of the current run (Prefect's "Finished in state Completed()"): the record
    ``get_run_logger().log(level, msg, *args)`` makes, without making the run's logger when the record is plain.

    Prefect's engine logs these through a run logger of its own, so ``extra`` a task adds to the one
    ``get_run_logger()`` returned never reaches them."""
    ensure_configured()
    entry = current_entry()
    run = entry[1] if entry is not None else None
    if run is None:
        get_run_logger().log(level, msg, *args)  # what get_run_logger() does outside a run
        return
    logger = _run_loggers()[1 if run.is_task else 0]
    if not _log_plain(logger, run, level, msg, args):
        RunLoggerAdapter(logger, None, run).log(level, msg, *args)


def _message(msg: object, args: tuple[Any, ...]) -> str:
    """``LogRecord.getMessage()`` of a record made with these arguments."""
    text = str(msg)
    if args:
        if len(args) == 1 and isinstance(args[0], Mapping) and args[0]:
            return text % args[0]
        return text % args
    return text


class RunLoggerAdapter(logging.LoggerAdapter):  # type: ignore[type-arg]
    """The logger of one flow or task run (Prefect's ``PrefectLogAdapter``).

    ``extra`` is Prefect's: the run's fields (``flow_run_name``, ``flow_run_id``, ``flow_name``,
    ``deployment_name`` for a flow run; ``task_run_id``, ``flow_run_id``, ``task_run_name``, ``task_name``,
    ``flow_run_name``, ``flow_name`` for a task run) then the keyword arguments given to :func:`get_run_logger`.
    Every record carries them, and the ``extra`` of the call, which wins; the record is exported as an OTel
    log record correlated with the run's span (``run``, kept on the adapter, not in ``extra``).
    """

    run: RunInfo | None

    def __init__(
        self, logger: logging.Logger, extra: Mapping[str, object] | None = None, run: RunInfo | None = None
    ) -> None:
        merged: dict[str, object] = dict(run.extra) if run is not None else {}
        if extra:
            merged.update(extra)
            _check_extra(merged)
        super().__init__(logger, merged)
        self.run = run

    def isEnabledFor(self, level: int) -> bool:
        """False when the level is filtered out or the run logger is disabled."""
        if self.run is not None and _disabled.get() is not None and _is_disabled(self.run):
            return False
        return bool(self.logger.isEnabledFor(level))

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        """Log as ``logging.LoggerAdapter.log`` does. A plain record of the run (no keyword arguments, the run's own
        ``extra``) whose only handler is otelflow's OTel handler is exported without building a stdlib
        ``LogRecord``: nothing else (no other handler, filter or record factory) would see it, and half of a
        record's cost is the stdlib's making of one (the caller's frame, thirty fields)."""
        run = self.run
        if (not kwargs and run is not None and len(self.extra) == len(run.extra)  # type: ignore[arg-type]
                and _log_plain(self.logger, run, level, msg, args)):
            return
        # logging.LoggerAdapter.log, with this frame (not in logging's own file, so not skipped by findCaller)
        # counted: the record names the caller's function and line, as it would without this override.
        if self.isEnabledFor(level):
            msg, processed = self.process(msg, kwargs)
            processed["stacklevel"] = processed.get("stacklevel", 1) + 1
            self.logger.log(level, msg, *args, **processed)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        """The record's ``extra``: the adapter's, then the call's (as Prefect's), plus the run for the handlers."""
        extra = kwargs.get("extra")
        if extra:
            _check_extra(extra)
            merged = {**self.extra, **extra}  # type: ignore[dict-item]
        else:
            # A new dict per record, as Prefect's: changes made to ``self.extra`` apply to later records.
            merged = {**self.extra}  # type: ignore[dict-item]
        if self.run is not None:
            merged[RUN_KEY] = self.run
        kwargs["extra"] = merged
        return msg, kwargs

    def getChild(self, suffix: str, extra: Mapping[str, object] | None = None) -> RunLoggerAdapter:
        """A run logger for a child logger name, with more ``extra`` (Prefect's API)."""
        return RunLoggerAdapter(self.logger.getChild(suffix), {**self.extra, **(extra or {})}, self.run)  # type: ignore[dict-item]


PrefectLogAdapter = RunLoggerAdapter


def _check_extra(extra: Mapping[str, object]) -> None:
    if not _RESERVED_EXTRA_KEYS.isdisjoint(extra):
        clash = sorted(k for k in extra if k in _RESERVED_EXTRA_KEYS)
        raise KeyError(
            f"extra key(s) {clash} would overwrite attributes of logging.LogRecord; rename them "
            f"(for example {clash[0]!r} -> '{clash[0]}_')."
        )


# Prefect's words, so code matching the message keeps working.
_NO_RUN_MESSAGE: Final = "There is no active flow or task run context."


def _run_info_from(context: object) -> RunInfo | None:
    from otelflow.context import FlowRunContext, TaskRunContext
    from otelflow.logging._runinfo import run_info_for

    if isinstance(context, TaskRunContext):
        return run_info_for(context, FlowRunContext.get())
    if isinstance(context, FlowRunContext):
        task_ctx = TaskRunContext.get()
        flow_run, task_run = context.flow_run, task_ctx.task_run if task_ctx is not None else None
        if task_run is None or flow_run is None or task_run.flow_run_id != flow_run.id:
            task_ctx = None  # a task run logger only for a task of this flow run
        return run_info_for(task_ctx, context)
    raise TypeError(
        f"Received unexpected type {type(context).__name__!r} for context. "
        "Expected one of 'None', 'FlowRunContext', or 'TaskRunContext'."
    )


def _no_run_logger(kwargs: Mapping[str, object]) -> RunLoggerAdapter | logging.Logger:
    """What get_run_logger() gives where no run is current: Prefect's answers, else MissingContextError."""
    from otelflow.context import FlowRunContext

    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is None:
        # A flow run context made by hand, without a run (Prefect: a logger that says so).
        flow_name = flow_ctx.flow.name if flow_ctx.flow is not None else "<unknown>"
        unknown = {"flow_run_name": "<unknown>", "flow_run_id": "<unknown>", "flow_name": flow_name,
                   "deployment_name": None}
        return RunLoggerAdapter(_run_loggers()[0], {**unknown, **kwargs})
    if all(logger.disabled for logger in _run_loggers()):
        null = logging.getLogger("null")
        null.disabled = True
        return null
    raise MissingContextError(_NO_RUN_MESSAGE)


def get_run_logger(context: object = None, **kwargs: object) -> RunLoggerAdapter | logging.Logger:
    """The logger of the current task run (else flow run); its records are correlated with the run's span.

    Prefect's signature: ``context`` overrides the run (a ``FlowRunContext`` or ``TaskRunContext``; anything
    else raises ``TypeError``); ``kwargs`` are added to the logger's ``extra``, so every record carries them
    (exported as attributes). Raises :class:`~otelflow.exceptions.MissingContextError` outside any run, except
    inside :func:`~otelflow.context.hydrated_context` with a remote run identity, where the records correlate
    with the remote run's span, and inside ``with disable_run_logger():``, where it returns a disabled logger.

    Example::

        @task
        def extract():
            logger = get_run_logger(source="s3")
            logger.info("extracted %d rows", 3, extra={"table": "orders"})
    """
    ensure_configured()
    entry: list[Any] | None = None
    if context:  # Prefect tests truthiness: None, "" and other falsy values mean the current run
        run = _run_info_from(context)
    else:
        entry = current_entry()
        if entry is None:
            run = None
        elif kwargs:
            run = entry[1]
        elif entry[2] is not None and entry[2].extra == entry[1].extra:
            # The run's default logger, made once per run; made anew once its ``extra`` was changed: in Prefect
            # each call returns a new logger, so a key added to one never shows on the next.
            return cast(RunLoggerAdapter, entry[2])
        else:
            run = entry[1]
    if run is None:
        return _no_run_logger(kwargs)
    flow_runs, task_runs = _run_loggers()
    adapter = RunLoggerAdapter(task_runs if run.is_task else flow_runs, kwargs, run)
    if entry is not None and not kwargs:
        entry[2] = adapter
    return adapter


# --- print() as run log -------------------------------------------------------------------------------

_log_prints: ContextVar[bool] = ContextVar("otelflow_log_prints", default=False)
_original_print: Any = builtins.print


def flow_run_logger(
    flow_run: Any = None, flow: Any = None, flow_run_id: Any = None, **kwargs: object
) -> RunLoggerAdapter:
    """A logger for a flow run (Prefect's ``flow_run_logger``, e.g. in a state hook), with Prefect's ``extra``.

    Takes the run, or only its id (then the names are ``"<unknown>"``); ``ValueError`` without either. Its records
    correlate with whatever span is current where they are logged (inside a hook: the run's).
    """
    if flow_run is None and flow_run_id is None:
        raise ValueError("Either 'flow_run' or 'flow_run_id' must be provided.")
    ensure_configured()  # a hook may be the first to log in this process (run events off, no get_run_logger)
    extra: dict[str, object] = {
        "flow_run_name": flow_run.name if flow_run else "<unknown>",
        "flow_run_id": str(flow_run.id if flow_run is not None else flow_run_id),
        "flow_name": flow.name if flow else "<unknown>",
        "deployment_name": None,  # otelflow has no deployments
        **kwargs,
    }
    return RunLoggerAdapter(_run_loggers()[0], extra)


def task_run_logger(
    task_run: Any, task: Any = None, flow_run: Any = None, flow: Any = None, **kwargs: object
) -> RunLoggerAdapter:
    """A logger for a task run (Prefect's ``task_run_logger``); the flow run and flow default to the current ones."""
    ensure_configured()
    if not flow_run or not flow:
        from otelflow.context import FlowRunContext

        context = FlowRunContext.get()
        if context is not None:
            flow_run = flow_run or context.flow_run
            flow = flow or context.flow
    extra: dict[str, object] = {
        "task_run_id": str(task_run.id),
        "flow_run_id": str(task_run.flow_run_id) if task_run.flow_run_id is not None else None,
        "task_run_name": task_run.name,
        "task_name": task.name if task else "<unknown>",
        "flow_run_name": flow_run.name if flow_run else "<unknown>",
        "flow_name": flow.name if flow else "<unknown>",
        **kwargs,
    }
    return RunLoggerAdapter(_run_loggers()[1], extra)


def _print(
    *args: Any, sep: str | None = " ", end: str | None = "\n", file: Any = None, flush: bool = False
) -> None:
    # Installed once as builtins.print; a context var says whether *this* context's prints are run logs, so
    # other threads and contexts printing at the same time print normally.
    # Prefect's rule: prints to stdout or stderr (or no file) become run logs, with sep and end as print would
    # write them, trailing whitespace stripped; a print to any other file is a print.
    if (file is None or file is sys.stdout or file is sys.stderr) and _log_prints.get():
        run = current_run_info()
        if run is not None and not _is_disabled(run):
            adapter = get_run_logger()
            text = (" " if sep is None else sep).join(map(str, args)) + ("\n" if end is None else end)
            # stacklevel=2: the record names the user's function and line, not this hook.
            adapter.info(text.rstrip(), stacklevel=2)
            return
    _original_print(*args, sep=sep, end=end, file=file, flush=flush)


_install_lock = threading.Lock()


def _install_print() -> None:
    global _original_print
    if builtins.print is _print:
        return
    with _install_lock:
        if builtins.print is not _print:
            # Whatever print was in place (the builtin, or another tool's wrapper) stays the fallback.
            _original_print = builtins.print
            builtins.print = _print


class print_as_log:
    """While entered, ``print()`` calls made in this context go to the current run logger at INFO.

    The engine enters it around runs with ``log_prints=True`` (and ``print_as_log(False)`` around runs that
    opt out under a parent that logs prints). Prints with an explicit ``file=`` print normally (as in
    Prefect), and so do prints from other threads or contexts.
    """

    __slots__ = ("_enabled", "_token")

    def __init__(self, enabled: bool = True) -> None:
        self._enabled = enabled
        self._token: Token[bool] | None = None

    @staticmethod
    def active() -> bool:
        """Whether prints in this context currently go to the run logger."""
        return _log_prints.get()

    def __enter__(self) -> None:
        if self._enabled:
            _install_print()
        self._token = _log_prints.set(self._enabled)

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _log_prints.reset(self._token)
            self._token = None


# --- eavesdropping ---------------------------------------------------------------------------------------


class LogEavesdropper(logging.Handler):
    """Capture the records of one logger (and its children) inside a ``with`` block.

    ``level`` also lowers the logger's level for the block (so ``DEBUG`` captures debug records).

    Example::

        with LogEavesdropper("otelflow.task_runs", level=logging.INFO) as eavesdropper:
            my_flow()
        print(eavesdropper.text())   # one message per line
    """

    def __init__(self, eavesdrop_on: str | logging.Logger, level: int = logging.NOTSET) -> None:
        super().__init__(level=level)
        self.eavesdrop_on = eavesdrop_on.name if isinstance(eavesdrop_on, logging.Logger) else eavesdrop_on
        self._records: list[logging.LogRecord] = []
        self._target: logging.Logger | None = None
        self._original_level = logging.NOTSET
        # Prefect's minimal format: nothing environmental (file names, versions) leaks into what users show.
        self.setFormatter(logging.Formatter("[%(levelname)s]: %(message)s"))

    def __enter__(self) -> LogEavesdropper:
        if self.eavesdrop_on == ROOT_LOGGER_NAME or self.eavesdrop_on.startswith(ROOT_LOGGER_NAME + "."):
            ensure_configured()  # so configuring later cannot reset the level set here
        self._target = logging.getLogger(self.eavesdrop_on)
        self._original_level = self._target.level
        if self.level != logging.NOTSET:
            self._target.setLevel(self.level)
        self._records = []
        self._target.addHandler(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._target is not None:
            self._target.removeHandler(self)
            self._target.setLevel(self._original_level)
            self._target = None

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record."""
        self._records.append(record)

    def get_logs(self) -> list[logging.LogRecord]:
        """The records captured so far, in order."""
        return list(self._records)

    def text(self) -> str:
        """The captured records one per line, as ``[LEVEL]: message`` (Prefect's format)."""
        return "\n".join(self.format(record) for record in self._records)

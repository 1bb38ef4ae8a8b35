"""Every wire-visible name otelflow emits: span names, attribute, baggage, event and metric names.

Nothing else in otelflow spells one of these strings inline; dashboards, collector configs and tests
are checked against the names defined here (and against telemetry captured from real runs).
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "ARTIFACT_DESCRIPTION",
    "ARTIFACT_ID",
    "ARTIFACT_KEY",
    "ARTIFACT_PROGRESS",
    "ARTIFACT_TYPE",
    "ATTRIBUTE_KEYS",
    "BAGGAGE_KEYS",
    "BAGGAGE_MAX_BYTES",
    "BAGGAGE_MAX_MEMBERS",
    "CACHE_EXPIRATION",
    "CACHE_ISOLATION_LEVEL",
    "CACHE_KEY",
    "CACHE_OUTCOME",
    "CACHE_OUTCOMES",
    "CACHE_POLICY",
    "CODE_FILE_PATH",
    "CODE_FUNCTION_NAME",
    "CODE_LINE_NUMBER",
    "CONCURRENCY_MODE",
    "CONCURRENCY_NAMES",
    "CONCURRENCY_OCCUPY",
    "CONCURRENCY_WAIT_SECONDS",
    "ERROR_TYPE",
    "EVENT_ARTIFACT",
    "EVENT_ARTIFACT_UPDATED",
    "EVENT_CONCURRENCY_ACQUIRED",
    "EVENT_HOOK",
    "EVENT_INPUT_RECEIVED",
    "EVENT_PAUSED",
    "EVENT_RESULT_PERSIST_FAILED",
    "EVENT_RESUMED",
    "EVENT_RETRY",
    "EVENT_TRANSACTION_COMMIT",
    "EVENT_TRANSACTION_HOOK_FAILED",
    "EVENT_TRANSACTION_ROLLBACK",
    "EXCEPTION_MESSAGE",
    "EXCEPTION_STACKTRACE",
    "EXCEPTION_TYPE",
    "FLOW_NAME",
    "FLOW_RUN_ID",
    "FLOW_RUN_NAME",
    "HOOK_KIND",
    "HOOK_NAME",
    "HOOK_OUTCOME",
    "HOOK_STATE",
    "INPUT_NAME",
    "INPUT_TYPE",
    "INSTRUMENTATION_NAME",
    "METRIC_RUNS",
    "METRIC_RUN_DURATION",
    "NAMESPACE",
    "PARAMETER_PREFIX",
    "PAUSE_KEY",
    "PAUSE_TIMEOUT",
    "PENDING_PARENT_SPAN_ID",
    "RESULT_PERSISTED",
    "RESULT_SERIALIZER",
    "RESULT_STORAGE",
    "RUN_ATTEMPT",
    "RUN_ID",
    "RUN_INPUT_KEY",
    "RUN_INPUT_KEY_PREFIX",
    "RUN_INPUT_SENDER",
    "RUN_INPUT_VALUE",
    "RUN_NAME",
    "RUN_STATE",
    "RUN_TYPE",
    "SPAN_PENDING",
    "STORE_BACKEND",
    "TAGS",
    "TASK_CACHED",
    "TASK_MAP_INDEX",
    "TASK_NAME",
    "TASK_RUN_ID",
    "TASK_RUN_NAME",
    "TRANSACTION_COMMIT_MODE",
    "TRANSACTION_HOOK_KIND",
    "TRANSACTION_HOOK_NAME",
    "TRANSACTION_ISOLATION_LEVEL",
    "TRANSACTION_KEY",
    "TRANSACTION_OUTCOME",
    "TRANSACTION_OUTCOMES",
    "TRANSACTION_SPAN_NAME",
    "flow_span_name",
    "loki_name",
    "prometheus_name",
    "task_span_name",
    "transaction_span_name",
]

NAMESPACE: Final = "otelflow"
INSTRUMENTATION_NAME: Final = "otelflow"


def _k(suffix: str) -> str:
    return f"{NAMESPACE}.{suffix}"


# --- run attributes (spans, log records, baggage) -------------------------------------------------
RUN_TYPE: Final = _k("run.type")  # "flow" | "task"
RUN_ID: Final = _k("run.id")
RUN_NAME: Final = _k("run.name")
RUN_ATTEMPT: Final = _k("run.attempt")  # 1-based
RUN_STATE: Final = _k("run.state")  # final state name
FLOW_NAME: Final = _k("flow.name")
FLOW_RUN_ID: Final = _k("flow_run.id")
FLOW_RUN_NAME: Final = _k("flow_run.name")
TASK_NAME: Final = _k("task.name")
TASK_RUN_ID: Final = _k("task_run.id")
TASK_RUN_NAME: Final = _k("task_run.name")
TASK_MAP_INDEX: Final = _k("task.map_index")
TAGS: Final = _k("tags")  # string array on spans/logs, comma-separated in baggage
PARAMETER_PREFIX: Final = _k("parameter.")
TRANSACTION_KEY: Final = _k("transaction.key")
TASK_CACHED: Final = _k("task.cached")  # True when the run returned a cached or a transaction-recorded result
# Span links from a task run to the runs that produced its inputs (Prefect: prefect.input.name / .type).
INPUT_NAME: Final = _k("input.name")
INPUT_TYPE: Final = _k("input.type")
# An early zero-duration record of a running run's span (a child of it), superseded by the real span.
SPAN_PENDING: Final = _k("span.pending")
PENDING_PARENT_SPAN_ID: Final = _k("pending.parent_span_id")

RUN_TYPE_FLOW: Final = "flow"
RUN_TYPE_TASK: Final = "task"

# --- OpenTelemetry semantic conventions we set ------------------------------------------------------
CODE_FUNCTION_NAME: Final = "code.function.name"
CODE_FILE_PATH: Final = "code.file.path"
CODE_LINE_NUMBER: Final = "code.line.number"
ERROR_TYPE: Final = "error.type"
EXCEPTION_TYPE: Final = "exception.type"
EXCEPTION_MESSAGE: Final = "exception.message"
EXCEPTION_STACKTRACE: Final = "exception.stacktrace"

# --- span events -----------------------------------------------------------------------------------
# State transitions are events named after the state ("Running", "Retrying", ...); see states.py.
EVENT_RETRY: Final = "Retrying"
EVENT_ATTR_DELAY: Final = _k("retry.delay_seconds")
# One event per state hook called (on_completion, on_failure, on_crashed, on_cancellation, on_running): which
# hook, for which state, and how it ended ("completed" | "failed", then with exception.type / exception.message).
EVENT_HOOK: Final = "hook"
HOOK_NAME: Final = _k("hook.name")
HOOK_KIND: Final = _k("hook.kind")  # "on_completion" | "on_failure" | "on_crashed" | "on_cancellation" | "on_running"
HOOK_STATE: Final = _k("hook.state")  # the name of the state the hook responded to
HOOK_OUTCOME: Final = _k("hook.outcome")  # "completed" | "failed"

# --- transactions (otelflow.transactions) ----------------------------------------------------------
# Span ``transaction {key}`` (``transaction`` without a key); its task runs carry TRANSACTION_KEY.
TRANSACTION_SPAN_NAME: Final = "transaction"
TRANSACTION_OUTCOME: Final = _k("transaction.outcome")  # one of TRANSACTION_OUTCOMES
# committed: written; rolled_back; cached: the key was already committed, its tasks replayed;
# deferred: a child transaction handed its commit to its parent (the parent's events say how it ended).
TRANSACTION_OUTCOMES: Final = ("committed", "rolled_back", "cached", "deferred")
TRANSACTION_ISOLATION_LEVEL: Final = _k("transaction.isolation_level")
TRANSACTION_COMMIT_MODE: Final = _k("transaction.commit_mode")
STORE_BACKEND: Final = _k("store.backend")  # "sqlite" | "redis"
EVENT_TRANSACTION_COMMIT: Final = "transaction.commit"
EVENT_TRANSACTION_ROLLBACK: Final = "transaction.rollback"
EVENT_TRANSACTION_HOOK_FAILED: Final = "transaction.hook_failed"  # + exception.* attributes
TRANSACTION_HOOK_NAME: Final = _k("transaction.hook.name")
TRANSACTION_HOOK_KIND: Final = _k("transaction.hook.kind")  # "commit" | "rollback"

# --- task cache and persisted results (otelflow.results, otelflow.cache_policies) ------------------------
# On the task span. The key is a policy's hex digest, or "md5:<digest>" of a custom key: never the inputs.
CACHE_KEY: Final = _k("cache.key")
CACHE_POLICY: Final = _k("cache.policy")  # e.g. "INPUTS+TASK_SOURCE", "CacheKeyFnPolicy(my_key_fn)"
CACHE_OUTCOME: Final = _k("cache.outcome")  # one of CACHE_OUTCOMES
# hit: the stored result was returned, the function not called; miss: no entry; expired: an entry past its
# cache_expiration; refresh: refresh_cache=True skipped the lookup; unreadable: an entry whose result could not be
# read back (a warning says why); no_key: the policy gave no key (NO_CACHE, or an error computing it).
CACHE_OUTCOMES: Final = ("hit", "miss", "expired", "refresh", "unreadable", "no_key")
CACHE_EXPIRATION: Final = _k("cache.expiration")  # ISO 8601 UTC, when the entry stops being used
CACHE_ISOLATION_LEVEL: Final = _k("cache.isolation_level")  # "SERIALIZABLE" when the key was locked
RESULT_PERSISTED: Final = _k("result.persisted")  # True when the result was written (False: it failed, see event)
RESULT_STORAGE: Final = _k("result.storage")  # the folder, or the store URL with its password redacted
RESULT_SERIALIZER: Final = _k("result.serializer")  # "pickle", "json", "compressed/pickle"...
EVENT_RESULT_PERSIST_FAILED: Final = "result.persist_failed"  # + exception.* attributes; the run still completes

# --- flow run input and pauses (otelflow.input, otelflow.flow_runs) -----------------------------------
# A run waiting for input is Paused: state events on the flow span, named after the states.
EVENT_PAUSED: Final = "Paused"
EVENT_RESUMED: Final = "Resumed"  # the run is Running again; named so that it reads as the end of the pause
EVENT_INPUT_RECEIVED: Final = "run_input.received"  # key and sender; the value only when parameter values are on
RUN_INPUT_KEY: Final = _k("run_input.key")
RUN_INPUT_KEY_PREFIX: Final = _k("run_input.key_prefix")
RUN_INPUT_SENDER: Final = _k("run_input.sender")
RUN_INPUT_VALUE: Final = _k("run_input.value")
PAUSE_KEY: Final = _k("pause.key")
PAUSE_TIMEOUT: Final = _k("pause.timeout_seconds")

# --- artifacts (otelflow.artifacts) ----------------------------------------------------------------
# One "artifact" event on the span of the run that made it (and one run log record with the same attributes):
# which artifact, never its data. The data is in the store (namespace "artifacts"); `otelflow artifacts show`.
EVENT_ARTIFACT: Final = "artifact"
EVENT_ARTIFACT_UPDATED: Final = "artifact.updated"  # update_progress_artifact: id, type, key, progress
ARTIFACT_ID: Final = _k("artifact.id")  # the artifact's UUID
ARTIFACT_KEY: Final = _k("artifact.key")  # only for keyed artifacts ([a-z0-9-])
ARTIFACT_TYPE: Final = _k("artifact.type")  # "markdown" (links too) | "table" | "progress" | "image" | custom
ARTIFACT_DESCRIPTION: Final = _k("artifact.description")  # passwords masked, cut to 256 characters
ARTIFACT_PROGRESS: Final = _k("artifact.progress")  # progress artifacts: percent, 0 to 100

# --- concurrency (otelflow.concurrency) -------------------------------------------------------------
# One event on the current span each time concurrency()/rate_limit() (or a tag limit) gets its slots: how long
# it waited answers "why was this task slow". Names are the limits asked for; occupy is slots per limit.
EVENT_CONCURRENCY_ACQUIRED: Final = "concurrency.acquired"
CONCURRENCY_NAMES: Final = _k("concurrency.names")  # string[]: the limit names (tag limits: "tag:<tag>")
CONCURRENCY_OCCUPY: Final = _k("concurrency.occupy")  # int: slots taken on each limit
CONCURRENCY_WAIT_SECONDS: Final = _k("concurrency.wait_seconds")  # float: time spent waiting for the slots
CONCURRENCY_MODE: Final = _k("concurrency.mode")  # "concurrency" | "rate_limit"

# --- span names (low cardinality: never run names or ids) ------------------------------------------


def flow_span_name(flow_name: str) -> str:
    """Span name of a flow run: ``flow {flow_name}``."""
    return f"flow {flow_name}"


def task_span_name(task_name: str) -> str:
    """Span name of a task run: ``task {task_name}``."""
    return f"task {task_name}"


def transaction_span_name(key: str) -> str:
    """Span name of a transaction: ``transaction {key}``."""
    return f"transaction {key}"


# --- baggage: what crosses process and service boundaries -------------------------------------------
BAGGAGE_KEYS: Final = (FLOW_RUN_ID, FLOW_RUN_NAME, FLOW_NAME, TASK_RUN_ID, TASK_RUN_NAME, TAGS)
# W3C baggage limits (https://www.w3.org/TR/baggage/#limits).
BAGGAGE_MAX_MEMBERS: Final = 64
BAGGAGE_MAX_BYTES: Final = 8192

# Every run attribute a span or log record may carry (parameters excluded: they are prefixed).
ATTRIBUTE_KEYS: Final = (
    RUN_TYPE,
    RUN_ID,
    RUN_NAME,
    RUN_ATTEMPT,
    RUN_STATE,
    FLOW_NAME,
    FLOW_RUN_ID,
    FLOW_RUN_NAME,
    TASK_NAME,
    TASK_RUN_ID,
    TASK_RUN_NAME,
    TASK_MAP_INDEX,
    TAGS,
)

# --- metrics -----------------------------------------------------------------------------------------
# Histogram, unit "s"; attributes: run.type, flow.name, task.name (task runs), run.state.
METRIC_RUN_DURATION: Final = _k("run.duration")
METRIC_RUN_DURATION_UNIT: Final = "s"
# Counter of finished runs, unit "{run}"; same attributes.
METRIC_RUNS: Final = _k("runs")
METRIC_RUNS_UNIT: Final = "{run}"


def loki_name(attribute_key: str) -> str:
    """The name Loki's native OTLP ingestion gives an attribute (structured metadata / label).

    Loki replaces every character that is not ``[a-zA-Z0-9_]`` with ``_``.
    """
    return "".join(c if (c.isascii() and (c.isalnum() or c == "_")) else "_" for c in attribute_key)


def prometheus_name(metric_name: str, unit: str, *, counter: bool = False) -> str:
    """The base name the Collector's Prometheus exporter gives an OTel metric (with unit/type suffixes).

    ``otelflow.run.duration`` (unit ``s``, histogram) -> ``otelflow_run_duration_seconds``
    (series ``_bucket``/``_sum``/``_count``); ``otelflow.runs`` (counter) -> ``otelflow_runs_total``.
    Units in braces (``{run}``) are annotations and add no suffix.
    """
    base = loki_name(metric_name)
    units = {"s": "seconds", "ms": "milliseconds", "By": "bytes", "1": "ratio"}
    suffix = "" if unit.startswith("{") else units.get(unit, unit)
    if suffix and not base.endswith(f"_{suffix}"):
        base = f"{base}_{suffix}"
    if counter:
        base = f"{base}_total"
    return base

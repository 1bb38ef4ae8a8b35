"""Every wire-visible name otelflow emits: span names, attribute, baggage, event and metric names.

Nothing else in otelflow spells one of these strings inline; dashboards, collector configs and tests
are checked against the names defined here (and against telemetry captured from real runs).
"""

from __future__ import annotations

import re
import unicodedata
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
    "RUN_RETRIES",
    "RUN_STATE",
    "RUN_STATE_MESSAGE",
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
RUN_STATE: Final = _k("run.state")  # final state name (a pending record's: "Paused" while it waits)
# On a pending record of a paused run: what it waits for ("Waiting for input 'approve'...").
RUN_STATE_MESSAGE: Final = _k("run.state_message")
# On a Retrying event: how many retries the run may make (Prefect's "Retry 1/3" denominator).
RUN_RETRIES: Final = _k("run.retries")
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
# An early (1 µs) record of a running run's span (a child of it), superseded by the real span.
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


# --- names in the backends ---------------------------------------------------------------------------
# Both backends name things with github.com/prometheus/otlptranslator v1.0.0 (tag commit 57de713e8b6c): Loki 3.7.x
# requires it (go.mod of every v3.7.0..v3.7.6 tag and of the release-3.7.x branch at 2e1f7f28df98), and so does the
# Collector's `prometheus` exporter of contrib v0.158.0 (exporter/prometheusexporter/go.mod, tag commit
# 821a9d9c2c16). Label names and metric names follow different rules there, hence two helpers.
_ASCII_ALNUM: Final = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ASCII_DIGITS: Final = frozenset("0123456789")
_METRIC_NAME_CHARS: Final = _ASCII_ALNUM | {":"}
# Go's unicode.IsSpace, which strings.TrimSpace trims: Latin-1 \t \n \v \f \r space NEL NBSP, and above Latin-1
# the White_Space characters (those of categories Zs, Zl and Zp). Python's str.strip() also trims U+001C..U+001F.
_GO_LATIN1_SPACE: Final = frozenset("\t\n\v\f\r \x85\xa0")
_UNIT_SUFFIXES: Final = {  # otlptranslator metric_namer.go unitMap; "1" is dimensionless: no suffix
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
_PER_UNIT_SUFFIXES: Final = {  # otlptranslator metric_namer.go perUnitMap (the unit after "/")
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}


def _one_underscore_per_run(text: str, keep: frozenset[str]) -> str:
    """``text`` with each run of characters not in ``keep`` (``_`` included) replaced by a single ``_``."""
    out: list[str] = []
    for char in text:
        if char in keep:
            out.append(char)
        elif not out or out[-1] != "_":
            out.append("_")
    return "".join(out)


def loki_name(attribute_key: str) -> str:
    """The name Loki's native OTLP ingestion gives an attribute (index label or structured metadata).

    Loki 3.7.x (``pkg/loghttp/push/otlp.go``, ``attributeToLabels``; the distributor applies the same function
    again to every structured metadata name) calls ``otlptranslator.LabelNamer{}.Build`` -- the zero value: no
    UTF-8 names, no ``key`` prefix for a leading ``_``, runs of ``_`` collapsed -- of
    github.com/prometheus/otlptranslator v1.0.0 (``label_namer.go``, ``strconv.go`` ``sanitizeLabelName``).
    No Loki setting changes it: ``limits_config.otlp_config`` only chooses index label, structured metadata or
    drop. The rules:

    - every run of characters other than the ASCII letters and digits -- ``_`` itself included, and any
      non-ASCII letter or digit (``é``, ``字``, ``²``) -- becomes one ``_``: ``label.name__with&&special##chars``
      -> ``label_name_with_special_chars``, ``otelflow.parameter.a__b`` -> ``otelflow_parameter_a_b``. A leading
      or trailing run stays as one ``_`` (``trailing_underscores___`` -> ``trailing_underscores_``);
    - a key of at least 4 characters that starts and ends with ``__`` is "reserved": its inside is cleaned as
      above and the ``__`` kept on both sides (``__reserved__label__name__`` -> ``__reserved_label_name__``);
      ``__name`` is not reserved and becomes ``_name``;
    - a name that then starts with a digit gets ``key_`` in front (``123label`` -> ``key_123label``); one
      that starts with ``_`` keeps it (``_label`` -> ``_label``);
    - an empty key, or one whose name would be underscores only (``__``, ``ようこそ``, ``..``), is an error,
      and Loki answers the whole push request with 400: this function raises :class:`ValueError` for it.

    Map-valued attributes are flattened by Loki first: ``parent_child`` (the parent's name, ``_``, the child
    key), then named by these rules.
    """
    if not attribute_key:
        raise ValueError("Loki rejects an empty attribute name (otlptranslator: label name is empty)")
    if len(attribute_key) >= 4 and attribute_key.startswith("__") and attribute_key.endswith("__"):
        name = "__" + _one_underscore_per_run(attribute_key[2:-2], _ASCII_ALNUM) + "__"
    else:
        name = _one_underscore_per_run(attribute_key, _ASCII_ALNUM)
    if name[0] in _ASCII_DIGITS:
        name = "key_" + name
    if not name.strip("_"):
        raise ValueError(f"Loki rejects attribute {attribute_key!r}: its name would be {name!r}, underscores only")
    return name


def _go_trim_space(text: str) -> str:
    def space(char: str) -> bool:
        return char in _GO_LATIN1_SPACE or (char > "\xff" and unicodedata.category(char) in ("Zs", "Zl", "Zp"))

    start, end = 0, len(text)
    while start < end and space(text[start]):
        start += 1
    while end > start and space(text[end - 1]):
        end -= 1
    return text[start:end]


def _unit_tokens(unit: str) -> tuple[str, str]:
    """The main and the "per" unit suffix of an OTel unit (``By/s`` -> ``bytes``, ``per_second``), cleaned."""
    main_unit, slash, per_unit = unit.partition("/")
    main = _go_trim_space(main_unit)
    main = "" if not main or "{" in main or "}" in main else _UNIT_SUFFIXES.get(main, main)
    per = ""
    if slash and per_unit:
        per_unit = _go_trim_space(per_unit)
        if per_unit and "{" not in per_unit and "}" not in per_unit:
            per = _PER_UNIT_SUFFIXES.get(per_unit, per_unit)
        if per:
            per = "per_" + per

    def clean(suffix: str) -> str:  # invalid characters to "_", runs of "_" to one, then no leading "_"
        return _one_underscore_per_run(suffix, _METRIC_NAME_CHARS).removeprefix("_")

    return clean(main), clean(per)


def _prometheus_metric_name(metric_name: str, unit: str, *, counter: bool) -> str:
    """otlptranslator v1.0.0 ``MetricNamer{WithMetricSuffixes: true}.Build`` without a namespace, UTF-8 off.

    ``metric_namer.go`` ``normalizeName`` and ``unit_namer.go`` ``buildUnitSuffixes`` / ``cleanUpUnit``.
    """
    tokens = [t for t in re.split(r"[^a-zA-Z0-9:]", metric_name) if t]
    main, per = _unit_tokens(unit)
    if main in tokens:
        main = ""
    if per == "per_":
        per = ""
    else:
        per = per.removesuffix("_")
        if per in tokens:
            per = ""
    if per:
        main = main.removesuffix("_")
    tokens += [suffix for suffix in (main, per) if suffix]
    if counter:
        tokens = [t for t in tokens if t != "total"] + ["total"]
    name = "_".join(tokens)
    if not name.strip("_"):
        raise ValueError(f"the Prometheus exporter cannot name metric {metric_name!r} (the name would be empty)")
    if name[0] in _ASCII_DIGITS:
        name = "_" + name
    return name


def prometheus_name(metric_name: str, unit: str, *, counter: bool = False) -> str:
    """The base name the Collector's Prometheus exporter gives an OTel metric (with unit/type suffixes).

    ``otelflow.run.duration`` (unit ``s``, histogram) -> ``otelflow_run_duration_seconds``
    (series ``_bucket``/``_sum``/``_count``); ``otelflow.runs`` (counter) -> ``otelflow_runs_total``.

    The exporter (opentelemetry-collector-contrib v0.158.0, exporter/prometheusexporter/collector.go, with
    ``translation_strategy: UnderscoreEscapingWithSuffixes`` and no ``namespace``) names metrics with
    ``otlptranslator.MetricNamer{WithMetricSuffixes: true}`` of github.com/prometheus/otlptranslator v1.0.0
    (``metric_namer.go`` ``normalizeName``, ``unit_namer.go``), whose rules are not the label rules of
    :func:`loki_name`:

    - the name is split on every character other than ASCII letters, digits and ``:`` (``_`` included) and
      the non-empty pieces joined with ``_``: runs collapse, leading and trailing ones vanish, and colons stay
      (``metric@@##$$name`` -> ``metric_name``; ``a:b`` -> ``a:b``, where a label would be ``a_b``);
    - the unit adds a suffix unless the name already has it as a piece: ``s`` -> ``seconds``, ``By`` -> ``bytes``,
      ``ms``, ``h``, ``%`` -> ``percent``...; ``X/Y`` adds ``X``'s and ``per_Y`` (``By/s`` ->
      ``bytes_per_second``); ``1`` and units in braces (``{run}``, ``By/{req}``) add nothing; an unknown unit
      is itself the suffix, cleaned like the name (``unit@with#special/chars`` ->
      ``unit_with_special_per_chars``);
    - ``counter=True`` (a monotonic sum) moves any ``total`` piece to the end, or adds ``_total``;
    - a name that starts with a digit gets ``_`` in front (``123metric`` -> ``_123metric``; a label: ``key_``);
    - a name with nothing left is an error: :class:`ValueError`.

    ``counter=False`` is any other kind but a gauge: histograms, summaries, non-monotonic sums. (A gauge of
    unit ``1`` would also get ``_ratio``; otelflow defines no gauge.)
    """
    return _prometheus_metric_name(metric_name, unit, counter=counter)

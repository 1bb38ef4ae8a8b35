"""The names Loki and the Collector's Prometheus exporter give otelflow's attributes and metrics.

Both backends name things with github.com/prometheus/otlptranslator v1.0.0: Loki 3.7.x through
``LabelNamer{}.Build`` (pkg/loghttp/push/otlp.go), the contrib v0.158.0 ``prometheus`` exporter through
``MetricNamer{WithMetricSuffixes: true}.Build`` (UnderscoreEscapingWithSuffixes). The expected names below are
the ones otlptranslator's own tests at v1.0.0 expect (label_namer_test.go, metric_namer_test.go) and the ones
Loki's attributesToLabels test expects (pkg/loghttp/push/otlp_test.go, release-3.7.x).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from otelflow import semconv
from otelflow.semconv import loki_name, prometheus_name

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


# --- Loki: attribute keys to label / structured metadata names ----------------------------------------------


def test_a_double_underscore_in_a_parameter_name_is_one_underscore_in_loki() -> None:
    # The case: the old prediction kept both underscores, and a LogQL filter on it matched nothing.
    assert loki_name("otelflow.parameter.a__b") == "otelflow_parameter_a_b"
    assert loki_name(semconv.PARAMETER_PREFIX + "_private") == "otelflow_parameter_private"


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("label.with.dots", "label_with_dots"),
        ("label:with:colons", "label_with_colons"),
        ("regular label", "regular_label"),
        ("LabelWithCapitalLetters", "LabelWithCapitalLetters"),
        ("st.r", "st_r"),
    ],
)
def test_each_character_outside_ascii_letters_and_digits_becomes_an_underscore(key: str, name: str) -> None:
    assert loki_name(key) == name


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("label__with__double__underscores", "label_with_double_underscores"),
        ("label.name__with&&special##chars", "label_name_with_special_chars"),
        ("label!with&special$chars)", "label_with_special_chars_"),
        ("trailing_underscores___", "trailing_underscores_"),
    ],
)
def test_a_run_of_such_characters_becomes_one_underscore_even_at_the_ends(key: str, name: str) -> None:
    assert loki_name(key) == name


def test_letters_and_digits_outside_ascii_are_replaced_not_kept() -> None:
    assert loki_name("label_with_foreign_characters_字符") == "label_with_foreign_characters_"
    assert loki_name("café.id") == "caf_id"
    assert loki_name("x²") == "x_"


def test_a_name_starting_with_a_digit_gets_a_key_prefix() -> None:
    assert loki_name("123label") == "key_123label"
    assert loki_name("1.a") == "key_1_a"


def test_a_leading_underscore_is_kept_and_a_leading_double_underscore_collapses() -> None:
    assert loki_name("_label_starting_with_underscore") == "_label_starting_with_underscore"
    assert loki_name("__label_starting_with_2underscores") == "_label_starting_with_2underscores"


def test_a_key_wrapped_in_double_underscores_keeps_them_and_cleans_its_inside() -> None:
    assert loki_name("__reserved__label__name__") == "__reserved_label_name__"
    assert loki_name("__a.b__") == "__a_b__"


@pytest.mark.parametrize("key", ["", "__", "____", "ようこそ", ".."])
def test_an_empty_key_or_one_named_by_underscores_only_is_rejected(key: str) -> None:
    # Loki answers the whole OTLP push with 400 for such a key.
    with pytest.raises(ValueError):
        loki_name(key)


def test_nested_attributes_are_named_after_their_flattened_key() -> None:
    # Loki joins a map attribute's name and a child key with "_" and names the result.
    assert loki_name(loki_name("nest*ed") + "_" + "fo@o") == "nest_ed_fo_o"
    assert loki_name(loki_name(loki_name("nest*ed") + "_" + "m$ore") + "_" + "k_ey") == "nest_ed_m_ore_k_ey"


def test_every_run_attribute_has_a_valid_label_name() -> None:
    for key in semconv.ATTRIBUTE_KEYS:
        assert LABEL_NAME.fullmatch(loki_name(key)), key


def test_the_documented_run_attribute_names_are_unchanged() -> None:
    assert loki_name(semconv.FLOW_RUN_ID) == "otelflow_flow_run_id"
    assert loki_name(semconv.TASK_MAP_INDEX) == "otelflow_task_map_index"
    assert loki_name("service.name") == "service_name"


@given(st.text(max_size=24))
def test_loki_names_are_valid_labels_and_naming_one_again_changes_nothing(key: str) -> None:
    # Loki's distributor names structured metadata a second time: the names must survive it.
    try:
        name = loki_name(key)
    except ValueError:
        return
    assert LABEL_NAME.fullmatch(name)
    assert loki_name(name) == name


# --- Prometheus exporter: metric names ---------------------------------------------------------------------


def test_otelflows_metrics_get_unit_and_counter_suffixes() -> None:
    duration = prometheus_name(semconv.METRIC_RUN_DURATION, semconv.METRIC_RUN_DURATION_UNIT)
    assert duration == "otelflow_run_duration_seconds"
    assert prometheus_name(semconv.METRIC_RUNS, semconv.METRIC_RUNS_UNIT, counter=True) == "otelflow_runs_total"


def test_a_metric_name_keeps_colons_where_a_label_name_replaces_them() -> None:
    assert prometheus_name("a:b.c", "") == "a:b_c"
    assert loki_name("a:b.c") == "a_b_c"


def test_a_metric_name_starting_with_a_digit_gets_an_underscore_not_key() -> None:
    assert prometheus_name("123metric", "") == "_123metric"


def test_runs_of_invalid_characters_in_a_metric_name_collapse_and_vanish_at_the_ends() -> None:
    assert prometheus_name("metric@@##$$name", "") == "metric_name"
    assert prometheus_name("metric@with#special$chars", "") == "metric_with_special_chars"
    assert prometheus_name("_a..b_", "") == "a_b"


@pytest.mark.parametrize(
    ("name", "unit", "expected"),
    [
        ("response_time", "ms", "response_time_milliseconds"),
        ("memory_usage", "By", "memory_usage_bytes"),
        ("throughput", "By/s", "throughput_bytes_per_second"),
        ("requests", "1/m", "requests_per_minute"),
        ("cpu_usage", "%", "cpu_usage_percent"),
        ("custom_metric", "custom_unit", "custom_metric_custom_unit"),
        ("custom", "1/custom_unit", "custom_per_custom_unit"),
        ("metric", " By / s ", "metric_bytes_per_second"),
        ("metric", "By/", "metric_bytes"),
        ("metric", "/", "metric"),
        ("custom_metric", "unit@with#special/chars", "custom_metric_unit_with_special_per_chars"),
        (
            "metric__with__multiple__underscores",
            "unit__multiple__underscores",
            "metric_with_multiple_underscores_unit_multiple_underscores",
        ),
        ("http.request.duration", "ms", "http_request_duration_milliseconds"),
    ],
)
def test_the_unit_becomes_a_suffix(name: str, unit: str, expected: str) -> None:
    assert prometheus_name(name, unit) == expected


def test_units_in_braces_and_the_unit_one_add_no_suffix() -> None:
    assert prometheus_name("custom_metric", "{custom}") == "custom_metric"
    assert prometheus_name("custom_metric", "By/{custom}") == "custom_metric_bytes"
    assert prometheus_name("http.requests", "1", counter=True) == "http_requests_total"


def test_a_suffix_the_name_already_has_is_not_added_again() -> None:
    assert prometheus_name("response_time_seconds", "s") == "response_time_seconds"
    assert prometheus_name("requests_total", "", counter=True) == "requests_total"
    assert prometheus_name("otelcol_process_cpu_seconds", "s", counter=True) == "otelcol_process_cpu_seconds_total"


def test_a_metric_name_with_nothing_left_is_rejected() -> None:
    with pytest.raises(ValueError):
        prometheus_name("@#$%", "")


@given(st.text(max_size=16), st.sampled_from(["", "s", "ms", "By/s", "1", "{run}", "x/y"]), st.booleans())
def test_metric_names_are_valid_prometheus_names(name: str, unit: str, counter: bool) -> None:
    try:
        metric = prometheus_name(name, unit, counter=counter)
    except ValueError:
        return
    assert METRIC_NAME.fullmatch(metric)

"""W3C carriers: ``to_carrier`` / ``from_carrier`` round trips, validation, limits and warnings."""

from __future__ import annotations

import email.message
import http.client
import io
import json
import re
import warnings
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import baggage, trace
from opentelemetry import context as otel_context
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

from otelflow import propagation, semconv
from otelflow.propagation import OtelflowCarrierWarning, from_carrier, otelflow_baggage, to_carrier

TRACE_ID = "12345678901234567890123456789012"
SPAN_ID = "1234567890123456"
VALID_TP = f"00-{TRACE_ID}-{SPAN_ID}-01"

OTELFLOW_ENTRIES = {
    semconv.FLOW_RUN_ID: "0b6f1c4e-7a55-4f0e-9a43-3c1d9a1f2e10",
    semconv.FLOW_RUN_NAME: "crimson-otter",
    semconv.FLOW_NAME: "etl",
    semconv.TASK_RUN_ID: "7d0c6b1a-1111-4f0e-9a43-3c1d9a1f2e10",
    semconv.TASK_RUN_NAME: "extract-0",
    semconv.TAGS: "nightly,prod",
}


@pytest.fixture(autouse=True)
def _fresh_warning_state() -> Iterator[None]:
    propagation._reset_warning_state()
    yield
    propagation._reset_warning_state()


def _span_context(ctx: Context) -> SpanContext:
    return trace.get_current_span(ctx).get_span_context()


def _remote_context(trace_state: TraceState | None = None, **entries: str) -> Context:
    span = NonRecordingSpan(
        SpanContext(
            int(TRACE_ID, 16),
            int(SPAN_ID, 16),
            is_remote=False,
            trace_flags=TraceFlags(TraceFlags.SAMPLED),
            trace_state=trace_state,
        )
    )
    ctx = trace.set_span_in_context(span, Context())
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    return ctx


def _with_baggage(entries: dict[str, str], ctx: Context | None = None) -> Context:
    ctx = ctx if ctx is not None else Context()
    for key, value in entries.items():
        ctx = baggage.set_baggage(key, value, ctx)
    return ctx


def _no_warning_from(carrier: Any) -> Context:
    with warnings.catch_warnings():
        warnings.simplefilter("error", OtelflowCarrierWarning)
        return from_carrier(carrier)


def _assert_fresh_trace(ctx: Context) -> None:
    assert not _span_context(ctx).is_valid


# --- to_carrier -------------------------------------------------------------------------------------


def test_round_trip_restores_remote_parent_tracestate_and_baggage() -> None:
    state = TraceState([("vendor", "opaque-1"), ("other@tenant", "x y")])
    ctx = _with_baggage(OTELFLOW_ENTRIES, _remote_context(state))

    carrier = to_carrier(ctx)

    assert set(carrier) == {"traceparent", "tracestate", "baggage"}
    assert carrier["traceparent"] == VALID_TP
    restored = _no_warning_from(carrier)
    sc = _span_context(restored)
    assert (sc.trace_id, sc.span_id, sc.is_remote, sc.trace_flags.sampled) == (
        int(TRACE_ID, 16),
        int(SPAN_ID, 16),
        True,
        True,
    )
    assert dict(sc.trace_state) == {"vendor": "opaque-1", "other@tenant": "x y"}
    assert otelflow_baggage(restored) == OTELFLOW_ENTRIES
    assert dict(baggage.get_all(restored)) == OTELFLOW_ENTRIES


def test_to_carrier_uses_current_context_by_default() -> None:
    token = otel_context.attach(_remote_context(**{semconv.FLOW_NAME: "etl"}))
    try:
        carrier = to_carrier()
    finally:
        otel_context.detach(token)
    assert carrier == {"traceparent": VALID_TP, "baggage": f"{semconv.FLOW_NAME}=etl"}


def test_empty_context_gives_empty_carrier() -> None:
    assert to_carrier(Context()) == {}


def test_invalid_span_context_writes_no_traceparent() -> None:
    # A zero span id with a non-zero trace id is invalid but is not INVALID_SPAN_CONTEXT.
    span = NonRecordingSpan(SpanContext(int(TRACE_ID, 16), 0, is_remote=False))
    assert to_carrier(trace.set_span_in_context(span, Context())) == {}


def test_extra_baggage_is_merged_and_wins() -> None:
    ctx = _with_baggage({"team": "data", semconv.FLOW_NAME: "old"})
    carrier = to_carrier(ctx, extra_baggage={semconv.FLOW_NAME: "new", "x": "1"})
    restored = _no_warning_from(carrier)
    assert dict(baggage.get_all(restored)) == {semconv.FLOW_NAME: "new", "team": "data", "x": "1"}
    # otelflow keys come first on the wire.
    assert carrier["baggage"].startswith(f"{semconv.FLOW_NAME}=new,")


def test_values_are_percent_encoded_and_header_safe() -> None:
    value = 'a,b;c d=e%f+g"h\\i\r\njé€😀'
    carrier = to_carrier(_with_baggage({"k": value, "key with space": "v"}))
    header = carrier["baggage"]

    assert header.isascii()
    assert "\r" not in header and "\n" not in header and " " not in header
    assert json.loads(json.dumps(carrier)) == carrier
    k_member = header.split(",")[0]
    assert k_member == "k=" + quote(value, safe="!#$&'()*/:<=>?@[]^`{|}")
    literal = re.sub(r"%[0-9A-F]{2}", "", k_member.split("=", 1)[1])
    assert not set(literal) & set(',; "\\%+')
    assert all(enc in k_member for enc in ("%2C", "%3B", "%20", "%25", "%2B"))
    assert "key%20with%20space=v" in header.split(",")
    restored = _no_warning_from(carrier)
    assert baggage.get_baggage("k", restored) == value
    assert baggage.get_baggage("key with space", restored) == "v"


def test_non_string_baggage_values_are_stringified() -> None:
    carrier = to_carrier(_with_baggage({"n": 3}))  # type: ignore[dict-item]
    assert carrier["baggage"] == "n=3"


def test_inject_member_limit_keeps_otelflow_keys_first_and_warns_once() -> None:
    extra = {f"k{i}": "v" for i in range(100)}
    ctx = _with_baggage(extra)  # other keys were set first ...
    ctx = _with_baggage(OTELFLOW_ENTRIES, ctx)  # ... and otelflow's last, yet they must survive

    with pytest.warns(OtelflowCarrierWarning) as record:
        carrier = to_carrier(ctx)

    assert len(record) == 1
    dropped = len(extra) + len(OTELFLOW_ENTRIES) - semconv.BAGGAGE_MAX_MEMBERS
    assert f"dropped {dropped} entries" in str(record[0].message)
    members = carrier["baggage"].split(",")
    assert len(members) == semconv.BAGGAGE_MAX_MEMBERS
    restored = _no_warning_from(carrier)
    assert otelflow_baggage(restored) == OTELFLOW_ENTRIES


def test_inject_byte_limit() -> None:
    ctx = _with_baggage({"big1": "x" * 5000, "big2": "y" * 5000, "small": "z"})
    ctx = _with_baggage(OTELFLOW_ENTRIES, ctx)

    with pytest.warns(OtelflowCarrierWarning, match="dropped 1 entry") as record:
        carrier = to_carrier(ctx)

    assert len(record) == 1
    assert len(carrier["baggage"].encode()) <= semconv.BAGGAGE_MAX_BYTES
    restored = _no_warning_from(carrier)
    entries = dict(baggage.get_all(restored))
    assert otelflow_baggage(restored) == OTELFLOW_ENTRIES
    assert "big1" in entries and "small" in entries and "big2" not in entries


def test_inject_overflow_when_otelflow_value_alone_is_too_big() -> None:
    ctx = _with_baggage({semconv.FLOW_NAME: "n" * 9000, semconv.FLOW_RUN_ID: "id"})
    with pytest.warns(OtelflowCarrierWarning, match="dropped 1 entry"):
        carrier = to_carrier(ctx)
    assert carrier["baggage"] == f"{semconv.FLOW_RUN_ID}=id"


# --- from_carrier: carrier shapes -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["traceparent", "TraceParent", "TrAcEpArEnT", "TRACEPARENT", "HTTP_TRACEPARENT"])
def test_header_names_are_case_insensitive(name: str) -> None:
    ctx = _no_warning_from({name: VALID_TP, "BAGGAGE": "a=1", "TraceState": "foo=1"})
    sc = _span_context(ctx)
    assert sc.trace_id == int(TRACE_ID, 16)
    assert dict(sc.trace_state) == {"foo": "1"}
    assert baggage.get_all(ctx) == {"a": "1"}


@pytest.mark.parametrize("name", ["trace-parent", "trace.parent", "trace_parent"])
def test_wrong_header_names_are_ignored(name: str) -> None:
    _assert_fresh_trace(_no_warning_from({name: VALID_TP}))


def test_bytes_keys_and_values() -> None:
    # ASGI scope["headers"] shape: a list of (bytes, bytes).
    raw = [(b"traceparent", VALID_TP.encode()), (b"baggage", b"a=%C3%A9,b=\xe9")]
    with pytest.warns(OtelflowCarrierWarning, match="malformed baggage"):
        ctx = from_carrier(raw)
    assert _span_context(ctx).trace_id == int(TRACE_ID, 16)
    # b"\xe9" decodes (latin-1) to a non-ASCII character, which is not a baggage-octet.
    assert baggage.get_all(ctx) == {"a": "é"}


def test_email_message_and_http_message() -> None:
    msg = email.message.Message()
    msg["TraceParent"] = VALID_TP
    msg["Baggage"] = "a=1"
    msg["baggage"] = "b=2"
    ctx = _no_warning_from(msg)
    assert _span_context(ctx).is_valid
    assert baggage.get_all(ctx) == {"a": "1", "b": "2"}

    raw = f"Traceparent: {VALID_TP}\r\nTracestate: foo=1\r\nTracestate: bar=2\r\n\r\n".encode()
    http_msg = http.client.parse_headers(io.BytesIO(raw))
    ctx = _no_warning_from(http_msg)
    assert list(_span_context(ctx).trace_state.items()) == [("foo", "1"), ("bar", "2")]


def test_starlette_headers() -> None:
    datastructures = pytest.importorskip("starlette.datastructures")
    headers = datastructures.Headers(raw=[(b"traceparent", VALID_TP.encode()), (b"baggage", b"a=1")])
    ctx = _no_warning_from(headers)
    assert _span_context(ctx).is_valid and baggage.get_all(ctx) == {"a": "1"}


def test_wsgi_environ() -> None:
    environ = {
        "REQUEST_METHOD": "GET",
        "HTTP_TRACEPARENT": VALID_TP,
        "HTTP_BAGGAGE": "a=1",
        "wsgi.input": object(),
    }
    ctx = _no_warning_from(environ)
    assert _span_context(ctx).is_valid and baggage.get_all(ctx) == {"a": "1"}


def test_dict_of_lists_and_none_values() -> None:
    ctx = _no_warning_from({"traceparent": [VALID_TP], "baggage": ("a=1", b"b=2"), "tracestate": None})
    assert _span_context(ctx).is_valid
    assert baggage.get_all(ctx) == {"a": "1", "b": "2"}


@pytest.mark.parametrize(
    "carrier",
    [42, "traceparent", b"traceparent", 3.5, object(), [1, 2, 3], [("traceparent",)], {"traceparent": 7}],
)
def test_junk_carriers_warn_and_return_context(carrier: Any) -> None:
    with pytest.warns(OtelflowCarrierWarning) as record:
        ctx = from_carrier(carrier)
    assert len(record) == 1
    assert isinstance(ctx, Context)
    _assert_fresh_trace(ctx)


def test_carrier_whose_items_raise() -> None:
    class Exploding:
        def items(self) -> Any:
            raise RuntimeError("boom")

    with pytest.warns(OtelflowCarrierWarning, match="could not be read"):
        ctx = from_carrier(Exploding())  # type: ignore[arg-type]
    assert isinstance(ctx, Context)


def test_none_and_empty_carriers_are_silent() -> None:
    assert _no_warning_from(None) == Context()
    assert _no_warning_from({}) == Context()
    assert _no_warning_from([]) == Context()


def test_default_base_is_empty_context_not_current() -> None:
    token = otel_context.attach(_remote_context(**{"stale": "1"}))
    try:
        ctx = _no_warning_from({"baggage": "a=1"})
    finally:
        otel_context.detach(token)
    _assert_fresh_trace(ctx)
    assert baggage.get_all(ctx) == {"a": "1"}


def test_explicit_base_context_is_extended() -> None:
    base = otel_context.set_value("mine", 1, _with_baggage({"keep": "1"}))
    ctx = from_carrier({"traceparent": VALID_TP, "baggage": "a=1"}, base)
    assert otel_context.get_value("mine", ctx) == 1
    assert baggage.get_all(ctx) == {"keep": "1", "a": "1"}
    assert _span_context(ctx).is_remote


def test_invalid_traceparent_does_not_fall_back_to_base_span() -> None:
    base = _remote_context()
    with pytest.warns(OtelflowCarrierWarning):
        ctx = from_carrier({"traceparent": "garbage"}, base)
    _assert_fresh_trace(ctx)


# --- from_carrier: traceparent (W3C trace-context test suite) -----------------------------------------

INVALID_TRACEPARENTS = [
    f"00-{TRACE_ID}-{SPAN_ID}-01.",
    f"00-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-be-like",
    f"cc-{TRACE_ID}-{SPAN_ID}-01.what-the-future-will-not-be-like",
    f"ff-{TRACE_ID}-{SPAN_ID}-01",
    f".0-{TRACE_ID}-{SPAN_ID}-01",
    f"0.-{TRACE_ID}-{SPAN_ID}-01",
    f"000-{TRACE_ID}-{SPAN_ID}-01",
    f"0000-{TRACE_ID}-{SPAN_ID}-01",
    f"0-{TRACE_ID}-{SPAN_ID}-01",
    f"00-{'0' * 32}-{SPAN_ID}-01",
    f"00-.{TRACE_ID[1:]}-{SPAN_ID}-01",
    f"00-{TRACE_ID[:-1]}.-{SPAN_ID}-01",
    f"00-{TRACE_ID}3-{SPAN_ID}-01",
    f"00-{TRACE_ID[:-1]}-{SPAN_ID}-01",
    f"00-{TRACE_ID}-{'0' * 16}-01",
    f"00-{TRACE_ID}-.{SPAN_ID[1:]}-01",
    f"00-{TRACE_ID}-{SPAN_ID[:-1]}.-01",
    f"00-{TRACE_ID}-{SPAN_ID}7-01",
    f"00-{TRACE_ID}-{SPAN_ID[:-1]}-01",
    f"00-{TRACE_ID}-{SPAN_ID}-.0",
    f"00-{TRACE_ID}-{SPAN_ID}-0.",
    f"00-{TRACE_ID}-{SPAN_ID}-001",
    f"00-{TRACE_ID}-{SPAN_ID}-1",
    "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01",  # uppercase hex
    f"00-{TRACE_ID}-{SPAN_ID}-0A",  # uppercase flags
    f"AA-{TRACE_ID}-{SPAN_ID}-01",  # uppercase version
    "",
    " ",
    "00",
    f"00-{TRACE_ID}-{SPAN_ID}-01\r\nX-Injected: 1",
    f"00-{TRACE_ID}-{SPAN_ID}-01" + "-x" * 300,
]


@pytest.mark.parametrize("value", INVALID_TRACEPARENTS)
def test_invalid_traceparent_starts_fresh_trace_with_one_warning(value: str) -> None:
    carrier = {"traceparent": value, "tracestate": "foo=1", "baggage": "a=1"}
    with pytest.warns(OtelflowCarrierWarning, match="traceparent") as record:
        ctx = from_carrier(carrier)
    assert len(record) == 1
    _assert_fresh_trace(ctx)
    # Baggage is independent of the trace context and still restored.
    assert baggage.get_all(ctx) == {"a": "1"}


@pytest.mark.parametrize(
    "value",
    [
        VALID_TP,
        f"00-{TRACE_ID}-{SPAN_ID}-00",
        f"cc-{TRACE_ID}-{SPAN_ID}-01",
        f"cc-{TRACE_ID}-{SPAN_ID}-01-what-the-future-will-be-like",
        f" {VALID_TP}",
        f"\t{VALID_TP}",
        f"{VALID_TP} ",
        f"{VALID_TP}\t",
        f"\t {VALID_TP} \t",
    ],
)
def test_valid_traceparents(value: str) -> None:
    sc = _span_context(_no_warning_from({"traceparent": value}))
    assert sc.is_valid and sc.is_remote
    assert (sc.trace_id, sc.span_id) == (int(TRACE_ID, 16), int(SPAN_ID, 16))


def test_duplicated_traceparent_starts_fresh_trace() -> None:
    pairs = [("traceparent", VALID_TP), ("traceparent", f"00-{'1' * 32}-{SPAN_ID}-01")]
    with pytest.warns(OtelflowCarrierWarning, match="traceparent"):
        ctx = from_carrier(pairs)
    _assert_fresh_trace(ctx)


def test_sampled_flag_is_kept() -> None:
    assert _span_context(_no_warning_from({"traceparent": VALID_TP})).trace_flags.sampled
    unsampled = f"00-{TRACE_ID}-{SPAN_ID}-00"
    assert not _span_context(_no_warning_from({"traceparent": unsampled})).trace_flags.sampled


# --- from_carrier: tracestate ------------------------------------------------------------------------


def test_tracestate_without_traceparent_is_discarded() -> None:
    ctx = _no_warning_from({"tracestate": "foo=1"})
    _assert_fresh_trace(ctx)


@pytest.mark.parametrize(
    "tracestate",
    [
        "foo=1,foo=2",
        "foo =1",
        "FOO=1",
        "foo.bar=1",
        "foo@=1,bar=2",
        "@foo=1,bar=2",
        "foo@@bar=1,bar=2",
        "foo=",
        "foo=bar=baz",
        ",".join(f"k{i}=v" for i in range(33)),
        "foo=é",
    ],
)
def test_malformed_tracestate_is_dropped_but_traceparent_kept(tracestate: str) -> None:
    with pytest.warns(OtelflowCarrierWarning, match="tracestate") as record:
        ctx = from_carrier({"traceparent": VALID_TP, "tracestate": tracestate})
    assert len(record) == 1
    sc = _span_context(ctx)
    assert sc.is_valid and len(sc.trace_state) == 0


def test_tracestate_duplicate_across_headers_is_dropped() -> None:
    pairs = [("traceparent", VALID_TP), ("tracestate", "foo=1"), ("tracestate", "foo=1")]
    with pytest.warns(OtelflowCarrierWarning, match="duplicate"):
        ctx = from_carrier(pairs)
    assert len(_span_context(ctx).trace_state) == 0


def test_tracestate_ows_empty_members_and_32_members() -> None:
    pairs = [
        ("traceparent", VALID_TP),
        ("tracestate", "foo=1 \t , \t bar=2,"),
        ("tracestate", ""),
        ("tracestate", "\tbaz=3 "),
    ]
    ts = _span_context(_no_warning_from(pairs)).trace_state
    assert list(ts.items()) == [("foo", "1"), ("bar", "2"), ("baz", "3")]

    full = ",".join(f"k{i}=v" for i in range(32))
    ts = _span_context(_no_warning_from({"traceparent": VALID_TP, "tracestate": full})).trace_state
    assert len(ts) == 32


# --- from_carrier: baggage ---------------------------------------------------------------------------


def test_baggage_percent_decoding_is_spec_not_form_encoding() -> None:
    ctx = _no_warning_from({"baggage": "a=x+y, b = %20pad%20 ,c=%E2%82%AC"})
    # '+' is a literal plus in W3C baggage; whitespace inside the decoded value is kept.
    assert baggage.get_all(ctx) == {"a": "x+y", "b": " pad ", "c": "€"}


def test_baggage_bad_percent_sequences_never_raise() -> None:
    ctx = _no_warning_from({"baggage": "a=%zz,b=%,c=%e2%82,d=%ff%fe,e=%C3%28"})
    entries = dict(baggage.get_all(ctx))
    assert entries["a"] == "%zz" and entries["b"] == "%"
    assert all(isinstance(v, str) for v in entries.values())
    assert "\ufffd" in entries["d"]


def test_baggage_properties_are_dropped() -> None:
    ctx = _no_warning_from({"baggage": "a=1;prop=x;flag, b=2 ; p2"})
    assert baggage.get_all(ctx) == {"a": "1", "b": "2"}


def test_malformed_baggage_members_are_dropped_with_one_warning() -> None:
    header = 'good=1,novalue,=nokey,sp ace=1,quote="x",semi=1;,ok=2,uni=é'
    with pytest.warns(OtelflowCarrierWarning, match="dropped 6 malformed") as record:
        ctx = from_carrier({"baggage": header})
    assert len(record) == 1
    assert baggage.get_all(ctx) == {"good": "1", "ok": "2"}


def test_baggage_member_limit_on_extract() -> None:
    header = ",".join(f"k{i}=v" for i in range(70))
    with pytest.warns(OtelflowCarrierWarning, match="dropped 6 baggage member") as record:
        ctx = from_carrier({"baggage": header})
    assert len(record) == 1
    entries = baggage.get_all(ctx)
    assert len(entries) == semconv.BAGGAGE_MAX_MEMBERS
    assert "k0" in entries and "k63" in entries and "k64" not in entries


def test_baggage_byte_limit_on_extract() -> None:
    header = ",".join(f"k{i}={'x' * 3000}" for i in range(3))
    with pytest.warns(OtelflowCarrierWarning, match="dropped 1 baggage member"):
        ctx = from_carrier({"baggage": header})
    assert set(baggage.get_all(ctx)) == {"k0", "k1"}


def test_baggage_exactly_at_limits_is_silent() -> None:
    # 64 members; pad the last one so that the header is exactly 8192 bytes.
    members = [f"k{i:02d}=v" for i in range(63)]
    used = len(",".join(members)) + 1
    members.append("k63=" + "x" * (semconv.BAGGAGE_MAX_BYTES - used - 4))
    header = ",".join(members)
    assert len(header) == semconv.BAGGAGE_MAX_BYTES
    ctx = _no_warning_from({"baggage": header})
    assert len(baggage.get_all(ctx)) == semconv.BAGGAGE_MAX_MEMBERS


def test_otelflow_baggage_filters_to_otelflow_keys() -> None:
    ctx = _with_baggage({**OTELFLOW_ENTRIES, "other": "x", "otelflow.unknown": "y"})
    assert otelflow_baggage(ctx) == OTELFLOW_ENTRIES
    assert otelflow_baggage(Context()) == {}
    token = otel_context.attach(ctx)
    try:
        assert otelflow_baggage() == OTELFLOW_ENTRIES
    finally:
        otel_context.detach(token)


# --- warnings: one per call, rate-limited -------------------------------------------------------------


def test_one_warning_per_bad_carrier_even_with_many_problems() -> None:
    carrier = {"traceparent": "bad", "tracestate": "BAD", "baggage": "bad member,x=1", "junk": 1}
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        from_carrier(carrier)
    assert [w.category for w in record] == [OtelflowCarrierWarning]


def test_warnings_are_rate_limited_per_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr(propagation, "_clock", lambda: now[0])
    bad_tp = {"traceparent": "bad"}

    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(5):
            from_carrier(bad_tp)
        assert len(record) == 1

        # A different kind of problem is not suppressed by the first one.
        from_carrier({"baggage": "bad member"})
        assert len(record) == 2

        now[0] += 61
        from_carrier(bad_tp)
    assert len(record) == 3
    assert "4 similar carrier warning(s) suppressed" in str(record[2].message)


def test_warning_points_at_the_caller() -> None:
    with pytest.warns(OtelflowCarrierWarning) as record:
        from_carrier({"traceparent": "bad"})
    assert record[0].filename == __file__


# --- properties ----------------------------------------------------------------------------------------

_HEADER_NAME = st.sampled_from(
    ["traceparent", "TRACEPARENT", "tracestate", "TraceState", "baggage", "Baggage", "HTTP_BAGGAGE", "other"]
)
_JUNK_VALUE = st.one_of(
    st.text(),
    st.binary(),
    st.none(),
    st.integers(),
    st.floats(allow_nan=True),
    st.lists(st.one_of(st.text(), st.binary(), st.integers()), max_size=3),
    st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
    st.from_regex(r"[0-9a-fA-F]{2}-[0-9a-f]{30,34}-[0-9a-f.]{15,17}-[0-9a-f]{1,3}(-.*)?", fullmatch=True),
    st.from_regex(r"([a-z%+0-9 ;=]{0,12},?){0,8}", fullmatch=True),
)
_CARRIER = st.one_of(
    st.dictionaries(st.one_of(_HEADER_NAME, st.text(max_size=12), st.binary(max_size=12)), _JUNK_VALUE, max_size=6),
    st.lists(st.tuples(st.one_of(_HEADER_NAME, st.binary(max_size=12)), _JUNK_VALUE), max_size=6),
    st.lists(_JUNK_VALUE, max_size=4),
    _JUNK_VALUE,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(carrier=_CARRIER)
def test_any_carrier_never_raises(carrier: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", OtelflowCarrierWarning)
        ctx = from_carrier(carrier)
        assert isinstance(ctx, Context)
        # Whatever was restored must be serializable again into a header-safe carrier.
        out = to_carrier(ctx)
    assert all(v.isascii() and "\r" not in v and "\n" not in v for v in out.values())


_BAGGAGE_DICT = st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=10)


@settings(max_examples=300)
@given(entries=_BAGGAGE_DICT, otelflow_values=st.lists(st.text(max_size=30), min_size=6, max_size=6))
def test_baggage_round_trips(entries: dict[str, str], otelflow_values: list[str]) -> None:
    entries = {**entries, **dict(zip(semconv.BAGGAGE_KEYS, otelflow_values, strict=True))}
    carrier = to_carrier(_with_baggage(entries))
    assert json.loads(json.dumps(carrier)) == carrier
    assert carrier["baggage"].isascii()
    restored = _no_warning_from(carrier)
    assert dict(baggage.get_all(restored)) == entries
    assert otelflow_baggage(restored) == dict(zip(semconv.BAGGAGE_KEYS, otelflow_values, strict=True))

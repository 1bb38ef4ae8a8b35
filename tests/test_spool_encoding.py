"""The spool's OTLP/JSON encoding: the exact lines it writes, and how a batch is cut into lines under the size limit.

The expected lines below were written by the encoder before it was made faster (fixed inputs, fixed ids and
times): the spool's format is what every reader, ``otelflow spool ship`` and the Collector's ``otlpjsonfile``
receiver take, so a faster encoder must write the very same bytes.
"""

from __future__ import annotations

import base64
import enum
import itertools
import math
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import pytest
from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

from otelflow._internal.export.limits import Limits
from otelflow._internal.spool.otlp_json import (
    EncodedPiece,
    decode_line,
    decode_logs,
    decode_spans,
    encode_logs,
    encode_spans,
    iter_items,
    split_encoded,
)

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
START = 1_700_000_000_123_456_789
RESOURCE = Resource({"service.name": "billing", "service.instance.id": "i-1", "host.cpus": 2})
OTHER_RESOURCE = Resource({"service.name": "ledger ☃"})
SCOPE = InstrumentationScope("otelflow", "1.2.3")
PLAIN_SCOPE = InstrumentationScope("plain")


class _Mixed(str, enum.Enum):  # noqa: UP042 - not a StrEnum: its str() is the member's name
    """A str mixin enum: ``str()`` gives ``_Mixed.RED``, which is what the spool has always written."""

    RED = "red"


class _Loud(str):
    def __str__(self) -> str:
        return "LOUD"


class _Count(int):
    pass


class _Ratio(float):
    pass


def _nested_lists(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = [value]
    return value


def _nested_mappings(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"d": value}
    return value


# Every kind of value the encoder knows, and the edges of each (int64, non-finite doubles, escapes, subclasses).
EVERY_VALUE_KIND: dict[Any, Any] = {
    "str": "plain",
    "str.non_ascii": "héllo ☃ 𝄞 日本",
    "str.control": 'tab\t nl\n nul\x00 us\x1f del\x7f ls\u2028 "quoted" back\\slash </script>',
    "str.empty": "",
    "ключ": "значение",
    "int": 42,
    "int.negative": -7,
    "int.zero": 0,
    "int.int64_max": 2**63 - 1,
    "int.int64_min": -(2**63),
    "int.beyond_int64": 2**63,
    "int.below_int64": -(2**63) - 1,
    "int.huge": 10**40,
    "bool.true": True,
    "bool.false": False,
    "float": 1.5,
    "float.whole": 2.0,
    "float.tiny": 5e-324,
    "float.big": 1.7976931348623157e308,
    "float.negative_zero": -0.0,
    "float.nan": math.nan,
    "float.inf": math.inf,
    "float.minus_inf": -math.inf,
    "bytes": b"\x00\xff binary",
    "bytes.empty": b"",
    "none": None,
    "list": ["a", 1, 2.5, True, None, b"\x01", math.nan],
    "tuple": ("x", "y"),
    "list.empty": [],
    "mapping": {"inner": {"deep": [1, {"k": "v"}]}, 3: "int key", _Mixed.RED: "enum key"},
    "mapping.empty": {},
    "subclass.str_enum_mixin": _Mixed.RED,
    "subclass.str_with_own_str": _Loud("quiet"),
    "subclass.int": _Count(5),
    "subclass.int_beyond_int64": _Count(2**64),
    "subclass.float": _Ratio(0.25),
    "subclass.float_nan": _Ratio("nan"),
    "other.decimal": Decimal("1.10"),
    "other.path": PurePosixPath("/tmp/x y"),
    "other.bytearray": bytearray(b"ab"),
    7: "int key at the top",
}

# Arrays and kvlists are written 32 levels deep; a deeper one is cut with a marker.
DEEP_VALUES: dict[str, Any] = {
    "lists.32": _nested_lists(32),
    "lists.33": _nested_lists(33),
    "mappings.32": _nested_mappings(32),
    "mappings.33": _nested_mappings(33),
    "lists.40": _nested_lists(40),
}


def _context(span_id: int, *, remote: bool = False, sampled: bool = True,
             state: TraceState | None = None) -> SpanContext:
    return SpanContext(TRACE_ID, span_id, is_remote=remote, trace_flags=TraceFlags(1 if sampled else 0),
                       trace_state=state)


def _span(name: str, span_id: int, **fields: Any) -> ReadableSpan:
    fields.setdefault("resource", RESOURCE)
    fields.setdefault("instrumentation_scope", SCOPE)
    fields.setdefault("start_time", START + span_id)
    fields.setdefault("end_time", START + span_id + 1_000_000)
    return ReadableSpan(name=name, context=_context(span_id), **fields)


def span_with_every_value_kind() -> ReadableSpan:
    """A remote parent, trace state, an error status, events and links, and every kind of attribute value."""
    return ReadableSpan(
        name='task "ünïcode" \x01',
        context=_context(0xB7AD6B7169203331, state=TraceState([("vendor", "v1"), ("other", "x:y")])),
        parent=_context(0x00F067AA0BA902B7, remote=True),
        resource=RESOURCE,
        attributes=EVERY_VALUE_KIND,
        events=[Event("exception", {"exception.message": "boom ☃", "exception.escaped": False}, START + 5),
                Event("Retrying", {}, START + 6)],
        links=[Link(_context(0x1111111111111111), {"param": "x", "n": 2}), Link(_context(0x2222222222222222))],
        kind=SpanKind.SERVER,
        status=Status(StatusCode.ERROR, "went wrong:\n\t☃"),
        start_time=START,
        end_time=START + 987_654_321,
        instrumentation_scope=SCOPE,
    )


def span_nested_deep() -> ReadableSpan:
    return _span("deep", 0x3333333333333333, attributes=DEEP_VALUES)


def bare_span() -> ReadableSpan:
    """No parent, no trace state, unset status, no attributes, no scope, an empty resource, not sampled."""
    return ReadableSpan(name="", context=_context(0x4444444444444444, sampled=False), resource=Resource({}),
                        start_time=0, end_time=0, instrumentation_scope=None)


def spans_of_two_resources_and_scopes() -> list[ReadableSpan]:
    """Interleaved resources and scopes: a line groups them by resource, then scope, in order of first appearance."""
    return [
        _span("a", 0x5555555555555501, attributes={"i": 1}),
        _span("b", 0x5555555555555502, resource=OTHER_RESOURCE, kind=SpanKind.CLIENT),
        _span("c", 0x5555555555555503, instrumentation_scope=PLAIN_SCOPE, status=Status(StatusCode.OK)),
        _span("d", 0x5555555555555504, attributes={"tags": ("x", "y")}),
        _span("e", 0x5555555555555505, resource=OTHER_RESOURCE, instrumentation_scope=PLAIN_SCOPE),
    ]


def _log(body: Any, *, scope: InstrumentationScope | None = SCOPE, resource: Resource = RESOURCE,
         **fields: Any) -> ReadableLogRecord:
    fields.setdefault("timestamp", START)
    fields.setdefault("observed_timestamp", START + 10)
    record = LogRecord(body=body, **fields)
    # As given: the API record would take a missing observed time from the clock, and ids from the current span.
    for name, default in (("observed_timestamp", None), ("trace_id", 0), ("span_id", 0), ("trace_flags", 0)):
        setattr(record, name, fields.get(name, default))
    return ReadableLogRecord(log_record=record, resource=resource, instrumentation_scope=scope)


def log_with_every_value_kind() -> ReadableLogRecord:
    return _log("Finished in state Completed() ☃", severity_number=SeverityNumber.INFO, severity_text="INFO",
                attributes=EVERY_VALUE_KIND, trace_id=TRACE_ID, span_id=0xB7AD6B7169203331,
                trace_flags=TraceFlags(1), event_name="otelflow.run.state")


def logs_of_every_body_kind() -> list[ReadableLogRecord]:
    """Bodies of each kind; times, severity and correlation left out; two scopes and resources."""
    return [
        _log(None, timestamp=None, observed_timestamp=None, attributes=None),
        _log(None, timestamp=None, observed_timestamp=START),
        _log({"k": [1, "two", None], "n": {"x": math.inf}}, severity_number=SeverityNumber.ERROR, scope=PLAIN_SCOPE),
        _log(b"\x00raw", severity_number=SeverityNumber.WARN, severity_text="WARN", resource=OTHER_RESOURCE),
        _log(["a", 2], scope=None, attributes={"n": 1}),
        _log(_Mixed.RED, severity_text="custom"),
        _log(2**70, trace_id=TRACE_ID, span_id=1, trace_flags=TraceFlags(0)),
        _log(math.nan, scope=PLAIN_SCOPE),
    ]


# --- the expected lines (written by the encoder before it was made faster) ----------------------------------

SPAN_WITH_EVERY_VALUE_KIND = (
    '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}'
    '},{"key":"service.instance.id","value":{"stringValue":"i-1"}},{"key":"host.cpus","value":{"intValue"'
    ':"2"}}]},"scopeSpans":[{"scope":{"name":"otelflow","version":"1.2.3"},"spans":[{"traceId":"0af765191'
    '6cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","parentSpanId":"00f067aa0ba902b7","traceState":'
    '"vendor=v1,other=x:y","name":"task \\"ünïcode\\" \\u0001","kind":2,"startTimeUnixNano":"170000000012345'
    '6789","endTimeUnixNano":"1700000001111111110","attributes":[{"key":"str","value":{"stringValue":"pla'
    'in"}},{"key":"str.non_ascii","value":{"stringValue":"héllo ☃ 𝄞 日本"}},{"key":"str.control","value":{"'
    'stringValue":"tab\\t nl\\n nul\\u0000 us\\u001f del\x7f ls\u2028 \\"quoted\\" back\\\\slash </script>"}},{"k'
    'ey":"str.empty","value":{"stringValue":""}},{"key":"ключ","value":{"stringValue":"значение"}},{"key"'
    ':"int","value":{"intValue":"42"}},{"key":"int.negative","value":{"intValue":"-7"}},{"key":"int.zero"'
    ',"value":{"intValue":"0"}},{"key":"int.int64_max","value":{"intValue":"9223372036854775807"}},{"key"'
    ':"int.int64_min","value":{"intValue":"-9223372036854775808"}},{"key":"int.beyond_int64","value":{"st'
    'ringValue":"9223372036854775808"}},{"key":"int.below_int64","value":{"stringValue":"-922337203685477'
    '5809"}},{"key":"int.huge","value":{"stringValue":"10000000000000000000000000000000000000000"}},{"key'
    '":"bool.true","value":{"boolValue":true}},{"key":"bool.false","value":{"boolValue":false}},{"key":"f'
    'loat","value":{"doubleValue":1.5}},{"key":"float.whole","value":{"doubleValue":2.0}},{"key":"float.t'
    'iny","value":{"doubleValue":5e-324}},{"key":"float.big","value":{"doubleValue":1.7976931348623157e+3'
    '08}},{"key":"float.negative_zero","value":{"doubleValue":-0.0}},{"key":"float.nan","value":{"doubleV'
    'alue":"NaN"}},{"key":"float.inf","value":{"doubleValue":"Infinity"}},{"key":"float.minus_inf","value'
    '":{"doubleValue":"-Infinity"}},{"key":"bytes","value":{"bytesValue":"AP8gYmluYXJ5"}},{"key":"bytes.e'
    'mpty","value":{"bytesValue":""}},{"key":"none","value":{}},{"key":"list","value":{"arrayValue":{"val'
    'ues":[{"stringValue":"a"},{"intValue":"1"},{"doubleValue":2.5},{"boolValue":true},{},{"bytesValue":"'
    'AQ=="},{"doubleValue":"NaN"}]}}},{"key":"tuple","value":{"arrayValue":{"values":[{"stringValue":"x"}'
    ',{"stringValue":"y"}]}}},{"key":"list.empty","value":{"arrayValue":{"values":[]}}},{"key":"mapping",'
    '"value":{"kvlistValue":{"values":[{"key":"inner","value":{"kvlistValue":{"values":[{"key":"deep","va'
    'lue":{"arrayValue":{"values":[{"intValue":"1"},{"kvlistValue":{"values":[{"key":"k","value":{"string'
    'Value":"v"}}]}}]}}}]}}},{"key":"3","value":{"stringValue":"int key"}},{"key":"_Mixed.RED","value":{"'
    'stringValue":"enum key"}}]}}},{"key":"mapping.empty","value":{"kvlistValue":{"values":[]}}},{"key":"'
    'subclass.str_enum_mixin","value":{"stringValue":"_Mixed.RED"}},{"key":"subclass.str_with_own_str","v'
    'alue":{"stringValue":"LOUD"}},{"key":"subclass.int","value":{"intValue":"5"}},{"key":"subclass.int_b'
    'eyond_int64","value":{"stringValue":"18446744073709551616"}},{"key":"subclass.float","value":{"doubl'
    'eValue":0.25}},{"key":"subclass.float_nan","value":{"doubleValue":"NaN"}},{"key":"other.decimal","va'
    'lue":{"stringValue":"1.10"}},{"key":"other.path","value":{"stringValue":"/tmp/x y"}},{"key":"other.b'
    'ytearray","value":{"arrayValue":{"values":[{"intValue":"97"},{"intValue":"98"}]}}},{"key":"7","value'
    '":{"stringValue":"int key at the top"}}],"flags":769,"status":{"code":2,"message":"went wrong:\\n\\t☃"'
    '},"events":[{"timeUnixNano":"1700000000123456794","name":"exception","attributes":[{"key":"exception'
    '.message","value":{"stringValue":"boom ☃"}},{"key":"exception.escaped","value":{"boolValue":false}}]'
    '},{"timeUnixNano":"1700000000123456795","name":"Retrying","attributes":[]}],"links":[{"traceId":"0af'
    '7651916cd43dd8448eb211c80319c","spanId":"1111111111111111","attributes":[{"key":"param","value":{"st'
    'ringValue":"x"}},{"key":"n","value":{"intValue":"2"}}]},{"traceId":"0af7651916cd43dd8448eb211c80319c'
    '","spanId":"2222222222222222","attributes":[]}]}]}]}]}'
)

BARE_SPAN = (
    '{"resourceSpans":[{"resource":{"attributes":[]},"scopeSpans":[{"scope":{},"spans":[{"traceId":"0af76'
    '51916cd43dd8448eb211c80319c","spanId":"4444444444444444","name":"","kind":1,"startTimeUnixNano":"0",'
    '"endTimeUnixNano":"0","attributes":[],"flags":256,"status":{"code":0}}]}]}]}'
)

SPANS_OF_TWO_RESOURCES_AND_SCOPES = (
    '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}'
    '},{"key":"service.instance.id","value":{"stringValue":"i-1"}},{"key":"host.cpus","value":{"intValue"'
    ':"2"}}]},"scopeSpans":[{"scope":{"name":"otelflow","version":"1.2.3"},"spans":[{"traceId":"0af765191'
    '6cd43dd8448eb211c80319c","spanId":"5555555555555501","name":"a","kind":1,"startTimeUnixNano":"784891'
    '4691359973910","endTimeUnixNano":"7848914691360973910","attributes":[{"key":"i","value":{"intValue":'
    '"1"}}],"flags":257,"status":{"code":0}},{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"5555'
    '555555555504","name":"d","kind":1,"startTimeUnixNano":"7848914691359973913","endTimeUnixNano":"78489'
    '14691360973913","attributes":[{"key":"tags","value":{"arrayValue":{"values":[{"stringValue":"x"},{"s'
    'tringValue":"y"}]}}}],"flags":257,"status":{"code":0}}]},{"scope":{"name":"plain"},"spans":[{"traceI'
    'd":"0af7651916cd43dd8448eb211c80319c","spanId":"5555555555555503","name":"c","kind":1,"startTimeUnix'
    'Nano":"7848914691359973912","endTimeUnixNano":"7848914691360973912","attributes":[],"flags":257,"sta'
    'tus":{"code":1}}]}]},{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"ledger'
    ' ☃"}}]},"scopeSpans":[{"scope":{"name":"otelflow","version":"1.2.3"},"spans":[{"traceId":"0af7651916'
    'cd43dd8448eb211c80319c","spanId":"5555555555555502","name":"b","kind":3,"startTimeUnixNano":"7848914'
    '691359973911","endTimeUnixNano":"7848914691360973911","attributes":[],"flags":257,"status":{"code":0'
    '}}]},{"scope":{"name":"plain"},"spans":[{"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"5555'
    '555555555505","name":"e","kind":1,"startTimeUnixNano":"7848914691359973914","endTimeUnixNano":"78489'
    '14691360973914","attributes":[],"flags":257,"status":{"code":0}}]}]}]}'
)

LOG_WITH_EVERY_VALUE_KIND = (
    '{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}}'
    ',{"key":"service.instance.id","value":{"stringValue":"i-1"}},{"key":"host.cpus","value":{"intValue":'
    '"2"}}]},"scopeLogs":[{"scope":{"name":"otelflow","version":"1.2.3"},"logRecords":[{"timeUnixNano":"1'
    '700000000123456789","observedTimeUnixNano":"1700000000123456799","severityNumber":9,"severityText":"'
    'INFO","body":{"stringValue":"Finished in state Completed() ☃"},"attributes":[{"key":"str","value":{"'
    'stringValue":"plain"}},{"key":"str.non_ascii","value":{"stringValue":"héllo ☃ 𝄞 日本"}},{"key":"str.co'
    'ntrol","value":{"stringValue":"tab\\t nl\\n nul\\u0000 us\\u001f del\x7f ls\u2028 \\"quoted\\" back\\\\slash'
    ' </script>"}},{"key":"str.empty","value":{"stringValue":""}},{"key":"ключ","value":{"stringValue":"з'
    'начение"}},{"key":"int","value":{"intValue":"42"}},{"key":"int.negative","value":{"intValue":"-7"}},'
    '{"key":"int.zero","value":{"intValue":"0"}},{"key":"int.int64_max","value":{"intValue":"922337203685'
    '4775807"}},{"key":"int.int64_min","value":{"intValue":"-9223372036854775808"}},{"key":"int.beyond_in'
    't64","value":{"stringValue":"9223372036854775808"}},{"key":"int.below_int64","value":{"stringValue":'
    '"-9223372036854775809"}},{"key":"int.huge","value":{"stringValue":"100000000000000000000000000000000'
    '00000000"}},{"key":"bool.true","value":{"boolValue":true}},{"key":"bool.false","value":{"boolValue":'
    'false}},{"key":"float","value":{"doubleValue":1.5}},{"key":"float.whole","value":{"doubleValue":2.0}'
    '},{"key":"float.tiny","value":{"doubleValue":5e-324}},{"key":"float.big","value":{"doubleValue":1.79'
    '76931348623157e+308}},{"key":"float.negative_zero","value":{"doubleValue":-0.0}},{"key":"float.nan",'
    '"value":{"doubleValue":"NaN"}},{"key":"float.inf","value":{"doubleValue":"Infinity"}},{"key":"float.'
    'minus_inf","value":{"doubleValue":"-Infinity"}},{"key":"bytes","value":{"bytesValue":"AP8gYmluYXJ5"}'
    '},{"key":"bytes.empty","value":{"bytesValue":""}},{"key":"none","value":{}},{"key":"list","value":{"'
    'arrayValue":{"values":[{"stringValue":"a"},{"intValue":"1"},{"doubleValue":2.5},{"boolValue":true},{'
    '},{"bytesValue":"AQ=="},{"doubleValue":"NaN"}]}}},{"key":"tuple","value":{"arrayValue":{"values":[{"'
    'stringValue":"x"},{"stringValue":"y"}]}}},{"key":"list.empty","value":{"arrayValue":{"values":[]}}},'
    '{"key":"mapping","value":{"kvlistValue":{"values":[{"key":"inner","value":{"kvlistValue":{"values":['
    '{"key":"deep","value":{"arrayValue":{"values":[{"intValue":"1"},{"kvlistValue":{"values":[{"key":"k"'
    ',"value":{"stringValue":"v"}}]}}]}}}]}}},{"key":"3","value":{"stringValue":"int key"}},{"key":"_Mixe'
    'd.RED","value":{"stringValue":"enum key"}}]}}},{"key":"mapping.empty","value":{"kvlistValue":{"value'
    's":[]}}},{"key":"subclass.str_enum_mixin","value":{"stringValue":"_Mixed.RED"}},{"key":"subclass.str'
    '_with_own_str","value":{"stringValue":"LOUD"}},{"key":"subclass.int","value":{"intValue":"5"}},{"key'
    '":"subclass.int_beyond_int64","value":{"stringValue":"18446744073709551616"}},{"key":"subclass.float'
    '","value":{"doubleValue":0.25}},{"key":"subclass.float_nan","value":{"doubleValue":"NaN"}},{"key":"o'
    'ther.decimal","value":{"stringValue":"1.10"}},{"key":"other.path","value":{"stringValue":"/tmp/x y"}'
    '},{"key":"other.bytearray","value":{"arrayValue":{"values":[{"intValue":"97"},{"intValue":"98"}]}}},'
    '{"key":"7","value":{"stringValue":"int key at the top"}}],"traceId":"0af7651916cd43dd8448eb211c80319'
    'c","spanId":"b7ad6b7169203331","flags":1,"eventName":"otelflow.run.state"}]}]}]}'
)

LOGS_OF_EVERY_BODY_KIND = (
    '{"resourceLogs":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}}'
    ',{"key":"service.instance.id","value":{"stringValue":"i-1"}},{"key":"host.cpus","value":{"intValue":'
    '"2"}}]},"scopeLogs":[{"scope":{"name":"otelflow","version":"1.2.3"},"logRecords":[{"timeUnixNano":"0'
    '","observedTimeUnixNano":"0","severityNumber":0,"body":{},"attributes":[]},{"timeUnixNano":"17000000'
    '00123456789","observedTimeUnixNano":"1700000000123456789","severityNumber":0,"body":{},"attributes":'
    '[]},{"timeUnixNano":"1700000000123456789","observedTimeUnixNano":"1700000000123456799","severityNumb'
    'er":0,"severityText":"custom","body":{"stringValue":"_Mixed.RED"},"attributes":[]},{"timeUnixNano":"'
    '1700000000123456789","observedTimeUnixNano":"1700000000123456799","severityNumber":0,"body":{"string'
    'Value":"1180591620717411303424"},"attributes":[],"traceId":"0af7651916cd43dd8448eb211c80319c","spanI'
    'd":"0000000000000001","flags":0}]},{"scope":{"name":"plain"},"logRecords":[{"timeUnixNano":"17000000'
    '00123456789","observedTimeUnixNano":"1700000000123456799","severityNumber":17,"body":{"kvlistValue":'
    '{"values":[{"key":"k","value":{"arrayValue":{"values":[{"intValue":"1"},{"stringValue":"two"},{}]}}}'
    ',{"key":"n","value":{"kvlistValue":{"values":[{"key":"x","value":{"doubleValue":"Infinity"}}]}}}]}},'
    '"attributes":[]},{"timeUnixNano":"1700000000123456789","observedTimeUnixNano":"1700000000123456799",'
    '"severityNumber":0,"body":{"doubleValue":"NaN"},"attributes":[]}]},{"scope":{},"logRecords":[{"timeU'
    'nixNano":"1700000000123456789","observedTimeUnixNano":"1700000000123456799","severityNumber":0,"body'
    '":{"arrayValue":{"values":[{"stringValue":"a"},{"intValue":"2"}]}},"attributes":[{"key":"n","value":'
    '{"intValue":"1"}}]}]}]},{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"led'
    'ger ☃"}}]},"scopeLogs":[{"scope":{"name":"otelflow","version":"1.2.3"},"logRecords":[{"timeUnixNano"'
    ':"1700000000123456789","observedTimeUnixNano":"1700000000123456799","severityNumber":13,"severityTex'
    't":"WARN","body":{"bytesValue":"AHJhdw=="},"attributes":[]}]}]}]}'
)

# 32 nested arrays/kvlists are written whole; the 33rd level and below become one marker string.
_ARRAY, _ARRAY_END = '{"arrayValue":{"values":[', "]}}"
_KVLIST, _KVLIST_END = '{"kvlistValue":{"values":[{"key":"d","value":', "}]}}"
_BOTTOM, _CUT = '{"stringValue":"bottom"}', '{"stringValue":"...[nested deeper than 32 levels]"}'
SPAN_NESTED_DEEP = (
    '{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"billing"}},'
    '{"key":"service.instance.id","value":{"stringValue":"i-1"}},{"key":"host.cpus","value":{"intValue":"2"}}]},'
    '"scopeSpans":[{"scope":{"name":"otelflow","version":"1.2.3"},"spans":[{"traceId":"0af7651916cd43dd8448eb211c'
    '80319c","spanId":"3333333333333333","name":"deep","kind":1,"startTimeUnixNano":"5389348814865367112",'
    '"endTimeUnixNano":"5389348814866367112","attributes":['
    + '{"key":"lists.32","value":' + _ARRAY * 32 + _BOTTOM + _ARRAY_END * 32 + "},"
    + '{"key":"lists.33","value":' + _ARRAY * 32 + _CUT + _ARRAY_END * 32 + "},"
    + '{"key":"mappings.32","value":' + _KVLIST * 32 + _BOTTOM + _KVLIST_END * 32 + "},"
    + '{"key":"mappings.33","value":' + _KVLIST * 32 + _CUT + _KVLIST_END * 32 + "},"
    + '{"key":"lists.40","value":' + _ARRAY * 32 + _CUT + _ARRAY_END * 32 + "}"
    + '],"flags":257,"status":{"code":0}}]}]}]}'
)

EXPECTED_LINES = [
    pytest.param(lambda: encode_spans([span_with_every_value_kind()]), SPAN_WITH_EVERY_VALUE_KIND,
                 id="span with every value kind"),
    pytest.param(lambda: encode_spans([span_nested_deep()]), SPAN_NESTED_DEEP, id="span nested deeper than 32"),
    pytest.param(lambda: encode_spans([bare_span()]), BARE_SPAN, id="bare span"),
    pytest.param(lambda: encode_spans(spans_of_two_resources_and_scopes()), SPANS_OF_TWO_RESOURCES_AND_SCOPES,
                 id="spans of two resources and scopes"),
    pytest.param(lambda: encode_logs([log_with_every_value_kind()]), LOG_WITH_EVERY_VALUE_KIND,
                 id="log with every value kind"),
    pytest.param(lambda: encode_logs(logs_of_every_body_kind()), LOGS_OF_EVERY_BODY_KIND,
                 id="logs of every body kind"),
]


# --- the encoder writes the same bytes as ever ---------------------------------------------------------------


@pytest.mark.parametrize(("encode", "expected"), EXPECTED_LINES)
def test_the_encoder_writes_byte_for_byte_the_lines_it_always_wrote(encode: Callable[[], str], expected: str) -> None:
    assert encode() == expected


@pytest.mark.parametrize(("encode", "expected"), EXPECTED_LINES)
def test_a_line_decodes_to_sdk_objects_that_encode_to_the_same_line(encode: Callable[[], str], expected: str) -> None:
    signal = "traces" if expected.startswith('{"resourceSpans"') else "logs"
    again = encode_spans if signal == "traces" else encode_logs
    assert again(decode_line(expected, signal)) == expected


def _attribute_values(line: str, signal: str) -> dict[str, Any]:
    (item,) = [item for _, _, item in iter_items(line, signal)]
    return {kv["key"]: kv["value"] for kv in item["attributes"]}


def test_every_value_kind_is_written_as_its_otlp_json_any_value() -> None:
    values = _attribute_values(encode_spans([span_with_every_value_kind()]), "traces")
    assert values == _attribute_values(encode_logs([log_with_every_value_kind()]), "logs")
    assert values["str.non_ascii"] == {"stringValue": "héllo ☃ 𝄞 日本"}
    assert values["str.control"] == {"stringValue": EVERY_VALUE_KIND["str.control"]}
    assert values["ключ"] == {"stringValue": "значение"}
    assert values["int.int64_min"] == {"intValue": "-9223372036854775808"}
    assert values["int.beyond_int64"] == {"stringValue": "9223372036854775808"}  # no reader could take it as an int
    assert values["bool.false"] == {"boolValue": False}
    assert values["float.negative_zero"] == {"doubleValue": -0.0}
    assert values["float.tiny"] == {"doubleValue": 5e-324}
    assert [values[f"float.{k}"] for k in ("nan", "inf", "minus_inf")] == [
        {"doubleValue": "NaN"}, {"doubleValue": "Infinity"}, {"doubleValue": "-Infinity"}]
    assert values["bytes"] == {"bytesValue": base64.b64encode(b"\x00\xff binary").decode()}
    assert values["none"] == {}
    assert values["list"] == {"arrayValue": {"values": [
        {"stringValue": "a"}, {"intValue": "1"}, {"doubleValue": 2.5}, {"boolValue": True}, {},
        {"bytesValue": "AQ=="}, {"doubleValue": "NaN"}]}}
    assert values["mapping"] == {"kvlistValue": {"values": [
        {"key": "inner", "value": {"kvlistValue": {"values": [{"key": "deep", "value": {"arrayValue": {"values": [
            {"intValue": "1"}, {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}]}}}]}}},
        {"key": "3", "value": {"stringValue": "int key"}},
        {"key": "_Mixed.RED", "value": {"stringValue": "enum key"}}]}}
    assert values["subclass.str_enum_mixin"] == {"stringValue": "_Mixed.RED"}
    assert values["subclass.str_with_own_str"] == {"stringValue": "LOUD"}
    assert values["subclass.int"] == {"intValue": "5"}
    assert values["subclass.float_nan"] == {"doubleValue": "NaN"}
    assert values["other.decimal"] == {"stringValue": "1.10"}
    assert values["7"] == {"stringValue": "int key at the top"}


def test_int_and_str_enums_are_written_as_their_plain_values() -> None:
    """They used to raise (``IntEnum(member)``), which lost the whole line they were in."""

    class Level(enum.IntEnum):
        HIGH = 3

    class Mode(enum.StrEnum):
        FAST = "fast"

    class Perm(enum.IntFlag):
        R = 4
        W = 2

    span = _span("enums", 0x666, attributes={"level": Level.HIGH, "mode": Mode.FAST, "perm": Perm.R | Perm.W,
                                              "list": [Level.HIGH, Mode.FAST]})
    assert _attribute_values(encode_spans([span]), "traces") == {
        "level": {"intValue": "3"}, "mode": {"stringValue": "fast"}, "perm": {"intValue": "6"},
        "list": {"arrayValue": {"values": [{"intValue": "3"}, {"stringValue": "fast"}]}},
    }


def test_spans_recorded_by_the_sdk_read_back_with_their_attributes_as_set() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(shutdown_on_exit=False)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with provider.get_tracer("otelflow").start_as_current_span("task t") as span:
        span.set_attributes({"s": "x ☃", "i": -3, "b": True, "f": 0.5, "tags": ("a", "b"), "nums": [1, 2]})
    (line_span,) = decode_spans(encode_spans(exporter.get_finished_spans()))
    assert dict(line_span.attributes) == {"s": "x ☃", "i": -3, "b": True, "f": 0.5, "tags": ["a", "b"],
                                          "nums": [1, 2]}


# --- a batch cut into lines: each under the size limit, every item in exactly one line --------------------------


def _payload_spans(count: int, payload: str, **fields: Any) -> list[ReadableSpan]:
    return [_span(f"task {i}", 0x1000 + i, attributes={"payload": payload, "i": i}, **fields)
            for i in range(count)]


def _utf8(line: str) -> int:
    return len(line.encode())


def _lines(pieces: list[list[Any]]) -> list[str]:
    assert all(isinstance(piece, EncodedPiece) for piece in pieces)
    return [piece.line for piece in pieces if isinstance(piece, EncodedPiece)]


def test_each_piece_carries_the_line_the_encoder_writes_for_its_items() -> None:
    spans = spans_of_two_resources_and_scopes() * 3
    pieces = split_encoded(spans, "traces", Limits(max_request_bytes=1500))
    assert len(pieces) > 1
    assert [span for piece in pieces for span in piece] == spans  # in order, each once
    assert _lines(pieces) == [encode_spans(piece) for piece in pieces]
    assert _lines(split_encoded(spans, "traces", Limits())) == [encode_spans(spans)]  # one line when it fits


@pytest.mark.parametrize("payload", ["p" * 20_000, "☃" * 7_000], ids=["ascii", "three bytes a char"])
def test_lines_of_big_items_stay_under_max_request_bytes_and_no_item_is_lost(payload: str) -> None:
    limits = Limits(max_request_bytes=256 * 1024)
    spans = _payload_spans(100, payload)
    pieces = split_encoded(spans, "traces", limits)
    assert len(pieces) > 1
    assert [span.context.span_id for piece in pieces for span in piece] == [s.context.span_id for s in spans]
    for piece, line in zip(pieces, _lines(pieces), strict=True):
        assert _utf8(line) <= limits.max_request_bytes
        assert [s.context.span_id for s in decode_spans(line)] == [s.context.span_id for s in piece]


def test_lines_are_filled_up_to_the_limit_not_to_an_estimate() -> None:
    """Sizes are those of the encoding: a line ends only where the next item would not have fitted."""
    limits = Limits(max_request_bytes=256 * 1024)
    pieces = split_encoded(_payload_spans(100, "é" * 5_000), "traces", limits)
    for piece, following in itertools.pairwise(pieces):
        assert _utf8(encode_spans([*piece, following[0]])) > limits.max_request_bytes
    logs = [_log("x" * 3_000, attributes={"n": i}) for i in range(200)]
    log_pieces = split_encoded(logs, "logs", limits)
    assert len(log_pieces) > 1
    for piece, following in itertools.pairwise(log_pieces):
        assert _utf8(encode_logs([*piece, following[0]])) > limits.max_request_bytes >= _utf8(encode_logs(piece))


@pytest.mark.parametrize(("signal", "encode"), [("traces", encode_spans), ("logs", encode_logs)])
def test_the_size_of_every_line_is_counted_exactly_whatever_the_limit(signal: str, encode: Callable[..., str]) -> None:
    """Sweeping the limit byte by byte: a byte miscounted anywhere (a comma, a scope block, a non-ASCII
    character of a resource) would let some line past the limit, or end one before it had to."""
    items: list[Any] = (spans_of_two_resources_and_scopes() * 3 if signal == "traces"
                        else logs_of_every_body_kind() * 2)
    for budget in range(1_200, 1_700):
        pieces = split_encoded(items, signal, Limits(max_request_bytes=budget))
        assert [item for piece in pieces for item in piece] == items
        assert all(_utf8(line) <= budget for line in _lines(pieces))
        for piece, following in itertools.pairwise(pieces):
            assert _utf8(encode([*piece, following[0]])) > budget


def test_a_huge_span_is_shrunk_and_still_written_between_its_neighbours() -> None:
    limits = Limits(max_request_bytes=256 * 1024)
    spans = _payload_spans(5, "ok")
    message = "E" * 5_000_000
    spans[2] = _span("task huge", 0x888, status=Status(StatusCode.ERROR, message),
                     attributes={"exception.message": message, "exception.stacktrace": message, "blob": "B" * 500_000},
                     events=[Event("exception", {"exception.message": message, "exception.stacktrace": message})])
    lines = _lines(split_encoded(spans, "traces", limits))
    written = [span for line in lines for span in decode_spans(line)]
    assert [s.name for s in written] == ["task 0", "task 1", "task huge", "task 3", "task 4"]
    assert all(_utf8(line) <= limits.max_request_bytes for line in lines)
    huge = written[2]
    assert huge.status.description.endswith("chars]") and "...[truncated" in huge.status.description
    assert len(huge.attributes["blob"]) <= limits.attribute_value


def test_a_huge_log_record_is_shrunk_and_still_written() -> None:
    limits = Limits(max_request_bytes=256 * 1024)
    records = [_log("before"), _log("L" * 3_000_000, attributes={"extra": "X" * 1_000_000}), _log("after")]
    lines = _lines(split_encoded(records, "logs", limits))
    written = [record.log_record for line in lines for record in decode_logs(line)]
    assert [str(r.body)[:6] for r in written] == ["before", "LLLLLL", "after"]
    assert all(_utf8(line) <= limits.max_request_bytes for line in lines)
    assert len(written[1].body) <= limits.log_body and "...[truncated" in written[1].body


class _Unprintable:
    def __str__(self) -> str:
        raise RuntimeError("no text for this one")


def test_an_item_that_cannot_be_encoded_gets_a_piece_of_its_own_without_a_line() -> None:
    spans = _payload_spans(5, "ok")
    spans[1] = _span("odd", 0x999, attributes={"path": "/tmp/\udcff"})  # a lone surrogate: kept, as its JSON escape
    spans[3] = _span("worse", 0x998, attributes={"value": _Unprintable()})
    pieces = split_encoded(spans, "traces", Limits())
    assert [type(piece) for piece in pieces] == [EncodedPiece, list, EncodedPiece]
    assert [[s.name for s in piece] for piece in pieces] == [["task 0", "odd", "task 2"], ["worse"], ["task 4"]]
    assert '"/tmp/\\udcff"' in pieces[0].line.encode("utf-8", "backslashreplace").decode()


# --- through the spool exporter: one line per export call, every item counted ------------------------------------


def _spool_run(items: list[Any], signal: str) -> tuple[list[int], list[bytes], Any]:
    """Items through the spool's real pipeline: ``(items per export call, lines written, processor stats)``."""
    from otelflow._internal.export.build import batch, exporter
    from otelflow.settings import get_settings

    export, shutdown, _, options = exporter(signal, "spool")
    calls: list[int] = []

    def counted(piece: Sequence[Any]) -> bool:
        calls.append(len(piece))
        return bool(export(piece))

    processor = batch(counted, shutdown, signal, "BSP", **options)
    for item in items:
        processor.emit(item)
    assert processor.force_flush(10)
    processor.shutdown(10)
    lines = [line for path in sorted(get_settings().spool_dir.glob(f"{signal}-*.jsonl"))
             for line in path.read_bytes().splitlines()]
    return calls, lines, processor.stats


def test_the_spool_writes_one_line_per_export_call_and_counts_each_line_exactly(settings_env: Any) -> None:
    settings_env(EXPORT_MAX_REQUEST_BYTES=str(64 * 1024))
    spans = _payload_spans(60, "s" * 6_000)
    calls, lines, stats = _spool_run(spans, "traces")
    assert all(len(line) <= 64 * 1024 for line in lines)
    items = [decode_spans(line) for line in lines]
    assert len(items) > 1 and calls == [len(line_items) for line_items in items]
    assert [s.context.span_id for line_items in items for s in line_items] == [s.context.span_id for s in spans]
    assert (stats.exported, stats.dropped) == (60, 0)


def test_a_span_the_spool_cannot_write_is_dropped_alone_and_counted() -> None:
    spans = _payload_spans(6, "ok")
    spans[3] = _span("bad", 0x999, attributes={"value": _Unprintable()})
    calls, lines, stats = _spool_run(spans, "traces")
    assert [s.name for line in lines for s in decode_spans(line)] == ["task 0", "task 1", "task 2", "task 4", "task 5"]
    assert len(calls) == len(lines) + 1 and 1 in calls  # its own export call, which failed
    assert (stats.exported, stats.dropped) == (5, 1) and stats.drop_cause is not None


def test_log_records_reach_the_spool_in_lines_with_exact_counts(settings_env: Any) -> None:
    settings_env(EXPORT_MAX_REQUEST_BYTES=str(64 * 1024))
    records = [_log(f"record {i} " + "r" * 2_000, scope=SCOPE if i % 3 else PLAIN_SCOPE) for i in range(90)]
    calls, lines, stats = _spool_run(records, "logs")
    assert all(len(line) <= 64 * 1024 for line in lines)
    items = [decode_logs(line) for line in lines]
    assert len(items) > 1 and calls == [len(line_items) for line_items in items]
    # Within a line records are grouped by scope (OTLP's layout), so the order is per scope.
    numbers = [int(str(r.log_record.body).split()[1]) for line_items in items for r in line_items]
    assert sorted(numbers) == list(range(90))
    assert (stats.exported, stats.dropped) == (90, 0)

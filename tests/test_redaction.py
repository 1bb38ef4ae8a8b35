"""Parameter values opted in (``OTELFLOW_RECORD_PARAMETER_VALUES=true``) never export secrets.

Each case is one that issue 11 reproduced: a dataclass with a ``password`` field (exported via its repr),
a list of 40 ``{"secret": ...}`` dicts and a 41-key dict holding ``api_key`` (skipped by a size check and
printed whole), a DSN with an embedded password.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import pytest
from pydantic import BaseModel, SecretStr

from otelflow import flow, task
from otelflow import semconv as sc
from otelflow._internal.runs.params import parameter_attributes
from otelflow._internal.runs.redact import exportable, redact_text
from otelflow.settings import Settings

PATTERNS = Settings().redact_patterns
P = sc.PARAMETER_PREFIX


def exported(value: Any, max_length: int = 100_000, patterns: tuple[str, ...] = PATTERNS) -> str:
    text = parameter_attributes({"value": value}, True, max_length, patterns)[P + "value"]
    assert isinstance(text, str)
    return text


@dataclasses.dataclass
class DbConfig:
    user: str
    password: str
    port: int = 5432


class ApiSettings(BaseModel):
    url: str
    token: str
    nested: dict[str, str]
    key: SecretStr


class AttrsLike:
    """Duck-typed attrs class: what ``attrs.define`` produces, without needing attrs installed."""

    class _Attribute:
        def __init__(self, name: str) -> None:
            self.name = name

    __attrs_attrs__ = (_Attribute("host"), _Attribute("private_key"))

    def __init__(self, host: str, private_key: str) -> None:
        self.host = host
        self.private_key = private_key

    def __repr__(self) -> str:
        return f"AttrsLike(host={self.host!r}, private_key={self.private_key!r})"


def test_a_dataclass_password_field_is_redacted_not_repr_ed():  # type: ignore[no-untyped-def]
    text = exported(DbConfig("app", "hunter2"))
    assert "hunter2" not in text
    assert '"user": "app"' in text and '"password": "[REDACTED]"' in text and '"port": 5432' in text


def test_pydantic_models_and_attrs_classes_are_walked():  # type: ignore[no-untyped-def]
    model = ApiSettings(url="https://u:pw1@api.example/x", token="tok1", nested={"secret": "s1", "ok": "v"},
                        key=SecretStr("k1"))
    text = exported(model)
    for secret in ("pw1", "tok1", "s1", "k1"):
        assert secret not in text, text
    assert "https://u:***@api.example/x" in text and '"ok": "v"' in text
    text = exported(AttrsLike("db.local", "-----BEGIN KEY-----"))
    assert "BEGIN KEY" not in text and "db.local" in text


def test_a_list_of_40_secret_dicts_is_walked_whole_and_truncated_not_skipped():  # type: ignore[no-untyped-def]
    text = exported([{"secret": f"s-{i}", "id": i} for i in range(40)])
    assert "s-" not in text
    assert text.count("[REDACTED]") == 32 and '"... 8 more"' in text


def test_a_41_key_dict_holding_api_key_is_redacted():  # type: ignore[no-untyped-def]
    value = {"api_key": "AKIA-SECRET"} | {f"k{i}": i for i in range(40)}
    text = exported(value)
    assert "AKIA-SECRET" not in text and '"api_key": "[REDACTED]"' in text
    big = {f"k{i}": i for i in range(40)} | {"api_key": "AKIA-LATE"}  # past the truncation point
    assert "AKIA-LATE" not in exported(big)


@pytest.mark.parametrize(("dsn", "expected"), [
    ("postgresql://user:s3cret@db:5432/prod", "postgresql://user:***@db:5432/prod"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("mysql+pymysql://root:s3cret@localhost/app?charset=utf8", "mysql+pymysql://root:***@localhost/app?charset=utf8"),
    ("host=db user=app password=s3cret dbname=prod", "host=db user=app password=*** dbname=prod"),
    ("Server=db;Uid=app;Pwd=s3cret;", "Server=db;Uid=app;Pwd=***;"),
    ("https://example.com/path?q=1", "https://example.com/path?q=1"),
])
def test_urls_and_dsns_lose_their_password(dsn, expected):  # type: ignore[no-untyped-def]
    assert redact_text(dsn) == expected
    assert exported(dsn) == expected
    assert exported({"conn": dsn}) == f'{{"conn": "{expected}"}}'


def test_secrets_at_any_depth_and_in_tuples_and_sets():  # type: ignore[no-untyped-def]
    deep = {"a": [{"b": ({"c": {"auth_header": "Bearer xyz"}},)}]}
    assert "xyz" not in exported(deep)
    assert "xyz" not in exported({("not", "a", "str"): 1, "x": {SecretStr("xyz")}})


def test_walking_a_huge_value_is_bounded():  # type: ignore[no-untyped-def]
    huge = [[{"secret": "s", "n": list(range(1_000))} for _ in range(1_000)] for _ in range(100)]
    started = time.perf_counter()
    text = exported(huge, max_length=256)
    assert time.perf_counter() - started < 0.5
    assert len(text) <= 256 and text.endswith("...[truncated]")
    walked = exportable(huge, PATTERNS)
    assert walked[-1].startswith("... ") and walked[-1].endswith(" more")  # truncated, with a marker
    assert len(str(walked)) < 100_000


def test_a_real_flow_exports_redacted_parameter_values(captured, settings_env):  # type: ignore[no-untyped-def]
    settings_env(RECORD_PARAMETER_VALUES="true", PARAMETER_VALUE_MAX_LENGTH="4096")

    @task
    def connect(config: DbConfig, dsn: str, rows: list) -> int:  # type: ignore[type-arg]
        return config.port

    @flow
    def pipeline() -> int:
        return connect(DbConfig("app", "hunter2"), "postgresql://app:hunter2@db/prod",
                       [{"secret": "hunter2"}] * 40)

    assert pipeline() == 5432
    (span,) = captured.spans_named("task connect")
    attrs = dict(span.attributes or {})
    assert "hunter2" not in str(attrs)
    assert attrs[P + "dsn"] == "postgresql://app:***@db/prod"


# --- issue 25: secrets in the record ---------------------------------------------------------------------


class Creds(NamedTuple):
    user: str
    passwd: str


def test_a_namedtuple_is_walked_as_its_fields():  # type: ignore[no-untyped-def]
    text = exported(Creds(user="root", passwd="S3KR-nt"))
    assert "S3KR-nt" not in text
    assert text == '{"user": "root", "passwd": "[REDACTED]"}'
    nested = exported({"creds": [Creds("root", "S3KR-nt")], "point": Point(1, 2)})
    assert "S3KR-nt" not in nested and '"point": {"x": 1, "y": 2}' in nested


class Point(NamedTuple):
    x: int
    y: int


@pytest.mark.parametrize("headers", [
    [["Authorization", "Bearer hdr-tok-1"], ["Accept", "text/plain"]],
    [("Authorization", "Bearer hdr-tok-1"), ("Accept", "text/plain")],  # httpx / requests header lists
    (("X-Api-Key", "hdr-tok-1"), ("accept", "text/plain")),
    [(b"authorization", b"Bearer hdr-tok-1")],
    ("Proxy-Authorization", "Basic hdr-tok-1"),  # one pair on its own
])
def test_header_pairs_with_a_secret_name_lose_their_value(headers):  # type: ignore[no-untyped-def]
    text = exported(headers)
    assert "hdr-tok-1" not in text and "[REDACTED]" in text
    assert "hdr-tok-1" not in exported({"headers": headers})
    if "Accept" in str(headers):
        assert '"Accept", "text/plain"' in text or '"accept", "text/plain"' in text


@pytest.mark.parametrize(("text", "expected"), [
    # the whole password, up to the last "@" before the host: "/" and "@" are part of it
    ("postgresql://app:pa/ss@db/x", "postgresql://app:***@db/x"),
    ("postgresql://app:p@ss@db/x", "postgresql://app:***@db/x"),
    ("postgresql://app:p:a?s#s@db:5432/x", "postgresql://app:***@db:5432/x"),
    ("connect to 'postgresql://app:p@ss/w0rd@db/x' failed", "connect to 'postgresql://app:***@db/x' failed"),
    ("a redis://:p@w/d@cache/0 and amqp://u:q/@r@mq/ here", "a redis://:***@cache/0 and amqp://u:***@mq/ here"),
    # secret-named key=value / key: value pairs
    ("GET /v1/items?api_key=k-123&page=2", "GET /v1/items?api_key=***&page=2"),
    ("retrying with token=t-123 after 2s", "retrying with token=*** after 2s"),
    ("token: t-123", "token: ***"),
    ("client_secret = 's 1'", "client_secret = '***'"),
    ('{"access_token": "t-123", "expires_in": 3600}', '{"access_token": "***", "expires_in": 3600}'),
    ("{'password': 'hunter2', 'user': 'app'}", "{'password': '***', 'user': 'app'}"),
    ("X-Api-Key: k-123", "X-Api-Key: ***"),
    ("Config(user='app', passwd='hunter2')", "Config(user='app', passwd='***')"),
    ("{'auth': {'user': 'app', 'pin': '1234'}}", "{'auth': ***}"),
    # authorization headers and bearer tokens in free text
    ("Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic ***"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig", "Authorization: Bearer ***"),
    ("sent header Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig upstream", "sent header Bearer *** upstream"),
    ("[('Authorization', 'Bearer t-123')]", "[('Authorization', '***')]"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----",
     "-----BEGIN RSA PRIVATE KEY-----***-----END RSA PRIVATE KEY-----"),
    # nothing to mask: the same text
    ("https://example.com:8443/path?q=1", "https://example.com:8443/path?q=1"),
    ("ssh://git@github.com:22/repo", "ssh://git@github.com:22/repo"),
    ("processing item 42: status=ok", "processing item 42: status=ok"),
    ("token expires at 12:30", "token expires at 12:30"),
    ("password authentication failed for user \"app\"", "password authentication failed for user \"app\""),
])
def test_text_rules(text, expected):  # type: ignore[no-untyped-def]
    assert redact_text(text, PATTERNS) == expected
    assert exported(text) == expected


def test_text_with_nothing_to_mask_is_returned_as_is():  # type: ignore[no-untyped-def]
    text = "".join(["processing item ", "42: status=ok"])
    assert redact_text(text, PATTERNS) is text


HOSTILE = [
    "a" * 1_000_000 + "://",
    "://a:" * 200_000,
    "://a:@" * 160_000,
    "token=" * 160_000,
    "token=( " * 125_000,
    "token:'" * 140_000,
    "tokentoken" * 100_000,
    ("x-password-x" * 6 + " ") * 13_000,
    "Bearer a" * 125_000,
    "-----BEGIN RSA PRIVATE KEY-----" * 32_000 + "-----END RSA PRIVATE KEY-----",
    '"token": "' * 100_000,
    "auth=[" * 160_000,
    ("auth" + " " * 7 + "=" + " " * 7) * 52_000,
    "İ" * 1_000_000,
]


@pytest.mark.parametrize("prefix", HOSTILE, ids=range(len(HOSTILE)))
def test_a_hostile_megabyte_is_redacted_in_one_pass(prefix):  # type: ignore[no-untyped-def]
    # Linear rules: each of these took one pass; before, several were quadratic (hours on a megabyte).
    text = redact_text(prefix + " api_key=k-tail postgresql://app:p@ss/tail@db/x", PATTERNS)
    assert "k-tail" not in text and "ss/tail" not in text
    assert text.endswith("api_key=*** postgresql://app:***@db/x")


def test_configured_patterns_name_the_secrets(settings_env):  # type: ignore[no-untyped-def]
    settings_env(REDACT_PATTERNS='["ssn", "password"]')
    patterns = Settings().redact_patterns
    assert patterns == ("ssn", "password")
    assert redact_text("ssn=123-45 token=t-1") == "ssn=*** token=t-1"  # the configured patterns by default
    assert exported({"customer_ssn": "123-45", "token": "t-1"}, patterns=patterns) == (
        '{"customer_ssn": "[REDACTED]", "token": "t-1"}')


def test_run_input_values_share_the_rules():  # type: ignore[no-untyped-def]
    from otelflow.input.run_input import _value_text

    text = _value_text({"dsn": "postgresql://app:p@ss/w@db/x", "headers": [["Authorization", "Bearer t-1"]],
                        "nested": {"api_key": "k-1"}}, PATTERNS, 4096)
    assert "ss/w" not in text and "t-1" not in text and "k-1" not in text
    assert '"dsn":"postgresql://app:***@db/x"' in text


def test_exported_texts_are_cut_as_before_and_secrets_at_the_cut_are_masked_whole():  # type: ignore[no-untyped-def]
    from otelflow._internal.export.limits import truncate_stacktrace, truncate_text
    from otelflow._internal.runs.redact import exported_message, exported_stacktrace

    for size in (10, 100, 9_000, 9_300, 50_000, 2_000_000):
        text = ("lorem ipsum dolor\n" * (size // 18 + 1))[:size]
        for limit in (16, 64, 8192):
            assert exported_message(text, limit) == truncate_text(text, limit)
            assert exported_stacktrace(text, limit) == truncate_stacktrace(text, limit)
    dsn = "postgresql://app:pw-at-the-cut@db/x"
    straddled = 0
    for at in range(8100, 8200, 3):  # the password straddles the cut of an 8192-character limit, for some
        message = exported_message("E" * at + " " + dsn + " " + "E" * 2_000_000, 8192)
        assert "pw-" not in message and "the-cut" not in message
        straddled += "postgresql://app:***" in message and "@db" not in message
        stack = exported_stacktrace("E" * 2_000_000 + " " + dsn + " " + "E" * (at * 2), 32_768)
        assert "pw-" not in stack and "the-cut" not in stack
    assert straddled

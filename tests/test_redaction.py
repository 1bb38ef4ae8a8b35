"""Parameter values opted in (``OTELFLOW_RECORD_PARAMETER_VALUES=true``) never export secrets.

Each case is one that issue 11 reproduced: a dataclass with a ``password`` field (exported via its repr),
a list of 40 ``{"secret": ...}`` dicts and a 41-key dict holding ``api_key`` (skipped by a size check and
printed whole), a DSN with an embedded password.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from otelflow import flow, task
from otelflow import semconv as sc
from otelflow._internal.runs.params import parameter_attributes
from otelflow._internal.runs.redact import exportable, redact_text
from otelflow.settings import Settings

PATTERNS = Settings().redact_patterns
P = sc.PARAMETER_PREFIX


def exported(value: Any, max_length: int = 100_000) -> str:
    text = parameter_attributes({"value": value}, True, max_length, PATTERNS)[P + "value"]
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

"""Prefect's Variables on the otelflow store: ``otelflow.variables.Variable`` and ``otelflow variable ...``.

Every store test runs on both backends (``store_url``: a sqlite file, then a real redis-server). The expected
messages are those Prefect 3.9.1 gives (checked against a real Prefect server); the examples are shaped like
Prefect's documentation ("Create, read, update, and delete Prefect variables").
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import enum
import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import PYTHON, REPO_ROOT, subprocess_env
from pydantic import ValidationError

from otelflow import flow, task
from otelflow._internal.cli.variables import variable_group
from otelflow.stores import StoreError, StoreUnavailable, get_store
from otelflow.testing import CapturedTelemetry
from otelflow.variables import (
    MAX_VARIABLE_VALUE_LENGTH,
    VARIABLES_NAMESPACE,
    Variable,
    check_variable_value,
    list_variables,
    read_variable,
)

NAME_RULE = "Variable name must only contain lowercase letters, numbers, and dashes or underscores."
SIZE_RULE = "Variable value must be less than 5000 characters"
NOT_JSON = "Variable value must be serializable to JSON"
UNSAFE = ("\x1b", "\x07", "\x9b", "\u202e", "\u2028", "\x00")


# --- Prefect's documented usage -------------------------------------------------------------------------


def test_create_read_update_delete_as_in_prefects_docs(store_url: str) -> None:
    # Create a variable
    created = Variable.set("answer", 42)
    assert created == Variable(name="answer", value=42, tags=[])
    # Read a variable, with and without a fallback
    assert Variable.get("answer") == 42
    assert Variable.get("answer", default=0) == 42
    assert Variable.get("not_the_answer") is None
    assert Variable.get("not_the_answer", default=42) == 42
    # Update a variable
    assert Variable.set("answer", 43, overwrite=True).value == 43
    assert Variable.get("answer") == 43
    # Delete a variable
    assert Variable.unset("answer") is True
    assert Variable.unset("answer") is False
    assert Variable.get("answer", default="gone") == "gone"


@flow(log_prints=True)
def space_mission_sync(mission_name: str) -> str:
    crew = Variable.get("crew_members", default=["Backup1", "Backup2"])
    return f"Launching {mission_name} with crew: {', '.join(crew)}"


def test_the_space_mission_example(store_url: str) -> None:
    assert space_mission_sync("Mars Expedition") == "Launching Mars Expedition with crew: Backup1, Backup2"
    Variable.set("crew_members", ["Zaphod", "Arthur", "Trillian"])
    assert space_mission_sync("Mars Expedition") == "Launching Mars Expedition with crew: Zaphod, Arthur, Trillian"


def test_the_set_docstring_example_with_tags(store_url: str) -> None:
    @flow
    def my_flow() -> Variable[Any]:
        return Variable.set(name="my_var", value="test_value", tags=["hi", "there"], overwrite=True)

    assert my_flow() == Variable(name="my_var", value="test_value", tags=["hi", "there"])
    assert read_variable("my_var").tags == ["hi", "there"]  # type: ignore[union-attr]
    assert Variable[str].get("my_var") == "test_value"


# --- sync / async dispatch ------------------------------------------------------------------------------


async def test_async_flow_awaits_get_set_unset(store_url: str) -> None:
    @flow
    async def my_flow() -> tuple[Any, ...]:
        written = await Variable.set("inflow", {"a": 1}, tags=["t"])
        value = await Variable.get("inflow")
        again = await Variable.aget("inflow", default=None)
        await Variable.aset("inflow", [1, 2], overwrite=True)
        changed = await Variable.get("inflow")
        removed = await Variable.unset("inflow")
        missing = await Variable.aget("inflow", default="fallback")
        return written, value, again, changed, removed, missing, await Variable.aunset("inflow")

    written, value, again, changed, removed, missing, second = await my_flow()
    assert written == Variable(name="inflow", value={"a": 1}, tags=["t"])
    assert (value, again, changed, removed, missing, second) == ({"a": 1}, {"a": 1}, [1, 2], True, "fallback", False)


async def test_outside_a_run_a_running_loop_makes_them_awaitable(store_url: str) -> None:
    pending = Variable.set("loop_var", "x")
    assert asyncio.iscoroutine(pending)
    assert (await pending).value == "x"
    assert await Variable.get("loop_var") == "x"
    assert Variable.get("loop_var", _sync=True) == "x"  # Prefect's escape hatch
    assert Variable.unset("loop_var", _sync=True) is True


async def test_a_sync_flow_or_task_gets_values_even_with_a_running_loop(store_url: str) -> None:
    Variable.set("crew_members", ["Ford"], _sync=True)

    @task
    def crew_size() -> int:
        return len(Variable.get("crew_members", default=[]))

    @flow
    def mission() -> tuple[str, int]:
        return space_mission_sync("Moon"), crew_size()

    assert mission() == ("Launching Moon with crew: Ford", 1)


def test_sync_code_gets_plain_values(store_url: str) -> None:
    assert Variable.set("plain", True).value is True
    assert Variable.get("plain") is True


# --- one store for every process ------------------------------------------------------------------------


_SETTER = """
from otelflow.variables import Variable
Variable.set("shared_config", {"retries": 3, "region": "eu"}, tags=["prod"])
print("set")
"""
_GETTER = """
import json
from otelflow import flow
from otelflow.variables import Variable

@flow
def reader():
    return Variable.get("shared_config")

print(json.dumps([reader(), Variable.unset("shared_config"), Variable.get("shared_config", default="gone")]))
"""


def _python(code: str, store_url: str, home: Path) -> str:
    proc = subprocess.run([PYTHON, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
                          env=subprocess_env(OTELFLOW_STORE_URL=store_url, OTELFLOW_HOME=str(home),
                                             OTELFLOW_LOGGING_TO_CONSOLE="false"))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_value_set_in_one_process_is_read_in_another(store_url: str, tmp_path: Path) -> None:
    assert _python(_SETTER, store_url, tmp_path / "a") == "set"
    assert Variable.get("shared_config") == {"retries": 3, "region": "eu"}  # and in this one
    assert json.loads(_python(_GETTER, store_url, tmp_path / "b")) == [{"retries": 3, "region": "eu"}, True, "gone"]
    assert Variable.get("shared_config") is None


def test_the_default_store_is_the_sqlite_file_in_otelflow_home(_isolated_home: Path) -> None:
    Variable.set("local", 1)
    assert (_isolated_home / "store.sqlite3").exists()
    assert get_store().get(VARIABLES_NAMESPACE, "local") is not None


# --- names ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["MyVar", "my var", "my.var", "my/var", "é", "a\nb", "abc\n", "tab\t", "x" * 10])
def test_names_follow_prefects_rule(store_url: str, name: str) -> None:
    if name == "x" * 10:
        assert Variable.set(name, 1).name == name  # (a valid one, for contrast)
        return
    with pytest.raises(ValidationError) as caught:
        Variable.set(name, 1)
    assert isinstance(caught.value, ValueError)
    assert caught.value.title == "VariableCreate"
    assert NAME_RULE in str(caught.value)
    # A name that cannot be stored is simply not there (Prefect: None / False).
    assert Variable.get(name) is None
    assert Variable.get(name, default=7) == 7
    assert Variable.unset(name) is False


def test_name_length_and_allowed_characters(store_url: str) -> None:
    assert Variable.set("a-b_c9", 1).name == "a-b_c9"
    assert Variable.set("a" * 255, 1).name == "a" * 255
    with pytest.raises(ValidationError, match="at most 255"):
        Variable.set("a" * 256, 1)
    with pytest.raises(ValidationError, match="must not be empty"):  # (Prefect accepts the empty name)
        Variable.set("", 1)
    with pytest.raises(ValidationError, match="valid string"):
        Variable.set(123, 1)  # type: ignore[arg-type]


# --- overwrite, tags, unset -----------------------------------------------------------------------------


def test_setting_an_existing_name_needs_overwrite(store_url: str) -> None:
    Variable.set("my_var", "v1", tags=["a"])
    before = read_variable("my_var")
    with pytest.raises(ValueError) as caught:
        Variable.set("my_var", "v2")
    assert str(caught.value) == "Variable 'my_var' already exists. Use `overwrite=True` to update it."
    assert Variable.get("my_var") == "v1"
    updated = Variable.set("my_var", "v2", overwrite=True)
    assert updated == Variable(name="my_var", value="v2", tags=[])  # tags not given: replaced by [] (Prefect)
    after = read_variable("my_var")
    assert before is not None and after is not None
    assert (after.id, after.created) == (before.id, before.created)
    assert after.updated >= before.updated and after.tags == []


def test_tags(store_url: str) -> None:
    variable = Variable.set("tagged", {"a": 1}, tags=["x", "y", "x"])
    assert variable.tags == ["x", "y", "x"]
    assert read_variable("tagged").tags == ["x", "y", "x"]  # type: ignore[union-attr]
    assert Variable.set("untagged", 1).tags == []
    assert Variable(name="model", value=1).tags is None  # the model's own default, as Prefect's
    with pytest.raises(ValidationError, match="valid string"):
        Variable.set("bad_tags", 1, tags=[1])  # type: ignore[list-item]
    with pytest.raises(ValidationError, match="valid list"):
        Variable.set("bad_tags", 1, tags="abc")  # type: ignore[arg-type]


def test_a_stored_none_is_a_value_not_a_missing_variable(store_url: str) -> None:
    Variable.set("nothing", None)
    assert Variable.get("nothing", default="fallback") is None
    assert Variable.unset("nothing") is True
    assert Variable.get("nothing", default="fallback") == "fallback"


# --- values ---------------------------------------------------------------------------------------------


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


def test_json_values_round_trip(store_url: str) -> None:
    values: dict[str, Any] = {
        "s": "text é 🚀", "i": -(2**63), "u": 2**64 - 1, "f": 1.5, "b": False, "n": None,
        "l": [1, "two", [3.0, None]], "d": {"nested": {"list": [True]}, "": 0},
    }
    for key, value in values.items():
        Variable.set(key, value)
        assert Variable.get(key) == value
        assert type(Variable.get(key)) is type(value)
    assert Variable.set("tuple", (1, (2, 3))).value == [1, [2, 3]]
    assert Variable.get("tuple") == [1, [2, 3]]
    assert Variable.set("enum", Color.RED).value == "red" and type(Variable.get("enum")) is str
    assert Variable.set("intenum", {"level": Level.HIGH}).value == {"level": 3}


@pytest.mark.parametrize(("value", "message"), [
    (datetime.datetime(2024, 1, 1), NOT_JSON),
    ({"when": datetime.date(2024, 1, 1)}, NOT_JSON),
    ({1, 2}, NOT_JSON),
    (b"bytes", NOT_JSON),
    (object(), NOT_JSON),
    ({1: "int key"}, NOT_JSON),
    (2**64, NOT_JSON),
    (float("nan"), "Out of range float values are not JSON compliant"),
    ([float("inf")], "Out of range float values are not JSON compliant"),
])
def test_non_json_values_are_refused(store_url: str, value: Any, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Variable.set("bad", value)
    assert Variable.get("bad") is None


def test_the_value_size_limit_is_prefects(store_url: str) -> None:
    # 5000 bytes of compact UTF-8 JSON text: a 4998-character string and its two quotes is the largest.
    assert MAX_VARIABLE_VALUE_LENGTH == 5000
    Variable.set("big", "x" * 4998)
    assert len(Variable.get("big")) == 4998
    Variable.set("accented", "é" * 2499)  # two bytes each
    for too_big in ("x" * 4999, "é" * 2500, {"k": "x" * 4993}, ["x" * 1000] * 5):
        with pytest.raises(ValidationError, match=SIZE_RULE):
            Variable.set("too_big", too_big)
    assert Variable.get("too_big") is None
    with pytest.raises(ValidationError, match=SIZE_RULE):  # the model checks it too
        Variable(name="x", value="x" * 6000)
    with pytest.raises(ValueError, match=SIZE_RULE):
        check_variable_value("x" * 6000)


def test_errors_never_quote_the_value(store_url: str) -> None:
    secret = "sk-live-0123456789abcdef"
    for bad in (secret * 300, {"token": secret, "when": datetime.datetime(2024, 1, 1)}):
        with pytest.raises(ValidationError) as caught:
            Variable.set("api_token", bad)
        assert secret not in str(caught.value) and "sk-live" not in repr(caught.value.errors())


def test_values_stay_out_of_telemetry(store_url: str, captured: CapturedTelemetry) -> None:
    secret = "hunter2-very-secret-token"

    @flow
    def uses_secrets() -> str:
        Variable.set("db_password", secret)
        value: str = Variable.get("db_password")
        with contextlib.suppress(ValueError):
            Variable.set("too_big", secret * 500)
        return "ok" if value == secret else "no"

    @flow
    def fails() -> None:
        Variable.set("too_big", secret * 500)

    assert uses_secrets() == "ok"
    with pytest.raises(ValidationError):
        fails()
    dumped = " ".join(span.to_json() for span in captured.spans) + " ".join(str(log) for log in captured.logs)
    assert captured.spans and secret not in dumped and "hunter2" not in dumped


def test_a_damaged_record_is_reported_and_can_be_replaced(store_url: str) -> None:
    get_store().put(VARIABLES_NAMESPACE, "broken", "[1, 2", notify=False)
    with pytest.raises(StoreError, match="damaged"):
        Variable.get("broken")
    assert list_variables() == ([], 1)
    assert Variable.set("broken", "fixed", overwrite=True).value == "fixed"
    assert Variable.get("broken") == "fixed"


# --- the CLI --------------------------------------------------------------------------------------------


def cli(*args: str, input: str | None = None) -> Result:
    """``otelflow variable ARGS`` through click's runner (piped output); never a traceback."""
    result = CliRunner().invoke(variable_group, list(args), input=input, prog_name="otelflow variable")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def test_cli_set_get_ls_unset(store_url: str) -> None:
    result = cli("set", "my_var", "hello")
    assert (result.exit_code, result.stdout) == (0, "Set variable 'my_var'.\n")
    result = cli("set", "my_var", "hello2")
    assert result.exit_code == 1
    assert result.stderr == "Variable 'my_var' already exists. Use `--overwrite` to update it.\n"
    assert cli("set", "my_var", '{"a": [1, 2]}', "--overwrite", "--tag", "t1", "--tag", "t2").exit_code == 0
    assert cli("set", "num", "42").exit_code == 0
    assert cli("set", "str_num", '"42"').exit_code == 0
    assert cli("set", "nul", "null").exit_code == 0
    # get prints the value as JSON (Prefect's json.dumps)
    assert cli("get", "my_var").stdout == '{"a": [1, 2]}\n'
    assert cli("get", "num").stdout == "42\n"
    assert cli("get", "str_num").stdout == '"42"\n'
    assert cli("get", "nul").stdout == "null\n"
    assert Variable.get("my_var") == {"a": [1, 2]} and Variable.get("num") == 42 and Variable.get("str_num") == "42"
    assert read_variable("my_var").tags == ["t1", "t2"]  # type: ignore[union-attr]
    missing = cli("get", "missing")
    assert (missing.exit_code, missing.stderr) == (1, "Variable 'missing' not found.\n")
    # ls: a table by name, or JSON
    table = cli("ls").stdout
    assert "Variables" in table and "Created" in table and "a few seconds ago" in table
    assert [line.split("│")[1].strip() for line in table.splitlines() if line.startswith("│")] == [
        "my_var", "nul", "num", "str_num"]
    listed = json.loads(cli("ls", "--json").stdout)
    assert [v["name"] for v in listed] == ["my_var", "nul", "num", "str_num"]
    assert listed[0]["value"] == {"a": [1, 2]} and listed[0]["tags"] == ["t1", "t2"]
    assert set(listed[0]) == {"id", "created", "updated", "name", "value", "tags"}
    assert [v["name"] for v in json.loads(cli("ls", "-o", "json", "--limit", "2").stdout)] == ["my_var", "nul"]
    wrong = cli("ls", "--output", "yaml")
    assert (wrong.exit_code, wrong.stderr) == (1, "Only 'json' output format is supported.\n")
    # inspect
    details = cli("inspect", "my_var").stdout
    assert "t1, t2" in details and '{"a": [1, 2]}' in details
    assert json.loads(cli("inspect", "my_var", "--json").stdout)["tags"] == ["t1", "t2"]
    assert cli("inspect", "missing").exit_code == 1
    # unset (and its alias delete)
    assert cli("unset", "num", "--yes").stdout == "Unset variable 'num'.\n"
    again = cli("unset", "num")
    assert (again.exit_code, again.stderr) == (1, "Variable 'num' not found.\n")
    assert cli("delete", "nul").stdout == "Unset variable 'nul'.\n"
    assert [v["name"] for v in json.loads(cli("ls", "--json").stdout)] == ["my_var", "str_num"]


def test_cli_refuses_what_the_api_refuses(store_url: str) -> None:
    bad = cli("set", "BadName", "1")
    assert bad.exit_code == 1 and bad.stderr == f"otelflow variable: {NAME_RULE}\n"
    big = cli("set", "big", "s3cret" * 1000)
    assert big.exit_code == 1 and big.stderr.startswith(f"otelflow variable: {SIZE_RULE}")
    assert "s3cret" not in big.output
    assert Variable.get("big") is None


def test_cli_unset_asks_on_a_terminal(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from otelflow._internal.cli import variables as variable_cli

    Variable.set("keep_me", 1)
    monkeypatch.setattr(variable_cli, "_interactive", lambda: True)
    declined = cli("unset", "keep_me", input="n\n")
    assert declined.exit_code == 1 and "Are you sure you want to unset variable 'keep_me'?" in declined.stdout
    assert declined.stderr == "Unset aborted.\n" and Variable.get("keep_me") == 1
    assert cli("unset", "keep_me", input="y\n").exit_code == 0
    assert Variable.get("keep_me") is None
    Variable.set("keep_me", 2)
    assert cli("unset", "keep_me", "--yes").exit_code == 0  # no question asked


def test_cli_escapes_untrusted_text_from_the_store(store_url: str) -> None:
    # Anyone who can write to the store can put anything there: names, tags and values.
    evil_value = "v\x1b[2J\x1b]0;pwned\x07\x9b\u202e\u2028\x00"
    record = {"id": "i\x1b[31m", "created": "c\x1b[31m", "updated": "[bold]u", "name": "ignored",
              "value": {"k\x1b": evil_value}, "tags": ["t\x1b]0;x\x07"]}
    store = get_store()
    store.put(VARIABLES_NAMESPACE, "evil\x1b[31mname\u202e", json.dumps(record), notify=False)
    store.put(VARIABLES_NAMESPACE, "evil", json.dumps(record), notify=False)
    outputs = [cli("ls").output, cli("ls", "--json").output, cli("get", "evil").output,
               cli("inspect", "evil").output, cli("inspect", "evil", "-o", "json").output,
               cli("get", "evil\x1b[31m").output]
    for output in outputs:
        assert not any(char in output for char in UNSAFE), repr(output)
    listed = json.loads(outputs[1])  # still valid JSON, same content
    assert {v["name"] for v in listed} == {"evil", "evil\x1b[31mname\u202e"}
    assert listed[0]["value"] == {"k\x1b": evil_value} and listed[0]["tags"] == ["t\x1b]0;x\x07"]
    assert json.loads(outputs[2]) == {"k\x1b": evil_value}
    assert "\\x1b[31mname\\u202e" in outputs[0]  # the name, escaped
    assert "[bold]u" in outputs[0]  # shown as text: rich markup from the store is never interpreted
    assert Variable.get("evil") == {"k\x1b": evil_value}  # the API returns the value as stored


def test_cli_without_a_store_file_lists_nothing_and_creates_nothing(_isolated_home: Path) -> None:
    assert json.loads(cli("ls", "--json").stdout) == []
    assert cli("get", "x").exit_code == 1 and cli("unset", "x").exit_code == 1
    assert not (_isolated_home / "store.sqlite3").exists()
    assert cli("set", "x", "1").exit_code == 0 and (_isolated_home / "store.sqlite3").exists()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dead_redis_is_one_line_and_exit_1(settings_env: Any) -> None:
    from otelflow.stores import reset_stores

    dead = f"redis://app:hunter2@127.0.0.1:{_free_port()}/0"
    try:
        for args in (("ls",), ("ls", "--json"), ("get", "x"), ("inspect", "x"), ("set", "x", "1"),
                     ("unset", "x", "--yes")):
            result = cli("--store", dead, *args)
            assert result.exit_code == 1 and result.stdout == "", args
            lines = result.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith("otelflow variable: "), result.stderr
            assert "unreachable" in lines[0] and "redis://app:***@127.0.0.1" in lines[0]
            assert "hunter2" not in result.output
        settings_env(STORE_URL=dead)  # the configured store, not --store
        result = cli("get", "x")
        assert result.exit_code == 1 and len(result.stderr.splitlines()) == 1 and "hunter2" not in result.output
        with pytest.raises(StoreUnavailable):
            Variable.get("x")
    finally:
        reset_stores()

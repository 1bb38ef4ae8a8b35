"""``otelflow cache ls|inspect|clear`` on entries made by real flows with cached tasks, on the sqlite store and a
real redis-server; untrusted text escaped; a dead store is one line and exit 1; ``otelflow show`` marks hits.

Flows run in this process (telemetry captured) and the command through click's runner, except where the real
entry point matters (``python -m otelflow`` in a subprocess: the spool for ``show``, the dead-store message).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import PYTHON, REPO_ROOT, subprocess_env

from otelflow import flow, task
from otelflow._internal.cli import cache as cache_cli
from otelflow._internal.cli.cache import _human_size, find_entry, terminal_safe
from otelflow.cache_policies import INPUTS
from otelflow.cli import main
from otelflow.results import CacheEntry, exported_key, list_cache_entries, write_cache_entry
from otelflow.testing import CapturedTelemetry

# --- tasks and fixtures ---------------------------------------------------------------------------------


@task(cache_policy=INPUTS)
def double(x: int) -> int:
    return 2 * x


@task(cache_policy=INPUTS)
def greet(name: str) -> str:
    return f"hello {name}"


@task(cache_key_fn=lambda context, parameters: f"customer-{parameters['n']}")
def customer(n: int) -> dict[str, int]:
    return {"n": n}


@task(name="evil\x1b[31m", cache_key_fn=lambda context, parameters: "k\x1b]0;pwned\x07" + str(parameters["n"]))
def evil(n: int) -> str:
    return "v\x1b[2J\x1b]0;pwned\x07" * 2


@task(cache_policy=INPUTS, cache_expiration=datetime.timedelta(milliseconds=1))
def fleeting(x: int) -> int:
    return x


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path, settings_env: Any) -> Iterator[str]:
    """OTELFLOW_STORE_URL on each backend: a sqlite file, then database 9 of the session's redis-server (flushed,
    so entries of other tests are not listed)."""
    from otelflow.stores import reset_stores
    from otelflow.stores.sqlite import sqlite_url

    if request.param == "redis":
        import redis

        url = str(request.getfixturevalue("redis_server")).rsplit("/", 1)[0] + "/9"
        client = redis.Redis.from_url(url)
        client.flushdb()
        client.close()
    else:
        url = sqlite_url(tmp_path / "store.sqlite3")
    settings_env(STORE_URL=url)
    reset_stores()
    yield url
    reset_stores()


def invoke(*args: str, input: str | None = None) -> Result:
    """``otelflow cache ARGS`` through click's runner (piped output); never a traceback."""
    result = CliRunner().invoke(main, ["cache", *args], input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result


def ok(*args: str) -> str:
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    return result.stdout


def ls_json(*args: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in ok("ls", "--json", *args).splitlines()]


def entries() -> dict[str, CacheEntry]:
    return {e.key: e for e in list_cache_entries()}


@flow
def pipeline() -> None:
    double(21)
    double(21)
    double(5)
    greet("ada")


def _age(key: str, days: float) -> None:
    """Make an entry look ``days`` old."""
    entry = entries()[key]
    write_cache_entry(dataclasses.replace(entry, created=time.time() - days * 86400))


# --- ls ---------------------------------------------------------------------------------------------------


def test_ls_lists_entries_newest_first_with_a_footer(store: str, captured: CapturedTelemetry) -> None:
    pipeline()
    out = ok("ls")
    lines = out.splitlines()
    assert lines[0].split() == ["KEY", "TASK", "POLICY", "CREATED", "EXPIRES", "SIZE", "STORAGE"]
    rows = lines[1:-1]
    assert [row.split()[1] for row in rows] == ["greet", "double", "double"]  # newest first
    assert all("INPUTS" in row and "never" in row and " ago)" in row for row in rows)
    total = _human_size(sum(e.size for e in list_cache_entries()))  # the records hold their path: sizes vary
    assert lines[-1].startswith(f"3 cache entries, {total} of results, in ")

    data = ls_json()
    assert [d["task"] for d in data] == ["greet", "double", "double"]
    assert [d["created_unix"] for d in data] == sorted((d["created_unix"] for d in data), reverse=True)
    first = data[0]
    assert set(first) >= {"key", "exported_key", "task", "policy", "created", "expiration", "expired", "storage",
                          "storage_key", "serializer", "size", "flow_run_id", "task_run_id", "trace_id"}
    assert first["key"] == first["exported_key"] and len(first["key"]) == 32
    assert first["policy"] == "INPUTS" and first["serializer"] == "pickle" and first["expired"] is False
    assert Path(first["storage_key"]).is_file() and first["size"] == Path(first["storage_key"]).stat().st_size
    assert first["trace_id"] == format(captured.task_spans()[-1].context.trace_id, "032x")


def test_ls_filters_by_task_age_and_expiry_and_limits(store: str, captured: CapturedTelemetry) -> None:
    pipeline()

    @flow
    def brief() -> None:
        fleeting(1)

    brief()
    time.sleep(0.01)
    greet_key = next(k for k, e in entries().items() if e.task == "greet")
    _age(greet_key, 3)

    assert [d["task"] for d in ls_json("--task", "double")] == ["double", "double"]
    assert [d["task"] for d in ls_json("--expired")] == ["fleeting"]
    assert [d["key"] for d in ls_json("--older-than", "2d")] == [greet_key]
    assert ls_json("--older-than", "4d") == []
    assert [d["task"] for d in ls_json()][-1] == "greet"  # the aged entry sorts last
    table = ok("ls", "--expired")
    assert "expired " in table and "1 cache entry," in table
    limited = ok("ls", "--limit", "1").splitlines()
    assert len(limited) == 3 and "4 cache entries" in limited[-1] and "showing the newest 1" in limited[-1]
    none = invoke("ls", "--task", "nope")
    assert none.exit_code == 0 and "No cache entries match these filters (4 in " in none.stdout
    assert invoke("ls", "--task", "nope", "--json").stdout == ""
    bad = invoke("ls", "--older-than", "yesterday-ish")
    assert bad.exit_code == 2 and "--older-than" in bad.stderr


def test_ls_on_a_home_without_a_store_creates_none(settings_env: Any, _isolated_home: Path) -> None:
    from otelflow.stores import reset_stores

    reset_stores()
    result = invoke("ls")
    assert result.exit_code == 0 and "No cache entries in sqlite:///" in result.stdout
    assert not (_isolated_home / "store.sqlite3").exists()


# --- inspect ----------------------------------------------------------------------------------------------


def test_inspect_finds_an_entry_by_raw_key_exported_key_or_prefix(store: str, captured: CapturedTelemetry) -> None:
    @flow
    def customers() -> None:
        customer(1)
        customer(1)
        double(21)

    customers()
    by_task = {e.task: e for e in entries().values()}
    cust, dbl = by_task["customer"], by_task["double"]
    assert cust.key == "customer-1"
    digest = exported_key(cust.key)
    assert digest.startswith("md5:")
    for ident in (cust.key, digest, digest[:10], digest[4:12], "customer-"):
        out = ok("inspect", ident)
        assert "\ntask          customer\n" in out and f"exported key  {digest}\n" in out, ident
    for ident in (dbl.key, dbl.key[:6]):
        assert f"key           {dbl.key}\n" in ok("inspect", ident)

    out = ok("inspect", dbl.key[:8])
    assert "policy        INPUTS" in out and "expires       never" in out
    assert f"result        present, {dbl.size} B stored, readable" in out
    assert f"trace id      {dbl.trace_id}  (otelflow show {dbl.trace_id})" in out
    assert f"storage key   {dbl.storage_key}" in out and "value" not in out
    assert "value         42\n" in ok("inspect", dbl.key, "--value")
    assert "value         {'n': 1}\n" in ok("inspect", "customer-1", "--value")
    data = json.loads(ok("inspect", dbl.key, "--json", "--value"))
    assert data["result"] == {"present": True, "readable": True, "size": dbl.size, "problem": None}
    assert data["value_repr"] == "42" and data["task_run_id"] == dbl.task_run_id


def test_inspect_says_when_a_key_is_ambiguous_unknown_or_too_short(store: str, captured: CapturedTelemetry) -> None:
    @flow
    def customers() -> None:
        customer(1)
        customer(2)

    customers()
    ambiguous = invoke("inspect", "customer-")
    assert ambiguous.exit_code == 1 and ambiguous.stdout == ""
    assert ambiguous.stderr.startswith("otelflow cache: 'customer-' matches 2 cache entries; give more of the key:")
    assert ambiguous.stderr.count("  md5:") == 2
    unknown = invoke("inspect", "zzzzzzzz")
    assert unknown.exit_code == 1 and "no cache entry matches 'zzzzzzzz' in " in unknown.stderr
    assert "2 entries" in unknown.stderr
    short = invoke("inspect", "cust")
    assert short.exit_code == 1 and "at least 6 characters" in short.stderr


def test_inspect_reports_a_missing_or_damaged_result(store: str, captured: CapturedTelemetry) -> None:
    pipeline()
    by_task = {e.task: e for e in entries().values()}
    Path(by_task["greet"].storage_key).unlink()
    out = invoke("inspect", by_task["greet"].key, "--value")
    assert out.exit_code == 1
    assert "result        missing: the next run computes it again" in out.stdout
    assert "value         the stored result is missing" in out.stdout
    dbl = next(e for e in entries().values() if e.task == "double")
    Path(dbl.storage_key).write_bytes(b"not json")
    assert "present, 8 B stored, unreadable: damaged:" in ok("inspect", dbl.key)


# --- clear ------------------------------------------------------------------------------------------------


def test_clear_needs_a_filter_or_all_and_a_confirmation(store: str, captured: CapturedTelemetry) -> None:
    pipeline()
    before = entries()
    usage = invoke("clear")
    assert usage.exit_code == 2 and "--all" in usage.stderr
    refused = invoke("clear", "--all")  # the runner's stdin is no terminal
    assert refused.exit_code == 1 and "without confirmation: not a terminal. Pass --yes." in refused.stderr
    assert entries().keys() == before.keys()


def test_clear_dry_run_deletes_nothing(store: str, captured: CapturedTelemetry) -> None:
    pipeline()
    before = entries()
    out = ok("clear", "--all", "--dry-run")
    assert out.count("would delete ") == 3 and "Would delete 3 cache entries (" in out
    assert entries().keys() == before.keys()
    assert all(Path(e.storage_key).is_file() for e in before.values())


def test_clear_deletes_entries_and_their_result_files(store: str, captured: CapturedTelemetry) -> None:
    pipeline()
    before = entries()
    doubles = [e for e in before.values() if e.task == "double"]
    out = ok("clear", "--task", "double", "--yes")
    freed = sum(e.size for e in doubles)
    assert out.startswith(f"Deleted 2 cache entries and {freed} B of stored results from ")
    after = entries()
    assert [e.task for e in after.values()] == ["greet"]
    assert not any(Path(e.storage_key).exists() for e in doubles)
    assert Path(next(iter(after.values())).storage_key).is_file()

    @flow
    def again() -> int:
        return double(21)

    assert again() == 42  # recomputed: a miss, stored again
    assert sorted(e.task for e in entries().values()) == ["double", "greet"]
    assert "Deleted 2 cache entries" in ok("clear", "--all", "--yes")
    assert entries() == {} and not any(Path(e.storage_key).exists() for e in before.values())
    assert "No cache entries to clear" in ok("clear", "--all", "--yes")


def test_clear_by_age_and_expiry(store: str, captured: CapturedTelemetry) -> None:
    pipeline()

    @flow
    def brief() -> None:
        fleeting(1)

    brief()
    time.sleep(0.01)
    greet_key = next(k for k, e in entries().items() if e.task == "greet")
    _age(greet_key, 8)
    assert "Deleted 1 cache entry" in ok("clear", "--expired", "-y")
    assert "Deleted 1 cache entry" in ok("clear", "--older-than", "7d", "-y")
    assert sorted(e.task for e in entries().values()) == ["double", "double"]


def test_clear_asks_on_a_terminal(store: str, captured: CapturedTelemetry, monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline()
    monkeypatch.setattr(cache_cli, "_interactive", lambda: True)
    declined = invoke("clear", "--all", input="n\n")
    assert declined.exit_code == 1 and "Delete 3 cache entries" in declined.stdout and len(entries()) == 3
    accepted = invoke("clear", "--all", input="y\n")
    assert accepted.exit_code == 0 and "Deleted 3 cache entries" in accepted.stdout and entries() == {}


def test_clear_deletes_results_kept_in_a_store(store: str, captured: CapturedTelemetry) -> None:
    @task(cache_policy=INPUTS, result_storage=store)
    def stored(x: int) -> int:
        return x + 1

    @flow
    def run() -> int:
        return stored(1) + stored(1)

    assert run() == 4
    (entry,) = entries().values()
    assert entry.storage.startswith(("sqlite:", "redis:"))
    assert "present, " in ok("inspect", entry.key) and "value         2" in ok("inspect", entry.key, "--value")
    assert f"Deleted 1 cache entry and {entry.size} B" in ok("clear", "--all", "--yes")
    from otelflow.stores import get_store

    assert get_store(store).get("results", entry.storage_key) is None


def test_clear_keeps_a_file_an_entry_names_that_is_no_result(store: str, captured: CapturedTelemetry,
                                                             tmp_path: Path) -> None:
    pipeline()
    precious = tmp_path / "precious.txt"
    precious.write_text("my notes")
    entry = next(iter(entries().values()))
    # A crafted entry (another storage: kept beside the real one) naming a file of the user's that is no result.
    write_cache_entry(dataclasses.replace(entry, storage=str(tmp_path), storage_key=str(precious)))
    result = invoke("clear", "--all", "--yes")
    assert result.exit_code == 0 and "Deleted 4 cache entries" in result.stdout
    assert "kept " in result.stderr and "not an otelflow result record" in result.stderr
    assert precious.read_text() == "my notes"


# --- untrusted text ---------------------------------------------------------------------------------------


def test_control_characters_in_names_keys_and_values_are_escaped(store: str, captured: CapturedTelemetry) -> None:
    @flow
    def hostile() -> None:
        evil(1)
        evil(1)

    hostile()
    (entry,) = entries().values()
    assert entry.task == "evil\x1b[31m" and entry.key == "k\x1b]0;pwned\x071"
    outputs = [
        invoke("ls"), invoke("ls", "--json"), invoke("inspect", entry.key, "--value"),
        invoke("inspect", exported_key(entry.key)), invoke("clear", "--all", "--dry-run"), invoke("inspect", "k\x1b]0"),
    ]
    for result in outputs:
        for text in (result.stdout, result.stderr):
            assert "\x1b" not in text and "\x07" not in text, text
    table, inspected = outputs[0].stdout, outputs[2].stdout
    assert "evil\\x1b[31m" in table
    assert "task          evil\\x1b[31m" in inspected and "key           k\\x1b]0;pwned\\x071" in inspected
    assert "value         'v\\x1b[2J\\x1b]0;pwned\\x07v" in inspected
    assert json.loads(outputs[1].stdout)["task"] == "evil\x1b[31m"  # JSON escapes it (\u001b) and keeps it exact
    assert "Deleted 1 cache entry" in ok("clear", "--task", "evil\x1b[31m", "--yes")


def test_terminal_safe_escapes_controls_format_characters_and_keeps_letters() -> None:
    assert terminal_safe("plain café ✓") == "plain café ✓"
    hostile = "a\x1b[2Jb\x07c\r\n\x9b\u202eevil\u200b"
    assert terminal_safe(hostile) == "a\\x1b[2Jb\\x07c\\x0d\\x0a\\x9b\\u202eevil\\u200b"
    assert terminal_safe("\udcff") == "\\udcff"


def test_prefix_lookup_prefers_an_exact_key() -> None:
    made = [CacheEntry(key=k, task="t", created=0.0, storage="/s", storage_key=k, serializer="pickle", size=1)
            for k in ("abcdef", "abcdef0123")]
    assert [e.key for e in find_entry(made, "abcdef")] == ["abcdef"]
    assert [e.key for e in find_entry(made, "abcdef0")] == ["abcdef0123"]
    assert find_entry(made, "abc") == []


def test_short_keys_grow_until_they_differ() -> None:
    keys = ["0" * 20 + "a" * 12, "0" * 20 + "b" * 12, "f" * 32]
    made = [CacheEntry(key=k, task="t", created=0.0, storage="/s", storage_key=k, serializer="pickle", size=1)
            for k in keys]
    short = cache_cli._short_keys(made)
    assert len(set(short.values())) == 3 and short[keys[2]] == "f" * 24
    assert all(keys[i].startswith(short[keys[i]]) for i in range(3))


# --- a dead store, the real entry point, show -------------------------------------------------------------


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([PYTHON, "-m", "otelflow", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=120, env=subprocess_env(OTELFLOW_HOME=str(home), **env))
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_a_dead_redis_store_is_one_line_and_exit_1(tmp_path: Path) -> None:
    dead = f"redis://app:hunter2@127.0.0.1:{_free_port()}/0"
    for args in (("--store", dead, "ls"), ("--store", dead, "inspect", "abcdef"),
                 ("--store", dead, "clear", "--all", "--yes")):
        proc = _cli(tmp_path, "cache", *args)
        assert proc.returncode == 1 and proc.stdout == "", args
        lines = proc.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("otelflow cache: "), proc.stderr
        assert "unreachable" in lines[0] and "redis://app:***@127.0.0.1" in lines[0] and "hunter2" not in proc.stderr
    proc = _cli(tmp_path, "cache", "ls", OTELFLOW_STORE_URL=dead)  # the configured store, not --store
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1 and "hunter2" not in proc.stderr


SHOW_SCRIPT = textwrap.dedent(
    """
    from otelflow import flow, task, telemetry
    from otelflow.cache_policies import INPUTS


    @task(cache_policy=INPUTS)
    def slow_square(x: int) -> int:
        return x * x


    @flow
    def squares() -> int:
        return slow_square(4) + slow_square(4)


    if __name__ == "__main__":
        assert squares() == 32
        telemetry.flush()
    """
)


@pytest.mark.slow
def test_show_marks_the_cached_run_and_cache_ls_runs_from_the_entry_point(tmp_path: Path) -> None:
    script = tmp_path / "squares.py"
    script.write_text(SHOW_SCRIPT)
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path), OTELFLOW_LOGGING_TO_CONSOLE="false")
    proc = subprocess.run([PYTHON, str(script)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env=env)
    assert proc.returncode == 0, proc.stderr

    shown = _cli(tmp_path, "show")
    assert shown.returncode == 0, shown.stderr
    tasks = [line for line in shown.stdout.splitlines() if "task slow_square" in line]
    assert len(tasks) == 2
    assert "Completed" in tasks[0] and "cached" not in tasks[0]
    assert "  Cached  ↺ cached  " in tasks[1]
    spans = json.loads(_cli(tmp_path, "show", "--json").stdout)["spans"]
    assert [(s["state"], s["cached"]) for s in spans if s["task_name"] == "slow_square"] == [
        ("Completed", False), ("Cached", True)]
    assert [s["cached"] for s in spans if s["type"] == "flow"] == [False]
    cached_only = [line for line in _cli(tmp_path, "show", "--state", "cached").stdout.splitlines() if "task " in line]
    assert len(cached_only) == 1 and "↺ cached" in cached_only[0]

    listed = _cli(tmp_path, "cache", "ls", "--json")
    assert listed.returncode == 0, listed.stderr
    (entry,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert entry["task"] == "slow_square" and entry["trace_id"] == json.loads(
        _cli(tmp_path, "show", "--json").stdout)["trace_id"]
    inspected = _cli(tmp_path, "cache", "inspect", entry["key"][:8], "--value")
    assert inspected.returncode == 0 and "value         16" in inspected.stdout
    assert f"otelflow show {entry['trace_id']}" in inspected.stdout
    assert _cli(tmp_path, "show", entry["trace_id"]).returncode == 0
    assert os.stat(entry["storage_key"]).st_size == entry["size"]


@pytest.mark.slow
def test_results_in_a_password_protected_redis_are_read_and_deleted(tmp_path: Path, settings_env: Any,
                                                                    captured: CapturedTelemetry) -> None:
    """Entries keep the storage URL with its password masked; ``--store`` with the real URL reaches it."""
    import shutil

    from redis_server import _stop, start_redis_on

    from otelflow.stores import get_store, reset_stores

    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    port = _free_port()
    process = start_redis_on(port, str(tmp_path), password="s3cret")
    url = f"redis://:s3cret@127.0.0.1:{port}/0"
    try:
        settings_env(STORE_URL=url)
        reset_stores()

        @task(cache_policy=INPUTS, result_storage=url)
        def stored(x: int) -> int:
            return x * 3

        @flow
        def run() -> list[Any]:
            return [stored(2), stored(2, return_state=True).name]

        assert run() == [6, "Cached"]  # the task reads its result back through the real URL
        (entry,) = entries().values()
        assert entry.storage == f"redis://:***@127.0.0.1:{port}/0"
        settings_env(STORE_URL="")  # the configured store is now the default sqlite file: --store names redis
        inspected = invoke("--store", url, "inspect", entry.key, "--value")
        assert inspected.exit_code == 0, inspected.output
        assert "value         6" in inspected.stdout and "s3cret" not in inspected.output
        assert f"store         redis://:***@127.0.0.1:{port}/0" in inspected.stdout
        cleared = invoke("--store", url, "clear", "--all", "--yes")
        assert f"Deleted 1 cache entry and {entry.size} B" in cleared.stdout and "s3cret" not in cleared.output
        assert get_store(url).get("results", entry.storage_key) is None
    finally:
        reset_stores()
        _stop(process)

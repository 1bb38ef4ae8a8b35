"""The store interface against both real backends: a sqlite file and a throwaway redis-server."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env

from otelflow.stores import (
    LockLost,
    LockTimeout,
    Store,
    StoreError,
    StoreUnavailable,
    get_store,
    redact_url,
    reset_stores,
)
from otelflow.stores.sqlite import sqlite_url


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        return str(request.getfixturevalue("redis_server"))
    return sqlite_url(tmp_path / "store.sqlite3")


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    yield get_store(store_url)
    reset_stores()


def ns() -> str:
    return f"test-{uuid.uuid4().hex}"


def test_put_get_delete_and_items_in_write_order(store: Store) -> None:
    space = ns()
    assert store.get(space, "a") is None
    assert store.put(space, "b-1", '{"x": 1}')
    assert store.put(space, "a-1", '"one"')
    assert store.put(space, "b-2", "[1, 2]")
    assert store.get(space, "b-1") == '{"x": 1}'
    assert [item.key for item in store.items(space)] == ["b-1", "a-1", "b-2"]
    assert [item.value for item in store.items(space, "b-")] == ['{"x": 1}', "[1, 2]"]
    assert store.delete(space, "b-1") is True
    assert store.delete(space, "b-1") is False
    assert [item.key for item in store.items(space)] == ["a-1", "b-2"]
    assert store.items(ns()) == []


def test_if_absent_writes_once(store: Store) -> None:
    space = ns()
    assert store.put(space, "k", "1", if_absent=True) is True
    assert store.put(space, "k", "2", if_absent=True) is False
    assert store.get(space, "k") == "1"
    assert store.put(space, "k", "3") is True
    assert store.get(space, "k") == "3"


def test_lock_is_exclusive_renewable_and_released_only_by_its_holder(store: Store) -> None:
    name = ns()
    assert store.try_lock(name, "alice", 30)
    assert not store.try_lock(name, "bob", 30)
    assert store.try_lock(name, "alice", 30)  # re-entrant for the holder (renews)
    assert store.lock_holder(name) == "alice"
    assert store.renew_lock(name, "alice", 30)
    assert not store.renew_lock(name, "bob", 30)
    assert not store.release_lock(name, "bob")
    assert store.release_lock(name, "alice")
    assert store.lock_holder(name) is None
    assert store.try_lock(name, "bob", 30)


def test_expired_lease_frees_the_lock(store: Store) -> None:
    name = ns()
    assert store.try_lock(name, "crashed", 0.2)
    assert not store.try_lock(name, "next", 30)
    deadline = time.monotonic() + 5
    while not store.try_lock(name, "next", 30):
        assert time.monotonic() < deadline, "the expired lease never freed the lock"
        time.sleep(0.02)
    assert store.lock_holder(name) == "next"


def test_acquire_waits_for_release_and_gives_up_at_its_deadline(store: Store) -> None:
    name = ns()
    store.acquire_lock(name, "first", 30, wait_seconds=0)
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="held by first"):
        store.acquire_lock(name, "second", 30, wait_seconds=0.3)
    assert 0.3 <= time.monotonic() - started < 3
    releaser = threading.Timer(0.2, store.release_lock, (name, "first"))
    releaser.start()
    store.acquire_lock(name, "second", 30, wait_seconds=10)
    releaser.join()
    assert store.lock_holder(name) == "second"


def test_fenced_write_needs_the_lock(store: Store) -> None:
    space, name = ns(), ns()
    store.acquire_lock(name, "me", 30, wait_seconds=0)
    assert store.put(space, "k", "1", fence=(name, "me"))
    store.release_lock(name, "me")
    store.acquire_lock(name, "other", 30, wait_seconds=0)
    with pytest.raises(LockLost):
        store.put(space, "k", "2", fence=(name, "me"))
    assert store.get(space, "k") == "1"


def test_now_or_never_writes_and_revoke_takes_back_only_its_own_value(store: Store) -> None:
    space, name = ns(), ns()
    assert store.put(space, "k", '"mine"', if_absent=True, notify=False, now_or_never=True)
    assert store.put(space, "k", '"again"', if_absent=True, notify=False, now_or_never=True) is False
    store.acquire_lock(name, "me", 30, wait_seconds=0)
    assert store.put(space, "fenced", "1", fence=(name, "me"), notify=False, now_or_never=True)
    store.release_lock(name, "me")
    assert store.revoke(space, "k", '"someone else"') is False  # another value stays
    assert store.get(space, "k") == '"mine"'
    assert store.revoke(space, "k", '"mine"') is True
    assert store.get(space, "k") is None
    assert store.revoke(space, "k", '"mine"') is False  # safe to repeat
    assert [item.key for item in store.items(space)] == ["fenced"]


def test_watch_wakes_on_a_write_from_another_thread(store: Store) -> None:
    space = ns()
    with store.watch(space) as watch:
        assert watch.wait(0.05) is False
        writer = threading.Timer(0.1, store.put, (space, "k", "1"))
        started = time.monotonic()
        writer.start()
        assert watch.wait(10) is True
        assert time.monotonic() - started < 2
        writer.join()
    assert store.get(space, "k") == "1"


def test_watch_wakes_on_a_write_from_another_process(store_url: str, store: Store) -> None:
    space = ns()
    code = (
        "import sys; from otelflow.stores import get_store; "
        "get_store(sys.argv[1]).put(sys.argv[2], 'from-child', '\"hi\"')"
    )
    with store.watch(space) as watch:
        child = subprocess.Popen([PYTHON, "-c", code, store_url, space], env=subprocess_env())
        deadline = time.monotonic() + 30
        while store.get(space, "from-child") is None:
            assert time.monotonic() < deadline, "the other process's write never arrived"
            watch.wait(deadline - time.monotonic())
        assert child.wait(30) == 0


def test_locks_are_exclusive_across_processes(store_url: str, store: Store) -> None:
    name = ns()
    store.acquire_lock(name, "parent", 30, wait_seconds=0)
    code = (
        "import sys; from otelflow.stores import get_store, LockTimeout\n"
        "s = get_store(sys.argv[1])\n"
        "try:\n    s.acquire_lock(sys.argv[2], 'child', 30, wait_seconds=0.2)\nexcept LockTimeout:\n    print('busy')\n"
        "s.acquire_lock(sys.argv[2], 'child', 30, wait_seconds=30)\nprint('acquired', s.lock_holder(sys.argv[2]))\n"
    )
    child = subprocess.Popen([PYTHON, "-c", code, store_url, name], env=subprocess_env(), stdout=subprocess.PIPE,
                             text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "busy"
    assert store.release_lock(name, "parent")
    out, _ = child.communicate(timeout=30)
    assert out.strip() == "acquired child"


def test_redact_url_hides_passwords() -> None:
    assert redact_url("rediss://app:s3cret@cache:6380/0") == "rediss://app:***@cache:6380/0"
    assert redact_url("redis://:s3cret@[::1]:6379/0") == "redis://:***@[::1]:6379/0"
    assert redact_url("redis://cache:6379/0") == "redis://cache:6379/0"


def test_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="OTELFLOW_STORE_URL"):
        get_store("postgres://user:pw@host/db")


def test_unreachable_redis_is_clear_and_never_shows_the_password(redis_server: str) -> None:
    from redis_server import _free_port

    url = f"redis://user:hunter2-secret@127.0.0.1:{_free_port()}/0"
    store = get_store(url)
    try:
        with pytest.raises(StoreUnavailable) as info:
            store.put("x", "k", "1")
        message = str(info.value)
        assert "hunter2-secret" not in message and "***" in message and "unreachable" in message
        assert info.value.__cause__ is None
    finally:
        reset_stores()


def test_wrong_redis_password_never_shows_the_password(redis_server: str) -> None:
    url = redis_server.replace("redis://", "redis://user:hunter2-secret@")
    store = get_store(url)
    try:
        with pytest.raises(StoreError) as info:
            store.get("x", "k")
        assert "hunter2-secret" not in str(info.value)
    finally:
        reset_stores()


def test_default_store_is_a_sqlite_file_under_home(_isolated_home: Path) -> None:
    store = get_store()
    try:
        assert store.backend == "sqlite"
        store.put("x", "k", "1")
        assert (_isolated_home / "store.sqlite3").exists()
    finally:
        reset_stores()


def test_plain_record_writes_are_listed_after_ordered_ones_and_write_once_too(store: Store) -> None:
    space = ns()
    assert store.put(space, "z-ordered", "1")
    assert store.put(space, "plain", "2", notify=False, if_absent=True)
    assert not store.put(space, "plain", "3", notify=False, if_absent=True)
    assert store.get(space, "plain") == "2"
    assert [item.key for item in store.items(space)] == ["z-ordered", "plain"]
    with store.watch(space) as watch:
        store.put(space, "quiet", "4", notify=False)
        if store.backend == "redis":
            assert watch.wait(0.2) is False  # nobody is told about a plain record


def _tls_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], int, Path]:
    """A real redis-server speaking only TLS, with a password; a throwaway CA signs its certificate."""
    import shutil

    from redis_server import _free_port

    binary = shutil.which("redis-server")
    assert binary is not None
    ca_key, ca, key, csr, cert = (workdir / n for n in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt"))
    ext = workdir / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca, "-days", "1",
         "-subj", "/CN=otelflow-test-ca"],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr, "-subj", "/CN=127.0.0.1"],
        ["openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial", "-out", cert,
         "-days", "1", "-extfile", ext],
    ):
        subprocess.run([str(c) for c in command], check=True, capture_output=True, timeout=60)
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
         "--requirepass", "tls-s3cret", "--save", "", "--appendonly", "no", "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return process, port, ca


def test_rediss_with_a_password(tmp_path: Path, redis_server: str) -> None:
    process, port, ca = _tls_redis(tmp_path)
    url = f"rediss://:tls-s3cret@127.0.0.1:{port}/0?ssl_ca_certs={ca}"
    try:
        store = get_store(url)
        assert "tls-s3cret" not in store.display_url and "***" in store.display_url
        deadline = time.monotonic() + 10
        while True:
            try:
                assert store.put("tls", "k", '"over TLS"')
                break
            except StoreUnavailable:
                assert process.poll() is None and time.monotonic() < deadline, "TLS redis-server did not start"
                time.sleep(0.05)  # bounded by the deadline above
        assert store.get("tls", "k") == '"over TLS"'
        plain = get_store(f"redis://:tls-s3cret@127.0.0.1:{port}/0")  # no TLS: refused, password not shown
        with pytest.raises(StoreError) as info:
            plain.get("tls", "k")
        assert "tls-s3cret" not in str(info.value)
        wrong = get_store(f"rediss://:not-the-password@127.0.0.1:{port}/0?ssl_ca_certs={ca}")
        with pytest.raises(StoreError) as info:
            wrong.get("tls", "k")
        assert "not-the-password" not in str(info.value)
    finally:
        reset_stores()
        process.terminate()
        process.wait(10)


def _open_store_at_once(url: str, barrier: Any, results: Any) -> None:
    from otelflow.stores.sqlite import SqliteStore

    barrier.wait()
    try:
        SqliteStore(url)
        results.put("ok")
    except Exception as exc:
        results.put(repr(exc))


def test_processes_opening_a_new_sqlite_store_together_all_succeed(tmp_path: Path) -> None:
    # Switching a new file to WAL answers SQLITE_BUSY at once (no busy handler) while another process does the
    # same: a flow and the process sending it input, started together, failed with "database is locked" about one
    # open in twenty. Real processes, released together by a barrier, on a new file each round.
    import multiprocessing

    import otelflow.stores.sqlite  # noqa: F401  (imported before forking: the children only open the store)

    ctx = multiprocessing.get_context("fork")
    outcomes: list[str] = []
    for round_ in range(20):
        url = sqlite_url(tmp_path / f"round-{round_}.sqlite3")
        barrier, results = ctx.Barrier(6), ctx.Queue()
        workers = [ctx.Process(target=_open_store_at_once, args=(url, barrier, results)) for _ in range(6)]
        for worker in workers:
            worker.start()
        outcomes.extend(results.get(timeout=60) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
    assert outcomes == ["ok"] * 120, [o for o in outcomes if o != "ok"][:3]


def test_a_sqlite_store_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    import stat

    from otelflow.stores.sqlite import SqliteStore, sqlite_url

    path = tmp_path / "new-home" / "store.sqlite3"
    store = SqliteStore(sqlite_url(path))
    store.put("variables", "api_token", '"s3cret"')
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    for file in path.parent.iterdir():  # the database and its -wal / -shm files
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    store.close()
    path.chmod(0o644)  # made readable by others (an older otelflow, a copy): tightened when opened again
    SqliteStore(sqlite_url(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

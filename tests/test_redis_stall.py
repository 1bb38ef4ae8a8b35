"""A Redis server that stalls during a commit: a write the client has given up on never lands later.

A stalled redis-server (SIGSTOP here; a long fork, ``CLIENT PAUSE`` or a frozen VM in production) runs what was
queued on its sockets when it resumes, long after the client's socket timeout. A transaction whose record write
timed out rolls back; the write must not land afterwards and make the key committed. Each test stops a
redis-server of its own with SIGSTOP and waits for the stop to happen (``waitpid``), resumes it with SIGCONT, then
lets it run everything queued (a PING on a fresh connection answers after the queued commands ran).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis_server import start_redis_server

from otelflow import flow, task
from otelflow.cache_policies import INPUTS
from otelflow.stores import StoreError, StoreUnavailable, get_store, reset_stores
from otelflow.stores.redis import RedisStore
from otelflow.transactions import Transaction

# The store's socket timeout for these tests (a query option of the store URL): short, so a stalled write times
# out quickly; long enough for a loaded machine to answer a live server in time.
SOCKET_TIMEOUT_S = 0.5
STOP_TIMEOUT_S = 5.0


class StallableRedis:
    """A redis-server of the test's own (stopping the session's shared one would stall other tests)."""

    def __init__(self, workdir: Path) -> None:
        self.process, self.base_url = start_redis_server(str(workdir))
        self.url = f"{self.base_url}?socket_timeout={SOCKET_TIMEOUT_S}"
        self.stopped = False
        self.evalsha_at_stop = 0

    def stop(self) -> None:
        """SIGSTOP the server and return once it is stopped (the kernel says so: waitpid WUNTRACED)."""
        self.evalsha_at_stop = self.evalsha_calls()
        os.kill(self.process.pid, signal.SIGSTOP)
        _, status = os.waitpid(self.process.pid, os.WUNTRACED)
        assert os.WIFSTOPPED(status)
        self.stopped = True

    def resume(self) -> None:
        """SIGCONT the server, then wait until it has run every command queued while it was stopped."""
        import redis

        os.kill(self.process.pid, signal.SIGCONT)
        self.stopped = False
        # Commands queued on old connections are readable as soon as the server runs again; this PING is on a
        # connection the server has yet to accept, so it is read in a later turn of its event loop.
        client = redis.Redis.from_url(self.base_url, socket_timeout=STOP_TIMEOUT_S)
        try:
            assert client.ping()
        finally:
            client.close()

    def evalsha_calls(self) -> int:
        """How many EVALSHA the server has run (a refused write is one too)."""
        import redis

        client = redis.Redis.from_url(self.base_url, socket_timeout=STOP_TIMEOUT_S)
        try:
            stats: dict[str, Any] = client.info("commandstats")
        finally:
            client.close()
        return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))

    def close(self) -> None:
        if self.stopped:
            os.kill(self.process.pid, signal.SIGCONT)  # a stopped process would not act on SIGTERM
        self.process.terminate()
        try:
            self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()


@pytest.fixture
def server(tmp_path: Path, settings_env: Any) -> Iterator[StallableRedis]:
    """A stallable redis-server; OTELFLOW_STORE_URL points at it with a short socket timeout."""
    pytest.importorskip("redis", reason="the redis client is needed (pip install redis)")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (e.g. `apt-get install redis-server`)")
    stallable = StallableRedis(tmp_path)
    settings_env(STORE_URL=stallable.url)
    try:
        yield stallable
    finally:
        reset_stores()
        stallable.close()


# --- a transaction in a flow ----------------------------------------------------------------------------------

calls: list[int] = []
refunds: list[str | None] = []
at_commit: list[Callable[[], None]] = []


@pytest.fixture(autouse=True)
def _fresh_lists() -> None:
    calls.clear()
    refunds.clear()
    at_commit.clear()


@task(cache_policy=INPUTS)
def charge(amount: int) -> int:
    calls.append(amount)
    return amount * 100


@charge.on_commit
def run_commit_actions(txn: Transaction) -> None:
    for action in at_commit:  # the stall happens here: after the tasks, before the record write
        action()


@charge.on_rollback
def refund(txn: Transaction) -> None:
    refunds.append(txn.key)


@flow
def billing(key: str, amount: int) -> int:
    with Transaction(key=key):
        return charge(amount)


def test_a_commit_whose_write_timed_out_on_a_stalled_redis_stays_rolled_back(server: StallableRedis) -> None:
    # A first commit, on another key and amount: the store's connection and its view of the server clock exist
    # before the stall, so the stalled commit's write is really sent and queued (not stuck in a reconnect).
    assert billing("warm-up", 1) == 100

    key = f"stall-{uuid.uuid4().hex}"
    at_commit.append(server.stop)
    state = billing(key, 2, return_state=True)  # the record write times out; the commit rolls back
    at_commit.clear()
    assert state.is_failed()
    with pytest.raises(StoreUnavailable, match="Timeout"):
        state.result()
    assert refunds == [key] and calls == [1, 2]

    server.resume()  # the queued record write runs now, after the client gave up on it

    assert get_store().get("txn", key) is None  # the key is not committed...
    assert server.evalsha_calls() > server.evalsha_at_stop  # ...though its write did run: it was refused
    # A later run with that key (and the task's cache key) runs the task again, then commits...
    assert billing(key, 2) == 200
    assert calls == [1, 2, 2] and refunds == [key]
    # ...and the one after replays it.
    assert billing(key, 2) == 200
    assert calls == [1, 2, 2]


# --- the fence itself, on the store ----------------------------------------------------------------------------


def _connected_store(url: str) -> RedisStore:
    """A store of its own (its own connection pool) with a live connection and a view of the server clock."""
    store = RedisStore(url)
    assert store.put("warm", "up", "1", now_or_never=True)
    return store


def test_a_write_queued_on_a_stalled_redis_lands_unless_it_is_now_or_never(server: StallableRedis) -> None:
    plain, fenced = _connected_store(server.url), _connected_store(server.url)
    try:
        server.stop()
        for store, key, now_or_never in ((plain, "plain", False), (fenced, "fenced", True)):
            with pytest.raises(StoreUnavailable, match="Timeout"):
                store.put("ns", key, '"v"', notify=False, now_or_never=now_or_never)
        server.resume()

        check = RedisStore(server.base_url)
        assert check.get("ns", "plain") == '"v"'  # what a stalled server does with a write it got in time
        assert check.get("ns", "fenced") is None  # refused: it ran after its deadline
        check.close()
    finally:
        plain.close()
        fenced.close()


def test_a_timely_write_lands_and_one_past_its_deadline_is_refused(server: StallableRedis) -> None:
    store = RedisStore(server.url)
    try:
        assert store.put("ns", "timely", '"v"', now_or_never=True)
        assert store.get("ns", "timely") == '"v"'
        # As if the write reached the server an hour after it was sent: make the store believe the server's
        # clock is an hour behind, so the deadline it sends is an hour in the server's past.
        assert store._clock is not None
        offset, measured = store._clock
        store._clock = (offset - 3600e6, measured)
        with pytest.raises(StoreUnavailable, match="refused it"):
            store.put("ns", "late", '"v"', now_or_never=True)
        assert store.get("ns", "late") is None
        # The refusal made the store measure the server clock again: the next write lands.
        assert store.put("ns", "late", '"v"', now_or_never=True)
        assert store.get("ns", "late") == '"v"'
    finally:
        store.close()


def test_a_revoked_write_is_refused_when_it_arrives_later(server: StallableRedis) -> None:
    store = RedisStore(server.url)
    try:
        assert store.revoke("ns", "k", '"mine"') is False  # nothing there yet: only the marker is left
        with pytest.raises(StoreError, match="revoked"):
            store.put("ns", "k", '"mine"', now_or_never=True)  # e.g. a write still queued when the rollback ran
        assert store.get("ns", "k") is None
        assert store.put("ns", "k", '"another"', now_or_never=True)  # another value is another write
        assert store.revoke("ns", "k", '"mine"') is False and store.get("ns", "k") == '"another"'
        assert store.revoke("ns", "k", '"another"') is True and store.get("ns", "k") is None
    finally:
        store.close()


def test_the_deadline_follows_the_socket_timeout_in_the_url(server: StallableRedis) -> None:
    assert RedisStore(server.url)._deadline_s == pytest.approx(SOCKET_TIMEOUT_S / 2)
    assert RedisStore(server.base_url)._deadline_s == pytest.approx(5.0)  # the store's default: 10 s


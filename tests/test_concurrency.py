"""Global concurrency and rate limits (otelflow.concurrency), on sqlite and Redis: Prefect 3.9.1's behaviour."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import PYTHON, subprocess_env

from otelflow import flow, semconv, task
from otelflow.concurrency import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError, limits
from otelflow.concurrency import asyncio as aconc
from otelflow.concurrency.sync import concurrency, rate_limit
from otelflow.stores import get_store
from otelflow.testing import CapturedTelemetry


def _active(name: str) -> int:
    return limits.read_global_concurrency_limit(name).active_slots


# --- Prefect doc-shaped examples -------------------------------------------------------------------------


def test_doc_example_concurrency_in_tasks(store_url: str, captured: CapturedTelemetry) -> None:
    limits.create_global_concurrency_limit("database", 2)
    peak = [0]
    inside = [0]
    lock = threading.Lock()

    @task
    def process_data(x: int) -> int:
        with concurrency("database", occupy=1):
            with lock:
                inside[0] += 1
                peak[0] = max(peak[0], inside[0])
            time.sleep(0.02)
            with lock:
                inside[0] -= 1
            return x + 1

    @flow
    def my_flow() -> list[int]:
        return [f.result() for f in process_data.map(range(6))]

    assert my_flow() == [1, 2, 3, 4, 5, 6]
    assert 1 <= peak[0] <= 2
    assert _active("database") == 0
    events = [e for s in captured.spans for e in s.events if e.name == semconv.EVENT_CONCURRENCY_ACQUIRED]
    assert len(events) == 6
    attrs = events[0].attributes or {}
    assert list(attrs[semconv.CONCURRENCY_NAMES]) == ["database"]  # type: ignore[arg-type]
    assert attrs[semconv.CONCURRENCY_OCCUPY] == 1
    assert float(attrs[semconv.CONCURRENCY_WAIT_SECONDS]) >= 0  # type: ignore[arg-type]


def test_doc_example_rate_limit(store_url: str) -> None:
    limits.create_global_concurrency_limit("rate-limit", 3, slot_decay_per_second=20.0)
    order: list[str] = []
    for i in range(6):
        rate_limit("rate-limit", occupy=1)
        order.append(f"call {i}")
    assert order == [f"call {i}" for i in range(6)]
    assert _active("rate-limit") <= 3
    # a rate-limit slot is not held by anyone: nothing to release, it decays
    assert limits.read_global_concurrency_limit("rate-limit").holders == ()


async def test_doc_example_async(store_url: str) -> None:
    limits.create_global_concurrency_limit("database", 1)
    log: list[str] = []

    async def query(i: int) -> None:
        async with aconc.concurrency("database", occupy=1):
            log.append(f"in {i}")
            await asyncio.sleep(0.01)
            log.append(f"out {i}")

    await asyncio.gather(*(query(i) for i in range(4)))
    # never two inside at once: every "in" is followed by its own "out"
    assert all(log[k].replace("in", "out") == log[k + 1] for k in range(0, len(log), 2))
    limits.create_global_concurrency_limit("api", 2, slot_decay_per_second=50.0)
    for _ in range(4):
        await aconc.rate_limit("api")


# --- Prefect's rules ----------------------------------------------------------------------------------------


def test_missing_limit_warns_and_proceeds(store_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="otelflow.concurrency"), concurrency("nope"):
        pass
    assert "Concurrency limits ['nope'] do not exist - skipping acquisition." in caplog.text
    assert limits.read_global_concurrency_limits() == []  # not created


@pytest.mark.parametrize("call", ["concurrency", "rate_limit"])
def test_missing_limit_strict(store_url: str, call: str) -> None:
    with pytest.raises(ConcurrencySlotAcquisitionError,
                       match=r"^Concurrency limits \['nope'\] must be created before acquiring slots$"):
        if call == "concurrency":
            with concurrency("nope", strict=True):
                pass
        else:
            rate_limit("nope", strict=True)


def test_partly_missing_names_limit_the_existing_ones(store_url: str) -> None:
    limits.create_global_concurrency_limit("one", 1)
    with concurrency(["one", "nope"], strict=True):
        assert _active("one") == 1
    assert _active("one") == 0


def test_timeout(store_url: str) -> None:
    limits.create_global_concurrency_limit("one", 1)
    with concurrency("one"), pytest.raises(AcquireConcurrencySlotTimeoutError) as info, \
            concurrency("one", timeout_seconds=0.2):
        pass
    assert isinstance(info.value, TimeoutError)
    assert str(info.value) == "Attempt to acquire concurrency slots timed out after 0.2 second(s)"
    assert _active("one") == 0


async def test_async_timeout(store_url: str) -> None:
    limits.create_global_concurrency_limit("one", 1)
    async with aconc.concurrency("one"):
        with pytest.raises(AcquireConcurrencySlotTimeoutError, match=r"timed out after 0\.1 second"):
            async with aconc.concurrency("one", timeout_seconds=0.1):
                pass


def test_max_retries(store_url: str) -> None:
    limits.create_global_concurrency_limit("one", 1)
    locked = r"Unable to acquire concurrency slots on \['one'\]: Locked"
    with concurrency("one"), pytest.raises(ConcurrencySlotAcquisitionError, match=locked), \
            concurrency("one", max_retries=2):
        pass


def test_occupy_more_than_limit_and_zero(store_url: str) -> None:
    limits.create_global_concurrency_limit("one", 1)
    with pytest.raises(ConcurrencySlotAcquisitionError, match="Slots requested is greater than the limit"), \
            concurrency("one", occupy=2):
        pass
    with pytest.raises(ConcurrencySlotAcquisitionError, match="occupy must be greater than 0"), \
            concurrency("one", occupy=0):
        pass


def test_occupy_counts(store_url: str) -> None:
    limits.create_global_concurrency_limit("pool", 5)
    with concurrency("pool", occupy=3):
        assert _active("pool") == 3
        with pytest.raises(AcquireConcurrencySlotTimeoutError), concurrency("pool", occupy=3, timeout_seconds=0):
            pass
        with concurrency("pool", occupy=2):
            assert _active("pool") == 5
    assert _active("pool") == 0


def test_several_names_all_or_none(store_url: str) -> None:
    limits.create_global_concurrency_limit("a", 1)
    limits.create_global_concurrency_limit("b", 2)
    with concurrency("a"):
        with pytest.raises(AcquireConcurrencySlotTimeoutError), concurrency(["b", "a"], timeout_seconds=0.05):
            pass
        assert _active("b") == 0  # nothing taken on b while a was full
    with concurrency(["a", "b"]):
        assert (_active("a"), _active("b")) == (1, 1)
    assert (_active("a"), _active("b")) == (0, 0)


def test_inactive_limit_does_not_limit(store_url: str) -> None:
    limits.create_global_concurrency_limit("off", 1, active=False)
    with concurrency("off", strict=True), concurrency("off", timeout_seconds=0):
        pass
    limits.enable_global_concurrency_limit("off")
    with concurrency("off"), pytest.raises(AcquireConcurrencySlotTimeoutError), concurrency("off", timeout_seconds=0):
        pass


def test_rate_limit_needs_decay(store_url: str) -> None:
    limits.create_global_concurrency_limit("one", 1)
    with pytest.raises(ConcurrencySlotAcquisitionError) as info:
        rate_limit("one")
    assert str(info.value) == (
        "Unable to acquire concurrency slots on ['one']: Only concurrency limits with slot decay can be used for "
        "rate limiting. The following limits do not have a decay configured: 'one'")


def test_rate_limit_decays_not_released(store_url: str) -> None:
    limits.create_global_concurrency_limit("api", 2, slot_decay_per_second=0.01)  # one slot per 100 s
    rate_limit("api")
    rate_limit("api")
    with pytest.raises(AcquireConcurrencySlotTimeoutError):
        rate_limit("api", timeout_seconds=0.05)  # no release: the two slots are still decaying
    limits.update_global_concurrency_limit("api", slot_decay_per_second=1000.0)
    rate_limit("api", timeout_seconds=5)  # decayed at the new rate
    rate_limit("api", occupy=2, timeout_seconds=5)


def test_rate_limit_ordering_across_threads(store_url: str) -> None:
    limits.create_global_concurrency_limit("api", 1, slot_decay_per_second=40.0)
    done: list[int] = []
    threads = [threading.Thread(target=lambda i=i: (rate_limit("api"), done.append(i))) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(done) == [0, 1, 2, 3, 4]


def test_empty_names(store_url: str) -> None:
    with concurrency([]):
        pass
    rate_limit([])


# --- store level -------------------------------------------------------------------------------------------


def test_store_slots_atomic_and_holder(store_url: str) -> None:
    store = get_store()
    limits.create_global_concurrency_limit("x", 2)
    assert store.try_acquire_slots(["x"], 1, "h1", 30, namespace="gcl")
    assert store.try_acquire_slots(["x"], 1, "h1", 30, namespace="gcl")  # same holder: renewed, not doubled
    assert store.slot_usage("x", namespace="gcl").held == {"h1": 1}
    assert store.try_acquire_slots(["x"], 1, "h2", 30, namespace="gcl")
    grant = store.try_acquire_slots(["x"], 1, "h3", 30, namespace="gcl")
    assert not grant and grant.found == ("x",) and grant.limited == ("x",)
    assert store.renew_slots(["x"], "h1", 30, namespace="gcl")
    assert store.release_slots(["x"], "h1", namespace="gcl") == 1
    assert not store.renew_slots(["x"], "h1", 30, namespace="gcl")
    assert store.try_acquire_slots(["x"], 1, "h3", 30, namespace="gcl")
    store.reset_slots("x", namespace="gcl")
    assert store.slot_usage("x", namespace="gcl").active_slots == 0


def test_expired_lease_frees_slot(store_url: str) -> None:
    store = get_store()
    limits.create_global_concurrency_limit("x", 1)
    assert store.try_acquire_slots(["x"], 1, "dead", 0.05, namespace="gcl")
    assert not store.try_acquire_slots(["x"], 1, "alive", 30, namespace="gcl")
    deadline = time.monotonic() + 10
    while not store.try_acquire_slots(["x"], 1, "alive", 30, namespace="gcl"):
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_lease_renewed_while_held(store_url: str) -> None:
    limits.create_global_concurrency_limit("x", 1)
    # Held past its lease: only the keeper's renewals (every second) keep it. The lease leaves a 2 s margin for a
    # loaded machine (a 0.3 s lease failed under coverage on a busy machine: the renewal came late).
    with concurrency("x", lease_duration=3.0):
        time.sleep(4.0)
        with pytest.raises(AcquireConcurrencySlotTimeoutError), concurrency("x", timeout_seconds=0):
            pass


_HOLDER = textwrap.dedent("""
    import sys, time
    from otelflow.concurrency.sync import concurrency
    with concurrency("x", lease_duration=float(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
""")


def test_sigkilled_holder_slot_returns_after_lease(store_url: str, tmp_path: Path) -> None:
    limits.create_global_concurrency_limit("x", 1)
    script = tmp_path / "holder.py"
    script.write_text(_HOLDER)
    proc = subprocess.Popen([PYTHON, str(script), "1.0"], stdout=subprocess.PIPE, text=True,
                            env=subprocess_env(OTELFLOW_STORE_URL=store_url))
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        time.sleep(1.5)  # longer than the lease: the child's keeper renewed it
        assert _active("x") == 1
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        with concurrency("x", timeout_seconds=30):  # free once the unrenewed lease runs out
            assert _active("x") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_WORKER = textwrap.dedent("""
    import os, sys, time
    from otelflow.concurrency.sync import concurrency
    log, runs = sys.argv[1], int(sys.argv[2])
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    for i in range(runs):
        with concurrency("three", timeout_seconds=120):
            os.write(fd, f"{time.time_ns()} 1\\n".encode())
            time.sleep(0.002)
            os.write(fd, f"{time.time_ns()} -1\\n".encode())
    os.close(fd)
""")


def test_two_processes_never_exceed_limit(store_url: str, tmp_path: Path) -> None:
    limits.create_global_concurrency_limit("three", 3)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    log = tmp_path / "events.log"
    env = subprocess_env(OTELFLOW_STORE_URL=store_url)
    procs = [subprocess.Popen([PYTHON, str(script), str(log), "50"], env=env) for _ in range(2)]
    threads = [threading.Thread(target=lambda: subprocess.run(
        [PYTHON, str(script), str(log), "50"], env=env, check=True)) for _ in range(2)]
    for t in threads:
        t.start()
    for p in procs:
        assert p.wait(300) == 0
    for t in threads:
        t.join(300)
    events = sorted((int(ts), int(d)) for ts, d in (line.split() for line in log.read_text().splitlines()))
    # enters are written after acquiring and exits before releasing, so the log's overlap bounds the real one
    level = peak = 0
    for _, delta in sorted(events, key=lambda e: (e[0], e[1])):
        level += delta
        peak = max(peak, level)
    assert len(events) == 4 * 50 * 2
    assert level == 0
    assert 1 <= peak <= 3


# --- management API, tag limits ---------------------------------------------------------------------------------


def test_limits_api(store_url: str) -> None:
    created = limits.create_global_concurrency_limit("db", 3, slot_decay_per_second=0.5)
    with pytest.raises(limits.ConcurrencyLimitExists):
        limits.create_global_concurrency_limit("db", 1)
    with pytest.raises(ValueError):
        limits.create_global_concurrency_limit("bad", -1)
    read = limits.read_global_concurrency_limit("db")
    assert (read.limit, read.active, read.slot_decay_per_second, read.id) == (3, True, 0.5, created.id)
    assert limits.update_global_concurrency_limit("db", limit=5).limit == 5
    assert not limits.disable_global_concurrency_limit("db").active
    assert limits.enable_global_concurrency_limit("db").active
    assert [limit.name for limit in limits.read_global_concurrency_limits()] == ["db"]
    limits.delete_global_concurrency_limit("db")
    with pytest.raises(limits.ConcurrencyLimitNotFound):
        limits.read_global_concurrency_limit("db")


def test_tag_limits(store_url: str) -> None:
    with limits.acquire_tag_slots(["a", "b"], "run-0"):  # no tag limits: nothing to do
        pass
    limits.create_tag_limit("small", 1)
    assert limits.read_tag_limit("small").concurrency_limit == 1
    with limits.acquire_tag_slots(["small", "other"], "run-1"):
        assert limits.read_tag_limit("small").active_slots == ("run-1",)
        with pytest.raises(AcquireConcurrencySlotTimeoutError), \
                limits.acquire_tag_slots(["small"], "run-2", timeout_seconds=0):
            pass
    assert limits.read_tag_limit("small").active_slots == ()
    with limits.acquire_tag_slots(["small"], "run-3"):
        limits.reset_tag_limit("small")
        assert limits.read_tag_limit("small").active_slots == ()
    limits.create_tag_limit("small", 4)  # an upsert, as in Prefect
    assert [t.concurrency_limit for t in limits.read_tag_limits()] == [4]
    limits.create_tag_limit("none", 0)
    with pytest.raises(ConcurrencySlotAcquisitionError), limits.acquire_tag_slots(["none"], "run-4"):
        pass
    limits.delete_tag_limit("small")
    with pytest.raises(limits.ConcurrencyLimitNotFound, match="No concurrency limit found for the tag: small"):
        limits.read_tag_limit("small")


async def test_tag_limits_async(store_url: str) -> None:
    limits.create_tag_limit("t", 1)
    async with limits.aacquire_tag_slots(["t"], "run-a"):
        assert limits.read_tag_limit("t").active_slots == ("run-a",)
    assert limits.read_tag_limit("t").active_slots == ()


def test_tag_hook_is_cheap_without_tag_limits(store_url: str) -> None:
    limits.create_global_concurrency_limit("unrelated", 1)
    with limits.acquire_tag_slots(["warm"], "r"):
        pass
    n = 2000
    start = time.perf_counter()
    for i in range(n):
        with limits.acquire_tag_slots(["etl", "daily"], f"run-{i}"):
            pass
    per_call_us = (time.perf_counter() - start) / n * 1e6
    print(f"acquire_tag_slots without tag limits: {per_call_us:.2f} us")
    assert per_call_us < 1000  # generous: it is a cached set lookup (see the bench for the number)


def test_tag_limit_seen_by_other_processes_version(store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with limits.acquire_tag_slots(["x"], "r0"):
        pass
    monkeypatch.setattr(limits, "TAG_LIMITS_RECHECK_SECONDS", 0.0)
    # another process creates the limit: simulate by writing it without this process's invalidation
    store = get_store()
    limits.create_tag_limit("x", 1)
    limits._tag_cache._entries.clear()
    assert limits._tag_names(["x"], store) == ["tag:x"]


# --- CLI ---------------------------------------------------------------------------------------------------


def _cli(group: str, *args: str, stdin: str | None = None) -> tuple[int, str]:
    from otelflow._internal.cli.concurrency import gcl_group, tag_limit_group

    command = gcl_group if group == "gcl" else tag_limit_group
    result = CliRunner().invoke(command, list(args), input=stdin)
    return result.exit_code, result.output


def test_gcl_cli(store_url: str) -> None:
    code, out = _cli("gcl", "create", "api", "--limit", "3", "--slot-decay-per-second", "0.5")
    assert code == 0 and out.startswith("Created global concurrency limit with name 'api' and ID '")
    assert _cli("gcl", "create", "api", "--limit", "3") == (
        1, "Global concurrency limit 'api' already exists. Please try creating with a different name.\n")
    assert _cli("gcl", "create", "db", "--limit", "2", "--disable")[0] == 0
    code, out = _cli("gcl", "ls")
    assert code == 0 and "api" in out and "db" in out
    code, out = _cli("gcl", "ls", "--output", "json")
    assert [d["name"] for d in json.loads(out)] == ["api", "db"]
    code, out = _cli("gcl", "inspect", "api", "--output", "json")
    data = json.loads(out)
    assert (data["limit"], data["active"], data["slot_decay_per_second"], data["active_slots"]) == (3, True, 0.5, 0)
    assert _cli("gcl", "inspect", "nope") == (1, "Global concurrency limit 'nope' not found.\n")
    assert _cli("gcl", "update", "api", "--limit", "5") == (0, "Updated global concurrency limit with name 'api'.\n")
    assert _cli("gcl", "update", "api") == (1, "No update arguments provided.\n")
    assert limits.read_global_concurrency_limit("api").limit == 5
    assert _cli("gcl", "disable", "api") == (0, "Disabled global concurrency limit with name 'api'.\n")
    assert _cli("gcl", "disable", "api") == (1, "Global concurrency limit with name 'api' is already disabled.\n")
    assert _cli("gcl", "enable", "api") == (0, "Enabled global concurrency limit with name 'api'.\n")
    assert _cli("gcl", "enable", "nope") == (1, "Global concurrency limit 'nope' not found.\n")
    assert _cli("gcl", "delete", "db", "--yes") == (0, "Deleted global concurrency limit with name 'db'.\n")
    assert _cli("gcl", "delete", "db", "--yes") == (1, "Global concurrency limit 'db' not found.\n")
    assert _cli("gcl", "create", "bad", "--limit", "-1")[0] == 1


def test_gcl_cli_escapes_untrusted_names(store_url: str) -> None:
    limits.create_global_concurrency_limit("evil\x1b[31m", 1)
    code, out = _cli("gcl", "ls")
    assert code == 0 and "\x1b[31m" not in out and "\\x1b" in out
    code, out = _cli("gcl", "inspect", "evil\x1b[31m")
    assert code == 0 and "\x1b" not in out


def test_tag_limit_cli(store_url: str) -> None:
    code, out = _cli("tag", "create", "small", "2")
    assert code == 0 and "tag - 'small'" in out and "concurrency_limit - 2" in out
    code, out = _cli("tag", "ls")
    assert code == 0 and "small" in out
    with limits.acquire_tag_slots(["small"], "task-run-1"):
        code, out = _cli("tag", "inspect", "small")
        assert code == 0 and "task-run-1" in out
        assert _cli("tag", "reset", "small") == (0, "Reset concurrency limit set on the tag: small\n")
    assert _cli("tag", "inspect", "nope") == (1, "No concurrency limit found for the tag: nope\n")
    assert _cli("tag", "delete", "small") == (0, "Deleted concurrency limit set on the tag: small\n")
    assert _cli("tag", "ls") == (0, "No concurrency limits found.\n")


def test_module_runs_without_store_env(tmp_path: Path) -> None:
    # the default store ($OTELFLOW_HOME/store.sqlite3) works out of the box
    limits.create_global_concurrency_limit("d", 1)
    with concurrency("d"):
        assert _active("d") == 1
    assert sys.modules["otelflow.concurrency.sync"] is not None

"""Task caching as in Prefect 3: cache policies, cache_key_fn, expiration, refresh, persistence rules, locks,
transactions, and what the span says -- on the sqlite store and a real redis-server, sync and async."""

from __future__ import annotations

import asyncio
import datetime
import threading
from pathlib import Path
from typing import Any

import pytest

from otelflow import flow, quote, semconv, task
from otelflow.cache_policies import DEFAULT, INPUTS, NO_CACHE, TASK_SOURCE, CachePolicy
from otelflow.results import list_cache_entries, read_cache_entry
from otelflow.testing import CapturedTelemetry
from otelflow.transactions import transaction

calls: list[Any] = []


@pytest.fixture(autouse=True)
def _fresh_calls(settings_env: Any) -> None:
    calls.clear()
    settings_env(LOG_RUN_EVENTS="true")  # Prefect's run lines ("Finished in state ...") are part of the behaviour


def _logs(captured: CapturedTelemetry) -> list[tuple[str, str]]:
    return [(r.log_record.severity_text, str(r.log_record.body)) for r in captured.logs]


def _cache_attrs(captured: CapturedTelemetry) -> list[dict[str, Any]]:
    keys = (semconv.CACHE_OUTCOME, semconv.CACHE_POLICY, semconv.TASK_CACHED, semconv.RUN_STATE)
    return [{k: (s.attributes or {}).get(k) for k in keys} for s in captured.task_spans()]


@task(cache_policy=INPUTS)
def double(x: int) -> int:
    calls.append(x)
    return 2 * x


@task(cache_policy=INPUTS)
async def adouble(x: int) -> int:
    calls.append(x)
    await asyncio.sleep(0)
    return 2 * x


def test_a_hit_returns_the_stored_value_without_calling_the_function(
        store_url: str, captured: CapturedTelemetry) -> None:
    @flow
    def pipeline() -> tuple[int, Any]:
        return double(21), double(21, return_state=True)

    value, state = pipeline()
    assert value == 42 and calls == [21]
    assert (state.name, state.type.value, str(state)) == ("Cached", "COMPLETED", "Cached(type=COMPLETED)")
    assert state.result() == 42
    finished = [body for _, body in _logs(captured) if body.startswith("Finished in state")]
    assert finished == ["Finished in state Completed()", "Finished in state Cached(type=COMPLETED)",
                        "Finished in state Completed()"]
    first, second = _cache_attrs(captured)
    assert first == {semconv.CACHE_OUTCOME: "miss", semconv.CACHE_POLICY: "INPUTS", semconv.TASK_CACHED: None,
                     semconv.RUN_STATE: "Completed"}
    assert second == {semconv.CACHE_OUTCOME: "hit", semconv.CACHE_POLICY: "INPUTS", semconv.TASK_CACHED: True,
                      semconv.RUN_STATE: "Cached"}
    spans = captured.task_spans()
    key = spans[0].attributes[semconv.CACHE_KEY]  # type: ignore[index]
    assert len(key) == 32 and int(key, 16) >= 0 and spans[1].attributes[semconv.CACHE_KEY] == key  # type: ignore[index]
    assert spans[0].attributes[semconv.RESULT_PERSISTED] is True  # type: ignore[index]
    assert spans[0].attributes[semconv.RESULT_SERIALIZER] == "pickle"  # type: ignore[index]
    entry = read_cache_entry(key)
    assert entry is not None and entry.task == "double" and entry.policy == "INPUTS"
    assert entry.trace_id == format(spans[0].context.trace_id, "032x")


def test_async_tasks_hit_the_cache_too(store_url: str, captured: CapturedTelemetry) -> None:
    @flow
    async def pipeline() -> list[Any]:
        first = await adouble(5)
        state = await adouble(5, return_state=True)
        return [first, state.name, await state.result(), await adouble(6)]

    assert asyncio.run(pipeline()) == [10, "Cached", 10, 12]
    assert calls == [5, 6]
    assert [a[semconv.CACHE_OUTCOME] for a in _cache_attrs(captured)] == ["miss", "hit", "miss"]


def test_a_second_flow_run_hits_what_the_first_stored(captured: CapturedTelemetry) -> None:
    @flow
    def pipeline(x: int) -> int:
        return double(x)

    assert [pipeline(1), pipeline(1), pipeline(2)] == [2, 2, 4]
    assert calls == [1, 2]


def test_policies_combine_and_subtract_inputs(captured: CapturedTelemetry) -> None:
    @task(cache_policy=INPUTS + TASK_SOURCE - "debug")
    def fetch(url: str, debug: bool = False) -> str:
        calls.append((url, debug))
        return url.upper()

    @flow
    def pipeline() -> list[str]:
        return [fetch("a"), fetch("a", debug=True), fetch("b", debug=True)]

    assert pipeline() == ["A", "A", "B"]
    assert calls == [("a", False), ("b", True)]
    assert _cache_attrs(captured)[0][semconv.CACHE_POLICY] == "TASK_SOURCE+INPUTS-debug"


def test_a_custom_policy_subclass_decides_the_key(captured: CapturedTelemetry) -> None:
    class ByLength(CachePolicy):
        def compute_key(self, task_ctx: Any, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                        **kwargs: Any) -> str | None:
            return f"len-{len(inputs['word'])}"

    @task(cache_policy=ByLength())
    def shout(word: str) -> str:
        calls.append(word)
        return word.upper()

    @flow
    def pipeline() -> list[str]:
        return [shout("abc"), shout("xyz"), shout("ab")]

    assert pipeline() == ["ABC", "ABC", "AB"]  # same length, same key: the stored value
    assert calls == ["abc", "ab"]
    assert _cache_attrs(captured)[0][semconv.CACHE_POLICY] == "ByLength"


def test_cache_key_fn_keys_are_never_exported_as_given(captured: CapturedTelemetry) -> None:
    def key_fn(context: Any, parameters: dict[str, Any]) -> str:
        return f"user={parameters['user']};token={parameters['token']}"

    @task(cache_key_fn=key_fn)
    def profile(user: str, token: str) -> str:
        calls.append(user)
        return f"profile of {user}"

    @flow
    def pipeline() -> list[str]:
        return [profile("ann", "s3cr3t-token"), profile("ann", "s3cr3t-token")]

    assert pipeline() == ["profile of ann", "profile of ann"] and calls == ["ann"]
    keys = {s.attributes[semconv.CACHE_KEY] for s in captured.task_spans()}  # type: ignore[index]
    assert len(keys) == 1 and next(iter(keys)).startswith("md5:")
    assert all("s3cr3t" not in repr(s.attributes) for s in captured.spans)
    assert _cache_attrs(captured)[1][semconv.CACHE_POLICY] == "CacheKeyFnPolicy(test_cache_key_fn_keys_are_never_" \
        "exported_as_given.<locals>.key_fn)"


def test_an_expired_entry_is_recomputed_and_replaced(captured: CapturedTelemetry) -> None:
    # One microsecond: every later lookup is past it, whatever the clock does in between.
    @task(cache_policy=INPUTS, cache_expiration=datetime.timedelta(microseconds=1))
    def stamp(x: int) -> int:
        calls.append(x)
        return len(calls)

    @flow
    def pipeline() -> list[int]:
        return [stamp(1), stamp(1)]

    assert pipeline() == [1, 2]
    assert [a[semconv.CACHE_OUTCOME] for a in _cache_attrs(captured)] == ["miss", "expired"]
    assert semconv.CACHE_EXPIRATION in (captured.task_spans()[1].attributes or {})


def test_a_long_expiration_still_hits(captured: CapturedTelemetry) -> None:
    @task(cache_policy=INPUTS, cache_expiration=datetime.timedelta(days=1))
    def stamp(x: int) -> int:
        calls.append(x)
        return len(calls)

    @flow
    def pipeline() -> list[int]:
        return [stamp(1), stamp(1)]

    assert pipeline() == [1, 1]
    expiration = datetime.datetime.fromisoformat(captured.task_spans()[1].attributes[semconv.CACHE_EXPIRATION])  # type: ignore[index,arg-type]
    assert expiration > datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=23)


def test_refresh_cache_recomputes_and_overwrites(captured: CapturedTelemetry, settings_env: Any) -> None:
    @task(cache_policy=INPUTS)
    def stamp(x: int) -> int:
        calls.append(x)
        return len(calls)

    @flow
    def pipeline() -> list[int]:
        return [stamp(1), stamp.with_options(refresh_cache=True)(1), stamp(1)]

    assert pipeline() == [1, 2, 2]  # the refreshed value replaced the first one
    assert [a[semconv.CACHE_OUTCOME] for a in _cache_attrs(captured)] == ["miss", "refresh", "hit"]

    settings_env(TASKS_REFRESH_CACHE="true")
    calls.clear()
    assert pipeline() == [1, 2, 3]  # the setting refreshes every task that does not say otherwise


@pytest.mark.parametrize("options", [{"cache_policy": NO_CACHE}, {"persist_result": False},
                                     {"cache_policy": INPUTS, "persist_result": False}])
def test_no_cache_and_no_persistence_always_run(options: dict[str, Any], captured: CapturedTelemetry,
                                                caplog: pytest.LogCaptureFixture) -> None:
    @task(**options)
    def work(x: int) -> int:
        calls.append(x)
        return x

    @flow
    def pipeline() -> list[int]:
        return [work(1), work(1)]

    assert pipeline() == [1, 1] and calls == [1, 1]
    assert list_cache_entries() == []
    if options.get("cache_policy") is INPUTS:
        assert "Ignoring `cache_policy` because `persist_result` is False" in caplog.text


def test_plain_tasks_neither_look_up_nor_store(captured: CapturedTelemetry, tmp_path: Path) -> None:
    @task
    def plain(x: int) -> int:
        calls.append(x)
        return x

    @flow
    def pipeline() -> list[int]:
        return [plain(1), plain(1)]

    assert pipeline() == [1, 1] and calls == [1, 1]
    assert all(semconv.CACHE_OUTCOME not in (s.attributes or {}) for s in captured.task_spans())
    from otelflow.settings import get_settings

    assert not get_settings().results_storage_path.exists()
    assert plain.cache_policy == DEFAULT and plain.persist_result is None


def test_a_persisting_flow_makes_its_tasks_cache_within_the_run(captured: CapturedTelemetry) -> None:
    @task
    def plain(x: int) -> int:
        calls.append(x)
        return x

    @flow(persist_result=True)
    def pipeline() -> list[int]:
        return [plain(1), plain(1)]

    assert pipeline() == [1, 1] and calls == [1]  # DEFAULT = INPUTS + TASK_SOURCE + RUN_ID: cached within the run
    assert pipeline() == [1, 1] and calls == [1, 1]  # a new flow run: a new RUN_ID
    assert [a[semconv.CACHE_OUTCOME] for a in _cache_attrs(captured)] == ["miss", "hit", "miss", "hit"]


def test_result_storage_key_names_the_file_and_keys_the_cache(captured: CapturedTelemetry, tmp_path: Path) -> None:
    @task(result_storage_key="report-{parameters[day]}.pickle", result_storage=str(tmp_path / "results"))
    def report(day: str) -> str:
        calls.append(day)
        return f"report for {day}"

    @flow
    def pipeline() -> list[str]:
        return [report("mon"), report("mon"), report("tue")]

    assert pipeline() == ["report for mon", "report for mon", "report for tue"]
    assert calls == ["mon", "tue"]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["report-mon.pickle", "report-tue.pickle"]
    assert _cache_attrs(captured)[0][semconv.CACHE_POLICY] == "result_storage_key"


def test_inputs_that_cannot_be_hashed_log_prefects_error_and_run_uncached(
        captured: CapturedTelemetry) -> None:
    @task(cache_policy=INPUTS)
    def guarded(lock: Any, x: int) -> int:
        calls.append(x)
        return x

    @flow
    def pipeline() -> list[Any]:
        lock = threading.Lock()
        return [guarded(lock, 1), guarded(lock, 1, return_state=True).name]

    assert pipeline() == [1, "Completed"] and calls == [1, 1]
    errors = [body for level, body in _logs(captured) if level == "ERROR"]
    assert errors[0] == "Error encountered when computing cache key - result will not be persisted."
    record = next(r.log_record for r in captured.logs if str(r.log_record.body) == errors[0])
    assert "This often occurs when task inputs contain objects that cannot be cached" in str(
        (record.attributes or {}).get("exception.message"))
    assert [a[semconv.CACHE_OUTCOME] for a in _cache_attrs(captured)] == ["no_key", "no_key"]
    assert list_cache_entries() == []


def test_an_unserializable_result_completes_the_run_and_says_why(captured: CapturedTelemetry) -> None:
    @task(cache_policy=INPUTS, persist_result=True)
    def make_lock(x: int) -> Any:
        calls.append(x)
        return threading.Lock()

    @flow
    def pipeline() -> list[str]:
        return [make_lock(1, return_state=True).name, make_lock(1, return_state=True).name]

    assert pipeline() == ["Completed", "Completed"] and calls == [1, 1]  # nothing stored: the second run computes
    warnings = [body for level, body in _logs(captured) if level.startswith("WARN")]
    assert warnings[0].startswith("Encountered an error while serializing result for transaction ")
    assert "Failed to serialize object of type 'lock' with serializer 'pickle'." in warnings[0]
    assert warnings[0].endswith("Code execution will continue, but the transaction will not be committed.")
    span = captured.task_spans()[0]
    assert span.attributes[semconv.RESULT_PERSISTED] is False  # type: ignore[index]
    event = next(e for e in span.events if e.name == semconv.EVENT_RESULT_PERSIST_FAILED)
    assert event.attributes[semconv.EXCEPTION_TYPE] == "SerializationError"  # type: ignore[index]


def test_a_rolled_back_transaction_stores_no_cache_entry(captured: CapturedTelemetry) -> None:
    @flow
    def pipeline(fail: bool) -> str:
        try:
            with transaction():
                double(7)
                if fail:
                    raise RuntimeError("abort")
        except RuntimeError:
            return "rolled back"
        return "committed"

    assert pipeline(True) == "rolled back"
    assert list_cache_entries() == []
    assert pipeline(False) == "committed"
    assert [e.task for e in list_cache_entries()] == ["double"]
    assert calls == [7, 7]
    assert pipeline(False) == "committed" and calls == [7, 7]  # now it hits


def test_a_commit_that_fails_stores_no_cache_entry(store_url: str) -> None:
    # The cache entries of a transaction's task runs are written once nothing in its commit can fail any more:
    # a commit hook that raises rolls back, and leaves no cached result behind to replay.
    def broken(txn: Any) -> None:
        raise RuntimeError("the ledger is closed")

    @flow
    def pipeline(fail: bool) -> str:
        try:
            with transaction() as txn:
                double(8)
                if fail:
                    txn.stage(None, on_commit_hooks=[broken])
        except RuntimeError:
            return "rolled back"
        return "committed"

    assert pipeline(True) == "rolled back"
    assert list_cache_entries() == []
    assert pipeline(False) == "committed" and calls == [8, 8]
    assert [e.task for e in list_cache_entries()] == ["double"]


def test_with_options_changes_the_cache_options(captured: CapturedTelemetry) -> None:
    @task
    def plain(x: int) -> int:
        calls.append(x)
        return x

    cached = plain.with_options(cache_policy=INPUTS)
    assert cached.persist_result is True and plain.persist_result is None

    @flow
    def pipeline() -> list[int]:
        return [cached(3), cached(3), plain(3)]

    assert pipeline() == [3, 3, 3] and calls == [3, 3]


def test_options_of_the_wrong_type_are_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="cache_policy must be a CachePolicy"):
        task(cache_policy="INPUTS")(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"cache_expiration must be a datetime\.timedelta"):
        task(cache_expiration=60)(lambda: None)  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="names a Prefect block document"):
        task(result_storage="s3-bucket/my-results")(lambda: None)


def test_serializable_with_a_prefect_lock_manager_computes_a_key_once(tmp_path: Path) -> None:
    from otelflow.locking.filesystem import FileSystemLockManager

    computing, second_running = threading.Event(), threading.Event()
    policy = INPUTS.configure(isolation_level="SERIALIZABLE",
                              lock_manager=FileSystemLockManager(lock_files_directory=tmp_path / "locks"))

    @task(cache_policy=policy)
    def slow(x: int) -> int:
        calls.append(x)
        computing.set()
        assert second_running.wait(30)  # the other run is past Running: it now waits for the key's lock
        return x

    @flow
    def pipeline() -> list[Any]:
        first = slow.submit(1)
        assert computing.wait(30)
        second = slow.with_options(on_running=[lambda *_: second_running.set()]).submit(1)
        return [first.result(), second.result(), first.state.name, second.state.name]

    assert pipeline() == [1, 1, "Completed", "Cached"]
    assert calls == [1]
    assert (tmp_path / "locks" / "locks.sqlite3").exists()


def test_async_flows_follow_the_same_rules(captured: CapturedTelemetry) -> None:
    from otelflow.transactions import atransaction

    @task
    async def plain(x: int) -> int:
        calls.append(("plain", x))
        return x

    @task(cache_policy=INPUTS, cache_expiration=datetime.timedelta(microseconds=1))
    async def short_lived(x: int) -> int:
        calls.append(("short", x))
        return x

    @task(cache_policy=INPUTS, persist_result=True)
    async def make_lock(x: int) -> Any:
        return threading.Lock()

    @flow(persist_result=True)
    async def pipeline() -> list[Any]:
        out: list[Any] = [await plain(1), (await plain(1, return_state=True)).name]
        out += [await short_lived(2), (await short_lived(2, return_state=True)).name]
        out += [(await plain.with_options(refresh_cache=True)(1, return_state=True)).name]
        out += [(await make_lock(3, return_state=True)).name]
        try:
            async with atransaction():
                await adouble(4)
                raise RuntimeError("abort")
        except RuntimeError:
            out.append([e.task for e in list_cache_entries() if e.task == "adouble"])
        return out

    assert asyncio.run(pipeline()) == [1, "Cached", 2, "Completed", "Completed", "Completed", []]
    assert calls == [("plain", 1), ("short", 2), ("short", 2), ("plain", 1), 4]
    outcomes = [a[semconv.CACHE_OUTCOME] for a in _cache_attrs(captured)]
    assert outcomes == ["miss", "hit", "miss", "expired", "refresh", "miss", "miss"]
    lock_span = captured.task_spans()[5]
    assert any(e.name == semconv.EVENT_RESULT_PERSIST_FAILED for e in lock_span.events)


def test_on_commit_hooks_run_for_each_fresh_run_even_outside_a_transaction(captured: CapturedTelemetry) -> None:
    seen: list[Any] = []

    @task(cache_policy=INPUTS, on_commit=[lambda txn: seen.append(("commit", txn.key))])
    def fresh(x: int) -> int:
        return x

    @task(on_commit=[lambda txn: 1 / 0], on_rollback=[lambda txn: seen.append("rolled back")])
    def failing_commit(x: int) -> int:
        return x

    @flow
    def pipeline() -> list[Any]:
        return [fresh(1), fresh(1, return_state=True).name, failing_commit(2, return_state=True).name]

    assert pipeline() == [1, "Cached", "Completed"]  # a failing commit hook does not change the run's state
    key = captured.task_spans()[0].attributes[semconv.CACHE_KEY]  # type: ignore[index]
    assert seen == [("commit", key), "rolled back"]  # Prefect: commit hooks on a miss only; a hit commits nothing
    bodies = [body for _, body in _logs(captured)]
    assert "Running commit hook '<lambda>'" in bodies
    assert "Running rollback hook '<lambda>'" in bodies
    assert "An error was encountered while committing transaction None" in bodies


def test_a_commit_hook_that_fails_outside_a_transaction_caches_nothing(captured: CapturedTelemetry) -> None:
    """As in Prefect, a task run's own commit runs its on_commit hooks before writing its record: a hook that fails
    rolls the commit back, and the next run with the same inputs runs again instead of replaying it."""
    calls: list[int] = []

    @task(cache_policy=INPUTS, on_commit=[lambda txn: 1 / 0])
    def once(x: int) -> int:
        calls.append(x)
        return x

    @flow
    def pipeline() -> list[str]:
        return [once(3, return_state=True).name, once(3, return_state=True).name]

    assert pipeline() == ["Completed", "Completed"]
    assert calls == [3, 3]


def test_a_key_cached_in_one_result_storage_is_not_a_hit_in_another(tmp_path: Path) -> None:
    @task(cache_policy=INPUTS, result_storage=str(tmp_path / "a"))
    def in_a(x: int) -> str:
        calls.append(("a", x))
        return "a"

    @task(cache_policy=INPUTS, result_storage=str(tmp_path / "b"))
    def in_b(x: int) -> str:
        calls.append(("b", x))
        return "b"

    @task(cache_policy=INPUTS, result_storage=str(tmp_path / "a"))
    def also_in_a(x: int) -> str:
        calls.append(("also a", x))
        return "also a"

    @flow
    def pipeline() -> list[str]:
        return [in_a(1), in_b(1), also_in_a(1), in_b(1)]

    # As in Prefect: INPUTS keys do not name the task, so a task with the same inputs and the same storage hits
    # another task's result; a task keeping its results elsewhere does not.
    assert pipeline() == ["a", "b", "a", "b"]
    assert calls == [("a", 1), ("b", 1)]
    assert sorted(e.storage for e in list_cache_entries()) == [str(tmp_path / "a"), str(tmp_path / "b")]


def test_a_saved_local_file_system_block_is_found_by_its_slug(tmp_path: Path) -> None:
    from otelflow.filesystems import LocalFileSystem

    @task(cache_policy=INPUTS, result_storage="local-file-system/my-results")  # defined before it is saved
    def by_slug(x: int) -> int:
        calls.append(x)
        return x

    LocalFileSystem(basepath=str(tmp_path / "saved")).save("my-results")
    with pytest.raises(ValueError, match="already in use for this block type"):
        LocalFileSystem(basepath="/elsewhere").save("my-results")
    assert LocalFileSystem.load("my-results").basepath == str(tmp_path / "saved")

    @flow
    def pipeline() -> list[Any]:
        return [by_slug(1), by_slug(1, return_state=True).name]

    assert pipeline() == [1, "Cached"] and calls == [1]
    assert len(list((tmp_path / "saved").iterdir())) == 1

    @task(cache_policy=INPUTS, result_storage="local-file-system/never-saved")
    def unknown(x: int) -> int:
        return x

    @flow
    def broken() -> Any:
        state = unknown(1, return_state=True)
        return state.type.value, str(state.data)

    assert broken() == ("FAILED", "Unable to find block document named never-saved for block type local-file-system")


def test_a_result_deleted_by_hand_is_computed_again_even_if_this_process_holds_it(tmp_path: Path) -> None:
    @task(cache_policy=INPUTS, result_storage=str(tmp_path))
    def compute(x: int) -> int:
        calls.append(x)
        return x

    @flow
    def pipeline() -> list[Any]:
        return [compute(5), compute(5, return_state=True).name]

    assert pipeline() == [5, "Cached"]
    for path in tmp_path.iterdir():  # what Prefect users do to clear a cache
        path.unlink()
    assert pipeline() == [5, "Cached"] and calls == [5, 5]  # computed again (no warning: a plain miss), then cached


def test_a_returned_generator_is_stored_and_returned_as_a_list() -> None:
    @task(cache_policy=INPUTS)
    def numbers(n: int) -> Any:
        calls.append(n)
        return (i for i in range(n))

    @flow
    def pipeline() -> list[Any]:
        first, second = numbers(3, return_state=True), numbers(3, return_state=True)
        return [first.result(), second.name, second.result()]

    assert pipeline() == [[0, 1, 2], "Cached", [0, 1, 2]] and calls == [3]


def test_an_async_run_waiting_for_a_key_lock_does_not_block_the_event_loop(settings_env: Any) -> None:
    settings_env(LOCK_WAIT_SECONDS="20")  # a blocked loop would fail the second run with LockTimeout after this

    @task(cache_policy=(INPUTS - "released").configure(isolation_level="SERIALIZABLE"))
    async def compute(x: int, released: Any) -> int:
        calls.append(x)
        await released.wait()  # the other run is past Running: it now waits for this run's lock
        return x

    @flow
    async def pipeline() -> list[Any]:
        released = asyncio.Event()
        contender = compute.with_options(on_running=[lambda *_: released.set()])
        first = asyncio.ensure_future(compute(7, quote(released), return_state=True))
        await asyncio.sleep(0)  # the first run starts and takes the lock
        second = await contender(7, quote(released), return_state=True)
        done = await first
        return [*sorted([done.name, second.name]), await done.result(), await second.result()]

    # Whichever takes the lock first computes; the other waits off the loop and gets the stored value.
    assert asyncio.run(pipeline()) == ["Cached", "Completed", 7, 7]
    assert calls == [7]


def test_prefect_redis_lock_manager_locks_on_a_real_redis(redis_server: str, tmp_path: Path) -> None:
    import urllib.parse

    from otelflow_redis.locking import RedisLockManager

    url = urllib.parse.urlsplit(redis_server)
    manager = RedisLockManager(host=url.hostname or "", port=url.port or 6379, db=3)
    assert manager.store().display_url == f"redis://{url.hostname}:{url.port}/3"
    guarded = RedisLockManager(host="127.0.0.1", port=1, username="app", password="s3cr/et", ssl=True)
    assert guarded.store().display_url == "rediss://app:***@127.0.0.1:1/0"  # the password never shows

    @task(cache_policy=(INPUTS + TASK_SOURCE).configure(isolation_level="SERIALIZABLE", lock_manager=manager))
    def guarded_work(x: int) -> int:
        # While the run holds its key's lock, the lock is in that Redis database.
        (held,) = [k for k in manager.store()._client.keys("*") if b"cache:" in k]
        calls.append(held)
        return x

    @flow
    def pipeline() -> list[Any]:
        return [guarded_work(4), guarded_work(4, return_state=True).name]

    assert pipeline() == [4, "Cached"] and len(calls) == 1
    assert not [k for k in manager.store()._client.keys("*") if b"cache:" in k]  # released after the write

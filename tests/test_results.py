"""Persisted results: where they live, how they read back (in this process and another), what a missing or unsafe
one gives, and runs that persist across processes -- a changed task source, a re-run after a crash, two processes
computing one key at once (SERIALIZABLE), a full disk and a dead Redis."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import subprocess
import textwrap
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest
from conftest import PYTHON, subprocess_env

from otelflow import flow, semconv, task
from otelflow.cache_policies import INPUTS
from otelflow.exceptions import MissingResult
from otelflow.filesystems import LocalFileSystem, UnsafeResultStorage
from otelflow.results import ResultRecord, ResultRecordMetadata, list_cache_entries
from otelflow.states import State, StateType
from otelflow.testing import CapturedTelemetry


class Point(pydantic.BaseModel):
    x: int
    y: int


def _run(script: str, home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PYTHON, "-c", textwrap.dedent(script), *args], capture_output=True, text=True, timeout=120,
                          env=subprocess_env(OTELFLOW_HOME=str(home), **env))


# --- where results live ----------------------------------------------------------------------------------


def test_a_persisted_flow_result_is_a_private_prefect_shaped_record(tmp_path: Path) -> None:
    @flow(persist_result=True)
    def answer() -> dict[str, int]:
        return {"answer": 42}

    state = answer(return_state=True)
    assert state.result() == {"answer": 42}
    record = state.data
    assert isinstance(record, ResultRecord) and record.is_persisted
    path = Path(record.metadata.storage_key or "")
    from otelflow.settings import get_settings

    assert path.parent == get_settings().home / "storage"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    import base64

    import cloudpickle

    # As Prefect: a flow's result file holds the serializer's bytes alone, named by a new key; the metadata (with
    # the serializer) is on the state, and reads the file back.
    assert len(path.name) == 32 and int(path.name, 16) >= 0
    assert cloudpickle.loads(base64.decodebytes(path.read_bytes())) == {"answer": 42}
    assert record.metadata.load().result == {"answer": 42}
    assert record.metadata.serializer.type == "pickle"


def test_a_persisted_task_result_is_a_prefect_shaped_record(tmp_path: Path) -> None:
    @task(cache_policy=INPUTS, result_storage=str(tmp_path))
    def twice(x: int) -> int:
        return 2 * x

    @flow
    def pipeline() -> int:
        return twice(21)

    assert pipeline() == 42
    (path,) = tmp_path.iterdir()
    on_disk = json.loads(path.read_bytes())
    assert set(on_disk) == {"metadata", "result"}
    assert on_disk["metadata"]["serializer"] == {"type": "pickle", "picklelib": "cloudpickle",
                                                 "picklelib_version": None}
    # Named by the key, Prefect's INPUTS key: the md5 of the sorted-key JSON of ((inputs,), {}).
    assert on_disk["metadata"]["storage_key"] == str(path)
    assert path.name == hashlib.md5(b'[[{"x": 21}], {}]').hexdigest()


def test_the_json_serializer_writes_readable_json_and_reads_models_back(tmp_path: Path) -> None:
    @task(cache_policy=INPUTS, result_serializer="json", result_storage=LocalFileSystem(basepath=str(tmp_path)))
    def locate(x: int) -> Point:
        return Point(x=x, y=2 * x)

    @flow
    def pipeline() -> list[Any]:
        return [locate(2), locate(2, return_state=True)]

    first, cached = pipeline()
    assert first == Point(x=2, y=4) and cached.name == "Cached" and cached.result() == Point(x=2, y=4)
    (path,) = tmp_path.iterdir()
    on_disk = json.loads(path.read_bytes())
    assert on_disk["metadata"]["serializer"]["type"] == "json"
    assert json.loads(on_disk["result"])["data"] == {"x": 2, "y": 4}


@pytest.mark.parametrize("serializer", ["compressed/pickle", "compressed/json"])
def test_compressed_serializers_round_trip(serializer: str, tmp_path: Path) -> None:
    @task(cache_policy=INPUTS, result_serializer=serializer, result_storage=str(tmp_path))
    def big(n: int) -> list[int]:
        return list(range(n))

    @flow
    def pipeline() -> list[Any]:
        return [big(10_000), big(10_000, return_state=True).name]

    assert pipeline() == [list(range(10_000)), "Cached"]


def test_a_store_url_keeps_results_in_the_store(store_url: str, captured: CapturedTelemetry) -> None:
    @task(cache_policy=INPUTS, result_storage=store_url)
    def square(x: int) -> int:
        return x * x

    @flow
    def pipeline() -> list[Any]:
        return [square(9), square(9, return_state=True).name]

    assert pipeline() == [81, "Cached"]
    (entry,) = list_cache_entries()
    assert entry.storage.split("://")[0] in ("sqlite", "redis")
    assert "***" in entry.storage or "@" not in entry.storage  # a password never reaches the entry


# --- reading results back ---------------------------------------------------------------------------------


def test_state_result_reads_a_persisted_result_in_another_process(tmp_path: Path) -> None:
    home = tmp_path / "home"
    produced = _run("""
        from otelflow import flow, task
        @task(persist_result=True, cache_result_in_memory=False, result_storage_key="numbers")
        def numbers():
            return [1, 2, 3]
        @flow
        def pipeline():
            return numbers(return_state=True)
        state = pipeline()
        print(state.data.metadata.dump_bytes().decode())
    """, home)
    assert produced.returncode == 0, produced.stderr
    metadata = produced.stdout.strip().splitlines()[-1]
    consumed = _run("""
        import sys
        from otelflow.results import ResultRecordMetadata
        from otelflow.states import State, StateType
        state = State(StateType.COMPLETED, data=ResultRecordMetadata.load_bytes(sys.argv[1].encode()))
        print(state.result())
    """, home, metadata)
    assert consumed.returncode == 0, consumed.stderr
    assert consumed.stdout.strip() == "[1, 2, 3]"

    Path(json.loads(metadata)["storage_key"]).unlink()
    state = State(StateType.COMPLETED, data=ResultRecordMetadata.load_bytes(metadata.encode()))
    with pytest.raises(MissingResult, match="could not be read: FileNotFoundError"):
        state.result()


def test_a_damaged_record_is_a_miss_never_a_wrong_value(captured: CapturedTelemetry, tmp_path: Path) -> None:
    calls: list[int] = []

    @task(cache_policy=INPUTS, result_storage=str(tmp_path), cache_result_in_memory=False)
    def compute(x: int) -> int:
        calls.append(x)
        return x + 100

    @flow
    def pipeline() -> int:
        return compute(1)

    assert pipeline() == 101
    (path,) = tmp_path.iterdir()
    path.write_bytes(b'{"metadata": {"storage_key": "x"}, "result": "not base64 pickle!"}')
    assert pipeline() == 101 and calls == [1, 1]
    outcomes = [s.attributes[semconv.CACHE_OUTCOME] for s in captured.task_spans()]  # type: ignore[index]
    assert outcomes == ["miss", "unreadable"]
    assert pipeline() == 101 and calls == [1, 1]  # the recomputed result replaced the damaged one


def test_a_result_folder_other_users_can_write_to_is_refused(captured: CapturedTelemetry, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)

    @task(cache_policy=INPUTS, result_storage=str(shared))
    def compute(x: int) -> int:
        return x

    @flow
    def pipeline() -> str:
        return compute(1, return_state=True).name

    assert pipeline() == "Completed"  # the run completes; nothing is written there
    assert list(shared.iterdir()) == []
    event = next(e for e in captured.task_spans()[0].events if e.name == semconv.EVENT_RESULT_PERSIST_FAILED)
    assert event.attributes[semconv.EXCEPTION_TYPE] == "UnsafeResultStorage"  # type: ignore[index]
    with pytest.raises(UnsafeResultStorage, match="writable by other users"):
        LocalFileSystem(basepath=str(shared)).write_path("x", b"1")


def test_a_planted_result_file_is_not_loaded(tmp_path: Path) -> None:
    storage = LocalFileSystem(basepath=str(tmp_path))
    storage.write_path("good", b"1")
    (tmp_path / "good").chmod(0o666)
    with pytest.raises(UnsafeResultStorage, match="writable by other users"):
        storage.read_path("good")


# --- across processes -------------------------------------------------------------------------------------

PIPELINE = """
import os, sys
from otelflow import flow, task
from otelflow.cache_policies import INPUTS, TASK_SOURCE

MARKS = sys.argv[1]

def mark(name):
    with open(MARKS, "a") as handle:
        handle.write(name + "\\n")

@task(cache_policy=INPUTS + TASK_SOURCE)
def extract(n):
    mark("extract")
    return list(range(n))

@task(cache_policy=INPUTS + TASK_SOURCE)
def load(rows):
    mark("load")
    if os.environ.get("CRASH_IN_LOAD"):
        os._exit(9)  # the process dies mid-run: no cleanup, no final states
    return len(rows)

@flow
def etl(n):
    return load(extract(n))

print(etl(5))
"""


def test_a_rerun_after_a_crash_skips_the_tasks_that_completed(tmp_path: Path) -> None:
    script, marks, home = tmp_path / "etl.py", tmp_path / "marks", tmp_path / "home"
    script.write_text(PIPELINE)

    def run(**env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([PYTHON, str(script), str(marks)], capture_output=True, text=True, timeout=120,
                              env=subprocess_env(OTELFLOW_HOME=str(home), **env))

    crashed = run(CRASH_IN_LOAD="1")
    assert crashed.returncode == 9
    assert marks.read_text().split() == ["extract", "load"]
    again = run()
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == "5"
    assert marks.read_text().split() == ["extract", "load", "load"]  # extract was Cached
    assert run().stdout.strip() == "5"
    assert marks.read_text().split() == ["extract", "load", "load"]  # both Cached now


def test_a_changed_task_source_recomputes(tmp_path: Path) -> None:
    script, marks, home = tmp_path / "etl.py", tmp_path / "marks", tmp_path / "home"
    script.write_text(PIPELINE)

    def run() -> str:
        done = subprocess.run([PYTHON, str(script), str(marks)], capture_output=True, text=True, timeout=120,
                              env=subprocess_env(OTELFLOW_HOME=str(home)))
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert run() == "5" and run() == "5"
    assert marks.read_text().split() == ["extract", "load"]
    script.write_text(PIPELINE.replace("return len(rows)", "return len(rows) * 10"))
    assert run() == "50"
    assert marks.read_text().split() == ["extract", "load", "load"]  # only the changed task ran again


CONTENDER = """
import sys, time
from pathlib import Path
from otelflow import flow, task
from otelflow.cache_policies import INPUTS

marks = Path(sys.argv[1])
who = sys.argv[2]

def noted(task, run, state):
    with open(marks / f"{who}-running", "w"):
        pass

@task(cache_policy=INPUTS.configure(isolation_level="SERIALIZABLE"), on_running=[noted])
def expensive(x):
    (marks / f"{who}-computing").touch()
    while not (marks / "go").exists():  # held here until the test says go
        time.sleep(0.01)
    return x * 2

@flow
def pipeline():
    return expensive(21, return_state=True)

state = pipeline()
print(state.name, state.result())
"""


def test_serializable_isolation_computes_a_key_once_across_processes(store_url: str, tmp_path: Path) -> None:
    script, marks = tmp_path / "contender.py", tmp_path / "marks"
    script.write_text(CONTENDER)
    marks.mkdir()
    env = subprocess_env(OTELFLOW_HOME=str(tmp_path / "home"), OTELFLOW_STORE_URL=store_url)

    def start(who: str) -> subprocess.Popen[str]:
        return subprocess.Popen([PYTHON, str(script), str(marks), who], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)

    first = start("first")
    _wait_for(marks / "first-computing", first)
    second = start("second")
    _wait_for(marks / "second-running", second)  # the second run is past Running: next is the key's lock
    (marks / "go").touch()
    out_first, err_first = first.communicate(timeout=120)
    out_second, err_second = second.communicate(timeout=120)
    assert first.returncode == 0, err_first
    assert second.returncode == 0, err_second
    assert out_first.split() == ["Completed", "42"]
    assert out_second.split() == ["Cached", "42"]
    assert not (marks / "second-computing").exists()


def _wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not path.exists():
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited early: {process.communicate()}")
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


# --- failures while persisting ----------------------------------------------------------------------------

FULL_DISK = """
import resource, signal
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit fail with EFBIG instead of killing us
from otelflow import flow, task
from otelflow.cache_policies import INPUTS
import otelflow.stores, otelflow.results
otelflow.stores.get_store().get("warm", "up")  # the store file exists before the limit
resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))

@task(cache_policy=INPUTS)
def big(n):
    return "x" * n

@flow
def pipeline():
    state = big(2_000_000, return_state=True)
    return state.name, len(state.result())

print(pipeline())
print(len(otelflow.results.list_cache_entries()))
"""


def test_a_full_disk_while_persisting_completes_the_run_and_logs_why(tmp_path: Path) -> None:
    done = _run(FULL_DISK, tmp_path / "home", OTELFLOW_LOGGING_TO_CONSOLE="true")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["('Completed', 2000000)", "0"]
    assert "An error was encountered while committing transaction" in done.stderr
    assert "File too large" in done.stderr
    assert not [p for p in (tmp_path / "home" / "storage").iterdir() if not p.name.startswith(".tmp-")]
    assert not list((tmp_path / "home" / "storage").glob(".tmp-*"))  # the partial file was removed


def test_a_dead_redis_fails_the_task_with_store_unavailable_quickly(settings_env: Any) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings_env(STORE_URL=f"redis://127.0.0.1:{port}/0")

    @task(cache_policy=INPUTS)
    def compute(x: int) -> int:
        return x

    @flow
    def pipeline() -> Any:
        state = compute(1, return_state=True)
        return state.type, type(state.data).__name__, str(state.data)

    started = time.monotonic()
    kind, error, message = pipeline()
    assert (kind, error) == (StateType.FAILED, "StoreUnavailable")
    assert f"redis://127.0.0.1:{port}/0 is unreachable" in message
    assert time.monotonic() - started < 30  # bounded, not a hang


def test_result_records_pickle_with_their_value_and_metadata() -> None:
    import cloudpickle

    record = ResultRecord(metadata=ResultRecordMetadata(storage_key="/nowhere/k"), result={"a": 1})
    record.mark_persisted()
    copy = cloudpickle.loads(cloudpickle.dumps(record))
    assert copy.result == {"a": 1} and copy.metadata == record.metadata and copy.is_persisted
    assert os.path.isabs(copy.metadata.storage_key or "")


# --- the Prefect-shaped API: ResultStore and lock managers ------------------------------------------------


def test_a_result_store_writes_reads_and_expires_records(tmp_path: Path) -> None:
    import datetime

    from otelflow.results import ResultStore, get_result_store, should_persist_result

    store = ResultStore(result_storage=str(tmp_path), serializer="json")
    record = store.write({"a": [1, 2]}, key="report")
    assert record.is_persisted and (tmp_path / "report").exists()
    assert store.read("report").result == {"a": [1, 2]} and store.exists("report")
    assert not store.exists("nothing-here")
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=1)
    store.write("old", key="stale", expiration=past)
    assert not store.exists("stale")  # expired: as Prefect's exists()
    generated = store.create_result_record(3)  # no key: a new unique one
    assert len(os.path.basename(generated.metadata.storage_key or "")) == 32 and not generated.is_persisted
    assert repr(store) == f"ResultStore(result_storage={str(tmp_path)!r}, serializer='json')"
    assert should_persist_result() is False  # outside a run: OTELFLOW_RESULTS_PERSIST_BY_DEFAULT (false)
    assert isinstance(get_result_store(), ResultStore)
    with pytest.raises(MissingResult, match="never persisted"):
        ResultRecordMetadata().load()


def test_prefects_lock_managers_lock_on_the_store(tmp_path: Path) -> None:
    from otelflow.locking.filesystem import FileSystemLockManager
    from otelflow.locking.memory import MemoryLockManager

    for manager in (MemoryLockManager(), FileSystemLockManager(lock_files_directory=tmp_path / "locks")):
        assert manager.acquire_lock("k", holder="a", hold_timeout=30)
        assert manager.is_locked("k") and manager.is_lock_holder("k", "a") and not manager.is_lock_holder("k", "b")
        assert manager.acquire_lock("k", holder="b", acquire_timeout=0.05) is False  # held: gives up at the timeout
        assert manager.wait_for_lock("k", timeout=0.05) is False
        with pytest.raises(ValueError, match="No lock held by b for transaction with key k"):
            manager.release_lock("k", "b")
        manager.release_lock("k", "a")
        assert not manager.is_locked("k") and manager.wait_for_lock("k", timeout=0)
        assert "LockManager(" in repr(manager)

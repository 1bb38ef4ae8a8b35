"""Tag concurrency limits on task runs (Prefect's `prefect concurrency-limit create TAG N`): a task run carrying a
limited tag holds one slot of it for the whole run, in sync and async flows, and the wait is on its span."""

from __future__ import annotations

import asyncio
import subprocess
import textwrap
import threading
from pathlib import Path
from typing import Any

from conftest import PYTHON, subprocess_env

from otelflow import flow, semconv, tags, task
from otelflow.concurrency.limits import create_tag_limit
from otelflow.task_runners import ThreadPoolTaskRunner
from otelflow.testing import CapturedTelemetry


class _Gauge:
    """How many runs are inside at once; a run waits (bounded) to see whether a third one comes in."""

    def __init__(self) -> None:
        self.inside = 0
        self.most = 0
        self.cond = threading.Condition()

    def visit(self) -> None:
        with self.cond:
            self.inside += 1
            self.most = max(self.most, self.inside)
            self.cond.notify_all()
            # Without a limit, the pool's other workers come in meanwhile and `most` passes 2.
            self.cond.wait_for(lambda: self.inside >= 3, timeout=0.2)
            self.inside -= 1


def test_a_tag_limit_bounds_the_task_runs_carrying_the_tag(store_url: str, captured: CapturedTelemetry) -> None:
    create_tag_limit("small_instance", 2)
    gauge = _Gauge()

    @task(tags=["small_instance"])
    def bounded(i: int) -> int:
        gauge.visit()
        return i

    @task
    def unbounded(i: int) -> int:
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
    def pipeline() -> list[int]:
        futures = bounded.map(range(8))
        with tags("other"):
            unbounded.map(range(3)).wait()
        return [f.result() for f in futures]

    assert pipeline() == list(range(8))
    assert gauge.most == 2  # never 3, and the pool did run two at once
    waited = [s for s in captured.task_spans() if any(e.name == semconv.EVENT_CONCURRENCY_ACQUIRED for e in s.events)]
    assert len(waited) == 8  # every bounded run says how long it waited for its slot; the others say nothing


def test_async_task_runs_wait_for_their_tag_slot_off_the_event_loop(store_url: str) -> None:
    create_tag_limit("db", 1)
    inside: list[int] = []
    most: list[int] = [0]

    @task(tags=["db"])
    async def query(i: int) -> int:
        inside.append(i)
        most[0] = max(most[0], len(inside))
        await asyncio.sleep(0)  # let the other coroutines run: with the loop free they try their slots meanwhile
        await asyncio.sleep(0.01)
        inside.remove(i)
        return i

    @flow
    async def pipeline() -> list[Any]:
        return list(await asyncio.gather(*(query(i) for i in range(4))))

    assert asyncio.run(pipeline()) == [0, 1, 2, 3]
    assert most[0] == 1


_FLOW = textwrap.dedent("""
    import os, sys, time
    from otelflow import flow, task
    from otelflow.task_runners import ThreadPoolTaskRunner

    LOG = sys.argv[1]

    @task(tags=["small_instance"])
    def work(i):
        fd = os.open(LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.write(fd, f"{time.time_ns()} 1\\n".encode())  # after the slot is taken
        time.sleep(0.002)
        os.write(fd, f"{time.time_ns()} -1\\n".encode())  # before it is released
        os.close(fd)
        return i

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=8))
    def pipeline():
        return sum(f.result() for f in work.map(range(50)))

    print(pipeline())
""")


def test_two_processes_of_tagged_task_runs_never_exceed_the_tag_limit(store_url: str, tmp_path: Path) -> None:
    create_tag_limit("small_instance", 3)
    script, log = tmp_path / "tagged.py", tmp_path / "events.log"
    script.write_text(_FLOW)
    env = subprocess_env(OTELFLOW_STORE_URL=store_url, OTELFLOW_HOME=str(tmp_path / "home"))
    procs = [subprocess.Popen([PYTHON, str(script), str(log)], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and [o.split()[-1] for o in outputs] == ["1225", "1225"]
    level = peak = 0
    events = sorted((int(ts), int(delta)) for ts, delta in (line.split() for line in log.read_text().splitlines()))
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    assert len(events) == 2 * 50 * 2 and level == 0
    assert 1 <= peak <= 3  # 16 worker threads in two processes, never more than 3 runs inside at once

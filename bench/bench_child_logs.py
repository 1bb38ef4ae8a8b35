"""What a run log call costs in a child process, where each record is written through to disk (issue 23).

    python bench/bench_child_logs.py

A task logs N records in its own process, then in a fork-start ``multiprocessing.Pool`` worker, where the
export pipeline writes each record to the spool as it is made (so that ``os._exit``, ``Pool.terminate()`` or
SIGKILL lose nothing). Medians of 3 rounds, spool default, in one run.
"""

import multiprocessing
import statistics
import time

from otelflow import flow, get_run_logger, task

N = 5000
def work(_: int) -> float:
    log = get_run_logger()
    t0 = time.perf_counter()
    for i in range(N):
        log.info("record %d", i)
    return (time.perf_counter() - t0) / N * 1e6

@task
def measure() -> tuple[float, float]:
    here = [work(0) for _ in range(3)]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        child = pool.map(work, range(3))
    return statistics.median(here), statistics.median(child)

@flow
def f() -> tuple[float, float]:
    return measure()

if __name__ == "__main__":
    here, child = f()
    print(f"run log call: {here:.1f} us in the run's process, {child:.1f} us in a fork Pool worker (write-through)")

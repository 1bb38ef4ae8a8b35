"""A flow of N trivial sequential task runs, timed from inside the process (a script, not a test).

Run in a fresh subprocess by ``test_outage.py`` (a dead collector must not slow the flow) and by
``bench/bench_outage.py`` (the same flow's figures)::

    python tests/many_steps_flow.py N [--stats]

Prints ``{"flow_s": seconds}``. With ``--stats`` it then shuts telemetry down as the exit hook would (bounded by
``OTELFLOW_SHUTDOWN_TIMEOUT_SECONDS``) and prints ``{"stats": [...]}``, one entry per export processor.
"""

import json
import sys
import time

from otelflow import flow, task, telemetry


@task
def step(i: int) -> int:
    return i


@flow
def many(n: int) -> int:
    return sum(step(i) for i in range(n))


started = time.perf_counter()
many(int(sys.argv[1]))
print(json.dumps({"flow_s": time.perf_counter() - started}), flush=True)
if "--stats" in sys.argv:
    processors = telemetry._current().processors
    telemetry.shutdown()  # what the exit hook does
    print(json.dumps({"stats": [p.describe() for p in processors]}), flush=True)

"""Spools for the ``otelflow ui`` tests, made by real flow runs in a subprocess.

``SCENARIOS``: a failed run (a task raising, a NotReady task downstream of it, a subflow, a mapped task with one
failure and a retry), a completed run with tags, and a run whose names, messages, exception and artifacts are
hostile HTML and script.
"""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from conftest import PYTHON, REPO_ROOT, subprocess_env

# Shown as text by the page, never run: each would change the page's title if it ran.
HOSTILE = '<img src=x onerror="document.title=\'pwned\'">'
HOSTILE_SCRIPT = "<script>document.title='pwned'</script>"

SCENARIOS = textwrap.dedent(
    f"""
    from otelflow import flow, get_run_logger, tags, task, telemetry
    from otelflow.artifacts import create_markdown_artifact, create_table_artifact

    HOSTILE = {HOSTILE!r}
    HOSTILE_SCRIPT = {HOSTILE_SCRIPT!r}


    @task
    def boom(x: int) -> int:
        raise ValueError(f"bad input {{x}}")


    @task
    def after(value: int) -> int:
        return value


    @task(retries=1, retry_delay_seconds=0)
    def square(x: int) -> int:
        get_run_logger().info("squaring %d", x)
        if x == 3:
            raise RuntimeError("three is unlucky")
        return x * x


    @flow
    def child(n: int) -> int:
        get_run_logger().info("child running %d", n)
        return n


    @flow
    def failing() -> int:
        get_run_logger().warning("about to fail")
        first = boom.submit(1)
        after.submit(first).wait()
        child(7)
        for future in square.map(range(6)):
            future.wait()
        return first.result()


    @task
    def report(rows: int) -> int:
        create_markdown_artifact(
            "# Report\\n\\n**" + str(rows) + " rows** loaded, see [the docs](https://example.com/docs).\\n\\n"
            + HOSTILE + "\\n\\n| col | value |\\n|---|---|\\n| a | " + HOSTILE_SCRIPT + " |\\n",
            key="report", description="nightly " + HOSTILE)
        create_table_artifact([{{"name": HOSTILE, "rows": rows}}], key="counts")
        return rows


    @task
    def count(n: int) -> int:
        return n


    @flow
    def fine(n: int = 3) -> int:
        get_run_logger().info("fine with %d", n)
        return report(count.submit(n))


    @task(task_run_name=HOSTILE)
    def hostile_task() -> None:
        get_run_logger().info(HOSTILE)
        raise RuntimeError(HOSTILE_SCRIPT)


    @flow(flow_run_name="hostile-run")
    def hostile() -> None:
        get_run_logger().error(HOSTILE_SCRIPT, extra={{"html": HOSTILE}})
        hostile_task.submit().wait()


    if __name__ == "__main__":
        try:
            failing()
        except ValueError:
            pass
        with tags("nightly", "ui"):
            fine()
        hostile(return_state=True)
        telemetry.flush()
    """
)


def make_spool(home: Path, script: str = SCENARIOS, **env: str) -> None:
    """Run ``script`` (a flow program) in a subprocess with ``home`` as OTELFLOW_HOME (and as its store)."""
    path = home / "scenario.py"
    path.write_text(script)
    proc = subprocess.run([PYTHON, str(path)], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180,
                          env=subprocess_env(OTELFLOW_HOME=str(home), OTELFLOW_LOGGING_TO_CONSOLE="false", **env))
    assert proc.returncode == 0, proc.stderr

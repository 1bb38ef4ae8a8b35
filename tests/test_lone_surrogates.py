"""A text that is not valid Unicode (a lone surrogate, as ``os.fsdecode`` makes of a file name that is not UTF-8) is
recorded like any other: kept exactly in the spool (as a JSON escape), shown escaped by the CLI, and sent over OTLP
with U+FFFD in its place (protobuf cannot carry it). Nothing is dropped, neither the item nor its neighbours."""

from __future__ import annotations

import subprocess
import textwrap
from pathlib import Path

from conftest import PYTHON, REPO_ROOT, subprocess_env
from otlp_receiver import OTLPReceiver
from test_cli import cli

# Every kind of text a run records, each with its own lone surrogate.
FLOW = textwrap.dedent(
    """
    from otelflow import flow, get_run_logger, tags, task

    @task(task_run_name="load-\\udcff")
    def load(name):
        get_run_logger().info("read %s", name, extra={"path\\udcfe": name})
        return 1

    @flow(flow_run_name="run-\\udcfd")
    def pipeline():
        get_run_logger().info("before")
        with tags("tag-\\udcfc"):
            load("\\udcfb.csv")
        get_run_logger().info("after")

    pipeline()
    """
)


def _run(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    script = home.parent / "lone_surrogates_flow.py"
    script.write_text(FLOW)
    return subprocess.run([PYTHON, str(script)], env=subprocess_env(OTELFLOW_HOME=str(home), **env), cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=120)


def _cli(home: Path, *args: str) -> str:
    return cli(home, *args).stdout  # exit 0, no traceback


def test_the_spool_keeps_them_and_the_cli_shows_them_escaped(tmp_path: Path) -> None:
    home = tmp_path / "home"
    run = _run(home)
    assert run.returncode == 0, run.stderr
    assert "dropped" not in run.stderr  # the record used to be dropped: UnicodeEncodeError when the line was written
    lines = "".join(path.read_text() for path in (home / "spool").glob("logs-*.jsonl"))
    assert "read \\udcfb.csv" in lines  # the JSON escape of the surrogate: the exact text, valid UTF-8

    runs = _cli(home, "runs")
    assert "run-\\udcfd" in runs  # the run index stores it (sqlite used to refuse it, and every command failed)
    shown = _cli(home, "show")
    for text in ("run-\\udcfd", "load-\\udcff", "tag-\\udcfc", "read \\udcfb.csv", "path\\udcfe=\\udcfb.csv", "after"):
        assert text in shown, (text, shown)
    logs = _cli(home, "logs", "latest")
    assert "read \\udcfb.csv" in logs and "before" in logs and "after" in logs


def test_spool_ship_sends_them_as_replacement_characters(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert _run(home).returncode == 0
    with OTLPReceiver() as receiver:
        _cli(home, "spool", "ship", "--home", str(home), "--endpoint", receiver.endpoint)
        spans = {span.name: span for span in receiver.spans()}
        bodies = [log.body for log in receiver.logs()]
    assert spans["task load"].attributes["otelflow.run.name"] == "load-\ufffd"
    assert spans["flow pipeline"].attributes["otelflow.run.name"] == "run-\ufffd"
    assert "read \ufffd.csv" in bodies and "before" in bodies and "after" in bodies


def test_the_otlp_exporter_sends_them_as_replacement_characters_with_their_neighbours(tmp_path: Path) -> None:
    with OTLPReceiver() as receiver:
        run = _run(tmp_path / "home", OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
                   OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf")
        assert run.returncode == 0, run.stderr
        assert "dropped" not in run.stderr
        logs = {log.body: log for log in receiver.logs()}
        spans = {span.name: span for span in receiver.spans()}
    assert logs["read \ufffd.csv"].attributes["path\ufffd"] == "\ufffd.csv"
    assert logs["read \ufffd.csv"].attributes["otelflow.tags"] == ["tag-\ufffd"]
    assert "before" in logs and "after" in logs
    assert spans["task load"].attributes["otelflow.run.name"] == "load-\ufffd"

"""The ``otelflow ui`` command: where it listens, what it says, how it stops (a real subprocess)."""

from __future__ import annotations

import signal
import socket
import urllib.parse
from pathlib import Path

import pytest
from test_cli import cli
from ui_scenarios import make_spool
from ui_server import get, get_json, ui_process

pytestmark = pytest.mark.slow

SIMPLE = "from otelflow import flow, telemetry\n\n@flow\ndef simple():\n    pass\n\nsimple()\ntelemetry.flush()\n"


def test_it_serves_the_spool_on_loopback_and_says_where(tmp_path: Path) -> None:
    make_spool(tmp_path, SIMPLE)
    with ui_process(tmp_path) as (url, proc):
        parts = urllib.parse.urlsplit(url)
        assert parts.hostname == "127.0.0.1" and parts.port
        assert [r["flow"] for r in get_json(f"{url}/api/runs")["runs"]] == ["simple"]
        status, _headers, body = get(url + "/")
        assert status == 200 and b"app.js" in body
        proc.send_signal(signal.SIGINT)  # Ctrl-C: a quiet, successful exit
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0 and "Traceback" not in err and "warning" not in err


def test_home_option_and_the_store_of_that_home(tmp_path: Path) -> None:
    make_spool(tmp_path, SIMPLE)
    with ui_process(Path("/nonexistent"), "--home", str(tmp_path)) as (url, _):
        assert get_json(f"{url}/api/runs")["spool"] == str(tmp_path / "spool")


def test_listening_beyond_loopback_is_said_out_loud(tmp_path: Path) -> None:
    with ui_process(tmp_path, "--host", "0.0.0.0") as (url, proc):
        assert get_json(f"{url}/api/runs")["runs"] == []
        # not on loopback: any Host is answered (the user chose to serve others)
        assert get(f"{url}/api/runs", headers={"Host": "pipelines.example"})[0] == 200
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "warning: listening on 0.0.0.0, not on loopback" in err and "can read every run" in err


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = cli(tmp_path, "ui", "--port", str(port), check=False)
    assert proc.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in proc.stderr and "--port" in proc.stderr


def test_it_is_listed_in_the_help(tmp_path: Path) -> None:
    assert " ui " in cli(tmp_path, "--help").stdout
    text = cli(tmp_path, "ui", "--help").stdout
    assert "--host" in text and "--port" in text and "--open" in text and "4200" in text

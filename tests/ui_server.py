"""``otelflow ui``'s server for tests: a real HTTP server on loopback, in this process (``serving``) or as the
``otelflow ui`` command in a subprocess (``ui_process``), and a small JSON client."""

from __future__ import annotations

import json
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from conftest import PYTHON, REPO_ROOT, subprocess_env

from otelflow._internal.ui.api import Api
from otelflow._internal.ui.server import UiServer
from otelflow.stores.sqlite import sqlite_url


@contextmanager
def serving(home: Path, *, jaeger_url: str | None = None, grafana_url: str | None = None) -> Iterator[str]:
    """The page of ``home``'s spool, served from a thread of this process; yields its base URL."""
    api = Api(home / "spool", store=sqlite_url(home / "store.sqlite3"), jaeger_url=jaeger_url,
              grafana_url=grafana_url)
    server = UiServer(api, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.url
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@contextmanager
def ui_process(home: Path, *args: str, **env: str) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """``otelflow ui --port 0 ARGS`` in a subprocess; yields (its URL, the process) once it listens."""
    proc = subprocess.Popen([PYTHON, "-m", "otelflow", "ui", "--port", "0", *args], cwd=REPO_ROOT,
                            env=subprocess_env(OTELFLOW_HOME=str(home), **env), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("otelflow ui: http://"), (line, proc.stderr.read() if proc.stderr else "")
        yield line.split()[2], proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=30)


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a request; HTTP errors are answers too."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str, status: int = 200) -> Any:
    """The JSON answer of ``url``, which must come with ``status``."""
    code, headers, body = get(url)
    assert code == status, (code, body[:500])
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(body)


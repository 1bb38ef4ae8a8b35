"""A throwaway ``redis-server`` for tests: fixture ``redis_server`` yields ``redis://127.0.0.1:PORT/0``.

The server runs without persistence in a temporary directory and is terminated at the end of the
session. Tests that need it are skipped (with the reason) when ``redis-server`` is not installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

__all__ = ["redis_server", "start_redis_server"]

STARTUP_TIMEOUT_S = 10.0
POLL_INTERVAL_S = 0.05
STOP_TIMEOUT_S = 5.0


def _free_port() -> int:
    """A port that was free a moment ago (redis-server cannot bind port 0 and report it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_ready(process: subprocess.Popen[bytes], url: str, timeout: float) -> None:
    """Poll PING until the server answers, the process dies, or ``timeout`` passes."""
    import redis

    deadline = time.monotonic() + timeout
    client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        while True:
            if process.poll() is not None:
                output = process.stdout.read().decode(errors="replace") if process.stdout else ""
                raise RuntimeError(f"redis-server exited with {process.returncode}:\n{output}")
            try:
                if client.ping():
                    return
            except redis.exceptions.ConnectionError:
                pass  # not listening yet
            if time.monotonic() >= deadline:
                raise RuntimeError(f"redis-server at {url} did not answer PING within {timeout}s")
            time.sleep(POLL_INTERVAL_S)  # bounded by the deadline above
    finally:
        client.close()


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)
    if process.stdout is not None:
        process.stdout.close()


def start_redis_on(port: int, workdir: str, *options: str, password: str | None = None) -> subprocess.Popen[bytes]:
    """Start ``redis-server`` on a given port (tests that stop and restart one server), ready for PING.

    ``options`` are extra server arguments (``--appendonly yes``...); ``password`` sets ``--requirepass``.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", workdir, "--save", "",
               "--loglevel", "warning", *options]
    if password is not None:
        command += ["--requirepass", password]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
    auth = f":{password}@" if password is not None else ""
    try:
        _wait_until_ready(process, f"redis://{auth}127.0.0.1:{port}/0", STARTUP_TIMEOUT_S)
    except RuntimeError:
        _stop(process)
        raise
    return process


def start_redis_server(workdir: str, attempts: int = 3) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``redis-server`` in ``workdir`` on a free port; return the process and its URL.

    The port is picked by binding to port 0 and releasing it, so another process may grab it before
    redis does: then redis exits and we retry on a new port.
    """
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    last_error: Exception | None = None
    for _ in range(attempts):
        port = _free_port()
        url = f"redis://127.0.0.1:{port}/0"
        command = [
            binary,
            "--bind", "127.0.0.1",
            "--port", str(port),
            "--save", "",
            "--appendonly", "no",
            "--dir", workdir,
            "--protected-mode", "yes",
            "--loglevel", "warning",
        ]  # fmt: skip
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            _wait_until_ready(process, url, STARTUP_TIMEOUT_S)
        except RuntimeError as exc:
            last_error = exc
            _stop(process)
            continue
        return process, url
    raise RuntimeError(f"could not start redis-server after {attempts} attempts: {last_error}")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL of a real, empty, non-persistent ``redis-server`` shared by the test session."""
    pytest.importorskip("redis", reason="the redis client is needed for the redis_server fixture (pip install redis)")
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (e.g. `apt-get install redis-server`); skipping Redis tests")
    with tempfile.TemporaryDirectory(prefix="otelflow-redis-") as workdir:
        process, url = start_redis_server(workdir)
        try:
            yield url
        finally:
            _stop(process)

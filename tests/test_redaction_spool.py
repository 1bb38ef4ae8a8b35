"""End to end: a flow full of secrets runs in a child process, and none of them reaches the spool (issue 25).

The child exports to the embedded default (the OTLP-JSON spool under ``OTELFLOW_HOME``, no OTLP endpoint) with
parameter values opted in; the console (stderr) keeps printing what Prefect prints, secrets included.
"""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

from conftest import PYTHON, subprocess_env

from otelflow import semconv

SCRIPT = textwrap.dedent('''
    from typing import NamedTuple

    from otelflow import flow, get_run_logger, task
    from otelflow.transactions import transaction


    class Creds(NamedTuple):
        user: str
        passwd: str


    @task
    def connect(creds: Creds, headers: list, dsn: str, url: str, settings: dict) -> str:
        logger = get_run_logger()
        logger.info("x", extra={"password": "S3-extra", "auth_header": "Bearer S3-header", "token": "S3-token",
                                "cfg": {"db": {"password": "S3-deep"}}, "ようこそ": "welcome", "..": "dots"})
        logger.info("connecting to %s with %s", dsn, headers)
        logger.info("calling %s", url)
        return creds.user


    @task(retries=1)
    def query(dsn: str) -> None:
        raise ConnectionError(f"could not connect to {dsn}")


    def alert(flow, flow_run, state):
        raise RuntimeError("alert failed for postgresql://app:S3-hook@db/x")


    @task
    def stage(row: str) -> str:
        return row


    @stage.on_rollback
    def unstage(txn) -> None:
        raise RuntimeError("unstage failed on postgresql://app:S3-txn@db/x")


    @flow(on_failure=[alert])
    def pipeline() -> None:
        connect(Creds(user="root", passwd="S3-namedtuple"),
                [("Authorization", "Bearer S3-pair"), ("Accept", "application/json")],
                "postgresql://app:S3-sl/ash@db/x",
                "https://api.example/v1?api_key=S3-apikey&page=2",
                {"dsn": "postgresql://app:S3-at@tail@db/x", "nested": {"secret": "S3-nested"}})
        try:
            with transaction(key="redaction-e2e"):
                stage("a")
                raise ValueError("bad batch for postgresql://app:S3-batch@db/x")
        except ValueError:
            pass
        query("postgresql://app:S3-slash/and@at@db:5432/prod")


    pipeline()
''')

SECRETS = [
    "S3-extra", "S3-header", "S3-token", "S3-deep", "S3-sl", "ash@db", "S3-pair", "S3-apikey", "S3-at", "tail@db",
    "S3-nested", "S3-namedtuple", "S3-hook", "S3-txn", "S3-batch", "S3-slash", "and@at",
]


def test_no_secret_reaches_the_spool(tmp_path: Path) -> None:
    home = tmp_path / "home"
    script = tmp_path / "secrets_flow.py"
    script.write_text(SCRIPT)
    result = subprocess.run(
        [PYTHON, str(script)], capture_output=True, text=True, timeout=120,
        env=subprocess_env(OTELFLOW_HOME=str(home), OTELFLOW_RECORD_PARAMETER_VALUES="true",
                           OTELFLOW_PARAMETER_VALUE_MAX_LENGTH="4096", OTELFLOW_LOGGING_TO_CONSOLE="true"),
    )
    assert result.returncode == 1, result.stderr  # the flow fails (its last task does)
    files = [path for path in (home / "spool").rglob("*") if path.is_file()]
    assert files
    spool = "\n".join(path.read_text(errors="replace") for path in files)
    leaked = [secret for secret in SECRETS if secret in spool]
    assert not leaked, leaked
    # What was exported is there, redacted, not dropped.
    for expected in ("[REDACTED]", "postgresql://app:***@db:5432/prod", "api_key=***", "extra.ようこそ", '"extra..."',
                     "could not connect to postgresql://app:***@db", "Traceback (most recent call last):"):
        assert expected in spool or json.dumps(expected)[1:-1] in spool, expected
    assert semconv.PARAMETER_PREFIX + "creds" in spool
    # Every exported stack trace starts at the user's code (otelflow's leading frames dropped).
    stacks = _string_values(spool, semconv.EXCEPTION_STACKTRACE)
    assert len(stacks) >= 4  # the task's exception event, the flow's, and the engine's failure log lines
    for stack in stacks:
        assert stack.splitlines()[1].startswith(f'  File "{script}"'), stack
    # The console prints what Prefect prints: the secrets in messages and tracebacks, otelflow's frames included.
    assert "S3-slash/and@at" in result.stderr and "otelflow/engine.py" in result.stderr


def _string_values(spool: str, key: str) -> list[str]:
    """Every string value of attribute ``key`` in the spool's OTLP-JSON lines."""
    found: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if node.get("key") == key and isinstance(node.get("value"), dict):
                found.append(str(node["value"].get("stringValue")))
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for line in spool.splitlines():
        if line.strip():
            walk(json.loads(line))
    return found

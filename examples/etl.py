"""A small ETL pipeline: the README's first command runs it.

With no OTLP endpoint configured its trace and logs go to the local spool (``~/.otelflow/spool``);
``otelflow show`` prints them. With ``OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4318`` they go to
the Collector of ``docker-compose.yml`` (Jaeger, Loki, Prometheus, Grafana).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from otelflow import flow, get_run_logger, tags, task
from otelflow.context import TaskRunContext
from otelflow.utilities.annotations import allow_failure, unmapped


@task
def extract(n: int) -> list[dict[str, int]]:
    """Pretend to read ``n`` rows from a source system."""
    rows = [{"id": i, "amount": (i * 37) % 100} for i in range(n)]
    get_run_logger().info("Extracted %d rows", len(rows), extra={"source": "orders", "rows": len(rows)})
    return rows


@task(retries=2, retry_delay_seconds=0.05)
def transform(row: dict[str, int], config: dict[str, float]) -> dict[str, float]:
    """Apply the exchange rate; a flaky dependency fails now and then and is retried."""
    if row["id"] % 3 == 2 and TaskRunContext.get().task_run.run_count == 1:
        raise ConnectionError("rate service timed out")
    converted = {"id": row["id"], "amount": round(row["amount"] * config["rate"], 2)}
    get_run_logger().debug("Converted row %s", row["id"])
    return converted


@task
def validate(row: dict[str, float]) -> dict[str, float]:
    """Reject negative amounts."""
    if row["amount"] < 0:
        raise ValueError(f"row {row['id']} has a negative amount")
    return row


@task
def load(rows: list[object]) -> int:
    """Pretend to write the good rows; failed upstream rows arrive as exceptions (allow_failure)."""
    good = [r for r in rows if not isinstance(r, BaseException)]
    logger = get_run_logger()
    logger.info("Loaded %d rows", len(good), extra={"rejected": len(rows) - len(good)})
    return len(good)


@flow(log_prints=True)
def etl(n: int = 5, rate: float = 1.1) -> int:
    """Extract, transform (mapped), validate and load."""
    logger = get_run_logger()
    logger.info("Starting ETL", extra={"batch_size": n, "env": "demo"})
    rows = extract(n)
    with tags("etl", "demo"):
        converted = transform.map(rows, unmapped({"rate": rate}))
        checked = validate.map(allow_failure(converted))
        loaded = load(allow_failure(checked))
    print(f"ETL finished: {loaded}/{n} rows loaded")
    return loaded


def _command(name: str) -> str:
    """How to run the ``name`` console script from this shell: its bare name if that is the one on PATH (an
    activated virtualenv), else its path next to this Python (``.venv/bin/otelflow``)."""
    here = Path(sys.executable).parent / name
    found = shutil.which(name)
    if found is not None and Path(found).resolve() == here.resolve():
        return name
    try:
        return str(here.relative_to(Path.cwd()))
    except ValueError:
        return str(here)


if __name__ == "__main__":
    state = etl(return_state=True)
    from otelflow import telemetry

    telemetry.flush()
    where = telemetry.describe()
    run_id = state.state_details.flow_run_id
    print(f"telemetry: {where}")
    if "spool" in where:
        cli = _command("otelflow")
        print(f"see the trace with: {cli} show {run_id}   (or: {cli} show --flow etl)")
    elif "otlp" in where:
        service = os.environ.get("OTEL_SERVICE_NAME") or "otelflow"
        print(f"the trace went to the OTLP collector: in Jaeger, search service {service} for the tag "
              f"otelflow.flow_run.id={run_id}; its logs in Loki: "
              f"{{service_name=\"{service}\"}} | otelflow_flow_run_id=\"{run_id}\"")

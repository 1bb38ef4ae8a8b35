"""The pipeline of the two-service example: a flow whose task runs call the scoring service over HTTP.

Run it (with the service running, see README.md)::

    python examples/microservices/pipeline.py --url http://127.0.0.1:8000
    SCORING_SERVICE_URL=http://127.0.0.1:8000 python examples/microservices/pipeline.py

Each ``score`` task run posts one item with ``otelflow.integrations.httpx.client()``, which adds the run
context (``traceparent`` + ``baggage``) to the request: the service's spans become children of the task
run's span, and its run logs carry this flow run's id. One trace, two ``service.name``s.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from otelflow import flow, get_run_logger, tags, task
from otelflow.context import FlowRunContext
from otelflow.integrations import httpx as otelflow_httpx
from otelflow.utilities.annotations import unmapped

DEFAULT_URL = "http://127.0.0.1:8000"


@task(retries=2, retry_delay_seconds=0.2)
def score(item: dict[str, Any], url: str) -> float:
    """Ask the scoring service for one item's score."""
    with otelflow_httpx.client(timeout=10) as http:
        response = http.post(f"{url}/score", json=item)
        response.raise_for_status()
    result = float(response.json()["score"])
    get_run_logger().info("Item %s scored %s", item["id"], result)
    return result


@flow
def scoring_pipeline(url: str = DEFAULT_URL, n: int = 3) -> dict[str, Any]:
    """Score ``n`` items through the service."""
    items = [{"id": i, "amount": (i * 37) % 100} for i in range(n)]
    get_run_logger().info("Scoring %d items via %s", n, url)
    with tags("microservices-example"):
        scores = score.map(items, unmapped(url)).result()
    flow_run = FlowRunContext.get().flow_run  # type: ignore[union-attr]
    return {"flow_run_id": str(flow_run.id), "scores": scores}  # type: ignore[union-attr]


def main() -> None:
    parser = argparse.ArgumentParser(description="The pipeline of the otelflow microservices example.")
    parser.add_argument("--url", default=os.environ.get("SCORING_SERVICE_URL", DEFAULT_URL),
                        help="scoring service base URL (default: $SCORING_SERVICE_URL or %(default)s)")
    parser.add_argument("-n", type=int, default=3, help="number of items to score")
    args = parser.parse_args()
    print(json.dumps(scoring_pipeline(args.url.rstrip("/"), args.n)))


if __name__ == "__main__":
    main()

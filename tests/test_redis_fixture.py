"""The ``redis_server`` fixture starts a real server we can talk to."""

from __future__ import annotations

import pytest
import redis_server as redis_fixtures  # tests/ is on sys.path (rootdir conftest)

redis = pytest.importorskip("redis")

redis_server = redis_fixtures.redis_server


def test_set_get_round_trip(redis_server: str) -> None:
    assert redis_server.startswith("redis://127.0.0.1:") and redis_server.endswith("/0")
    client = redis.Redis.from_url(redis_server)
    try:
        assert client.set("otelflow:test:key", "value")
        assert client.get("otelflow:test:key") == b"value"
        assert client.config_get("save") == {"save": ""}
        assert client.config_get("appendonly") == {"appendonly": "no"}
    finally:
        client.delete("otelflow:test:key")
        client.close()

"""``RedisLockManager``: Prefect's ``prefect_redis.locking.RedisLockManager``, over otelflow's Redis store."""

from __future__ import annotations

import urllib.parse

from otelflow.locking.store import StoreLockManager

__all__ = ["RedisLockManager"]


class RedisLockManager(StoreLockManager):
    """Locks in the Redis server at ``host:port`` (database ``db``), shared by every machine that reaches it.

    ``RedisLockManager(host="localhost", port=6379, db=0, username=None, password=None, ssl=False)``, Prefect's
    arguments. The password never appears in messages or telemetry.
    """

    def __init__(self, host: str = "localhost", port: int = 6379, db: int = 0, username: str | None = None,
                 password: str | None = None, ssl: bool = False) -> None:
        self.host, self.port, self.db, self.ssl = host, port, db, ssl
        self.username = username
        auth = ""
        if username is not None or password is not None:
            auth = urllib.parse.quote(username or "", safe="")
            if password is not None:
                auth += ":" + urllib.parse.quote(password, safe="")
            auth += "@"
        netloc = f"[{host}]" if ":" in host else host
        super().__init__(f"{'rediss' if ssl else 'redis'}://{auth}{netloc}:{int(port)}/{int(db)}")

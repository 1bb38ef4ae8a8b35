"""Prefect's ``prefect_redis`` import path for what otelflow keeps in Redis (extra ``otelflow[redis]``).

Code written for Prefect's Redis integration keeps working after ``s/prefect/otelflow/``::

    from otelflow import task
    from otelflow.cache_policies import INPUTS, TASK_SOURCE
    from otelflow_redis.locking import RedisLockManager

    cache_policy = (INPUTS + TASK_SOURCE).configure(
        isolation_level="SERIALIZABLE",
        lock_manager=RedisLockManager(host="my-redis-host"),
    )

The locks are those of otelflow's Redis store (:mod:`otelflow.stores`): leased, renewed while held.
"""

from otelflow_redis.locking import RedisLockManager

__all__ = ["RedisLockManager"]

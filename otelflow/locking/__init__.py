"""Lock managers for ``CachePolicy.configure(isolation_level="SERIALIZABLE", lock_manager=...)``, under Prefect's names.

Every lock manager here is a view of an :mod:`otelflow.stores` store, whose leased locks the cache uses (renewed
while the holder lives, freed when a crashed holder's lease runs out):

- :class:`~otelflow.locking.memory.MemoryLockManager`: the configured store (``OTELFLOW_STORE_URL``, by default the
  sqlite file under the otelflow home). Prefect's only coordinates threads of one process; this one also
  coordinates processes on the machine, which is never weaker.
- :class:`~otelflow.locking.filesystem.FileSystemLockManager`: a sqlite store in ``lock_files_directory``.
- :class:`StoreLockManager`: any store URL, e.g. ``StoreLockManager("redis://locks:6379/0")`` for many machines
  (what ``prefect_redis.RedisLockManager`` is for); ``lock_manager="redis://..."`` does the same.

Example::

    from otelflow.cache_policies import INPUTS
    from otelflow.locking.filesystem import FileSystemLockManager

    policy = INPUTS.configure(isolation_level="SERIALIZABLE",
                              lock_manager=FileSystemLockManager(lock_files_directory="/tmp/locks"))
"""

from __future__ import annotations

from otelflow.locking.store import StoreLockManager

__all__ = ["StoreLockManager"]

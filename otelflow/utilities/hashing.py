"""Stable hashes of values and files, as Prefect 3's ``prefect.utilities.hashing``.

Cache keys are built from these, so the bytes hashed are Prefect's: the same inputs give the same key in
otelflow and in Prefect (sorted-key JSON through :class:`~otelflow.serializers.JSONSerializer`, else
cloudpickle, hashed with md5)::

    from otelflow.utilities.hashing import hash_objects

    hash_objects(1, 2, a="x")  # 'ba07a4c053e7fab93ff8022666bb5ab8', as prefect.utilities.hashing
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

import cloudpickle

from otelflow.exceptions import HashError
from otelflow.serializers import JSONSerializer, json_object_encoder

__all__ = ["HashError", "file_hash", "hash_objects", "stable_hash"]


class _Hash(Protocol):
    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


# md5 identifies content here, it protects nothing; usedforsecurity=False keeps it available on FIPS builds.
_md5: Callable[[], _Hash] = partial(hashlib.md5, usedforsecurity=False)

# Built once: hash_objects runs for every task run whose cache policy hashes inputs. Never mutated.
_HASH_SERIALIZER = JSONSerializer(dumps_kwargs={"sort_keys": True})
_json_dumps = partial(json.dumps, sort_keys=True, default=json_object_encoder)

_FILE_CHUNK = 1 << 20


def stable_hash(*args: str | bytes, hash_algo: Callable[..., _Hash] = _md5) -> str:
    """The hex digest of the arguments' bytes, in order (strings as UTF-8).

    ``hash_algo`` is a ``hashlib`` constructor (md5 by default)::

        stable_hash("a", b"b") == stable_hash("ab")  # True
    """
    digest = hash_algo()
    for arg in args:
        digest.update(arg.encode() if isinstance(arg, str) else arg)
    return digest.hexdigest()


def file_hash(path: str | os.PathLike[str], hash_algo: Callable[..., _Hash] = _md5) -> str:
    """The hex digest of a file's contents (the same as :func:`stable_hash` of its bytes), read in chunks."""
    digest = hash_algo()
    with open(path, "rb") as file:
        while chunk := file.read(_FILE_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def hash_objects(
    *args: Any,
    hash_algo: Callable[..., _Hash] = _md5,
    raise_on_failure: bool = False,
    **kwargs: Any,
) -> str | None:
    """A hash of the arguments: of their sorted-key JSON when they are JSON-serializable (with otelflow's
    object encoder: pydantic models, datetimes, UUIDs...), else of their cloudpickle bytes.

    When neither works, returns ``None``, or with ``raise_on_failure=True`` raises :class:`HashError`
    with both reasons::

        hash_objects({"b": 1, "a": 2}) == hash_objects({"a": 2, "b": 1})  # True
        hash_objects(threading.Lock())                                     # None
    """
    try:
        # What _HASH_SERIALIZER.dumps does (the same bytes), without its per-call lookups: every cache key pays it.
        digest = hash_algo()
        digest.update(_json_dumps((args, kwargs)).encode())
        return digest.hexdigest()
    except Exception as exc:
        json_error = str(exc)
    try:
        return stable_hash(cloudpickle.dumps((args, kwargs)), hash_algo=hash_algo)
    except Exception as exc:
        pickle_error = str(exc)
    if raise_on_failure:
        raise HashError(
            "Unable to create hash - objects could not be serialized.\n"
            f"  JSON error: {json_error}\n"
            f"  Pickle error: {pickle_error}"
        )
    return None

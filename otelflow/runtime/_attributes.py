"""What the three runtime modules share: attribute lookup by name, with ``OTELFLOW__RUNTIME__...`` overrides.

Prefect lets tests (and scripts run outside a flow) pin a runtime attribute with an environment variable,
``PREFECT__RUNTIME__FLOW_RUN__NAME=nightly``; otelflow reads the same names under its own prefix,
``OTELFLOW__RUNTIME__FLOW_RUN__NAME``. The variable's text is cast to the type of the value the attribute has
right now, so ``run_count`` stays an ``int``; attributes whose value is a list or dict (``tags``,
``parameters``) cannot be pinned this way, as in Prefect.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ENV_PREFIX", "FLOW_RUN_ID_ENV", "lookup"]

ENV_PREFIX = "OTELFLOW__RUNTIME__"

# What a process started for one flow run may be told about it (Prefect's ``PREFECT__FLOW_RUN_ID``).
FLOW_RUN_ID_ENV = "OTELFLOW__FLOW_RUN_ID"


def _parse_datetime_utc(text: str) -> datetime.datetime:
    """An ISO 8601 time in UTC: a time without an offset is taken as UTC, one with an offset converted."""
    parsed = datetime.datetime.fromisoformat(text.strip())
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=datetime.UTC)
    return parsed.astimezone(datetime.UTC)


# Keyed by the exact type of the attribute's current value. An attribute that is None now (``name`` outside a
# run) takes the variable as a string.
_CASTS: dict[type, Callable[[str], Any]] = {
    bool: lambda text: text.lower() == "true",
    int: int,
    float: float,
    str: str,
    datetime.datetime: _parse_datetime_utc,
    type(None): str,
}


def lookup(module: str, section: str, fields: Mapping[str, Callable[[], Any]], name: str) -> Any:
    """The value of runtime attribute ``name`` of ``module`` (``flow_run``, ...), honouring an override variable.

    ``section`` names the variables' group (``FLOW_RUN`` reads ``OTELFLOW__RUNTIME__FLOW_RUN__<NAME>``). A name
    that is no attribute is still answered when its variable is set (as the variable's text); otherwise it raises
    :class:`AttributeError`, so ``from otelflow.runtime.flow_run import nope`` is an ``ImportError``.
    """
    getter = fields.get(name)
    env_key = f"{ENV_PREFIX}{section}__{name.upper()}"
    override = os.environ.get(env_key)
    if getter is None:
        if override is not None:
            return override
        raise AttributeError(f"{module} has no attribute {name!r}")
    value = getter()
    if override is None:
        return value
    cast = _CASTS.get(type(value))
    if cast is None:
        # Prefect's message first (tests match on it), then what otelflow knows about the case.
        raise ValueError(
            "This runtime context attribute cannot be mocked using an environment variable. Please use "
            f"monkeypatch instead. ({env_key}: {name!r} is a {type(value).__name__}; only strings, numbers, "
            "booleans and times can be set from the environment.)"
        )
    return cast(override)

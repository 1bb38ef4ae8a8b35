"""Deployment attributes, read as module attributes (Prefect's ``prefect.runtime.deployment``).

otelflow runs flows where they are called and has no deployments, so ``id``, ``name`` and ``version`` are
always ``None``. As in Prefect for a flow run that did not come from a deployment, ``flow_run_id`` is the
current flow run's id and ``parameters`` are that flow run's parameters (``{}`` outside a flow run), so code
such as ``deployment.parameters.get("runner_config", default)`` keeps working.

Example::

    from otelflow.runtime import deployment

    config = deployment.parameters.get("runner_config", "default config")

Any attribute can be pinned for a test with ``OTELFLOW__RUNTIME__DEPLOYMENT__<NAME>`` (Prefect's
``PREFECT__RUNTIME__DEPLOYMENT__<NAME>``), e.g. ``OTELFLOW__RUNTIME__DEPLOYMENT__NAME=nightly``.
"""

# The names in __all__ are served by the module's __getattr__, which pyflakes cannot see.
# ruff: noqa: F822

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from otelflow.runtime._attributes import FLOW_RUN_ID_ENV, lookup
from otelflow.runtime.flow_run import _current

__all__ = ["flow_run_id", "id", "name", "parameters", "version"]


def __getattr__(name: str) -> Any:
    """``deployment.<name>``: the attribute's value for the current run (see the module docstring)."""
    return lookup(__name__, "DEPLOYMENT", FIELDS, name)


def __dir__() -> list[str]:
    return sorted(__all__)


def get_id() -> str | None:
    """Always None: otelflow has no deployments."""
    return None


def get_parameters() -> dict[str, Any]:
    """The current flow run's parameters (a flow run not started from a deployment); ``{}`` outside one."""
    current = _current()
    return current[0].parameters if current is not None else {}


def get_name() -> str | None:
    """Always None: otelflow has no deployments."""
    return None


def get_version() -> str | None:
    """Always None: otelflow has no deployments."""
    return None


def get_flow_run_id() -> str | None:
    """The current flow run's id; outside a flow run ``$OTELFLOW__FLOW_RUN_ID`` or None."""
    current = _current()
    if current is not None:
        return current[1].id_str or str(current[1].id)
    return os.environ.get(FLOW_RUN_ID_ENV)


FIELDS: dict[str, Callable[[], Any]] = {
    "id": get_id,
    "flow_run_id": get_flow_run_id,
    "parameters": get_parameters,
    "name": get_name,
    "version": get_version,
}

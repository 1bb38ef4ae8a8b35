"""The current task run's attributes, read as module attributes (Prefect's ``prefect.runtime.task_run``).

Example::

    from otelflow import task
    from otelflow.runtime import task_run

    @task(retries=2)
    def fetch(url: str) -> str:
        if task_run.run_count == 1:
            ...  # first attempt
        return f"{task_run.task_name} ({task_run.name})"

Outside a task run the attributes are empty: ``None``, ``[]``, ``{}`` or ``0``. Ids are strings.

Attributes:
    - ``id``: the task run's id
    - ``tags``: the task run's tags (its task's and those of the ``tags()`` blocks around the call)
    - ``name``: the task run's name (``"fetch-3a1"`` or its ``task_run_name``); ``task_name``: its task's
    - ``parameters``: the parameters the task was called with
    - ``run_count``: the attempt number (1 on the first try, 2 on the first retry, ...)
    - ``api_url``, ``ui_url``: ``None`` (otelflow has no API server)

Any attribute can be pinned for a test with ``OTELFLOW__RUNTIME__TASK_RUN__<NAME>`` (Prefect's
``PREFECT__RUNTIME__TASK_RUN__<NAME>``); the text is cast to the attribute's type. Lists and dicts cannot be
pinned this way: patch them with pytest's ``monkeypatch`` instead.
"""

# The names in __all__ are served by the module's __getattr__, which pyflakes cannot see.
# ruff: noqa: F822

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from otelflow.context import TaskRun, TaskRunContext
from otelflow.runtime._attributes import lookup

__all__ = ["api_url", "id", "name", "parameters", "run_count", "tags", "task_name", "ui_url"]


def __getattr__(name: str) -> Any:
    """``task_run.<name>``: the attribute's value for the current task run (see the module docstring)."""
    return lookup(__name__, "TASK_RUN", FIELDS, name)


def __dir__() -> list[str]:
    return sorted(__all__)


def _current() -> tuple[TaskRunContext, TaskRun] | None:
    ctx = TaskRunContext.get()
    if ctx is None or ctx.task_run is None:
        return None
    return ctx, ctx.task_run


def get_id() -> str | None:
    """The current task run's id; None outside a task run."""
    current = _current()
    return current[1].id_str or str(current[1].id) if current is not None else None


def get_tags() -> list[str]:
    """The task run's tags; ``[]`` outside a task run."""
    current = _current()
    return list(current[1].tags) if current is not None else []


def get_run_count() -> int:
    """How many times the task run has started (1 on its first attempt); 0 outside a task run."""
    current = _current()
    return current[1].run_count if current is not None else 0


def get_name() -> str | None:
    """The task run's name; None outside a task run."""
    current = _current()
    return current[1].name if current is not None else None


def get_task_name() -> str | None:
    """The name of the task being run; None outside a task run."""
    current = _current()
    if current is None:
        return None
    ctx, run = current
    return ctx.task.name if ctx.task is not None else run.task_name


def get_parameters() -> dict[str, Any]:
    """The parameters the task was called with; ``{}`` outside a task run."""
    current = _current()
    return current[0].parameters if current is not None else {}


def get_task_run_api_url() -> str | None:
    """Always None: otelflow has no API server."""
    return None


def get_task_run_ui_url() -> str | None:
    """Always None: otelflow has no UI server with a page per task run."""
    return None


FIELDS: dict[str, Callable[[], Any]] = {
    "id": get_id,
    "tags": get_tags,
    "name": get_name,
    "parameters": get_parameters,
    "run_count": get_run_count,
    "task_name": get_task_name,
    "api_url": get_task_run_api_url,
    "ui_url": get_task_run_ui_url,
}

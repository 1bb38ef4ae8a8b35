"""Attributes of the current run, read as module attributes (Prefect's ``prefect.runtime``).

Example::

    from otelflow import flow
    from otelflow.runtime import deployment, flow_run, task_run

    @flow
    def pipeline() -> None:
        print(f"{flow_run.flow_name}/{flow_run.name} ({flow_run.id}), attempt {flow_run.run_count}")

- :mod:`otelflow.runtime.flow_run`: the current flow run (also inside its task runs)
- :mod:`otelflow.runtime.task_run`: the current task run
- :mod:`otelflow.runtime.deployment`: Prefect's deployment attributes (otelflow has no deployments: empty)

Outside a run every attribute is empty (``None``, ``[]``, ``{}``, ``0``). Tests can pin any attribute with
``OTELFLOW__RUNTIME__<MODULE>__<NAME>`` environment variables (Prefect's ``PREFECT__RUNTIME__...``).
"""

from otelflow.runtime import deployment, flow_run, task_run

__all__ = ["deployment", "flow_run", "task_run"]

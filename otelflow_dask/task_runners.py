"""Prefect's ``prefect_dask.task_runners`` path: :class:`~otelflow.integrations.dask.DaskTaskRunner`.

Example::

    from otelflow_dask.task_runners import DaskTaskRunner

    runner = DaskTaskRunner(address="tcp://10.0.0.5:8786")
"""

from otelflow.integrations.dask import DaskTaskRunner

__all__ = ["DaskTaskRunner"]

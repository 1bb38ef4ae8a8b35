"""Prefect's ``prefect_dask`` import path for otelflow's Dask task runner (extra ``otelflow[dask]``).

Code written for Prefect's Dask integration keeps working after ``s/prefect/otelflow/``::

    from otelflow import flow, task
    from otelflow_dask import DaskTaskRunner, get_dask_client

    @task
    def square(x: int) -> int:
        return x * x

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2}))
    def squares() -> list[int]:
        return square.map(range(8)).result()

The runner itself is :class:`otelflow.integrations.dask.DaskTaskRunner`; this package re-exports it.
"""

try:
    import distributed as _distributed  # noqa: F401  (fail here, with the fix, rather than on first use)
except ImportError as _exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise ImportError(
        "otelflow_dask needs Dask (the 'distributed' package), which is not installed: "
        "pip install 'otelflow[dask]'"
    ) from _exc

from otelflow._version import __version__
from otelflow_dask.task_runners import DaskTaskRunner
from otelflow_dask.utils import get_async_dask_client, get_dask_client

__all__ = ["DaskTaskRunner", "__version__", "get_async_dask_client", "get_dask_client"]

"""Dask clients for work inside a run (Prefect's ``prefect_dask.utils``): Dask collections on the whole cluster.

A task run on a Dask worker has no client of its own: without one, ``dask.dataframe`` work inside it runs on
that single worker. :func:`get_dask_client` (or :func:`get_async_dask_client` in async code) connects a
temporary client to the scheduler the run is using.

Example::

    import dask
    from otelflow import flow, task
    from otelflow_dask import DaskTaskRunner, get_dask_client

    @task
    def summarize():
        with get_dask_client(timeout="120s") as client:
            df = dask.datasets.timeseries("2000", "2001", partition_freq="4w")
            return client.compute(df.describe()).result()

    @flow(task_runner=DaskTaskRunner())
    def dask_flow():
        return summarize.submit().result()
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any

from distributed import Client

from otelflow.context import FlowRunContext, TaskRunContext
from otelflow.integrations.dask import DaskTaskRunner

__all__ = ["get_async_dask_client", "get_dask_client"]

Timeout = int | float | str | datetime.timedelta


def _scheduler_address(client: Client) -> str:
    scheduler = client.scheduler
    if scheduler is None:  # a client that was closed
        raise RuntimeError("The Dask client of this run is not connected to a scheduler.")
    return str(scheduler.address)


def _client_kwargs(asynchronous: bool, timeout: Timeout | None, client_kwargs: dict[str, Any]) -> dict[str, Any]:
    """``distributed.Client`` arguments for where this is called: a task run, a flow run, or neither."""
    task_ctx = TaskRunContext.get()
    flow_ctx = FlowRunContext.get()
    kwargs: dict[str, Any]
    if task_ctx is not None:
        # On a worker, the worker's own client knows the scheduler (the flow process's client elsewhere).
        from distributed import get_client

        kwargs = {"address": _scheduler_address(get_client())}
        if task_ctx.task is not None:
            asynchronous = task_ctx.task.isasync
    elif flow_ctx is not None:
        runner = flow_ctx.task_runner
        if not isinstance(runner, DaskTaskRunner):
            raise RuntimeError(
                f"get_dask_client() in a flow run needs the flow to run on Dask, but its task runner is "
                f"{type(runner).__name__}: use @flow(task_runner=DaskTaskRunner(...))."
            )
        kwargs = dict(runner.client_kwargs)
        kwargs["address"] = _scheduler_address(runner.client)
        if flow_ctx.flow is not None:
            asynchronous = flow_ctx.flow.isasync
    else:
        kwargs = {"address": None}  # outside any run: a new local cluster, for trying code out
    kwargs["asynchronous"] = asynchronous
    if timeout is not None:
        kwargs["timeout"] = timeout
    kwargs.update(client_kwargs)
    return kwargs


@contextlib.contextmanager
def get_dask_client(timeout: Timeout | None = None, **client_kwargs: Any) -> Iterator[Client]:
    """A temporary synchronous ``distributed.Client`` connected to the current run's scheduler.

    In a task run: the scheduler of the worker running it. In a flow run: the scheduler of its
    ``DaskTaskRunner`` (with the runner's ``client_kwargs``). Outside a run: a new local cluster.
    ``timeout`` (seconds or a Dask duration such as ``"120s"``) bounds connecting; ``client_kwargs`` go to
    ``distributed.Client`` and win over inherited ones. In async code use :func:`get_async_dask_client`.
    """
    with Client(**_client_kwargs(False, timeout, client_kwargs)) as client:
        yield client


@contextlib.asynccontextmanager
async def get_async_dask_client(timeout: Timeout | None = None, **client_kwargs: Any) -> AsyncIterator[Client]:
    """A temporary asynchronous ``distributed.Client`` connected to the current run's scheduler.

    The async twin of :func:`get_dask_client` (same rules for which scheduler and arguments)::

        @task
        async def summarize():
            async with get_async_dask_client() as client:
                return await client.compute(df.describe())
    """
    async with Client(**_client_kwargs(True, timeout, client_kwargs)) as client:
        yield client

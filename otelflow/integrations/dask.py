"""``DaskTaskRunner``: run a flow's submitted and mapped task runs on a Dask cluster (extra ``otelflow[dask]``).

Example::

    from otelflow import flow, task
    from otelflow.integrations.dask import DaskTaskRunner

    @task
    def square(x: int) -> int:
        return x * x

    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1}))
    def squares() -> list[int]:
        return square.map(range(8)).result()

What crosses to a worker, per task run: the task object (Dask ships the user's function with cloudpickle,
as it does for any function), its parameters with upstream futures replaced by their final states, the run
identity (task run id, name, map index) and the run context as the ``serialize_context()`` header dict (see
:mod:`otelflow._internal.runs.remote`, shared with :class:`~otelflow.task_runners.ProcessPoolTaskRunner`).
Context objects are never pickled: on the worker the carrier is hydrated, so the task span is a child of the
submitting span (the flow span) in the same trace, linked to the spans of its inputs, and ``get_run_logger()``
records correlate with the flow run. Workers configure telemetry from their own ``OTEL_*`` environment (a
``LocalCluster``'s workers inherit the flow process's), and flush it before returning each run
(``flush_telemetry=True``, the default), so no span is lost when the cluster shuts down right after the
flow; see docs/propagation.md for what that costs per task.

What comes back: a plain dict (state type, name, message, attempts, result or exception) turned into the
final :class:`~otelflow.states.State` of the returned :class:`~otelflow.futures.TaskRunFuture`. An exception
that cannot be unpickled on the flow side is replaced by a ``RuntimeError`` carrying its type and message.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, Self

from otelflow._internal.runs.remote import RemoteRun, RemoteRuns, RemoteTaskRunner, WorkOrder, run_on_worker
from otelflow.task_runners import TaskRunner

if TYPE_CHECKING:
    from distributed import Client


__all__ = ["DaskTaskRunner"]


class DaskTaskRunner(RemoteTaskRunner, TaskRunner):
    """Runs task runs on Dask: a cluster you pass, a scheduler ``address``, or a new ``LocalCluster``.

    - ``cluster``: a ``distributed`` cluster object (``LocalCluster``, ``SSHCluster``, a dask-jobqueue or
      dask-kubernetes cluster...); used, never closed.
    - ``address``: a running scheduler (``"tcp://10.0.0.5:8786"``); connected to, never closed.
    - neither: a ``distributed.LocalCluster(**cluster_kwargs)`` is started when the flow run starts and
      closed when it ends (worker processes by default; ``{"processes": False}`` for threads).
    - ``client_kwargs``: passed to ``distributed.Client``.
    - ``flush_telemetry``: each worker exports its telemetry before a task run returns (default True).
      Turn it off for many tiny tasks on long-lived workers; spans then leave on the worker's batch
      schedule and can be lost if a worker is killed.

    Each flow run gets its own client (the runner is duplicated per flow run); ``.map`` sends all runs to
    the scheduler in one batch when they do not wait for upstream futures.
    """

    def __init__(
        self,
        cluster: Any = None,
        address: str | None = None,
        cluster_kwargs: dict[str, Any] | None = None,
        client_kwargs: dict[str, Any] | None = None,
        *,
        flush_telemetry: bool = True,
    ) -> None:
        if cluster is not None and address is not None:
            raise ValueError("DaskTaskRunner takes a cluster or an address, not both; pass one of them.")
        if cluster_kwargs and (cluster is not None or address is not None):
            raise ValueError("cluster_kwargs configure the LocalCluster DaskTaskRunner starts itself; "
                             "drop them when passing cluster= or address=.")
        self.cluster = cluster
        self.address = address
        self.cluster_kwargs = dict(cluster_kwargs or {})
        self.client_kwargs = dict(client_kwargs or {})
        self.flush_telemetry = flush_telemetry
        self._client: Client | None = None
        self._own_cluster: Any = None
        self._lock = threading.Lock()
        self._runs = RemoteRuns(self._dispatch, "Dask")
        self._dask_futures: dict[str, Any] = {}  # key -> dask Future: Dask forgets results nobody holds

    def duplicate(self) -> Self:
        return type(self)(
            cluster=self.cluster,
            address=self.address,
            cluster_kwargs=self.cluster_kwargs,
            client_kwargs=self.client_kwargs,
            flush_telemetry=self.flush_telemetry,
        )

    @property
    def client(self) -> Client:
        """The ``distributed.Client`` of the current flow run (only while the runner is entered)."""
        if self._client is None:
            raise RuntimeError(
                "DaskTaskRunner is not started: it starts when its flow run starts; use it as "
                "@flow(task_runner=DaskTaskRunner(...)) or inside `with runner:`."
            )
        return self._client

    def __enter__(self) -> Self:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("DaskTaskRunner needs Dask: pip install 'otelflow[dask]'.") from exc
        if self._client is not None:
            raise RuntimeError("DaskTaskRunner is already started; each flow run uses runner.duplicate().")
        from otelflow.logging import get_logger

        logger = get_logger("task_runner.dask")  # Prefect's lines, under otelflow's logger names
        if self.address is not None:
            logger.info("Connecting to an existing Dask cluster at %s", self.address)
            self._client = Client(self.address, **self.client_kwargs)
        elif self.cluster is not None:
            logger.info("Connecting to existing Dask cluster %s", self.cluster)
            self._client = Client(self.cluster, **self.client_kwargs)
        else:
            logger.info("Creating a new Dask cluster with `%s.%s`", LocalCluster.__module__, LocalCluster.__qualname__)
            self._own_cluster = LocalCluster(**self.cluster_kwargs)
            try:
                self._client = Client(self._own_cluster, **self.client_kwargs)
            except BaseException:
                self._own_cluster.close()
                self._own_cluster = None
                raise
        if self._client.dashboard_link:
            logger.info("The Dask dashboard is available at %s", self._client.dashboard_link)
        return self

    def __exit__(self, *exc_info: object) -> None:
        # The flow span must outlive its task runs: wait for every run still in flight, as the thread pool does.
        self._runs.wait()
        client, self._client = self._client, None
        cluster, self._own_cluster = self._own_cluster, None
        try:
            if client is not None:
                client.close()
        finally:
            if cluster is not None:
                cluster.close()

    # submitting ---------------------------------------------------------------------------------------

    def _require_started(self, what: str) -> None:
        self.client  # noqa: B018 - fail at submit time, with the message, when the runner is not started

    def _dispatch(self, outgoing: list[tuple[RemoteRun, WorkOrder]]) -> None:
        """Hand ready runs to the scheduler in one batch (each run's answer comes back in :meth:`_complete`)."""
        keys = [f"{run.task.name}-{run.task_run.id.hex}" for run, _ in outgoing]
        dask_futures = self.client.map(
            functools.partial(run_on_worker, flush=self.flush_telemetry),
            [order for _, order in outgoing],
            key=keys,
            pure=False,
        )
        with self._lock:
            self._dask_futures.update(zip(keys, dask_futures, strict=True))
        for (run, _), key, dask_future in zip(outgoing, keys, dask_futures, strict=True):
            dask_future.add_done_callback(functools.partial(self._complete, run, key))

    def _complete(self, run: RemoteRun, key: str, dask_future: Any) -> None:
        """Dask callback thread: turn the worker's answer into the run's final State."""
        try:
            self._runs.complete(run, dask_future.result)
        finally:
            with self._lock:
                self._dask_futures.pop(key, None)

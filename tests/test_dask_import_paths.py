"""``otelflow_dask``: Prefect's ``prefect_dask`` import paths (``DaskTaskRunner``, ``get_dask_client``...),
shipped in the otelflow distribution, with a clear error when the ``[dask]`` extra is missing."""

from __future__ import annotations

import asyncio
import subprocess
import tomllib

import pytest
from conftest import PYTHON, REPO_ROOT, subprocess_env

pytest.importorskip("distributed")

import dask.bag

import otelflow_dask
from otelflow import flow, task
from otelflow.context import FlowRunContext
from otelflow.integrations.dask import DaskTaskRunner as IntegrationRunner
from otelflow.task_runners import ThreadPoolTaskRunner
from otelflow_dask import DaskTaskRunner, get_async_dask_client, get_dask_client
from otelflow_dask.utils import _client_kwargs


def test_prefect_dask_names_are_otelflows_runner() -> None:
    from otelflow_dask.task_runners import DaskTaskRunner as FromTaskRunners

    assert DaskTaskRunner is FromTaskRunners is IntegrationRunner
    assert set(otelflow_dask.__all__) == {"DaskTaskRunner", "__version__", "get_async_dask_client", "get_dask_client"}
    import otelflow

    assert otelflow_dask.__version__ == otelflow.__version__


def test_the_distribution_ships_the_package() -> None:
    import setuptools  # type: ignore[import-untyped]

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = set(setuptools.find_packages(where=str(REPO_ROOT), include=config["packages"]["find"]["include"]))
    assert {"otelflow", "otelflow_dask", "otelflow_redis", "otelflow.runtime", "otelflow.testing",
            "otelflow.integrations", "otelflow.locking"} <= packages
    assert not {p for p in packages if p.split(".")[0] not in {"otelflow", "otelflow_dask", "otelflow_redis"}}
    for extra_path in ("otelflow_dask", "otelflow_redis"):  # Prefect's prefect_dask / prefect_redis import paths
        assert "py.typed" in config["package-data"][extra_path]
        assert (REPO_ROOT / extra_path / "py.typed").exists()


@pytest.mark.parametrize("statement", [
    "import otelflow_dask",
    "from otelflow_dask.task_runners import DaskTaskRunner",
    "from otelflow_dask.utils import get_dask_client",
])
def test_without_the_dask_extra_the_import_error_says_what_to_install(statement: str) -> None:
    script = f"import sys\nsys.modules['distributed'] = None  # as if not installed\n{statement}\n"
    proc = subprocess.run([PYTHON, "-c", script], capture_output=True, text=True, env=subprocess_env(), timeout=60)
    assert proc.returncode != 0
    assert "ImportError: otelflow_dask needs Dask" in proc.stderr
    assert "pip install 'otelflow[dask]'" in proc.stderr


def test_client_arguments_outside_a_run_and_in_a_flow_without_dask() -> None:
    assert _client_kwargs(False, None, {}) == {"address": None, "asynchronous": False}
    assert _client_kwargs(True, "5s", {"name": "x"}) == {"address": None, "asynchronous": True, "timeout": "5s",
                                                         "name": "x"}

    @flow(task_runner=ThreadPoolTaskRunner(max_workers=1))
    def threads() -> None:
        with get_dask_client():
            pass

    with pytest.raises(RuntimeError, match=r"needs the flow to run on Dask.*ThreadPoolTaskRunner"):
        threads()


@task
def total_on_the_cluster(n: int) -> int:
    with get_dask_client(timeout="30s") as client:
        return int(client.compute(dask.bag.from_sequence(range(n), npartitions=3).sum()).result())


@task
async def atotal_on_the_cluster(n: int) -> int:
    async with get_async_dask_client() as client:
        return int(await client.compute(dask.bag.from_sequence(range(n), npartitions=2).sum()))


@pytest.mark.slow
def test_clients_in_flow_and_task_runs_reach_the_runners_cluster() -> None:
    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False}))
    def pipeline() -> tuple[int, int, int, str]:
        ctx = FlowRunContext.get()
        assert ctx is not None and isinstance(ctx.task_runner, DaskTaskRunner)
        with get_dask_client() as client:
            in_flow = int(client.compute(dask.bag.from_sequence(range(4)).sum()).result())
            assert client.scheduler is not None and ctx.task_runner.client.scheduler is not None
            address = str(client.scheduler.address)
            assert address == ctx.task_runner.client.scheduler.address  # the runner's cluster
        return total_on_the_cluster.submit(10).result(), atotal_on_the_cluster.submit(5).result(), in_flow, address

    from_task, from_async_task, in_flow, address = pipeline()
    assert (from_task, from_async_task, in_flow) == (45, 10, 6)
    assert address.startswith(("inproc://", "tcp://"))


@pytest.mark.slow
def test_an_async_flow_gets_an_asynchronous_client() -> None:
    @flow(task_runner=DaskTaskRunner(cluster_kwargs={"n_workers": 1, "processes": False}))
    async def apipeline() -> int:
        async with get_async_dask_client() as client:
            assert client.asynchronous
            return int(await client.compute(dask.bag.from_sequence(range(3)).sum()))

    assert asyncio.run(apipeline()) == 3


def test_the_installed_distribution_provides_the_package() -> None:
    """Through the installed (editable) distribution, not the repository on ``sys.path``."""
    env = {k: v for k, v in subprocess_env().items() if k != "PYTHONPATH"}
    proc = subprocess.run([PYTHON, "-c", "from otelflow_dask import DaskTaskRunner; print(DaskTaskRunner.__module__)"],
                          capture_output=True, text=True, env=env, timeout=60, cwd="/")
    assert proc.returncode == 0, "run `pip install -e .` after adding a package:\n" + proc.stderr
    assert proc.stdout.strip() == "otelflow.integrations.dask"

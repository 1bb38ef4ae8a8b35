"""State hooks: ``on_completion``, ``on_failure``, ``on_crashed``, ``on_cancellation``, ``on_running`` (Prefect 3).

Prefect's rules (flow_engine.py / task_engine.py ``call_hooks``): hooks are lists of callables taking
``(flow, flow_run, state)`` / ``(task, task_run, state)``, sync or async; the final state's hooks run inside the
run (its logger correlates) before the ``Finished in state`` line; a raising hook is logged and never changes the
run's state; ``on_running`` runs on each attempt. otelflow records each call as a ``hook`` span event.
"""

from __future__ import annotations

import asyncio
import functools
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import pytest
from conftest import PYTHON, subprocess_env

from otelflow import flow, get_run_logger, task
from otelflow import semconv as sc
from otelflow.context import FlowRun, TaskRun
from otelflow.flows import Flow
from otelflow.states import Completed, Failed, State
from otelflow.tasks import Task


def _events(span: Any, name: str = sc.EVENT_HOOK) -> list[dict[str, Any]]:
    return [dict(e.attributes or {}) for e in span.events if e.name == name]


def test_flow_and_task_hooks_get_prefects_arguments_in_prefects_order(captured: Any) -> None:
    calls: list[tuple[Any, ...]] = []

    def flow_hook(flow_: Any, flow_run: Any, state: State[Any]) -> None:
        calls.append(("flow", type(flow_), type(flow_run), state.name))

    def task_hook(task_: Any, task_run: Any, state: State[Any]) -> None:
        calls.append(("task", type(task_), type(task_run), state.name))

    @task(on_completion=[task_hook], on_failure=[task_hook], on_running=[task_hook])
    def double(x: int) -> int:
        return x * 2

    @flow(on_completion=[flow_hook], on_failure=[flow_hook], on_running=[flow_hook])
    def pipeline() -> int:
        return double(21)

    assert pipeline() == 42
    assert calls == [
        ("flow", Flow, FlowRun, "Running"),
        ("task", Task, TaskRun, "Running"),
        ("task", Task, TaskRun, "Completed"),
        ("flow", Flow, FlowRun, "Completed"),
    ]
    task_span = captured.task_spans()[0]
    assert _events(task_span) == [
        {sc.HOOK_NAME: "task_hook", sc.HOOK_KIND: "on_running", sc.HOOK_STATE: "Running", sc.HOOK_OUTCOME: "completed"},
        {sc.HOOK_NAME: "task_hook", sc.HOOK_KIND: "on_completion", sc.HOOK_STATE: "Completed",
         sc.HOOK_OUTCOME: "completed"},
    ]


def test_the_hook_sees_the_final_state_and_the_run_it_belongs_to(captured: Any) -> None:
    seen: dict[str, Any] = {}

    def on_failure(task_: Any, task_run: Any, state: State[Any]) -> None:
        seen.update(task=task_, run=task_run, state=state, same_state=task_run.state is state)

    @task(on_failure=[on_failure])
    def broken() -> None:
        raise ValueError("no rows")

    state = broken(return_state=True)
    assert seen["task"] is broken
    assert seen["state"] is state and seen["same_state"]
    assert state.state_details.task_run_id == seen["run"].id
    assert seen["state"].message == "Task run encountered an exception ValueError: no rows"


def test_a_raising_hook_is_logged_and_never_changes_the_state(captured: Any, settings_env: Any) -> None:
    settings_env(LOG_RUN_EVENTS="true")
    ran: list[str] = []

    def bad_hook(flow_: Any, flow_run: Any, state: State[Any]) -> None:
        raise RuntimeError("hook is broken")

    def good_hook(flow_: Any, flow_run: Any, state: State[Any]) -> None:
        ran.append(state.name)

    @flow(on_completion=[bad_hook, good_hook])
    def fine() -> str:
        return "value"

    state = fine(return_state=True)
    assert state.is_completed() and state.result() == "value"
    assert ran == ["Completed"]  # the hook after the raising one still runs
    bodies = [(r.log_record.severity_text, str(r.log_record.body)) for r in captured.logs]
    assert bodies[1:6] == [
        ("INFO", "Running hook 'bad_hook' in response to entering state 'Completed'"),
        ("ERROR", "An error was encountered while running hook 'bad_hook'"),
        ("INFO", "Running hook 'good_hook' in response to entering state 'Completed'"),
        ("INFO", "Hook 'good_hook' finished running successfully"),
        ("INFO", "Finished in state Completed()"),
    ]
    failure = next(r.log_record for r in captured.logs if "An error was encountered" in str(r.log_record.body))
    assert "hook is broken" in failure.attributes[sc.EXCEPTION_STACKTRACE]
    (flow_span,) = captured.flow_spans()
    assert flow_span.status.is_ok or flow_span.status.status_code.name == "UNSET"
    bad = _events(flow_span)[0]
    assert bad[sc.HOOK_OUTCOME] == "failed" and bad[sc.EXCEPTION_TYPE] == "RuntimeError"
    assert bad[sc.EXCEPTION_MESSAGE] == "hook is broken"


def test_hooks_log_through_the_run_logger_of_their_run(captured: Any) -> None:
    def note(task_: Any, task_run: Any, state: State[Any]) -> None:
        get_run_logger().info("hook for %s", task_run.name)

    @task(on_completion=[note], task_run_name="the-task-run")
    def work() -> int:
        return 1

    @flow
    def pipeline() -> int:
        return work()

    pipeline()
    (record,) = [r.log_record for r in captured.logs]
    assert str(record.body) == "hook for the-task-run"
    assert record.span_id == captured.task_spans()[0].context.span_id


def test_decorator_form_and_with_options_carry_hooks(captured: Any) -> None:
    calls: list[str] = []

    @flow
    def pipeline(fail: bool) -> None:
        if fail:
            raise ValueError("asked to fail")

    @pipeline.on_failure
    def failed(flow_: Any, flow_run: Any, state: State[Any]) -> None:
        calls.append(f"failure:{flow_.name}")

    @pipeline.on_completion
    def completed(flow_: Any, flow_run: Any, state: State[Any]) -> None:
        calls.append(f"completion:{flow_.name}")

    pipeline(False)
    pipeline(True, return_state=True)
    renamed = pipeline.with_options(name="renamed")
    renamed(False)
    replaced = pipeline.with_options(on_completion=[lambda f, r, s: calls.append("replaced")])
    replaced(False)
    assert calls == ["completion:pipeline", "failure:pipeline", "completion:renamed", "replaced"]


def test_hooks_on_running_run_on_each_attempt_and_failure_once(captured: Any) -> None:
    calls: list[tuple[str, int]] = []
    attempts = {"n": 0}

    def running(task_: Any, task_run: Any, state: State[Any]) -> None:
        calls.append((state.name, task_run.run_count))

    def failure(task_: Any, task_run: Any, state: State[Any]) -> None:
        calls.append((state.name, task_run.run_count))

    @task(retries=2, on_running=[running], on_failure=[failure])
    def flaky() -> None:
        attempts["n"] += 1
        raise ValueError(f"attempt {attempts['n']}")

    flaky(return_state=True)
    assert calls == [("Running", 1), ("Retrying", 2), ("Retrying", 3), ("Failed", 3)]


async def test_async_hooks_are_awaited_in_sync_and_async_runs(captured: Any) -> None:
    calls: list[str] = []

    async def async_hook(obj: Any, run: Any, state: State[Any]) -> None:
        await asyncio.sleep(0)
        calls.append(f"{obj.name}:{state.name}")

    @task(on_completion=[async_hook])
    def sync_task() -> int:
        return 1

    @task(on_completion=[async_hook])
    async def async_task() -> int:
        return 2

    @flow(on_completion=[async_hook])
    async def async_flow() -> int:
        return await async_task() + sync_task()

    assert await async_flow() == 3
    assert calls == ["async_task:Completed", "sync_task:Completed", "async-flow:Completed"]

    @flow(on_failure=[async_hook])
    def sync_flow() -> None:
        raise ValueError("x")

    calls.clear()
    await asyncio.to_thread(sync_flow, return_state=True)
    assert calls == ["sync-flow:Failed"]


def test_a_flow_returning_a_failed_state_calls_on_failure_not_on_completion(captured: Any) -> None:
    calls: list[str] = []

    @flow(on_completion=[lambda f, r, s: calls.append("completion")],
          on_failure=[lambda f, r, s: calls.append(f"failure:{s.message}")])
    def gives_up() -> State[Any]:
        return Failed(message="nothing to do")

    assert gives_up(return_state=True).is_failed()
    assert calls == ["failure:nothing to do"]


def test_hook_names_follow_prefects_rule(captured: Any, settings_env: Any) -> None:
    settings_env(LOG_RUN_EVENTS="true")

    def named(obj: Any, run: Any, state: State[Any], suffix: str = "") -> None:
        pass

    class CallableHook:
        def __call__(self, obj: Any, run: Any, state: State[Any]) -> None:
            pass

    @task(on_completion=[functools.partial(named, suffix="!"), CallableHook()])
    def work() -> None:
        return None

    work()
    names = [e[sc.HOOK_NAME] for e in _events(captured.task_spans()[0])]
    assert names == ["named", "CallableHook"]


def test_hook_options_are_checked_with_prefects_messages() -> None:
    def fn() -> None:
        return None

    with pytest.raises(TypeError, match=r"Expected iterable for 'on_completion'; got function instead"):
        task(on_completion=fn)(fn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"Expected callables in 'on_failure'; got int instead"):
        flow(on_failure=[1])(fn)  # type: ignore[list-item]
    with pytest.raises(TypeError, match=r"Expected iterable for 'on_crashed'"):
        flow(on_crashed=fn)(fn)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unknown options"):
        task(on_crashed=[fn])(fn)  # type: ignore[call-overload]


def test_no_hook_no_event(captured: Any) -> None:
    @task
    def plain() -> int:
        return 1

    @flow
    def pipeline() -> int:
        return plain()

    pipeline()
    assert all(not _events(span) for span in captured.spans)


def test_user_states_returned_by_a_task_reach_the_hooks(captured: Any) -> None:
    seen: list[State[Any]] = []

    @task(on_completion=[lambda t, r, s: seen.append(s)])
    def skip() -> State[Any]:
        return Completed(message="No work to do")

    skip()
    assert [s.message for s in seen] == ["No work to do"]


def test_on_crashed_runs_when_a_termination_signal_ends_the_flow(tmp_path: Path) -> None:
    script = tmp_path / "crash.py"
    marker = tmp_path / "crashed.txt"
    script.write_text(textwrap.dedent(f"""
        import os, signal
        from otelflow import flow

        def on_crashed(flow, flow_run, state):
            with open({str(marker)!r}, "w") as out:
                out.write(f"{{flow.name}} {{state.name}} {{state.message}}")

        @flow(on_crashed=[on_crashed])
        def doomed():
            os.kill(os.getpid(), signal.SIGTERM)

        doomed()
    """))
    proc = subprocess.run([PYTHON, str(script)], env=subprocess_env(OTELFLOW_HOME=str(tmp_path / "home")),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -15, proc.stderr
    assert marker.read_text() == "doomed Crashed Execution was aborted by a termination signal."

"""Pause a flow run until someone resumes it, optionally with typed input (Prefect's ``flow_runs`` API).

otelflow has no orchestration server: the pause is a record in the shared store (``run:<flow-run-id>``)
that :func:`resume_flow_run` -- from any process that shares ``OTELFLOW_STORE_URL`` -- flips to resumed.
While it waits, the run is Paused (``flow_run.state`` and a ``Paused`` event on the flow span, then
``Resumed``, state ``Running``), exactly like :func:`otelflow.input.receive_input`.

Example::

    class Approval(RunInput):
        approved: bool
        comments: str = ""

    @flow
    def publish(doc_id: str):
        approval = pause_flow_run(wait_for_input=Approval, timeout=3600)   # blocks until resumed
        if approval.approved:
            ...

    # another process:
    resume_flow_run(flow_run_id, run_input={"approved": True})

With ``wait_for_input``, the model's JSON schema is stored next to the pause (key ``paused-<n>-schema``)
so a resumer can see what to send; ``resume_flow_run`` checks ``run_input`` against it (required and
unknown fields, basic JSON types) and the flow validates it fully with the model on resume.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import threading
import time
import uuid
from typing import Any

from otelflow import semconv
from otelflow.context import FlowRunContext, TaskRunContext
from otelflow.exceptions import FlowPauseTimeout, NotPausedError
from otelflow.input.actions import FlowRunInputExists, create_flow_run_input, ensure_flow_run_id
from otelflow.input.run_input import (
    AutomaticRunInput,
    Keyset,
    _Paused,
    keyset_from_base_key,
    run_input_subclass_from_type,
)
from otelflow.stores import get_store, wait_for

__all__ = [
    "FlowPauseTimeout",
    "NotPausedError",
    "apause_flow_run",
    "aresume_flow_run",
    "asuspend_flow_run",
    "pause_flow_run",
    "resume_flow_run",
    "suspend_flow_run",
]

_RECORD_KEY = "pause"
_PAUSED, _RESUMED, _TIMED_OUT = "PAUSED", "RESUMED", "TIMED_OUT"


_pause_counts: dict[uuid.UUID, int] = {}
_pause_counts_lock = threading.Lock()


def _next_pause_key(flow_run_id: uuid.UUID) -> str:
    with _pause_counts_lock:
        if len(_pause_counts) > 10_000:  # one small int per flow run; forget the oldest runs
            for old in list(_pause_counts)[:5_000]:
                del _pause_counts[old]
        _pause_counts[flow_run_id] = _pause_counts.get(flow_run_id, 0) + 1
        return str(_pause_counts[flow_run_id])


def _namespace(flow_run_id: uuid.UUID) -> str:
    return f"run:{flow_run_id}"


def _read_record(flow_run_id: uuid.UUID) -> dict[str, Any] | None:
    text = get_store().get(_namespace(flow_run_id), _RECORD_KEY)
    if text is None:
        return None
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _write_record(flow_run_id: uuid.UUID, record: dict[str, Any]) -> None:
    get_store().put(_namespace(flow_run_id), _RECORD_KEY, json.dumps(record, separators=(",", ":")))


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _pause(
    wait_for_input: Any,
    timeout: float | None,
    poll_interval: float,
    key: str | None,
    verb: str,
    stop: threading.Event | None = None,
) -> Any:
    from otelflow.logging import get_run_logger

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError(f"Flow runs can only be {verb} from within a flow run.")
    if timeout is not None and timeout <= 0:
        raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}.")
    flow_run_id = context.flow_run.id
    pause_key = key or _next_pause_key(flow_run_id)
    input_cls = run_input_subclass_from_type(wait_for_input) if wait_for_input is not None else None
    keyset: Keyset | None = keyset_from_base_key(f"paused-{pause_key}") if input_cls is not None else None

    existing = _read_record(flow_run_id)
    if not (existing and existing.get("pause_key") == pause_key and existing.get("state") == _RESUMED):
        if input_cls is not None and keyset is not None:
            input_cls.save(keyset, flow_run_id)
        _write_record(flow_run_id, {
            "state": _PAUSED,
            "pause_key": pause_key,
            "keyset": keyset.roles if keyset is not None else None,
            "deadline": time.time() + timeout if timeout is not None else None,
        })
        logger = get_run_logger()
        logger.info("Pausing flow, execution will continue when this flow run is resumed.")
        paused = _Paused(flow_run_id, {semconv.PAUSE_KEY: pause_key}, timeout, message="Paused")

        def resumed() -> bool | None:
            if stop is not None and stop.is_set():
                return False  # the awaiting coroutine is gone (cancelled): stop waiting
            record = _read_record(flow_run_id) or {}
            return True if record.get("pause_key") == pause_key and record.get("state") == _RESUMED else None

        try:
            paused.pause()
            outcome = wait_for(get_store(), _namespace(flow_run_id), resumed, timeout, poll_interval)
            if outcome is False:
                raise asyncio.CancelledError("The pause was cancelled.")
            if outcome is None:
                record = _read_record(flow_run_id) or {}
                if not (record.get("pause_key") == pause_key and record.get("state") == _RESUMED):
                    _write_record(flow_run_id, {**record, "state": _TIMED_OUT})
                    raise FlowPauseTimeout("Flow run was paused and never resumed.")
        finally:
            paused.resume()
        logger.info("Resuming flow run execution!")
    if input_cls is None or keyset is None:
        return None
    loaded = input_cls.load(keyset, flow_run_id)
    return loaded.value if isinstance(loaded, AutomaticRunInput) else loaded


def pause_flow_run(
    wait_for_input: Any = None, timeout: float | None = 3600, poll_interval: float = 10, key: str | None = None
) -> Any:
    """Block the current flow run until :func:`resume_flow_run` resumes it; return the input it was sent.

    ``wait_for_input``: a :class:`~otelflow.input.RunInput` subclass, a pydantic model or any type
    pydantic validates; the resume must then carry ``run_input`` and this returns it validated
    (:class:`~otelflow.input.InvalidRunInput` names the key and sender when it does not validate).
    ``timeout``: seconds before :class:`FlowPauseTimeout` is raised (which fails the run unless caught);
    ``poll_interval``: most seconds between two reads of the pause record (writes wake the waiter sooner);
    ``key``: the pause's name (default: ``1``, ``2``... per run); a pause whose key was already resumed
    returns at once. Called from async code (a running event loop) it returns a coroutine, as in Prefect.
    """
    if _in_event_loop():
        return apause_flow_run(wait_for_input, timeout, poll_interval, key)
    return _pause(wait_for_input, timeout, poll_interval, key, "paused")


async def apause_flow_run(
    wait_for_input: Any = None, timeout: float | None = 3600, poll_interval: float = 10, key: str | None = None
) -> Any:
    """:func:`pause_flow_run` waiting in a worker thread, so the event loop keeps running."""
    return await _wait_off_loop(wait_for_input, timeout, poll_interval, key, "paused")


def suspend_flow_run(
    wait_for_input: Any = None,
    flow_run_id: uuid.UUID | str | None = None,
    timeout: float | None = None,
    key: str | None = None,
) -> Any:
    """Prefect's suspend: without an orchestrator to resubmit the run later, otelflow keeps the process
    and waits like :func:`pause_flow_run`, with no timeout by default. Only the current run can be suspended.
    """
    _check_suspend(flow_run_id)
    if _in_event_loop():
        return asuspend_flow_run(wait_for_input, flow_run_id, timeout, key)
    return _pause(wait_for_input, timeout, 10, key, "suspended")


async def asuspend_flow_run(
    wait_for_input: Any = None,
    flow_run_id: uuid.UUID | str | None = None,
    timeout: float | None = None,
    key: str | None = None,
) -> Any:
    """:func:`suspend_flow_run` waiting in a worker thread."""
    _check_suspend(flow_run_id)
    return await _wait_off_loop(wait_for_input, timeout, 10, key, "suspended")


async def _wait_off_loop(wait_for_input: Any, timeout: float | None, poll_interval: float, key: str | None,
                         verb: str) -> Any:
    """Run :func:`_pause` in a daemon thread of its own and await it; a cancelled await stops the wait.

    Not ``asyncio.to_thread``: ``asyncio.run`` joins the default executor's threads when it ends, so a SIGTERM
    to a paused async flow would keep the process alive until the pause timed out (an hour by default).
    """
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Any] = loop.create_future()
    stop = threading.Event()
    context = contextvars.copy_context()

    def settle(ok: bool, value: Any) -> None:
        if not done.done():
            if ok:
                done.set_result(value)
            else:
                done.set_exception(value)

    def wait() -> None:
        try:
            outcome = (True, context.run(_pause, wait_for_input, timeout, poll_interval, key, verb, stop))
        except BaseException as exc:
            outcome = (False, exc)
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody awaits the outcome any more
            loop.call_soon_threadsafe(settle, *outcome)

    threading.Thread(target=wait, name=f"otelflow-{verb}", daemon=True).start()
    try:
        return await done
    finally:
        stop.set()


def _check_suspend(flow_run_id: uuid.UUID | str | None) -> None:
    task_ctx = TaskRunContext.get()
    if flow_run_id is None and task_ctx is not None and task_ctx.task_run is not None:
        raise RuntimeError("Cannot suspend task runs.")
    context = FlowRunContext.get()
    current = context.flow_run.id if context is not None and context.flow_run is not None else None
    if flow_run_id is not None and ensure_flow_run_id(flow_run_id) != current:
        raise RuntimeError(
            "otelflow cannot suspend another flow run: there is no orchestrator to stop it. Have that flow call "
            "pause_flow_run() or receive_input(), and resume it or send it input from here."
        )


def _check_against_schema(value: Any, schema: Any) -> None:
    """The cheap part of JSON-schema validation (the flow validates fully with its model)."""
    if not isinstance(schema, dict) or schema.get("type") != "object":
        return
    if not isinstance(value, dict):
        raise ValueError(f"run_input must be a JSON object (dict) for this pause, got {type(value).__name__}.")
    properties = schema.get("properties") or {}
    missing = [name for name in schema.get("required") or () if name not in value]
    if missing:
        raise ValueError(f"run_input is missing required fields {missing}; the flow expects fields "
                         f"{sorted(properties)}.")
    if schema.get("additionalProperties") is False:
        unknown = sorted(set(value) - set(properties))
        if unknown:
            raise ValueError(f"run_input has unknown fields {unknown}; the flow expects {sorted(properties)}.")
    kinds: dict[str, type | tuple[type, ...]] = {
        "string": str, "integer": int, "number": (int, float), "boolean": bool, "array": list, "object": dict,
    }
    for name, prop in properties.items():
        kind = prop.get("type") if isinstance(prop, dict) else None
        expected = kinds.get(kind) if isinstance(kind, str) else None
        if name not in value or expected is None:
            continue
        is_bool = isinstance(value[name], bool)
        if not isinstance(value[name], expected) or (is_bool and kind in ("integer", "number")):
            raise ValueError(f"run_input field {name!r} must be a JSON {kind}, got {value[name]!r}.")


def resume_flow_run(flow_run_id: uuid.UUID | str, run_input: dict[str, Any] | None = None) -> None:
    """Resume a paused flow run (from any process sharing the store), with ``run_input`` when it waits
    for input. Raises :class:`NotPausedError` when it is not paused, :class:`FlowPauseTimeout` when the
    pause already timed out, ``ValueError`` when ``run_input`` is missing, unexpected or does not fit the
    stored schema, and :class:`~otelflow.input.FlowRunInputExists` when someone else resumed it first.
    """
    run_id = ensure_flow_run_id(flow_run_id)
    record = _read_record(run_id)
    if record is not None and record.get("state") == _TIMED_OUT:
        raise FlowPauseTimeout("Flow run can no longer be resumed: its pause timed out.")
    if record is None or record.get("state") != _PAUSED:
        raise NotPausedError(f"Cannot resume flow run {run_id}: it isn't paused.")
    deadline = record.get("deadline")
    if isinstance(deadline, int | float) and time.time() >= deadline:
        raise FlowPauseTimeout("Flow run can no longer be resumed: its pause timed out.")
    roles = record.get("keyset")
    if isinstance(roles, dict):
        if run_input is None:
            raise ValueError(f"Flow run {run_id} is waiting for input: pass run_input={{...}} matching the "
                             f"schema stored under key {roles.get('schema')!r} (`otelflow input list {run_id}`).")
        from otelflow.input.actions import read_flow_run_input

        _check_against_schema(run_input, read_flow_run_input(str(roles.get("schema")), run_id))
        try:
            create_flow_run_input(str(roles["response"]), run_input, flow_run_id=run_id)
        except FlowRunInputExists:
            raise FlowRunInputExists(f"Flow run {run_id} was already resumed with input.") from None
    elif run_input is not None:
        raise ValueError(f"Flow run {run_id} is paused without waiting for input; resume it without run_input.")
    _write_record(run_id, {**record, "state": _RESUMED})


async def aresume_flow_run(flow_run_id: uuid.UUID | str, run_input: dict[str, Any] | None = None) -> None:
    """:func:`resume_flow_run` in a worker thread."""
    await asyncio.to_thread(resume_flow_run, flow_run_id, run_input)

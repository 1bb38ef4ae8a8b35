"""States as Prefect 3's (prefect/states.py, prefect/client/schemas/objects.py): constructors, fields, display.

The figures Prefect 3.9.1 prints are copied here as expected values (``Skipped('No work to do', type=COMPLETED)``,
``AwaitingRetry(type=SCHEDULED)``...).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import pytest

from otelflow import flow, task
from otelflow.exceptions import FailedRun, PausedRun, TerminationSignal, UnfinishedRun
from otelflow.states import (
    AwaitingConcurrencySlot,
    AwaitingRetry,
    Cancelled,
    Cancelling,
    Completed,
    Crashed,
    Failed,
    InfrastructurePending,
    Late,
    Paused,
    Pending,
    Retrying,
    Running,
    Scheduled,
    State,
    StateDetails,
    StateType,
    Submitting,
    Suspended,
    TimedOut,
    exception_to_crashed_state,
    exception_to_failed_state,
    format_exception,
    get_state_exception,
    get_state_result,
    is_state_iterable,
    raise_state_exception,
    return_value_to_state,
)

# constructor, its type, its default name, whether it takes name=
CONSTRUCTORS: list[tuple[Callable[..., State[Any]], StateType, str, bool]] = [
    (Scheduled, StateType.SCHEDULED, "Scheduled", True),
    (Late, StateType.SCHEDULED, "Late", False),
    (AwaitingRetry, StateType.SCHEDULED, "AwaitingRetry", False),
    (AwaitingConcurrencySlot, StateType.SCHEDULED, "AwaitingConcurrencySlot", False),
    (Pending, StateType.PENDING, "Pending", True),
    (Submitting, StateType.PENDING, "Submitting", False),
    (InfrastructurePending, StateType.PENDING, "InfrastructurePending", False),
    (Running, StateType.RUNNING, "Running", True),
    (Retrying, StateType.RUNNING, "Retrying", False),
    (Paused, StateType.PAUSED, "Paused", True),
    (Suspended, StateType.PAUSED, "Suspended", False),
    (Completed, StateType.COMPLETED, "Completed", True),
    (Failed, StateType.FAILED, "Failed", True),
    (TimedOut, StateType.FAILED, "TimedOut", False),
    (Crashed, StateType.CRASHED, "Crashed", True),
    (Cancelling, StateType.CANCELLING, "Cancelling", True),
    (Cancelled, StateType.CANCELLED, "Cancelled", True),
]


@pytest.mark.parametrize(("make", "state_type", "name", "renamable"), CONSTRUCTORS,
                         ids=[c[2] for c in CONSTRUCTORS])
def test_every_constructor_takes_prefects_keywords(
    make: Callable[..., State[Any]], state_type: StateType, name: str, renamable: bool
) -> None:
    when = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)
    state = make(State, message="m", data=[1], state_details={"cache_key": "k"}, timestamp=when)
    assert (state.type, state.name, state.message, state.data) == (state_type, name, "m", [1])
    assert state.state_details.cache_key == "k" and state.timestamp == when
    if renamable:
        renamed = make(name="Custom", message="m")
        assert renamed.name == "Custom" and renamed.type is state_type
        assert str(renamed) == f"Custom('m', type={state_type.value})"
    else:  # Prefect: "got multiple values for keyword argument 'name'"
        with pytest.raises(TypeError, match="multiple values for keyword argument 'name'"):
            make(name="Custom")


def test_a_custom_name_is_displayed_as_prefect_displays_it() -> None:
    skipped = Completed(message="No work to do", name="Skipped")
    assert skipped.name == "Skipped" and skipped.is_completed()
    assert str(skipped) == "Skipped('No work to do', type=COMPLETED)"
    assert repr(skipped) == "Skipped(message='No work to do', type=COMPLETED, result=None)"
    assert str(Completed(name="Cached")) == "Cached(type=COMPLETED)"
    assert repr(Completed(name="Cached", data=3)) == "Cached(message=None, type=COMPLETED, result=3)"
    assert str(Completed()) == "Completed()"
    assert repr(Completed()) == "Completed(message=None, type=COMPLETED, result=None)"
    assert repr(Failed(message="x", data=ValueError("v"))) == "Failed(message='x', type=FAILED, result=ValueError('v'))"
    assert str(Pending(name="NotReady", message="m")) == "NotReady('m', type=PENDING)"
    assert [str(s) for s in (AwaitingRetry(), Late(), Scheduled(), Cancelling(), Suspended(), Retrying())] == [
        "AwaitingRetry(type=SCHEDULED)", "Late(type=SCHEDULED)", "Scheduled()", "Cancelling()",
        "Suspended(type=PAUSED)", "Retrying(type=RUNNING)",
    ]


def test_a_flow_returning_a_renamed_state_finishes_in_it() -> None:
    @task
    def nothing_to_do() -> State[Any]:
        return Completed(message="No work to do", name="Skipped")

    @flow
    def f() -> State[Any]:
        return nothing_to_do(return_state=True)

    state = f()
    assert str(state) == "Skipped('No work to do', type=COMPLETED)" and state.result() is None
    flow_state = flow(name="skips")(lambda: Completed(message="No work to do", name="Skipped"))(return_state=True)
    assert flow_state.name == "Skipped" and flow_state.result() is None

    @flow
    async def async_flow() -> State[Any]:
        return Completed(message="No work to do", name="Skipped", data=3)

    async def main() -> tuple[str, Any]:
        state = await async_flow(return_state=True)
        return str(state), await state.result()

    assert asyncio.run(main()) == ("Skipped('No work to do', type=COMPLETED)", 3)


def test_state_is_built_with_keywords_like_prefects_model() -> None:
    state = State(type="COMPLETED", data=1)
    assert state.type is StateType.COMPLETED and state.name == "Completed" and state.result() == 1
    custom = State(type=StateType.FAILED, name="Rejected", message="bad", data=ValueError("bad"))
    assert custom.is_failed() and str(custom) == "Rejected('bad', type=FAILED)"
    assert State(type=StateType.CANCELLING).name == "Cancelling" and State(type="CANCELLING").is_cancelling()
    assert State(type=StateType.COMPLETED, name="").name == ""  # only a missing name defaults to the type's
    with pytest.raises(ValueError):
        State(type="DONE")


def test_state_type_values_and_display_are_prefects() -> None:
    assert [t.value for t in StateType] == [
        "SCHEDULED", "PENDING", "RUNNING", "COMPLETED", "FAILED", "CANCELLED", "CRASHED", "PAUSED", "CANCELLING",
    ]
    assert str(StateType.COMPLETED) == repr(StateType.COMPLETED) == f"{StateType.COMPLETED}" == "StateType.COMPLETED"
    assert StateType.COMPLETED == "COMPLETED" and StateType("FAILED") is StateType.FAILED


def test_each_state_gets_its_own_timezone_aware_timestamp() -> None:
    before = datetime.datetime.now(datetime.UTC)
    first, second = Running(), Running()
    after = datetime.datetime.now(datetime.UTC)
    assert first is not second
    assert first.timestamp.tzinfo is not None and first.timestamp.utcoffset() == datetime.timedelta(0)
    assert before <= first.timestamp <= second.timestamp <= after


def test_scheduled_and_paused_details() -> None:
    retry = AwaitingRetry()
    assert retry.is_scheduled() and not retry.is_pending()
    assert retry.state_details.scheduled_time is not None
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert Scheduled(scheduled_time=when).state_details.scheduled_time == when
    with pytest.raises(ValueError, match="extra scheduled_time"):
        Scheduled(scheduled_time=when, state_details={"scheduled_time": when})
    paused = Paused(timeout_seconds=10, pause_key="k")
    assert paused.state_details.pause_timeout is not None and paused.state_details.pause_key == "k"
    assert not paused.state_details.pause_reschedule and Suspended().state_details.pause_reschedule
    with pytest.raises(ValueError, match="Cannot supply both"):
        Paused(timeout_seconds=1, pause_expiration_time=when)
    details = StateDetails(cache_key="k")
    assert details.flow_run_id is None and details.model_dump()["cache_key"] == "k"
    with pytest.raises(TypeError, match="no field 'cache'"):
        StateDetails(cache="k")


def test_model_copy_and_equality_follow_prefect() -> None:
    state = Completed(data=1, message="m")
    copy = state.model_copy()
    assert copy is not state and copy.id == state.id and copy.data == 1
    assert copy.timestamp >= state.timestamp and copy != state  # Prefect: a copy gets a new timestamp
    same_time = state.model_copy(update={"timestamp": state.timestamp})
    assert same_time == state and hash(same_time) == hash(state)
    assert state.model_copy(update={"name": "Renamed"}).name == "Renamed"
    assert state.fresh_copy().id != state.id


def test_result_and_the_state_exception_helpers() -> None:
    failed = Failed(data=ValueError("bad"))
    assert isinstance(failed.result(raise_on_failure=False), ValueError)
    with pytest.raises(ValueError, match="bad"):
        raise_state_exception(failed)
    assert raise_state_exception(Completed()) is None
    assert isinstance(get_state_exception(Failed(message="no data")), FailedRun)
    with pytest.raises(PausedRun):
        Paused().result()
    with pytest.raises(UnfinishedRun, match="Run is in RUNNING state"):
        Running().result()
    assert format_exception(ValueError("x")) == "ValueError: x"
    assert format_exception(FailedRun("y")) == "FailedRun: y"

    async def in_async_code() -> Any:
        with pytest.raises(ValueError, match="bad"):
            await raise_state_exception(failed)  # an awaitable in async code, as Prefect's async_dispatch
        assert await get_state_result(Completed(data=2)) == 2
        try:
            raise KeyError("k")
        except KeyError:
            from_handler = await exception_to_failed_state(message="Oops")
        crashed = await exception_to_crashed_state(KeyboardInterrupt())
        terminated = await exception_to_crashed_state(TerminationSignal(15))
        unexpected = await exception_to_crashed_state(ValueError("v"))
        return from_handler, crashed, terminated, unexpected

    from_handler, crashed, terminated, unexpected = asyncio.run(in_async_code())
    assert from_handler.is_failed() and from_handler.message == "Oops KeyError: 'k'"
    assert from_handler.state_details.retriable is False and isinstance(from_handler.data, KeyError)
    assert crashed.message == "Execution was aborted by an interrupt signal." and crashed.is_crashed()
    assert terminated.message == "Execution was aborted by a termination signal."
    assert unexpected.message == "Execution was interrupted by an unexpected exception: ValueError: v"


class Ambiguous:
    """Like a numpy array or a data frame: its truth value raises."""

    def __bool__(self) -> bool:
        raise ValueError("The truth value of an array with more than one element is ambiguous.")


def test_a_return_value_whose_truth_value_raises_completes() -> None:
    value = Ambiguous()
    assert not is_state_iterable(value)
    assert return_value_to_state(value).is_completed()

    @flow
    def f() -> Ambiguous:
        return value

    assert f() is value


def test_otelflows_earlier_positional_form_still_works() -> None:
    # engine.py, integrations/dask.py and input/ build states positionally: (data, message) or (message).
    failed = Failed(ValueError("x"), "Task run encountered an exception")
    assert isinstance(failed.data, ValueError) and failed.message == "Task run encountered an exception"
    assert Failed(None, "m", name="TimedOut").name == "TimedOut"
    assert Crashed(None, "gone").message == "gone"
    not_ready = Pending("upstream failed", name="NotReady")
    assert not_ready.message == "upstream failed" and not_ready.name == "NotReady"
    assert Paused("waiting").message == "waiting" and Paused("waiting").is_paused()
    assert State(StateType.COMPLETED, "Cached", None, 3).result() == 3

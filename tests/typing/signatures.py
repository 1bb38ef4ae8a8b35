"""Checked by ``mypy --strict`` in scripts/test, never run: what users' editors see for decorated functions.

``assert_type`` fails the type check when an expression's inferred type differs; the ``misuse`` lines must stay
errors (``warn_unused_ignores`` under ``--strict`` flags an ignore that is no longer needed).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, assert_type

from otelflow import flow, task
from otelflow.futures import PrefectFuture, PrefectFutureList
from otelflow.states import State


@task
def double(x: int) -> int:
    return x * 2


@task(retries=2, tags=["etl"])
async def adouble(x: int) -> int:
    return x * 2


@flow
def pipeline(n: int = 3) -> list[int]:
    return [double(i) for i in range(n)]


@flow(name="async-pipeline")
async def apipeline(n: int) -> int:
    return await adouble(n)


def sync_calls() -> None:
    assert_type(double(2), int)
    assert_type(pipeline(3), list[int])
    assert_type(pipeline(), list[int])
    assert_type(double(2, return_state=True), State[int])
    assert_type(pipeline(return_state=True), State[list[int]])
    assert_type(double.submit(2), PrefectFuture[int])
    assert_type(double.submit(2).result(), int)
    assert_type(double.submit(2, return_state=True), State[int])
    assert_type(double.map([1, 2]), PrefectFutureList[int])
    assert_type(double.map([1, 2], return_state=True), list[State[int]])
    assert_type(adouble.submit(2), PrefectFuture[int])
    as_function: Callable[[int], int] = double  # the decorated task keeps the function's signature
    renamed: Callable[[int], int] = double.with_options(retries=3)
    print(as_function, renamed)


async def async_calls() -> None:
    pending = assert_type(adouble(2), Coroutine[Any, Any, int])  # a coroutine of the value, not of a coroutine
    await pending
    assert_type(await adouble(2), int)
    assert_type(await apipeline(1), int)
    assert_type(await adouble(2, return_state=True), State[int])


def misuse() -> None:
    double("two")  # type: ignore[call-overload]
    pipeline(n="3")  # type: ignore[call-overload]
    double(2, 3)  # type: ignore[call-overload]

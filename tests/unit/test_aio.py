"""gather_bounded: results in order, never more than the limit in flight, and a failure
raised as it is with no call left running behind it."""

from __future__ import annotations

import asyncio

import pytest

from elastichash.aio import gather_bounded


async def test_results_come_in_order_with_at_most_limit_calls_in_flight() -> None:
    in_flight, peak = [0], [0]

    async def square(n: int) -> int:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        await asyncio.sleep(0.01 * (n % 3))  # finishing out of order
        in_flight[0] -= 1
        return n * n

    assert await gather_bounded(square, list(range(20)), 4) == [n * n for n in range(20)]
    assert peak[0] == 4
    assert await gather_bounded(square, [], 4) == []


async def test_the_first_failure_is_raised_as_is_and_the_other_calls_are_cancelled() -> None:
    started: list[int] = []
    finished: list[int] = []
    never = asyncio.Event()

    async def call(n: int) -> int:
        started.append(n)
        if n == 2:
            raise KeyError(n)
        await never.wait()
        finished.append(n)
        return n

    with pytest.raises(KeyError):
        await gather_bounded(call, list(range(10)), 3)
    assert started[:3] == [0, 1, 2]
    assert len(started) < 10  # the calls still waiting for a slot never started
    assert finished == []
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []

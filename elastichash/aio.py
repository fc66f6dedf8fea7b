"""Small asyncio helpers shared by the services and the command line."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

A = TypeVar("A")
T = TypeVar("T")


async def gather_bounded(fn: Callable[[A], Awaitable[T]], args: Sequence[A],
                         limit: int) -> list[T]:
    """``fn`` over ``args`` with at most ``limit`` calls in flight; the results in the order
    of ``args``. The first exception is raised as it is, after the other calls are cancelled
    and awaited: none of them outlives the caller (which may close what they use next)."""
    sem = asyncio.Semaphore(limit)

    async def one(arg: A) -> T:
        async with sem:
            return await fn(arg)

    tasks = [asyncio.ensure_future(one(a)) for a in args]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

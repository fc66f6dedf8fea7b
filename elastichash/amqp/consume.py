"""Consuming: settling deliveries, micro-batching them, draining at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, TypeVar

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage

from elastichash.amqp.topology import CONNECTION_ERRORS

log = logging.getLogger(__name__)

_SETTLE_ERRORS: tuple[type[BaseException], ...] = (
    *CONNECTION_ERRORS,
    aio_pika.exceptions.MessageProcessError,
)


async def settle(message: AbstractIncomingMessage, action: str) -> bool:
    """``ack`` | ``requeue`` | ``drop``. Returns False when the channel the message came on is
    gone: the broker has already put it back, so there is nothing left to do (never re-ack on
    a new channel: its delivery tags mean other messages)."""
    try:
        if action == "ack":
            await message.ack()
        elif action == "requeue":
            await message.nack(requeue=True)
        else:
            await message.reject(requeue=False)
        return True
    except _SETTLE_ERRORS as exc:
        log.info(
            "could not %s delivery %s (%s); the broker redelivers it",
            action,
            message.delivery_tag,
            exc,
        )
        return False


def delivery_count(message: AbstractIncomingMessage) -> int:
    """Quorum queues count failed deliveries in ``x-delivery-count``."""
    value = (message.headers or {}).get("x-delivery-count", 0)
    return int(value) if isinstance(value, int) else 0


T = TypeVar("T")


async def collect_batch(
    buffer: asyncio.Queue[T | None], max_items: int, max_wait_s: float
) -> tuple[list[T], bool]:
    """Wait for a first item, then take more until ``max_items`` or ``max_wait_s`` after the
    first. ``None`` in the buffer means intake is closed: returns the batch and True (the
    caller then takes the rest with :func:`drain_nowait`)."""
    first = await buffer.get()
    if first is None:
        return drain_nowait(buffer, max_items), True
    batch = [first]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_wait_s
    while len(batch) < max_items:
        try:
            item = buffer.get_nowait()
        except asyncio.QueueEmpty:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Not wait_for(buffer.get()): on 3.11 a timeout racing a get can drop the item.
            getter = asyncio.ensure_future(buffer.get())
            done, _ = await asyncio.wait({getter}, timeout=remaining)
            if not done:
                getter.cancel()
                await asyncio.wait({getter})
                if getter.cancelled():
                    break
            item = getter.result()
        if item is None:
            batch.extend(drain_nowait(buffer, max_items - len(batch)))
            return batch, True
        batch.append(item)
    return batch, False


def drain_nowait(buffer: asyncio.Queue[T | None], limit: int) -> list[T]:
    out: list[T] = []
    while len(out) < limit:
        try:
            item = buffer.get_nowait()
        except asyncio.QueueEmpty:
            break
        if item is not None:
            out.append(item)
    return out


async def let_deliveries_land(turns: int = 10) -> None:
    """Call after ``basic.cancel`` returned. Deliveries the broker sent before its cancel-ok
    reach our callback through a chain of tasks (aiormq's reader, then aio-pika's consumer
    wrapper), so they can land a couple of loop turns *after* the cancel returns. A drain
    that closed its buffer at once would miss them and they would be redelivered."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def close_gracefully(*channels: AbstractChannel, deadline: float | None = None) -> None:
    """Close consumer channels one by one before the connection, so the broker has handled
    every ack sent on them (channel.close is a round trip that follows them in order). Closing
    only the connection raced with the last acks on quorum queues: one message in a few hundred
    came back redelivered after a clean drain. All of it within ``deadline`` (loop time; default
    5 s from now): a broker that stopped answering must not hold the shutdown past the grace."""
    if deadline is None:
        deadline = asyncio.get_running_loop().time() + 5.0
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout_at(deadline):
            for channel in channels:
                with contextlib.suppress(*CONNECTION_ERRORS, aio_pika.exceptions.AMQPError):
                    await channel.close()


async def close_connection(connection: Any, within_s: float = 5.0) -> None:
    """Close a connection without letting a silent broker hang the process."""
    with contextlib.suppress(TimeoutError, *CONNECTION_ERRORS, aio_pika.exceptions.AMQPError):
        async with asyncio.timeout(within_s):
            await connection.close()

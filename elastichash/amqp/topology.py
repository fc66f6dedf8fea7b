"""Topology: names, queue arguments, idempotent declaration, queue depth."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from elastichash.errors import ConfigError
from elastichash.settings import AmqpSettings

RK_INGEST = "ingest"
RK_INDEX = "index"
RK_RPC = "encode_rpc"
DIRECT_REPLY_TO = "amq.rabbitmq.reply-to"
RPC_MAX_LENGTH = 1000
# A fixed ceiling, not each caller's timeout: queue arguments must be identical in every
# process that declares the queue. Each request also carries its caller's own timeout as a
# per-message ``expiration``, which is what normally drops it.
RPC_QUEUE_TTL_MS = 60_000
RECONNECT_INTERVAL_S = 1.0

# Failures that mean "the connection or channel went away": retry after it is restored.
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError,
)


@dataclass(frozen=True)
class Topology:
    prefix: str
    delivery_limit: int = 5

    @classmethod
    def of(cls, settings: AmqpSettings) -> Topology:
        return cls(settings.prefix, settings.delivery_limit)

    @property
    def exchange(self) -> str:
        return self.prefix

    @property
    def dlx(self) -> str:
        return f"{self.prefix}.dlx"

    def queue(self, routing_key: str) -> str:
        return f"{self.prefix}.{routing_key}"

    @property
    def dead(self) -> str:
        return f"{self.prefix}.dead"

    def work_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.delivery_limit,
            "x-dead-letter-exchange": self.dlx,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    def rpc_queue_arguments(self) -> dict[str, Any]:
        return {
            "x-queue-type": "classic",
            "x-message-ttl": RPC_QUEUE_TTL_MS,
            "x-max-length": RPC_MAX_LENGTH,
            "x-overflow": "reject-publish",
        }

    def queue_names(self) -> list[str]:
        return [self.queue(RK_INGEST), self.queue(RK_INDEX), self.queue(RK_RPC), self.dead]


@dataclass(frozen=True)
class Declared:
    exchange: AbstractExchange
    dlx: AbstractExchange
    queues: dict[str, AbstractQueue]  # by routing key, plus "dead"


async def declare(channel: AbstractChannel, topo: Topology) -> Declared:
    """Declare everything; safe to repeat, and done on every channel that uses it so that a
    robust channel re-declares it after a broker restart (the RPC queue is not durable).
    Differing arguments on an existing queue make the broker answer PRECONDITION_FAILED,
    which surfaces as :class:`ConfigError`: silently using a queue with other guarantees would
    be worse."""
    try:
        return await _declare(channel, topo)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        text = exc.args[0] if exc.args else exc
        text = getattr(text, "reply_text", text)
        raise ConfigError(
            f"the broker refuses the topology of prefix {topo.prefix!r}: {text}. Every process "
            "of one prefix needs the same amqp.delivery_limit (or delete the queue to change it)",
            field="amqp.delivery_limit",
        ) from exc


async def _declare(channel: AbstractChannel, topo: Topology) -> Declared:
    exchange = await channel.declare_exchange(
        topo.exchange, aio_pika.ExchangeType.DIRECT, durable=True
    )
    dlx = await channel.declare_exchange(topo.dlx, aio_pika.ExchangeType.FANOUT, durable=True)
    dead = await channel.declare_queue(
        topo.dead, durable=True, arguments={"x-queue-type": "quorum"}
    )
    await dead.bind(dlx, routing_key="")
    queues: dict[str, AbstractQueue] = {"dead": dead}
    for rk in (RK_INGEST, RK_INDEX):
        q = await channel.declare_queue(
            topo.queue(rk), durable=True, arguments=topo.work_queue_arguments()
        )
        await q.bind(exchange, routing_key=rk)
        queues[rk] = q
    rpc = await channel.declare_queue(
        topo.queue(RK_RPC), durable=False, arguments=topo.rpc_queue_arguments()
    )
    await rpc.bind(exchange, routing_key=RK_RPC)
    queues[RK_RPC] = rpc
    return Declared(exchange, dlx, queues)


async def message_count(channel: AbstractChannel, queue: str) -> int:
    """Messages waiting in ``queue`` now, from a fresh passive ``queue.declare`` round trip.
    Not ``channel.declare_queue(name, passive=True)``: on a robust channel that returns the
    queue object cached when it was first declared, with the count of that moment (aio-pika
    10.2.1), so the backlog read 0 while the broker held thousands."""
    # The underlying aiormq channel: the abstract type does not name it.
    raw: Any = getattr(channel, "channel")  # noqa: B009
    ok = await raw.queue_declare(queue, passive=True)
    return int(ok.message_count or 0)


async def delete_topology(url: str, prefix: str, extra_queues: Sequence[str] = ()) -> None:
    """Delete a prefix's queues and exchanges (tests, benchmarks, tearing down a trial)."""
    topo = Topology(prefix)
    conn = await aio_pika.connect(url, timeout=5)
    try:
        for name in [*topo.queue_names(), *extra_queues]:
            ch = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.queue_delete(name)
        for name in (topo.exchange, topo.dlx):
            ch = await conn.channel()
            with contextlib.suppress(aio_pika.exceptions.AMQPError):
                await ch.exchange_delete(name)
    finally:
        await conn.close()

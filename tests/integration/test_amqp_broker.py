"""The messaging core against a real RabbitMQ: topology, confirmed publish, dead-lettering
with a reason, the delivery limit, and resending across a broker restart."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest

from elastichash import amqp
from elastichash.errors import Unavailable
from elastichash.messages import H_QUEUE, H_REASON
from elastichash.settings import AmqpSettings
from tests.broker import PrivateBroker

pytestmark = pytest.mark.rabbitmq


async def _get(
    queue: aio_pika.abc.AbstractQueue, deadline_s: float = 10
) -> aio_pika.abc.AbstractIncomingMessage:
    loop = asyncio.get_running_loop()
    end = loop.time() + deadline_s
    while loop.time() < end:
        msg = await queue.get(fail=False, no_ack=False)
        if msg is not None:
            return msg
        await asyncio.sleep(0.02)
    raise TimeoutError(f"nothing arrived on {queue.name}")


async def test_topology_declares_idempotently_with_quorum_queues(
    rabbitmq_url: str, amqp_prefix: str
) -> None:
    settings = AmqpSettings(url=rabbitmq_url, prefix=amqp_prefix, delivery_limit=3)
    conn = await amqp.connect(settings, "test")
    try:
        topo = amqp.Topology.of(settings)
        ch = await conn.channel()
        first = await amqp.declare(ch, topo)
        again = await amqp.declare(ch, topo)  # a second process starting: no error
        assert set(first.queues) == set(again.queues) == {"ingest", "index", "encode_rpc", "dead"}
        # Same name, other guarantees: the broker refuses, and we let it surface.
        ch2 = await conn.channel()
        with pytest.raises(aio_pika.exceptions.ChannelPreconditionFailed):
            await ch2.declare_queue(
                topo.queue("ingest"), durable=True, arguments={"x-queue-type": "classic"}
            )
    finally:
        await conn.close()


async def test_publish_is_confirmed_and_unroutable_is_unavailable(
    rabbitmq_url: str, amqp_prefix: str
) -> None:
    settings = AmqpSettings(url=rabbitmq_url, prefix=amqp_prefix, publish_timeout_s=5)
    conn = await amqp.connect(settings, "test")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        await pub.publish(amqp.RK_INGEST, b"img", timeout=5, headers={"a": 1}, message_id="m1")
        ch = await conn.channel()
        q = await ch.get_queue(f"{amqp_prefix}.ingest", ensure=False)
        msg = await _get(q)
        assert (msg.body, msg.message_id, msg.delivery_mode) == (
            b"img",
            "m1",
            aio_pika.DeliveryMode.PERSISTENT,
        )
        await msg.ack()
        with pytest.raises(Unavailable, match="no queue"):
            await pub.publish("nowhere", b"x", timeout=5)
    finally:
        await conn.close()


async def test_dead_letter_copy_carries_the_reason(rabbitmq_url: str, amqp_prefix: str) -> None:
    settings = AmqpSettings(url=rabbitmq_url, prefix=amqp_prefix)
    conn = await amqp.connect(settings, "test")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        await pub.publish(amqp.RK_INGEST, b"poison", timeout=5, headers={"x-eh-id": "p1"})
        ch = await conn.channel()
        ingest = await ch.get_queue(f"{amqp_prefix}.ingest", ensure=False)
        dead = await ch.get_queue(f"{amqp_prefix}.dead", ensure=False)
        msg = await _get(ingest)
        await pub.dead_letter(msg, ingest.name, "corrupt", "cannot decode", timeout=5)
        assert await amqp.settle(msg, "ack")
        got = await _get(dead)
        assert got.body == b"poison"
        assert got.headers[H_REASON] == "corrupt"
        assert got.headers[H_QUEUE] == ingest.name
        assert got.headers["x-eh-id"] == "p1"
        await got.ack()
    finally:
        await conn.close()


async def test_requeued_message_is_dead_lettered_at_the_delivery_limit(
    rabbitmq_url: str, amqp_prefix: str
) -> None:
    settings = AmqpSettings(url=rabbitmq_url, prefix=amqp_prefix, delivery_limit=2)
    conn = await amqp.connect(settings, "test")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        await pub.publish(amqp.RK_INDEX, b"transient", timeout=5)
        ch = await conn.channel()
        index = await ch.get_queue(f"{amqp_prefix}.index", ensure=False)
        dead = await ch.get_queue(f"{amqp_prefix}.dead", ensure=False)
        deliveries = 0
        while True:
            msg = await index.get(fail=False, no_ack=False)
            if msg is None:
                break
            deliveries += 1
            await amqp.settle(msg, "requeue")
            assert deliveries < 10
        got = await _get(dead)
        assert got.body == b"transient"
        assert got.headers["x-death"][0]["reason"] == "delivery_limit"
        assert deliveries == 3  # the first delivery plus delivery_limit retries
        await got.ack()
    finally:
        await conn.close()


async def test_settle_on_a_lost_channel_does_nothing(rabbitmq_url: str, amqp_prefix: str) -> None:
    settings = AmqpSettings(url=rabbitmq_url, prefix=amqp_prefix)
    conn = await amqp.connect(settings, "test")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        await pub.publish(amqp.RK_INGEST, b"a", timeout=5)
        ch = await conn.channel()
        q = await ch.get_queue(f"{amqp_prefix}.ingest", ensure=False)
        msg = await _get(q)
        await ch.close()
        assert not await amqp.settle(msg, "ack")
        ch2 = await conn.channel()
        q2 = await ch2.get_queue(q.name, ensure=False)
        again = await _get(q2)  # the broker put it back: nothing acked by mistake
        assert again.redelivered
        await again.ack()
    finally:
        await conn.close()


async def test_collect_batch_closes_on_size_time_and_sentinel() -> None:
    buf: asyncio.Queue[int | None] = asyncio.Queue()
    for i in range(5):
        buf.put_nowait(i)
    assert await amqp.collect_batch(buf, 3, 10.0) == ([0, 1, 2], False)
    assert await amqp.collect_batch(buf, 3, 0.05) == ([3, 4], False)
    buf.put_nowait(7)
    buf.put_nowait(None)
    buf.put_nowait(8)
    assert await amqp.collect_batch(buf, 10, 10.0) == ([7, 8], True)


async def test_unconfirmed_publish_is_resent_after_a_broker_restart(
    private_broker: PrivateBroker,
) -> None:
    prefix = "restart"
    settings = AmqpSettings(url=private_broker.url, prefix=prefix, publish_timeout_s=60)
    conn = await amqp.connect(settings, "test")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        await pub.publish(amqp.RK_INGEST, b"before", timeout=5, message_id="b")
        await asyncio.to_thread(private_broker.stop)
        sending = asyncio.create_task(
            pub.publish(amqp.RK_INGEST, b"during", timeout=60, message_id="d")
        )
        await asyncio.sleep(0)  # let it hit the closed connection
        await private_broker.start()
        await sending  # returns only once confirmed by the restarted node
        ch = await conn.channel()
        q = await ch.get_queue(f"{prefix}.ingest", ensure=False)
        got = {(await _get(q)).body, (await _get(q)).body}
        assert got == {b"before", b"during"}  # durable across the restart, and resent
    finally:
        await conn.close()

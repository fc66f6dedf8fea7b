"""Encoder and indexer workers as real subprocesses over a real RabbitMQ, under faults.

Every test accounts for every image it submitted: indexed, or failed / dead-lettered with a
reason. Lost must be zero."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable

import pytest

from elastichash.index.remote import RemoteIndex
from elastichash.messages import H_ID, H_METADATA, H_SOURCE, H_VERSION
from elastichash.settings import AmqpSettings, ModelSettings
from tests.broker import PrivateBroker
from tests.distributed import (
    Cluster,
    account,
    dead_letters,
    images,
    index_message_ids,
    publish,
    publish_raw,
    queue_depth,
    wait_for,
)
from tests.imagegen import make_image

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

Factory = Callable[[str, str], Cluster]


async def _start(c: Cluster, encoders: int = 1, **enc: str) -> None:
    search = c.search_service()
    await c.ready(search)
    services = [c.indexer()] + [c.encoder(**enc) for _ in range(encoders)]  # type: ignore[arg-type]
    for svc in services:
        await c.ready(svc)


async def test_poison_messages_are_dead_lettered_with_their_reason_while_others_flow(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    good = images(range(60))
    jpeg = make_image(999)
    poison = [
        # (id, body) of bad images: they get a failure record and a dead letter
        ("corrupt-1", b"\xff\xd8\xff\xe0" + b"\x00garbage" * 20),
        ("truncated-1", jpeg[: len(jpeg) // 3]),
    ]
    await publish(rabbitmq_url, amqp_prefix, good[:30])
    for ident, body in poison:
        await publish_raw(
            rabbitmq_url, amqp_prefix, body, {H_VERSION: 1, H_ID: ident, H_METADATA: "{}"}
        )
    bad_headers = [
        ({H_VERSION: 1, H_ID: "../../etc/passwd"}, "bad_headers"),
        ({H_VERSION: 1, H_ID: "meta-1", H_METADATA: "{not json"}, "bad_headers"),
        ({H_VERSION: 42, H_ID: "future-1"}, "unsupported_version"),
        # Strict types: True == 1 in Python but is no version; a number is no source.
        ({H_VERSION: True, H_ID: "boolv-1"}, "unsupported_version"),
        ({H_VERSION: 1, H_ID: "intsrc-1", H_SOURCE: 5}, "bad_headers"),
        # Nesting that breaks recursive parsers (RecursionError) or serialisers.
        ({H_VERSION: 1, H_ID: "deep-1", H_METADATA: "[" * 4000 + "]" * 4000}, "bad_headers"),
        ({H_VERSION: 1, H_ID: "deep-2", H_METADATA: '{"a":' * 300 + "1" + "}" * 300},
         "bad_headers"),
    ]
    for headers, _ in bad_headers:
        await publish_raw(rabbitmq_url, amqp_prefix, jpeg, headers)  # type: ignore[arg-type]
    await publish(rabbitmq_url, amqp_prefix, good[30:])
    await _start(c)

    indexed, failed = await account(c.search_url, good, timeout=60)
    assert len(indexed) == len(good)
    assert not failed

    async def all_dead() -> bool:
        return len(await dead_letters(rabbitmq_url, amqp_prefix)) >= len(poison) + len(bad_headers)

    await wait_for(all_dead, 30, "poison in the dead-letter queue")
    dead = await dead_letters(rabbitmq_url, amqp_prefix)
    assert len(dead) == len(poison) + len(bad_headers)
    reasons = dict(dead)
    assert reasons["corrupt-1"] in {"corrupt", "unsupported_format"}
    assert reasons["truncated-1"] in {"truncated", "corrupt"}
    assert reasons["future-1"] == "unsupported_version"
    assert reasons["boolv-1"] == "unsupported_version"
    assert reasons["intsrc-1"] == "bad_headers"
    named = {"../../etc/passwd", "meta-1", "deep-1", "deep-2"}
    assert sorted(r for i, r in dead if i in named) == ["bad_headers"] * 4
    # Bad images also leave a failure record, so the image's status says why.
    index = RemoteIndex(c.search_url)
    await index.open()
    try:
        for ident, _ in poison:
            failure = await index.get_failure(ident)
            assert failure is not None
            assert failure.reason == reasons[ident]
    finally:
        await index.close()


async def test_an_encoder_killed_while_holding_a_batch_loses_nothing_and_duplicates_nothing(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    items = images(range(1000, 1400))
    await publish(rabbitmq_url, amqp_prefix, items)
    await _start(c, encoders=0)
    victim = c.encoder(batch_max=8, prefetch=64)
    await c.ready(victim)

    async def mid_stream() -> bool:
        return await victim.metric("eh_encoder_encoded_total") >= 16

    await wait_for(mid_stream, 60, "the encoder to be mid-stream")
    victim.proc.send_signal(signal.SIGKILL)  # holds up to 64 unacked deliveries
    victim.proc.wait(10)
    survivor = c.encoder()
    await c.ready(survivor)
    indexed, failed = await account(c.search_url, items, timeout=120)
    assert len(indexed) == len(items)
    assert not failed
    assert await survivor.metric("eh_encoder_redelivered_total") > 0  # it did hold some
    index = RemoteIndex(c.search_url)
    await index.open()
    try:
        assert await index.count() == len(items)  # exactly once: redeliveries overwrite by id
    finally:
        await index.close()
    assert await dead_letters(rabbitmq_url, amqp_prefix) == []


async def test_sigterm_during_a_batch_drains_and_nothing_it_took_is_processed_again(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    items = images(range(2000, 2300))
    await publish(rabbitmq_url, amqp_prefix, items)
    first = c.encoder(batch_max=8, prefetch=64)
    await c.ready(first)

    async def mid_stream() -> bool:
        return await first.metric("eh_encoder_encoded_total") >= 16

    await wait_for(mid_stream, 60, "the encoder to be mid-stream")
    first.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(first.proc.wait, 30) == 0
    assert "encoder worker stopped" in first.tail()
    second = c.encoder()
    await c.ready(second)
    index_queue = f"{amqp_prefix}.index"

    async def all_encoded() -> bool:
        return await queue_depth(rabbitmq_url, index_queue) >= len(items)

    await wait_for(all_encoded, 120, "every image encoded")
    # No indexer runs: the index queue holds exactly what the encoders published. An image
    # the first worker took and did not finish would be encoded twice, and appear twice.
    published = await index_message_ids(rabbitmq_url, index_queue)
    assert sorted(published) == sorted(i.id for i in items)
    assert await second.metric("eh_encoder_consumed_total") > 0  # SIGTERM landed mid-stream
    assert await dead_letters(rabbitmq_url, amqp_prefix) == []


async def test_a_broker_restart_mid_stream_loses_nothing(
    private_broker: PrivateBroker, cluster_factory: Factory
) -> None:
    prefix = "restart-e2e"
    c = cluster_factory(private_broker.url, prefix)
    items = images(range(3000, 3300))
    await publish(private_broker.url, prefix, items[:150])
    await _start(c)
    index = RemoteIndex(c.search_url)
    await index.open()
    try:

        async def some_indexed() -> bool:
            return await index.count() >= 20

        await wait_for(some_indexed, 60, "some images indexed")
        await asyncio.to_thread(private_broker.stop)
        await private_broker.start()
        await publish(private_broker.url, prefix, items[150:])
        indexed, failed = await account(c.search_url, items, timeout=120)
        assert len(indexed) == len(items)
        assert not failed
        assert await index.count() == len(items)
    finally:
        await index.close()
    assert all(s.proc.poll() is None for s in c.services)  # they reconnected by themselves


async def test_a_search_is_encoded_at_once_while_thousands_of_images_are_queued(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory, model_path: object
) -> None:
    from gateway.pipeline_amqp import AmqpPipeline

    c = cluster_factory(rabbitmq_url, amqp_prefix)
    backlog = images(range(10_000, 13_000))
    await publish(rabbitmq_url, amqp_prefix, backlog)
    encoder = c.encoder(batch_max=16, prefetch=64)
    await c.ready(encoder)
    pipeline = AmqpPipeline(
        AmqpSettings(url=rabbitmq_url, prefix=amqp_prefix, rpc_timeout_s=10),
        ModelSettings(path=model_path),  # type: ignore[arg-type]
    )
    await pipeline.start()
    try:
        latencies = []
        for seed in range(5):
            started = time.perf_counter()
            q = await pipeline.encode_query(make_image(50_000 + seed))
            latencies.append(time.perf_counter() - started)
            assert len(q.code) == 32
            assert len(q.short) == 8
        depth = await queue_depth(rabbitmq_url, f"{amqp_prefix}.ingest")
    finally:
        await pipeline.stop()
    assert depth > 1000, "the backlog drained: the test proved nothing"
    assert max(latencies) < 2.0, latencies

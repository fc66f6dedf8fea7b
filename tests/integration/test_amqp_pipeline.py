"""The gateway's AMQP pipeline against a real broker and a real encoder worker: confirmed
submit, 503-style Unavailable when the broker cannot confirm, the encode RPC and its timeout."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from elastichash import codes
from elastichash.errors import ImageError, Unavailable
from elastichash.messages import H_ID
from elastichash.model.encoder import Encoder
from elastichash.settings import AmqpSettings, ImageLimits, ModelSettings
from gateway.pipeline_amqp import AmqpPipeline
from tests.broker import PrivateBroker
from tests.distributed import Cluster, images
from tests.imagegen import make_image

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
async def pipeline(
    rabbitmq_url: str, amqp_prefix: str, model_path: Path
) -> AsyncIterator[AmqpPipeline]:
    p = AmqpPipeline(
        AmqpSettings(url=rabbitmq_url, prefix=amqp_prefix, rpc_timeout_s=1.0),
        ModelSettings(path=model_path),
    )
    await p.start()
    yield p
    await p.stop()


async def test_submit_returns_once_the_broker_confirmed(
    pipeline: AmqpPipeline, rabbitmq_url: str, amqp_prefix: str
) -> None:
    import aio_pika

    items = images(range(5))
    await pipeline.submit(items)
    conn = await aio_pika.connect(rabbitmq_url)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(f"{amqp_prefix}.ingest", passive=True)
        assert q.declaration_result.message_count == 5
        msg = await q.get()
        assert msg.headers[H_ID] in {i.id for i in items}
        assert msg.body in {i.data for i in items}
        await msg.ack()
    finally:
        await conn.close()


async def test_encode_query_without_an_encoder_times_out_as_unavailable(
    pipeline: AmqpPipeline,
) -> None:
    started = time.monotonic()
    with pytest.raises(Unavailable, match="no encoder answered"):
        await pipeline.encode_query(make_image(1))
    assert time.monotonic() - started < 3


async def test_short_of_and_model_info_come_from_the_model_file(
    pipeline: AmqpPipeline, model_path: Path
) -> None:
    enc = await asyncio.to_thread(Encoder.load, ModelSettings(path=model_path), ImageLimits())
    code = bytes(range(32))
    assert pipeline.short_of(code) == enc.short_of(code)
    info = pipeline.model_info()
    assert info["fingerprint"] == enc.spec.fingerprint
    assert info["code_bits"] == codes.LONG_BITS


async def test_encode_query_returns_the_encoder_workers_codes_and_bad_images_as_image_errors(
    pipeline: AmqpPipeline,
    rabbitmq_url: str,
    amqp_prefix: str,
    model_path: Path,
    cluster_factory: Callable[[str, str], Cluster],
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    await c.ready(c.encoder())
    data = make_image(7)
    enc = await asyncio.to_thread(Encoder.load, ModelSettings(path=model_path), ImageLimits())
    want = enc.encode_bytes([data])[0]
    got = await pipeline.encode_query(data)
    assert (got.code, got.short) == (want.code, want.short)  # type: ignore[union-attr]
    with pytest.raises(ImageError) as info:
        await pipeline.encode_query(b"\xff\xd8\xff\xe0 not really a jpeg")
    assert info.value.reason in ImageError.REASONS


async def test_submit_raises_unavailable_when_the_broker_cannot_confirm(
    private_broker: PrivateBroker, model_path: Path
) -> None:
    p = AmqpPipeline(
        AmqpSettings(url=private_broker.url, prefix="down", publish_timeout_s=1.0),
        ModelSettings(path=model_path),
    )
    await p.start()
    try:
        await p.submit(images(range(2)))
        await asyncio.to_thread(private_broker.stop)
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await p.submit(images(range(2, 4)))
        assert time.monotonic() - started < 5
    finally:
        await p.stop()

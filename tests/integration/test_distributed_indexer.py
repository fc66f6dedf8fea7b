"""The indexer worker as a subprocess between RabbitMQ and the search service: written items
acked once, malformed messages dead-lettered with a reason, an index outage waited out."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import aiohttp
import pytest

from elastichash import amqp
from elastichash.index.base import Document
from elastichash.index.remote import RemoteIndex
from elastichash.messages import IndexDoc, IndexFailure
from elastichash.settings import AmqpSettings
from tests.distributed import (
    Cluster,
    Service,
    dead_letters,
    wait_for,
)

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]
Factory = Callable[[str, str], Cluster]


def _docs(n: int, start: int = 0) -> list[Document]:
    return [
        Document(
            id=f"doc-{start + i}",
            code=os.urandom(32),
            short=os.urandom(8),
            source=f"s{i}",
            metadata={"i": i},
        )
        for i in range(n)
    ]


async def _send(url: str, prefix: str, bodies: list[bytes]) -> None:
    settings = AmqpSettings(url=url, prefix=prefix)
    conn = await amqp.connect(settings, "test")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        for body in bodies:
            await pub.publish(amqp.RK_INDEX, body, timeout=10, content_type="application/json")
    finally:
        await conn.close()


async def _count_is(search_url: str, n: int) -> bool:
    index = RemoteIndex(search_url)
    await index.open()
    try:
        return await index.count() >= n
    finally:
        await index.close()


async def test_indexer_writes_documents_and_failures_and_dead_letters_malformed_messages(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Callable[[str, str], Cluster]
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    docs = _docs(50)
    bodies = [IndexDoc.of(d).model_dump_json().encode() for d in docs]
    bodies.append(
        IndexFailure(id="bad-1", reason="corrupt", message="cannot decode")
        .model_dump_json()
        .encode()
    )
    bodies += [b"{not json", b'{"kind": "doc", "v": 1, "id": "x", "code": "00", "short": "00"}']
    # A thumbnail that is not base64, and nesting deep enough to break json.loads: each
    # must cost only itself, not requeue its batch-mates until the delivery limit.
    bodies.append(json.dumps({"kind": "doc", "v": 1, "id": "y", "code": "0" * 64,
                              "short": "0" * 16, "thumbnail": "abc"}).encode())
    bodies.append(b"[" * 5000 + b"]" * 5000)
    await _send(rabbitmq_url, amqp_prefix, bodies)
    await c.ready(c.search_service())
    await c.ready(c.indexer(batch_max=16))
    await wait_for(lambda: _count_is(c.search_url, len(docs)), 60, "documents indexed")

    async def four_dead() -> bool:
        return len(await dead_letters(rabbitmq_url, amqp_prefix)) >= 4

    await wait_for(four_dead, 30, "malformed messages dead-lettered")
    assert (
        sorted(r for _, r in await dead_letters(rabbitmq_url, amqp_prefix)) == ["bad_message"] * 4
    )
    index = RemoteIndex(c.search_url)
    await index.open()
    try:
        assert await index.count() == len(docs)
        for d in docs[:5]:
            got = await index.get(d.id)
            assert got is not None
            assert (got.code, got.short) == (d.code, d.short)
        failure = await index.get_failure("bad-1")
        assert failure is not None
        assert failure.reason == "corrupt"
    finally:
        await index.close()


async def test_an_index_outage_pauses_the_indexer_without_burning_the_delivery_limit(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Callable[[str, str], Cluster]
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    docs = _docs(40, start=100)
    indexer = c.indexer(batch_max=8, EH_INDEXER_RETRY_BACKOFF_MAX_S="0.5")
    # The search service is not running yet: alive, but not ready (its index is down).
    await c.ready(indexer, path="/healthz")
    await wait_for(lambda: _ready_is(indexer, 503), 30, "the indexer unready without its index")
    await _send(
        rabbitmq_url, amqp_prefix, [IndexDoc.of(d).model_dump_json().encode() for d in docs]
    )

    async def retried() -> bool:
        return "retrying" in indexer.tail(200)

    await wait_for(retried, 30, "the indexer to hit the outage")
    await c.ready(c.search_service())
    await wait_for(
        lambda: _count_is(c.search_url, len(docs)), 60, "documents indexed after the outage"
    )
    assert await dead_letters(rabbitmq_url, amqp_prefix) == []
    await wait_for(lambda: _ready_is(indexer, 200), 30, "the indexer ready again")


async def _ready_is(svc: Service, status: int) -> bool:
    try:
        async with aiohttp.ClientSession() as s, s.get(svc.url("/readyz")) as r:
            return r.status == status
    except aiohttp.ClientError:
        return False


async def test_check_flag_exits_0_for_a_ready_worker_and_1_when_it_is_gone(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Callable[[str, str], Cluster]
) -> None:
    import asyncio
    import subprocess
    import sys

    c = cluster_factory(rabbitmq_url, amqp_prefix)
    await c.ready(c.search_service())  # ready means its index answers too
    indexer = c.indexer()
    await c.ready(indexer)

    def check() -> int:
        env = {**os.environ, "EH_INDEXER_HEALTH_PORT": str(indexer.port)}
        cmd = [sys.executable, "-m", "indexer_worker", "--check"]
        return subprocess.run(cmd, env=env, capture_output=True, timeout=30).returncode

    assert await asyncio.to_thread(check) == 0
    indexer.proc.terminate()
    assert await asyncio.to_thread(indexer.proc.wait, 30) == 0
    assert await asyncio.to_thread(check) == 1


async def test_the_index_queue_holds_messages_to_the_ingest_queues_limits_and_types(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    import base64

    c = cluster_factory(rabbitmq_url, amqp_prefix)
    docs = _docs(3)
    bodies = [IndexDoc.of(d).model_dump_json().encode() for d in docs]

    def doc(ident: str, **fields: object) -> bytes:
        body: dict[str, object] = {
            "kind": "doc", "v": 1, "id": ident, "code": "0" * 64, "short": "0" * 16
        }
        body.update(fields)
        return json.dumps(body).encode()

    deep: dict[str, object] = {"leaf": 1}
    for _ in range(7):
        deep = {"n": deep}
    poison = {
        # A thumbnail of 2 MB (a whole image smuggled in its place) in a 2.7 MB message.
        doc("big-1", thumbnail=base64.b64encode(os.urandom(2 * 1024 * 1024)).decode()):
            "too_large",
        doc("deep-1", metadata=deep): "bad_message",  # deeper than the ingest path allows
        doc("boolv-1", v=True): "unsupported_version",  # True == 1 in Python, not a version
        doc("intsrc-1", source=5): "bad_message",  # a number where a string belongs
    }
    await _send(rabbitmq_url, amqp_prefix, [*poison, *bodies])
    await c.ready(c.search_service())
    await c.ready(c.indexer(batch_max=16))
    await wait_for(lambda: _count_is(c.search_url, len(docs)), 60, "documents indexed")

    async def all_dead() -> bool:
        return len(await dead_letters(rabbitmq_url, amqp_prefix)) >= len(poison)

    await wait_for(all_dead, 30, "poison dead-lettered")
    reasons = sorted(r or "" for _, r in await dead_letters(rabbitmq_url, amqp_prefix))
    assert reasons == sorted(poison.values())
    index = RemoteIndex(c.search_url)
    await index.open()
    try:
        assert await index.count() == len(docs)
        for ident in ("big-1", "deep-1", "boolv-1", "intsrc-1"):
            assert await index.get(ident) is None
    finally:
        await index.close()


@pytest.mark.parametrize("policy", ["keep", "skip"])
async def test_the_indexer_marks_or_skips_near_duplicates_of_indexed_images(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Callable[[str, str], Cluster],
    policy: str,
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    originals = _docs(3)
    near = []
    for d in originals:  # 2 bits away, in the long code and (bit 0 is a short bit) the short
        code = bytearray(d.code)
        code[0] ^= 0b11
        near.append(Document(id=f"near-{d.id}", code=bytes(code), short=d.short))
    await c.ready(c.search_service())
    await c.ready(c.indexer(batch_max=4, EH_INDEXER_INDEX__DUPLICATE_DISTANCE="4",
                            EH_INDEXER_INDEX__DUPLICATE_POLICY=policy))
    await _send(rabbitmq_url, amqp_prefix, [IndexDoc.of(d).model_dump_json().encode()
                                            for d in originals])
    await wait_for(lambda: _count_is(c.search_url, 3), 60, "originals indexed")
    await _send(rabbitmq_url, amqp_prefix, [IndexDoc.of(d).model_dump_json().encode()
                                            for d in near])
    index = RemoteIndex(c.search_url)
    await index.open()
    try:
        async def settled() -> bool:
            got = [await index.get(d.id) for d in near]
            failed = [await index.get_failure(d.id) for d in near]
            return all(g is not None or f is not None for g, f in zip(got, failed, strict=True))

        await wait_for(settled, 60, "near-duplicates settled")
        for orig, dup in zip(originals, near, strict=True):
            got = await index.get(dup.id)
            if policy == "keep":
                assert got is not None
                assert got.metadata["duplicate_of"] == orig.id
                assert got.metadata["duplicate_distance"] == 2
            else:
                assert got is None
                failure = await index.get_failure(dup.id)
                assert failure is not None
                assert failure.reason == "duplicate"
                assert orig.id in failure.message
        assert await dead_letters(rabbitmq_url, amqp_prefix) == []
    finally:
        await index.close()

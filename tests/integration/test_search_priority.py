"""Searches first (issue 18.7): where one process serves searches and background writes, the
writes give way while a search is in flight, for a bounded time. Real roles over a real
broker; the search is held in flight by what holds real searches up (no encoder answering its
query yet, a query body still arriving)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import aiohttp

from elastichash.index.base import Document
from elastichash.index.remote import RemoteIndex
from tests.distributed import Cluster
from tests.imagegen import make_image

Factory = Callable[[str, str], Cluster]


def _form(data: bytes, name: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="image/jpeg")
    return form


async def _upload_during_a_search(gateway_url: str, seed: int) -> tuple[float, float, float]:
    """Start a search by upload (no encoder runs: it waits out the RPC timeout), post one
    image 0.3 s later; (when the search ended, when the upload was answered, when it was
    posted), seconds from the search's start."""
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic()

        async def search() -> float:
            async with http.post(f"{gateway_url}/v1/search",
                                 data=_form(make_image(seed), "q.jpg")) as r:
                assert r.status == 503, await r.text()  # no encoder answered in time
            return time.monotonic() - t0

        searching = asyncio.ensure_future(search())
        await asyncio.sleep(0.3)
        posted = time.monotonic() - t0
        async with http.post(f"{gateway_url}/v1/images",
                             data=_form(make_image(seed + 1), "u.jpg")) as r:
            assert r.status == 202, await r.text()
        answered = time.monotonic() - t0
        return await searching, answered, posted


async def test_gateway_uploads_wait_for_a_search_in_flight_but_are_never_starved(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    await c.ready(c.search_service())
    # Held: a patience longer than the search, which no encoder answers for 2.5 s.
    held = c.gateway(EH_GATEWAY_SEARCH_PRIORITY_S="30", EH_GATEWAY_AMQP__RPC_TIMEOUT_S="2.5")
    # Bounded: a patience of 0.5 s against a search that lasts 8 s.
    bounded = c.gateway(EH_GATEWAY_SEARCH_PRIORITY_S="0.5", EH_GATEWAY_AMQP__RPC_TIMEOUT_S="8")
    # Off: uploads never wait.
    off = c.gateway(EH_GATEWAY_SEARCH_PRIORITY_S="0", EH_GATEWAY_AMQP__RPC_TIMEOUT_S="2.5")
    for g in (held, bounded, off):
        await c.ready(g)

    ended, answered, posted = await _upload_during_a_search(held.url(""), 10)
    # The upload went on as soon as the search ended, not before and not at the patience.
    assert ended - 0.3 <= answered <= ended + 2.0, (ended, answered)
    waited = "eh_gateway_upload_search_wait_seconds_total"
    assert await held.metric(waited) >= ended - posted - 0.5  # counted for the operator

    ended, answered, posted = await _upload_during_a_search(bounded.url(""), 20)
    # Two checkpoints (before reading the file, before publishing it) of 0.5 s each at most.
    assert 0.45 <= answered - posted <= 4.0, (posted, answered)
    assert answered < ended - 2.0, (ended, answered)

    ended, answered, posted = await _upload_during_a_search(off.url(""), 30)
    assert answered < ended - 1.0, (ended, answered)
    assert await off.metric(waited) == 0


async def test_search_service_writes_wait_for_a_search_in_flight_but_are_never_starved(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    doc = Document("prio-1", bytes(32), bytes(8), source="s.jpg", metadata={})

    async def write_during_a_search(patience: str, hold_s: float) -> float:
        """Seconds a bulk write took while a search's body was still arriving for hold_s (and
        the service counted about as long in its metrics)."""
        svc = c.search_service(EH_SEARCH_SEARCH_PRIORITY_S=patience)
        await c.ready(svc)
        query = b'{"code": "' + b"00" * 32 + b'", "short": "' + b"00" * 8 + b'", "k": 5}'
        reader, writer = await asyncio.open_connection("127.0.0.1", c.search_port)
        remote = RemoteIndex(c.search_url)
        await remote.open()
        try:
            writer.write(b"POST /v1/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                         b"\r\nContent-Length: %d\r\n\r\n" % len(query) + query[:10])
            await writer.drain()
            await asyncio.sleep(0.3)  # the search's handler runs, waiting for its body

            async def finish_search() -> None:
                await asyncio.sleep(hold_s)
                writer.write(query[10:])
                await writer.drain()
                assert b" 200 " in await reader.readline()

            finishing = asyncio.ensure_future(finish_search())
            started = time.monotonic()
            [result] = await remote.upsert([doc])
            took = time.monotonic() - started
            assert result.ok, result
            await finishing
            waited = await svc.metric("eh_search_write_search_wait_seconds_total")
            assert waited <= took, (waited, took)
            assert waited >= took - 0.5 or patience == "0", (waited, took)
            return took
        finally:
            writer.close()
            await remote.close()
            svc.proc.kill()
            svc.proc.wait(10)

    # Held until the search was answered (2 s), not longer.
    assert 1.7 <= await write_during_a_search("30", 2.0) <= 4.0
    # Bounded by the patience when the search lasts longer.
    assert 0.45 <= await write_during_a_search("0.5", 6.0) <= 3.0
    # Off: the write does not wait.
    assert await write_during_a_search("0", 2.0) < 1.0

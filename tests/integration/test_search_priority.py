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
from tests.distributed import Cluster, Service, wait_for
from tests.imagegen import make_image

Factory = Callable[[str, str], Cluster]


def _form(data: bytes, name: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("file", data, filename=name, content_type="image/jpeg")
    return form


async def _in_flight(svc: Service, gauge: str) -> None:
    async def one() -> bool:
        return await svc.metric(gauge) == 1

    await wait_for(one, 30, f"{gauge} to be 1")


async def _upload_during_a_search(gateway: Service, seed: int) -> tuple[float, float, float]:
    """Start a search by upload (no encoder runs: it waits out the RPC timeout) and, once the
    gateway counts it in flight, post one image; (when the search ended, when the upload was
    answered, when it was posted), seconds from the search's start."""
    gateway_url = gateway.url("")
    async with aiohttp.ClientSession() as http:
        t0 = time.monotonic()

        async def search() -> float:
            async with http.post(f"{gateway_url}/v1/search",
                                 data=_form(make_image(seed), "q.jpg")) as r:
                assert r.status == 503, await r.text()  # no encoder answered in time
            return time.monotonic() - t0

        searching = asyncio.ensure_future(search())
        await _in_flight(gateway, "eh_gateway_searches_in_flight")
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
    # Held: a patience longer than the search, which no encoder answers for 4 s.
    held = c.gateway(EH_GATEWAY_SEARCH_PRIORITY_S="30", EH_GATEWAY_AMQP__RPC_TIMEOUT_S="4")
    # Bounded: a patience of 0.5 s against a search that lasts 8 s.
    bounded = c.gateway(EH_GATEWAY_SEARCH_PRIORITY_S="0.5", EH_GATEWAY_AMQP__RPC_TIMEOUT_S="8")
    # Off: uploads never wait.
    off = c.gateway(EH_GATEWAY_SEARCH_PRIORITY_S="0", EH_GATEWAY_AMQP__RPC_TIMEOUT_S="4")
    for g in (held, bounded, off):
        await c.ready(g)

    ended, answered, posted = await _upload_during_a_search(held, 10)
    # The upload went on as soon as the search ended, not before and not at the patience.
    assert ended - 0.3 <= answered <= ended + 2.0, (ended, answered)
    waited = "eh_gateway_upload_search_wait_seconds_total"
    assert await held.metric(waited) >= ended - posted - 0.5  # counted for the operator

    ended, answered, posted = await _upload_during_a_search(bounded, 20)
    # Two checkpoints (before reading the file, before publishing it) of 0.5 s each at most.
    assert 0.45 <= answered - posted <= 4.0, (posted, answered)
    assert answered < ended - 2.0, (ended, answered)

    ended, answered, posted = await _upload_during_a_search(off, 30)
    assert answered < ended - 1.5, (ended, answered)
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
            # The search's handler runs, waiting for the rest of its body.
            await _in_flight(svc, "eh_search_searches_in_flight")

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

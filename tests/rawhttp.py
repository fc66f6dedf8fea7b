"""Talking to an HTTP server the way a hostile client does: bodies sent in chunks without a
length, raw connections from a chosen source address, and reading until the server closes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web

from elastichash.serving.server import bind, start
from elastichash.settings import ServerSettings


async def chunked(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    """``body`` as an async iterator: aiohttp sends it chunked, with no Content-Length."""
    for i in range(0, len(body), size):
        yield body[i:i + size]


async def raw(host: str, port: int, data: bytes,
              source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection from ``source`` that has sent ``data`` (any bytes, any framing)."""
    reader, writer = await asyncio.open_connection(host, port, local_addr=(source, 0))
    writer.write(data)
    await writer.drain()
    return reader, writer


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bytes:
    """Everything the server sent before it closed the connection."""
    async with asyncio.timeout(seconds):
        return await reader.read()


@contextlib.asynccontextmanager
async def on_socket(app: web.Application,
                    settings: ServerSettings) -> AsyncIterator[tuple[str, int]]:
    """``app`` on a real socket of 127.0.0.1 through the runner the services' commands use;
    yields (host, port)."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    runner = await start(app, sock, settings)
    try:
        yield "127.0.0.1", port
    finally:
        await runner.cleanup()


async def assert_stalled_body_is_a_408(host: str, port: int, sent: bytes) -> None:
    """``sent``: a request head promising more body than follows it."""
    reader, writer = await raw(host, port, sent)
    started = time.monotonic()
    answer = await closed_within(reader, 10)
    assert time.monotonic() - started < 8
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b'"request_timeout"' in answer
    writer.close()


async def assert_per_client_cap(host: str, port: int, cap: int) -> None:
    """``cap`` + 4 connections from one address: ``cap`` are answered, the others closed
    unanswered, and another address is still served."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    mine = [await raw(host, port, request) for _ in range(cap + 4)]
    answered = 0
    for reader, _ in mine:  # each closes: the surplus at once, the others when idle
        answered += (await closed_within(reader, 8)).startswith(b"HTTP/1.1 200")
    assert answered == cap
    reader, writer = await raw(host, port, request, source="127.0.0.2")
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    writer.close()
    for _, w in mine:
        w.close()

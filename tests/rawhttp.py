"""Talking to an HTTP server the way a hostile client does: bodies sent in chunks without a
length, raw connections from a chosen source address, and reading until the server closes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


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

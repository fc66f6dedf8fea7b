"""Reading request bodies under limits a hostile client cannot talk its way around.

Bytes are counted as they arrive, whatever ``Content-Length`` said and whether or not the body
is chunked, against a cap for the whole request; every wait for more body bytes is bounded
(a client that stops sending is cut off), and so is the rate, counted over the time spent
waiting for the client only (the server's own work between reads is not held against it).
Multipart bodies are also bounded in their number of parts.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web, web_protocol
from aiohttp.http_exceptions import HttpProcessingError

from elastichash.errors import InvalidInput, PayloadTooLarge, RequestTimeout
from elastichash.settings import BodySettings

T = TypeVar("T")
CHUNK = 256 * 1024
FIELD_MAX = 4096


class Body:
    """The body of one request, read through the checks above."""

    def __init__(self, request: web.Request, cap: int, limits: BodySettings,
                 max_parts: int = 0) -> None:
        declared = request.content_length
        if declared is not None and declared > cap:
            raise PayloadTooLarge(f"request is {declared} bytes; the limit is {cap}")
        self._request = request
        self.cap = cap
        self._limits = limits
        self._max_parts = max_parts
        self._waited = 0.0
        self.parts = 0

    @property
    def received(self) -> int:
        return self._request.content.total_bytes

    def _check(self) -> None:
        if self.received > self.cap:
            raise PayloadTooLarge(f"request is over the limit of {self.cap} bytes")
        limits = self._limits
        if (self._waited > limits.rate_grace_s
                and self.received / self._waited < limits.min_rate_bytes_s):
            raise RequestTimeout(
                f"request body arrives at {self.received / self._waited:.0f} bytes/s, under "
                f"the minimum of {limits.min_rate_bytes_s}")

    async def wait(self, read: Awaitable[T]) -> T:
        """One read from the body, bounded in time, then the caps checked."""
        start = time.monotonic()
        try:
            async with asyncio.timeout(self._limits.idle_timeout_s):
                result = await read
        except TimeoutError:
            raise RequestTimeout(
                f"no request body bytes for {self._limits.idle_timeout_s:g} s") from None
        finally:
            self._waited += time.monotonic() - start
        self._check()
        return result

    async def multipart(self) -> AsyncIterator[BodyPartReader]:
        """The parts of a multipart body, in order; malformed bodies are a 400."""
        try:
            reader = await self._request.multipart()
            while True:
                part = await self.wait(reader.next())
                if part is None:
                    return
                if not isinstance(part, BodyPartReader):
                    raise InvalidInput("nested multipart bodies are not accepted")
                self.parts += 1
                if self._max_parts and self.parts > self._max_parts:
                    raise InvalidInput(f"at most {self._max_parts} parts per request")
                yield part
        except (ValueError, AssertionError, LookupError, HttpProcessingError) as exc:
            raise InvalidInput(f"malformed multipart body: {exc}") from None

    async def read_part(self, part: BodyPartReader, cap: int) -> bytes | None:
        """The part's bytes, or None (after discarding the rest) when it exceeds ``cap``."""
        buf = bytearray()
        while chunk := await self.wait(part.read_chunk(CHUNK)):
            buf += chunk
            if len(buf) > cap:
                while await self.wait(part.read_chunk(CHUNK)):
                    pass
                return None
        return bytes(buf)

    async def field(self, part: BodyPartReader) -> str:
        value = await self.read_part(part, FIELD_MAX)
        if value is None:
            raise InvalidInput(f"form field {part.name!r} is over {FIELD_MAX} bytes",
                               field=part.name)
        return value.decode("utf-8", "replace").strip()

    async def json(self) -> Any:
        """The JSON body; anything a client can send that is not JSON is a 400, never a 500
        (unknown charsets, bad content encodings, absurd nesting or integer sizes)."""
        content = self._request.content
        buf = bytearray()
        try:
            while chunk := await self.wait(content.readany()):
                buf += chunk
            text = bytes(buf).decode(self._request.charset or "utf-8")
            return json.loads(text)
        except (ValueError, RecursionError, LookupError, HttpProcessingError,
                web_protocol.RequestPayloadError) as exc:
            raise InvalidInput(f"body is not valid JSON: {exc}") from None

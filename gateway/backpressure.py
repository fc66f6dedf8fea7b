"""Back-pressure on ingest: answer 503 with Retry-After while more than ``max_queued`` images
wait to be indexed, instead of queueing without bound until the broker's alarms block every
publisher (search included, since query encoding goes through the same broker)."""

from __future__ import annotations

import asyncio
import time

from elastichash.errors import Unavailable
from elastichash.pipeline import Pipeline

# The depth is read at most this often: one broker round trip per second, not per upload.
REFRESH_S = 1.0


class BacklogGate:
    def __init__(self, max_queued: int, retry_after_s: float) -> None:
        self.max_queued = max_queued
        self.retry_after_s = retry_after_s
        self._depth: int | None = None
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def depth(self, pipeline: Pipeline) -> int | None:
        async with self._lock:
            if time.monotonic() - self._read_at >= REFRESH_S:
                self._depth = await pipeline.backlog()
                self._read_at = time.monotonic()
            return self._depth

    async def check(self, pipeline: Pipeline) -> None:
        """Raise :class:`Unavailable` (503 + Retry-After) while the backlog is at its cap. An
        unknown depth (broker away) lets the request through: its publish will say."""
        if self.max_queued <= 0:
            return
        depth = await self.depth(pipeline)
        if depth is not None and depth >= self.max_queued:
            raise Unavailable(
                f"{depth} images are waiting to be indexed (the limit is {self.max_queued}); "
                "retry later",
                retry_after=self.retry_after_s,
            )

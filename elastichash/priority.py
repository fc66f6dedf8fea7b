"""Interactive work first: a count of queries in flight that background work waits on.

Used where one process serves both (a search shares the gateway's event loop with uploads, a
query encoding shares the encoder worker with ingest batches). Background work calls
:meth:`QueryFirst.wait_turn` at its checkpoints: while a query is in flight it waits until
none is, but never longer than the patience, so a steady stream of queries slows background
work down without starving it.
"""

from __future__ import annotations

import asyncio

from prometheus_client import Counter, Gauge


class QueryFirst:
    """Counts queries in flight (``with gate:`` around each); background work waits for none,
    within a bound. A patience of 0 turns the priority off. ``waited`` counts the seconds
    background work waited, ``in_flight`` reads the queries in flight (metrics, optional)."""

    def __init__(self, patience_s: float, *, waited: Counter | None = None,
                 in_flight: Gauge | None = None) -> None:
        self._patience_s = patience_s
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._waited = waited
        if in_flight is not None:
            in_flight.set_function(lambda: self._in_flight)

    def __enter__(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def __exit__(self, *_: object) -> None:
        self._in_flight -= 1
        if not self._in_flight:
            self._idle.set()

    async def wait_turn(self) -> float:
        """Wait while a query is in flight, for at most the patience; the seconds waited."""
        if self._idle.is_set() or self._patience_s <= 0:
            return 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(self._patience_s):
                await self._idle.wait()
        except TimeoutError:
            pass
        waited = loop.time() - started
        if self._waited is not None:
            self._waited.inc(waited)
        return waited

"""Run the test server on a real port in a background thread with its own event loop, so one
server serves a whole test session whatever event loop each test runs in."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

from tests.esserver.app import create_app
from tests.esserver.faults import Faults
from tests.esserver.state import Cluster


class EsTestServer:
    def __init__(self, version: str = "8.17.0") -> None:
        self.cluster = Cluster(version=version)
        self.faults = Faults()
        self.log: list[tuple[str, str]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> None:
        self._runner = web.AppRunner(create_app(self.cluster, self.faults, self.log),
                                     access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server  # the bound socket's port: TCPSite has no public accessor
        self.port = server.sockets[0].getsockname()[1]

    def start(self) -> EsTestServer:
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            assert self._runner is not None
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, name="esserver", daemon=True)
        self._thread.start()
        if not ready.wait(10) or errors:
            raise RuntimeError(f"test server did not start: {errors}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

"""Running the gateway's HTTP server: bind first, then start, then say where it serves.

Compared with ``web.run_app``: the listening socket is bound before the application starts
(a port in use is reported at once, in one line, with a non-zero exit, instead of after the
model loaded and as a traceback), "serving" is printed only once the server accepts
connections, each client address may hold a bounded number of connections, idle keep-alive
connections are closed, and errors the HTTP parser answers itself (a malformed request line
or chunk) come back in the API's JSON error shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
from collections import Counter
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from aiohttp import web, web_protocol, web_server
from aiohttp.web_request import BaseRequest

from elastichash.settings import ServerSettings

log = logging.getLogger(__name__)


class PortInUse(OSError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"port {port} on {host} is in use")
        self.host = host
        self.port = port

    def __str__(self) -> str:
        return str(self.strerror)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket, or :class:`PortInUse`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(512)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from None
        raise
    sock.setblocking(False)
    return sock


class _JsonErrorHandler(web_protocol.RequestHandler):
    """Answers what the HTTP parser refuses (bad request line, bad chunk, header too long)
    in the API's error shape; logged at INFO, since any client can cause them at will."""

    def handle_error(self, request: BaseRequest, status: int = 500,
                     exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        log.info("refused a malformed request from %s: %s", request.remote, exc or message)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started")
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
        text = str(exc) if exc is not None else message or phrase
        body = {"error": {"code": "bad_request" if status == 400 else "http_error",
                          "message": f"malformed HTTP request: {text}", "field": None}}
        resp = web.Response(status=status, text=json.dumps(body),
                            content_type="application/json")
        resp.force_close()
        return resp


class _GuardedServer(web_server.Server):
    """Caps the connections one client address may hold; hands out JSON error handlers."""

    def __init__(self, *args: Any, per_client: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._per_client = per_client
        self._by_peer: Counter[str] = Counter()
        self._peer_of: dict[web_protocol.RequestHandler, str] = {}

    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonErrorHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: web_protocol.RequestHandler,
                        transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        peer = transport.get_extra_info("peername")
        addr = str(peer[0]) if peer else "?"
        self._peer_of[handler] = addr
        self._by_peer[addr] += 1
        if self._per_client and self._by_peer[addr] > self._per_client:
            log.info("closing a connection from %s: over %d connections from that address",
                     addr, self._per_client)
            transport.close()

    def connection_lost(self, handler: web_protocol.RequestHandler,
                        exc: BaseException | None = None) -> None:
        addr = self._peer_of.pop(handler, None)
        if addr is not None:
            self._by_peer[addr] -= 1
            if self._by_peer[addr] <= 0:
                del self._by_peer[addr]
        super().connection_lost(handler, exc)


class GuardedRunner(web.AppRunner):
    def __init__(self, app: web.Application, settings: ServerSettings, **kwargs: Any) -> None:
        super().__init__(app, keepalive_timeout=settings.keepalive_timeout_s, **kwargs)
        self._per_client = settings.max_connections_per_client

    async def _make_server(self) -> web_server.Server:
        # As AppRunner does, with the server class swapped for the guarded one.
        app = self.app
        loop = asyncio.get_running_loop()
        app._set_loop(loop)
        app.on_startup.freeze()
        await app.startup()
        app.freeze()
        return _GuardedServer(app._handle, request_factory=app._make_request, loop=loop,
                              per_client=self._per_client, **self._kwargs)


async def start(app: web.Application, sock: socket.socket, settings: ServerSettings,
                shutdown_timeout: float = 30.0) -> GuardedRunner:
    """Start ``app`` on a bound socket; the caller cleans the returned runner up."""
    runner = GuardedRunner(app, settings, access_log=None, handle_signals=False,
                           shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


def run(app: web.Application, host: str, port: int, settings: ServerSettings, *,
        shutdown_timeout: float = 30.0, announce: Callable[[str], None] | None = None) -> None:
    """Serve until SIGINT or SIGTERM. Raises :class:`PortInUse` (an ``OSError`` with errno
    ``EADDRINUSE``) before the application starts when the port is taken."""
    sock = bind(host, port)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        runner = await start(app, sock, settings, shutdown_timeout)
        try:
            shown = f"[{host}]" if ":" in host else host
            if announce is not None:
                announce(f"http://{shown}:{port}/")
            await stop.wait()
        finally:
            with contextlib.suppress(Exception):
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
            await runner.cleanup()

    asyncio.run(main())

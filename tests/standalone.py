"""Fixtures for gateway tests: a standalone app (real encoder, real embedded index) served
on a real port, and helpers to wait on conditions with a deadline."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from elastichash.cli.standalone import open_local
from elastichash.settings import ModelSettings, RemoteIndexSettings
from gateway.app import create_app
from gateway.config import GatewaySettings
from gateway.state import Components


def standalone_settings(data: Path, model: Path, **overrides: Any) -> GatewaySettings:
    settings = GatewaySettings(
        mode="standalone",
        model=ModelSettings(path=model, batch_size=16),
        index=RemoteIndexSettings(backend="embedded", data_dir=data / "index"),
        **overrides,
    )
    return settings


def standalone_factory(data: Path) -> Callable[[GatewaySettings], Any]:
    @asynccontextmanager
    async def components(cfg: GatewaySettings) -> AsyncIterator[Components]:
        async with open_local(cfg.model, cfg.limits, cfg.index, data / "spool",
                              cfg.spool, cfg.preview_px) as local:
            yield Components(local.pipeline, local.index, "embedded")

    return components


@asynccontextmanager
async def gateway_client(settings: GatewaySettings, data: Path) -> AsyncIterator[TestClient]:
    app = create_app(settings, standalone_factory(data))
    async with TestClient(TestServer(app)) as client:
        yield client


async def wait_for(check: Callable[[], Awaitable[bool]], within_s: float = 30.0,
                   what: str = "condition") -> None:
    deadline = time.monotonic() + within_s
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_indexed(client: TestClient, ids: list[str],
                       within_s: float = 60.0) -> dict[str, Any]:
    statuses: dict[str, Any] = {}

    async def all_done() -> bool:
        for i in ids:
            if statuses.get(i, {}).get("status") in ("indexed", "failed", "skipped"):
                continue
            resp = await client.get(f"/v1/images/{i}")
            statuses[i] = await resp.json()
        return all(s.get("status") in ("indexed", "failed", "skipped") for s in statuses.values())

    await wait_for(all_done, within_s, f"{len(ids)} images to be indexed")
    return statuses


def form_with_files(files: list[tuple[str, bytes, str]], **fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        form.add_field(name, value)
    for filename, data, ctype in files:
        form.add_field("file", data, filename=filename, content_type=ctype)
    return form


async def serve_static(routes: list[web.RouteDef], host: str = "127.0.0.1") -> web.AppRunner:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, host, 0)
    await site.start()
    return runner


def runner_port(runner: web.AppRunner) -> int:
    addrs = runner.addresses
    return int(addrs[0][1])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """``elastichash serve`` as a real subprocess on a free port."""

    def __init__(self, data: Path, model: Path | None, *extra: str,
                 env: dict[str, str] | None = None) -> None:
        self.env = env or {}
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.data = data
        args = ["serve", "--port", str(self.port), "--data", str(data)]
        if model is not None:
            args += ["--model", str(model)]
        self.args = [*args, *extra]
        self.log = data / "serve.log"
        self.proc: Any = None

    def start(self, timeout: float = 60.0) -> ServeProcess:
        import os
        import subprocess
        import sys
        import urllib.request

        self.data.mkdir(parents=True, exist_ok=True)
        exe = Path(sys.executable).with_name("elastichash")
        self.proc = subprocess.Popen(
            [str(exe), *self.args], stdout=self.log.open("wb"), stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env})
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited early:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.base}/readyz", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"serve not ready in {timeout} s:\n{self.log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> int:
        import signal
        import subprocess

        if self.proc is None or self.proc.poll() is not None:
            return int(self.proc.returncode) if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return int(self.proc.wait(30))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return int(self.proc.wait())

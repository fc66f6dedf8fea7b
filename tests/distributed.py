"""Helpers for the distributed tests: run the services as real subprocesses on free ports,
publish straight to the broker, and account for every submitted image (indexed, failed or
dead-lettered, never lost). Their fixtures are in ``tests/integration/conftest.py``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import aiohttp

from elastichash import amqp
from elastichash.ids import content_id
from elastichash.index.remote import RemoteIndex
from elastichash.messages import H_ID, H_REASON, decode_index, encode_ingest
from elastichash.pipeline import IngestItem
from elastichash.settings import AmqpSettings
from tests.broker import free_port
from tests.imagegen import make_image

ROOT = Path(__file__).resolve().parents[1]
SMALL = (64, 48)
PACKAGES = {
    "search-service": "search_service",
    "indexer-worker": "indexer_worker",
    "encoder-worker": "encoder_worker",
    "gateway": "gateway",
}  # small images: the machine is shared and has two cores


def images(seeds: range | Sequence[int]) -> list[IngestItem]:
    out = []
    for s in seeds:
        data = make_image(s, size=SMALL)
        out.append(
            IngestItem(
                id=content_id(data),
                data=data,
                source=f"gen-{s}.jpg",
                metadata={"seed": s},
                content_type="image/jpeg",
            )
        )
    return out


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def metric(self, name: str) -> float:
        async with aiohttp.ClientSession() as s, s.get(self.url("/metrics")) as r:
            text = await r.text()
        total = 0.0
        for line in text.splitlines():
            if line.startswith(name) and not line.startswith("#"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def tail(self, n: int = 40) -> str:
        lines = self.log.read_text(errors="replace").splitlines()
        return "\n".join(lines[-n:])


@dataclass
class Cluster:
    """Services for one test, all on one topology prefix; killed (by pid) at the end."""

    tmp: Path
    amqp_url: str
    prefix: str
    model: Path
    services: list[Service] = field(default_factory=list)
    search_port: int = field(default_factory=free_port)

    @property
    def search_url(self) -> str:
        return f"http://127.0.0.1:{self.search_port}"

    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("EH_")}
        env.update(
            ELASTICHASH_DATA=str(self.tmp / "data"), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1"
        )
        env.update(extra)
        return env

    def _spawn(self, name: str, command: str, port: int, env: dict[str, str]) -> Service:
        log = self.tmp / f"{name}-{len(self.services)}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                # `python -m <service package>`: the same main() `elastichash <command>` runs.
                [sys.executable, "-m", PACKAGES[command]],
                cwd=ROOT,
                env=self._env(env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        svc = Service(name, proc, port, log)
        self.services.append(svc)
        return svc

    def amqp_env(self, prefix: str) -> dict[str, str]:
        return {
            f"{prefix}AMQP__URL": self.amqp_url,
            f"{prefix}AMQP__PREFIX": self.prefix,
            f"{prefix}AMQP__PUBLISH_TIMEOUT_S": "60",
        }

    def search_service(self, index_env: dict[str, str] | None = None, **extra: str) -> Service:
        """The search service over the embedded index, or over what ``index_env`` names
        (``EH_SEARCH_INDEX__*``: the real engine in the end-to-end test)."""
        return self._spawn(
            "search",
            "search-service",
            self.search_port,
            {
                "EH_SEARCH_HOST": "127.0.0.1",
                "EH_SEARCH_PORT": str(self.search_port),
                **(index_env or {
                    "EH_SEARCH_INDEX__BACKEND": "embedded",
                    "EH_SEARCH_INDEX__DATA_DIR": str(self.tmp / "index"),
                }),
                **extra,
            },
        )

    def indexer(self, batch_max: int = 32, **extra: str) -> Service:
        port = free_port()
        env = {
            **self.amqp_env("EH_INDEXER_"),
            "EH_INDEXER_HEALTH_HOST": "127.0.0.1",
            "EH_INDEXER_HEALTH_PORT": str(port),
            "EH_INDEXER_INDEX__BACKEND": "remote",
            "EH_INDEXER_INDEX__SEARCH_URL": self.search_url,
            "EH_INDEXER_BATCH_MAX": str(batch_max),
            "EH_INDEXER_BATCH_MS": "50",
            **extra,
        }
        return self._spawn("indexer", "indexer-worker", port, env)

    def encoder(self, batch_max: int = 8, prefetch: int = 16, **extra: str) -> Service:
        port = free_port()
        env = {
            **self.amqp_env("EH_ENCODER_"),
            "EH_ENCODER_HEALTH_HOST": "127.0.0.1",
            "EH_ENCODER_HEALTH_PORT": str(port),
            "EH_ENCODER_MODEL__PATH": str(self.model),
            "EH_ENCODER_MODEL__INTRA_OP_THREADS": "1",
            "EH_ENCODER_BATCH_MAX": str(batch_max),
            "EH_ENCODER_BATCH_MS": "20",
            "EH_ENCODER_AMQP__PREFETCH": str(prefetch),
            **extra,
        }
        return self._spawn("encoder", "encoder-worker", port, env)

    def gateway(self, **extra: str) -> Service:
        port = free_port()
        return self._spawn(
            "gateway",
            "gateway",
            port,
            {
                **self.amqp_env("EH_GATEWAY_"),
                "EH_GATEWAY_HOST": "127.0.0.1",
                "EH_GATEWAY_PORT": str(port),
                "EH_GATEWAY_MODEL__PATH": str(self.model),
                "EH_GATEWAY_INDEX__BACKEND": "remote",
                "EH_GATEWAY_INDEX__SEARCH_URL": self.search_url,
                **extra,
            },
        )

    async def ready(
        self,
        svc: Service,
        path: str = "/readyz",
        timeout: float = 60,  # noqa: ASYNC109 - a deadline for a poll loop
    ) -> None:
        async def check() -> bool:
            if svc.proc.poll() is not None:
                raise RuntimeError(f"{svc.name} exited {svc.proc.returncode}:\n{svc.tail()}")
            try:
                async with aiohttp.ClientSession() as s, s.get(svc.url(path)) as r:
                    return r.status == 200
            except aiohttp.ClientError:
                return False

        await wait_for(check, timeout, f"{svc.name} ready")

    def stop_all(self) -> None:
        for svc in self.services:
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGKILL)
                svc.proc.wait(10)


async def publish(url: str, prefix: str, items: Sequence[IngestItem]) -> None:
    """Publish ingest messages as the gateway does (confirmed, persistent, mandatory)."""
    settings = AmqpSettings(url=url, prefix=prefix)
    conn = await amqp.connect(settings, "test-publisher")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        sem = asyncio.Semaphore(256)

        async def one(item: IngestItem) -> None:
            body, headers, ctype = encode_ingest(item)
            async with sem:
                await pub.publish(
                    amqp.RK_INGEST,
                    body,
                    timeout=30,
                    headers=headers,
                    message_id=item.id,
                    content_type=ctype,
                )

        await asyncio.gather(*(one(i) for i in items))
    finally:
        await conn.close()


async def publish_raw(url: str, prefix: str, body: bytes, headers: dict[str, object]) -> None:
    settings = AmqpSettings(url=url, prefix=prefix)
    conn = await amqp.connect(settings, "test-publisher")
    try:
        pub = amqp.Publisher(conn, amqp.Topology.of(settings))
        await pub.open()
        await pub.publish(amqp.RK_INGEST, body, timeout=10, headers=headers)
    finally:
        await conn.close()


async def dead_letters(url: str, prefix: str) -> list[tuple[str | None, str | None]]:
    """(x-eh-id, reason) of every message in the dead-letter queue (left in place)."""
    conn = await aio_pika.connect(url)
    out: list[tuple[str | None, str | None]] = []
    try:
        ch = await conn.channel()
        q = await ch.get_queue(f"{prefix}.dead", ensure=False)
        while (msg := await q.get(fail=False, no_ack=False)) is not None:
            h = msg.headers or {}
            reason = h.get(H_REASON)
            if reason is None and h.get("x-death"):
                reason = str(h["x-death"][0].get("reason"))  # type: ignore[index,union-attr]
            ident = h.get(H_ID)
            out.append((str(ident) if ident is not None else None, str(reason) if reason else None))
        await ch.close()  # unacked: back in the queue
    finally:
        await conn.close()
    return out


async def index_message_ids(url: str, queue: str) -> list[str]:
    """Ids of every message in an index queue (taken off it)."""
    conn = await aio_pika.connect(url)
    ids: list[str] = []
    try:
        ch = await conn.channel()
        q = await ch.get_queue(queue, ensure=False)
        while (msg := await q.get(fail=False, no_ack=True)) is not None:
            ids.append(decode_index(msg.body).id)
    finally:
        await conn.close()
    return ids


async def queue_depth(url: str, name: str) -> int:
    conn = await aio_pika.connect(url)
    try:
        ch = await conn.channel()
        q = await ch.declare_queue(name, passive=True)
        return int(q.declaration_result.message_count or 0)
    finally:
        await conn.close()


async def account(
    search_url: str,
    items: Sequence[IngestItem],
    timeout: float,  # noqa: ASYNC109 - a deadline for a poll loop
) -> tuple[set[str], set[str]]:
    """Wait until every item is indexed or has a failure record; returns (indexed, failed)."""
    index = RemoteIndex(search_url)
    await index.open()
    indexed: set[str] = set()
    failed: set[str] = set()
    ids = [i.id for i in items]

    async def settled() -> bool:
        for i in ids:
            if i in indexed or i in failed:
                continue
            if await index.get(i) is not None:
                indexed.add(i)
            elif await index.get_failure(i) is not None:
                failed.add(i)
            else:
                return False
        return True

    try:
        await wait_for(settled, timeout, "every image indexed or failed")
    finally:
        await index.close()
    return indexed, failed

"""The gateway's distributed :class:`~elastichash.pipeline.Pipeline`: ingest goes to the
broker with confirms, query encoding is an RPC to the encoder workers over their own queue.

The RPC replies come back on a per-gateway exclusive queue with a fixed name (``P.reply.<id>``)
rather than direct reply-to: a robust channel re-declares a named queue after a broker restart
and resumes consuming from it, so searches recover on their own. The model's metadata (bit
selection, name, fingerprint) is read from the model file without an inference session.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from elastichash import amqp
from elastichash.errors import ImageError, Unavailable
from elastichash.messages import BadMessage, decode_reply, encode_ingest
from elastichash.model.contract import ModelSpec
from elastichash.pipeline import IngestItem, QueryCode
from elastichash.settings import AmqpSettings, ModelSettings

log = logging.getLogger(__name__)


class AmqpPipeline:
    def __init__(self, settings: AmqpSettings, model: ModelSettings) -> None:
        self.settings = settings
        self.model_settings = model
        self.topo = amqp.Topology.of(settings)
        self._connection: AbstractRobustConnection | None = None
        self._publisher: amqp.Publisher | None = None
        self._rpc: amqp.Publisher | None = None
        self._reply_queue = f"{settings.prefix}.reply.{uuid.uuid4().hex[:12]}"
        self._pending: dict[str, asyncio.Future[QueryCode]] = {}
        self._spec: ModelSpec | None = None

    async def start(self) -> None:
        self._spec = await asyncio.to_thread(self._load_spec)
        self._connection = await amqp.connect(self.settings, "gateway")
        self._publisher = amqp.Publisher(self._connection, self.topo)
        await self._publisher.open()
        self._rpc = amqp.Publisher(self._connection, self.topo)
        await self._rpc.open()
        replies = await self._rpc.channel.declare_queue(
            self._reply_queue, exclusive=True, auto_delete=True, durable=False
        )
        await replies.consume(self._on_reply, no_ack=True)
        log.info("AMQP pipeline on %s (prefix %s)", self._safe_url(), self.settings.prefix)

    def _safe_url(self) -> str:
        url = self.settings.url
        return url.split("@", 1)[-1] if "@" in url else url

    async def stop(self) -> None:
        # submit() returns only after confirms, so nothing is buffered here to drain.
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Unavailable("gateway shutting down"))
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    def is_queued(self, image_id: str) -> bool | None:
        return None  # the backlog is in the broker; the gateway falls back on its own memory

    async def backlog(self) -> int | None:
        """Messages waiting in the ingest and index queues (passive declares)."""
        if self._rpc is None or self._connection is None or self._connection.is_closed:
            return None
        total = 0
        try:
            for rk in (amqp.RK_INGEST, amqp.RK_INDEX):
                q = await self._rpc.channel.declare_queue(self.topo.queue(rk), passive=True)
                total += q.declaration_result.message_count or 0
        except Exception as exc:  # stats must not fail because the broker is restarting
            log.debug("backlog unavailable: %s", exc)
            return None
        return total

    async def ready(self) -> bool:
        conn = self._connection
        return conn is not None and not conn.is_closed

    def _publisher_or_fail(self, rpc: bool = False) -> amqp.Publisher:
        pub = self._rpc if rpc else self._publisher
        if pub is None or not self._connection or self._connection.is_closed:
            raise Unavailable("not connected to the broker")
        return pub

    async def submit(self, items: Sequence[IngestItem]) -> None:
        pub = self._publisher_or_fail()
        timeout = self.settings.publish_timeout_s

        async def one(item: IngestItem) -> None:
            body, headers, content_type = encode_ingest(item)
            await pub.publish(
                amqp.RK_INGEST,
                body,
                timeout=timeout,
                headers=headers,
                message_id=item.id,
                content_type=content_type,
            )

        results = await asyncio.gather(*(one(i) for i in items), return_exceptions=True)
        for res in results:
            if isinstance(res, BaseException):
                # Some may be confirmed already: harmless, the client's retry overwrites.
                raise res

    async def encode_query(self, data: bytes) -> QueryCode:
        pub = self._publisher_or_fail(rpc=True)
        timeout = self.settings.rpc_timeout_s
        loop = asyncio.get_running_loop()
        corr = uuid.uuid4().hex
        fut: asyncio.Future[QueryCode] = loop.create_future()
        self._pending[corr] = fut
        started = loop.time()
        try:
            await pub.publish(
                amqp.RK_RPC,
                data,
                timeout=timeout,
                persistent=False,
                message_id=corr,
                correlation_id=corr,
                reply_to=self._reply_queue,
                # A request nobody waits for any more is dropped by the broker, not encoded.
                expiration=timeout,
                headers={"x-eh-v": 1},
            )
            remaining = max(0.0, timeout - (loop.time() - started))
            return await asyncio.wait_for(fut, remaining)
        except TimeoutError as exc:
            raise Unavailable(f"no encoder answered within {timeout:g}s", retry_after=1.0) from exc
        finally:
            self._pending.pop(corr, None)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        fut = self._pending.get(message.correlation_id or "")
        if fut is None or fut.done():
            return  # a late reply to a request that already timed out
        try:
            reply = decode_reply(message.body)
        except BadMessage as exc:
            fut.set_exception(Unavailable(f"bad reply from encoder: {exc.message}"))
            return
        if reply.ok and reply.code and reply.short:
            fut.set_result(
                QueryCode(code=bytes.fromhex(reply.code), short=bytes.fromhex(reply.short))
            )
        else:
            fut.set_exception(
                ImageError(reply.reason or "corrupt", reply.message or "cannot encode")
            )

    def _load_spec(self) -> ModelSpec:
        from elastichash.model.contract import load_spec
        from elastichash.model.registry import resolve_settings

        return load_spec(resolve_settings(self.model_settings))

    def short_of(self, code: bytes) -> bytes:
        spec = self._spec
        if spec is None:
            raise Unavailable("model metadata not loaded yet")
        return spec.short_of(code)

    def model_info(self) -> dict[str, Any]:
        return {} if self._spec is None else self._spec.info()

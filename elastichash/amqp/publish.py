"""Persistent, mandatory, confirmed publishing that survives a reconnect."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustConnection,
)

from elastichash.amqp.topology import CONNECTION_ERRORS, RECONNECT_INTERVAL_S, Topology, declare
from elastichash.errors import Unavailable
from elastichash.messages import H_DETAIL, H_QUEUE, H_REASON

log = logging.getLogger(__name__)


class Publisher:
    """Persistent, mandatory, confirmed publishing on its own channel.

    A publish that loses its connection before the confirm is sent again once the robust
    connection is back, until the deadline: the broker may then hold two copies, which is
    harmless because ids are deterministic and every consumer is idempotent per id.
    """

    def __init__(self, connection: AbstractRobustConnection, topo: Topology) -> None:
        self._connection = connection
        self._topo = topo
        self._channel: AbstractChannel | None = None
        self._exchange: AbstractExchange | None = None
        self._dlx: AbstractExchange | None = None
        self._default: AbstractExchange | None = None
        self.resent = 0

    async def open(self) -> None:
        self._channel = await self._connection.channel(
            publisher_confirms=True, on_return_raises=True
        )
        declared = await declare(self._channel, self._topo)
        self._exchange, self._dlx = declared.exchange, declared.dlx
        self._default = self._channel.default_exchange

    @property
    def channel(self) -> AbstractChannel:
        assert self._channel is not None, "Publisher.open() not called"
        return self._channel

    async def publish(
        self,
        routing_key: str,
        body: bytes,
        *,
        timeout: float,  # noqa: ASYNC109 - a deadline for the confirm, not a cancel scope
        headers: Mapping[str, Any] | None = None,
        message_id: str | None = None,
        content_type: str | None = None,
        persistent: bool = True,
        to: str = "main",
        **properties: Any,
    ) -> None:
        """``to``: ``main`` (the topology's exchange), ``dlx``, or ``default`` (the default
        exchange, for replies to a reply-to address)."""
        exchanges = {"main": self._exchange, "dlx": self._dlx, "default": self._default}
        exchange = exchanges[to]
        assert exchange is not None, "Publisher.open() not called"
        message = aio_pika.Message(
            body,
            headers=dict(headers or {}),
            content_type=content_type,
            # Returns are matched to their publish by message id (aiormq): always set one.
            message_id=message_id or uuid.uuid4().hex,
            delivery_mode=(
                aio_pika.DeliveryMode.PERSISTENT
                if persistent
                else aio_pika.DeliveryMode.NOT_PERSISTENT
            ),
            **properties,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        attempt = 0
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise Unavailable(f"broker did not confirm within {timeout:g}s", retry_after=1.0)
            try:
                # aiormq's own timeout: no extra task per publish, as wait_for would make.
                await exchange.publish(message, routing_key, mandatory=True, timeout=remaining)
                if attempt:
                    self.resent += 1
                return
            except TimeoutError as exc:
                raise Unavailable(
                    f"broker did not confirm within {timeout:g}s", retry_after=1.0
                ) from exc
            except aio_pika.exceptions.PublishError as exc:
                raise Unavailable(f"no queue bound for {routing_key!r}") from exc
            except aio_pika.exceptions.DeliveryError as exc:
                # Nacked: a queue at its limit (reject-publish) or a broker-side failure.
                raise Unavailable(f"broker refused the message for {routing_key!r}") from exc
            except CONNECTION_ERRORS as exc:
                attempt += 1
                log.warning(
                    "publish to %r interrupted (%s); resending after reconnect", routing_key, exc
                )
                await self._wait_ready(deadline)

    async def _wait_ready(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        channel = self.channel
        ready = getattr(channel, "ready", None)
        try:
            if ready is not None:
                await asyncio.wait_for(ready(), max(0.0, deadline - loop.time()))
            else:  # pragma: no cover - plain channels have nothing to wait for
                await asyncio.sleep(RECONNECT_INTERVAL_S)
        except TimeoutError:
            return  # the caller's loop sees the deadline and raises Unavailable

    async def dead_letter(
        self,
        message: AbstractIncomingMessage,
        queue: str,
        reason: str,
        detail: str,
        *,
        timeout: float,  # noqa: ASYNC109 - a deadline for the confirm, not a cancel scope
    ) -> None:
        """Publish a copy of ``message`` to the dead-letter exchange with why it was refused.
        A plain reject would dead-letter it too, but without a reason the operator can read."""
        headers = dict(message.headers or {})
        headers.update({H_REASON: reason, H_DETAIL: detail[:1000], H_QUEUE: queue})
        await self.publish(
            "",
            message.body,
            timeout=timeout,
            headers=headers,
            message_id=message.message_id,
            content_type=message.content_type,
            to="dlx",
        )

"""The consumer runtime every queue worker runs on: health server, connection, QoS,
consume, micro-batching, settling by :func:`~elastichash.amqp.outcome.outcome_for`, a drain
to one deadline, and one summary line. A worker supplies only what is its own: for each queue
it consumes, a handler that decodes, acts and reports.

Two kinds of intake:

* **batched** (:class:`Batched`): deliveries are buffered and handed on in batches of up to
  ``batch_max``, closed ``batch_ms`` after their first message; up to ``parallel`` batches are
  handled at once. The handler settles every message of its batch through
  :meth:`Runtime.settle`; whatever it left unsettled when it raised is requeued (bounded by
  the delivery limit), so no message sits unacked on the channel for ever.
* **direct** (:class:`Direct`): each delivery is handled as it arrives (the encode RPC) and
  settled by the outcome of its handler.

Shutdown (SIGTERM): readiness goes false, the consumers are cancelled (no new deliveries),
deliveries that were on the wire land (:func:`let_deliveries_land`), everything delivered is
handled and settled, channels close one by one, then the connection; all of it within one
deadline, ``drain_timeout_s`` from the signal, so the pod's termination grace can be set just
above it. Past the deadline the batches in flight are cancelled and never acked.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aio_pika.abc import (
    AbstractChannel,
    AbstractIncomingMessage,
    AbstractQueue,
    AbstractRobustConnection,
)
from prometheus_client import CollectorRegistry, Counter

from elastichash import health
from elastichash.amqp.connection import connect, is_up
from elastichash.amqp.consume import (
    close_connection,
    close_gracefully,
    collect_batch,
    drain_nowait,
    let_deliveries_land,
    settle,
)
from elastichash.amqp.outcome import ACK, Action, Outcome, outcome_for
from elastichash.amqp.publish import Publisher
from elastichash.amqp.topology import Topology, declare
from elastichash.errors import Unavailable
from elastichash.settings import AmqpSettings, WorkerSettings

log = logging.getLogger(__name__)
Msg = AbstractIncomingMessage


class RuntimeMetrics(Protocol):
    """The counters the runtime keeps; each worker's ``metrics.py`` names them its own way."""

    registry: CollectorRegistry
    consumed: Counter
    redelivered: Counter
    requeued: Counter
    dead: Counter  # labelled by ``reason``


class Slot:
    """One of a batched intake's ``parallel`` places, released once: by the handler as soon
    as its CPU step is done (so the next batch starts while this one waits for confirms), or
    by the runtime when the batch ends."""

    def __init__(self, sem: asyncio.Semaphore | None) -> None:
        self._sem = sem

    def release(self) -> None:
        if self._sem is not None:
            sem, self._sem = self._sem, None
            sem.release()


BatchHandler = Callable[[list[Msg], Slot], Awaitable[None]]


@dataclass
class Batched:
    routing_key: str
    handle: BatchHandler
    prefetch: int
    batch_max: int
    batch_ms: float
    parallel: int = 1


@dataclass
class Direct:
    routing_key: str
    handle: Callable[[Msg], Awaitable[None]]
    prefetch: int
    # A connection of its own (with its own publisher, :meth:`Runtime.publisher_for`): its
    # frames never queue behind bulk traffic on a shared socket, and the broker's flow
    # control of a busy publishing connection does not hold it up. For the encode RPC.
    own_connection: bool = False


@dataclass
class _Consumer:
    intake: Batched | Direct
    channel: AbstractChannel
    # The object the robust channel declared: consuming on it is what gets the consumer
    # restored after a reconnect.
    queue: AbstractQueue
    tag: str | None = None
    buffer: asyncio.Queue[Msg | None] = field(default_factory=asyncio.Queue)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    loop_task: asyncio.Task[None] | None = None


class Runtime:
    def __init__(
        self,
        name: str,
        settings: WorkerSettings,
        amqp: AmqpSettings,
        metrics: RuntimeMetrics,
        *,
        summary: Callable[[], Mapping[str, float]] = dict,
        also_ready: Callable[[], bool] = lambda: True,
    ) -> None:
        self.name = name
        self._also_ready = also_ready  # the worker's own dependencies (the indexer's index)
        self.settings = settings
        self.amqp = amqp
        self.topo = Topology.of(amqp)
        self.metrics = metrics
        self._summary = summary
        self._connection: AbstractRobustConnection | None = None
        self._publisher: Publisher | None = None
        # Intakes with a connection of their own: routing key -> (connection, publisher)
        self._own: dict[str, tuple[AbstractRobustConnection, Publisher]] = {}
        self._consumers: list[_Consumer] = []
        self._consuming = False
        self.stopping = False

    @property
    def publisher(self) -> Publisher:
        assert self._publisher is not None, "Runtime.run() not started"
        return self._publisher

    def publisher_for(self, routing_key: str) -> Publisher:
        """The publisher on the connection an intake consumes on (its own, or the main one)."""
        own = self._own.get(routing_key)
        return own[1] if own is not None else self.publisher

    def ready(self) -> bool:
        """Consuming, connected now, every channel open, not draining, and whatever else the
        worker depends on up."""
        if self.stopping or not self._consuming or self._publisher is None:
            return False
        if not self._also_ready():
            return False
        return is_up(
            self._connection, self._publisher.channel, *(c.channel for c in self._consumers)
        ) and all(is_up(conn, pub.channel) for conn, pub in self._own.values())

    # -- settling ------------------------------------------------------------------------

    async def settle(self, message: Msg, outcome: Outcome, queue: str) -> None:
        """Carry out an outcome. A dead-letter copy carries the reason and is confirmed before
        the ack; if it cannot be confirmed the message is requeued instead (then the delivery
        limit dead-letters it without a reason, which is still not a loss)."""
        action = outcome.action
        if action is Action.DEAD_LETTER:
            reason = outcome.reason or "bad_message"
            self.metrics.dead.labels(reason).inc()
            log.warning("dead-lettering %s: %s (%s)", message.message_id, reason, outcome.detail)
            try:
                await self.publisher.dead_letter(
                    message, queue, reason, outcome.detail, timeout=self.amqp.publish_timeout_s
                )
            except Unavailable as exc:
                log.warning("dead-letter copy of %s not confirmed (%s)", message.message_id, exc)
                action = Action.REQUEUE
            else:
                action = Action.ACK
        if action is Action.ACK:
            await settle(message, "ack")
        elif action is Action.REQUEUE:
            self.metrics.requeued.inc()
            log.info("requeueing %s: %s", message.message_id, outcome.detail)
            await settle(message, "requeue")

    async def settle_after(
        self,
        message: Msg,
        steps: Iterable[asyncio.Future[Any]],
        queue: str,
        success: Outcome = ACK,
    ) -> None:
        """Settle ``message`` by the first failure among ``steps`` (done futures), or by
        ``success`` when all of them succeeded."""
        error: BaseException | None = None
        for step in steps:
            error = asyncio.CancelledError() if step.cancelled() else step.exception()
            if error is not None:
                break
        if isinstance(error, asyncio.CancelledError):
            # A publish cancelled under us is not a shutdown of this handler: retry it.
            await self.settle(message, Outcome(Action.REQUEUE, detail="cancelled"), queue)
        else:
            await self.settle(message, success if error is None else outcome_for(error), queue)

    # -- running -------------------------------------------------------------------------

    async def run(self, intakes: list[Batched | Direct], stop: asyncio.Event) -> int:
        s = self.settings
        runner = await health.serve(
            health.start_app(self.metrics, self.ready), s.health_host, s.health_port
        )
        try:
            self._connection = await connect(self.amqp, self.name.replace(" ", "-"))
            self._publisher = Publisher(self._connection, self.topo)
            await self._publisher.open()
            for intake in intakes:
                conn = self._connection
                if isinstance(intake, Direct) and intake.own_connection:
                    name = f"{self.name.replace(' ', '-')}-{intake.routing_key}"
                    conn = await connect(self.amqp, name)
                    own = Publisher(conn, self.topo)
                    self._own[intake.routing_key] = (conn, own)
                    await own.open()
                channel = await conn.channel()
                await channel.set_qos(prefetch_count=intake.prefetch)
                queue = (await declare(channel, self.topo)).queues[intake.routing_key]
                self._consumers.append(_Consumer(intake, channel, queue))
            for c in self._consumers:
                c.tag = await c.queue.consume(self._callback(c))
                if isinstance(c.intake, Batched):
                    c.loop_task = asyncio.create_task(self._batch_loop(c))
                log.info("%s consuming %s (%s)", self.name, c.queue.name, _describe(c.intake))
            self._consuming = True
            await stop.wait()
            await self._drain()
            return 0
        finally:
            for conn, _ in self._own.values():
                await close_connection(conn)
            if self._connection is not None:
                await close_connection(self._connection)
            await runner.cleanup()
            self._log_summary()

    def _callback(self, c: _Consumer) -> Callable[[Msg], Awaitable[None]]:
        intake = c.intake

        async def on_message(message: Msg) -> None:
            self.metrics.consumed.inc()
            if message.redelivered:
                self.metrics.redelivered.inc()
            if isinstance(intake, Batched):
                c.buffer.put_nowait(message)
                return
            try:
                await intake.handle(message)
            except asyncio.CancelledError:
                raise  # never ack a cancelled handler
            except Exception as exc:
                log.exception("handling %s failed", message.message_id)
                await self.settle(message, outcome_for(exc), c.queue.name)
            else:
                if not message.processed:
                    await settle(message, "ack")

        return on_message

    async def _batch_loop(self, c: _Consumer) -> None:
        intake = c.intake
        assert isinstance(intake, Batched)
        slots = asyncio.Semaphore(intake.parallel)
        closed = False
        while not closed:
            batch, closed = await collect_batch(c.buffer, intake.batch_max, intake.batch_ms / 1000)
            if closed:  # take everything delivered before the cancel
                batch.extend(drain_nowait(c.buffer, 1 << 30))
            for i in range(0, len(batch), intake.batch_max):
                await slots.acquire()
                slot = Slot(slots)
                task = asyncio.create_task(self._handle(c, batch[i : i + intake.batch_max], slot))
                c.tasks.add(task)
                task.add_done_callback(functools.partial(self._done, c, slot))

    def _done(self, c: _Consumer, slot: Slot, task: asyncio.Task[None]) -> None:
        c.tasks.discard(task)
        slot.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("batch failed", exc_info=task.exception())

    async def _handle(self, c: _Consumer, batch: list[Msg], slot: Slot) -> None:
        assert isinstance(c.intake, Batched)
        try:
            await c.intake.handle(batch, slot)
        except asyncio.CancelledError:
            raise  # shutdown: never ack; the broker redelivers
        except Exception as exc:
            log.exception("batch of %d failed; requeueing what is unsettled", len(batch))
            outcome = Outcome(Action.REQUEUE, detail=repr(exc))
            for message in batch:
                if not message.processed:
                    await self.settle(message, outcome, c.queue.name)

    async def _drain(self) -> None:
        """Stop intake, finish what was delivered, close: one deadline for all of it."""
        self.stopping = True
        grace = self.settings.drain_timeout_s
        log.info("draining (grace %gs)", grace)
        deadline = asyncio.get_running_loop().time() + grace
        for c in self._consumers:
            try:
                async with asyncio.timeout_at(deadline):
                    if c.tag is not None:
                        await c.queue.cancel(c.tag)
            except Exception as exc:  # the broker may be gone: then nothing more arrives
                log.warning("cancel consumer %s: %s", c.tag, exc)
        await let_deliveries_land()
        batched = [c for c in self._consumers if c.loop_task is not None]
        for c in batched:
            c.buffer.put_nowait(None)
        try:
            async with asyncio.timeout_at(deadline):
                for c in batched:
                    assert c.loop_task is not None
                    await asyncio.shield(c.loop_task)
                    if c.tasks:
                        await asyncio.gather(*c.tasks)
                    # A delivery that landed after the loop closed its intake.
                    late = drain_nowait(c.buffer, 1 << 30)
                    assert isinstance(c.intake, Batched)
                    size = c.intake.batch_max
                    for i in range(0, len(late), size):
                        log.info("settling %d late deliveries", len(late[i : i + size]))
                        await self._handle(c, late[i : i + size], Slot(None))
        except TimeoutError:
            log.warning(
                "drain grace over: cancelling %d batches (they are not acked)",
                sum(len(c.tasks) for c in batched),
            )
        for c in batched:
            assert c.loop_task is not None
            c.loop_task.cancel()
            for task in list(c.tasks):
                task.cancel()
            await asyncio.gather(c.loop_task, *c.tasks, return_exceptions=True)
        # A little past the drain deadline: closing is bounded too (see close_gracefully).
        channels = [c.channel for c in self._consumers]
        channels += [pub.channel for _, pub in self._own.values()]
        if self._publisher is not None:
            channels.append(self._publisher.channel)
        await close_gracefully(*channels, deadline=deadline + 5.0)

    def _log_summary(self) -> None:
        m = self.metrics
        figures: dict[str, float] = {
            "consumed": health.total(m.consumed),
            **self._summary(),
            "dead_lettered": health.total(m.dead),
            "redelivered": health.total(m.redelivered),
            "requeued": health.total(m.requeued),
            "resent": (self._publisher.resent if self._publisher else 0)
            + sum(pub.resent for _, pub in self._own.values()),
        }
        log.info("%s stopped: %s", self.name, " ".join(f"{k}={v:g}" for k, v in figures.items()))


def _describe(intake: Batched | Direct) -> str:
    if isinstance(intake, Direct):
        return f"prefetch {intake.prefetch}, one at a time"
    return (
        f"prefetch {intake.prefetch}, batch {intake.batch_max}/{intake.batch_ms:g}ms,"
        f" {intake.parallel} in parallel"
    )

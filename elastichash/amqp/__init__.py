"""RabbitMQ plumbing shared by the gateway and the workers: topology, confirmed publish,
and the ack policy. Broker outcomes of our exceptions are decided here, in one place.

Topology (``P`` = ``AmqpSettings.prefix``), declared idempotently by every process at start:

* ``P`` direct exchange (durable); routing keys ``ingest``, ``index``, ``encode_rpc``.
* ``P.ingest`` and ``P.index``: quorum queues (replicated, fsync'd before the confirm), with
  ``x-delivery-limit`` so a message that keeps failing is dead-lettered instead of looping, and
  ``x-dead-letter-strategy=at-least-once`` (needs ``x-overflow=reject-publish``) so the
  dead-lettering itself cannot lose a message.
* ``P.dlx`` fanout exchange -> ``P.dead`` quorum queue: poison and over-limit messages.
* ``P.encode_rpc``: a *classic, non-durable* queue with a message TTL and a length cap.
  A query encoding is worthless after its caller's timeout, so durability and Raft replication
  would add latency for nothing; the TTL drops requests nobody waits for any more, and the
  cap (``reject-publish``) makes an overloaded encoder pool answer "unavailable" at once.
  The workers redeclare it after a broker restart (robust channels); callers simply retry.

What a consumer tells the broker about a message is decided in one place,
:func:`~elastichash.amqp.outcome.outcome_for`; the consumer runtime every worker runs on is
``elastichash.amqp.runtime``.
"""

from elastichash.amqp.connection import connect, is_up, safe_url
from elastichash.amqp.consume import (
    close_connection,
    close_gracefully,
    collect_batch,
    delivery_count,
    drain_nowait,
    let_deliveries_land,
    settle,
)
from elastichash.amqp.outcome import ACK, Action, Outcome, outcome_for
from elastichash.amqp.publish import Publisher
from elastichash.amqp.topology import (
    CONNECTION_ERRORS,
    DIRECT_REPLY_TO,
    RECONNECT_INTERVAL_S,
    RK_INDEX,
    RK_INGEST,
    RK_RPC,
    RPC_MAX_LENGTH,
    RPC_QUEUE_TTL_MS,
    Declared,
    Topology,
    declare,
    delete_topology,
    message_count,
)

__all__ = [
    "ACK",
    "CONNECTION_ERRORS",
    "DIRECT_REPLY_TO",
    "RECONNECT_INTERVAL_S",
    "RK_INDEX",
    "RK_INGEST",
    "RK_RPC",
    "RPC_MAX_LENGTH",
    "RPC_QUEUE_TTL_MS",
    "Action",
    "Declared",
    "Outcome",
    "Publisher",
    "Topology",
    "close_connection",
    "close_gracefully",
    "collect_batch",
    "connect",
    "declare",
    "delete_topology",
    "delivery_count",
    "drain_nowait",
    "is_up",
    "let_deliveries_land",
    "message_count",
    "outcome_for",
    "safe_url",
    "settle",
]

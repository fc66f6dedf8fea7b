"""The one place where an exception becomes a broker outcome.

Workers never decide ack / requeue / dead-letter inline: they report what happened to a
message (nothing: success; or the exception that stopped it) and :func:`outcome_for` says what
the broker is told. The table, most specific first:

==========================================  ===============  ==================================
what happened                               outcome          why
==========================================  ===============  ==================================
nothing (success)                           ack              the side effect is durable
``asyncio.CancelledError`` (shutdown)       leave            never ack a cancelled handler; the
                                                             broker redelivers it
connection or channel gone                  leave            acks cannot go to a new channel
                                                             (other delivery tags): the broker
                                                             redelivers it
``BadMessage`` / ``ImageError``             dead-letter      retrying the same bytes cannot
(any ``InvalidInput``)                      with its reason  succeed; the copy says why
``Unavailable`` (publish not confirmed,     requeue          may succeed later; the queue's
index down) and any other exception         (bounded)        delivery limit bounds the retries
==========================================  ===============  ==================================
"""

from __future__ import annotations

import asyncio
import enum
from dataclasses import dataclass

from elastichash.amqp.topology import CONNECTION_ERRORS
from elastichash.errors import ElasticHashError, InvalidInput


class Action(enum.Enum):
    ACK = "ack"
    REQUEUE = "requeue"
    DEAD_LETTER = "dead_letter"
    LEAVE = "leave"  # do nothing: the broker gives it back when the channel closes


@dataclass(frozen=True)
class Outcome:
    action: Action
    reason: str | None = None  # stable code for the dead-letter copy (``x-eh-reason``)
    detail: str = ""  # human-readable, on the copy (``x-eh-detail``) and in the log

    @classmethod
    def dead_letter(cls, reason: str, detail: str) -> Outcome:
        return cls(Action.DEAD_LETTER, reason, detail)


ACK = Outcome(Action.ACK)


def outcome_for(exc: BaseException | None) -> Outcome:
    """What to tell the broker about a message whose processing ended with ``exc``."""
    if exc is None:
        return ACK
    if isinstance(exc, asyncio.CancelledError):
        return Outcome(Action.LEAVE, detail="cancelled")
    if isinstance(exc, CONNECTION_ERRORS):
        return Outcome(Action.LEAVE, detail=f"connection lost: {exc}")
    if isinstance(exc, InvalidInput):
        # BadMessage and ImageError carry a reason; other refusals their error code.
        reason = getattr(exc, "reason", None) or exc.code
        return Outcome.dead_letter(str(reason), exc.message)
    if isinstance(exc, ElasticHashError):
        return Outcome(Action.REQUEUE, detail=exc.message)
    return Outcome(Action.REQUEUE, detail=repr(exc))

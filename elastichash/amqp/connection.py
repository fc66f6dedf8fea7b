"""The robust connection every process holds: connecting, whether it works now, and an
outage logged once.

aio-pika's robust connection reconnects by itself (every ``RECONNECT_INTERVAL_S``) and
restores channels, queues and consumers. Two things it does not give us:

* **Is it usable now?** ``is_closed`` stays False while it reconnects (it is only True after
  ``close()``), so readiness built on it said "ready" through a whole outage.
  :func:`is_up` asks the ``connected`` event (cleared the moment the broker goes) and every
  channel we use (a channel is closed until it is restored after a reconnect).
* **A quiet log.** It logs each failed attempt (WARNING or ERROR, once a second for the whole
  outage). :class:`_OutageLog` counts those instead and logs the outage once at WARNING and
  its end at INFO with the number of attempts.
"""

from __future__ import annotations

import logging
import time
import weakref
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustConnection

from elastichash.amqp.topology import RECONNECT_INTERVAL_S
from elastichash.errors import Unavailable
from elastichash.settings import AmqpSettings

log = logging.getLogger(__name__)


def safe_url(url: str) -> str:
    """The broker URL without its credentials, for messages."""
    return url.split("@", 1)[-1] if "@" in url else url


class _OutageLog:
    """One connection's outage: when it began and how many reconnect attempts failed."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url
        self.down_since: float | None = None
        self.attempts = 0

    def lost(self, conn: Any, exc: BaseException | None) -> None:
        if getattr(conn, "close_called", False) or getattr(conn, "is_closed", False):
            return  # our own close()
        if self.down_since is None:
            self.down_since = time.monotonic()
            self.attempts = 0
            log.warning(
                "%s lost the broker at %s (%s); reconnecting every %gs",
                self.name,
                self.url,
                exc or "connection closed",
                RECONNECT_INTERVAL_S,
            )

    def back(self, _conn: Any) -> None:
        if self.down_since is None:
            return
        log.info(
            "%s reconnected to the broker at %s after %.1fs (%d failed attempts)",
            self.name,
            self.url,
            time.monotonic() - self.down_since,
            self.attempts,
        )
        self.down_since = None
        self.attempts = 0


_OUTAGES: weakref.WeakKeyDictionary[Any, _OutageLog] = weakref.WeakKeyDictionary()


def _outage_in_progress() -> bool:
    for conn, outage in list(_OUTAGES.items()):
        connected = getattr(conn, "connected", None)
        if outage.down_since is not None or (connected is not None and not connected.is_set()):
            return True
    return False


class _OutageNoise(logging.Filter):
    """The libraries' own records of an outage, which :class:`_OutageLog` replaces: aio-pika's
    per-attempt reconnect records (counted), aiormq's "error when creating transport" each
    second and its "unexpected connection close" (our WARNING carries the same reason),
    aio-pika's failed channel-close callbacks while the transport is gone (the connection
    restores the channels when it is back), and aiormq's reader traceback (one line kept)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        args = record.args if isinstance(record.args, tuple) else ()
        if msg.startswith(_ATTEMPT_MESSAGES):
            outage = _OUTAGES.get(args[0]) if args else None
            if outage is None:
                return True
            if not msg.startswith("Connection to"):
                outage.attempts += 1
            return False
        if not _OUTAGES:
            return True  # not a process of ours (or nothing connected yet): leave it alone
        if msg.startswith("Unexpected connection close from remote"):
            return False
        if msg.startswith("error when creating transport") or (
            msg.startswith("Callback %r error") and args and "_on_close" in repr(args[0])
        ):
            return not _outage_in_progress()
        if record.exc_info and msg == "Cancelling cause reader exited abnormally":
            exc = record.exc_info[1]
            record.msg, record.args, record.exc_info = (
                "broker connection reader stopped: %r",
                (exc,),
                None,
            )
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


# aio-pika's per-attempt records (robust_connection.py); the connection is their first argument.
_ATTEMPT_MESSAGES = (
    "Connection attempt to",
    "Reconnect attempt failed",
    "Connection to %s closed",
)
_NOISY_LOGGERS = ("aio_pika.robust_connection", "aio_pika.tools", "aiormq.connection")
_FILTERS_INSTALLED = False


def _install_filters() -> None:
    global _FILTERS_INSTALLED
    if not _FILTERS_INSTALLED:
        noise = _OutageNoise()
        for name in _NOISY_LOGGERS:
            logging.getLogger(name).addFilter(noise)
        _FILTERS_INSTALLED = True


async def connect(settings: AmqpSettings, name: str) -> AbstractRobustConnection:
    """A robust connection: reconnects by itself and restores channels, queues, consumers.
    Raises :class:`Unavailable` naming the broker and the setting when it cannot connect now."""
    _install_filters()
    url = safe_url(settings.url)
    try:
        conn = await aio_pika.connect_robust(
            settings.url,
            client_properties={"connection_name": name},
            reconnect_interval=RECONNECT_INTERVAL_S,
            timeout=settings.publish_timeout_s,
        )
    except (TimeoutError, OSError, aiormq.exceptions.AMQPError) as exc:
        detail = str(exc) or type(exc).__name__
        raise Unavailable(
            f"cannot connect to the broker at {url}: {detail}", field="amqp.url"
        ) from exc
    outage = _OutageLog(name, url)
    _OUTAGES[conn] = outage
    conn.close_callbacks.add(outage.lost)
    conn.reconnect_callbacks.add(outage.back)
    return conn


def is_up(connection: AbstractRobustConnection | None, *channels: AbstractChannel | None) -> bool:
    """True when the connection is established now and every given channel is open (after a
    reconnect a channel stays closed until it has been restored)."""
    if connection is None or connection.is_closed:
        return False
    connected = getattr(connection, "connected", None)
    if connected is not None and not connected.is_set():
        return False
    return all(ch is not None and not ch.is_closed for ch in channels)

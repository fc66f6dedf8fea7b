"""The RabbitMQ the tests talk to: a readiness check (an AMQP handshake, not an open port),
free ports, and a private node of its own that a test may stop and start. The fixtures built on
these live in ``tests/integration/conftest.py``."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

BROKER_HOST = "127.0.0.1"
BROKER_PORT = 5672
BROKER_URL = f"amqp://guest:guest@{BROKER_HOST}:{BROKER_PORT}/"
RMQ_LIB = Path("/usr/lib/rabbitmq/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def broker_port() -> int:
    """A free port for a private broker: from ``EH_TEST_PORT_RANGE`` (``21000-21999``) when
    set, so that brokers a test starts stay inside a range agreed on a shared machine."""
    span = os.environ.get("EH_TEST_PORT_RANGE")
    return free_ports_in(span, 1)[0] if span else free_port()


def free_ports_in(span: str, n: int) -> list[int]:
    """``n`` distinct ports of ``span`` (``LOW-HIGH``) that bind now, picked at random. The
    bind is without SO_REUSEADDR, so a port still in TIME-WAIT is passed over."""
    import random

    low, high = (int(p) for p in span.split("-", 1))
    ports: list[int] = []
    for port in random.sample(range(low, high + 1), min(400, high - low + 1)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    raise RuntimeError(f"fewer than {n} free ports in {span}")


def rabbitmq_installed() -> bool:
    return shutil.which("rabbitmq-server") is not None or (RMQ_LIB / "rabbitmq-server").exists()


def port_open(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


async def wait_amqp(url: str, deadline_s: float) -> None:
    """Ready means an AMQP handshake succeeds, not just an open port."""
    import aio_pika

    end = time.monotonic() + deadline_s
    last: Exception | None = None
    while time.monotonic() < end:
        try:
            conn = await aio_pika.connect(url, timeout=2)
            await conn.close()
            return
        except Exception as exc:  # not up yet
            last = exc
            await asyncio.sleep(0.1)
    raise TimeoutError(f"broker at {url} not ready within {deadline_s}s: {last}")


@dataclass
class PrivateBroker:
    """A RabbitMQ node of its own (own ports, own data dir), which a test may stop and start."""

    base: Path
    name: str = field(default_factory=lambda: f"eh-test-{uuid.uuid4().hex[:8]}@localhost")
    port: int = field(default_factory=broker_port)
    dist_port: int = field(default_factory=broker_port)

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        (self.base / "plugins").write_text("")  # no management plugin: faster, fewer ports
        (self.base / "env.conf").write_text("")  # ignore the system rabbitmq-env.conf
        (self.base / "rabbit.conf").write_text(f"listeners.tcp.default = 127.0.0.1:{self.port}\n")
        env.update(
            HOME=str(self.base),  # the CLI and the node share this dir's Erlang cookie
            RABBITMQ_NODENAME=self.name,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "plugins"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "env.conf"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbit.conf"),
        )
        return env

    def _tool(self, name: str) -> str:
        # The /usr/sbin wrappers switch to the rabbitmq user (who cannot write our tmp dir);
        # the scripts behind them run as whoever calls them.
        direct = RMQ_LIB / name
        found = str(direct) if direct.exists() else shutil.which(name)
        if found is None:
            pytest.skip(f"{name} not installed")
        return found

    async def start(self, deadline_s: float = 60) -> None:
        await asyncio.to_thread(self._launch)
        await wait_amqp(self.url, deadline_s)

    def _launch(self) -> None:
        subprocess.run(
            [self._tool("rabbitmq-server"), "-detached"],
            env=self._env(),
            check=True,
            capture_output=True,
            timeout=30,
        )

    def stop(self) -> None:
        subprocess.run(
            [self._tool("rabbitmqctl"), "-n", self.name, "stop"],
            env=self._env(),
            capture_output=True,
            timeout=60,
        )
        end = time.monotonic() + 30
        while port_open("127.0.0.1", self.port) and time.monotonic() < end:
            time.sleep(0.05)

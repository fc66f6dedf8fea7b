"""The distributed stack in containers, end to end (``make test-containers``).

docker-compose.yml brought up by scripts/containers.sh on the images `make images` built:
200 images uploaded through the gateway, the encoder container killed mid-ingest and
started again, then every image must be searchable (nothing lost, nothing twice), by upload,
by id and by words (its labels, on the engine). Runs only when EH_TEST_CONTAINERS=1 (it
builds and starts containers); the stack is always taken down, whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.containers import (
    MARKS,
    host_ports,
    indexed_count,
    searchable_by_upload_and_id,
    searchable_by_words,
    settled_count,
    status,
    upload,
)
from tests.distributed import images, wait_for

pytestmark = MARKS

REPO = Path(__file__).resolve().parents[2]
SCRIPT = str(REPO / "scripts/containers.sh")
N = 200
PER_REQUEST = 20
# The test's own compose project, on host ports chosen when it starts (host_ports): apart from
# a user's stack (8080) and the suite's services (5672, 9200).
PROJECT = "ehtest"


@dataclass
class Stack:
    url: str
    engine: str
    project: str
    env: dict[str, str]
    healthy_s: float

    def cli(self, *args: str) -> str:
        out = subprocess.run([self.engine, *args], env=self.env, check=True, timeout=120,
                             capture_output=True, text=True)
        return out.stdout.strip()

    def container(self, service: str) -> str:
        ids = self.cli("ps", "-a", "-q",
                       "--filter", f"label=com.docker.compose.project={self.project}",
                       "--filter", f"label=com.docker.compose.service={service}").split()
        assert len(ids) == 1, f"{service}: containers {ids}"
        return ids[0]


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    gateway, engine_port, rabbit_ui = host_ports(3)
    stack_env = {"EH_STACK_PROJECT": PROJECT, "EH_HTTP_PORT": str(gateway),
                 "OPENSEARCH_PORT": str(engine_port), "RABBITMQ_UI_PORT": str(rabbit_ui)}
    env = {**os.environ, **stack_env}
    if Path(REPO / "deploy/local/containers.conf").exists():
        env.setdefault("CONTAINERS_CONF", str(REPO / "deploy/local/containers.conf"))
    engine = subprocess.run([SCRIPT, "engine"], env=env, check=True, capture_output=True,
                            text=True).stdout.strip()
    subprocess.run([SCRIPT, "down"], env=env, timeout=300, check=False)  # an interrupted run's
    try:
        started = time.monotonic()
        up = subprocess.run([SCRIPT, "up"], env=env, timeout=900, stdout=subprocess.PIPE,
                            text=True, check=False)
        healthy_s = time.monotonic() - started
        assert up.returncode == 0, "the stack did not come up healthy (its logs are above)"
        url = up.stdout.strip().splitlines()[-1]
        assert url == f"http://127.0.0.1:{gateway}", up.stdout
        print(f"\nstack up and healthy in {healthy_s:.0f} s ({engine})")
        yield Stack(url, engine, PROJECT, env, healthy_s)
    finally:
        subprocess.run([SCRIPT, "down"], env=env, timeout=300, check=False)


async def test_200_images_survive_an_encoder_kill_and_are_searchable_by_upload_id_and_words(
    stack: Stack,
) -> None:
    items = images(range(40_000, 40_000 + N))
    first, second = items[: N // 2], items[N // 2 :]
    encoder = stack.container("encoder")
    timeout = aiohttp.ClientTimeout(total=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        started = time.monotonic()
        accepted: list[str] = []
        for i in range(0, len(first), PER_REQUEST):
            accepted += await upload(http, stack.url, first[i : i + PER_REQUEST])

        # Kill the encoder as soon as it has made progress: it holds unacknowledged messages.
        async def some_indexed() -> bool:
            return await indexed_count(http, stack.url) > 0

        await wait_for(some_indexed, 300, "the first images indexed")
        stack.cli("kill", "--signal", "KILL", encoder)
        at_kill = await indexed_count(http, stack.url)
        print(f"encoder killed with {at_kill}/{len(first)} of the first batch indexed")
        # The rest arrives while no encoder runs: it must wait in the queue, not be lost.
        for i in range(0, len(second), PER_REQUEST):
            accepted += await upload(http, stack.url, second[i : i + PER_REQUEST])
        assert at_kill < N
        stack.cli("start", encoder)

        async def all_indexed() -> bool:
            return await indexed_count(http, stack.url) >= N

        await wait_for(all_indexed, 600, f"all {N} images indexed")
        elapsed = time.monotonic() - started
        print(f"{N} images indexed {elapsed:.0f} s after the first upload (encoder killed once)")
        assert sorted(accepted) == sorted(i.id for i in items)
        assert await settled_count(http, stack.url) == N  # none lost, none twice
        statuses = [await status(http, stack.url, i.id) for i in items]  # one at a time
        assert set(statuses) == {"indexed"}

        await searchable_by_upload_and_id(http, stack.url, items)
        await searchable_by_words(http, stack.url, items)

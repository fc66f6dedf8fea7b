"""The Kubernetes cpu overlay under ``podman kube play`` (``make test-containers``).

deploy/local/kube_play.py renders the overlay, leaves out what podman cannot run (it says
what), and starts the rest on the local images; 200 images uploaded through the gateway must
all be indexed once and be found by upload, by id and by words. Always taken down afterwards.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
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
    upload,
)
from tests.distributed import images, wait_for

pytestmark = MARKS

REPO = Path(__file__).resolve().parents[2]
HARNESS = [sys.executable, str(REPO / "deploy/local/kube_play.py")]
N = 200


@pytest.fixture(scope="module")
def gateway() -> Iterator[str]:
    subprocess.run([*HARNESS, "down"], timeout=300, check=False)  # an interrupted run's
    try:
        started = time.monotonic()
        port = host_ports(1)[0]
        up = subprocess.run([*HARNESS, "up", "--port", str(port)], timeout=900,
                            stdout=subprocess.PIPE, text=True, check=False)
        assert up.returncode == 0, "kube play did not come up (see above)"
        print(f"\nkube play ready in {time.monotonic() - started:.0f} s")
        yield up.stdout.strip().splitlines()[-1]
    finally:
        subprocess.run([*HARNESS, "down"], timeout=300, check=False)


async def test_kube_play_of_the_cpu_overlay_indexes_and_finds_200_images(gateway: str) -> None:
    items = images(range(50_000, 50_000 + N))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        accepted: list[str] = []
        for i in range(0, N, 20):
            accepted += await upload(http, gateway, items[i : i + 20])
        assert sorted(accepted) == sorted(i.id for i in items)

        async def all_indexed() -> bool:
            return await indexed_count(http, gateway) >= N

        await wait_for(all_indexed, 600, f"all {N} images indexed")
        assert await settled_count(http, gateway) == N
        await searchable_by_upload_and_id(http, gateway, items)
        await searchable_by_words(http, gateway, items)

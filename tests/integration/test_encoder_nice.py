"""A worker started with ``EH_ENCODER_INGEST_NICE`` encodes its backlog at that niceness: the
setting reaches the kernel's threads (the thread bounds: unit/test_encoder_threads.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from elastichash.ids import content_id
from elastichash.pipeline import IngestItem
from tests.distributed import Cluster, publish, wait_for
from tests.imagegen import make_image

Factory = Callable[[str, str], Cluster]


def _task_stats(pid: int) -> dict[int, tuple[int, int]]:
    """Each live thread of ``pid``: (nice value, CPU ticks used so far)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the thread ended meanwhile
            continue
        out[int(task.name)] = (int(fields[16]), int(fields[11]) + int(fields[12]))
    return out


@pytest.mark.rabbitmq
@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="per-thread nice values are Linux's")
async def test_a_worker_started_with_ingest_nice_encodes_its_backlog_at_that_niceness(
    rabbitmq_url: str, amqp_prefix: str, cluster_factory: Factory
) -> None:
    c = cluster_factory(rabbitmq_url, amqp_prefix)
    backlog = []
    for seed in range(300):
        data = make_image(70_000 + seed, size=(320, 240))
        backlog.append(IngestItem(id=content_id(data), data=data, content_type="image/jpeg"))
    await publish(rabbitmq_url, amqp_prefix, backlog)
    encoder = c.encoder(batch_max=16, prefetch=64, EH_ENCODER_INGEST_NICE="7")
    await c.ready(encoder)
    pid = encoder.proc.pid

    async def encoded(n: int) -> bool:
        return await encoder.metric("eh_encoder_encoded_total") >= n

    await wait_for(lambda: encoded(20), 60, "the first batches")
    before = _task_stats(pid)
    await wait_for(lambda: encoded(200), 120, "200 images encoded")
    after = _task_stats(pid)

    base = after[pid][0]  # the main thread (the event loop, queries) keeps the worker's own
    lowered = min(19, base + 7)
    if lowered == base:
        pytest.skip(f"the worker already runs at nice {base}: nothing lower to go to")
    assert {nice for nice, _ in after.values()} <= {base, lowered}
    used = {base: 0, lowered: 0}
    for tid, (nice, ticks) in after.items():
        used[nice] += ticks - before.get(tid, (nice, 0))[1]
    # Decoding and inference (all but the broker I/O) ran on the lowered threads.
    assert used[lowered] > 2 * used[base], used

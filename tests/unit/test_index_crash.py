"""Crash safety: a writer killed with SIGKILL at random points loses no acknowledged write."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from elastichash.index.base import SearchQuery
from elastichash.index.embedded import EmbeddedIndex

BATCH = 200

CHILD = r"""
import asyncio, sys
import numpy as np
from pathlib import Path
from elastichash.index.base import Document
from elastichash.index.embedded import EmbeddedIndex

async def main(path, start):
    idx = EmbeddedIndex(Path(path))
    await idx.open()
    b = start
    while True:
        rng = np.random.default_rng(b)
        codes = rng.integers(0, 256, (BATCH, 32), dtype=np.uint8)
        docs = [Document(f"b{b}_{i}", c.tobytes(), c[:8].tobytes(), metadata={"b": b})
                for i, c in enumerate(codes)]
        if b > 0:  # also replace a document of the previous batch
            c = codes[0]
            docs.append(Document(f"b{b-1}_0", c.tobytes(), c[:8].tobytes(), metadata={"b": b}))
        res = await idx.upsert(docs)
        assert all(r.ok for r in res)
        print(b, flush=True)
        b += 1

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
""".replace("BATCH", str(BATCH))


def run_and_kill(path: Path, start: int, acks_before_kill: int) -> list[int]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    acked: list[int] = []
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while len(acked) < acks_before_kill and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(int(line))
    # Kill mid-stream: the child is already inside its next batch (SQLite writes or commit).
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    acked += [int(x) for x in rest.split()]  # acked before the kill landed
    return acked


async def test_every_acknowledged_batch_survives_sigkill(tmp_path: Path) -> None:
    rng = random.Random(1234)
    start = 0
    all_acked: list[int] = []
    for _ in range(3):
        acked = run_and_kill(tmp_path, start, rng.randint(1, 6))
        assert acked, "child acknowledged nothing"
        all_acked += acked
        start = acked[-1] + 1  # a batch written but not acked may or may not be there
        idx = EmbeddedIndex(tmp_path)
        await idx.open()
        try:
            for b in all_acked:
                codes = np.random.default_rng(b).integers(0, 256, (BATCH, 32), dtype=np.uint8)
                for i in (1, BATCH - 1):
                    doc = await idx.get(f"b{b}_{i}")
                    assert doc is not None, (b, i)
                    assert doc.code == codes[i].tobytes(), (b, i)
                res = await idx.search(SearchQuery(
                        code=codes[1].tobytes(), short=codes[1, :8].tobytes(), k=1
                    ))
                assert res.hits[0].id == f"b{b}_1"
            assert await idx.count() >= BATCH * len(all_acked)
        finally:
            await idx.close()

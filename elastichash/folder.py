"""Ingest a folder tree into a running local pipeline, with a console progress bar."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from elastichash.ids import content_id
from elastichash.index.base import Index
from elastichash.model.preprocess import sniff_format
from elastichash.pipeline import IngestItem
from elastichash.standalone import LocalPipeline

log = logging.getLogger(__name__)

GROUP = 32


@dataclass
class FolderReport:
    files: int = 0
    submitted: int = 0
    already_indexed: int = 0
    not_images: int = 0
    unreadable: int = 0
    indexed: int = 0
    failed: int = 0
    not_image_examples: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.files} files: {self.indexed} indexed, {self.failed} failed, "
                f"{self.already_indexed} already indexed, {self.not_images} not images, "
                f"{self.unreadable} unreadable")


def walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


async def ingest_folder(pipeline: LocalPipeline, index: Index, root: Path, *,
                        progress: bool = True) -> FolderReport:
    report = FolderReport()
    files = await asyncio.to_thread(lambda: list(walk(root)))
    report.files = len(files)
    start_counts = dict(pipeline.counts)
    bar = tqdm(total=len(files), unit="img", desc=f"indexing {root}", disable=not progress,
               dynamic_ncols=True)

    async def follow() -> None:
        last = 0
        while True:
            done = (report.already_indexed + report.not_images + report.unreadable
                    + pipeline.counts["indexed"] - start_counts["indexed"]
                    + pipeline.counts["failed"] - start_counts["failed"])
            bar.update(done - last)
            last = done
            await asyncio.sleep(0.2)

    follower = asyncio.create_task(follow())
    group: list[IngestItem] = []
    try:
        for path in files:
            try:
                data = await asyncio.to_thread(path.read_bytes)
            except OSError as exc:
                log.warning("cannot read %s: %s", path, exc)
                report.unreadable += 1
                continue
            if sniff_format(data) is None:
                report.not_images += 1
                if len(report.not_image_examples) < 5:
                    report.not_image_examples.append(str(path))
                continue
            image_id = content_id(data)
            if await index.get(image_id) is not None:
                report.already_indexed += 1
                continue
            group.append(IngestItem(image_id, data, str(path),
                                    {"filename": path.name}))
            if len(group) >= GROUP:
                await pipeline.submit(group)
                report.submitted += len(group)
                group = []
        if group:
            await pipeline.submit(group)
            report.submitted += len(group)
        await pipeline.drained()
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        report.indexed = pipeline.counts["indexed"] - start_counts["indexed"]
        report.failed = pipeline.counts["failed"] - start_counts["failed"]
        bar.n = bar.total
        bar.close()
    return report

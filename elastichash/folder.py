"""Ingest a folder tree into a running local pipeline, with a console progress bar."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from elastichash.errors import ElasticHashError
from elastichash.index.base import Index
from elastichash.model.preprocess import sniff_format
from elastichash.pipeline import IngestItem
from elastichash.settings import ImageLimits
from elastichash.standalone import LocalPipeline
from elastichash.validate import inspect_image

log = logging.getLogger(__name__)

GROUP = 32


@dataclass
class FolderReport:
    files: int = 0
    submitted: int = 0
    already_indexed: int = 0
    not_images: int = 0
    unreadable: int = 0
    too_large: int = 0
    indexed: int = 0
    failed: int = 0
    not_image_examples: list[str] = field(default_factory=list)
    # (file, why) of each image that could not be indexed: refused before queueing (corrupt
    # header, too many pixels) or failed in the pipeline (truncated, cannot be decoded)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.files} files: {self.indexed} indexed, {self.failed} failed, "
                f"{self.already_indexed} already indexed, {self.not_images} not images, "
                f"{self.too_large} too large, {self.unreadable} unreadable")

    def failure_lines(self, limit: int = 50) -> list[str]:
        """One line per image that could not be indexed, naming the file and why."""
        lines = [f"not indexed: {path}: {why}" for path, why in self.failures[:limit]]
        if len(self.failures) > limit:
            lines.append(f"... and {len(self.failures) - limit} more")
        return lines


def walk(root: Path) -> Iterator[Path]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith("."):
                yield Path(dirpath) / name


def _read_candidate(path: Path, max_bytes: int, max_pixels: int) -> tuple[str, Any] | bytes:
    """The file's bytes if it is an image we take, else why not: ('not_image' | 'too_large'
    | 'unreadable', detail). Only the header is read from files that are not images."""
    try:
        if path.stat().st_size > max_bytes:
            return ("too_large", path.stat().st_size)
        with path.open("rb") as fh:
            if sniff_format(fh.read(16)) is None:
                return ("not_image", None)
            fh.seek(0)
            return fh.read()
    except OSError as exc:
        return ("unreadable", exc)


async def ingest_folder(pipeline: LocalPipeline, index: Index, root: Path, *,
                        progress: bool = True, limits: ImageLimits | None = None
                        ) -> FolderReport:
    report = FolderReport()
    limits = limits or ImageLimits()
    files = await asyncio.to_thread(lambda: list(walk(root)))
    report.files = len(files)
    start_counts = dict(pipeline.counts)
    bar = tqdm(total=len(files), unit="img", desc=f"indexing {root}", disable=not progress,
               dynamic_ncols=True)

    async def follow() -> None:
        last = 0
        while True:
            done = (report.already_indexed + report.not_images + report.unreadable
                    + report.too_large + refused
                    + pipeline.counts["indexed"] - start_counts["indexed"]
                    + pipeline.counts["failed"] - start_counts["failed"])
            bar.update(done - last)
            last = done
            await asyncio.sleep(0.2)

    submitted: dict[str, str] = {}  # content id -> file, to name the files that failed
    refused = 0
    follower = asyncio.create_task(follow())
    group: list[IngestItem] = []
    try:
        for path in files:
            got = await asyncio.to_thread(_read_candidate, path, limits.max_bytes,
                                          limits.max_pixels)
            if isinstance(got, tuple):
                kind, detail = got
                if kind == "not_image":
                    report.not_images += 1
                    if len(report.not_image_examples) < 5:
                        report.not_image_examples.append(str(path))
                elif kind == "too_large":
                    report.too_large += 1
                    log.warning("skipping %s: %s bytes is over the limit", path, detail)
                else:
                    report.unreadable += 1
                    log.warning("cannot read %s: %s", path, detail)
                continue
            try:
                info = await asyncio.to_thread(inspect_image, got, limits.max_pixels)
            except ElasticHashError as exc:
                # Not queued at all, so it is counted here, not in the index: an image that
                # cannot be used (corrupt header, too many pixels) is a failure like one the
                # pipeline finds, not an unreadable file.
                refused += 1
                report.failures.append((str(path), exc.message))
                continue
            if await index.get(info.content_id) is not None:
                report.already_indexed += 1
                continue
            metadata = {"filename": path.name, "width": info.width, "height": info.height}
            submitted[info.content_id] = str(path)
            group.append(IngestItem(info.content_id, got, str(path), metadata,
                                    info.content_type))
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
        failed_in_pipeline = pipeline.counts["failed"] - start_counts["failed"]
        report.failed = refused + failed_in_pipeline
        bar.n = bar.total
        bar.close()
    if failed_in_pipeline:
        report.failures += await _pipeline_failures(index, submitted, failed_in_pipeline)
    return report


async def _pipeline_failures(index: Index, submitted: dict[str, str],
                             count: int) -> list[tuple[str, str]]:
    """(file, why) of this run's images the pipeline recorded as failed: the newest failure
    records that name one of them (others may fail meanwhile, through a server's page)."""
    records = await index.recent_failures(limit=count + 100)
    found = [(submitted[f.id], f"{f.message or f.reason}") for f in records if f.id in submitted]
    return sorted(found)[:count]

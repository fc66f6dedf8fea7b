"""Standalone mode: encoder and indexer in one process, joined by an asyncio queue.

An accepted image is first written to a spool directory (fsync, then rename) so that a
crash between the 202 and the index write loses nothing: on the next start the spool is
replayed. The spool file is removed only after the index write (or failure record)
succeeded, which is the in-process analogue of "ack after the side effect is durable".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastichash.errors import ImageError, Unavailable
from elastichash.index.base import Document, Failure, Index
from elastichash.model.encoder import Encoder
from elastichash.pipeline import IngestItem, QueryCode, ingest_record

log = logging.getLogger(__name__)

THUMBNAIL_SIZE = 256


# A batch that fails to index as a whole (the store is locked by another process, the disk
# is full) is retried with backoff; after this many attempts its images are recorded failed.
MAX_ATTEMPTS = 5


@dataclass
class _Spooled:
    item: IngestItem
    path: Path | None
    attempts: int = 0


class LocalPipeline:
    """The ``Pipeline`` of standalone mode. Constructed without I/O; ``start()`` opens."""

    def __init__(
        self,
        encoder: Encoder,
        index: Index,
        spool_dir: Path | None,
        *,
        batch_size: int = 32,
        batch_ms: float = 20.0,
        queue_size: int = 4096,
        max_pixels: int = 64_000_000,
    ) -> None:
        self._encoder = encoder
        self._index = index
        self._spool = spool_dir
        self._batch_size = batch_size
        self._batch_s = batch_ms / 1000
        self._queue: asyncio.Queue[_Spooled] = asyncio.Queue(queue_size)
        # Retries never go back into the bounded queue: producers may have filled it, and
        # the worker must never block on (or fail at) handing work to itself.
        self._retry: deque[_Spooled] = deque()
        self._max_pixels = max_pixels
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self.counts = {"indexed": 0, "failed": 0, "retried": 0}
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._pending: Counter[str] = Counter()  # ids accepted and not yet indexed or failed

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        paths: list[Path] = []
        if self._spool is not None:
            paths = await asyncio.to_thread(self._list_spool)
        for path in paths:
            self._pending[path.stem] += 1
        self._tasks.append(asyncio.create_task(self._run(), name="standalone-indexer"))
        if paths:
            log.info("replaying %d spooled images from an earlier run", len(paths))
            self._idle.clear()
            self._tasks.append(asyncio.create_task(self._replay(paths), name="spool-replay"))

    async def stop(self, grace_s: float = 30.0) -> None:
        self._stopping = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained(), grace_s)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        log.info("standalone pipeline stopped: %d indexed, %d failed, %d left in the spool",
                 self.counts["indexed"], self.counts["failed"], sum(self._pending.values()))

    async def drained(self) -> None:
        """Wait until everything submitted so far is indexed or failed."""
        while self._pending:
            self._idle.clear()
            await self._idle.wait()

    async def ready(self) -> bool:
        return bool(self._tasks) and not self._tasks[0].done()

    @property
    def queued(self) -> int:
        return sum(self._pending.values())

    def is_queued(self, image_id: str) -> bool | None:
        return image_id in self._pending

    async def backlog(self) -> int | None:
        return self.queued

    # --- Pipeline protocol -------------------------------------------------------------

    async def submit(self, items: Sequence[IngestItem]) -> None:
        if self._stopping:
            raise Unavailable("shutting down; not accepting new images")
        spooled = await asyncio.to_thread(self._write_spool, list(items))
        for sp in spooled:
            self._pending[sp.item.id] += 1
            self._idle.clear()
            await self._queue.put(sp)
    async def encode_query(self, data: bytes) -> QueryCode:
        [result] = await self._encoder.aencode([data])
        if isinstance(result, ImageError):
            raise result
        return QueryCode(result.code, result.short)

    def short_of(self, code: bytes) -> bytes:
        return self._encoder.spec.short_of(code)

    def model_info(self) -> dict[str, Any]:
        return {**self._encoder.spec.info(), "providers": list(self._encoder.providers)}

    # --- spool -------------------------------------------------------------------------

    def _write_spool(self, items: list[IngestItem]) -> list[_Spooled]:
        if self._spool is None:
            return [_Spooled(it, None) for it in items]
        self._spool.mkdir(parents=True, exist_ok=True)
        out = []
        for it in items:
            final = self._spool / f"{it.id}.img"
            tmp = final.with_suffix(".tmp")
            meta = {"id": it.id, "source": it.source, "metadata": it.metadata,
                    "content_type": it.content_type}
            header = json.dumps(meta).encode()
            with open(tmp, "wb") as fh:
                fh.write(len(header).to_bytes(4, "big") + header + it.data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, final)
            out.append(_Spooled(it, final))
        if out:
            dfd = os.open(self._spool, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        return out

    def _list_spool(self) -> list[Path]:
        assert self._spool is not None
        self._spool.mkdir(parents=True, exist_ok=True)
        for tmp in self._spool.glob("*.tmp"):
            tmp.unlink(missing_ok=True)  # never acknowledged: the client got no 202
        return sorted(self._spool.glob("*.img"), key=lambda p: p.stat().st_mtime)

    @staticmethod
    def _read_spooled(path: Path) -> _Spooled | None:
        try:
            raw = path.read_bytes()
            n = int.from_bytes(raw[:4], "big")
            meta = json.loads(raw[4:4 + n])
            item = IngestItem(meta["id"], raw[4 + n:], meta.get("source"),
                              meta.get("metadata") or {}, meta.get("content_type"))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("dropping unreadable spool file %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        return _Spooled(item, path)

    async def _replay(self, paths: list[Path]) -> None:
        """Feed spooled images to the worker one file at a time, behind the server start."""
        for path in paths:
            sp = await asyncio.to_thread(self._read_spooled, path)
            if sp is None:
                self._done_id(path.stem)
                continue
            if sp.item.id != path.stem:  # a file renamed by hand: count it under its own id
                self._done_id(path.stem)
                self._pending[sp.item.id] += 1
            await self._queue.put(sp)

    # --- worker ------------------------------------------------------------------------

    def _done_id(self, image_id: str) -> None:
        self._pending[image_id] -= 1
        if self._pending[image_id] <= 0:
            del self._pending[image_id]
        if not self._pending:
            self._idle.set()

    async def _next_batch(self) -> list[_Spooled]:
        batch: list[_Spooled] = []
        while self._retry and len(batch) < self._batch_size:
            batch.append(self._retry.popleft())
        if not batch:
            batch.append(await self._queue.get())
        deadline = time.monotonic() + self._batch_s
        while len(batch) < self._batch_size:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), timeout))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._next_batch()
            self._inflight = len(batch)
            try:
                await self._process(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.exception("indexing a batch of %d failed", len(batch))
                await self._retry_later(batch, f"{type(exc).__name__}: {exc}")
            finally:
                self._inflight = 0

    async def _retry_later(self, batch: list[_Spooled], why: str) -> None:
        """Bounded retries with backoff; then the images are recorded failed, so nothing
        stays 'queued' for ever and the worker keeps going."""
        give_up: list[_Spooled] = []
        for sp in batch:
            sp.attempts += 1
            if sp.attempts >= MAX_ATTEMPTS:
                give_up.append(sp)
            else:
                self._retry.append(sp)
                self.counts["retried"] += 1
        if give_up:
            now = time.time()
            failures = [Failure(sp.item.id, "index_error", f"gave up after {MAX_ATTEMPTS} "
                                f"attempts: {why}", sp.item.source, now) for sp in give_up]
            try:
                await self._index.record_failures(failures)
            except Exception:
                log.exception("could not record %d failures either", len(failures))
            self.counts["failed"] += len(give_up)
            for sp in give_up:
                self._done_id(sp.item.id)
        attempts = max((sp.attempts for sp in batch), default=1)
        await asyncio.sleep(min(0.2 * 2 ** attempts, 10.0))

    async def _process(self, batch: list[_Spooled]) -> None:
        results = await self._encoder.aencode([sp.item.data for sp in batch],
                                              thumbnails=THUMBNAIL_SIZE)
        docs: list[Document] = []
        done: list[_Spooled] = []
        retry: list[_Spooled] = []
        failures: list[Failure] = []
        now = time.time()
        for sp, res in zip(batch, results, strict=True):
            record = ingest_record(sp.item, res, now)
            if isinstance(record, Failure):
                failures.append(record)
                done.append(sp)
            else:
                docs.append(record)
        if docs:
            written = await self._index.upsert(docs)
            by_id = {sp.item.id: sp for sp in batch}
            for wr in written:
                if wr.ok:
                    done.append(by_id[wr.id])
                    self.counts["indexed"] += 1
                elif wr.transient:
                    retry.append(by_id[wr.id])
                else:
                    failures.append(Failure(wr.id, "index_error", wr.error or "write failed",
                                            by_id[wr.id].item.source, now))
                    done.append(by_id[wr.id])
        if failures:
            await self._index.record_failures(failures)
            self.counts["failed"] += len(failures)
        await asyncio.to_thread(self._unspool, done)
        for sp in done:
            self._done_id(sp.item.id)
        if retry:
            await self._retry_later(retry, "transient index write failure")

    @staticmethod
    def _unspool(done: list[_Spooled]) -> None:
        for sp in done:
            if sp.path is not None:
                sp.path.unlink(missing_ok=True)

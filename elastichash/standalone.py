"""Standalone mode: encoder and indexer in one process, joined by an asyncio queue.

An accepted image is first written to a spool directory (fsync, then rename) so that a
crash between the 202 and the index write loses nothing: on the next start the spool is
replayed. The spool file is removed only after the index write (or failure record)
succeeded, which is the in-process analogue of "ack after the side effect is durable".

Every accepted upload has a spool file of its own, named by an acceptance sequence number
that grows across restarts, so concurrent or repeated uploads of one id never share (and
never delete) each other's file. The latest accepted upload of an id is the one that counts:
an older one still waiting when a newer one arrives is dropped instead of written, and the
replay after a crash runs in acceptance order.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import shutil
import time
import uuid
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from elastichash.errors import ImageError, InsufficientStorage, Unavailable
from elastichash.index.base import Document, Failure, Index
from elastichash.index.incoming import DuplicatePolicy, screen
from elastichash.model.encoder import Encoder
from elastichash.model.preprocess import THUMBNAIL_SIZE
from elastichash.pipeline import (
    IngestItem,
    QueryCode,
    UploadClock,
    ingest_record,
    with_preview,
)
from elastichash.settings import MAX_PIXELS

log = logging.getLogger(__name__)


# A batch that fails to index as a whole (the store is locked by another process, the disk
# is full) is retried with backoff; after this many attempts its images are recorded failed.
MAX_ATTEMPTS = 5


# Spool files are named "<sequence>-<random>~<id>.img": the sequence orders the replay and
# decides which of two uploads of one id is the latest; the id can be read without opening.
SPOOL_SUFFIX = ".img"


@dataclass
class _Spooled:
    item: IngestItem  # stamped with its seq (the upload's version) when spooled
    path: Path | None
    attempts: int = 0
    size: int = 0


def _spool_name(seq: int, image_id: str) -> str:
    return f"{seq:020d}-{uuid.uuid4().hex[:8]}~{image_id}{SPOOL_SUFFIX}"


def _parse_spool_name(path: Path) -> tuple[int, str]:
    """(sequence, id) of a spool file; files of older versions were named "<id>.img"."""
    stem = path.name[: -len(SPOOL_SUFFIX)]
    head, sep, image_id = stem.partition("~")
    if sep and head.split("-", 1)[0].isdigit():
        return int(head.split("-", 1)[0]), image_id
    return int(path.stat().st_mtime_ns), stem


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
        max_pixels: int = MAX_PIXELS,
        spool_max_bytes: int = 4 * 1024**3,
        spool_min_free_bytes: int = 256 * 1024**2,
        duplicates: DuplicatePolicy | None = None,
        preview_px: int = 0,
    ) -> None:
        self._encoder = encoder
        self._preview_px = preview_px
        self._duplicates = duplicates or DuplicatePolicy()
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
        self.counts = {"indexed": 0, "failed": 0, "retried": 0, "superseded": 0,
                       "skipped_duplicates": 0}
        self._idle = asyncio.Event()
        self._idle.set()
        self._inflight = 0
        self._pending: Counter[str] = Counter()  # ids accepted and not yet indexed or failed
        # The sequence of the latest accepted upload of each pending id: older ones are
        # superseded and dropped, so the latest acknowledged upload is what the index holds.
        self._latest: dict[str, int] = {}
        self._clock = UploadClock()
        self._spool_max = spool_max_bytes
        self._spool_min_free = spool_min_free_bytes
        self.spool_bytes = 0  # bytes of spool files accepted and not yet removed

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        paths: list[tuple[int, str, Path]] = []
        if self._spool is not None:
            paths = await asyncio.to_thread(self._list_spool)
        for seq, image_id, path in paths:
            self._accept(image_id, seq)
            self._clock.observe(seq)
            with contextlib.suppress(OSError):
                self.spool_bytes += path.stat().st_size
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
        """All of ``items`` are spooled and queued, or (on an exception) none of them is."""
        if self._stopping:
            raise Unavailable("shutting down; not accepting new images")
        spooled = await asyncio.to_thread(self._write_spool, list(items))
        for sp in spooled:
            self._accept(sp.item.id, sp.item.seq)
            self.spool_bytes += sp.size
        for sp in spooled:
            await self._queue.put(sp)

    def _accept(self, image_id: str, seq: int) -> None:
        self._pending[image_id] += 1
        self._latest[image_id] = max(seq, self._latest.get(image_id, seq))
        self._idle.clear()

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

    def _next_seq(self) -> int:
        # Wall-clock nanoseconds (UploadClock), so sequences keep growing across restarts.
        return self._clock.next()

    def _check_room(self, nbytes: int) -> None:
        assert self._spool is not None
        if self.spool_bytes + nbytes > self._spool_max:
            raise Unavailable(
                f"the spool holds {self.spool_bytes} bytes of images waiting to be indexed, "
                f"at its cap of {self._spool_max}; retry when it has drained", retry_after=5.0)
        try:
            free = shutil.disk_usage(self._spool).free
        except OSError:
            return
        if free - nbytes < self._spool_min_free:
            raise InsufficientStorage(
                f"the disk of the spool has {free} bytes free; refusing to fill it",
                retry_after=30.0)

    def _write_spool(self, items: list[IngestItem]) -> list[_Spooled]:
        if self._spool is None:
            return [_Spooled(replace(it, seq=self._next_seq()), None)
                    for it in items]
        self._spool.mkdir(parents=True, exist_ok=True)
        out: list[_Spooled] = []
        tmp: Path | None = None
        try:
            self._check_room(sum(len(it.data) for it in items))
            for it in items:
                seq = self._next_seq()
                it = replace(it, seq=seq)
                final = self._spool / _spool_name(seq, it.id)
                tmp = final.with_suffix(".tmp")
                meta = {"id": it.id, "source": it.source, "metadata": it.metadata,
                        "content_type": it.content_type, "seq": seq}
                header = json.dumps(meta).encode()
                with open(tmp, "wb") as fh:
                    fh.write(len(header).to_bytes(4, "big") + header + it.data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, final)
                tmp = None
                out.append(_Spooled(it, final, size=final.stat().st_size))
            if out:
                dfd = os.open(self._spool, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except BaseException as exc:
            # Nothing of a failed submit stays behind: the caller answers for none of it,
            # so none of it may be replayed later either.
            for path in [tmp, *(sp.path for sp in out)]:
                if path is not None:
                    with contextlib.suppress(OSError):
                        path.unlink()
            if isinstance(exc, OSError):
                if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise InsufficientStorage(f"the spool's disk is full: {exc.strerror}",
                                              retry_after=30.0) from None
                raise Unavailable(f"cannot write to the spool: {exc.strerror or exc}",
                                  retry_after=5.0) from None
            raise
        return out

    def _list_spool(self) -> list[tuple[int, str, Path]]:
        assert self._spool is not None
        self._spool.mkdir(parents=True, exist_ok=True)
        for tmp in self._spool.glob("*.tmp"):
            tmp.unlink(missing_ok=True)  # never acknowledged: the client got no 202
        found = []
        for path in self._spool.glob(f"*{SPOOL_SUFFIX}"):
            with contextlib.suppress(OSError):  # removed meanwhile
                found.append((*_parse_spool_name(path), path))
        return sorted(found)

    @staticmethod
    def _read_spooled(seq: int, path: Path) -> _Spooled | None:
        try:
            raw = path.read_bytes()
            n = int.from_bytes(raw[:4], "big")
            meta = json.loads(raw[4:4 + n])
            item = IngestItem(meta["id"], raw[4 + n:], meta.get("source"),
                              meta.get("metadata") or {}, meta.get("content_type"), seq)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("dropping unreadable spool file %s: %s", path, exc)
            path.unlink(missing_ok=True)
            return None
        return _Spooled(item, path, size=len(raw))

    async def _replay(self, paths: list[tuple[int, str, Path]]) -> None:
        """Feed spooled images to the worker one file at a time, behind the server start."""
        for seq, image_id, path in paths:
            sp = await asyncio.to_thread(self._read_spooled, seq, path)
            if sp is None:
                self._done_id(image_id)
                continue
            if sp.item.id != image_id:  # a file renamed by hand: count it under its own id
                self._done_id(image_id)
                self._accept(sp.item.id, seq)
            await self._queue.put(sp)

    # --- worker ------------------------------------------------------------------------

    def _done_id(self, image_id: str) -> None:
        self._pending[image_id] -= 1
        if self._pending[image_id] <= 0:
            del self._pending[image_id]
            self._latest.pop(image_id, None)
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
                                f"attempts: {why}", sp.item.source, now, sp.item.seq)
                        for sp in give_up]
            try:
                await self._index.record_failures(failures)
            except Exception:
                log.exception("could not record %d failures either", len(failures))
            self.counts["failed"] += len(give_up)
            for sp in give_up:
                self._done_id(sp.item.id)
        attempts = max((sp.attempts for sp in batch), default=1)
        await asyncio.sleep(min(0.2 * 2 ** attempts, 10.0))

    def _superseded(self, sp: _Spooled) -> bool:
        return sp.item.seq < self._latest.get(sp.item.id, sp.item.seq)

    async def _process(self, batch: list[_Spooled]) -> None:
        # A newer upload of the same id is waiting (or in this batch): this one is dropped,
        # so it can never overwrite what the client sent last.
        done = [sp for sp in batch if self._superseded(sp)]
        batch = [sp for sp in batch if not self._superseded(sp)]
        self.counts["superseded"] += len(done)
        results = await self._encoder.aencode([sp.item.data for sp in batch],
                                              thumbnails=THUMBNAIL_SIZE)
        docs: list[Document] = []
        doc_sps: list[_Spooled] = []
        retry: list[_Spooled] = []
        failures: list[Failure] = []
        skipped: list[Failure] = []
        now = time.time()
        for sp, res in zip(batch, results, strict=True):
            record = ingest_record(sp.item, res, now)
            if isinstance(record, Failure):
                failures.append(record)
                done.append(sp)
            else:
                docs.append(record)
                doc_sps.append(sp)
        if docs and self._duplicates.active:
            docs, skipped = await screen(self._index, docs, self._duplicates)
            keep = {d.id for d in docs}
            done += [sp for sp in doc_sps if sp.item.id not in keep]
            doc_sps = [sp for sp in doc_sps if sp.item.id in keep]
        if docs and self._preview_px:
            size, limit, budget = self._preview_px, self._max_pixels, self._encoder.budget
            docs = await asyncio.to_thread(lambda: [
                with_preview(d, sp.item, size, limit, budget)
                for d, sp in zip(docs, doc_sps, strict=True)])
        if docs:
            written = await self._index.upsert(docs)
            for sp, wr in zip(doc_sps, written, strict=True):
                if wr.ok:
                    done.append(sp)
                    self.counts["superseded" if wr.superseded else "indexed"] += 1
                elif wr.transient:
                    retry.append(sp)
                else:
                    failures.append(Failure(wr.id, "index_error", wr.error or "write failed",
                                            sp.item.source, now, sp.item.seq))
                    done.append(sp)
        if failures or skipped:
            await self._index.record_failures(failures + skipped)
            self.counts["failed"] += len(failures)
            self.counts["skipped_duplicates"] += len(skipped)
        await asyncio.to_thread(self._unspool, done)
        self.spool_bytes -= sum(sp.size for sp in done)
        for sp in done:
            self._done_id(sp.item.id)
        if retry:
            await self._retry_later(retry, "transient index write failure")

    @staticmethod
    def _unspool(done: list[_Spooled]) -> None:
        for sp in done:
            if sp.path is not None:
                sp.path.unlink(missing_ok=True)

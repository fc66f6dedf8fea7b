"""Images -> codes: bounded parallel decoding overlapping batched ONNX inference.

Thread-safe: onnxruntime's ``InferenceSession.run`` may be called from several threads, and
the decode pool is shared. One bad image in a batch costs only itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash import codes
from elastichash.errors import ImageError, InvalidInput, ModelContractError
from elastichash.model.contract import ModelSpec, load_spec
from elastichash.model.preprocess import (
    DecodeBudget,
    decoder_message,
    load_image,
    load_image_and_thumbnail,
    release_freed_buffers,
)
from elastichash.model.session import create_session
from elastichash.settings import ImageLimits, ModelSettings

log = logging.getLogger(__name__)

U8 = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Encoded:
    code: bytes  # 32 bytes, the long code
    short: bytes  # 8 bytes, the short code
    thumbnail: bytes | None = None  # JPEG, when asked for (made from the same decode)


class Encoder:
    def __init__(
        self,
        spec: ModelSpec,
        session: Any,
        providers: list[str],
        settings: ModelSettings,
        limits: ImageLimits,
    ) -> None:
        self.spec = spec
        self.providers = providers
        self.settings = settings
        self.limits = limits
        self._session = session
        self._batch_size = max(1, settings.batch_size)
        self._workers = settings.decode_workers or (os.cpu_count() or 1)
        self._decode_pool: ThreadPoolExecutor | None = None
        self._infer_pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # One budget for every decode this encoder runs: ingest batches and query images.
        self.budget = DecodeBudget(limits.decode_memory_bytes)
        release_freed_buffers()

    @classmethod
    def load(cls, settings: ModelSettings, limits: ImageLimits) -> Encoder:
        """Resolve (and build, for the default) the model, check it, open it, warm it up."""
        from elastichash.model.default import ensure_default_model

        path = Path(settings.path) if settings.path is not None else ensure_default_model()
        spec = load_spec(path)
        session, providers = create_session(path, settings)
        enc = cls(spec, session, providers, settings, limits)
        enc._warm_up()
        log.info(
            "encoder ready: model %s, providers %s, batch %d, decode workers %d",
            spec.fingerprint,
            providers,
            enc._batch_size,
            enc._workers,
        )
        return enc

    def _warm_up(self) -> None:
        s = self.spec.input_size
        long, short = self.encode_arrays(np.zeros((1, 3, s, s), dtype=np.float32))
        if long.shape != (1, codes.LONG_BYTES) or short.shape != (1, codes.SHORT_BYTES):
            raise ModelContractError(f"model produced codes of shape {long.shape}/{short.shape}")

    # --- inference --------------------------------------------------------------------------

    def encode_arrays(self, batch: npt.NDArray[np.float32]) -> tuple[U8, U8]:
        """(N, 3, S, S) preprocessed images -> (long (N, 32), short (N, 8)) packed codes."""
        x = np.ascontiguousarray(batch, dtype=np.float32)
        names = [self.spec.code_output]
        if self.spec.short_output:
            names.append(self.spec.short_output)
        outs = self._session.run(names, {self.spec.input_name: x})
        values = np.asarray(outs[0])
        if values.ndim != 2 or values.shape != (len(x), codes.LONG_BITS):
            raise ModelContractError(f"output {names[0]!r} has shape {values.shape}")
        long = codes.binarize(values)
        if self.spec.short_output:
            short = codes.binarize(np.asarray(outs[1]))
        else:
            assert self.spec.short_bits is not None
            short = codes.select_bits(long, self.spec.short_bits)
        return long, short

    def short_of(self, code: bytes) -> bytes:
        """The short code of a user-supplied long code (the model's own bit selection)."""
        arr = codes.as_array(code)
        if arr.shape != (codes.LONG_BYTES,):
            raise InvalidInput(
                f"a long code is {codes.LONG_BYTES} bytes, got {arr.shape[0]}", field="code"
            )
        if self.spec.short_bits is None:
            raise InvalidInput(
                "this model computes its short code itself; a raw long code cannot be searched "
                "without it",
                field="code",
            )
        return codes.select_bits(arr, self.spec.short_bits).tobytes()

    # --- bytes -> codes ---------------------------------------------------------------------

    def _pools(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        with self._lock:
            if self._decode_pool is None:
                self._decode_pool = ThreadPoolExecutor(self._workers, thread_name_prefix="decode")
            if self._infer_pool is None:
                self._infer_pool = ThreadPoolExecutor(2, thread_name_prefix="encode")
            return self._decode_pool, self._infer_pool

    def _decode(self, data: bytes, thumb: int = 0) -> tuple[npt.NDArray[np.float32], bytes | None]:
        try:
            if thumb:
                return load_image_and_thumbnail(data, self.spec, thumb, self.limits.max_pixels,
                                                self.budget)
            return load_image(data, self.spec, self.limits.max_pixels, self.budget), None
        except ImageError:
            raise
        except Exception as exc:  # a decoder bug must still cost only this image
            log.warning("unexpected decode failure: %r", exc)
            raise ImageError("corrupt",
                             f"image cannot be decoded: {decoder_message(exc)}") from None

    def encode_bytes(
        self, items: list[bytes], thumbnails: int = 0
    ) -> list[Encoded | ImageError]:
        """Encode many images; results in input order, an ImageError in place of a bad one.

        ``thumbnails``: also make a JPEG thumbnail of at most this size from the same decode.
        """
        pool, _ = self._pools()
        results: list[Encoded | ImageError | None] = [None] * len(items)
        window = 2 * self._batch_size  # bounds decoded-but-not-encoded memory
        pending: deque[tuple[int, Future[tuple[npt.NDArray[np.float32], bytes | None]]]] = (
            deque()
        )
        feed = iter(enumerate(items))

        def refill() -> None:
            while len(pending) < window:
                nxt = next(feed, None)
                if nxt is None:
                    return
                pending.append((nxt[0], pool.submit(self._decode, nxt[1], thumbnails)))

        batch_idx: list[int] = []
        batch: list[npt.NDArray[np.float32]] = []
        thumbs: list[bytes | None] = []

        def flush() -> None:
            long, short = self.encode_arrays(np.stack(batch))
            for k, i in enumerate(batch_idx):
                results[i] = Encoded(long[k].tobytes(), short[k].tobytes(), thumbs[k])
            batch_idx.clear()
            batch.clear()
            thumbs.clear()

        refill()
        while pending:
            i, fut = pending.popleft()
            refill()  # keep the decoders busy while this thread runs inference
            try:
                arr, thumb = fut.result()
            except ImageError as exc:
                results[i] = exc
                continue
            batch_idx.append(i)
            batch.append(arr)
            thumbs.append(thumb)
            if len(batch) >= self._batch_size:
                flush()
        if batch:
            flush()
        done = [r for r in results if r is not None]
        assert len(done) == len(items), "every item gets a code or an error"
        return done

    async def aencode(
        self, items: list[bytes], thumbnails: int = 0
    ) -> list[Encoded | ImageError]:
        """:meth:`encode_bytes` off the event loop."""
        _, infer = self._pools()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(infer, self.encode_bytes, items, thumbnails)

    def close(self) -> None:
        with self._lock:
            for pool in (self._decode_pool, self._infer_pool):
                if pool is not None:
                    pool.shutdown(wait=True, cancel_futures=True)
            self._decode_pool = self._infer_pool = None

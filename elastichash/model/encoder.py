"""Images -> codes: the encoder composes the model session, the hashing head and the batcher.

Thread-safe: onnxruntime's ``InferenceSession.run`` may be called from several threads, and
the decode pool is shared. One bad image in a batch costs only itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from elastichash import codes
from elastichash.errors import ImageError, ModelContractError
from elastichash.model.batcher import run_batched
from elastichash.model.contract import ModelSpec
from elastichash.model.head import Inference, hash_outputs
from elastichash.model.labels import ClassNames, Label, class_names
from elastichash.model.preprocess import (
    DecodeBudget,
    decoder_message,
    load_image,
    load_image_and_thumbnail,
    release_freed_buffers,
)
from elastichash.model.session import ModelSession
from elastichash.settings import ImageLimits, ModelSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    code: bytes  # 32 bytes, the long code
    short: bytes  # 8 bytes, the short code
    thumbnail: bytes | None = None  # JPEG, when asked for (made from the same decode)
    labels: tuple[Label, ...] = ()  # top classes, for models with class scores


class Encoder:
    def __init__(
        self,
        model: ModelSession,
        settings: ModelSettings,
        limits: ImageLimits,
        names: ClassNames | None = None,
    ) -> None:
        self.model = model
        self.names = names
        self.spec: ModelSpec = model.spec
        self.providers = model.providers
        self.settings = settings
        self.limits = limits
        self._batch_size = max(1, settings.batch_size)
        self._workers = settings.decode_workers or (os.cpu_count() or 1)
        self._decode_pool: ThreadPoolExecutor | None = None
        self._infer_pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        # One budget for every decode this encoder runs: ingest batches and query images.
        self.budget = DecodeBudget(limits.decode_memory_bytes)
        release_freed_buffers()

    @classmethod
    def load(
        cls, settings: ModelSettings, limits: ImageLimits, index_dir: Path | None = None
    ) -> Encoder:
        """Resolve the model (registry: name, path, or the index's), check it, open, warm up."""
        from elastichash.model.registry import resolve_settings

        path = resolve_settings(settings, index_dir)
        session = ModelSession.open(path, settings)
        spec = session.spec
        names = (
            class_names(spec.labels_file, spec.classes, path)
            if spec.labels_output and spec.labels_file
            else None
        )
        enc = cls(session, settings, limits, names)
        enc._warm_up()
        log.info(
            "encoder ready: model %s, providers %s, batch %d, decode workers %d",
            enc.spec.fingerprint,
            enc.providers,
            enc._batch_size,
            enc._workers,
        )
        return enc

    def _warm_up(self) -> None:
        s = self.spec.input_size
        out = self.encode_arrays(np.zeros((1, 3, s, s), dtype=np.float32))
        if out.long.shape != (1, codes.LONG_BYTES) or out.short.shape != (1, codes.SHORT_BYTES):
            raise ModelContractError(
                f"model produced codes of shape {out.long.shape}/{out.short.shape}"
            )

    # --- inference --------------------------------------------------------------------------

    def encode_arrays(self, batch: npt.NDArray[np.float32]) -> Inference:
        """(N, 3, S, S) preprocessed images -> packed codes (and class scores, if any)."""
        return hash_outputs(self.spec, self.model.run(batch))

    def short_of(self, code: bytes) -> bytes:
        return self.spec.short_of(code)

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

    def _infer(self, batch: npt.NDArray[np.float32], thumbs: list[bytes | None]) -> list[Encoded]:
        out = self.encode_arrays(batch)
        labels = (
            self.names.top(out.scores)
            if self.names is not None and out.scores is not None
            else [()] * len(out)
        )
        return [
            Encoded(out.long[k].tobytes(), out.short[k].tobytes(), thumbs[k], labels[k])
            for k in range(len(out))
        ]

    def encode_bytes(
        self, items: list[bytes], thumbnails: int = 0
    ) -> list[Encoded | ImageError]:
        """Encode many images; results in input order, an ImageError in place of a bad one.

        ``thumbnails``: also make a JPEG thumbnail of at most this size from the same decode.
        """
        pool, _ = self._pools()
        return run_batched(
            items, lambda data: self._decode(data, thumbnails), self._infer, pool,
            self._batch_size,
        )

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

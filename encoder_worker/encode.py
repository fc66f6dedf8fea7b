"""The CPU part of the encoder worker, run in the bounded executor: bytes in, index
messages out. No I/O here, so it is tested without a broker."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from elastichash.errors import ImageError
from elastichash.index.base import Failure
from elastichash.messages import EncodeReply, IndexDoc, IndexFailure
from elastichash.model.preprocess import THUMBNAIL_SIZE, decoder_message
from elastichash.pipeline import IngestItem, ingest_record, with_preview

log = logging.getLogger(__name__)


# Thumbnails (THUMBNAIL_SIZE) come from the decode the encoder does anyway (Encoder.encode_bytes).


def _encode_many(encoder: Any, datas: list[bytes], thumbnails: int = 0) -> list[Any]:
    """One batched call; if the batch itself blows up (not a per-image ImageError), encode
    one by one so one poison image cannot take its batch-mates down with it."""
    try:
        results: list[Any] = encoder.encode_bytes(datas, thumbnails)
        return results
    except Exception:
        log.exception("batch of %d failed; encoding one by one", len(datas))
    out: list[Any] = []
    for data in datas:
        try:
            out.extend(encoder.encode_bytes([data], thumbnails))
        except ImageError as exc:
            out.append(exc)
        except Exception as exc:
            out.append(ImageError("corrupt",
                                  f"encoder failed on this image: {decoder_message(exc)}"))
    return out


def encode_batch(encoder: Any, items: Sequence[IngestItem], preview_px: int = 0,
                 max_pixels: int = 0) -> list[IndexDoc | IndexFailure]:
    """One index message per item, in order: a document (with its large-view preview of
    ``preview_px``, see ``pipeline.with_preview``), or a failure record."""
    results = _encode_many(encoder, [item.data for item in items], THUMBNAIL_SIZE)
    now = time.time()
    out: list[IndexDoc | IndexFailure] = []
    for item, res in zip(items, results, strict=True):
        record = ingest_record(item, res, now)
        if isinstance(record, Failure):
            out.append(IndexFailure(id=record.id, reason=record.reason, message=record.message,
                                    source=record.source, at=record.at, version=record.version))
        else:
            record = with_preview(record, item, preview_px, max_pixels,
                                  getattr(encoder, "budget", None))
            out.append(IndexDoc.of(record))
    return out


def encode_query(encoder: Any, data: bytes, max_bytes: int) -> EncodeReply:
    if not data:
        return EncodeReply(ok=False, reason="empty", message="empty image")
    if len(data) > max_bytes:
        return EncodeReply(ok=False, reason="too_large", message=f"image over {max_bytes} bytes")
    res = _encode_many(encoder, [data])[0]
    if isinstance(res, ImageError):
        return EncodeReply(ok=False, reason=res.reason, message=res.message)
    return EncodeReply(ok=True, code=bytes(res.code).hex(), short=bytes(res.short).hex())

"""Bytes -> model batches: bounded parallel decoding overlapping batched inference.

One bad image costs only itself (an :class:`ImageError` in its slot); decoded-but-not-yet-
inferred arrays are bounded by twice the batch size. I/O-free apart from the thread pool it
is handed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from elastichash.errors import ImageError

F32 = npt.NDArray[np.float32]
Decoded = tuple[F32, bytes | None]  # preprocessed array, optional thumbnail
T = TypeVar("T")


def run_batched(
    items: Sequence[bytes],
    decode: Callable[[bytes], Decoded],
    infer: Callable[[F32, list[bytes | None]], list[T]],
    pool: ThreadPoolExecutor,
    batch_size: int,
) -> list[T | ImageError]:
    """Decode on ``pool`` while this thread runs ``infer`` on full batches; results in
    input order. ``infer`` gets the stacked arrays and their thumbnails, returns one T each."""
    results: list[T | ImageError | None] = [None] * len(items)
    window = 2 * batch_size
    pending: deque[tuple[int, Future[Decoded]]] = deque()
    feed = iter(enumerate(items))

    def refill() -> None:
        while len(pending) < window:
            nxt = next(feed, None)
            if nxt is None:
                return
            pending.append((nxt[0], pool.submit(decode, nxt[1])))

    idx: list[int] = []
    arrays: list[F32] = []
    thumbs: list[bytes | None] = []

    def flush() -> None:
        for i, res in zip(idx, infer(np.stack(arrays), thumbs), strict=True):
            results[i] = res
        idx.clear()
        arrays.clear()
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
        idx.append(i)
        arrays.append(arr)
        thumbs.append(thumb)
        if len(arrays) >= batch_size:
            flush()
    if arrays:
        flush()
    done = [r for r in results if r is not None]
    assert len(done) == len(items), "every item gets a result or an error"
    return done

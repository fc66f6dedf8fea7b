"""The hashing head: a model's raw outputs -> packed long and short codes (+ class scores).

Bit = pre-activation > 0 (ARCHITECTURE.md); the short code is either the model's own output
or the 64 positions its metadata names (``ModelSpec.short_bits``). I/O-free.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elastichash import codes
from elastichash.model.contract import ModelSpec
from elastichash.model.session import RawOutputs

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Inference:
    """Typed outputs of one batch: packed codes, and class scores when the model has them."""

    long: U8  # (N, 32)
    short: U8  # (N, 8)
    scores: F32 | None = None  # (N, classes)

    def __len__(self) -> int:
        return len(self.long)


def hash_outputs(spec: ModelSpec, raw: RawOutputs) -> Inference:
    long = codes.binarize(raw.values)
    if raw.short_values is not None:
        short = codes.binarize(raw.short_values)
    else:
        assert spec.short_bits is not None, "the contract requires short bits or a short output"
        short = codes.select_bits(long, spec.short_bits)
    return Inference(long, short, raw.scores)

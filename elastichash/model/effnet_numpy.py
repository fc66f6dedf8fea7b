"""A plain-numpy EfficientNet-Lite0, the reference the ONNX graph is proven against.

Written straight from the state dict and kept apart from the graph builder on purpose: batch
norm is applied as its own step (not folded), padding is an explicit ``np.pad`` of the TF
SAME amounts computed here, convolutions are windowed sums in float64. If the builder folds,
pads or wires anything wrongly, the two disagree. Slow (about a second per image); for tests
and checks only.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
EPS = 1e-3


def _pad_same(x: F64, k: int, stride: int) -> F64:
    n = x.shape[-1]
    out = (n + stride - 1) // stride
    total = max((out - 1) * stride + k - n, 0)
    lo = total // 2
    return np.pad(x, ((0, 0), (0, 0), (lo, total - lo), (lo, total - lo)))


def _windows(x: F64, k: int, stride: int) -> F64:
    """(N, C, H, W) -> (N, C, H', W', k, k) SAME-padded windows."""
    xp = _pad_same(x, k, stride)
    win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(2, 3))
    out: F64 = win[:, :, ::stride, ::stride]
    return out


def conv(x: F64, w: npt.NDArray[Any], stride: int) -> F64:
    k = w.shape[-1]
    if k == 1 and stride == 1:
        out: F64 = np.einsum("nchw,oc->nohw", x, w[:, :, 0, 0].astype(np.float64))
        return out
    win = _windows(x, k, stride)
    out = np.einsum("nchwij,ocij->nohw", win, w.astype(np.float64), optimize=True)
    return out


def depthwise(x: F64, w: npt.NDArray[Any], stride: int) -> F64:
    win = _windows(x, w.shape[-1], stride)
    out: F64 = np.einsum("nchwij,cij->nchw", win, w[:, 0].astype(np.float64), optimize=True)
    return out


def batchnorm(x: F64, sd: dict[str, Any], prefix: str) -> F64:
    def p(name: str) -> F64:
        v: F64 = np.asarray(sd[f"{prefix}.{name}"], dtype=np.float64)[None, :, None, None]
        return v

    out: F64 = (x - p("running_mean")) / np.sqrt(p("running_var") + EPS) * p("weight") + p("bias")
    return out


def relu6(x: F64) -> F64:
    out: F64 = np.minimum(np.maximum(x, 0.0), 6.0)
    return out


def forward(sd: dict[str, Any], images: npt.NDArray[np.uint8]) -> tuple[F64, F64]:
    """(N, 224, 224, 3) uint8 RGB -> (features (N, 1280), logits (N, 1000))."""
    x = (images.astype(np.float64) - 127.0) / 128.0
    x = x.transpose(0, 3, 1, 2)
    x = relu6(batchnorm(conv(x, sd["_conv_stem.weight"], 2), sd, "_bn0"))
    idx = 0
    while f"_blocks.{idx}._depthwise_conv.weight" in sd:
        p = f"_blocks.{idx}"
        inp = x
        if f"{p}._expand_conv.weight" in sd:
            x = relu6(batchnorm(conv(x, sd[f"{p}._expand_conv.weight"], 1), sd, f"{p}._bn0"))
        # the first block of each downsampling stage has stride 2 (B0's stage table)
        stride = 2 if idx in (1, 3, 5, 11) else 1
        x = relu6(batchnorm(depthwise(x, sd[f"{p}._depthwise_conv.weight"], stride), sd,
                            f"{p}._bn1"))
        x = batchnorm(conv(x, sd[f"{p}._project_conv.weight"], 1), sd, f"{p}._bn2")
        if stride == 1 and x.shape == inp.shape:
            x = x + inp
        idx += 1
    x = relu6(batchnorm(conv(x, sd["_conv_head.weight"], 1), sd, "_bn1"))
    feats: F64 = x.mean(axis=(2, 3))
    logits: F64 = feats @ np.asarray(sd["_fc.weight"], np.float64).T + sd["_fc.bias"]
    return feats, logits

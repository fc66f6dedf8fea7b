"""The default model's training-free descriptor, twice: a float64 numpy reference and ONNX nodes
(built with :class:`~elastichash.model.onnx_graph.GraphBuilder`).

Features (input N x 3 x S x S, RGB in 0..1):

- colour: sqrt-gamma RGB -> opponent axes (lightness, red-green, yellow-blue), soft
  (triangular) joint histogram, pooled over a 1x1 + 2x2 spatial grid;
- gradient: unsigned orientation energy in 8 bins (|oriented Sobel|) of the lightness at two
  scales, pooled over 1x1 + 2x2 + 4x4 grids, each cell normalised (HOG-like);
- power (sqrt) and per-block L2 normalisation, block weights.

The numpy reference exists so that the constants baked into the model (centring, bit
selection) are computed in float64 with order-independent arithmetic: the model file is then
the same bytes on every machine, and the tests check the ONNX graph against it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from elastichash.model.onnx_graph import GraphBuilder

F64 = npt.NDArray[np.float64]

INPUT_SIZE = 128
COLOUR_BINS = (6, 5, 5)
COLOUR_LEVELS = (1,)
ORIENTATIONS = 8
GRAD_LEVELS = (1, 2, 4)
GRAD_EPS = 0.02
# sqrt-gamma RGB -> (lightness, red-green, yellow-blue), each mapped into 0..1.
OPPONENT = np.array([[1 / 3, 1 / 3, 1 / 3], [0.5, -0.5, 0.0], [0.25, 0.25, -0.5]], dtype=np.float64)
OPPONENT_BIAS = np.array([0.0, 0.5, 0.5], dtype=np.float64)
SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], dtype=np.float64) / 8.0
SOBEL_Y = SOBEL_X.T.copy()
BLOCK_WEIGHTS = {"colour": 1.0, "grad0": 0.8, "grad1": 0.8}
N_COLOUR = COLOUR_BINS[0] * COLOUR_BINS[1] * COLOUR_BINS[2] * sum(lv * lv for lv in COLOUR_LEVELS)
N_GRAD = ORIENTATIONS * sum(lv * lv for lv in GRAD_LEVELS)
DIM = N_COLOUR + 2 * N_GRAD


def mirror_permutation() -> npt.NDArray[np.int64]:
    """``m`` with features(flip_lr(x)) == features(x)[m]: cells mirror, angles reflect."""
    perm: list[int] = []
    for lv in COLOUR_LEVELS:
        base = len(perm)
        cells = lv * lv
        for b in range(N_COLOUR // sum(v * v for v in COLOUR_LEVELS)):
            for i in range(lv):
                perm.extend(base + b * cells + i * lv + (lv - 1 - j) for j in range(lv))
    for _ in range(2):
        for lv in GRAD_LEVELS:
            base = len(perm)
            for o in range(ORIENTATIONS):
                for i in range(lv):
                    perm.extend(
                        base + ((ORIENTATIONS - o) % ORIENTATIONS) * lv * lv + i * lv + lv - 1 - j
                        for j in range(lv)
                    )
    return np.array(perm, dtype=np.int64)


def _bin_weights(v: F64, n: int) -> F64:
    """(N, H, W) in 0..1 -> (N, n, H, W) triangular soft-bin weights (partition of unity)."""
    centres = np.arange(n, dtype=np.float64).reshape(1, n, 1, 1)
    t = v[:, None, :, :] * (n - 1) - centres
    return np.maximum(1.0 - np.abs(t), 0.0)


def _pool(x: F64, level: int) -> F64:
    n, c, h, _ = x.shape
    s = h // level
    pooled: F64 = x.reshape(n, c, level, s, level, s).mean(axis=(3, 5))
    return pooled.reshape(n, c * level * level)


def _avg2(x: F64) -> F64:
    n, c, h, w = x.shape
    out: F64 = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
    return out


def _oriented_kernels() -> F64:
    angles = np.pi * np.arange(ORIENTATIONS, dtype=np.float64) / ORIENTATIONS
    k = np.cos(angles)[:, None, None] * SOBEL_X + np.sin(angles)[:, None, None] * SOBEL_Y
    # Round so the constants are exact, machine-independent binary fractions.
    return np.round(k * 2**16) / 2**16


def _orientation_energy(lum: F64) -> F64:
    """(N, H, W) -> (N, ORIENTATIONS, H, W) |oriented Sobel| with edge padding."""
    p = np.pad(lum, ((0, 0), (1, 1), (1, 1)), mode="edge")
    n, h, w = lum.shape
    out = np.zeros((n, ORIENTATIONS, h, w), dtype=np.float64)
    kernels = _oriented_kernels()
    for dy in range(3):
        for dx in range(3):
            patch = p[:, dy : dy + h, dx : dx + w]
            out += kernels[None, :, dy, dx, None, None] * patch[:, None]
    return np.abs(out)


def _l2(x: F64, eps: float) -> F64:
    out: F64 = x / (np.sqrt((x * x).sum(axis=1, keepdims=True)) + eps)
    return out


def _grad_block(lum: F64) -> F64:
    energy = _orientation_energy(lum)
    cells = []
    for level in GRAD_LEVELS:
        n = energy.shape[0]
        pooled = _pool(energy, level).reshape(n, ORIENTATIONS, level * level)
        cells.append(
            (pooled / (np.sqrt((pooled**2).sum(axis=1, keepdims=True)) + GRAD_EPS)).reshape(n, -1)
        )
    return _l2(np.sqrt(np.concatenate(cells, axis=1)), 1e-6)


def features_np(x: npt.ArrayLike) -> F64:
    """Reference descriptor of a batch (N, 3, S, S) with RGB in 0..1, float64."""
    img = np.asarray(x, dtype=np.float64)
    g = np.sqrt(np.maximum(img, 0.0))
    small = _avg2(g)
    opp = np.einsum("kc,nchw->nkhw", OPPONENT, small) + OPPONENT_BIAS[None, :, None, None]
    opp = np.clip(opp, 0.0, 1.0)
    w0 = _bin_weights(opp[:, 0], COLOUR_BINS[0])
    w1 = _bin_weights(opp[:, 1], COLOUR_BINS[1])
    w2 = _bin_weights(opp[:, 2], COLOUR_BINS[2])
    joint = w0[:, :, None, None] * w1[:, None, :, None] * w2[:, None, None, :]
    n = img.shape[0]
    joint = joint.reshape(n, -1, *joint.shape[-2:])
    colour = np.concatenate([_pool(joint, lv) for lv in COLOUR_LEVELS], axis=1)
    colour = _l2(np.sqrt(colour), 1e-6)
    lum = g.mean(axis=1)
    grad0 = _grad_block(lum)
    grad1 = _grad_block(_avg2(lum[:, None])[:, 0])
    return np.concatenate(
        [
            BLOCK_WEIGHTS["colour"] * colour,
            BLOCK_WEIGHTS["grad0"] * grad0,
            BLOCK_WEIGHTS["grad1"] * grad1,
        ],
        axis=1,
    )


# --- ONNX ------------------------------------------------------------------------------------


def _onnx_l2(g: GraphBuilder, x: str, eps: float, axis: int = 1) -> str:
    norm = g.op("ReduceL2", x, axes=[axis], keepdims=1)
    return g.op("Div", x, g.op("Add", norm, g.const(eps)))


def _onnx_pool(g: GraphBuilder, x: str, size: int, level: int) -> str:
    k = size // level
    return g.op("AveragePool", x, kernel_shape=[k, k], strides=[k, k])


def _onnx_flat(g: GraphBuilder, x: str) -> str:
    return g.op("Reshape", x, g.const([0, -1], np.int64))


def _onnx_grad(g: GraphBuilder, lum: str, size: int) -> str:
    padded = g.op("Pad", lum, g.const([0, 0, 1, 1, 0, 0, 1, 1], np.int64), mode="edge")
    kernels = _oriented_kernels().reshape(ORIENTATIONS, 1, 3, 3)
    energy = g.op("Abs", g.op("Conv", padded, g.const(kernels)))
    cells = []
    for lv in GRAD_LEVELS:
        pooled = _onnx_pool(g, energy, size, lv)
        cells.append(_onnx_flat(g, _onnx_l2(g, pooled, GRAD_EPS)))
    return _onnx_l2(g, g.op("Sqrt", g.op("Concat", *cells, axis=1)), 1e-6)


def build_features(g: GraphBuilder, x: str, size: int) -> str:
    """ONNX nodes computing :func:`features_np` on ``x`` (N, 3, size, size) -> (N, DIM)."""
    gam = g.op("Sqrt", g.op("Relu", x))
    small = g.op("AveragePool", gam, kernel_shape=[2, 2], strides=[2, 2])
    opp = g.op("Conv", small, g.const(OPPONENT.reshape(3, 3, 1, 1)), g.const(OPPONENT_BIAS))
    opp = g.op("Clip", opp, g.const(0.0), g.const(1.0))
    # One 1x1 conv gives v * (n - 1) - k for every channel c and bin k.
    rows, bias = [], []
    for c, n in enumerate(COLOUR_BINS):
        for k in range(n):
            row = np.zeros(3)
            row[c] = n - 1
            rows.append(row)
            bias.append(-float(k))
    t = g.op("Conv", opp, g.const(np.array(rows).reshape(-1, 3, 1, 1)), g.const(bias))
    w = g.op("Relu", g.op("Sub", g.const(1.0), g.op("Abs", t)))
    a, b, c = COLOUR_BINS
    s0 = g.op("Slice", w, g.const([0], np.int64), g.const([a], np.int64), g.const([1], np.int64))
    s1 = g.op(
        "Slice", w, g.const([a], np.int64), g.const([a + b], np.int64), g.const([1], np.int64)
    )
    s2 = g.op(
        "Slice",
        w,
        g.const([a + b], np.int64),
        g.const([a + b + c], np.int64),
        g.const([1], np.int64),
    )
    if COLOUR_LEVELS != (1,):
        raise NotImplementedError("the ONNX colour block pools globally only")
    # Joint histogram as a batched matrix product over pixels: (N, a*b, HW) x (N, HW, c).
    # Never materialises the (N, a*b*c, H, W) tensor, which is 150 floats per pixel.
    hw = (size // 2) ** 2
    u0 = g.op("Unsqueeze", s0, g.const([2], np.int64))  # N a 1 H W
    u1 = g.op("Unsqueeze", s1, g.const([1], np.int64))  # N 1 b H W
    ab = g.op("Reshape", g.op("Mul", u0, u1), g.const([0, a * b, hw], np.int64))
    cc = g.op("Transpose", g.op("Reshape", s2, g.const([0, c, hw], np.int64)), perm=[0, 2, 1])
    hist = g.op("Mul", g.op("MatMul", ab, cc), g.const(1.0 / hw))  # N (a*b) c: the mean
    colour = _onnx_l2(g, g.op("Sqrt", _onnx_flat(g, hist)), 1e-6)
    lum = g.op("ReduceMean", gam, axes=[1], keepdims=1)
    grad0 = _onnx_grad(g, lum, size)
    lum1 = g.op("AveragePool", lum, kernel_shape=[2, 2], strides=[2, 2])
    grad1 = _onnx_grad(g, lum1, size // 2)
    return g.op(
        "Concat",
        g.op("Mul", colour, g.const(BLOCK_WEIGHTS["colour"])),
        g.op("Mul", grad0, g.const(BLOCK_WEIGHTS["grad0"])),
        g.op("Mul", grad1, g.const(BLOCK_WEIGHTS["grad1"])),
        axis=1,
    )

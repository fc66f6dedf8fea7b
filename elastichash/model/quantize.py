"""An INT8 version of a contract model by onnxruntime's static quantisation.

Calibrated on the project's own generated images (``synthetic.py``: dead-leaves scenes), never
on a collection. Convolutions are quantised per channel (QDQ format); the hashing head, the
classifier and the softmax stay in float, since a code bit is the sign of a small number and
quantising it flips bits for nothing. The activation ranges come from onnxruntime inference,
so unlike the float models the bytes may differ between machines in the last digits.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

CALIBRATION_IMAGES = 48
SEED = 20210913


class _Calibration:
    def __init__(self, input_name: str, size: int, mean: float, std: float) -> None:
        from elastichash.model import synthetic

        images = synthetic.image_set(CALIBRATION_IMAGES, size, SEED)  # 0..1, (N, 3, S, S)
        x = ((images - mean) / std).astype(np.float32)
        self._batches = iter([{input_name: x[i : i + 8]} for i in range(0, len(x), 8)])

    def get_next(self) -> dict[str, Any] | None:
        return next(self._batches, None)

    def rewind(self) -> None:  # pragma: no cover - not used by quantize_static's MinMax
        pass


def quantize_bytes(float_model: bytes) -> bytes:
    """INT8 (QDQ) model bytes from float contract-model bytes; metadata kept, name + '-int8'."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    from elastichash.model import contract

    model = onnx.load_from_string(float_model)
    spec = contract.spec_from_model(model)
    keep_float = [n.name for n in model.graph.node if n.op_type in ("MatMul", "Gemm", "Softmax")]

    class Reader(_Calibration, CalibrationDataReader):  # type: ignore[misc]
        pass

    reader = Reader(spec.input_name, spec.input_size, spec.mean[0], spec.std[0])
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "f.onnx"), os.path.join(tmp, "q.onnx")
        Path(src).write_bytes(float_model)
        quantize_static(
            src, dst, reader, quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
        )
        q = onnx.load(dst)
    meta = {p.key: p.value for p in model.metadata_props}
    meta[contract.K_NAME] = f"{spec.name}-int8"
    contract.set_metadata(q, meta)
    data: bytes = q.SerializeToString(deterministic=True)
    log.info("quantised %s to INT8 (%d -> %d bytes)", spec.name, len(float_model), len(data))
    return data

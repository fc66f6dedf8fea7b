"""Export a PyTorch backbone + linear hashing head to the encoder contract.

The exported graph takes ``image`` (N, 3, S, S) float32 with a dynamic batch axis and gives
``code`` (N, 256) pre-activations; the contract metadata is written into the file, and the
ONNX output is checked against PyTorch on a random batch before the file is written.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from elastichash import codes
from elastichash.errors import ModelContractError
from elastichash.model import contract

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Until select-bits has seen real images: every 4th bit, 4 groups of 16 distinct positions.
PROVISIONAL_SHORT_BITS = tuple(range(0, codes.LONG_BITS, codes.LONG_BITS // codes.SHORT_BITS))


def hashing_model(backbone: Any, feature_dim: int, code_bits: int = codes.LONG_BITS) -> Any:
    """``backbone`` (N, 3, S, S) -> (N, feature_dim) followed by a linear hashing head."""
    import torch

    class HashingNet(torch.nn.Module):  # type: ignore[misc, unused-ignore]  # torch untyped when absent
        def __init__(self) -> None:
            super().__init__()
            self.backbone = backbone
            self.head = torch.nn.Linear(feature_dim, code_bits)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out: torch.Tensor = self.head(torch.flatten(self.backbone(x), 1))
            return out

    return HashingNet()


def export_torch(
    model: Any,
    out: Path,
    *,
    input_size: int,
    resize: int | None = None,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    name: str = "torch-hashing",
    version: str = "1",
    short_bits: tuple[int, ...] | None = None,
    opset: int = 17,
) -> contract.ModelSpec:
    import onnx
    import onnxruntime as ort
    import torch

    from elastichash.model.default import atomic_write

    model.eval()
    dummy = torch.zeros(2, 3, input_size, input_size)
    buf = io.BytesIO()
    # The TorchScript exporter (dynamo=False) needs no onnxscript; silence its deprecation note.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (dummy,),
            buf,  # type: ignore[arg-type, unused-ignore]  # file-like objects are accepted
            input_names=["image"],
            output_names=["code"],
            dynamic_axes={"image": {0: "N"}, "code": {0: "N"}},
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load_from_string(buf.getvalue())
    if short_bits is None:
        log.warning("no short_bits given: using every 4th bit; run `elastichash model select-bits`")
        short_bits = PROVISIONAL_SHORT_BITS
    contract.set_metadata(
        proto,
        contract.contract_metadata(
            name=name,
            version=version,
            input_size=input_size,
            resize=resize or input_size,
            mean=mean,
            std=std,
            short_bits=short_bits,
        ),
    )
    data = proto.SerializeToString()
    contract.spec_from_model(onnx.load_from_string(data))  # refuse to write a broken file
    # The batch axis must really be dynamic: check with a batch size the export never saw.
    probe = torch.randn(3, 3, input_size, input_size)
    with torch.no_grad():
        expected = model(probe).numpy()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = sess.run(["code"], {"image": probe.numpy()})[0]
    err = float(np.abs(got - expected).max())
    if err > 1e-3 * max(1.0, float(np.abs(expected).max())):
        raise ModelContractError(f"exported model differs from PyTorch by {err:g}")
    atomic_write(Path(out), data)
    log.info("exported %s (max |onnx - torch| = %.2e)", out, err)
    return contract.load_spec(out)

"""Export a PyTorch backbone + hashing head to the contract (tiny random network, CPU)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elastichash.model.contract import load_spec
from elastichash.settings import ImageLimits, ModelSettings
from tests.imagegen import make_image

torch = pytest.importorskip("torch")


def _tiny_backbone() -> object:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
    )


def test_exported_model_meets_the_contract_with_a_dynamic_batch(tmp_path: Path) -> None:
    from elastichash.model.encoder import Encoded, Encoder
    from elastichash.model.export import export_torch, hashing_model

    net = hashing_model(_tiny_backbone(), 16)
    out = tmp_path / "torch.onnx"
    spec = export_torch(net, out, input_size=64, resize=72, name="tiny")
    assert (spec.input_size, spec.resize, spec.name) == (64, 72, "tiny")
    assert load_spec(out).short_bits is not None

    enc = Encoder.load(ModelSettings(path=out, batch_size=3), ImageLimits())
    try:
        images = [make_image(i) for i in range(7)]  # batches of 3, 3, 1
        results = enc.encode_bytes(images)
        assert all(isinstance(r, Encoded) for r in results)
        # the ONNX codes are the signs of the PyTorch outputs
        from elastichash.model.preprocess import load_image

        x = np.stack([load_image(b, spec, 10**8) for b in images])
        with torch.no_grad():
            ref = net(torch.from_numpy(x)).numpy()
        got = np.stack(
            [
                np.unpackbits(np.frombuffer(r.code, np.uint8))
                for r in results
                if isinstance(r, Encoded)
            ]
        )
        close = np.abs(ref) < 1e-4
        assert ((ref > 0) == got.astype(bool))[~close].all()
    finally:
        enc.close()

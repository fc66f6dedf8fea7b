"""Bit selection: 64 distinct positions in 4 groups of 16, balanced, weakly correlated."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from elastichash import codes
from elastichash.model.bitselect import bit_stats, select_short_bits, within_group_corr


def _sample(n: int = 2000, seed: int = 0) -> np.ndarray:
    """Codes where bits 0..63 are constant-ish, 64..127 copy each other, the rest are random."""
    rng = np.random.default_rng(seed)
    bits = (rng.random((n, 256)) < 0.5).astype(np.uint8)
    bits[:, :64] = (rng.random((n, 64)) < 0.03).astype(np.uint8)
    bits[:, 64:128] = bits[:, [64]]
    return codes.bits_to_bytes(bits)


def test_selection_is_64_distinct_positions() -> None:
    positions = select_short_bits(_sample())
    assert len(positions) == 64 == len(set(positions))
    assert all(0 <= p < 256 for p in positions)


def test_selection_avoids_unbalanced_and_duplicated_bits() -> None:
    sample = _sample()
    positions = select_short_bits(sample)
    balance, corr = bit_stats(sample)
    assert not any(p < 64 for p in positions)  # the nearly-constant bits
    assert sum(64 <= p < 128 for p in positions) <= 1  # copies of one bit carry one bit
    assert all(abs(balance[p] - 0.5) < 0.06 for p in positions)
    assert within_group_corr(positions, corr) < 0.05


def test_groups_of_16_have_lower_internal_correlation_than_a_naive_split() -> None:
    rng = np.random.default_rng(1)
    latent = rng.standard_normal((3000, 16))
    mix = rng.standard_normal((16, 256))
    sample = codes.binarize(latent @ mix)  # strongly correlated bits
    positions = select_short_bits(sample)
    _, corr = bit_stats(sample)
    naive = tuple(sorted(positions))
    assert within_group_corr(positions, corr) < within_group_corr(naive, corr)


def test_selection_is_deterministic() -> None:
    sample = _sample(seed=3)
    assert select_short_bits(sample) == select_short_bits(sample.copy())


def test_select_bits_command_writes_positions_into_the_model(tmp_path: Path) -> None:
    import io

    from PIL import Image

    from elastichash.cli import main
    from elastichash.model.contract import load_spec
    from elastichash.model.default import build_default
    from tests.imagegen import make_image

    model = tmp_path / "m.onnx"
    build_default(model)
    before = load_spec(model).short_bits
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(80):
        (images / f"{i}.jpg").write_bytes(make_image(1000 + i, (96, 96)))
    Image.open(io.BytesIO(make_image(1))).save(images / "extra.png")
    out = tmp_path / "selected.onnx"
    assert (
        main(["model", "select-bits", str(model), "--images", str(images), "--out", str(out)]) == 0
    )
    after = load_spec(out).short_bits
    assert after is not None
    assert len(set(after)) == 64
    assert after != before
    assert load_spec(model).short_bits == before  # --out leaves the input alone


def test_too_few_codes_are_refused() -> None:
    with pytest.raises(ValueError, match="packed codes"):
        select_short_bits(np.zeros((1, 32), np.uint8))


def test_recentring_balances_every_bit_on_the_sample(tmp_path: Path) -> None:
    import onnxruntime as ort

    from elastichash.cli import main
    from elastichash.model.contract import load_spec
    from elastichash.model.default import build_default
    from elastichash.model.preprocess import load_image
    from tests.imagegen import make_image

    model = tmp_path / "m.onnx"
    build_default(model)
    images = tmp_path / "imgs"
    images.mkdir()
    datas = [make_image(2000 + i, (96, 96)) for i in range(80)]
    for i, data in enumerate(datas):
        (images / f"{i}.jpg").write_bytes(data)
    out = tmp_path / "centred.onnx"
    args = ["model", "select-bits", str(model), "--images", str(images), "--out", str(out)]
    assert main([*args, "--recentre"]) == 0
    spec = load_spec(out)
    x = np.stack([load_image(d, spec, 10**8) for d in datas])
    values = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(
        ["code"], {"image": x}
    )[0]
    balance = (values > 0).mean(axis=0)
    assert np.abs(balance - 0.5).max() <= 0.5 / 80 + 1e-9  # median split of 80 samples

"""The encoder: batches with bad images, providers, thread safety, the encode CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from elastichash import codes
from elastichash.errors import ImageError, InvalidInput
from elastichash.ids import content_id
from elastichash.model.default import build_default
from elastichash.model.encoder import Encoded, Encoder
from elastichash.model.session import ProviderUnavailable, choose_providers
from elastichash.settings import ImageLimits, ModelSettings
from tests.imagegen import make_image


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "default.onnx"
    build_default(path)
    return path


@pytest.fixture(scope="module")
def encoder(model_path: Path) -> Iterator[Encoder]:
    enc = Encoder.load(
        ModelSettings(path=model_path, batch_size=4, decode_workers=2),
        ImageLimits(max_pixels=4_000_000),
    )
    yield enc
    enc.close()


def test_a_bad_image_in_a_batch_costs_only_itself(encoder: Encoder) -> None:
    good = [make_image(i) for i in range(9)]
    items = [*good[:4], b"not an image", *good[4:], b"\xff\xd8\xff" + b"\x00" * 10]
    out = encoder.encode_bytes(items)
    assert len(out) == len(items)
    assert isinstance(out[4], ImageError)
    assert out[4].reason == "unsupported_format"
    assert isinstance(out[-1], ImageError)
    encoded = [r for r in out if isinstance(r, Encoded)]
    assert len(encoded) == 9
    assert all(len(r.code) == 32 and len(r.short) == 8 for r in encoded)
    # order is kept and the result does not depend on the batch it travelled in
    alone = encoder.encode_bytes([good[5]])[0]
    assert alone == out[6]
    assert len({r.code for r in encoded}) == 9


def test_short_code_is_the_selected_bits_of_the_long_code(encoder: Encoder) -> None:
    [res] = encoder.encode_bytes([make_image(42)])
    assert isinstance(res, Encoded)
    assert encoder.short_of(res.code) == res.short
    assert encoder.spec.short_bits is not None
    bits = codes.bytes_to_bits(res.code)
    assert codes.bytes_to_bits(res.short).tolist() == [
        int(bits[p]) for p in encoder.spec.short_bits
    ]
    with pytest.raises(InvalidInput, match="32 bytes"):
        encoder.short_of(b"\x00" * 8)


def test_encode_arrays_gives_packed_codes(encoder: Encoder) -> None:
    x = np.random.default_rng(0).random((5, 3, 128, 128), dtype=np.float32)
    out = encoder.encode_arrays(x)
    long, short = out.long, out.short
    assert out.scores is None  # the descriptor model has no labels output
    assert long.shape == (5, 32)
    assert long.dtype == np.uint8
    assert short.shape == (5, 8)
    assert short.dtype == np.uint8


def test_similar_images_get_close_codes_and_different_ones_far(encoder: Encoder) -> None:
    import io

    from PIL import Image

    base = make_image(11, (320, 240))
    im = Image.open(io.BytesIO(base))
    buf = io.BytesIO()
    im.resize((160, 120)).save(buf, "JPEG", quality=40)
    a, b, c = encoder.encode_bytes([base, buf.getvalue(), make_image(12, (320, 240))])
    assert isinstance(a, Encoded)
    assert isinstance(b, Encoded)
    assert isinstance(c, Encoded)
    assert codes.hamming(a.code, b.code) < codes.hamming(a.code, c.code)


def test_encoder_is_safe_from_several_threads(encoder: Encoder) -> None:
    images = [make_image(100 + i) for i in range(8)]
    expected = encoder.encode_bytes(images)
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda _: encoder.encode_bytes(images), range(4)))
    assert all(run == expected for run in runs)


async def test_aencode_runs_off_the_event_loop(encoder: Encoder) -> None:
    images = [make_image(200 + i) for i in range(6)]
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    out = await encoder.aencode(images)
    task.cancel()
    assert out == encoder.encode_bytes(images)
    assert ticks > 1  # the loop kept running while images were encoded


def test_providers_follow_the_preference_order_and_availability() -> None:
    avail = ["CPUExecutionProvider", "CUDAExecutionProvider"]
    assert choose_providers(["CUDAExecutionProvider", "CPUExecutionProvider"], avail, False) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert choose_providers(
        ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"], False
    ) == ["CPUExecutionProvider"]
    with pytest.raises(ProviderUnavailable, match="none of the preferred"):
        choose_providers(["TensorrtExecutionProvider"], ["CPUExecutionProvider"], False)


def test_encoder_uses_the_cpu_here_and_says_so(encoder: Encoder) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    assert encoder.providers == ["CPUExecutionProvider"]


def test_require_gpu_fails_at_start_on_a_cpu_only_machine(model_path: Path) -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this machine has CUDA")
    with pytest.raises(ProviderUnavailable, match="require_gpu"):
        Encoder.load(ModelSettings(path=model_path, require_gpu=True), ImageLimits())


def test_encode_cli_prints_one_json_line_per_image(model_path: Path, tmp_path: Path) -> None:
    good = tmp_path / "a.jpg"
    good.write_bytes(make_image(7))
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"GIF89a truncated")
    env = {**os.environ, "ELASTICHASH_DATA": str(tmp_path / "data")}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "elastichash.cli",
            "encode",
            "--model",
            str(model_path),
            str(good),
            str(bad),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 1  # one image failed
    assert lines[0]["id"] == content_id(good.read_bytes())
    assert len(codes.from_hex(lines[0]["code"])) == 32
    assert len(codes.from_hex(lines[0]["short"], 64)) == 8
    assert lines[1]["error"]["reason"] in ("corrupt", "truncated")
    assert "code" not in lines[1]

"""Preprocessing: one path for every mode and format; bad input fails with a typed reason."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from elastichash.errors import ImageError
from elastichash.model.contract import ModelSpec
from elastichash.model.preprocess import load_image, make_thumbnail, sniff_format
from tests.imagegen import make_image

SPEC = ModelSpec(
    name="t",
    version="1",
    sha256="",
    input_name="image",
    input_size=32,
    resize=32,
    mean=(0.0, 0.0, 0.0),
    std=(1.0, 1.0, 1.0),
    code_bits=256,
    short_bits=tuple(range(64)),
    code_output="code",
    short_output=None,
)


def encode(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def pixels(data: bytes, spec: ModelSpec = SPEC, max_pixels: int = 10**8) -> np.ndarray:
    return load_image(data, spec, max_pixels)


def test_output_is_float32_chw_normalised_as_declared() -> None:
    data = encode(Image.new("RGB", (64, 48), (255, 0, 128)), "PNG")
    x = pixels(data)
    assert x.dtype == np.float32
    assert x.shape == (3, 32, 32)
    np.testing.assert_allclose(x[:, 16, 16], [1.0, 0.0, 128 / 255], atol=1e-6)
    imagenet = ModelSpec(**{**SPEC.__dict__, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.5, 1.0)})
    y = pixels(data, imagenet)
    np.testing.assert_allclose(y[:, 16, 16], [2.0, -1.0, 128 / 255 - 0.5], atol=1e-5)


def test_shorter_side_is_resized_then_centre_cropped() -> None:
    # left third red, middle blue, right third green: the centre crop of a 3:1 image is blue
    arr = np.zeros((30, 90, 3), np.uint8)
    arr[:, :30, 0] = 255
    arr[:, 30:60, 2] = 255
    arr[:, 60:, 1] = 255
    x = pixels(encode(Image.fromarray(arr), "PNG"))
    assert x[2].mean() > 0.95
    assert x[0].mean() < 0.05
    assert x[1].mean() < 0.05


def test_exif_orientation_is_applied() -> None:
    arr = np.zeros((40, 80, 3), np.uint8)
    arr[:, :40] = 255  # white left half, landscape
    plain = encode(Image.fromarray(arr), "JPEG", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display: white ends up at the top
    rotated = encode(Image.fromarray(arr), "JPEG", quality=95, exif=exif.tobytes())
    a, b = pixels(plain), pixels(rotated)
    assert a[:, :, :8].mean() > 0.9
    assert a[:, :, -8:].mean() < 0.1
    assert b[:, :8, :].mean() > 0.9
    assert b[:, -8:, :].mean() < 0.1


def test_transparency_is_composited_over_white() -> None:
    im = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    x = pixels(encode(im, "PNG"))
    np.testing.assert_allclose(x, 1.0)
    la = Image.new("LA", (32, 32), (0, 128))
    assert abs(float(pixels(encode(la, "PNG")).mean()) - 127 / 255) < 0.01


def test_palette_grayscale_and_cmyk_become_rgb() -> None:
    pal = Image.new("RGB", (32, 32), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    np.testing.assert_allclose(
        pixels(encode(pal, "GIF"))[:, 5, 5], np.array([10, 200, 30]) / 255, atol=0.05
    )
    grey = Image.new("L", (32, 32), 100)
    np.testing.assert_allclose(pixels(encode(grey, "PNG")), 100 / 255, atol=1e-6)
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red
    x = pixels(encode(cmyk, "JPEG", quality=95))
    assert x[0].mean() > 0.9
    assert x[1].mean() < 0.1
    assert x[2].mean() < 0.1
    gif_transparent = Image.new("P", (32, 32), 0)
    gif_transparent.putpalette([0, 0, 0] * 256)
    np.testing.assert_allclose(pixels(encode(gif_transparent, "GIF", transparency=0)), 1.0)


def test_sixteen_bit_images_keep_their_range() -> None:
    arr = np.full((32, 32), 32768, np.uint16)
    im = Image.fromarray(arr)
    x = pixels(encode(im, "PNG"))
    np.testing.assert_allclose(x, 128 / 255, atol=1 / 255)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_allowed_formats_are_sniffed_and_decoded(fmt: str) -> None:
    data = encode(Image.open(io.BytesIO(make_image(1))).convert("RGB"), fmt)
    assert sniff_format(data) == fmt.lower()
    assert pixels(data).shape == (3, 32, 32)


def test_large_jpegs_decode_in_draft_mode_with_the_same_result() -> None:
    big = make_image(5, size=(2400, 1600))
    x = pixels(big)
    im = Image.open(io.BytesIO(big)).convert("RGB").resize((48, 32), Image.Resampling.BILINEAR)
    ref = np.asarray(im.crop((8, 0, 40, 32)), np.float32).transpose(2, 0, 1) / 255
    assert float(np.abs(x - ref).mean()) < 0.03


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _png_declaring(w: int, h: int) -> bytes:
    """A tiny PNG file whose header claims w x h: a bomb costs bytes, not pixels."""
    ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
    idat = _chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    return b"\x89PNG\r\n\x1a\n" + ihdr + idat + _chunk(b"IEND", b"")


def _corrupt_png() -> bytes:
    data = bytearray(encode(Image.new("RGB", (64, 64), (1, 2, 3)), "PNG"))
    start = data.index(b"IDAT") + 8
    data[start : start + 6] = b"\xff" * 6
    return bytes(data)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"%PDF-1.7 not an image", "unsupported_format"),
        (b"\x00\x00\x01\x00" + b"\x00" * 40, "unsupported_format"),  # .ico is not allowed
        (b"\xff\xd8\xff\xe0\x00\x10JFIF" + b"\x13" * 40, "corrupt"),
        (_corrupt_png(), "corrupt"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 30, "corrupt"),
        (_png_declaring(30000, 30000), "too_many_pixels"),
        (_png_declaring(200_000, 200_000), "too_many_pixels"),
        (_png_declaring(0, 10), "empty"),
    ],
)
def test_bad_input_raises_a_typed_reason(data: bytes, reason: str) -> None:
    with pytest.raises(ImageError) as info:
        pixels(data, max_pixels=64_000_000)
    assert info.value.reason == reason, info.value.message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_files_are_reported_as_truncated(fmt: str) -> None:
    data = encode(Image.open(io.BytesIO(make_image(2, (200, 150)))), fmt)
    with pytest.raises(ImageError) as info:
        pixels(data[: len(data) // 2])
    assert info.value.reason == "truncated"
    assert "bytes not processed" not in info.value.message  # Pillow's internals
    assert "the file ends before the image does" in info.value.message


def test_pixel_cap_applies_before_decoding() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(ImageError, match="over the cap") as info:
        pixels(data, max_pixels=9_999)
    assert info.value.reason == "too_many_pixels"
    assert pixels(data, max_pixels=10_000).shape == (3, 32, 32)


def test_thumbnail_is_a_small_jpeg_keeping_aspect() -> None:
    thumb = make_thumbnail(make_image(3, (800, 400)), size=128)
    assert sniff_format(thumb) == "jpeg"
    assert Image.open(io.BytesIO(thumb)).size == (128, 64)
    with pytest.raises(ImageError):
        make_thumbnail(b"nope")


def test_resize_larger_than_the_input_crops_the_centre_of_the_scaled_image() -> None:
    # a 64x64 image whose central 32x32 is white: resize 64 then crop 32 keeps only the white
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[16:48, 16:48] = 255
    cropped = ModelSpec(**{**SPEC.__dict__, "resize": 64})
    np.testing.assert_allclose(pixels(encode(Image.fromarray(arr), "PNG"), cropped), 1.0, atol=0.02)
    whole = pixels(encode(Image.fromarray(arr), "PNG"))  # resize 32: the black border stays
    assert 0.2 < float(whole.mean()) < 0.3


def test_ingest_decode_with_thumbnail_gives_the_same_model_input_as_a_query() -> None:
    """Ingest decodes once for code and thumbnail; a query decodes for the code alone.
    Both must see the same pixels, or one image would get two codes."""
    import io

    import numpy as np
    from PIL import Image

    from elastichash.model.contract import load_spec
    from elastichash.model.default import ensure_default_model
    from elastichash.model.preprocess import load_image, load_image_and_thumbnail

    spec = load_spec(ensure_default_model())
    rng = np.random.default_rng(5)
    for size in ((160, 120), (900, 600), (3000, 2000)):
        small = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(small).resize(size, Image.Resampling.BICUBIC).save(buf, "JPEG")
        data = buf.getvalue()
        arr, thumb = load_image_and_thumbnail(data, spec, 256)
        assert np.array_equal(arr, load_image(data, spec))
        with Image.open(io.BytesIO(thumb)) as t:
            assert max(t.size) == min(256, max(size))

"""One preprocessing path for ingest and query: bytes -> float32 CHW ready for the model.

Format allow-list by magic bytes (never by file name or client content type), header-only pixel
cap before any pixel is decoded, JPEG draft mode (DCT scaling) so a 24 MP photo decodes at
about the size we need, EXIF orientation, any mode to RGB with transparency over white, shorter
side resized then centre-cropped (the crop box is handed to the resampler, so only the crop is
computed). Every failure is an :class:`ImageError` with a reason.
"""

from __future__ import annotations

import io
import logging
import math
import re
import struct
import warnings
from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from elastichash.errors import ImageError
from elastichash.model.contract import ModelSpec
from elastichash.settings import MAX_PIXELS as DEFAULT_MAX_PIXELS

log = logging.getLogger(__name__)

# The long side of the JPEG thumbnail made beside the codes (gallery tiles, status pages).
THUMBNAIL_SIZE = 256
_PIL_FORMATS = {
    "jpeg": "JPEG",
    "png": "PNG",
    "gif": "GIF",
    "webp": "WEBP",
    "bmp": "BMP",
    "tiff": "TIFF",
}


def sniff_format(data: bytes) -> str | None:
    """The allow-listed format of ``data`` by its magic bytes, or None."""
    head = data[:16]
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"BM"):
        return "bmp"
    if head.startswith((b"II*\x00", b"MM\x00*")):
        return "tiff"
    return None


def declared_size(data: bytes, fmt: str | None) -> tuple[int, int] | None:
    """Width and height from the header of a PNG, GIF or BMP, without a decoder."""
    try:
        if fmt == "png" and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return (int(w), int(h))
        if fmt == "gif":
            w, h = struct.unpack("<HH", data[6:10])
            return (int(w), int(h))
        if fmt == "bmp":
            w, h = struct.unpack("<ii", data[18:26])
            return (abs(int(w)), abs(int(h)))
    except struct.error:
        return None
    return None


# Pillow names the file object it read from, e.g. "<_io.BytesIO object at 0x7f...>": a heap
# address is no business of a client, and changes with every request.
_OBJECT_REPR = re.compile(r"\s*<[\w.]+ object at 0x[0-9a-fA-F]+>")


def decoder_message(exc: BaseException) -> str:
    """The decoder's message about ``exc``, without object reprs."""
    return _OBJECT_REPR.sub("", str(exc)).strip() or type(exc).__name__


def _failure(exc: Exception) -> ImageError:
    text = decoder_message(exc)
    if "truncat" in text.lower() or isinstance(exc, EOFError):
        return ImageError("truncated", f"image data is truncated: {text}")
    return ImageError("corrupt", f"image cannot be decoded: {text}")


def open_image(
    data: bytes, max_pixels: int, want: Callable[[int, int], tuple[int, int]] | None = None
) -> Image.Image:
    """Decode ``data`` to an RGB image (EXIF orientation applied, alpha over white).

    ``want(w, h)``: the smallest (w, h) the caller needs from a w x h image; lets JPEG decode
    at a reduced DCT scale (draft mode), which is several times faster for large photos.
    """
    if not data:
        raise ImageError("empty", "image is empty (0 bytes)")
    fmt = sniff_format(data)
    if fmt is None:
        raise ImageError(
            "unsupported_format",
            "not an image of an allowed format (jpeg, png, gif, webp, bmp, tiff)",
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            im = Image.open(io.BytesIO(data), formats=[_PIL_FORMATS[fmt]])
    except Image.DecompressionBombError as exc:  # PIL's own guard, at 2x its default limit
        raise ImageError("too_many_pixels", str(exc)) from None
    except Exception as exc:
        size = declared_size(data, fmt)
        if size is not None and 0 in size:
            raise ImageError("empty", f"image has zero size {size[0]}x{size[1]}") from None
        raise _failure(exc) from None
    w, h = im.size
    if w <= 0 or h <= 0:
        raise ImageError("empty", f"image has zero size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError(
            "too_many_pixels", f"image is {w}x{h} = {w * h} pixels, over the cap of {max_pixels}"
        )
    try:
        if want is not None and fmt == "jpeg":
            im.draft(None, want(w, h))
        im.load()
        return to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except Exception as exc:
        raise _failure(exc) from None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited over white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        top = 65535.0 if im.mode.startswith("I") and arr.max(initial=0) > 255 else 255.0
        if im.mode == "F" and arr.max(initial=0) <= 1.0:
            top = 1.0
        grey = np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def _crop_box(w: int, h: int, resize: int, size: int) -> tuple[float, float, float, float]:
    """Source-pixel box that becomes the centre ``size`` crop after scaling min(w,h) to resize."""
    scale = resize / min(w, h)
    cw, ch = size / scale, size / scale
    left, top = (w - cw) / 2, (h - ch) / 2
    return (left, top, left + cw, top + ch)


def _model_want(spec: ModelSpec) -> Callable[[int, int], tuple[int, int]]:
    # JPEG draft needs the whole scaled frame, not just the crop, to be >= the target.
    def want(w: int, h: int) -> tuple[int, int]:
        scale = spec.resize / min(w, h)
        return (math.ceil(w * scale), math.ceil(h * scale))

    return want


def _to_model_input(im: Image.Image, spec: ModelSpec) -> npt.NDArray[np.float32]:
    w, h = im.size
    s = spec.input_size
    try:
        out = im.resize(
            (s, s), Image.Resampling.BILINEAR, box=_crop_box(w, h, spec.resize, s), reducing_gap=3.0
        )
    except Exception as exc:
        raise _failure(exc) from None
    arr = np.asarray(out, dtype=np.float32).transpose(2, 0, 1)
    scale = (1.0 / (255.0 * np.asarray(spec.std, dtype=np.float32))).reshape(3, 1, 1)
    offset = np.asarray(spec.mean, dtype=np.float32) / np.asarray(spec.std, dtype=np.float32)
    result: npt.NDArray[np.float32] = np.ascontiguousarray(arr * scale - offset.reshape(3, 1, 1))
    return result


def load_image(
    data: bytes, spec: ModelSpec, max_pixels: int = DEFAULT_MAX_PIXELS
) -> npt.NDArray[np.float32]:
    """Decode and preprocess one image: float32 (3, S, S), normalised as the model declares."""
    return _to_model_input(open_image(data, max_pixels, _model_want(spec)), spec)


def load_image_and_thumbnail(
    data: bytes, spec: ModelSpec, thumb_size: int, max_pixels: int = DEFAULT_MAX_PIXELS
) -> tuple[npt.NDArray[np.float32], bytes]:
    """:func:`load_image` and :func:`make_thumbnail`, from one decode where that is exact.

    The model input must come from exactly the decode :func:`load_image` does (same JPEG draft
    scale), or ingest and query codes of one image could differ. The thumbnail reuses that
    decode when it is large enough; only when draft mode shrank the image below the
    thumbnail size is the image decoded a second time.
    """
    model_want = _model_want(spec)
    original: list[tuple[int, int]] = []

    def want(w: int, h: int) -> tuple[int, int]:
        original.append((w, h))
        return model_want(w, h)

    im = open_image(data, max_pixels, want)
    arr = _to_model_input(im, spec)
    if not original or im.size == original[0] or max(im.size) >= thumb_size:
        return arr, _encode_thumbnail(im.copy(), thumb_size)
    return arr, make_thumbnail(data, thumb_size, max_pixels)


def _encode_thumbnail(im: Image.Image, size: int) -> bytes:
    im.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_thumbnail(
    data: bytes, size: int = THUMBNAIL_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS
) -> bytes:
    """A JPEG no larger than ``size`` on its longer side (aspect kept)."""
    im = open_image(data, max_pixels, want=lambda w, h: (min(w, size), min(h, size)))
    return _encode_thumbnail(im, size)

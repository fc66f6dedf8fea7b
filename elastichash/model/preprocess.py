"""One preprocessing path for ingest and query: bytes -> float32 CHW ready for the model.

Format allow-list by magic bytes (never by file name or client content type), header-only pixel
cap before any pixel is decoded, JPEG draft mode (DCT scaling) so a 24 MP photo decodes at
about the size we need, every other format reduced in its own mode right after decoding (one
pixel buffer per decode, drawn from a budget shared by all decodes), EXIF orientation, any
mode to RGB with transparency over white, shorter
side resized then centre-cropped (the crop box is handed to the resampler, so only the crop is
computed). Every failure is an :class:`ImageError` with a reason.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import math
import re
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
from PIL import Image

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
        # Pillow's own words add only "(0 bytes not processed)" and the like
        return ImageError("truncated", "image data is truncated: the file ends before the "
                          "image does (an interrupted copy or download?)")
    return ImageError("corrupt", f"image cannot be decoded: {text}")


def open_image(
    data: bytes, max_pixels: int, want: Callable[[int, int], tuple[int, int]] | None = None,
    budget: DecodeBudget | None = None,
) -> Image.Image:
    """Decode ``data`` to an RGB image (EXIF orientation applied, alpha over white).

    ``want(w, h)``: the smallest (w, h) the caller needs from a w x h image. JPEG decodes at
    a reduced DCT scale (draft mode); every other format is reduced right after decoding, in
    its own mode (or strip by strip where Pillow cannot reduce that mode), before anything is
    converted, so one decode holds about one pixel buffer of the image at its decoded size
    and no more. ``budget``: the memory budget this decode draws that buffer from.
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
        raise ImageError("too_many_pixels", decoder_message(exc)) from None
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
        target = want(w, h) if want is not None else None
        if target is not None and fmt == "jpeg":
            im.draft(None, target)
        with budget.hold(decode_cost(im)) if budget is not None else contextlib.nullcontext():
            im.load()
            orientation = _orientation(im)
            top = _grey_top(im)
            small = shrink(im, target) if target is not None else im
            return to_rgb(_transpose(small, orientation), top)
    except ImageError:
        raise
    except Exception as exc:
        raise _failure(exc) from None


# Pillow stores these modes at 1 or 2 bytes per pixel, every other at 4.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Pillow's WebP decoder holds libwebp's full-size output beside the image it copies it into
# (bench/decode_memory.py measures 4 buffers); the other decoders fill the image directly.
_COPIES = {"WEBP": 4}
# What a decode holds beyond its pixel buffers: the reduced image, a conversion strip, the
# compressed bytes' decoder state.
_DECODE_OVERHEAD = 8 * 1024 * 1024


def decode_cost(im: Image.Image) -> int:
    """Bytes one decode of ``im`` (at its current, possibly draft-reduced, size) holds."""
    w, h = im.size
    copies = _COPIES.get(im.format or "", 1)
    return w * h * _BYTES_PER_PIXEL.get(im.mode, 4) * copies + _DECODE_OVERHEAD


class DecodeBudget:
    """Bytes of decoded pixels that all decodes of one process may hold at once (the decode
    workers of ingest and query images alike). A decode waits until its share is free; one
    larger than the whole budget waits until it is alone, so it still runs."""

    def __init__(self, total: int) -> None:
        self.total = max(1, total)
        self.used = 0
        self.peak = 0
        self._cond = threading.Condition()

    @contextlib.contextmanager
    def hold(self, nbytes: int) -> Iterator[None]:
        n = min(nbytes, self.total)
        with self._cond:
            self._cond.wait_for(lambda: self.used + n <= self.total)
            self.used += n
            self.peak = max(self.peak, self.used)
        try:
            yield
        finally:
            with self._cond:
                self.used -= n
                self._cond.notify_all()


_M_MMAP_THRESHOLD = -3  # glibc mallopt() parameter


def release_freed_buffers() -> None:
    """Serve allocations of 1 MiB and more straight from mmap, process-wide, so a finished
    decode's pixel buffers go back to the OS. glibc otherwise raises its mmap threshold after
    the first such buffer is freed and keeps later ones in per-thread arenas: four decode
    threads then held 475 MB of RSS for 130 MB of live decodes
    (tests/unit/test_decode_memory.py)."""
    global _released
    if _released or not sys.platform.startswith("linux"):
        return
    _released = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1024 * 1024)
    except (OSError, AttributeError):  # not glibc (musl, another libc): nothing to tune
        log.debug("mallopt unavailable; freed decode buffers may stay in malloc arenas")


_released = False


# Image.reduce() works on these modes in place; RGBA and LA it premultiplies through a
# full-size copy first, so those (and the modes it cannot reduce) go strip by strip.
_REDUCIBLE = {"L", "I", "F", "RGB", "RGBX", "CMYK", "YCbCr"}
_STRIP_MODE = {"RGBA": "RGBA", "LA": "LA", "RGBa": "RGBa", "La": "La", "PA": "RGBA", "1": "L",
               "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
# The same box filter Image.resize(reducing_gap=3.0) applies: reduce while at least three
# times the size wanted remains, so the later resize sees what it would have made itself.
_REDUCING_GAP = 3.0
_STRIP_ROWS = 256


def shrink(im: Image.Image, want: tuple[int, int]) -> Image.Image:
    """``im`` reduced by an integer factor while still >= 3x ``want``, without a full-size
    copy in any other mode."""
    w, h = im.size
    factor = int(min(w / max(1, want[0]), h / max(1, want[1])) / _REDUCING_GAP)
    if factor < 2:
        return im
    if im.mode in _REDUCIBLE:
        return im.reduce(factor)
    mode = _STRIP_MODE.get(im.mode)
    if mode is None:
        mode = "RGBA" if im.mode == "P" and "transparency" in im.info else "RGB"
    out = Image.new(mode, (-(-w // factor), -(-h // factor)))
    band = factor * max(1, _STRIP_ROWS // factor)
    for y in range(0, h, band):
        strip = im.crop((0, y, w, min(h, y + band)))
        if strip.mode != mode:
            strip = strip.convert(mode)
        out.paste(strip.reduce(factor), (0, y // factor))
    return out


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}


def _orientation(im: Image.Image) -> int:
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception:
        return 1


def _transpose(im: Image.Image, orientation: int) -> Image.Image:
    method = _TRANSPOSE.get(orientation)
    return im.transpose(method) if method is not None else im


def _grey_top(im: Image.Image) -> float | None:
    """The full-scale value of a 16-bit, 32-bit or float grey image, judged on the whole
    image before it is reduced (averaging could hide the few pixels that set it)."""
    if im.mode.startswith("I") or im.mode == "F":
        hi = float(im.getextrema()[1])  # type: ignore[arg-type]
        if im.mode == "F":
            return 1.0 if hi <= 1.0 else 255.0
        return 65535.0 if hi > 255 else 255.0
    return None


def to_rgb(im: Image.Image, top: float | None = None) -> Image.Image:
    """Any PIL mode to 8-bit RGB; transparency is composited over white. ``top``: the value
    that maps to white in a 16-bit, 32-bit or float grey image (default: judged from it)."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        top = top if top is not None else _grey_top(im)
        arr = np.asarray(im, dtype=np.float32)
        grey = np.clip(np.rint(arr * np.float32(255.0 / (top or 255.0))), 0, 255)
        return Image.fromarray(grey.astype(np.uint8), "L").convert("RGB")
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
    data: bytes, spec: ModelSpec, max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: DecodeBudget | None = None,
) -> npt.NDArray[np.float32]:
    """Decode and preprocess one image: float32 (3, S, S), normalised as the model declares."""
    return _to_model_input(open_image(data, max_pixels, _model_want(spec), budget), spec)


def load_image_and_thumbnail(
    data: bytes, spec: ModelSpec, thumb_size: int, max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: DecodeBudget | None = None,
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

    im = open_image(data, max_pixels, want, budget)
    arr = _to_model_input(im, spec)
    if not original or im.size == original[0] or max(im.size) >= thumb_size:
        return arr, _encode_thumbnail(im.copy(), thumb_size)
    return arr, make_thumbnail(data, thumb_size, max_pixels, budget)


def _encode_thumbnail(im: Image.Image, size: int) -> bytes:
    im.thumbnail((size, size), Image.Resampling.BILINEAR, reducing_gap=3.0)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def make_thumbnail(
    data: bytes, size: int = THUMBNAIL_SIZE, max_pixels: int = DEFAULT_MAX_PIXELS,
    budget: DecodeBudget | None = None,
) -> bytes:
    """A JPEG no larger than ``size`` on its longer side (aspect kept)."""
    im = open_image(data, max_pixels, lambda w, h: (min(w, size), min(h, size)), budget)
    return _encode_thumbnail(im, size)

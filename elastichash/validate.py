"""Cheap checks on uploaded bytes before they are queued: the expensive decode happens in
the encoder, but what can be refused from the header is refused at the door."""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from elastichash.errors import ImageError, UnsupportedMediaType
from elastichash.ids import content_id
from elastichash.model.preprocess import declared_size, decoder_message, sniff_format

ORIENTATION_TAG = 0x0112

CONTENT_TYPES = {
    "jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp",
    "bmp": "image/bmp", "tiff": "image/tiff",
}


def check_image_bytes(data: bytes, max_pixels: int) -> tuple[str, int, int]:
    """The sniffed content type and the displayed width and height (EXIF orientation
    applied), or raise why the bytes cannot be an image we take."""
    if not data:
        raise ImageError("empty", "the file is empty")
    fmt = sniff_format(data)
    if fmt is None or fmt not in CONTENT_TYPES:
        raise UnsupportedMediaType(
            "not an image in an accepted format (JPEG, PNG, GIF, WebP, BMP, TIFF)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                with contextlib.suppress(Exception):
                    if img.getexif().get(ORIENTATION_TAG) in (5, 6, 7, 8):
                        width, height = height, width
    except Image.DecompressionBombError:
        # Pillow's own guard fires first for the largest; say the size where the header
        # gives it, and our limit, as the check below does.
        size = declared_size(data, fmt)
        said = (f"image is {size[0]}x{size[1]} = {size[0] * size[1]} pixels" if size
                else "image has too many pixels")
        raise ImageError("too_many_pixels", f"{said}; the limit is {max_pixels}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        size = declared_size(data, fmt)
        if size is not None and 0 in size:
            raise ImageError("empty", f"image has zero size {size[0]}x{size[1]}") from None
        raise ImageError("corrupt",
                         f"image header cannot be read: {decoder_message(exc)}") from None
    if width <= 0 or height <= 0:
        raise ImageError("empty", "image has zero width or height")
    if width * height > max_pixels:
        raise ImageError("too_many_pixels",
                         f"image is {width}x{height} = {width * height} pixels; "
                         f"the limit is {max_pixels}")
    return CONTENT_TYPES[fmt], width, height


@dataclass(frozen=True)
class ImageInfo:
    content_type: str
    width: int
    height: int
    content_id: str


def inspect_image(data: bytes, max_pixels: int) -> ImageInfo:
    """What ingest needs before queueing an image: the checks above plus its content id.
    Hashes up to the whole upload, so callers on an event loop run it in a thread."""
    content_type, width, height = check_image_bytes(data, max_pixels)
    return ImageInfo(content_type, width, height, content_id(data))

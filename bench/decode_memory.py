"""Peak memory of one image decode (bytes -> model input and thumbnail), for the formats that
cost the most: small files under the byte cap that decode to tens of megapixels.

    python bench/decode_memory.py [--size 8000] [--only png16,png_rgba] [--out FILE]

Each image is generated once (compressible content, so each file stays far under the 32 MiB
upload cap), then decoded in a fresh child process that reports how far its resident set rose
above what it held just before the decode (Linux: VmHWM after resetting it through
/proc/self/clear_refs). The reference in the same run is the size of the decoded pixel buffer
itself (width x height x Pillow's bytes per pixel for that mode): no decoder can do with less
than one such buffer, so peak / buffer says how many copies a decode makes.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import header, row, write_result  # noqa: E402

MB = 1024 * 1024
# Pillow keeps these modes at 4 bytes per pixel, "I;16" at 2, "L", "P" and "1" at 1.
BYTES_PER_PIXEL = {"I;16": 2, "L": 1, "P": 1, "1": 1}


def _gradient(size: int) -> np.ndarray:
    ramp = np.linspace(0.0, 1.0, size, dtype=np.float32)
    return ramp[None, :] * ramp[:, None]


def png16(size: int) -> bytes:
    grey = (_gradient(size) * 65535).astype(np.uint16)
    return _save(Image.fromarray(grey), "PNG")


def png_rgba(size: int) -> bytes:
    g = (_gradient(size) * 255).astype(np.uint8)
    rgba = np.stack([g, g[::-1], g[:, ::-1], np.full_like(g, 200)], axis=-1)
    return _save(Image.fromarray(rgba, "RGBA"), "PNG")


def png_palette(size: int) -> bytes:
    im = Image.fromarray((_gradient(size) * 255).astype(np.uint8), "L").convert("P")
    im.info["transparency"] = 0
    return _save(im, "PNG", transparency=0)


def tiff_float(size: int) -> bytes:
    # Coarse steps, so the deflated file stays under the upload cap.
    grey = np.round(_gradient(size) * 16) / 16
    return _save(Image.fromarray(grey.astype(np.float32), "F"), "TIFF",
                 compression="tiff_adobe_deflate")


def gif(size: int) -> bytes:
    return _save(Image.fromarray((_gradient(size) * 255).astype(np.uint8), "L").convert("P"),
                 "GIF")


def webp(size: int) -> bytes:
    g = (_gradient(min(size, 16383)) * 255).astype(np.uint8)
    return _save(Image.fromarray(np.stack([g, g, g], axis=-1), "RGB"), "WEBP", lossless=True)


def jpeg(size: int) -> bytes:
    g = (_gradient(size) * 255).astype(np.uint8)
    return _save(Image.fromarray(np.stack([g, g, g], axis=-1), "RGB"), "JPEG", quality=80)


def _save(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


FORMATS: dict[str, Callable[[int], bytes]] = {
    "png16": png16, "png_rgba": png_rgba, "png_palette": png_palette,
    "tiff_float": tiff_float, "gif": gif, "webp": webp, "jpeg": jpeg,
}


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(path: str) -> None:
    """Decode one file as the encoder does (model input and thumbnail, one decode) and print
    {"peak": bytes above the resident set before the decode, "mode", "size"}."""
    from elastichash.model.contract import ModelSpec
    from elastichash.model.preprocess import load_image_and_thumbnail

    spec = ModelSpec("bench", "1", "0" * 64, "input", 224, 256, (0.485, 0.456, 0.406),
                     (0.229, 0.224, 0.225), 256, tuple(range(64)), "code", None)
    small = Image.new("RGB", (300, 200), (10, 20, 30))
    load_image_and_thumbnail(_save(small, "PNG"), spec, 256)  # imports and first-use costs
    data = Path(path).read_bytes()
    with Image.open(io.BytesIO(data)) as im:
        mode, size = im.mode, im.size
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    load_image_and_thumbnail(data, spec, 256)
    print(json.dumps({"peak": _status("VmHWM") - before, "mode": mode, "size": size}))


def measure(data: bytes, env: dict[str, str] | None = None) -> dict[str, object]:
    with tempfile.NamedTemporaryFile(suffix=".img") as fh:
        fh.write(data)
        fh.flush()
        out = subprocess.run([sys.executable, __file__, "--child", fh.name], check=True,
                             capture_output=True, text=True, env=env)
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", type=int, default=8000, help="side of the square images")
    ap.add_argument("--only", default=",".join(FORMATS), help="comma-separated formats")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/decode_memory.json")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child)
        return 0
    rows = []
    columns = [("format", "<12"), ("mode", "<5"), ("file MB", ">8.2f"), ("pixels", ">10d"),
               ("buffer MB", ">10.1f"), ("peak MB", ">8.1f"), ("peak/buffer", ">11.2f")]
    print(header(columns))
    for name in args.only.split(","):
        data = FORMATS[name](args.size)
        got = measure(data)
        w, h = got["size"]  # type: ignore[misc]
        buffer = w * h * BYTES_PER_PIXEL.get(str(got["mode"]), 4)
        peak = int(got["peak"])  # type: ignore[call-overload]
        rows.append({"format": name, "mode": got["mode"], "file_bytes": len(data), "width": w,
                     "height": h, "buffer_bytes": buffer, "peak_bytes": peak,
                     "peak_over_buffer": round(peak / buffer, 2)})
        # One row at a time: a slow format shows as it is measured.
        print(row(columns, (name, str(got["mode"]), len(data) / MB, w * h, buffer / MB,
                            peak / MB, peak / buffer)))
    write_result("decode_memory", {
        "size": args.size, "python": platform.python_version(),
        "pillow": Image.__version__, "cpus": os.cpu_count(), "rows": rows}, path=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

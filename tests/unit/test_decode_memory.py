"""One decode holds about one pixel buffer of the image, whatever its format, and all decodes
of a process together stay within the shared budget (ingest workers and query images)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))

import decode_memory  # noqa: E402  (bench/decode_memory.py)

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]
MB = 1024 * 1024


@pytest.mark.parametrize(("fmt", "buffer_mb"), [
    ("png16", 122), ("png_rgba", 244), ("png_palette", 61), ("tiff_float", 244),
])
def test_a_64_megapixel_decode_holds_about_one_pixel_buffer(fmt: str, buffer_mb: int) -> None:
    got = decode_memory.measure(decode_memory.FORMATS[fmt](8000))
    peak_mb = int(got["peak"]) / MB  # type: ignore[call-overload]
    # Before: 14x (16-bit PNG, 1.7 GB), 6x (RGBA), 21x (palette), 8x (float TIFF).
    assert peak_mb < 1.5 * buffer_mb, (fmt, peak_mb)


def test_concurrent_decodes_share_one_budget(tmp_path: Path) -> None:
    image = tmp_path / "big.png"
    image.write_bytes(decode_memory.png16(8000))
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        sys.path.insert(0, {str(ROOT)!r})
        from elastichash.model.contract import ModelSpec
        from elastichash.model.encoder import Encoder
        from elastichash.model.session import ModelSession
        from elastichash.settings import ImageLimits, ModelSettings

        def status(field):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024

        spec = ModelSpec("t", "1", "0" * 64, "input", 224, 256, (0.5, 0.5, 0.5),
                         (0.5, 0.5, 0.5), 256, tuple(range(64)), "code", None)
        limits = ImageLimits(decode_memory_bytes=200 * 1024 * 1024)
        enc = Encoder(ModelSession(spec, None, []), ModelSettings(decode_workers=4), limits)
        data = Path({str(image)!r}).read_bytes()
        pool, _ = enc._pools()
        before = status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        list(pool.map(enc._decode, [data] * 6))
        print(json.dumps({{"peak": status("VmHWM") - before, "budget_peak": enc.budget.peak}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=240)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # Four workers, six 122 MB decodes, a 200 MB budget: one decode at a time.
    assert got["budget_peak"] <= 200 * MB
    assert got["peak"] < 250 * MB, got["peak"] / MB

"""``elastichash index DIR`` (and ``serve --images``): a folder with bad files among good ones
indexes the good ones and names each bad one with its reason."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from elastichash.cli.standalone import open_local
from elastichash.folder import ingest_folder
from elastichash.settings import ImageLimits, IndexSettings, ModelSettings
from tests.imagegen import make_image


def _huge_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buf, "PNG")  # 900 Mpixels in ~100 KB
    return buf.getvalue()


async def test_a_folder_with_bad_files_indexes_the_rest_and_names_each_failure(
        tmp_path: Path, model_path: Path) -> None:
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for s in range(3):
        (folder / f"good{s}.jpg").write_bytes(make_image(7100 + s))
    whole = make_image(7199)
    (folder / "truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "sub" / "huge.png").write_bytes(_huge_png())
    (folder / "notes.jpg").write_text("not an image at all")
    model = ModelSettings(path=model_path, batch_size=8)
    index = IndexSettings(backend="embedded", data_dir=tmp_path / "index")
    async with open_local(model, ImageLimits(), index, tmp_path / "spool") as local:
        report = await ingest_folder(local.pipeline, local.index, folder, progress=False)
        assert await local.index.count() == 3

    assert (report.files, report.indexed, report.failed, report.not_images) == (6, 3, 2, 1)
    assert report.unreadable == 0  # an image that cannot be used is a failure, not unreadable
    why = dict(report.failures)
    assert set(why) == {str(folder / "truncated.jpg"), str(folder / "sub" / "huge.png")}
    assert "truncated" in why[str(folder / "truncated.jpg")]
    assert "30000x30000" in why[str(folder / "sub" / "huge.png")]
    assert f"limit is {ImageLimits().max_pixels}" in why[str(folder / "sub" / "huge.png")]
    lines = report.failure_lines()
    assert len(lines) == 2
    assert all(line.startswith("not indexed: ") for line in lines)

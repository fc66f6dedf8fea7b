"""An index is bound to the model whose codes it holds; reindex moves it to another."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from elastichash.errors import ModelMismatch
from elastichash.index.base import Document
from elastichash.index.embedded import EmbeddedIndex
from elastichash.index.query import SearchQuery
from elastichash.index.reindex import PREVIEW_READS, reindex
from elastichash.model.contract import load_spec
from elastichash.model.registry import ensure_builtin
from tests.imagegen import make_image


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _with_index(root: Path, fn):  # type: ignore[no-untyped-def]
    index = EmbeddedIndex(root)
    await index.open()
    try:
        return await fn(index)
    finally:
        await index.close()


def test_an_index_refuses_another_models_codes_naming_both(
    tmp_path: Path, semantic_model: Path,
) -> None:
    visual = load_spec(ensure_builtin("visual", tmp_path / "models"))
    lite0 = load_spec(semantic_model)

    async def first(index: EmbeddedIndex) -> None:
        await index.bind_model("visual", visual)
        await index.upsert([Document("a", bytes(32), bytes(8))])

    _run(_with_index(tmp_path / "index", first))

    async def second(index: EmbeddedIndex) -> None:
        await index.bind_model("visual", visual)  # the same model: fine
        with pytest.raises(ModelMismatch) as err:
            await index.bind_model("efficientnet-lite0", lite0)
        assert "'visual'" in err.value.message
        assert "'efficientnet-lite0'" in err.value.message
        assert "elastichash reindex --model efficientnet-lite0" in err.value.message

    _run(_with_index(tmp_path / "index", second))


def test_an_index_from_before_model_records_is_the_descriptors(
    tmp_path: Path, semantic_model: Path,
) -> None:
    async def legacy(index: EmbeddedIndex) -> None:
        await index.upsert([Document("a", bytes(32), bytes(8))])  # no model recorded

    _run(_with_index(tmp_path / "index", legacy))

    async def check(index: EmbeddedIndex) -> None:
        with pytest.raises(ModelMismatch, match="'visual'"):
            await index.bind_model("efficientnet-lite0", load_spec(semantic_model))
        await index.bind_model("visual", load_spec(ensure_builtin("visual", tmp_path / "m")))
        assert (await index.model())[0] == "visual"

    _run(_with_index(tmp_path / "index", check))


def test_reindex_reencodes_from_files_and_thumbnails_and_reports_the_rest(
    tmp_path: Path, semantic_model: Path,
) -> None:
    root = tmp_path / "data"
    (root / "models").mkdir(parents=True)
    (root / "models" / "efficientnet-lite0.onnx").write_bytes(semantic_model.read_bytes())
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(make_image(7, (300, 200)))
    thumb = make_image(8, (256, 170))

    async def fill(index: EmbeddedIndex) -> None:
        await index.bind_model("visual", load_spec(ensure_builtin("visual", root / "models")))
        await index.upsert([
            Document("file", bytes(32), bytes(8), source=str(photo)),
            Document("thumb", bytes(32), bytes(8), source="gone.jpg", thumbnail=thumb),
            Document("lost", bytes(32), bytes(8), source="https://example.org/x.jpg"),
        ])

    _run(_with_index(root / "index", fill))
    report = _run(reindex(root, "efficientnet-lite0", progress=False))
    assert (report.from_file, report.from_thumbnail) == (1, 1)
    assert [i for i, _ in report.failed] == ["lost"]
    assert report.backup is not None
    assert report.backup.is_dir()

    async def after(index: EmbeddedIndex) -> None:
        assert (await index.model())[0] == "efficientnet-lite0"
        assert await index.count() == 2
        doc = await index.get("file")
        assert doc is not None
        assert doc.code != bytes(32)
        assert doc.metadata.get("labels")  # the new model's labels came with it
        hits = (await index.search(SearchQuery(code=doc.code, short=doc.short, k=1))).hits
        assert hits[0].id == "file"

    _run(_with_index(root / "index", after))


def test_reindex_reads_a_batchs_previews_concurrently_and_still_reports_each_failure(
    tmp_path: Path, semantic_model: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The real index's preview reads, each made slow: a batch's reads overlap (at most
    PREVIEW_READS at once), every preview reaches the new index, and the images that cannot be
    re-encoded are each reported, in order, with their reason."""
    root = tmp_path / "data"
    (root / "models").mkdir(parents=True)
    (root / "models" / "efficientnet-lite0.onnx").write_bytes(semantic_model.read_bytes())
    good = [Document(f"img{i:02d}", bytes(32), bytes(8), source=f"gone/{i}.jpg",
                     thumbnail=make_image(20 + i, (256, 192)),
                     preview=make_image(20 + i, (640, 480))) for i in range(12)]
    bad = [Document("broken", bytes(32), bytes(8), source="gone/b.jpg",
                    thumbnail=b"not a jpeg", preview=make_image(50, (640, 480))),
           Document("lost", bytes(32), bytes(8), source="https://example.org/x.jpg")]

    async def fill(index: EmbeddedIndex) -> None:
        await index.bind_model("visual", load_spec(ensure_builtin("visual", root / "models")))
        await index.upsert([*good[:6], *bad, *good[6:]])

    _run(_with_index(root / "index", fill))
    delay, in_flight, peak, read = 0.2, [0], [0], []
    real_read = EmbeddedIndex.get_preview

    async def slow_read(self: EmbeddedIndex, doc_id: str) -> bytes | None:
        in_flight[0] += 1
        peak[0] = max(peak[0], in_flight[0])
        try:
            await asyncio.sleep(delay)
            return await real_read(self, doc_id)
        finally:
            in_flight[0] -= 1
            read.append(doc_id)

    monkeypatch.setattr(EmbeddedIndex, "get_preview", slow_read)
    report = _run(reindex(root, "efficientnet-lite0", progress=False))
    monkeypatch.undo()
    assert (report.from_file, report.from_thumbnail) == (0, 12)
    assert [i for i, _ in report.failed] == ["lost", "broken"]
    assert report.failed[0][1] == "no source file and no stored thumbnail"
    assert report.failed[1][1].startswith("cannot encode its thumbnail: ")
    assert sorted(read) == [d.id for d in good]  # only the re-encoded images' previews
    assert 2 <= peak[0] <= PREVIEW_READS

    async def after(index: EmbeddedIndex) -> None:
        assert await index.count() == 12
        for d in good:
            assert await index.get_preview(d.id) == d.preview

    _run(_with_index(root / "index", after))


def test_serve_commands_refuse_a_mismatched_index_with_a_message(
    tmp_path: Path, semantic_model: Path,
) -> None:
    root = tmp_path / "data"
    (root / "models").mkdir(parents=True)
    (root / "models" / "efficientnet-lite0.onnx").write_bytes(semantic_model.read_bytes())

    async def fill(index: EmbeddedIndex) -> None:
        await index.upsert([Document("a", bytes(32), bytes(8))])  # an older, visual index

    _run(_with_index(root / "index", fill))
    image = tmp_path / "q.jpg"
    image.write_bytes(make_image(3))
    out = subprocess.run(
        [sys.executable, "-m", "elastichash.cli", "search", str(image), "--data", str(root),
         "--model", "efficientnet-lite0"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert "holds codes of model 'visual'" in out.stderr
    assert "Traceback" not in out.stderr

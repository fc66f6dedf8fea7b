"""``elastichash reindex``: re-encode an embedded index with another model.

Codes of two models cannot be compared, so an index is bound to one model (see
``EmbeddedIndex.bind_model``). Reindexing builds a new index beside the old one from what
each document still has a source for — the file its ``source`` names, if it is still there,
else the stored thumbnail (256 px, above the 224 px a built-in model reads) — then swaps the
directories; the old index stays as ``index.before-reindex-<time>`` until removed by hand.
Documents with neither are reported and left out of the new index.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from elastichash.aio import gather_bounded
from elastichash.index.base import Document
from elastichash.settings import ImageLimits, ModelSettings

BATCH = 64
PREVIEW_READS = 8  # previews read at once (from the index's reader threads)
THUMBNAIL_SIZE = 256


@dataclass
class ReindexReport:
    from_file: int = 0
    from_thumbnail: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (id, why)
    backup: Path | None = None

    def summary(self) -> str:
        done = self.from_file + self.from_thumbnail
        return (f"re-encoded {done} images ({self.from_file} from their files, "
                f"{self.from_thumbnail} from stored thumbnails); {len(self.failed)} could not "
                f"be re-encoded" + (f"; the old index is kept at {self.backup}"
                                    if self.backup else ""))


def _source_bytes(doc: Document) -> tuple[bytes | None, str]:
    src = doc.source
    if src and not src.startswith(("http://", "https://")):
        try:
            return Path(src).read_bytes(), "file"
        except OSError:
            pass
    if doc.thumbnail:
        return bytes(doc.thumbnail), "thumbnail"
    return None, "no source file and no stored thumbnail"


async def reindex(root: Path, model: str, progress: bool = True) -> ReindexReport:
    from tqdm import tqdm

    from elastichash.index.embedded import EmbeddedIndex
    from elastichash.model.encoder import Encoded, Encoder
    from elastichash.pipeline import LABELS_KEY, IngestItem, ingest_record

    settings = ModelSettings(model=model, models_dir=root / "models")
    encoder = await asyncio.to_thread(Encoder.load, settings, ImageLimits())
    old_dir, new_dir = root / "index", root / "index.reindexing"
    shutil.rmtree(new_dir, ignore_errors=True)
    old, new = EmbeddedIndex(old_dir), EmbeddedIndex(new_dir)
    await old.open()
    await new.open()
    report = ReindexReport()
    try:
        await new.bind_model(model, encoder.spec)
        total = await old.count()
        bar = tqdm(total=total, unit="img", disable=not progress, desc="reindex")
        async for records in old.scan(batch=BATCH):
            docs = [d for d in await asyncio.gather(*(old.get(r.id) for r in records)) if d]
            by_id = {d.id: d for d in docs}
            items, datas, kinds, keep_thumbs = [], [], [], []
            for d in docs:
                data, kind = _source_bytes(d)
                if data is None:
                    report.failed.append((d.id, kind))
                    continue
                meta = {k: v for k, v in d.metadata.items() if k != LABELS_KEY}
                items.append(IngestItem(d.id, b"", d.source, meta))
                datas.append(data)
                kinds.append(kind)
                keep_thumbs.append(d.thumbnail)
            results = await encoder.aencode(datas, thumbnails=THUMBNAIL_SIZE)
            # The previews of the batch's re-encoded images, read PREVIEW_READS at a time: at
            # most a batch's previews in memory, as before, but not one read after another.
            encoded = [it.id for it, res in zip(items, results, strict=True)
                       if isinstance(res, Encoded)]
            previews = dict(zip(encoded, await gather_bounded(old.get_preview, encoded,
                                                              PREVIEW_READS), strict=True))
            out = []
            for item, res, kind, thumb in zip(items, results, kinds, keep_thumbs, strict=True):
                if not isinstance(res, Encoded):
                    report.failed.append((item.id, f"cannot encode its {kind}: {res}"))
                    continue
                if kind == "thumbnail":  # keep the thumbnail made from the original
                    res = Encoded(res.code, res.short, thumb, res.labels)
                    report.from_thumbnail += 1
                else:
                    report.from_file += 1
                # The new codes; the upload's version, sources and preview stay as they were.
                was, record = by_id[item.id], ingest_record(item, res, time.time())
                assert isinstance(record, Document)  # an Encoded result makes a document
                out.append(dataclasses.replace(
                    record, version=was.version, sources=was.sources,
                    preview=previews[item.id]))
            written = await new.upsert(out)
            for wr in written:
                if not wr.ok:
                    report.failed.append((wr.id, wr.error or "write failed"))
            bar.update(len(records))
        bar.close()
    finally:
        await new.close()
        await old.close()
        encoder.close()
    backup = root / f"index.before-reindex-{time.strftime('%Y%m%d-%H%M%S')}"
    old_dir.rename(backup)
    new_dir.rename(old_dir)
    report.backup = backup
    return report

"""Search by words on an engine (Elasticsearch/OpenSearch) against the embedded index, one run.

    python bench/words_engine.py DIR [--engine-url URL] [--kind opensearch] [--limit N]
                                     [--model efficientnet-lite0]
                                     [--out bench/results/words_engine.json]

DIR holds a labels.csv (path,label) or one subfolder per label (as bench/quality.py). Every
image is encoded once with the model; the same documents go into a temporary embedded index
and a temporary engine index (deleted afterwards). For each label that is also a word it
reports the precision of the first 20 results of a search by that word on both backends,
how many of the first 100 places are filled, whether the two ranked lists (first 100) are
identical, the same for words plus an image
(three images per label, first 50), and the median time of a search by words on each (the
embedded index is the reference: the ratio is engine / embedded).

The engine defaults to the test command's node (``.services/engine.url``), else
OPENSEARCH_URL or ES_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from quality import encode_full, load_dataset  # noqa: E402

from bench.report import table, write_result  # noqa: E402
from elastichash.index.base import Document, SearchQuery  # noqa: E402
from elastichash.index.embedded import EmbeddedIndex  # noqa: E402
from elastichash.index.es import EngineIndex  # noqa: E402
from elastichash.model.encoder import Encoder  # noqa: E402
from elastichash.model.labels import vocabulary  # noqa: E402
from elastichash.pipeline import IngestItem, ingest_record  # noqa: E402
from elastichash.settings import ImageLimits, ModelSettings  # noqa: E402

IMAGES_PER_LABEL = 3


def engine_default() -> tuple[str, str] | None:
    url_file = ROOT / ".services" / "engine.url"
    if url_file.is_file():
        kind, url = url_file.read_text().split()
        return kind, url
    for env, kind in (("OPENSEARCH_URL", "opensearch"), ("ES_URL", "elasticsearch")):
        if os.environ.get(env):
            return kind, os.environ[env]
    return None


def word_of(label: str) -> str | None:
    vocab = vocabulary()
    for word in (label, label.rstrip("s")):
        if vocab.lookup(word) is not None:
            return word
    return None


async def timed(index: Any, query: SearchQuery) -> tuple[list[tuple[int, str]], float]:
    started = time.perf_counter()
    res = await index.search(query)
    return [(h.distance, h.id) for h in res.hits], (time.perf_counter() - started) * 1000.0


async def run(docs: list[Document], labels: np.ndarray, kind: str, url: str,
              repeats: int) -> dict[str, Any]:
    by_id = {d.id: i for i, d in enumerate(docs)}
    with tempfile.TemporaryDirectory() as tmp:
        embedded = EmbeddedIndex(Path(tmp) / "index")
        engine = EngineIndex(url, f"eh-bench-words-{uuid.uuid4().hex[:8]}", kind=kind)
        await embedded.open()
        await engine.open()
        try:
            await embedded.upsert(docs)
            failed = [r for r in await engine.upsert(docs) if not r.ok]
            if failed:
                raise SystemExit(f"{len(failed)} documents not written, first: {failed[0]}")
            await engine.refresh()
            rows = []
            times: dict[str, list[float]] = {"embedded": [], "engine": []}
            for lab in sorted(set(labels)):
                word = word_of(str(lab))
                if word is None:
                    rows.append({"label": str(lab), "word": None})
                    continue
                row: dict[str, Any] = {"label": str(lab), "word": word}
                lists = {}
                for name, index in (("embedded", embedded), ("engine", engine)):
                    for _ in range(repeats):
                        ranked, ms = await timed(index, SearchQuery(text=word, k=100))
                        times[name].append(ms)
                    lists[name] = ranked
                    top = [by_id[i] for _, i in ranked[:20]]
                    row[f"p20_{name}"] = (float(np.mean(labels[top] == lab)) if top else 0.0)
                row["found"] = len(lists["engine"])  # of the first 100
                row["same_ranking"] = lists["embedded"] == lists["engine"]
                same_with_image = True
                for i in np.flatnonzero(labels == lab)[:IMAGES_PER_LABEL]:
                    q = SearchQuery(text=word, code=docs[i].code, short=docs[i].short, k=50)
                    a, _ = await timed(embedded, q)
                    b, _ = await timed(engine, q)
                    same_with_image &= a == b
                row["same_ranking_with_image"] = same_with_image
                rows.append(row)
        finally:
            await engine.client.delete_index(engine.concrete)
            await engine.client.delete_index(engine.names.failures)
            await engine.close()
            await embedded.close()
    medians = {k: statistics.median(v) for k, v in times.items() if v}
    return {"rows": rows, "median_ms": medians,
            "ratio_engine_to_embedded": medians["engine"] / medians["embedded"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--engine-url", default=None)
    ap.add_argument("--kind", choices=("opensearch", "elasticsearch"), default=None)
    ap.add_argument("--model", default="efficientnet-lite0")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5, help="timed searches per word and backend")
    ap.add_argument("--out", type=Path, default=ROOT / "bench/results/words_engine.json")
    args = ap.parse_args(argv)
    found = engine_default()
    kind = args.kind or (found[0] if found else "opensearch")
    url = args.engine_url or (found[1] if found else None)
    if url is None:
        print("no engine: give --engine-url (or run `make services`)", file=sys.stderr)
        return 2
    paths, names = load_dataset(args.dir, args.limit)
    labels = np.array(names)
    encoder = Encoder.load(ModelSettings(model=args.model), ImageLimits())
    started = time.perf_counter()
    encoded = encode_full(encoder, [p.read_bytes() for p in paths])
    encode_s = time.perf_counter() - started
    docs = [ingest_record(IngestItem(f"{i:05d}", b"", source=p.name), r, 0.0)
            for i, (p, r) in enumerate(zip(paths, encoded, strict=True))]
    result = asyncio.run(run([d for d in docs if isinstance(d, Document)], labels, kind, url,
                             args.repeats))
    server = f"{kind} at {url}"
    print(f"{len(docs)} images ({args.model}, encoded in {encode_s:.0f} s); engine: {server}")
    print(table(
        [("label", "<12"), ("word", "<10"), ("P@20 emb", ">8.2f"), ("P@20 eng", ">8.2f"),
         ("found", ">5"), ("same", ">5"), ("same+img", ">8")],
        [(r["label"], "- (no ImageNet word)", None, None, None, None, None)
         if r["word"] is None else
         (r["label"], r["word"], r["p20_embedded"], r["p20_engine"], r["found"],
          str(r["same_ranking"]), str(r["same_ranking_with_image"])) for r in result["rows"]]))
    med = result["median_ms"]
    print(f"median search by words: embedded {med['embedded']:.1f} ms, engine "
          f"{med['engine']:.1f} ms (ratio {result['ratio_engine_to_embedded']:.1f})")
    write_result("words_engine", {"dataset": str(args.dir.name), "images": len(docs),
                                  "model": args.model, "engine": kind, **result}, path=args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

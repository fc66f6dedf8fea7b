"""Standalone subcommands: ``serve`` (its runner is in ``cli/__init__.py``, the composition
root), ``index DIR`` and ``search IMAGE``."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elastichash import datalock
from elastichash.errors import InvalidInput
from elastichash.index.query import PORTABLE_STRATEGIES, QueryParams, SearchQuery
from elastichash.model.registry import BUILTINS, DEFAULT
from elastichash.settings import (
    ImageLimits,
    IndexSettings,
    ModelSettings,
    SpoolSettings,
    default_data_dir,
    port_number,
)


def add_common(p: argparse.ArgumentParser, *, strategy: bool = True) -> None:
    p.add_argument("--data", type=Path, default=None,
                   help="data directory (index, spool, default model); "
                        "default $ELASTICHASH_DATA or ~/.local/share/elastichash")
    p.add_argument("--model", default=None,
                   help=f"a built-in model ({', '.join(BUILTINS)}) or an ONNX file meeting "
                        f"the contract; default: the index's model, else {DEFAULT}")
    if not strategy:  # a command that never searches has no strategy to choose
        p.set_defaults(strategy=None)
        return
    p.add_argument("--strategy", choices=PORTABLE_STRATEGIES, default=None,
                   help="search strategy (default auto: exact up to 100,000 images, "
                        "two_stage above)")


def register(sub: Any, serve: Callable[[argparse.Namespace], int]) -> None:
    p = sub.add_parser("serve", help="run the whole system in one process (standalone mode)")
    add_common(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=port_number, default=8080, help="HTTP port (default 8080)")
    p.add_argument("--images", type=Path, default=None,
                   help="index this folder (recursively) at start, with a progress bar")
    p.add_argument("--api-key", action="append", default=[], dest="api_keys",
                   help="require this X-API-Key on write endpoints (repeatable)")
    p.set_defaults(func=serve)

    p = sub.add_parser("index", help="index a folder of images (one shot, no server)")
    add_common(p, strategy=False)
    p.add_argument("folder", type=Path,
                   help="indexed recursively; files already indexed are skipped, and each "
                        "image that cannot be indexed is named with the reason")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_index)

    p = sub.add_parser("search", help="search the local index with an image and/or words "
                       "(one shot)")
    add_common(p)
    p.add_argument("image", type=Path, nargs="?", default=None,
                   help="query image; omit it to search by --text alone")
    p.add_argument("--text", default=None,
                   help="words naming ImageNet classes or broader ones ('dog', 'vehicle'); "
                        "with an image: rank the images carrying those labels by likeness")
    p.add_argument("-k", type=int, default=10, help="results to print (1..1000, default 10)")
    p.add_argument("--max-distance", type=int, default=None,
                   help="leave out results further than this many bits (0..256)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_search)

    p = sub.add_parser("duplicates", help="list groups of near-duplicate images in the local index")
    p.add_argument("--data", type=Path, default=None,
                   help="data directory, as for `elastichash serve`")
    p.add_argument("--max-distance", type=int, default=8,
                   help="256-bit Hamming distance that links two images (0..11, default 8)")
    p.add_argument("--limit", type=int, default=20, help="groups to print (at most 200)")
    p.add_argument("--offset", type=int, default=0, help="groups to skip")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run_duplicates)


def data_dir(args: argparse.Namespace) -> Path:
    path: Path = args.data or default_data_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # a file of that name, no permission: one line, not a traceback
        why = "not a directory" if path.exists() and not path.is_dir() else exc.strerror or exc
        print(f"error: cannot use {path} as the data directory: {why}", file=sys.stderr)
        raise SystemExit(2) from None
    return path


def has_index(args: argparse.Namespace) -> bool:
    """Whether the data directory holds an index; else say so. Commands that only read
    (search, duplicates) must not create a data directory on a mistyped --data."""
    path: Path = args.data or default_data_dir()
    if (path / "index").is_dir():
        return True
    print(f"error: no index in {path}: nothing was indexed there yet (`elastichash index "
          "FOLDER`, or `elastichash serve` and add images); --data names another",
          file=sys.stderr)
    return False


def model_settings(args: argparse.Namespace, base: ModelSettings | None = None) -> ModelSettings:
    """The model named on the command line, else in ``base``, else the one the data
    directory's index records (registry.choose); built-in models live in DATA/models."""
    from elastichash.model import registry

    settings = (base or ModelSettings()).model_copy()
    if args.model:
        settings.model = str(args.model)
    settings.models_dir = settings.models_dir or data_dir(args) / "models"
    settings.model = registry.choose(settings, data_dir(args) / "index")
    return settings


def index_settings(args: argparse.Namespace, base: IndexSettings | None = None) -> IndexSettings:
    settings = (base or IndexSettings()).model_copy()
    settings.backend = "embedded"
    settings.data_dir = settings.data_dir or data_dir(args) / "index"
    if args.strategy:
        settings.strategy = args.strategy
    if getattr(args, "mark_duplicates", None) is not None:
        settings.duplicate_distance = args.mark_duplicates
        settings.duplicate_policy = args.duplicate_policy
    return settings


@dataclass
class Local:
    pipeline: Any  # LocalPipeline
    index: Any  # EmbeddedIndex


async def bind(index: Any, model: ModelSettings, encoder: Any) -> None:
    """Refuse (ModelMismatch) an index that holds another model's codes; record the model
    in one that holds none (every backend that stores codes: embedded, engines)."""
    bind_model = getattr(index, "bind_model", None)
    if bind_model is not None:
        await bind_model(model.model, encoder.spec)


@asynccontextmanager
async def open_local(model: ModelSettings, limits: ImageLimits, index_cfg: IndexSettings,
                     spool: Path | None, spool_cfg: SpoolSettings | None = None,
                     preview_px: int = 0) -> AsyncIterator[Local]:
    """Encoder + embedded index + in-process pipeline, opened and closed together."""
    from elastichash.index.factory import make_index
    from elastichash.model.encoder import Encoder
    from elastichash.standalone import LocalPipeline

    encoder = await asyncio.to_thread(Encoder.load, model, limits)
    index = make_index(index_cfg)
    await index.open()
    try:
        await bind(index, model, encoder)
        spool_cfg = spool_cfg or SpoolSettings()
        pipeline = LocalPipeline(encoder, index, spool, batch_size=model.batch_size,
                                 duplicates=index_cfg.duplicate_screen(),
                                 max_pixels=limits.max_pixels,
                                 spool_max_bytes=spool_cfg.max_bytes,
                                 spool_min_free_bytes=spool_cfg.min_free_bytes,
                                 preview_px=preview_px)
        await pipeline.start()
        try:
            yield Local(pipeline, index)
        finally:
            await pipeline.stop()
    finally:
        await index.close()


def run_index(args: argparse.Namespace) -> int:
    from elastichash.folder import ingest_folder

    if not args.folder.is_dir():
        print(f"error: {args.folder} is not a folder", file=sys.stderr)
        return 2

    async def go() -> int:
        async with open_local(model_settings(args), ImageLimits(), index_settings(args),
                              data_dir(args) / "spool") as local:
            report = await ingest_folder(local.pipeline, local.index, args.folder,
                                         limits=ImageLimits(), progress=not args.no_progress)
            for line in report.failure_lines():
                print(line, file=sys.stderr)
            print(report.summary())
            return 0

    try:
        with datalock.hold(data_dir(args), "index"):
            return asyncio.run(go())
    except datalock.DataDirBusy as exc:
        url = exc.holder.get("url")
        how = (f"add the folder through it instead (drop the images on {url}, or restart it "
               f"with --images {args.folder}), or stop it first" if url else
               "wait for it to finish")
        print(f"error: {exc}; indexing beside it would not reach it: {how}", file=sys.stderr)
        return 2


def run_search(args: argparse.Namespace) -> int:
    from elastichash.index.factory import make_index
    from elastichash.model.encoder import Encoder
    from elastichash.model.labels import unknown_words_hint, vocabulary

    if args.image is None and not args.text:
        print("error: give an image, --text WORDS, or both", file=sys.stderr)
        return 2
    if not has_index(args):
        return 2
    data = None
    if args.image is not None:
        try:
            data = args.image.read_bytes()
        except OSError as exc:
            print(f"error: cannot read {args.image}: {exc}", file=sys.stderr)
            return 2

    cfg = index_settings(args)
    try:
        params = QueryParams.parse({"k": args.k, "max_distance": args.max_distance,
                                    "strategy": cfg.strategy, "text": args.text}).params()
    except InvalidInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2
    hint = None
    if args.text:
        _classes, _, unknown = vocabulary().resolve(args.text)
        hint = unknown_words_hint(unknown)
        if hint:
            print(f"hint: {hint}", file=sys.stderr)

    async def go() -> int:
        code = short = None
        msettings = model_settings(args)
        if data is not None:
            encoder = await asyncio.to_thread(Encoder.load, msettings, ImageLimits())
            [enc] = await encoder.aencode([data])
            if isinstance(enc, Exception):
                print(f"error: {args.image}: {enc}", file=sys.stderr)
                return 2
            code, short = enc.code, enc.short
        index = make_index(cfg)
        await index.open()
        try:
            if data is not None:
                await bind(index, msettings, encoder)
            res = await index.search(SearchQuery(**params, code=code, short=short))
        finally:
            await index.close()
        if args.json:
            print(json.dumps({"results": [{"id": h.id, "distance": h.distance,
                                           "source": h.source,
                                           "labels": h.metadata.get("labels", [])}
                                          for h in res.hits],
                              "total": res.total, "candidates": res.candidates,
                              "took_ms": res.took_ms, "hint": hint}))
        else:
            print(f"{len(res.hits)} of {res.total} results, {res.candidates} candidates, "
                  f"{res.took_ms:.2f} ms ({res.strategy})")
            if res.hits:
                print(f"{'rank':>4}  {'dist':>4}  {'id':<32}  source")
            for rank, h in enumerate(res.hits, 1):
                labels = ", ".join(f"{x['name']} {x['score']:.2f}"
                                   for x in h.metadata.get("labels", [])[:2])
                print(f"{rank:4d}  {h.distance:4d}  {h.id:<32}  {h.source or ''}  {labels}")
        return 0

    return asyncio.run(go())


def run_duplicates(args: argparse.Namespace) -> int:
    from elastichash.errors import InvalidInput
    from elastichash.index import service_json
    from elastichash.index.factory import make_index

    if not has_index(args):
        return 2

    async def go() -> int:
        cfg = IndexSettings(backend="embedded", data_dir=data_dir(args) / "index")
        index = make_index(cfg)
        await index.open()
        try:
            res = await index.duplicates(max_distance=args.max_distance, offset=args.offset,
                                         limit=args.limit)
        finally:
            await index.close()
        if args.json:
            print(json.dumps(service_json.duplicates_to_json(res)))
            return 0
        print(f"{res.total} groups, {res.images} images, {res.pairs} pairs within distance "
              f"{res.max_distance} ({res.took_ms:.0f} ms)")
        for n, g in enumerate(res.groups, args.offset + 1):
            print(f"group {n}: {len(g.members)} images, keep {g.keeper}")
            for h in g.members:
                size = (f"{h.metadata.get('width')}x{h.metadata.get('height')}"
                        if "width" in h.metadata else "")
                mark = "keep" if h.id == g.keeper else f"{h.distance:4d}"
                print(f"  {mark:>4s}  {h.id}  {size}  {h.source or ''}")
        return 0

    try:
        return asyncio.run(go())
    except InvalidInput as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 2

"""``elastichash import-codes``: bulk-load precomputed codes into the embedded index."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path
from typing import Any

from elastichash.errors import InvalidInput
from elastichash.settings import default_data_dir

log = logging.getLogger(__name__)


def _short_bits(value: str) -> list[int]:
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    try:
        bits = [int(v) for v in text.replace("\n", ",").split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("short bits are 64 comma-separated integers") from None
    if len(bits) != 64 or len(set(bits)) != 64 or not all(0 <= b < 256 for b in bits):
        raise argparse.ArgumentTypeError("short bits are 64 distinct positions in 0..255")
    return bits


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "import-codes",
        help="bulk-load precomputed codes (ElasticHash CSV or plain) into the embedded index",
    )
    p.add_argument("file", type=Path, help="CSV file of codes")
    p.add_argument(
        "--data",
        type=Path,
        default=None,
        help="data directory, as for `elastichash serve` (the index is DATA/index); "
        "default $ELASTICHASH_DATA or ~/.local/share/elastichash",
    )
    p.add_argument(
        "--format",
        choices=("elastichash", "plain"),
        default="elastichash",
        help="elastichash: id,url,thumb_url,f0..f3,r0..r3,license,...;"
        " plain: id,hex256[,url[,json]]",
    )
    p.add_argument("--resume", action="store_true", help="continue after the last committed line")
    p.add_argument(
        "--short-bits",
        type=_short_bits,
        default=None,
        help="plain layout: the model's 64 short-code bit positions, comma-separated or @FILE "
        "(default: those of --model)",
    )
    p.add_argument(
        "--model",
        default=None,
        help="plain layout: take the short-code bits from this model, a built-in name or an "
        "ONNX file (default: the index's model, else the default model)",
    )
    p.add_argument("--batch", type=int, default=5000, help="documents per committed batch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from elastichash.index.embedded import EmbeddedIndex
    from elastichash.index.importer import SHORT_ROW, checkpoint_path, import_codes

    if not args.file.is_file():
        print(f"import-codes: no such file {args.file}", file=sys.stderr)
        return 2
    root: Path = args.data or default_data_dir()
    data = root / "index"
    short_bits = args.short_bits
    if args.format == "plain" and short_bits is None:
        from elastichash.model import registry
        from elastichash.model.contract import load_spec
        from elastichash.settings import ModelSettings

        settings = ModelSettings(model=args.model or "", models_dir=root / "models")
        short_bits = load_spec(registry.resolve_settings(settings, data)).short_bits

    async def go() -> int:
        index = EmbeddedIndex(data)
        await index.open()
        try:
            report = await import_codes(
                index,
                args.file,
                fmt=args.format,
                checkpoint=checkpoint_path(data, args.file),
                resume=args.resume,
                short_bits=short_bits,
                batch_size=args.batch,
                progress=not args.no_progress,
            )
            count = await index.count()
        finally:
            await index.close()
        for line, msg in report.bad[:50]:
            print(f"{args.file}:{line}: {msg}", file=sys.stderr)
        if len(report.bad) > 50:
            print(f"... and {len(report.bad) - 50} more bad rows", file=sys.stderr)
        if (args.format == "elastichash" and not report.loaded and report.bad
                and all(msg.startswith(SHORT_ROW) for _, msg in report.bad)):
            print("hint: no row has ElasticHash's 11 columns; for rows of id,hex256[,url[,json]] "
                  "add --format plain", file=sys.stderr)
        print(
            f"imported {report.loaded} documents, {len(report.bad)} bad rows skipped"
            f"{f', resumed after line {report.resumed_after}' if report.resumed_after else ''};"
            f" index holds {count}"
        )
        return 0

    try:
        return asyncio.run(go())
    except InvalidInput as exc:
        print(f"import-codes: {exc.message}", file=sys.stderr)
        return 2

"""``elastichash reindex``: re-encode the local index with another model (see
``elastichash.index.reindex``)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from elastichash.settings import default_data_dir


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "reindex", help="re-encode the local index with another model (after a model change)")
    p.add_argument("--data", type=Path, default=None,
                   help="data directory; default $ELASTICHASH_DATA or ~/.local/share/elastichash")
    p.add_argument("--model", default="efficientnet-lite0",
                   help="built-in model name or ONNX file to re-encode with")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    root: Path = args.data or default_data_dir()
    if not (root / "index").is_dir():
        print(f"reindex: no index in {root}", file=sys.stderr)
        return 2
    from elastichash.index.reindex import reindex

    report = asyncio.run(reindex(root, args.model, progress=not args.no_progress))
    for doc_id, why in report.failed[:50]:
        print(f"not re-encoded: {doc_id}: {why}", file=sys.stderr)
    if len(report.failed) > 50:
        print(f"... and {len(report.failed) - 50} more", file=sys.stderr)
    print(report.summary())
    return 1 if report.failed else 0

"""``elastichash model ...`` and ``elastichash encode ...``. Heavy imports stay in handlers."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}


def register(subparsers: Any) -> None:
    from elastichash.model import registry

    model = subparsers.add_parser("model", help="build, inspect and prepare encoder models")
    sub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")

    p = sub.add_parser(
        "build-default", help="build a built-in model (offline, deterministic); default: the "
        "default model, EfficientNet-Lite0"
    )
    p.add_argument("out", type=Path, help="ONNX file to write")
    p.add_argument("--model", default=None,
                   help=f"built-in model name ({', '.join(registry.BUILTINS)}; "
                        f"default {registry.DEFAULT})")
    p.set_defaults(func=_build_default)

    p = sub.add_parser("select-bits", help="choose the 64 short-code bits from sample images")
    p.add_argument("model", type=Path, help="ONNX model file to update")
    p.add_argument("--images", type=Path, required=True, help="folder of sample images")
    p.add_argument("--out", type=Path, default=None, help="write here instead of in place")
    p.add_argument("--limit", type=int, default=5000, help="at most this many images")
    p.add_argument(
        "--recentre",
        action="store_true",
        help="also move each bit's threshold to the sample's median (balances the bits on "
        "this collection; useful for the training-free default model)",
    )
    p.set_defaults(func=_select_bits)

    p = sub.add_parser("inspect", help="print the model's contract fields as JSON")
    p.add_argument("model", help="a built-in model's name (built first when absent) or an "
                   "ONNX model file")
    p.set_defaults(func=_inspect)

    p = sub.add_parser("export-torch", help="export a PyTorch hashing model to the contract")
    p.add_argument("factory", help="module:function returning a torch.nn.Module (N,3,S,S)->(N,256)")
    p.add_argument("out", type=Path, help="ONNX file to write")
    p.add_argument("--input-size", type=int, default=224,
                   help="side of the square model input (default 224)")
    p.add_argument("--resize", type=int, default=None, help="shorter side before the crop")
    p.add_argument("--name", default="torch-hashing",
                   help="model name recorded in its metadata (default torch-hashing)")
    p.add_argument("--version", default="1", help="model version recorded in its metadata")
    p.set_defaults(func=_export_torch)

    p = subparsers.add_parser("encode", help="print one JSON line of codes per image")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.add_argument("--model", default="",
                   help=f"built-in model name or ONNX file (default: {registry.DEFAULT})")
    p.add_argument("--batch-size", type=int, default=32, help="images per inference (default 32)")
    p.set_defaults(func=_encode)


def _build_default(args: argparse.Namespace) -> int:
    from elastichash.model import registry
    from elastichash.model.default import atomic_write

    name = args.model or registry.DEFAULT
    if name not in registry.BUILTINS:
        print(f"unknown built-in model {name!r}; known: {sorted(registry.BUILTINS)}",
              file=sys.stderr)
        return 2
    atomic_write(args.out, registry.BUILTINS[name].build())
    print(args.out)
    return 0


def _image_files(root: Path, limit: int) -> list[Path]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return files[:limit]


def _select_bits(args: argparse.Namespace) -> int:
    import numpy as np

    from elastichash import codes
    from elastichash.errors import ImageError
    from elastichash.model.bitselect import select_short_bits, write_short_bits
    from elastichash.model.preprocess import load_image
    from elastichash.model.session import ModelSession
    from elastichash.settings import ImageLimits, ModelSettings

    session = ModelSession.open(
        args.model, ModelSettings(providers=["CPUExecutionProvider"]), require_short=False
    )
    spec = session.spec
    files = _image_files(args.images, args.limit)
    arrays, bad = [], 0
    for f in files:
        try:
            arrays.append(load_image(f.read_bytes(), spec, ImageLimits().max_pixels))
        except ImageError as exc:
            bad += 1
            log.warning("skipping %s: %s", f, exc.message)
    if len(arrays) < 64:
        print(f"need at least 64 readable images, found {len(arrays)}", file=sys.stderr)
        return 2
    out = [session.run(np.stack(arrays[i : i + 32])).values for i in range(0, len(arrays), 32)]
    values = np.concatenate(out).astype(np.float64)
    thresholds = np.median(values, axis=0) if args.recentre else None
    if thresholds is not None:
        values = values - thresholds
    positions = select_short_bits(codes.binarize(values))
    target = write_short_bits(args.model, positions, args.out, thresholds)
    print(
        json.dumps(
            {
                "model": str(target),
                "images": len(arrays),
                "skipped": bad,
                "recentred": thresholds is not None,
                "short_bits": list(positions),
            }
        )
    )
    return 0


def _inspect(args: argparse.Namespace) -> int:
    import dataclasses

    from elastichash.errors import ModelContractError
    from elastichash.model.contract import load_spec
    from elastichash.model.registry import models_dir, resolve
    from elastichash.settings import ModelSettings

    try:
        spec = load_spec(resolve(args.model, models_dir(ModelSettings())))
    except ModelContractError as exc:
        print(f"{args.model}: {exc.message}", file=sys.stderr)
        return 1
    fields = dataclasses.asdict(spec)
    fields["fingerprint"] = spec.fingerprint
    print(json.dumps(fields, indent=2))
    return 0


def _export_torch(args: argparse.Namespace) -> int:
    import importlib

    from elastichash.model.export import export_torch

    module, _, func = args.factory.partition(":")
    factory = getattr(importlib.import_module(module), func or "build")
    spec = export_torch(
        factory(),
        args.out,
        input_size=args.input_size,
        resize=args.resize,
        name=args.name,
        version=args.version,
    )
    print(json.dumps({"model": str(args.out), "fingerprint": spec.fingerprint}))
    return 0


def _encode(args: argparse.Namespace) -> int:
    from elastichash import codes
    from elastichash.errors import ElasticHashError, ImageError
    from elastichash.ids import content_id
    from elastichash.model.encoder import Encoder
    from elastichash.settings import ImageLimits, ModelSettings

    try:
        encoder = Encoder.load(
            ModelSettings(model=args.model or "", batch_size=args.batch_size), ImageLimits()
        )
    except ElasticHashError as exc:
        print(f"cannot load the model: {exc.message}", file=sys.stderr)
        return 2
    lines: list[dict[str, Any]] = []
    payloads: list[bytes] = []
    readable: list[int] = []
    for path in args.images:
        try:
            payloads.append(path.read_bytes())
            readable.append(len(lines))
            lines.append({"file": str(path)})
        except OSError as exc:
            lines.append(
                {
                    "file": str(path),
                    "error": {"reason": "unreadable", "message": exc.strerror or str(exc)},
                }
            )
    try:
        results = encoder.encode_bytes(payloads)
    finally:
        encoder.close()
    for slot, data, res in zip(readable, payloads, results, strict=True):
        line = lines[slot]
        line["id"] = content_id(data)
        if isinstance(res, ImageError):
            line["error"] = {"reason": res.reason, "message": res.message}
        else:
            line["code"] = codes.to_hex(res.code)
            line["short"] = codes.to_hex(res.short)
    for line in lines:
        sys.stdout.write(json.dumps(line) + "\n")
    return 1 if any("error" in line for line in lines) else 0

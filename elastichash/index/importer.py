"""Bulk import of codes computed elsewhere (``elastichash import-codes``).

Layouts (comma-separated, no header needed; a header row is recognised and skipped):

* ``elastichash`` — ElasticHash's OpenImages release, as its ``tools/import_csv.py`` reads it:
  ``id, image_url, thumbnail_url, f0, f1, f2, f3, r0, r1, r2, r3[, license, authorprofileurl,
  author, title, ...]``. ``f0..f3`` are the unsigned 16-bit subcodes (the short code),
  ``r0..r3`` the signed int64 words of the long code.
* ``plain`` — ``id, code[, url[, metadata]]`` with the 256-bit code as 64 hex digits and
  metadata as a JSON object; the short code is cut from the long one at ``short_bits`` (the
  model's bit selection), since the index never guesses it.

Resumable: after each committed batch the last line number goes to a checkpoint file in the
data dir; ``resume`` skips up to it. Bad rows are reported with their line number and skipped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from elastichash.codes import (
    SHORT_BITS,
    CodeError,
    from_hex,
    from_subcodes,
    from_words,
    select_bits,
)
from elastichash.errors import InvalidInput
from elastichash.ids import check_id
from elastichash.index.base import Document, Index

log = logging.getLogger(__name__)

FORMATS = ("elastichash", "plain")
EH_META = ("license", "authorprofileurl", "author", "title")
BATCH = 5000


@dataclass
class ImportReport:
    loaded: int = 0
    bad: list[tuple[int, str]] = field(default_factory=list)
    resumed_after: int = 0  # line number the run started after
    last_line: int = 0


def _int(text: str, name: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInput(f"{name} is not an integer: {text!r}", field=name) from None


SHORT_ROW = "expected at least 11 columns (id, url, thumbnail url, f0..f3, r0..r3)"


def parse_elastichash(row: Sequence[str]) -> Document:
    if len(row) < 11:
        raise InvalidInput(f"{SHORT_ROW}, got {len(row)}")
    try:
        short = from_subcodes([_int(row[3 + i], f"f{i}") for i in range(4)])
        code = from_words([_int(row[7 + i], f"r{i}") for i in range(4)])
    except CodeError as exc:
        raise InvalidInput(str(exc)) from None
    extra = row[11:]
    names = [
        EH_META[i] if i < len(EH_META) else f"extra{i - len(EH_META)}" for i in range(len(extra))
    ]
    metadata = {n: v for n, v in zip(names, extra, strict=True) if v != ""}
    return Document(
        check_id(row[0].strip()),
        code,
        short,
        source=row[1] or None,
        thumbnail_url=row[2] or None,
        metadata=metadata,
    )


def parse_plain(row: Sequence[str], short_bits: Sequence[int]) -> Document:
    if not 2 <= len(row) <= 4:
        raise InvalidInput(f"expected 2 to 4 columns (id, code, url, metadata), got {len(row)}")
    try:
        code = from_hex(row[1])
    except CodeError as exc:
        raise InvalidInput(f"code: {exc}") from None
    metadata: dict[str, Any] = {}
    if len(row) == 4 and row[3].strip():
        try:
            metadata = json.loads(row[3])
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"metadata is not JSON: {exc}") from None
        if not isinstance(metadata, dict):
            raise InvalidInput("metadata must be a JSON object")
    short = select_bits(code, short_bits).tobytes()
    url = row[2] if len(row) >= 3 and row[2] else None
    return Document(check_id(row[0].strip()), code, short, source=url, metadata=metadata)


def _is_header(row: Sequence[str]) -> bool:
    return bool(row) and row[0].strip().lower() in ("id", "image_id", "imageid")


def checkpoint_path(data_dir: Path, file: Path) -> Path:
    key = hashlib.blake2b(str(file.resolve()).encode(), digest_size=8).hexdigest()
    return data_dir / f"import-{file.name}-{key}.checkpoint.json"


def _save_checkpoint(path: Path, report: ImportReport, file: Path) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps({"file": str(file.resolve()), "line": report.last_line, "loaded": report.loaded})
    )
    os.replace(tmp, path)  # atomic: a crash leaves the old or the new checkpoint, never half


def _count_lines(path: Path) -> int:
    with path.open("rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        reader = csv.reader(f)
        for row in reader:
            yield reader.line_num, row


async def import_codes(
    index: Index,
    file: Path,
    *,
    fmt: str,
    checkpoint: Path,
    resume: bool = False,
    short_bits: Sequence[int] | None = None,
    batch_size: int = BATCH,
    progress: bool = True,
) -> ImportReport:
    if fmt not in FORMATS:
        raise InvalidInput(f"format must be one of {FORMATS}", field="format")
    if fmt == "plain" and (short_bits is None or len(short_bits) != SHORT_BITS):
        raise InvalidInput(
            "the plain layout needs the model's 64 short_bits positions", field="short_bits"
        )
    report = ImportReport()
    if resume and checkpoint.exists():  # noqa: ASYNC240 - a tiny file, read once
        report.resumed_after = int(json.loads(checkpoint.read_text())["line"])  # noqa: ASYNC240
        log.info("resuming %s after line %d", file, report.resumed_after)
    report.last_line = report.resumed_after
    total_lines = _count_lines(file)
    bar = tqdm(total=total_lines, initial=report.resumed_after, unit="rows", disable=not progress)
    pending: list[Document] = []
    pending_lines: list[int] = []

    async def flush(up_to: int) -> None:
        if pending:
            results = await index.upsert(pending)
            for line, res in zip(pending_lines, results, strict=True):
                if res.ok:
                    report.loaded += 1
                else:
                    report.bad.append((line, res.error or "write failed"))
                    # the report carries it (the command prints them, bounded); -v shows each
                    log.info("line %d: %s", line, res.error)
            if any(r.transient for r in results):
                raise RuntimeError(
                    "the index refused writes; fix the cause and rerun with --resume"
                )
        report.last_line = up_to
        _save_checkpoint(checkpoint, report, file)
        bar.update(up_to - bar.n)
        pending.clear()
        pending_lines.clear()

    line = report.resumed_after
    for line, row in _rows(file):
        if line <= report.resumed_after or not row or (line == 1 and _is_header(row)):
            continue
        try:
            doc = (
                parse_elastichash(row)
                if fmt == "elastichash"
                else parse_plain(row, short_bits or [])
            )
        except InvalidInput as exc:
            report.bad.append((line, exc.message))
            log.info("line %d: %s (skipped)", line, exc.message)
            continue
        pending.append(doc)
        pending_lines.append(line)
        if len(pending) >= batch_size:
            await flush(line)
    await flush(max(line, report.last_line))
    bar.close()
    return report

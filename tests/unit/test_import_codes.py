"""``elastichash import-codes``: both layouts, bad rows reported by line, resume."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from elastichash.cli import import_codes as commands
from elastichash.codes import select_bits, subcodes, to_hex, to_words
from elastichash.index.embedded import EmbeddedIndex

SHORT_BITS = list(range(0, 256, 4))


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    rc: int = args.func(args)
    return rc


def eh_rows(start: int, n: int) -> list[list[str]]:
    rng = np.random.default_rng(start)
    rows = []
    for i in range(start, start + n):
        code = rng.integers(0, 256, 32, dtype=np.uint8)
        short = select_bits(code, SHORT_BITS)
        rows.append(
            [
                f"oi{i:06d}",
                f"https://farm.example/{i}.jpg",
                f"https://farm.example/{i}_t.jpg",
                *map(str, subcodes(short)),
                *map(str, to_words(code)),
                "CC BY 2.0",
                f"https://flickr.example/u{i}",
                f"author {i}",
                f"title, {i}",
            ]
        )
    return rows


def write_csv(path: Path, rows: list[list[str]], mode: str = "w") -> None:
    with path.open(mode, newline="") as f:
        csv.writer(f).writerows(rows)


async def load(data: Path, doc_id: str) -> tuple[int, object]:
    idx = EmbeddedIndex(data)
    await idx.open()
    try:
        return await idx.count(), await idx.get(doc_id)
    finally:
        await idx.close()


def test_elastichash_layout_loads_good_rows_and_reports_bad_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = eh_rows(0, 40)
    rows[5][7] = "not-a-number"  # r0 on line 6
    rows[9][3] = "70000"  # f0 out of 16-bit range on line 10
    rows[12] = rows[12][:6]  # truncated line 13
    f = tmp_path / "codes.csv"
    write_csv(f, rows)
    assert (
        cli(
            [
                "import-codes",
                str(f),
                "--data",
                str(tmp_path / "idx"),
                "--no-progress",
                "--batch",
                "7",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert f"{f}:6: r0 is not an integer" in err
    assert f"{f}:10:" in err
    assert f"{f}:13:" in err
    count, doc = asyncio.run(load(tmp_path / "idx" / "index", "oi000001"))
    assert count == 37
    good = eh_rows(0, 2)[1]
    assert doc is not None
    assert (doc.source, doc.thumbnail_url) == (good[1], good[2])  # type: ignore[attr-defined]
    assert doc.metadata == {
        "license": "CC BY 2.0",
        "authorprofileurl": good[12],  # type: ignore[attr-defined]
        "author": "author 1",
        "title": "title, 1",
    }
    assert to_words(doc.code) == [int(v) for v in good[7:11]]  # type: ignore[attr-defined]
    assert subcodes(doc.short) == [int(v) for v in good[3:7]]  # type: ignore[attr-defined]


def test_a_plain_file_read_as_elastichash_layout_reports_each_row_once_and_hints_plain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "codes.csv"
    write_csv(f, [[f"p{i}", "ab" * 32, f"http://x/{i}.jpg"] for i in range(3)])
    assert cli(["import-codes", str(f), "--data", str(tmp_path / "idx"), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if f"{f}:" in line] == [
        f"{f}:{n}: expected at least 11 columns (id, url, thumbnail url, f0..f3, r0..r3), got 3"
        for n in (1, 2, 3)]
    assert "add --format plain" in err


def test_plain_layout_cuts_the_short_code_at_the_given_bits(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    codes = rng.integers(0, 256, (10, 32), dtype=np.uint8)
    rows = [["id", "code", "url", "metadata"]]
    rows += [
        [f"p{i}", to_hex(c), f"/img/{i}.png", json.dumps({"k": i})] for i, c in enumerate(codes)
    ]
    rows.append(["p_bad", "abc", "", ""])
    f = tmp_path / "plain.csv"
    write_csv(f, rows)
    bits = ",".join(map(str, SHORT_BITS))
    assert (
        cli(
            [
                "import-codes",
                str(f),
                "--data",
                str(tmp_path / "i"),
                "--format",
                "plain",
                "--short-bits",
                bits,
                "--no-progress",
            ]
        )
        == 0
    )
    count, doc = asyncio.run(load(tmp_path / "i" / "index", "p4"))
    assert count == 10
    assert doc.short == select_bits(codes[4], SHORT_BITS).tobytes()  # type: ignore[attr-defined]
    assert (doc.source, doc.metadata) == ("/img/4.png", {"k": 4})  # type: ignore[attr-defined]


def test_plain_layout_without_short_bits_takes_those_of_the_model(tmp_path: Path) -> None:
    from elastichash.model.contract import load_spec
    from elastichash.model.default import ensure_default_model

    model = ensure_default_model(tmp_path / "m.onnx")
    short_bits = load_spec(model).short_bits
    assert short_bits is not None
    code = bytes(range(32))
    f = tmp_path / "plain.csv"
    write_csv(f, [["p0", code.hex()]])
    args = ["import-codes", str(f), "--data", str(tmp_path / "d"), "--format", "plain",
            "--no-progress", "--model", str(model)]
    assert cli(args) == 0
    _, doc = asyncio.run(load(tmp_path / "d" / "index", "p0"))
    assert doc is not None
    assert doc.short == select_bits(code, short_bits).tobytes()


def test_resume_continues_after_the_last_committed_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "codes.csv"
    data = tmp_path / "idx"
    write_csv(f, eh_rows(0, 25))
    assert cli(["import-codes", str(f), "--data", str(data), "--no-progress", "--batch", "10"]) == 0
    assert "imported 25 documents" in capsys.readouterr().out
    write_csv(
        f, eh_rows(25, 15), mode="a"
    )  # the file grows; a resumed run reads only the new lines
    assert cli(["import-codes", str(f), "--data", str(data), "--no-progress", "--resume"]) == 0
    out = capsys.readouterr().out
    assert "imported 15 documents" in out
    assert "resumed after line 25" in out
    count, doc = asyncio.run(load(data / "index", "oi000039"))
    assert count == 40
    assert doc is not None

"""The project's own static checks (`make lint`, `make typecheck`) stay clean: they drifted
once, five mypy errors landing unseen, because nothing ran them."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        found = shutil.which(name)
        if found is None:
            pytest.skip(f"{name} is not installed (scripts/setup.sh cpu,dev installs it)")
        return found
    return str(path)


def test_ruff_finds_nothing() -> None:
    dirs = ["elastichash", "gateway", "encoder_worker", "indexer_worker", "search_service",
            "bench", "tests"]
    proc = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", *dirs], cwd=ROOT, capture_output=True,
        text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_finds_nothing(tmp_path: Path) -> None:
    proc = subprocess.run(
        [_tool("mypy"), "--cache-dir", str(tmp_path / "mypy")], cwd=ROOT,
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""What a new user sees on the command line: one-shot commands are quiet unless asked (-v),
the search table has a header, and `index` beside a running server on the same data
directory is refused with a message instead of diverging silently."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.imagegen import make_image
from tests.standalone import ServeProcess

pytestmark = pytest.mark.timeout(240)
EXE = str(Path(sys.executable).with_name("elastichash"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=180)


def test_one_shot_commands_are_quiet_by_default_and_say_more_with_v(
        tmp_path: Path, model_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for s in range(3):
        (photos / f"p{s}.jpg").write_bytes(make_image(100 + s))
    common = ["--data", str(tmp_path / "d"), "--model", str(model_path)]
    indexed = run("index", str(photos), *common)
    assert indexed.returncode == 0, indexed.stderr
    assert "3 indexed" in indexed.stdout
    found = run("search", str(photos / "p1.jpg"), *common, "-k", "2")
    assert found.returncode == 0, found.stderr
    assert " INFO " not in found.stderr, found.stderr
    assert "ModuleNotFoundError" not in found.stderr
    lines = found.stdout.splitlines()
    assert lines[1].split() == ["rank", "dist", "id", "source"], found.stdout
    assert lines[2].split()[:2] == ["1", "0"]
    verbose = run("-v", "search", str(photos / "p1.jpg"), *common)
    assert " INFO " in verbose.stderr


def test_index_beside_a_running_server_on_its_data_directory_is_refused(
        tmp_path: Path, model_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes(make_image(200))
    server = ServeProcess(tmp_path / "d", model_path).start()
    try:
        refused = run("index", str(photos), "--data", str(tmp_path / "d"), "--model",
                      str(model_path))
        assert refused.returncode == 2
        assert "in use by `elastichash serve`" in refused.stderr
        assert server.base in refused.stderr
        second = run("serve", "--port", "1", "--data", str(tmp_path / "d"))
        assert second.returncode == 2
        assert "one server per data directory" in second.stderr
    finally:
        assert server.stop() == 0
    after = run("index", str(photos), "--data", str(tmp_path / "d"), "--model",
                str(model_path))
    assert after.returncode == 0, after.stderr
    assert "1 indexed" in after.stdout

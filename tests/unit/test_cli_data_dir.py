"""The one-shot commands and a --data that is mistyped or unusable: one line, no traceback,
and a command that only reads creates nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from elastichash.cli import main


@pytest.mark.parametrize("argv", [["search", "--text", "bus"], ["duplicates"]],
                         ids=lambda a: a[0])
def test_a_reading_command_on_a_data_directory_without_an_index_says_so_and_creates_nothing(
        tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "typo"
    assert main([*argv, "--data", str(missing)]) == 2
    err = capsys.readouterr().err
    assert f"no index in {missing}" in err
    assert not missing.exists()


@pytest.mark.parametrize("argv", [["index", "FOLDER"], ["serve", "--port", "0"]],
                         ids=lambda a: a[0])
def test_a_data_directory_that_is_a_file_is_one_line_not_a_traceback(
        tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    afile = tmp_path / "data"
    afile.write_text("not a directory")
    argv = [str(tmp_path) if a == "FOLDER" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--data", str(afile)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"cannot use {afile} as the data directory: not a directory" in err
    assert "Traceback" not in err

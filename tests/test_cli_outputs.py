"""Tests of easytransfer/cli/outputs.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import pytest
from helpers import cli_error

from easytransfer.cli import main


def test_output_paths_that_cannot_be_written_fail_at_once(tmp_path, capsys, image_folder):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    err = cli_error(capsys, main(["train", str(image_folder), "--out", str(a_file)]))
    assert "--out" in err and "is a file; give a folder" in err
    err = cli_error(capsys, main(["demo", "--out", str(a_file)]))
    assert "is a file; give a folder" in err
    err = cli_error(capsys, main(["train", str(image_folder), "--out", str(a_file / "run")]))
    assert "notes.txt' is a file, not a folder" in err
    err = cli_error(capsys, main(["predict", "any-model", str(image_folder), "--csv", str(tmp_path)]))
    assert "--csv" in err and "is a folder; give a file name" in err


def test_output_folder_and_file_are_checked_before_any_work(tmp_path):
    from easytransfer.cli.outputs import output_file, output_folder
    from easytransfer.errors import EasyTransferError

    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    assert output_folder(tmp_path / "new" / "run", "--out") == tmp_path / "new" / "run"  # created later
    assert output_file(tmp_path / "new" / "p.csv", "--csv", "p.csv") == tmp_path / "new" / "p.csv"
    with pytest.raises(EasyTransferError, match="--out .* is a file; give a folder"):
        output_folder(a_file, "--out")
    with pytest.raises(EasyTransferError, match="--csv .* is a folder; give a file name, e.g. .*p.csv"):
        output_file(tmp_path, "--csv", "p.csv")
    with pytest.raises(EasyTransferError, match="is a file, not a folder; choose a path inside a folder"):
        output_file(a_file / "p.csv", "--csv", "p.csv")

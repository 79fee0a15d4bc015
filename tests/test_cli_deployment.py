"""Tests of easytransfer/cli/deployment.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

from helpers import cli_error

from easytransfer.cli import main
from easytransfer.deploy.predictor import Predictor


def test_export_to_a_folder_is_refused_and_leaves_no_temporary_file(bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exports").mkdir()
    err = cli_error(capsys, main(["export", str(bundle), "--torchscript", "exports"]))
    assert "--torchscript 'exports' is a folder" in err and "model.pt" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exports"]


def test_predict_csv_into_a_missing_folder_creates_it(bundle, image_folder, tmp_path, capsys):
    csv = tmp_path / "new" / "deeper" / "predictions.csv"
    assert main(["predict", str(bundle), str(image_folder / "cat"), "--csv", str(csv)]) == 0
    assert csv.read_text().count("\n") == 7  # header + 6 images


def test_predict_fails_when_every_input_failed(bundle, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (broken / name).write_text("not an image")
    err = cli_error(capsys, main(["predict", str(bundle), str(broken)]))
    assert "None of the 2 file(s)" in err
    (tmp_path / "empty").mkdir()
    assert "No files found" in cli_error(capsys, main(["predict", str(bundle), str(tmp_path / "empty")]))


def test_evaluate_with_relative_paths(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    assert main(["evaluate", "run/model", "test"]) == 0
    out = capsys.readouterr().out
    assert "accuracy: " in out and "on 6 images" in out


def test_evaluate_checks_the_layout_before_inference(run, monkeypatch, capsys):
    loose = run / "loose"
    loose.mkdir()
    for f in (run / "test" / "cat").iterdir():
        (loose / f.name).write_bytes(f.read_bytes())
    monkeypatch.chdir(run)

    def no_inference(*args, **kwargs):
        raise AssertionError("predicted before the layout was checked")

    monkeypatch.setattr(Predictor, "_logits", no_inference)
    assert main(["evaluate", "run/model", "loose"]) == 2
    err = capsys.readouterr().err
    assert "lie loose, without class folders" in err and "loose" in err

"""Issue 20: what tripped a new student on their own images. Each test failed before its fix.

CLI cases run from a working directory with relative paths, as a student types them.
"""

from __future__ import annotations

import sys

import pytest

from easytransfer import load_model
from easytransfer.cli import main
from easytransfer.train.checkpoint import LAST_NAME

# ---------------------------------------------------------------------------------- 1. evaluate, relative path


# ---------------------------------------------------------------------------------------- 2. diagnose


# -------------------------------------------------------------------------------------------- 3. LR finder


# ------------------------------------------------------------------------------------- 4. held-out test split


CLI_TINY = ["--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1", "--epochs", "0", "--size", "32",
            "--bs", "4"]


def test_cli_train_test_pct_prints_test_figures(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    assert main(["train", "images", "--test-pct", "0.34", "--out", "run-pct", *CLI_TINY]) == 0
    out = capsys.readouterr().out
    assert "test set (4 images, never trained on)" in out and "test accuracy: " in out
    assert "4 images (test split)" in (run / "run-pct" / "report.html").read_text()


@pytest.mark.slow
def test_cli_train_test_dir_prints_test_figures(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    assert main(["train", "images", "--test", "test", "--out", "run-dir", *CLI_TINY]) == 0
    out = capsys.readouterr().out
    assert "test set (6 images, never trained on)" in out
    assert "6 images (folder" in (run / "run-dir" / "report.html").read_text()


# ------------------------------------------------------------------------------------- 5. progress bars


def test_cli_output_has_no_progress_bars_when_not_a_terminal(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    assert main(["predict", "run/model", "test/cat", "test/dog"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert len(lines) == 6 and all(line.count("\t") == 2 for line in lines)
    assert captured.err == ""


def test_train_cli_prints_no_bars_when_piped(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    assert main(["train", "images", "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1",
                 "--epochs", "1", "--size", "32", "--bs", "4", "--out", "run-bars"]) == 0
    out = capsys.readouterr().out
    assert "\r" not in out and "%|" not in out and "<progress" not in out
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 2 and "train_loss " in epochs[0] and "[0, " not in out  # one plain line per epoch


# ------------------------------------------------------------------------------- 6. the cheap path, lost


# --------------------------------------------------------------------------------- 7. errors for a CLI user


def test_cli_fn_col_and_label_col(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    rows = [f"{p},{p.parent.name}\n" for p in sorted((run / "images").rglob("*.jpg"))]
    (run / "files.csv").write_text("file,tag\n" + "".join(rows))
    assert main(["train", "files.csv", "--fn-col", "file", "--label-col", "tag", "--arch", "test_efficientnet",
                 "--random-init", "--frozen-epochs", "1", "--epochs", "0", "--size", "32", "--bs", "4", "--out",
                 "run-csv"]) == 0


# ------------------------------------------------------------------------------- 8. offline weights of Lite1/2


# ---------------------------------------------------------------------------------------- 9. reproducibility


# ------------------------------------------------------------------------------------- 10. notebook polish


# ------------------------------------------------------------------------------ 11. evaluate then interpret


def test_train_cli_on_a_terminal_sends_bars_to_stderr_and_results_to_stdout(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["train", "images", "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1",
                 "--epochs", "1", "--size", "32", "--bs", "4", "--out", "run-tty"]) == 0
    captured = capsys.readouterr()
    assert "train_loss" in captured.err and "train_loss" not in captured.out  # fastai's epoch table: progress
    assert "valid accuracy:" in captured.out and "valid accuracy:" not in captured.err  # the results


@pytest.mark.slow  # three CLI stages of a tiny model: ~12 s on 2 cores
def test_cli_train_checkpoints_and_resumes_after_ctrl_c(cats, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["train", str(cats), "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1", "--epochs",
            "1", "--size", "32", "--bs", "4", "--aug", "none", "--out", str(out)]

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl-C as the fine-tuning stage starts
        patch.setattr("easytransfer.train.learner.TransferLearner.fit_discriminative", ctrl_c)
        assert main(argv) == 130
    assert (out / "checkpoints" / "frozen" / LAST_NAME).is_file()
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    said = capsys.readouterr().err  # the library's own messages go to standard error (easytransfer.log)
    assert "Nothing to resume: the checkpoint's frozen fit already finished" in said
    assert (out / "history.csv").read_text().count("\n") == 3  # the checkpointed frozen epoch + the fine-tuning one
    assert load_model(out / "model", device="cpu").vocab == ["cat", "dog"]
    assert not (out / "checkpoints").exists()  # the bundle is written: the checkpoints are no longer needed


def test_cli_resume_without_checkpoints_is_a_clear_error(cats, tmp_path, capsys):
    code = main(["train", str(cats), "--arch", "test_efficientnet", "--random-init", "--resume", "--out",
                 str(tmp_path / "never-ran")])
    assert code == 2 and "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize(("flag", "value", "message"), [("--lr-max", "abc", "expected a number"),
                                                         ("--lr", "0", "must be a positive number"),
                                                         ("--lr", "-1e-3", "must be a positive number"),
                                                         ("--bs", "0", "must be at least 1"),
                                                         ("--size", "0", "must be at least 1")])
def test_bad_training_arguments_fail_before_anything_runs(flag, value, message, image_folder, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", str(image_folder), f"{flag}={value}"])
    assert info.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err

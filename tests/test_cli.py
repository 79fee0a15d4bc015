"""Every subcommand of the command line on tiny data; errors are one line and exit 2."""

import pytest
from conftest import make_image_folder

from easytransfer.cli import COMMANDS, main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cli") / "images", per_class=6)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["train", str(data), "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1",
                 "--epochs", "1", "--size", "32", "--bs", "4", "--out", str(out)])
    assert code == 0
    return out


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("easytransfer: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage: easytransfer " + command in capsys.readouterr().out


def test_train_writes_bundle_history_plots_and_report(trained):
    for name in ("model/model.safetensors", "model/easytransfer.json", "history.csv", "history.png",
                 "confusion_matrix.png", "report.html"):
        assert (trained / name).stat().st_size > 0, name
    assert (trained / "history.csv").read_text().count("\n") == 3  # header + 1 frozen + 1 fine-tuning epoch


def test_lr_find_prints_suggestions_and_plots(data, tmp_path, capsys):
    plot = tmp_path / "lr.png"
    assert main(["lr-find", str(data), "--arch", "test_efficientnet", "--random-init", "--size", "32", "--bs", "4",
                 "--num-it", "20", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "valley: " in out and plot.stat().st_size > 0


def test_evaluate_predict_and_export(trained, data, tmp_path, capsys):
    model = trained / "model"
    assert main(["evaluate", str(model), str(data)]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "accuracy: " in out and "on 12 images" in out
    csv = tmp_path / "preds.csv"
    one = next((data / "cat").glob("*.jpg"))
    assert main(["predict", str(model), str(one), str(data / "dog"), "--csv", str(csv)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(lines) == 7 and lines[0].startswith(str(one))
    assert csv.read_text().count("\n") == 8
    assert main(["export", str(model), "--torchscript"]) == 0 and (model / "model.pt").stat().st_size > 0
    assert main(["export", str(model), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_models_and_describe(capsys):
    assert main(["models", "*lite0*", "--offline"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["describe", "efficientnet_lite0"]) == 0
    assert "bicubic" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, data, capsys):
    err = _one_line_error(capsys, main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]))
    assert "does not exist" in err
    err = _one_line_error(capsys, main(["describe", "resnet_9000"]))
    assert "resnet_9000" in err
    out = tmp_path / "never"
    err = _one_line_error(capsys, main(["train", str(data), "--arch", "resnet_9000", "--random-init", "--out", str(out)]))
    assert "resnet_9000" in err and not out.exists()
    (tmp_path / "notabundle").mkdir()
    err = _one_line_error(capsys, main(["predict", str(tmp_path / "notabundle"), str(data)]))
    assert "not an easytransfer model bundle" in err
    err = _one_line_error(capsys, main(["evaluate", str(tmp_path / "notabundle"), str(data)]))
    assert "easytransfer.json is missing" in err


def test_a_command_prints_no_future_warning_before_its_output(tmp_path):
    """fastai's import-time torch.jit.script used to print a FutureWarning before every command's output."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "LD_PRELOAD")}
    env["EASYTRANSFER_ALLOCATOR"] = "system"
    done = subprocess.run([sys.executable, "-m", "easytransfer.cli", "models", "*lite0*"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and "efficientnet_lite0" in done.stdout
    assert "Warning" not in done.stderr, done.stderr

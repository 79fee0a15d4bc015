"""learn.calibrate and learn.conformal on a tiny model: every prediction path, the bundle, the CLI."""

import json
import warnings

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.cli import main
from easytransfer.deploy.bundle import BundleConfig
from easytransfer.errors import EasyTransferError
from easytransfer.evaluate.conformal import ConformalEvaluation
from easytransfer.tasks.classification.prediction_sets import PredictionSet
from easytransfer.tasks.loading import parse_task_config


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("unsure")
    train = make_image_folder(root / "train", classes=("cat", "dog", "fox"), per_class=6, size=40, seed=0)
    calib = make_image_folder(root / "calib", classes=("cat", "dog", "fox"), per_class=6, size=40, seed=1)
    test = make_image_folder(root / "test", classes=("cat", "dog", "fox"), per_class=4, size=40, seed=2)
    return train, calib, test


@pytest.fixture
def learn(folders):
    dls = ImageData.from_folder(folders[0], valid_pct=0.34, seed=0, bs=6, size=32)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    with torch.no_grad():  # a sharp random head: over-confident, so temperature has something to fix
        learn.model.get_classifier().weight.mul_(20)
    return learn


def _raw_probs(learn, image):
    logits = learn.get_preds(dl=learn.dls.labelled_dl([image], labels=["cat"]), act=lambda x: x)[0]
    return logits.numpy()


def test_calibration_reaches_predict_interpret_evaluate_tta_and_the_bundle(learn, folders, tmp_path):
    train, calib, test = folders
    image = sorted(test.rglob("*.jpg"))[0]
    before = learn.interpret(test)
    plain = learn.predict(image)[2]
    with pytest.warns(UserWarning, match="validation set"):
        learn.calibrate()
    learn.calibrate(calib)
    assert learn.calibration.method == "temperature" and learn.calibration.temperature != pytest.approx(1.0)
    expected = learn.calibration.probabilities(_raw_probs(learn, image))[0]
    np.testing.assert_allclose(learn.predict(image)[2].numpy(), expected, atol=1e-5)
    assert not np.allclose(plain.numpy(), expected, atol=1e-3)
    after = learn.interpret(test)
    assert not np.allclose(after.probs, before.probs, atol=1e-3)
    assert learn.evaluate(test)["loss"] == pytest.approx(float(after.losses.mean()), rel=1e-5)
    tta_probs, _ = learn.tta(test, n=1, beta=0.0)  # beta=0: only the augmented pass, calibrated too
    assert tta_probs.sum(1).numpy() == pytest.approx(np.ones(len(tta_probs)), abs=1e-4)
    assert not np.allclose(tta_probs.numpy().max(1), 1.0, atol=1e-3)
    fig = after.plot_calibration(before=before)
    assert sum("ECE" in t.get_text() for t in fig.axes[0].get_legend().get_texts()) == 2  # before and after
    assert 0 <= after.calibration_error() <= 1

    bundle = learn.export(tmp_path / "model")
    assert json.loads((bundle / "easytransfer.json").read_text())["task_config"]["calibration"]["method"] == "temperature"
    predictor = load_model(bundle)
    np.testing.assert_allclose(predictor.predict(image)[2].numpy(), expected, atol=1e-5)
    np.testing.assert_allclose(predictor.interpret(test, progress=False).probs, after.probs, atol=1e-5)


def test_isotonic_calibration_and_retraining_drops_it(learn, folders):
    learn.calibrate(folders[1], method="isotonic")
    assert learn.calibration.method == "isotonic" and len(learn.calibration.isotonic) == 3
    probs = learn.interpret(folders[2]).probs
    assert probs.sum(1) == pytest.approx(np.ones(len(probs)), abs=1e-5)
    with pytest.warns(UserWarning, match="dropped"):
        learn.fit_frozen(1)
    assert learn.calibration is None and learn.conformal_calibration is None
    assert "expected calibration error" in str(learn.diagnose())  # after training: read on the validation set
    with pytest.raises(ValueError, match="method must be one of"):
        learn.calibrate(folders[1], method="platt")


def test_conformal_sets_from_learner_bundle_and_cli(learn, folders, tmp_path, capsys):
    train, calib, test = folders
    learn.calibrate(calib)  # sets are made from the calibrated probabilities (conformal after calibrate)
    cp = learn.conformal(calib, alpha=0.2, mondrian=False, score="lac")
    image = sorted(test.rglob("*.jpg"))[0]
    found = cp.predict(image)
    assert isinstance(found, PredictionSet) and 1 <= found.size <= 3
    assert found.probabilities == sorted(found.probabilities, reverse=True)
    result = cp.evaluate(test)
    assert isinstance(result, ConformalEvaluation) and result.n_images == 12
    assert set(result.per_class_coverage) == {"cat", "dog", "fox"}
    assert 1 <= result.avg_set_size <= 3 and 0 <= result.singleton_share <= 1 and result.empty_share == 0
    interp = learn.interpret(test)
    sets = cp.calibration.prediction_sets(interp.probs)
    assert result.coverage == pytest.approx(sets[np.arange(12), interp.targs].mean())
    everything = cp.evaluate(test, alpha=0.01)  # 18 calibration images are too few for 99 %: every label kept
    assert everything.coverage == 1.0 and everything.avg_set_size == 3.0
    table = cp.predict_folder(test)
    assert {"set", "set_size"} <= set(table.columns) and len(table) == 12
    assert table["set"].iloc[0].split(" ")[0] == table["label"].iloc[0]

    bundle = learn.export(tmp_path / "model")
    predictor = load_model(bundle)
    assert predictor.predict_set(image) == found
    assert predictor.predict_set(image, alpha=0.01).size == 3
    folder_table = predictor.predict_folder(test, alpha=0.2, progress=False)
    assert folder_table.sort_values("path")["set"].tolist() == table.sort_values("path")["set"].tolist()
    main(["predict", str(bundle), str(test), "--alpha", "0.2"])
    out = capsys.readouterr().out
    assert "{" in out and "send those to a person" in out



@pytest.mark.slow
def test_report_shows_calibration_before_after_and_conformal_sets(learn, folders, tmp_path):
    train, calib, test = folders
    learn.calibrate(calib)
    learn.conformal(calib, alpha=0.2)
    report = learn.save_report(tmp_path / "report.html", dl=learn.dls.labelled_dl(test)).read_text()
    assert "before calibration" in report and "reliability diagram" in report
    assert "lowest class coverage" in report and "Score &#x27;lac&#x27;" in report


def test_diagnose_calls_out_over_confidence():
    import pandas as pd

    from easytransfer.train.diagnosis import ConfidenceCheck, diagnose

    history = pd.DataFrame([dict(phase="frozen", epoch=0, train_loss=0.3, valid_loss=0.32, accuracy=0.8,
                                 train_accuracy=0.95)])
    over = diagnose(history, confidence=ConfidenceCheck(ece=0.15, mean_confidence=0.95, accuracy=0.8))
    assert "over-confident" in str(over) and any("learn.calibrate(" in a for a in over.advice)
    fine = diagnose(history, confidence=ConfidenceCheck(ece=0.02, mean_confidence=0.81, accuracy=0.8,
                                                         calibrated=True))
    assert "over-confident" not in str(fine) and "0.020" in str(fine) and "(calibrated)" in str(fine)
    assert "calibration" not in str(diagnose(history))


def test_errors_name_the_fix(learn, folders, tmp_path):
    bundle = learn.export(tmp_path / "plain")
    with pytest.raises(EasyTransferError, match=r"learn.conformal\(calib\)"):
        load_model(bundle).predict_set(sorted(folders[2].rglob("*.jpg"))[0])
    with pytest.raises(ValueError, match="alpha must be in"):
        learn.conformal(folders[1], alpha=1.5)
    config = json.loads((bundle / "easytransfer.json").read_text())  # a bundle from before calibration existed
    assert "calibration" not in config["task_config"] and "conformal" not in config["task_config"]
    old = BundleConfig.from_json(json.dumps(config), parse_task_config=parse_task_config)
    assert old.task_config.calibration is None and old.task_config.conformal is None


def test_multilabel_learner_gets_a_clear_error(tmp_path):
    import pandas as pd

    root = make_image_folder(tmp_path / "img", classes=("a", "b"), per_class=6, size=32)
    files = sorted(root.rglob("*.jpg"))
    table = pd.DataFrame({"path": [str(f) for f in files], "label": ["a b" if i % 3 == 0 else f.parent.name
                                                                      for i, f in enumerate(files)]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dls = ImageData.from_df(table, label_delim=" ", valid_pct=0.34, seed=0, bs=4, size=32)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    for call in (lambda: learn.calibrate(), lambda: learn.conformal()):
        with pytest.raises(EasyTransferError, match="multi-label"):
            call()

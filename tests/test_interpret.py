import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_image_folder
from matplotlib.figure import Figure
from PIL import Image
from sklearn.metrics import classification_report
from sklearn.metrics import multilabel_confusion_matrix as sk_multilabel_confusion_matrix

from easytransfer import ImageData, transfer_learner
from easytransfer.evaluate.metrics import multilabel_confusion_matrix, per_class_report
from easytransfer.tasks.classification.interpretation import Interpretation
from easytransfer.tasks.classification.report import SECTIONS


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_class_matches_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    targs = rng.integers(0, 4, 200)
    preds = np.where(rng.random(200) < 0.6, targs, rng.integers(0, 3, 200))  # class 3 is never predicted
    classes = ["a", "b", "c", "d"]
    ours = per_class_report(targs, preds, classes)
    theirs = classification_report(targs, preds, target_names=classes, output_dict=True, zero_division=0)
    for name in classes + ["macro avg", "weighted avg"]:
        for col, key in [("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")]:
            assert ours.loc[name, col] == pytest.approx(theirs[name][key]), (name, col)
    assert ours.loc["macro avg", "accuracy"] == pytest.approx(theirs["accuracy"])


def test_multilabel_per_label_report_and_matrices_match_scikit_learn():
    rng = np.random.default_rng(0)
    targs = (rng.random((120, 3)) < [0.5, 0.2, 0.7]).astype(int)
    preds = np.where(rng.random((120, 3)) < 0.7, targs, 1 - targs)
    ours = per_class_report(targs, preds, ["x", "y", "z"])
    theirs = classification_report(targs, preds, target_names=["x", "y", "z"], output_dict=True, zero_division=0)
    for name in ["x", "y", "z", "macro avg", "weighted avg"]:
        for col, key in [("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"), ("support", "support")]:
            assert ours.loc[name, col] == pytest.approx(theirs[name][key]), (name, col)
    np.testing.assert_array_equal(multilabel_confusion_matrix(targs, preds), sk_multilabel_confusion_matrix(targs, preds))
    assert ours.loc["y", "accuracy"] == pytest.approx((targs[:, 1] == preds[:, 1]).mean())


@pytest.fixture
def trained(tmp_path):
    root = make_image_folder(tmp_path / "images", classes=("cat", "dog", "fox"), per_class=6)
    dls = ImageData.from_folder(root, valid_pct=0.34, seed=0, bs=4, size=48)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    learn.fit_frozen(2, lr=1e-2)
    return learn, root


class ForwardCounter:
    def __init__(self, model):
        self.calls = 0
        self.handle = model.register_forward_hook(self)

    def __call__(self, *args):
        self.calls += 1


def test_interpret_runs_inference_once_and_answers_everything_from_it(trained):
    learn, _ = trained
    counter = ForwardCounter(learn.model)
    interp = learn.interpret()
    n_batches = len(learn.dls.valid)
    assert counter.calls == n_batches
    n = len(learn.dls.valid_ds)
    assert interp.probs.shape == (n, 3) and interp.targs.shape == interp.preds.shape == interp.losses.shape == (n,)
    np.testing.assert_allclose(interp.probs.sum(1), 1, rtol=1e-5)
    cm_fig = interp.plot_confusion_matrix()
    norm_fig = interp.plot_confusion_matrix(normalize=True)
    top = interp.plot_top_losses(k=4)
    table = interp.per_class()
    confused = interp.most_confused(min_val=1)
    interp.report()
    assert counter.calls == n_batches  # no second inference
    assert all(isinstance(f, Figure) for f in (cm_fig, norm_fig, top))
    assert list(table.columns) == ["precision", "recall", "f1", "support", "accuracy"]
    assert list(table.index) == ["cat", "dog", "fox", "macro avg", "weighted avg"]
    assert interp.confusion_matrix().sum() == n
    assert list(confused.columns) == ["actual", "predicted", "count"] and (confused["count"] >= 1).all()
    titles = [ax.get_title() for ax in top.axes if ax.get_title()]
    assert len(titles) == 4
    worst = interp.top_losses(1).iloc[0]
    assert titles[0] == f"{worst.predicted} / {worst.actual}\n{worst.loss:.2f} / {worst.p_actual:.2f}"
    assert worst.loss == pytest.approx(interp.losses.max())
    assert worst.p_actual == pytest.approx(np.exp(-worst.loss), rel=1e-4)  # cross-entropy of the actual class


def test_interpret_on_a_folder_and_a_list_of_files(trained, tmp_path):
    learn, _ = trained
    test = make_image_folder(tmp_path / "test", classes=("cat", "fox"), per_class=3, seed=9)
    from_folder = learn.interpret(test)
    assert len(from_folder.losses) == 6
    files = sorted(test.rglob("*.jpg"))
    from_list = learn.interpret(files)
    np.testing.assert_allclose(np.sort(from_list.probs, axis=0), np.sort(from_folder.probs, axis=0), rtol=1e-5)
    result = learn.evaluate(test)
    assert result["n_images"] == 6 and set(result) >= {"loss", "accuracy", "macro_f1", "weighted_f1"}
    assert result["accuracy"] == pytest.approx(from_folder.accuracy)


def test_tta_and_interpret_with_tta(trained):
    learn, _ = trained
    plain_before = learn.get_preds()[0]
    probs, targs = learn.tta(learn.dls.valid, n=2)
    torch.testing.assert_close(learn.get_preds()[0], plain_before)  # memoized validation images stay plain
    assert probs.shape == (len(learn.dls.valid_ds), 3)
    np.testing.assert_allclose(probs.sum(1).numpy(), 1, rtol=1e-5)
    interp = learn.interpret(tta=True)
    assert interp.probs.shape == probs.shape
    expected = -np.log(interp.probs[np.arange(len(interp.targs)), interp.targs])
    np.testing.assert_allclose(interp.losses, expected, rtol=1e-4)
    assert learn.evaluate(learn.dls.valid, tta=True)["n_images"] == len(learn.dls.valid_ds)


def test_a_weak_small_class_is_called_out():
    class FakeLearn:
        class dls:
            vocab = ["common", "rare"]

    targs = torch.tensor([0] * 95 + [1] * 5)
    probs = torch.zeros(100, 2)
    probs[:, 0] = 1.0
    probs[95, :] = torch.tensor([0.0, 1.0])  # one of the five rare images right
    interp = Interpretation(FakeLearn(), None, probs, targs, torch.zeros(100))
    warnings = interp.warnings()
    assert len(warnings) == 1 and "'rare' (5% of these images) has recall 20% against 96% overall" in warnings[0]


def test_multilabel_interpretation(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=("a", "b"), per_class=6)
    files = sorted(root.rglob("*.jpg"))
    labels = ["a" if f.parent.name == "a" else "a b" for f in files]
    dls = ImageData.from_df(pd.DataFrame({"path": [str(f) for f in files], "label": labels}), label_delim=" ",
                            bs=4, size=32, valid_pct=0.4, seed=1)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    learn.fit_frozen(1)
    interp = learn.interpret()
    n = len(dls.valid_ds)
    assert interp.multilabel and interp.targs.shape == interp.preds.shape == (n, 2) and interp.losses.shape == (n,)
    assert interp.confusion_matrix().shape == (2, 2, 2)
    fig = interp.plot_confusion_matrix()
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
    table = interp.per_class()
    assert list(table.index[:2]) == ["a", "b"] and table.loc["a", "support"] == interp.targs[:, 0].sum()
    assert isinstance(interp.plot_top_losses(2), Figure)


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.images, self.headings, self._in_h2 = [], [], [], False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section":
            self.sections.append(attrs.get("id"))
        if tag == "img":
            self.images.append(attrs["src"])
        self._in_h2 = tag == "h2"

    def handle_data(self, data):
        if self._in_h2:
            self.headings.append(data)
            self._in_h2 = False


def test_html_report_is_self_contained_with_every_section_and_image(trained, tmp_path):
    learn, _ = trained
    learn.lr_find(num_it=10)
    out = learn.save_report(tmp_path / "run" / "report.html")
    text = out.read_text(encoding="utf-8")
    parser = _Parser()
    parser.feed(text)
    assert parser.sections == list(SECTIONS)
    assert parser.headings == list(SECTIONS.values())
    # history, LR finder, two confusion matrices, top losses, reliability diagram
    assert len(parser.images) == 6
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        img = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        img.load()
        assert img.size[0] > 100 and img.size[1] > 100
    assert not re.search(r"(src|href)=\"https?://", text)  # nothing fetched from the network
    for word in ("Diagnosis:", "precision", "peak lr (last fit)", "test_efficientnet", "valley"):
        assert word in text


def test_interpret_accepts_the_table_evaluate_accepts(tmp_path):
    """Defect 8: ``learn.interpret(table)`` rejected the ``path`` / ``label`` DataFrame that ``evaluate`` takes."""
    root = make_image_folder(tmp_path / "images", per_class=4)
    dls = ImageData.from_folder(root, valid_pct=0.25, seed=0, bs=4, size=32)
    learn = transfer_learner(dls, "test_resnet", pretrained=False)
    test = make_image_folder(tmp_path / "test", per_class=2, seed=5)
    table = pd.DataFrame({"path": [str(p) for p in sorted(test.rglob("*.jpg"))], "label": ["cat"] * 2 + ["dog"] * 2})
    interp = learn.interpret(table)
    assert len(interp.losses) == 4 and interp.vocab == ["cat", "dog"]
    assert interp.targs.tolist() == [0, 0, 1, 1]
    assert interp.top_losses()["path"].map(str).isin(table["path"]).all()
    assert learn.evaluate(table)["accuracy"] == pytest.approx(interp.accuracy)
    probs, _ = learn.tta(table, n=1)
    assert probs.shape == (4, 2)

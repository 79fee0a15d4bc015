"""Few-shot heads fitted on cached features (prototype, k-NN): hand computations, export, errors, records."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from fastai.torch_core import set_seed

from easytransfer import HeadConfig, ImageData, load_model, transfer_learner
from easytransfer.deploy.bundle import CONFIG_NAME
from easytransfer.errors import EasyTransferError
from easytransfer.models.heads import KNN_SMOOTHING, KNNHead, PrototypeHead
from easytransfer.tasks.classification.probe import (
    KNN_KS,
    PROTOTYPE_SCALES,
    fit_knn_head,
    fit_logistic_head,
    fit_prototype_head,
    out_of_fold_losses,
)
from easytransfer.train.history import PhaseKind

CLASSES = ("a", "b", "c")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("fewshot") / "images", classes=CLASSES, per_class=8)


def _learner(folder, **kwargs):
    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, size=48, aug="none")
    set_seed(0)
    return transfer_learner(dls, "test_efficientnet", pretrained=False, **kwargs)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _valid_probs(learn) -> np.ndarray:
    """The whole model's probabilities on the validation images (images in, not features)."""
    probs, _ = learn.get_preds(dl=learn.dls.valid)
    return probs.numpy()


def test_prototype_predictions_are_the_nearest_normalised_class_mean(folder):
    learn = _learner(folder)
    opt, splitter = learn.opt, learn.splitter
    learn.fit_frozen(1, method="prototype")
    cache = learn.feature_cache
    X, y, Xv = _unit(cache.train[0]), cache.train_targets.numpy(), _unit(cache.valid)
    means = _unit(np.stack([X[y == c].mean(0) for c in range(len(CLASSES))]))
    row = learn.history.iloc[-1]
    assert row["phase"] == "prototype" and row["scale"] in PROTOTYPE_SCALES
    expected = _softmax(row["scale"] * Xv @ means.T)
    np.testing.assert_allclose(_valid_probs(learn), expected, atol=1e-5)
    assert isinstance(learn.model.get_classifier(), PrototypeHead)
    assert learn.head_config == HeadConfig("prototype")
    assert learn.opt is opt and learn.splitter is splitter  # it took over the Linear head's parameters
    assert learn.fit_history[-1].phase.kind is PhaseKind.PROBE


def test_knn_with_k_1_is_the_nearest_training_image(folder):
    learn = _learner(folder)
    learn.fit_frozen(1, method="knn", k=1)
    cache = learn.feature_cache
    X, y, Xv = _unit(cache.train[0]), cache.train_targets.numpy(), _unit(cache.valid)
    nearest = y[(Xv @ X.T).argmax(1)]
    n = len(CLASSES)
    expected = np.full((len(Xv), n), KNN_SMOOTHING / (1 + KNN_SMOOTHING * n))
    expected[np.arange(len(Xv)), nearest] = (1 + KNN_SMOOTHING) / (1 + KNN_SMOOTHING * n)
    np.testing.assert_allclose(_valid_probs(learn), expected, atol=1e-6)
    assert learn.head_config == HeadConfig("knn", k=1, exemplars=len(y))
    row = learn.history.iloc[-1]
    assert row["phase"] == "knn" and row["k"] == 1


def test_knn_chooses_k_on_the_validation_set_and_stores_the_training_features(folder):
    learn = _learner(folder)
    learn.fit_frozen(1, method="knn")
    head = learn.model.get_classifier()
    assert isinstance(head, KNNHead) and head.k in KNN_KS and learn.history.iloc[-1]["k"] == head.k
    np.testing.assert_allclose(head.exemplars.numpy(), _unit(learn.feature_cache.train[0]), atol=1e-6)
    assert torch.equal(head.labels, learn.feature_cache.train_targets.long())
    probs = _valid_probs(learn)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)
    assert learn.history.iloc[-1]["accuracy"] == pytest.approx(
        (probs.argmax(1) == learn.feature_cache.valid_targets.numpy()).mean())


@pytest.mark.parametrize("method", ["prototype", "knn"])
def test_few_shot_heads_export_and_load_with_the_same_probabilities(folder, method, tmp_path):
    learn = _learner(folder)
    learn.fit_frozen(1, method=method)
    files = sorted(folder.rglob("*.jpg"))[::8]
    from_learner = torch.stack([learn.predict(f)[2] for f in files])
    interp = learn.interpret()
    assert interp.accuracy == pytest.approx(learn.history.iloc[-1]["accuracy"])
    assert learn.evaluate(folder)["n_images"] == len(CLASSES) * 8
    bundle = learn.export(tmp_path / "model")
    assert json.loads((bundle / CONFIG_NAME).read_text())["head"]["type"] == method
    predictor = load_model(bundle, device="cpu")
    assert predictor.config.head == learn.head_config
    torch.testing.assert_close(predictor.predict_batch(files), from_learner, atol=1e-5, rtol=0)


def test_an_unknown_method_names_the_valid_ones(folder):
    learn = _learner(folder)
    with pytest.raises(ValueError, match="'gradient', 'logistic', 'prototype', 'knn'.*got 'nearest'"):
        learn.fit_frozen(1, method="nearest")
    with pytest.raises(ValueError, match="k= is the number of neighbours of method='knn'"):
        learn.fit_frozen(1, method="prototype", k=3)
    with pytest.raises(ValueError, match="between 1 and the 18 training images"):
        learn.fit_frozen(1, method="knn", k=100)


def test_after_a_knn_head_the_other_methods_give_a_head_with_weights_again(folder):
    learn = _learner(folder)
    learn.fit_frozen(1, method="knn")
    assert learn.layer_groups.names[-1] == ()  # the k-NN head holds buffers only
    with pytest.raises(EasyTransferError, match="no weights to train by gradient descent"):
        learn.fit_frozen(1)
    learn.fit_frozen(1, method="logistic")  # a Linear head replaces the k-NN head, then the probe fits it
    assert type(learn.model.get_classifier()) is torch.nn.Linear and learn.head_config == HeadConfig()
    assert learn.layer_groups.names[-1] == ("classifier.weight", "classifier.bias")
    learn.fit_frozen(1, method="prototype")
    before = learn.model.get_classifier().weight.detach().clone()
    learn.fit_frozen(1, restore_best=False)  # trains the prototype head as a cosine classifier
    assert not torch.equal(before, learn.model.get_classifier().weight)
    assert [r.phase.name for r in learn.fit_history] == ["knn", "logistic", "prototype", "frozen"]


def test_few_shot_heads_refuse_multi_label_data():
    cache = SimpleNamespace(train=np.ones((1, 4, 3), np.float32), valid=np.ones((2, 3), np.float32),
                            train_targets=torch.zeros(4, 2), valid_targets=torch.zeros(2, 2))
    for fit in (fit_prototype_head, fit_knn_head):
        with pytest.raises(ValueError, match="single-label data; this data is multi-label"):
            fit(cache, 2)


def test_a_feature_almost_silent_on_the_training_images_does_not_blow_up_the_logistic_probe():
    # 472 of EfficientNet-Lite0's features were exactly 0 on 100 textile training images; divided by 1e-6 they sent
    # the probe's validation log-loss to 10-48 where one image fired them
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    informative = rng.normal(size=(40, 4)) + y[:, None]
    X = np.concatenate([informative, np.zeros((40, 3))], axis=1)  # three features (almost) never fire in training
    X[0, 4:] = 1e-3
    yv = np.array([0, 1] * 10)
    Xv = np.concatenate([rng.normal(size=(20, 4)) + yv[:, None], np.full((20, 3), 0.5)], axis=1)
    cache = SimpleNamespace(train=X[None].astype(np.float32), train_targets=torch.tensor(y),
                            valid=Xv.astype(np.float32), valid_targets=torch.tensor(yv))
    head = torch.nn.Linear(7, 2)
    fit = fit_logistic_head(head, cache)
    assert fit.valid_losses[fit.C] < 0.7
    assert head.weight[:, 4:].abs().max() < 1  # not a weight of ~1/std that a firing feature turns into a huge logit


def test_out_of_fold_losses_score_each_image_with_a_probe_that_never_saw_it():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(60, 200)), rng.integers(0, 2, 60)  # random labels: memorised in-sample, not learnt
    losses, right = out_of_fold_losses(X, y, C=100.0)
    assert losses.shape == (60,) and right.mean() < 0.75 and losses.mean() > 0.5
    learnable = np.concatenate([X[:, :5] + 3 * y[:, None], X[:, 5:]], axis=1)
    losses, right = out_of_fold_losses(learnable, y, C=1.0)
    assert right.mean() > 0.9
    multilabel = np.stack([y, 1 - y], axis=1)
    losses, right = out_of_fold_losses(learnable, multilabel, C=1.0)
    assert losses.shape == (60,) and right.mean() > 0.9

"""Heads fitted in one go on cached features: the logistic probe, and the few-shot prototype and k-NN heads.

- ``method="logistic"``: an L2-regularised logistic regression, written into the model's linear head;
- ``method="prototype"``: a `PrototypeHead`, cosine similarity to each class's mean normalised feature, times a
  scale chosen on the validation set;
- ``method="knn"``: a `KNNHead`, the smoothed vote of the k nearest training images by cosine similarity, k chosen
  on the validation set.

Each choice (C, scale, k) minimises the validation log-loss. The fit is one `PhaseKind.PROBE` record of the
history, measured like any epoch by the learner's loss and metrics.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...log import get_logger
from ...models.heads import KNNHead, PrototypeHead
from ...train.features import feature_head
from ...train.head_loop import HeadLoop
from ...train.history import EpochRecord, Phase, PhaseKind

__all__ = ["KNN_KS", "PROBE_CS", "PROTOTYPE_SCALES", "FitChoice", "KNNFit", "ProbeFit", "PrototypeFit",
           "feature_scales", "fit_knn_head", "out_of_fold_losses", "fit_logistic_head", "fit_logistic_probe",
           "fit_prototype_head", "record_probe"]

logger = get_logger(__name__)

PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried; the best valid loss wins
# cosine similarities of CNN features to class means differ by ~0.05-0.3 between classes, so the softmax needs a
# scale of tens to hundreds to be confident; 1 to 1000 in steps of 10**0.1, the best validation log-loss wins
PROTOTYPE_SCALES = tuple(float(s) for s in np.round(10 ** np.arange(0, 3.05, 0.1), 3))
KNN_KS = (1, 3, 5, 10, 20)  # neighbours tried (those up to the number of training images); best valid loss wins


def _head_linear(trainable: nn.Module) -> nn.Linear:
    if type(trainable) is nn.Linear:  # not a PrototypeHead, which normalises its input first
        return trainable
    layers = list(trainable.children()) if isinstance(trainable, nn.Sequential) else []
    if layers and type(layers[-1]) is nn.Linear and all(isinstance(m, nn.Dropout) for m in layers[:-1]):
        return layers[-1]
    raise ValueError("method='logistic' needs a linear head (head='linear'); this head is "
                     f"{type(trainable).__name__}.")


def _fit(X, y, Xv, yv, C: float, multilabel: bool):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.multiclass import OneVsRestClassifier

    model = LogisticRegression(C=C, max_iter=2000)
    if multilabel:
        model = OneVsRestClassifier(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings at extreme C: that C then simply loses
        model.fit(X, y)
    p = model.predict_proba(Xv)
    if multilabel:
        p = np.clip(p, 1e-7, 1 - 1e-7)
        loss = float(-(yv * np.log(p) + (1 - yv) * np.log(1 - p)).mean())
    else:
        loss = float(log_loss(yv, p, labels=np.arange(p.shape[1])))
    return model, loss


def _weights(model, multilabel: bool, n_out: int):
    if multilabel:  # a label with one value in the training images has a constant estimator: a fixed logit
        width = next((est.coef_.shape[1] for est in model.estimators_ if hasattr(est, "coef_")), model.n_features_in_)
        coef = np.stack([est.coef_[0] if hasattr(est, "coef_") else np.zeros(width) for est in model.estimators_])
        intercept = np.array([est.intercept_[0] if hasattr(est, "coef_") else (8.0 if est.y_[0] else -8.0)
                              for est in model.estimators_])
        return coef, intercept
    coef, intercept = model.coef_, model.intercept_
    if n_out == 2 and coef.shape[0] == 1:  # sklearn's binary model: one logit; softmax of (-z/2, z/2) is the same
        return np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    full_coef, full_intercept = np.zeros((n_out, coef.shape[1])), np.full(n_out, -1e4)  # classes absent in training
    full_coef[model.classes_], full_intercept[model.classes_] = coef, intercept
    return full_coef, full_intercept


class FitChoice:
    """What a head fitted in one go chose: `method` is its ``fit_frozen`` method, `setting` the field it chose."""

    method: ClassVar[str]
    setting: ClassVar[str]

    @property
    def extras(self) -> dict[str, float]:
        """The choice as the history's extra column (``{"C": 0.1}``)."""
        return {self.setting: getattr(self, self.setting)}


@dataclass(frozen=True)
class ProbeFit(FitChoice):
    """The logistic probe's choice: the regularisation `C` and the validation log-loss of every `C` tried."""

    method: ClassVar[str] = "logistic"
    setting: ClassVar[str] = "C"
    C: float
    valid_losses: dict[float, float]


@dataclass(frozen=True)
class PrototypeFit(FitChoice):
    """The prototype head's choice: the softmax `scale` of the cosines and the validation log-loss of each tried."""

    method: ClassVar[str] = "prototype"
    setting: ClassVar[str] = "scale"
    scale: float
    valid_losses: dict[float, float]


@dataclass(frozen=True)
class KNNFit(FitChoice):
    """The k-NN head's choice: the neighbours `k` and the validation log-loss of each `k` tried."""

    method: ClassVar[str] = "knn"
    setting: ClassVar[str] = "k"
    k: int
    valid_losses: dict[int, float]


def fit_logistic_head(trainable: nn.Module, cache, Cs=PROBE_CS) -> ProbeFit:
    """Fit the linear head in `trainable` as a logistic regression on the plain-view cached features.

    Features are standardised for the fit and the scaling is folded into the head's weights; `C` is chosen by
    the validation log-loss.

    >>> fit_logistic_head(learn.model.get_classifier(), learn.feature_cache).C  # doctest: +SKIP
    0.1
    """
    linear = _head_linear(trainable)
    X, y = np.asarray(cache.train[0], dtype=np.float64), cache.train_targets.numpy()
    Xv, yv = np.asarray(cache.valid, dtype=np.float64), cache.valid_targets.numpy()
    multilabel = y.ndim == 2
    mu, sd = X.mean(0), feature_scales(X)
    fits = [(C, *_fit((X - mu) / sd, y, (Xv - mu) / sd, yv, C, multilabel)) for C in Cs]
    best_C, best_model, _ = min(fits, key=lambda f: f[2])
    coef, intercept = _weights(best_model, multilabel, linear.out_features)
    coef = coef / sd
    intercept = intercept - (coef * mu).sum(1)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(coef, dtype=linear.weight.dtype, device=linear.weight.device))
        linear.bias.copy_(torch.as_tensor(intercept, dtype=linear.bias.dtype, device=linear.bias.device))
    return ProbeFit(best_C, {C: loss for C, _, loss in fits})


def feature_scales(X: np.ndarray) -> np.ndarray:
    """Each feature's standard deviation on the training images, floored at a tenth of the median one.

    Without the floor a feature that (almost) never fires on the training images is divided by ~0 and blows up
    on a validation image where it fires: 472 of EfficientNet-Lite0's 1,280 pooled features were exactly 0 on
    100 textile training images, and the probe's validation log-loss reached 10-48 (0.63-0.69 with the floor).

    >>> feature_scales(np.array([[0.0, 1.0, 5.0], [0.0, 3.0, 9.0]]))
    array([0.15, 1.  , 2.  ])
    """
    sd = X.std(0)
    positive = sd[sd > 0]
    floor = 0.1 * float(np.median(positive)) if len(positive) else 1.0
    return np.maximum(sd, floor)


def out_of_fold_losses(X: np.ndarray, y: np.ndarray, C: float, folds: int = 5, seed: int = 0,
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Per-image log-loss and correctness of a logistic probe that never saw the image: `folds`-fold
    cross-validation over the rows of `X` (stratified for single-label `y`), each fold standardised on its own
    training rows (`feature_scales`). Multi-label `y` (rows of 0 / 1): each image's mean binary log-loss, and the
    share of its labels right.

    >>> rng = np.random.default_rng(0); y = np.repeat([0, 1], 10)
    >>> losses, right = out_of_fold_losses(rng.normal(size=(20, 3)) + 3 * y[:, None], y, C=1.0)
    >>> losses.shape, float(right.mean())
    ((20,), 1.0)
    """
    from sklearn.model_selection import KFold, StratifiedKFold

    multilabel = y.ndim == 2
    splitter = (KFold(folds, shuffle=True, random_state=seed) if multilabel
                else StratifiedKFold(min(folds, int(np.bincount(y).min())), shuffle=True, random_state=seed))
    losses, right = np.zeros(len(y)), np.zeros(len(y))
    for train, test in splitter.split(X, y):
        mu, sd = X[train].mean(0), feature_scales(X[train])
        model, _ = _fit((X[train] - mu) / sd, y[train], (X[test] - mu) / sd, y[test], C, multilabel)
        p = np.clip(model.predict_proba((X[test] - mu) / sd), 1e-7, 1 - 1e-7)
        if multilabel:
            truth = y[test] > 0.5
            losses[test] = -np.where(truth, np.log(p), np.log(1 - p)).mean(1)
            right[test] = ((p > 0.5) == truth).mean(1)
        else:
            columns = np.searchsorted(model.classes_, y[test])
            known = model.classes_[np.minimum(columns, len(model.classes_) - 1)] == y[test]
            losses[test] = -np.log(np.where(known, p[np.arange(len(test)), np.minimum(columns, p.shape[1] - 1)],
                                            1e-7))
            right[test] = model.classes_[p.argmax(1)] == y[test]
    return losses, right


def _single_label_features(cache, method: str):
    """Training (plain view) and validation features and targets as tensors; single-label data only."""
    if cache.train_targets.ndim != 1:
        raise ValueError(f"method={method!r} is for single-label data; this data is multi-label: use "
                         "method='logistic' or 'gradient'.")
    if len(cache.valid_targets) == 0:
        raise ValueError(f"method={method!r} chooses its setting on the validation set, which is empty; split "
                         "off validation images (ImageData.from_folder(..., valid_pct=0.2)).")
    X = torch.as_tensor(np.asarray(cache.train[0], dtype=np.float32))
    Xv = torch.as_tensor(np.asarray(cache.valid, dtype=np.float32))
    return X, cache.train_targets.long(), Xv, cache.valid_targets.long()


def fit_prototype_head(cache, n_classes: int, scales=PROTOTYPE_SCALES) -> tuple[PrototypeHead, PrototypeFit]:
    """A `PrototypeHead` from the plain-view cached training features, its scale chosen by validation log-loss.

    Args:
        cache: the `FeatureCache` (single-label data).
        n_classes: outputs of the head (the data's classes).
        scales: softmax scales of the cosine similarities tried.

    >>> from types import SimpleNamespace  # a FeatureCache's fields: 2-d features, classes 0 and 1
    >>> cache = SimpleNamespace(train=np.array([[[1, 0], [1, 0.2], [0, 1]]], np.float32),
    ...                         train_targets=torch.tensor([0, 0, 1]), valid_targets=torch.tensor([0, 1]),
    ...                         valid=np.array([[1, 0.1], [0.1, 1]], np.float32))
    >>> head, fit = fit_prototype_head(cache, 2)
    >>> fit.scale, head(torch.tensor([[1.0, 0.1]])).softmax(-1).argmax().item()
    (25.119, 0)
    """
    X, y, Xv, yv = _single_label_features(cache, "prototype")
    unit = PrototypeHead.from_features(X, y, n_classes, scale=1.0)
    with torch.no_grad():
        cosines = unit(Xv)
    losses = {float(s): float(F.cross_entropy(s * cosines, yv)) for s in scales}
    scale = min(losses, key=losses.get)
    return PrototypeHead.from_features(X, y, n_classes, scale=scale), PrototypeFit(scale, losses)


def fit_knn_head(cache, n_classes: int, ks=KNN_KS, *, k: int | None = None) -> tuple[KNNHead, KNNFit]:
    """A `KNNHead` holding the plain-view cached training features; k chosen by validation log-loss.

    Args:
        cache: the `FeatureCache` (single-label data).
        n_classes: outputs of the head (the data's classes).
        ks: neighbours tried (those up to the number of training images).
        k: use this many neighbours instead of choosing.

    >>> from types import SimpleNamespace  # a FeatureCache's fields: 2-d features, classes 0 and 1
    >>> cache = SimpleNamespace(train=np.array([[[1, 0], [1, 0.2], [0, 1]]], np.float32),
    ...                         train_targets=torch.tensor([0, 0, 1]), valid_targets=torch.tensor([0, 1]),
    ...                         valid=np.array([[1, 0.1], [0.1, 1]], np.float32))
    >>> head, fit = fit_knn_head(cache, 2)
    >>> fit.k, head.exemplars.shape, head(torch.tensor([[1.0, 0.1]])).softmax(-1)
    (1, torch.Size([3, 2]), tensor([[0.6667, 0.3333]]))
    """
    X, y, Xv, yv = _single_label_features(cache, "knn")
    if k is not None:
        if not isinstance(k, int) or not 1 <= k <= len(y):
            raise ValueError(f"k must be an integer between 1 and the {len(y)} training images, got {k!r}")
        ks = (k,)
    ks = [int(c) for c in ks if c <= len(y)] or [len(y)]
    head = KNNHead.from_features(X, y, n_classes, k=max(ks))
    with torch.no_grad():
        neighbours = head.neighbour_labels(Xv, max(ks))  # nearest first: the first c columns are the c nearest
        losses = {c: float(F.cross_entropy(head.vote(neighbours[:, :c]), yv)) for c in ks}
    best = min(losses, key=losses.get)
    head.k = best
    return head, KNNFit(best, losses)


def record_probe(learn, cache, fit: FitChoice, start: float):
    """Append the `PhaseKind.PROBE` record of a fitted head to ``learn.fit_history``, print it; returns `learn`.

    The record's losses and metrics are measured by the learner's loss and metrics on the features (train loss
    on the plain training view); the fit's choice (``C``, ``scale``, ``k``) is kept as an extra, not a metric.
    `start` is the ``time.perf_counter()`` when the fit began.
    """
    _, trainable = feature_head(learn)
    loop = HeadLoop(learn, cache.dataloaders(learn.dls, learn.device), trainable)
    valid = loop.validate()
    train = loop.validate(dl=loop.dls.train.new(shuffle=False, drop_last=False))
    metrics = {m.name: float(v) for m, v in zip(learn.metrics, valid[1:])}
    multilabel = cache.train_targets.ndim == 2
    single_label_accuracy = not multilabel and learn.metrics and learn.metrics[0].name == "accuracy"
    phase = Phase(PhaseKind.PROBE) if fit.method == "logistic" else Phase(PhaseKind.PROBE, label=fit.method)
    record = EpochRecord(phase, len(learn.fit_history), float(train[0]), float(valid[0]), metrics,
                         train_accuracy=float(train[1]) if single_label_accuracy else np.nan,
                         seconds=time.perf_counter() - start, extras=dict(fit.extras))
    learn.fit_history.append(record)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in {"train_loss": record.train_loss, "valid_loss": record.valid_loss,
                                                   **metrics, "train_accuracy": record.train_accuracy}.items())
    choice = getattr(fit, fit.setting)
    label = "logistic probe" if fit.method == "logistic" else f"{fit.method} head"
    logger.info(f"{label}: {fit.setting}={choice} (valid loss {fit.valid_losses[choice]:.4f} of "
                f"{[round(v, 4) for v in fit.valid_losses.values()]}), valid {shown}")
    return learn


def fit_logistic_probe(learn, cache, Cs=PROBE_CS):
    """Fit `learn`'s head as a logistic probe on `cache` and append one `PhaseKind.PROBE` record to its history.

    >>> learn.fit_frozen(1, method="logistic")  # doctest: +SKIP
    """
    start = time.perf_counter()
    _, trainable = feature_head(learn)
    fit = fit_logistic_head(trainable, cache, Cs)
    return record_probe(learn, cache, fit, start)

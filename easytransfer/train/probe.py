"""Linear probe: an L2-regularised logistic regression on cached features, written into the model's head."""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from .features import feature_head
from .head_loop import HeadLoop
from .history import EpochRecord, Phase, PhaseKind

__all__ = ["PROBE_CS", "ProbeFit", "fit_logistic_head", "fit_logistic_probe"]

PROBE_CS = (0.001, 0.01, 0.1, 1.0, 10.0)  # inverse regularisation strengths tried; the best valid loss wins


def _head_linear(trainable: nn.Module) -> nn.Linear:
    if isinstance(trainable, nn.Linear):
        return trainable
    layers = list(trainable.children()) if isinstance(trainable, nn.Sequential) else []
    if layers and isinstance(layers[-1], nn.Linear) and all(isinstance(m, nn.Dropout) for m in layers[:-1]):
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
    if multilabel:
        coef = np.stack([est.coef_[0] for est in model.estimators_])
        intercept = np.array([est.intercept_[0] for est in model.estimators_])
        return coef, intercept
    coef, intercept = model.coef_, model.intercept_
    if n_out == 2 and coef.shape[0] == 1:  # sklearn's binary model: one logit; softmax of (-z/2, z/2) is the same
        return np.concatenate([-coef / 2, coef / 2]), np.concatenate([-intercept / 2, intercept / 2])
    full_coef, full_intercept = np.zeros((n_out, coef.shape[1])), np.full(n_out, -1e4)  # classes absent in training
    full_coef[model.classes_], full_intercept[model.classes_] = coef, intercept
    return full_coef, full_intercept


@dataclass(frozen=True)
class ProbeFit:
    """The logistic probe's choice: the regularisation `C` and the validation log-loss of every `C` tried."""

    C: float
    valid_losses: dict[float, float]


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
    mu, sd = X.mean(0), X.std(0) + 1e-6
    fits = [(C, *_fit((X - mu) / sd, y, (Xv - mu) / sd, yv, C, multilabel)) for C in Cs]
    best_C, best_model, _ = min(fits, key=lambda f: f[2])
    coef, intercept = _weights(best_model, multilabel, linear.out_features)
    coef = coef / sd
    intercept = intercept - (coef * mu).sum(1)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(coef, dtype=linear.weight.dtype, device=linear.weight.device))
        linear.bias.copy_(torch.as_tensor(intercept, dtype=linear.bias.dtype, device=linear.bias.device))
    return ProbeFit(best_C, {C: loss for C, _, loss in fits})


def fit_logistic_probe(learn, cache, Cs=PROBE_CS):
    """Fit `learn`'s head as a logistic probe on `cache` and append one `PhaseKind.PROBE` record to its history.

    The record's losses and metrics are measured by the learner's loss and metrics on the features (train loss
    on the plain training view); the chosen ``C`` is kept as an extra, not a metric.

    >>> learn.fit_frozen(1, method="logistic")  # doctest: +SKIP
    """
    start = time.perf_counter()
    _, trainable = feature_head(learn)
    fit = fit_logistic_head(trainable, cache, Cs)
    loop = HeadLoop(learn, cache.dataloaders(learn.dls, learn.device), trainable)
    valid = loop.validate()
    train = loop.validate(dl=loop.dls.train.new(shuffle=False, drop_last=False))
    metrics = {m.name: float(v) for m, v in zip(learn.metrics, valid[1:])}
    multilabel = cache.train_targets.ndim == 2
    single_label_accuracy = not multilabel and learn.metrics and learn.metrics[0].name == "accuracy"
    record = EpochRecord(Phase(PhaseKind.PROBE), len(learn.fit_history), float(train[0]), float(valid[0]), metrics,
                         train_accuracy=float(train[1]) if single_label_accuracy else np.nan,
                         seconds=time.perf_counter() - start, extras={"C": fit.C})
    learn.fit_history.append(record)
    shown = ", ".join(f"{k} {v:.4f}" for k, v in {"train_loss": record.train_loss, "valid_loss": record.valid_loss,
                                                   **metrics, "train_accuracy": record.train_accuracy}.items())
    print(f"logistic probe: C={fit.C} (valid loss {fit.valid_losses[fit.C]:.4f} of "
          f"{[round(v, 4) for v in fit.valid_losses.values()]}), valid {shown}")
    return learn

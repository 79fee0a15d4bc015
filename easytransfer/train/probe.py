"""Linear probe: an L2-regularised logistic regression on cached features, written into the model's head."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pandas as pd
import torch
from torch import nn

__all__ = ["PROBE_CS", "fit_logistic_probe"]

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


def fit_logistic_probe(learn, cache, Cs=PROBE_CS):
    """Fit the head as a logistic regression on the plain-view cached features; choose C on the validation set.

    Features are standardised for the fit and the scaling is folded into the head's weights. One history row
    (phase ``"logistic"``) records the losses and metrics.
    """
    from .features import feature_head

    start = time.perf_counter()
    _, trainable = feature_head(learn)
    linear = _head_linear(trainable)
    X, y = np.asarray(cache.train[0], dtype=np.float64), cache.train_targets.numpy()
    Xv, yv = np.asarray(cache.valid, dtype=np.float64), cache.valid_targets.numpy()
    multilabel = y.ndim == 2
    mu, sd = X.mean(0), X.std(0) + 1e-6
    fits = [(C, *_fit((X - mu) / sd, y, (Xv - mu) / sd, yv, C, multilabel)) for C in Cs]
    best_C, best_model, best_loss = min(fits, key=lambda f: f[2])
    coef, intercept = _weights(best_model, multilabel, linear.out_features)
    coef = coef / sd
    intercept = intercept - (coef * mu).sum(1)
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(coef, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(intercept, dtype=linear.bias.dtype))
    with learn._on_features(cache):
        valid = learn.validate()
        train = learn.validate(dl=learn.dls.train.new(shuffle=False, drop_last=False))
    row = {"phase": "logistic", "epoch": len(learn.history), "train_loss": float(train[0]),
           "valid_loss": float(valid[0])}
    for metric, value in zip(learn.metrics, valid[1:]):
        row[metric.name] = float(value)
    if not multilabel and learn.metrics:
        row["train_accuracy"] = float(train[1]) if learn.metrics[0].name == "accuracy" else np.nan
    row["C"] = best_C
    row["seconds"] = time.perf_counter() - start
    new = pd.DataFrame([row])
    learn.history = new if learn.history.empty else pd.concat([learn.history, new], ignore_index=True)
    print(f"logistic probe: C={best_C} (valid loss {best_loss:.4f} of {[round(f[2], 4) for f in fits]}), "
          f"valid {', '.join(f'{k} {v:.4f}' for k, v in row.items() if k not in ('phase', 'epoch', 'C', 'seconds'))}")
    return learn

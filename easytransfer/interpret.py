"""Interpretation of a trained classifier: predictions computed once, then every question answered from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from fastai.interpret import Interpretation as FastaiInterpretation
from matplotlib.figure import Figure

__all__ = ["Interpretation", "per_class_report"]


def per_class_report(targs: np.ndarray, preds: np.ndarray, classes) -> pd.DataFrame:
    """Precision, recall, F1, support and per-class accuracy, plus macro and weighted averages.

    Matches scikit-learn's ``classification_report`` (a class never predicted has precision 0).

    >>> per_class_report(np.array([0, 0, 1]), np.array([0, 1, 1]), ["a", "b"]).loc["a", "recall"]
    0.5
    """
    n = len(classes)
    cm = confusion_matrix(targs, preds, n)
    tp = np.diag(cm).astype(float)
    support = cm.sum(axis=1).astype(float)
    predicted = cm.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    total = cm.sum()
    # one-vs-rest accuracy of each class: (TP + TN) / all
    tn = total - support - predicted + tp
    class_acc = (tp + tn) / max(total, 1)
    report = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int), "accuracy": class_acc},
        index=pd.Index([str(c) for c in classes], name="class"),
    )
    weights = support / max(support.sum(), 1)
    overall = float(tp.sum() / max(total, 1))
    report.loc["macro avg"] = [precision.mean(), recall.mean(), f1.mean(), int(support.sum()), overall]
    report.loc["weighted avg"] = [
        (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum(), int(support.sum()), overall,
    ]
    report["support"] = report["support"].astype(int)
    return report


def confusion_matrix(targs: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = actual class, columns = predicted class."""
    return np.bincount(n_classes * np.asarray(targs) + np.asarray(preds), minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


class Interpretation(FastaiInterpretation):
    """Predictions of a learner on one DataLoader, computed once and kept as numpy arrays.

    Attributes:
        probs: (items, classes) probabilities.
        targs: true class index per item.
        preds: predicted class index per item.
        losses: loss per item.
        vocab: class names.

    >>> interp = learn.interpret()  # doctest: +SKIP
    >>> interp.per_class()  # doctest: +SKIP
    """

    def __init__(self, learn, dl, probs: torch.Tensor, targs: torch.Tensor, losses: torch.Tensor):
        super().__init__(learn, dl, losses)
        self.vocab = [str(v) for v in learn.dls.vocab]
        self.probs = probs.numpy()
        self.targs = targs.numpy().astype(int)
        self.preds = self.probs.argmax(axis=1)
        self.losses = losses.numpy()

    @classmethod
    def from_learner(cls, learn, dl=None) -> Interpretation:
        """Run inference once on `dl` (default: the validation set)."""
        dl = learn.dls.valid if dl is None else dl
        probs, targs, losses = learn.get_preds(dl=dl, with_loss=True)
        return cls(learn, dl, probs, targs, losses)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.targs).mean())

    def confusion_matrix(self) -> np.ndarray:
        """Counts, rows = actual class, columns = predicted class."""
        return confusion_matrix(self.targs, self.preds, len(self.vocab))

    def per_class(self) -> pd.DataFrame:
        """Precision, recall, F1, support and accuracy per class, with macro and weighted averages."""
        return per_class_report(self.targs, self.preds, self.vocab)

    def report(self) -> str:
        """Print and return the per-class table."""
        text = self.per_class().to_string(float_format=lambda v: f"{v:.4f}")
        print(text)
        return text

    def plot_confusion_matrix(self, normalize: bool = False, ax=None, cmap: str = "Blues") -> Figure:
        """The confusion matrix as a Figure: counts, or with ``normalize=True`` each row as recall."""
        cm = self.confusion_matrix().astype(float)
        if normalize:
            cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        if ax is None:
            n = len(self.vocab)
            fig = Figure(figsize=(max(4, 0.6 * n + 2), max(4, 0.6 * n + 2)))
            ax = fig.add_subplot()
        else:
            fig = ax.figure
        ax.imshow(cm, cmap=cmap)
        ticks = range(len(self.vocab))
        ax.set_xticks(ticks, self.vocab, rotation=45, ha="right")
        ax.set_yticks(ticks, self.vocab)
        ax.set_xlabel("Predicted")
        ax.set_ylabel("Actual")
        ax.set_title("Confusion matrix" + (" (row-normalised)" if normalize else ""))
        threshold = cm.max() / 2 if cm.size else 0
        for i in ticks:
            for j in ticks:
                text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                ax.text(j, i, text, ha="center", va="center", color="white" if cm[i, j] > threshold else "black")
        fig.tight_layout()
        return fig



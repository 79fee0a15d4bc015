"""Classification metrics on numpy arrays, shared by the interpretation, the CLI and the report."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["confusion_matrix", "multilabel_confusion_matrix", "per_class_report"]


def confusion_matrix(targs: np.ndarray, preds: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts, rows = actual class, columns = predicted class."""
    return np.bincount(n_classes * np.asarray(targs) + np.asarray(preds), minlength=n_classes**2).reshape(
        n_classes, n_classes
    )


def multilabel_confusion_matrix(targs: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """One 2x2 matrix per label, ``[[TN, FP], [FN, TP]]`` (scikit-learn's layout), shape (labels, 2, 2)."""
    t, p = np.asarray(targs).astype(bool), np.asarray(preds).astype(bool)
    tp, fp = (t & p).sum(0), (~t & p).sum(0)
    fn, tn = (t & ~p).sum(0), (~t & ~p).sum(0)
    return np.stack([np.stack([tn, fp], -1), np.stack([fn, tp], -1)], 1)


def _report_from_counts(tp, support, predicted, total, accuracy, classes, overall) -> pd.DataFrame:
    n = len(classes)
    tp, support, predicted = (np.asarray(a, dtype=float) for a in (tp, support, predicted))
    precision = np.divide(tp, predicted, out=np.zeros(n), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros(n), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n), where=denom > 0)
    report = pd.DataFrame(
        {"precision": precision, "recall": recall, "f1": f1, "support": support.astype(int), "accuracy": accuracy},
        index=pd.Index([str(c) for c in classes], name="class"),
    )
    weights = support / max(support.sum(), 1)
    report.loc["macro avg"] = [precision.mean(), recall.mean(), f1.mean(), int(support.sum()), overall]
    report.loc["weighted avg"] = [
        (precision * weights).sum(), (recall * weights).sum(), (f1 * weights).sum(), int(support.sum()), overall,
    ]
    report["support"] = report["support"].astype(int)
    return report


def per_class_report(targs: np.ndarray, preds: np.ndarray, classes) -> pd.DataFrame:
    """Precision, recall, F1, support and per-class accuracy, plus macro and weighted averages.

    Matches scikit-learn's ``classification_report`` (a class never predicted has precision 0). For
    multi-label data pass 0/1 indicator arrays of shape (items, labels): support is the number of positives,
    accuracy the share of items whose label is right, and the average rows' accuracy is the share of all
    item-label decisions that are right.

    >>> float(per_class_report(np.array([0, 0, 1]), np.array([0, 1, 1]), ["a", "b"]).loc["a", "recall"])
    0.5
    """
    targs, preds = np.asarray(targs), np.asarray(preds)
    if targs.ndim == 2:
        mcm = multilabel_confusion_matrix(targs, preds)
        tp, support, predicted = mcm[:, 1, 1], mcm[:, 1].sum(1), mcm[:, :, 1].sum(1)
        accuracy = (mcm[:, 0, 0] + mcm[:, 1, 1]) / max(len(targs), 1)
        return _report_from_counts(tp, support, predicted, len(targs), accuracy, classes, float(accuracy.mean()))
    n = len(classes)
    cm = confusion_matrix(targs, preds, n)
    tp, support, predicted, total = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0), cm.sum()
    tn = total - support - predicted + tp  # one-vs-rest accuracy of each class: (TP + TN) / all
    accuracy = (tp + tn) / max(total, 1)
    return _report_from_counts(tp, support, predicted, total, accuracy, classes, float(tp.sum() / max(total, 1)))

"""Classification and segmentation metrics on numpy arrays, shared by the interpretation, the CLI and the report."""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["confusion_matrix", "multilabel_confusion_matrix", "per_class_report", "pixel_confusion_matrix",
           "segmentation_scores"]


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


def pixel_confusion_matrix(targs: np.ndarray, preds: np.ndarray, n_classes: int,
                           ignore_index: int | None = None) -> np.ndarray:
    """Pixel counts of a segmentation, rows = true class, columns = predicted; `ignore_index` pixels left out.

    >>> pixel_confusion_matrix(np.array([[0, 1], [1, 255]]), np.array([[0, 1], [0, 1]]), 2, ignore_index=255).tolist()
    [[1, 0], [1, 1]]
    """
    t, p = np.asarray(targs).ravel(), np.asarray(preds).ravel()
    keep = (t >= 0) & (t < n_classes)
    if ignore_index is not None:
        keep &= t != ignore_index
    return confusion_matrix(t[keep].astype(np.int64), p[keep].astype(np.int64), n_classes)


def segmentation_scores(cm: np.ndarray, classes) -> dict:
    """mIoU, pixel accuracy, per-class IoU and mean Dice from a pixel confusion matrix.

    IoU of a class is ``TP / (TP + FP + FN)`` and Dice ``2 TP / (2 TP + FP + FN)``; a class absent from both the
    truth and the predictions has no IoU (``nan``) and is left out of the means.

    >>> scores = segmentation_scores(np.array([[1, 0], [1, 1]]), ["bg", "fg"])
    >>> scores["pixel_accuracy"], scores["per_class_iou"], scores["miou"]
    (0.6666666666666666, {'bg': 0.5, 'fg': 0.5}, 0.5)
    """
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    fp, fn = cm.sum(0) - tp, cm.sum(1) - tp
    union = tp + fp + fn
    iou = np.divide(tp, union, out=np.full(len(tp), np.nan), where=union > 0)
    dice = np.divide(2 * tp, tp + union, out=np.full(len(tp), np.nan), where=union > 0)
    total = cm.sum()
    return {
        "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
        "per_class_iou": {str(c): float(v) for c, v in zip(classes, iou)},
        "dice": float(np.nanmean(dice)) if np.isfinite(dice).any() else float("nan"),
        "per_class_dice": {str(c): float(v) for c, v in zip(classes, dice)},
    }

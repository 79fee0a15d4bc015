"""Split conformal prediction sets in numpy: conformity scores, the (n + 1)-corrected quantile, Mondrian thresholds,
and coverage on labelled data. No fastai here: the learner glue (`ConformalPredictor`) and the bundle use it.

What is promised: on data exchangeable with the calibration images (same source, same conditions, no drift), the
set contains the true label with probability at least ``1 - alpha``, *averaged over the draw of the calibration
set and of the test image*; with ``mondrian=True`` the same holds within each true class. What is not: coverage on
any one calibration draw or any one image, on images from another camera, line or season, or small sets when the
model is poor (a weak model gets large sets, not wrong coverage).

>>> import numpy as np
>>> calib = ConformalCalibration.fit(np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]]), np.array([0, 0, 1]))
>>> calib.thresholds(alpha=0.5).round(6).tolist()   # LAC: 1 - p(true class); the 2nd smallest of (0.1, 0.4, 0.2)
[0.2, 0.2]
>>> calib.prediction_sets(np.array([[0.85, 0.15], [0.5, 0.5]]), alpha=0.5).tolist()  # an empty set gets the top label
[[True, False], [True, False]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CONFORMAL_SCORES", "ConformalCalibration", "ConformalEvaluation", "conformal_quantile",
           "evaluate_sets", "label_scores", "true_label_scores"]

CONFORMAL_SCORES = ("lac", "aps")


def label_scores(probs: np.ndarray, score: str = "lac") -> np.ndarray:
    """Non-conformity of every candidate label (items x classes): higher means a less plausible label.

    ``"lac"`` (least ambiguous set-valued classifier, Sadinle et al. 2019): ``1 - p(label)``; the smallest sets
    on average. ``"aps"`` (adaptive prediction sets, Romano et al. 2020, without randomisation): the total
    probability of the labels ranked at or above this one; sets grow on hard images and shrink on easy ones.

    >>> label_scores(np.array([[0.6, 0.3, 0.1]]), "aps").round(2).tolist()
    [[0.6, 0.9, 1.0]]
    """
    probs = np.asarray(probs, dtype=float)
    if score == "lac":
        return 1.0 - probs
    if score == "aps":
        order = np.argsort(-probs, axis=1, kind="stable")
        ranked = np.take_along_axis(probs, order, axis=1).cumsum(axis=1)
        out = np.empty_like(probs)
        np.put_along_axis(out, order, ranked, axis=1)
        return out
    raise ValueError(f"score must be one of {CONFORMAL_SCORES}, got {score!r}")


def true_label_scores(probs: np.ndarray, targets: np.ndarray, score: str = "lac") -> np.ndarray:
    """The non-conformity score of each item's true label."""
    targets = np.asarray(targets, dtype=int)
    return label_scores(probs, score)[np.arange(len(targets)), targets]


def conformal_quantile(scores: np.ndarray, alpha: float) -> float:
    """The ``ceil((n + 1)(1 - alpha))``-th smallest of `n` calibration scores: the finite-sample threshold.

    A test score at or below it is in the set. When ``(n + 1)(1 - alpha) > n`` (too few calibration images for
    this alpha) no finite threshold is valid and every label is kept (``inf``).

    >>> conformal_quantile(np.arange(1, 10) / 10, alpha=0.1)   # n = 9: the 9th smallest
    0.9
    >>> conformal_quantile(np.arange(1, 10) / 10, alpha=0.05)  # n = 9 is too few for 95 %
    inf
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1) (0.1: the set holds the true label 90 % of the time), got {alpha}")
    scores = np.sort(np.asarray(scores, dtype=float))
    n = len(scores)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)  # the tolerance keeps (n+1)(1-alpha) = 9.000000001 at 9
    return math.inf if k > n else float(scores[k - 1])


@dataclass(frozen=True)
class ConformalCalibration:
    """The calibration scores behind conformal sets: thresholds follow for any `alpha`; persisted in the bundle.

    Attributes:
        score: ``"lac"`` or ``"aps"`` (see `label_scores`).
        scores: the true-label score of each calibration image.
        labels: the true class index of each calibration image.
        n_classes: number of classes.
        mondrian: one threshold per class, from that class's calibration images only (coverage per class),
            instead of one global threshold.
        alpha: the default error rate.
        allow_empty: keep empty sets (``False``: an empty set becomes the top label).
    """

    score: str
    scores: tuple[float, ...]
    labels: tuple[int, ...]
    n_classes: int
    mondrian: bool = False
    alpha: float = 0.1
    allow_empty: bool = False

    @classmethod
    def fit(cls, probs: np.ndarray, targets: np.ndarray, *, score: str = "lac", mondrian: bool = False,
            alpha: float = 0.1, allow_empty: bool = False) -> ConformalCalibration:
        """Scores of the true labels of labelled calibration probabilities (items x classes)."""
        probs, targets = np.asarray(probs, dtype=float), np.asarray(targets, dtype=int)
        if probs.ndim != 2 or targets.ndim != 1:
            raise ValueError("Conformal sets need single-label probabilities (items x classes) and one class index "
                             "per item; for multi-label data give each label its own threshold instead.")
        conformal_quantile(np.zeros(1), alpha)  # checks alpha
        values = true_label_scores(probs, targets, score)
        return cls(score, tuple(float(v) for v in values), tuple(int(t) for t in targets), int(probs.shape[1]),
                   mondrian, float(alpha), allow_empty)

    @property
    def n_images(self) -> int:
        return len(self.scores)

    def thresholds(self, alpha: float | None = None) -> np.ndarray:
        """One threshold per class (the same for all unless `mondrian`); ``inf``: that class is always kept."""
        alpha = self.alpha if alpha is None else alpha
        scores, labels = np.asarray(self.scores), np.asarray(self.labels, dtype=int)
        if not self.mondrian:
            return np.full(self.n_classes, conformal_quantile(scores, alpha))
        return np.array([conformal_quantile(scores[labels == c], alpha) for c in range(self.n_classes)])

    def prediction_sets(self, probs: np.ndarray, alpha: float | None = None) -> np.ndarray:
        """Boolean membership (items x classes): label ``c`` is in the set when its score is at most threshold
        ``c``; unless `allow_empty`, an empty set gets the top label."""
        probs = np.asarray(probs, dtype=float)
        sets = label_scores(probs, self.score) <= self.thresholds(alpha)[None, :]
        if not self.allow_empty:
            empty = ~sets.any(axis=1)
            sets[empty, probs[empty].argmax(axis=1)] = True
        return sets

    def to_dict(self) -> dict:
        return {"score": self.score, "mondrian": self.mondrian, "alpha": self.alpha, "allow_empty": self.allow_empty,
                "n_classes": self.n_classes, "scores": list(self.scores), "labels": list(self.labels)}

    @classmethod
    def from_dict(cls, data: dict) -> ConformalCalibration:
        return cls(str(data["score"]), tuple(float(v) for v in data["scores"]), tuple(int(v) for v in data["labels"]),
                   int(data["n_classes"]), bool(data.get("mondrian", False)), float(data.get("alpha", 0.1)),
                   bool(data.get("allow_empty", False)))


@dataclass(frozen=True)
class ConformalEvaluation:
    """How conformal sets did on labelled images.

    Attributes:
        alpha: the error rate asked for (target coverage ``1 - alpha``).
        coverage: share of images whose set holds the true label.
        per_class_coverage: class -> that share among the images of the class.
        avg_set_size: mean number of labels per set.
        singleton_share: share of sets with exactly one label (the images a person need not look at).
        empty_share: share of empty sets (only with ``allow_empty=True``).
        n_images: how many images.
    """

    alpha: float
    coverage: float
    per_class_coverage: dict[str, float]
    avg_set_size: float
    singleton_share: float
    empty_share: float
    n_images: int


def evaluate_sets(sets: np.ndarray, targets: np.ndarray, vocab, alpha: float) -> ConformalEvaluation:
    """Coverage, per-class coverage and set sizes of boolean `sets` (items x classes) against `targets`.

    >>> ev = evaluate_sets(np.array([[True, True], [False, True]]), np.array([0, 0]), ["a", "b"], alpha=0.1)
    >>> ev.coverage, ev.avg_set_size, ev.singleton_share
    (0.5, 1.5, 0.5)
    """
    sets, targets = np.asarray(sets, dtype=bool), np.asarray(targets, dtype=int)
    hit = sets[np.arange(len(targets)), targets]
    sizes = sets.sum(axis=1)
    per_class = {str(name): float(hit[targets == c].mean()) for c, name in enumerate(vocab) if (targets == c).any()}
    n = len(targets)
    return ConformalEvaluation(float(alpha), float(hit.mean()) if n else math.nan, per_class,
                               float(sizes.mean()) if n else math.nan, float((sizes == 1).mean()) if n else math.nan,
                               float((sizes == 0).mean()) if n else math.nan, n)

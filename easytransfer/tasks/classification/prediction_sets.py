"""`ConformalPredictor`: prediction sets for images, from a `ConformalCalibration` and a model's probabilities.

The model is reached through two functions (probabilities of images, and the `Interpretation` of labelled data),
so the same class serves a learner (``learn.conformal(...)``) and an exported bundle (`Predictor.predict_set`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ...evaluate.conformal import ConformalCalibration, ConformalEvaluation, evaluate_sets
from .interpretation import Interpretation

__all__ = ["ConformalPredictor", "PredictionSet", "set_rows", "sets_table"]

SET_SEPARATOR = " "  # the `set` column joins labels as multi-label predictions do


@dataclass(frozen=True)
class PredictionSet:
    """The labels a conformal predictor keeps for one image, most probable first, with their probabilities.

    >>> s = PredictionSet(["stain", "hole"], [0.6, 0.3]); s.size, s.is_certain, s.top
    (2, False, 'stain')
    """

    labels: list[str]
    probabilities: list[float]

    @property
    def size(self) -> int:
        return len(self.labels)

    @property
    def is_certain(self) -> bool:
        """One label only: no need to send the image to a person."""
        return len(self.labels) == 1

    @property
    def top(self) -> str | None:
        return self.labels[0] if self.labels else None


def set_rows(probs: np.ndarray, members: np.ndarray, vocab: Sequence[str]) -> list[PredictionSet]:
    """One `PredictionSet` per row of boolean `members` (items x classes), labels ordered by probability.

    >>> set_rows(np.array([[0.2, 0.5, 0.3]]), np.array([[True, True, False]]), ["a", "b", "c"])
    [PredictionSet(labels=['b', 'a'], probabilities=[0.5, 0.2])]
    """
    out = []
    for p, m in zip(np.asarray(probs, dtype=float), np.asarray(members, dtype=bool)):
        order = [i for i in np.argsort(-p, kind="stable") if m[i]]
        out.append(PredictionSet([str(vocab[i]) for i in order], [float(p[i]) for i in order]))
    return out


class ConformalPredictor:
    """Sets of labels that hold the true one with probability at least ``1 - alpha`` (see `evaluate.conformal`).

    Made by ``learn.conformal(calib, alpha=0.1)``; an exported bundle carries its calibration scores, so
    ``load_model(path).predict_set(image)`` gives the same sets.

    Attributes:
        calibration: the `ConformalCalibration` (scores, score type, Mondrian or not, default alpha).
        vocab: class names.

    >>> cp = learn.conformal("data/calib", alpha=0.1)  # doctest: +SKIP
    >>> cp.predict("photo.jpg")  # doctest: +SKIP
    PredictionSet(labels=['stain'], probabilities=[0.93])
    >>> cp.evaluate("data/test").coverage  # doctest: +SKIP
    0.91
    """

    def __init__(self, calibration: ConformalCalibration, vocab: Sequence[str],
                 probabilities: Callable[[list], np.ndarray], interpret: Callable, folder_probabilities: Callable):
        self.calibration = calibration
        self.vocab = [str(v) for v in vocab]
        self._probabilities = probabilities
        self._interpret = interpret
        self._folder_probabilities = folder_probabilities

    @property
    def alpha(self) -> float:
        return self.calibration.alpha

    def thresholds(self, alpha: float | None = None) -> dict[str, float]:
        """Class -> the largest score kept in a set (one value for all classes unless Mondrian)."""
        return dict(zip(self.vocab, (float(t) for t in self.calibration.thresholds(alpha))))

    def predict(self, image, alpha: float | None = None) -> PredictionSet:
        """The set for one image (a path, a PIL image or an HxWx3 array)."""
        return self.predict_batch([image], alpha)[0]

    def predict_batch(self, images: Sequence, alpha: float | None = None) -> list[PredictionSet]:
        """One set per image."""
        probs = np.asarray(self._probabilities(list(images)), dtype=float)
        return set_rows(probs, self.calibration.prediction_sets(probs, alpha), self.vocab)

    def predict_folder(self, path: str | os.PathLike, alpha: float | None = None,
                       csv: str | os.PathLike | None = None) -> pd.DataFrame:
        """Sets for every image under `path`: ``path``, ``label`` (the top one), ``probability``, ``set`` (labels
        joined by spaces, most probable first), ``set_size`` and one ``p_<class>`` column per class."""
        paths, probs = self._folder_probabilities(path)
        return sets_table(paths, np.asarray(probs, dtype=float), self.calibration, self.vocab, alpha, csv)

    def evaluate(self, test, alpha: float | None = None) -> ConformalEvaluation:
        """Coverage, per-class coverage, average set size and share of single-label sets on labelled images.

        `test` is what ``learn.interpret`` takes (a folder of class sub-folders, a table, a list of files, a
        DataLoader), or an `Interpretation` of the same model already computed (no new inference: handy to
        compare several alphas).
        """
        interp = test if isinstance(test, Interpretation) else self._interpret(test)
        if interp.multilabel:
            raise ValueError("Conformal sets are for single-label data; this data is multi-label.")
        alpha = self.alpha if alpha is None else alpha
        return evaluate_sets(self.calibration.prediction_sets(interp.probs, alpha), interp.targs, self.vocab, alpha)


def sets_table(paths: Sequence, probs: np.ndarray, calibration: ConformalCalibration, vocab: Sequence[str],
               alpha: float | None = None, csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """The table `ConformalPredictor.predict_folder` returns, optionally written to `csv`."""
    sets = set_rows(probs, calibration.prediction_sets(probs, alpha), vocab) if len(probs) else []
    rows = [[str(p), s.top, float(pr.max()), SET_SEPARATOR.join(s.labels), s.size] + [float(v) for v in pr]
            for p, s, pr in zip(paths, sets, probs)]
    table = pd.DataFrame(rows, columns=["path", "label", "probability", "set", "set_size"] + [f"p_{c}" for c in vocab])
    if csv is not None:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
    return table

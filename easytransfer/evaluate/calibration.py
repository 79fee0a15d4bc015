"""Probability calibration in numpy: expected calibration error, reliability bins, temperature and isotonic fits.

No fastai here: the learner, the predictor and the bundle all use the `Calibration` record this module fits.

>>> import numpy as np
>>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
>>> round(expected_calibration_error(probs, np.array([0, 1, 0, 1])), 4)
0.4
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["CALIBRATION_METHODS", "ECE_BINS", "Calibration", "ReliabilityBins", "expected_calibration_error",
           "fit_calibration", "fit_isotonic", "fit_temperature", "reliability_bins", "softmax"]

ECE_BINS = 15  # Guo et al. 2017 ("On Calibration of Modern Neural Networks"): 15 equal-width confidence bins
CALIBRATION_METHODS = ("temperature", "isotonic")
TEMPERATURE_BOUNDS = (0.05, 20.0)  # the search range of the temperature; beyond it the fit has run away


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of the top-class confidence: what a reliability diagram draws.

    Attributes:
        edges: ``n_bins + 1`` bin edges from 0 to 1.
        confidence: mean top-class probability of the items in each bin (NaN for an empty bin).
        accuracy: share of those items whose top class is right (NaN for an empty bin).
        counts: items per bin.
    """

    edges: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    counts: np.ndarray

    @property
    def ece(self) -> float:
        """Expected calibration error: sum over bins of (share of items) x |accuracy - confidence|."""
        full = self.counts > 0
        if not full.any():
            return 0.0
        gaps = np.abs(self.accuracy[full] - self.confidence[full])
        return float((self.counts[full] / self.counts.sum() * gaps).sum())


def reliability_bins(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> ReliabilityBins:
    """Bin the items by top-class probability (bins ``(lo, hi]``, the first one also holds 0).

    >>> bins = reliability_bins(np.array([[0.9, 0.1], [0.3, 0.7]]), np.array([0, 0]), n_bins=2)
    >>> bins.counts.tolist(), bins.accuracy.tolist()
    ([0, 2], [nan, 0.5])
    """
    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == targets).astype(float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, weights=confidence, minlength=n_bins) / counts
        mean_acc = np.bincount(which, weights=correct, minlength=n_bins) / counts
    return ReliabilityBins(edges, mean_conf, mean_acc, counts)


def expected_calibration_error(probs: np.ndarray, targets: np.ndarray, n_bins: int = ECE_BINS) -> float:
    """ECE of single-label probabilities: the item-weighted mean gap between accuracy and top-class confidence
    over `n_bins` equal-width confidence bins (15 by default, as Guo et al. 2017). 0 is perfectly calibrated;
    an over-confident model has confidence above accuracy."""
    return reliability_bins(probs, targets, n_bins).ece


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = np.asarray(logits, dtype=float)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """A fitted map from a classifier's logits to calibrated probabilities; persisted in the model bundle.

    Attributes:
        method: ``"temperature"`` (softmax of logits / `temperature`: the ranking of classes never changes) or
            ``"isotonic"`` (one increasing step function per class on its softmax probability, one-vs-rest, then
            each row renormalised to sum to 1, as scikit-learn's ``CalibratedClassifierCV``).
        temperature: the fitted temperature (> 1 softens an over-confident model); 1.0 for isotonic.
        isotonic: per class, the ``(x, y)`` knots of its step function (linear between knots, clipped outside).
        n_images: how many labelled images it was fitted on.

    >>> cal = Calibration("temperature", temperature=2.0, n_images=10)
    >>> cal.probabilities(np.array([[2.0, 0.0]])).round(4).tolist()
    [[0.7311, 0.2689]]
    >>> Calibration.from_dict(cal.to_dict()) == cal
    True
    """

    method: str
    temperature: float = 1.0
    isotonic: tuple[tuple[tuple[float, ...], tuple[float, ...]], ...] = ()
    n_images: int = 0

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated probabilities (items x classes) for raw logits."""
        if self.method == "temperature":
            return softmax(np.asarray(logits, dtype=float) / self.temperature)
        probs = softmax(logits)
        out = np.stack([np.interp(probs[:, c], x, y) for c, (x, y) in enumerate(self.isotonic)], axis=1)
        total = out.sum(axis=1, keepdims=True)
        # a row the step functions send to all zeros keeps its softmax probabilities rather than dividing by 0
        return np.where(total > 0, out / np.where(total > 0, total, 1), probs)

    def to_dict(self) -> dict:
        return {"method": self.method, "temperature": self.temperature, "n_images": self.n_images,
                "isotonic": [[list(x), list(y)] for x, y in self.isotonic]}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        return cls(str(data["method"]), float(data.get("temperature", 1.0)),
                   tuple((tuple(float(v) for v in x), tuple(float(v) for v in y)) for x, y in data.get("isotonic", ())),
                   int(data.get("n_images", 0)))


def _nll(logits: np.ndarray, targets: np.ndarray, temperature: float) -> float:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    log_probs = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(targets)), targets].mean())


def fit_temperature(logits: np.ndarray, targets: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of `targets` (Guo et al. 2017).

    A bounded 1-D search over log-temperature (scipy's Brent method): NLL is smooth in it and one parameter
    needs no gradient machinery.

    >>> rng = np.random.default_rng(0); targets = rng.integers(0, 3, 2000)
    >>> logits = rng.normal(size=(2000, 3)); logits[np.arange(2000), targets] += 1.0
    >>> abs(fit_temperature(3 * logits, targets) - 3) < 0.2  # logits made 3x too sharp: the fit undoes it
    True
    """
    from scipy.optimize import minimize_scalar

    logits, targets = np.asarray(logits, dtype=float), np.asarray(targets, dtype=int)
    lo, hi = (math.log(b) for b in TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda t: _nll(logits, targets, math.exp(t)), bounds=(lo, hi), method="bounded",
                             options={"xatol": 1e-5})
    return float(math.exp(result.x))


def fit_isotonic(probs: np.ndarray, targets: np.ndarray) -> tuple:
    """Per class, the knots of an increasing fit of "is this class" on its probability (one-vs-rest)."""
    from sklearn.isotonic import IsotonicRegression

    probs, targets = np.asarray(probs, dtype=float), np.asarray(targets, dtype=int)
    knots = []
    for c in range(probs.shape[1]):
        fit = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(probs[:, c], targets == c)
        knots.append((tuple(float(v) for v in fit.X_thresholds_), tuple(float(v) for v in fit.y_thresholds_)))
    return tuple(knots)


def fit_calibration(logits: np.ndarray, targets: np.ndarray, method: str = "temperature") -> Calibration:
    """Fit a `Calibration` of `method` (``"temperature"`` or ``"isotonic"``) on labelled logits.

    >>> rng = np.random.default_rng(0); targets = rng.integers(0, 3, 500)
    >>> logits = rng.normal(size=(500, 3)); logits[np.arange(500), targets] += 1.0
    >>> fit_calibration(logits, targets, "isotonic").method
    'isotonic'
    """
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"method must be one of {CALIBRATION_METHODS}, got {method!r}")
    logits, targets = np.asarray(logits, dtype=float), np.asarray(targets, dtype=int)
    if len(targets) < 2:
        raise ValueError(f"Calibration needs labelled images; got {len(targets)}. Give a calibration set of at least "
                         "a few dozen images.")
    if method == "temperature":
        return Calibration("temperature", temperature=fit_temperature(logits, targets), n_images=len(targets))
    return Calibration("isotonic", isotonic=fit_isotonic(softmax(logits), targets), n_images=len(targets))

"""The frozen stage chooses the input size and pooling that suit the data, from validation, before the head trains.

Candidates (`candidates_for`): the model's own input size and twice it, each with average and max pooling (what
the user fixed, with ``size=`` or ``pool=``, is not varied). For every size, one pass of the frozen body over the
training and validation images gives the pooled features of every pooling type at once
(`compute_pooled_caches`); a logistic probe is fitted on each candidate's training features (seconds), and its
per-image validation log-loss is kept.

The rule (`pick_candidate`): keep the model's own settings (the baseline) unless a candidate's mean validation
log-loss is lower by more than `MARGIN_SE` standard errors of the paired difference (a bootstrap over the
validation images); among the candidates that clear the margin the lowest log-loss wins. On 50-250 validation
images one standard error let max pooling win on flowers for no test gain; two kept the baseline on flowers and
chose 448 px on every textile seed (benchmarks/recipe_choice.py).

A larger input than the model's is chosen for details that are small in the image (defects); fine-tuning then
trains without random crops, which can cut the detail out of an image labelled with it (``aug="none"``, unless
the data was given an `aug`), and with the gentler rate decay `LARGE_INPUT_DECAY` (issue 13: 448 px, no crops,
max pooling and decay 0.3 found 81 % of the textile set's local defects where the defaults found 1 %).

Large data: the choice sees at most `MAX_TRAIN` training and `MAX_VALID` validation images (a stratified sample),
so it costs a bounded number of image passes whatever the size of the data.

>>> small, large = Candidate(224, "avg"), Candidate(448, "avg")
>>> pick_candidate({small: np.array([0.9, 0.8, 1.0, 0.7]), large: np.array([0.1, 0.2, 0.1, 0.2])}, small)[0]
Candidate(size=448, pool='avg')
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ...log import get_logger
from ...models.pooling import SWAPPABLE_POOLS, global_pool_type, set_global_pool
from ...train.features import FeatureCache, compute_pooled_caches, feature_head
from ...train.rates import DEFAULT_DECAY
from .probe import fit_logistic_head

__all__ = ["LARGE_INPUT_AUG", "LARGE_INPUT_DECAY", "MARGIN_SE", "MAX_TRAIN", "MAX_VALID", "Candidate",
           "CandidateScore", "RecipeChoice", "apply_choice", "candidates_for", "choice_obstacle", "choose_settings",
           "gains_in_se", "pick_candidate"]

logger = get_logger(__name__)

MARGIN_SE = 2.0  # a candidate replaces the baseline when its validation log-loss is lower by more than this many SE
SIZE_FACTOR = 2  # the larger size tried: about twice the model's
MAX_TRAIN = 1000  # training images the choice sees at most (a stratified sample above)
MAX_VALID = 500  # validation images the choice sees at most
LARGE_INPUT_AUG = "none"  # fine-tuning at a larger input: no random crops (they can cut a small defect out)
LARGE_INPUT_DECAY = 0.3  # and rates decaying more gently to the stem (issue 13: 0.94 against 0.84 with 0.1)
BOOTSTRAP_DRAWS = 2000


@dataclass(frozen=True, order=True)
class Candidate:
    """One setting the frozen stage can choose: the input `size` (px) and how the feature map is pooled."""

    size: int
    pool: str

    def __str__(self) -> str:
        return f"{self.size} px / {self.pool} pooling"


@dataclass(frozen=True)
class CandidateScore:
    """What a candidate's logistic probe measured on the validation images the choice saw.

    Attributes:
        candidate: the setting.
        valid_loss: mean validation log-loss of the probe.
        valid_accuracy: validation accuracy (single-label; for multi-label data the share of labels right).
        gain_se: how many standard errors of the paired difference its log-loss is below the baseline's (0 for
            the baseline; negative: worse).
    """

    candidate: Candidate
    valid_loss: float
    valid_accuracy: float
    gain_se: float

    def to_dict(self) -> dict:
        return {"size": self.candidate.size, "pool": self.candidate.pool, "valid_loss": self.valid_loss,
                "valid_accuracy": self.valid_accuracy, "gain_se": self.gain_se}

    @classmethod
    def from_dict(cls, data: Mapping) -> CandidateScore:
        return cls(Candidate(int(data["size"]), str(data["pool"])), float(data["valid_loss"]),
                   float(data["valid_accuracy"]), float(data["gain_se"]))


@dataclass(frozen=True)
class RecipeChoice:
    """What the frozen stage chose, and why: ``learn.choice``, recorded in the exported bundle.

    Attributes:
        size, pool: the chosen input size and pooling (the model and data run at them from then on).
        aug: the augmentation preset fine-tuning uses.
        decay: the rate decay `fit_discriminative` and `fine_tune` use when not given one.
        baseline: the model's own settings, kept unless a candidate beats them by the margin.
        scores: every candidate's validation figures.
        margin_se: the margin, in standard errors.
        n_train, n_valid: the images the choice saw.
        seconds: what choosing cost (feature passes and probes).

    >>> choice = RecipeChoice(448, "max", "none", 0.3, Candidate(224, "avg"), (), 2.0, 100, 100, 9.5)
    >>> RecipeChoice.from_dict(choice.to_dict()) == choice
    True
    """

    size: int
    pool: str
    aug: str
    decay: float
    baseline: Candidate
    scores: tuple[CandidateScore, ...]
    margin_se: float
    n_train: int
    n_valid: int
    seconds: float

    @property
    def chosen(self) -> Candidate:
        return Candidate(self.size, self.pool)

    def score(self, candidate: Candidate) -> CandidateScore | None:
        return next((s for s in self.scores if s.candidate == candidate), None)

    def __str__(self) -> str:
        figures = "; ".join(f"{s.candidate.size}/{s.candidate.pool} {s.valid_loss:.3f}"
                            + (f" ({s.gain_se:+.1f} SE)" if s.candidate != self.baseline else " (baseline)")
                            for s in self.scores)
        chosen, base = self.score(self.chosen), self.score(self.baseline)
        if self.chosen == self.baseline:
            why = f"kept the model's {self.baseline}: no candidate beat it by {self.margin_se:g} SE"
        else:
            why = (f"chose {self.chosen}: validation log-loss {chosen.valid_loss:.3f} against "
                   f"{base.valid_loss:.3f} at {self.baseline} ({chosen.gain_se:.1f} SE > {self.margin_se:g})")
        return (f"fit_frozen {why}; fine-tuning with aug={self.aug!r}, decay={self.decay:g}. Validation log-loss "
                f"of each candidate ({self.n_train} training, {self.n_valid} validation images, {self.seconds:.0f} "
                f"s): {figures}.")

    def to_dict(self) -> dict:
        return {"size": self.size, "pool": self.pool, "aug": self.aug, "decay": self.decay,
                "baseline": {"size": self.baseline.size, "pool": self.baseline.pool},
                "scores": [s.to_dict() for s in self.scores], "margin_se": self.margin_se,
                "n_train": self.n_train, "n_valid": self.n_valid, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: Mapping) -> RecipeChoice:
        base = data["baseline"]
        return cls(int(data["size"]), str(data["pool"]), str(data["aug"]), float(data["decay"]),
                   Candidate(int(base["size"]), str(base["pool"])),
                   tuple(CandidateScore.from_dict(s) for s in data.get("scores", ())), float(data["margin_se"]),
                   int(data["n_train"]), int(data["n_valid"]), float(data["seconds"]))


# ---------------------------------------------------------------------------------------------------- the rule


def gains_in_se(losses: Mapping[Candidate, np.ndarray], baseline: Candidate, *, draws: int = BOOTSTRAP_DRAWS,
                seed: int = 0) -> dict[Candidate, float]:
    """How many standard errors each candidate's mean per-image loss is below the baseline's.

    The standard error is that of the mean paired difference, from `draws` bootstrap resamples of the images
    (the same resamples for every candidate).
    """
    base = np.asarray(losses[baseline], dtype=float)
    rng = np.random.default_rng(seed)
    resamples = rng.integers(0, len(base), size=(draws, len(base)))
    out = {}
    for candidate, values in losses.items():
        diff = base - np.asarray(values, dtype=float)
        se = float(diff[resamples].mean(axis=1).std())
        gain = float(diff.mean())
        out[candidate] = gain / se if se > 0 else (np.inf if gain > 0 else 0.0)
    out[baseline] = 0.0
    return out


def pick_candidate(losses: Mapping[Candidate, np.ndarray], baseline: Candidate, margin_se: float = MARGIN_SE,
                   ) -> tuple[Candidate, dict[Candidate, float]]:
    """``(winner, gains in SE)``: the baseline unless candidates beat it by more than `margin_se` standard errors;
    then the one of those with the lowest mean loss.

    >>> a, b = Candidate(224, "avg"), Candidate(224, "max")
    >>> pick_candidate({a: np.array([0.5, 0.6, 0.4]), b: np.array([0.45, 0.7, 0.3])}, a)[0]  # within the noise
    Candidate(size=224, pool='avg')
    """
    gains = gains_in_se(losses, baseline)
    clear = [c for c in losses if c != baseline and gains[c] > margin_se]
    winner = min(clear, key=lambda c: float(np.mean(losses[c]))) if clear else baseline
    return winner, gains


# ------------------------------------------------------------------------------------------------ the candidates


def choice_obstacle(learn) -> str | None:
    """Why `learn` has nothing to choose (``None`` when it has)."""
    free = learn.free_settings
    if "size" not in free and "pool" not in free:
        return "the input size and the pooling were both given"
    if global_pool_type(learn.model) not in SWAPPABLE_POOLS:
        return f"{learn.spec.name} has no global average or max pooling layer to vary (not a CNN)"
    if learn.world is not None:
        return "a distributed run keeps the model's own settings"
    return learn._cache_obstacle()


def candidates_for(learn) -> tuple[Candidate, list[Candidate]]:
    """``(baseline, candidates)``: the model's own size and pooling, and every setting to try (baseline first)."""
    size, pool = int(learn.dls.recipe.size), global_pool_type(learn.model)
    sizes = [size, _larger_size(size)] if "size" in learn.free_settings else [size]
    pools = [pool] + [p for p in SWAPPABLE_POOLS if p != pool] if "pool" in learn.free_settings else [pool]
    baseline = Candidate(size, pool)
    return baseline, [Candidate(s, p) for s in sizes for p in pools]


def _larger_size(size: int) -> int:
    """About twice `size`, a multiple of 32 (every CNN's total stride)."""
    return int(round(size * SIZE_FACTOR / 32)) * 32


def _sample(items: pd.DataFrame, max_train: int, max_valid: int, seed: int = 0) -> pd.DataFrame:
    """At most `max_train` training and `max_valid` validation rows, each class keeping its share."""
    rng = np.random.default_rng(seed)
    parts = []
    for is_valid, limit in ((False, max_train), (True, max_valid)):
        rows = items[items["is_valid"] == is_valid]
        if len(rows) > limit:  # every class keeps at least one image, so the classes stay the same
            share = limit / len(rows)
            rows = pd.concat(group.iloc[rng.permutation(len(group))[:max(1, round(share * len(group)))]]
                             for _, group in rows.groupby("label"))
        parts.append(rows)
    return pd.concat(parts).reset_index(drop=True)


def _probe_losses(cache: FeatureCache, n_out: int) -> tuple[np.ndarray, float]:
    """Per-image validation log-loss and the accuracy of a logistic probe fitted on `cache`'s training features."""
    head = nn.Linear(cache.valid.shape[1], n_out)
    fit_logistic_head(head, cache)
    with torch.no_grad():
        logits = head(torch.as_tensor(np.asarray(cache.valid), dtype=torch.float32))
    targets = cache.valid_targets
    if targets.ndim == 2:  # multi-label: the mean binary log-loss of each image's labels
        losses = F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").mean(1)
        accuracy = float(((logits > 0) == (targets > 0.5)).float().mean())
    else:
        losses = F.cross_entropy(logits, targets.long(), reduction="none")
        accuracy = float((logits.argmax(1) == targets).float().mean())
    return losses.numpy(), accuracy


# ---------------------------------------------------------------------------------------------------- choosing


def choose_settings(learn, *, margin_se: float = MARGIN_SE, autocast_dtype: torch.dtype | None = None,
                    ) -> tuple[RecipeChoice, FeatureCache | None]:
    """Measure every candidate on `learn`'s data and choose one (`apply_choice` puts the model and data at it).

    Returns:
        the `RecipeChoice`, and the chosen candidate's features when they cover the whole data (the frozen
        stage's cache, no second pass), else ``None``.
    """
    start = time.perf_counter()
    module, _ = feature_head(learn)
    baseline, candidates = candidates_for(learn)
    items = learn.dls.recipe.items
    sample = _sample(items, MAX_TRAIN, MAX_VALID)
    whole = len(sample) == len(items)
    pools = tuple(dict.fromkeys(c.pool for c in candidates))
    losses, accuracies, caches = {}, {}, {}
    for size in dict.fromkeys(c.size for c in candidates):
        dls = learn.dls.with_settings(size=size, items=None if whole else sample)
        pooled = compute_pooled_caches(learn, module, dls, pools, autocast_dtype=autocast_dtype)
        for pool, cache in pooled.items():
            candidate = Candidate(size, pool)
            losses[candidate], accuracies[candidate] = _probe_losses(cache, len(learn.dls.vocab))
            caches[candidate] = cache
    winner, gains = pick_candidate(losses, baseline, margin_se)
    larger = winner.size > baseline.size
    aug = learn.dls.recipe.aug if "aug" not in learn.free_settings else (LARGE_INPUT_AUG if larger else
                                                                         learn.dls.recipe.aug)
    scores = tuple(CandidateScore(c, float(np.mean(losses[c])), accuracies[c], float(gains[c])) for c in candidates)
    n_valid = int(sample["is_valid"].sum())
    choice = RecipeChoice(winner.size, winner.pool, aug, LARGE_INPUT_DECAY if larger else DEFAULT_DECAY, baseline,
                          scores, margin_se, len(sample) - n_valid, n_valid, time.perf_counter() - start)
    return choice, caches[winner] if whole else None


def apply_choice(learn, choice: RecipeChoice) -> None:
    """Put `learn`'s data at the chosen size and augmentation and its model at the chosen pooling."""
    recipe = learn.dls.recipe
    if choice.size != recipe.size or choice.aug != recipe.aug:
        learn.dls = learn.dls.with_settings(size=choice.size, aug=choice.aug)
    if choice.pool != global_pool_type(learn.model):
        set_global_pool(learn.model, choice.pool)

"""The frozen stage chooses the input size and pooling that suit the data, from validation, before the head trains.

Candidates (`candidates_for`): the model's own input size and twice it, each with average and max pooling (what
the user fixed with ``size=`` or ``pool=`` is not varied). For every size, one pass of the frozen body over the
training and validation images gives the pooled features of every pooling at once (`compute_pooled_caches`).
Each candidate is scored by a logistic probe (its ``C`` chosen on the data's split, as
``fit_frozen(method="logistic")``), cross-validated over the training and validation images together: 5 folds,
3 fold draws, so every image gets a log-loss from probes that never saw it (`out_of_fold_losses`). Scoring every
image, not only the validation split, is what makes the choice reliable on small sets: on the textile protocol
the validation split alone put 448 px more than 2 SE ahead on 4 of 6 seeds, the cross-validated loss on all 8.

The rule (`pick_candidate`): keep the model's own settings (the baseline) unless a candidate that changes one
of them (the size with the baseline's pooling, or the pooling at the baseline's size) has a mean log-loss lower
by more than `MARGIN_SE` standard errors of the paired difference (a bootstrap over the images); among the
candidates that clear the margin the lowest log-loss wins. A larger input must pay with the model's own pooling:
a detail small in the image, diluted over four times the positions, still lowers the loss. Measured
(benchmarks/choosing_recipe.py and docs/small_defects.md): 448 px with average pooling cleared the margin by
2.3-8.6 SE on 9 textile splits and 2.3-3.0 on 3 grey-parts seeds, nothing on a natural two-class set (roses /
tulips: at most 0.6 SE on 4 seeds); on flowers5 at 20 per class (seed 0) only 448 px with max pooling cleared it
(2.2 SE; with average pooling 1.3), and fine-tuning there lost (0.771 against 0.824 at 224 px), so a candidate
that changes both settings is scored and recorded but does not decide.

A larger input is chosen for details that are small in the image (defects). There the head pools by max when the
pooling was free (`LARGE_INPUT_POOL`), whichever pooling scored best: the frozen probes rank the two alike, but
after fine-tuning at 448 px max pooling found 92 % of the textile set's local defects against 56 % with average
pooling (seed 11; issue 13 found the same over three seeds). Fine-tuning then trains without random crops, which
can cut the detail out of an image labelled with it (`LARGE_INPUT_AUG`, unless the data was given an `aug`),
with the gentler rate decay `LARGE_INPUT_DECAY` (issue 13: 0.94 against 0.84 nominal-vs-defective accuracy with
the default 0.1), and for `LARGE_INPUT_EPOCHS` epochs when `fit_discriminative` is not given a number: with 5
the validation loss was still falling steeply at the last epoch on every textile seed measured, and 10 took
seed 2 from 0.80 (local recall 0.84, global 0.36) to 0.96 (0.88, 0.96) on its test images.

Cost: the pass at the model's own size covers the training and validation images (at most `MAX_TRAIN` and
`MAX_VALID`, a stratified sample above) and is the frozen stage's cache when that size is kept, so it costs
nothing extra. The larger size, four times the pixels, is measured on at most `MAX_LARGER` of those images (a
stratified sample keeping the training / validation shares), and every candidate is scored on the same images:
its pass costs a bounded number of images whatever the size of the data (measured before the bound: flowers5 with
100 training and 250 validation images spent 18 s choosing against 53 s for the whole recipe without a choice,
1.45x, though it kept 224 px; the textile protocol's 200 images, the set the margin was measured on, fit in it).

>>> small, large = Candidate(224, "avg"), Candidate(448, "avg")
>>> pick_candidate({small: np.array([0.9, 0.8, 1.0, 0.7]), large: np.array([0.1, 0.2, 0.1, 0.2])}, small)[0]
Candidate(size=448, pool='avg')
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from fastai.torch_core import no_random
from torch import nn

from ...errors import EasyTransferError
from ...log import get_logger
from ...models.pooling import SWAPPABLE_POOLS, global_pool_type, set_global_pool
from ...train import features as train_features
from ...train.features import FeatureCache, cache_key, compute_pooled_caches, feature_head
from ...train.precision import autocast_dtype
from ...train.rates import DEFAULT_DECAY, DEFAULT_TUNE_EPOCHS
from .probe import fit_logistic_head, out_of_fold_losses

__all__ = ["LARGE_INPUT_AUG", "LARGE_INPUT_DECAY", "LARGE_INPUT_EPOCHS", "LARGE_INPUT_POOL", "MARGIN_SE", "MAX_TRAIN",
           "MAX_LARGER", "MAX_VALID", "Candidate", "CandidateScore", "ChosenDefaults", "RecipeChoice", "apply_choice",
           "candidates_for", "changes_one_setting", "choice_obstacle", "choose_for_frozen_stage", "choose_settings",
           "gains_in_se", "pick_candidate"]

logger = get_logger(__name__)

MARGIN_SE = 2.0  # a candidate replaces the baseline when its validation log-loss is lower by more than this many SE
SIZE_FACTOR = 2  # the larger size tried: about twice the model's
MAX_TRAIN = 1000  # training images the choice sees at most (a stratified sample above)
MAX_VALID = 500  # validation images the choice sees at most
MAX_LARGER = 200  # images the larger size is measured on at most (the candidates are scored on these)
LARGE_INPUT_POOL = "max"  # a larger input is for small details; max pooling keeps their response (above)
LARGE_INPUT_AUG = "none"  # fine-tuning at a larger input: no random crops (they can cut a small defect out)
LARGE_INPUT_DECAY = 0.3  # and rates decaying more gently to the stem (issue 13: 0.94 against 0.84 with 0.1)
LARGE_INPUT_EPOCHS = 10  # and twice the fine-tuning epochs (the body has more to adapt; measured above)
BOOTSTRAP_DRAWS = 2000
FOLDS = 5  # cross-validation over training + validation images: every image scored by a probe that never saw it
REPEATS = 3  # ... with 3 different fold draws, averaged per image (less noise from which images trained the probe)


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
        cv_loss: mean validation log-loss of the probe.
        cv_accuracy: validation accuracy (single-label; for multi-label data the share of labels right).
        gain_se: how many standard errors of the paired difference its log-loss is below the baseline's (0 for
            the baseline; negative: worse).
    """

    candidate: Candidate
    cv_loss: float
    cv_accuracy: float
    gain_se: float

    def to_dict(self) -> dict:
        return {"size": self.candidate.size, "pool": self.candidate.pool, "cv_loss": self.cv_loss,
                "cv_accuracy": self.cv_accuracy, "gain_se": self.gain_se}

    @classmethod
    def from_dict(cls, data: Mapping) -> CandidateScore:
        return cls(Candidate(int(data["size"]), str(data["pool"])), float(data["cv_loss"]),
                   float(data["cv_accuracy"]), float(data["gain_se"]))


@dataclass(frozen=True)
class RecipeChoice:
    """What the frozen stage chose, and why: ``learn.choice``, recorded in the exported bundle.

    Attributes:
        size, pool: the chosen input size and pooling (the model and data run at them from then on).
        aug: the augmentation preset fine-tuning uses.
        decay: the rate decay `fit_discriminative` and `fine_tune` use when not given one.
        baseline: the model's own settings, kept unless a candidate beats them by the margin.
        best: the candidate the rule picked (its size is chosen; at a larger input the pooling is max when it was
            free, whichever pooling scored best there).
        scores: every candidate's figures.
        margin_se: the margin, in standard errors.
        n_train, n_valid: the images the choice saw.
        seconds: what choosing cost (feature passes and probes).
        epochs: the fine-tuning epochs `fit_discriminative` runs when not given a number.

    >>> choice = RecipeChoice(448, "max", "none", 0.3, Candidate(224, "avg"), Candidate(448, "avg"), (), 2.0, 100,
    ...                       100, 9.5)
    >>> RecipeChoice.from_dict(choice.to_dict()) == choice
    True
    """

    size: int
    pool: str
    aug: str
    decay: float
    baseline: Candidate
    best: Candidate
    scores: tuple[CandidateScore, ...]
    margin_se: float
    n_train: int
    n_valid: int
    seconds: float
    epochs: int = DEFAULT_TUNE_EPOCHS

    @property
    def chosen(self) -> Candidate:
        return Candidate(self.size, self.pool)

    def score(self, candidate: Candidate) -> CandidateScore | None:
        return next((s for s in self.scores if s.candidate == candidate), None)

    def __str__(self) -> str:
        figures = "; ".join(f"{s.candidate.size}/{s.candidate.pool} {s.cv_loss:.3f}"
                            + (f" ({s.gain_se:+.1f} SE)" if s.candidate != self.baseline else " (baseline)")
                            for s in self.scores)
        best, base = self.score(self.best), self.score(self.baseline)
        if self.best == self.baseline:
            why = f"kept the model's {self.baseline}: no candidate beat it by {self.margin_se:g} SE"
        else:
            why = (f"chose {self.chosen}: {self.best.size}/{self.best.pool} log-loss {best.cv_loss:.3f} against "
                   f"{base.cv_loss:.3f} at {self.baseline} ({best.gain_se:.1f} SE > {self.margin_se:g})")
            if self.best != self.chosen:
                why += f"; at {self.size} px the head pools by {self.pool}"
        return (f"fit_frozen {why}; fine-tuning with aug={self.aug!r}, decay={self.decay:g}, {self.epochs} epochs. "
                f"Cross-validated log-loss of a linear probe on each candidate ({self.n_train} training + "
                f"{self.n_valid} validation images, {self.seconds:.0f} s): {figures}.")

    def to_dict(self) -> dict:
        return {"size": self.size, "pool": self.pool, "aug": self.aug, "decay": self.decay,
                "baseline": {"size": self.baseline.size, "pool": self.baseline.pool},
                "best": {"size": self.best.size, "pool": self.best.pool},
                "scores": [s.to_dict() for s in self.scores], "margin_se": self.margin_se,
                "n_train": self.n_train, "n_valid": self.n_valid, "seconds": self.seconds, "epochs": self.epochs}

    @classmethod
    def from_dict(cls, data: Mapping) -> RecipeChoice:
        base, best = data["baseline"], data.get("best", data["baseline"])
        return cls(int(data["size"]), str(data["pool"]), str(data["aug"]), float(data["decay"]),
                   Candidate(int(base["size"]), str(base["pool"])), Candidate(int(best["size"]), str(best["pool"])),
                   tuple(CandidateScore.from_dict(s) for s in data.get("scores", ())), float(data["margin_se"]),
                   int(data["n_train"]), int(data["n_valid"]), float(data["seconds"]),
                   int(data.get("epochs", DEFAULT_TUNE_EPOCHS)))


class ChosenDefaults:
    """What a learner's fine-tuning takes from its ``choice`` when not told: the rate decay and the epochs (a mixin
    before `TransferLearner`, whose defaults apply while nothing was chosen)."""

    choice: RecipeChoice | None

    def default_decay(self) -> float:
        """The rate decay of the frozen stage's choice (gentler at a larger input), else `DEFAULT_DECAY`."""
        return self.choice.decay if self.choice is not None else super().default_decay()

    def default_epochs(self) -> int:
        """The fine-tuning epochs of the frozen stage's choice (more at a larger input), else `DEFAULT_TUNE_EPOCHS`."""
        return self.choice.epochs if self.choice is not None else super().default_epochs()


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


def changes_one_setting(candidate: Candidate, baseline: Candidate) -> bool:
    """Whether `candidate` differs from `baseline` in its size or its pooling, not both (those may decide).

    >>> [changes_one_setting(Candidate(448, pool), Candidate(224, "avg")) for pool in ("avg", "max")]
    [True, False]
    """
    return candidate.size == baseline.size or candidate.pool == baseline.pool


def pick_candidate(losses: Mapping[Candidate, np.ndarray], baseline: Candidate, margin_se: float = MARGIN_SE,
                   ) -> tuple[Candidate, dict[Candidate, float]]:
    """``(winner, gains in SE)``: the baseline unless candidates that change one setting (`changes_one_setting`)
    beat it by more than `margin_se` standard errors; then the one of those with the lowest mean loss.

    >>> a, b = Candidate(224, "avg"), Candidate(224, "max")
    >>> pick_candidate({a: np.array([0.5, 0.6, 0.4]), b: np.array([0.45, 0.7, 0.3])}, a)[0]  # within the noise
    Candidate(size=224, pool='avg')
    """
    gains = gains_in_se(losses, baseline)
    clear = [c for c in losses if c != baseline and changes_one_setting(c, baseline) and gains[c] > margin_se]
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
    free = learn.free_settings
    pools = [pool] + [p for p in SWAPPABLE_POOLS if p != pool] if "pool" in free else [pool]
    sizes = [size, _larger_size(size)] if "size" in free else [size]
    candidates = [Candidate(s, p) for s in sizes for p in pools]
    return candidates[0], candidates


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


def _probe_losses(cache: FeatureCache, n_out: int, folds: int = FOLDS) -> tuple[np.ndarray, float]:
    """Per-image out-of-fold log-loss over the training and validation images, and the accuracy, of a logistic
    probe on `cache`'s features (its ``C`` chosen on the data's own split, as `fit_frozen(method="logistic")`)."""
    from threadpoolctl import threadpool_limits  # scikit-learn's own dependency

    # one BLAS / OpenMP thread: the problems are small (at most MAX_TRAIN + MAX_VALID rows), and two threads
    # made each fit ~10x slower on 2 cores (5 classes, 350 images: 7.1 s against 0.7 s per candidate)
    with threadpool_limits(limits=1):
        fit = fit_logistic_head(nn.Linear(cache.valid.shape[1], n_out), cache)
        X = np.concatenate([np.asarray(cache.train[0]), np.asarray(cache.valid)]).astype(np.float64)
        y = torch.cat([cache.train_targets, cache.valid_targets]).numpy()
        runs = [out_of_fold_losses(X, y, fit.C, folds, seed=r) for r in range(REPEATS)]
    return np.mean([losses for losses, _ in runs], axis=0), float(np.mean([right for _, right in runs]))


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
    sizes = list(dict.fromkeys(c.size for c in candidates))
    scored = _sample(sample, *_split_shares(sample, MAX_LARGER)) if len(sizes) > 1 else sample
    losses, accuracies, caches = {}, {}, {}
    for size in sizes:
        pools = tuple(c.pool for c in candidates if c.size == size)
        items_here = sample if size == baseline.size else scored
        dls = learn.dls.with_settings(size=size, items=None if items_here is sample and whole else items_here)
        pooled = compute_pooled_caches(learn, module, dls, pools, autocast_dtype=autocast_dtype)
        for pool, cache in pooled.items():
            candidate = Candidate(size, pool)
            caches[candidate] = cache
            rows = cache if items_here is scored else _rows_of(cache, items_here, scored)
            losses[candidate], accuracies[candidate] = _probe_losses(rows, len(learn.dls.vocab))
    best, gains = pick_candidate(losses, baseline, margin_se)
    larger = best.size > baseline.size
    winner = Candidate(best.size, LARGE_INPUT_POOL) if larger and "pool" in learn.free_settings else best
    aug = learn.dls.recipe.aug if "aug" not in learn.free_settings else (LARGE_INPUT_AUG if larger else
                                                                         learn.dls.recipe.aug)
    scores = tuple(CandidateScore(c, float(np.mean(losses[c])), accuracies[c], float(gains[c])) for c in candidates)
    n_valid = int(scored["is_valid"].sum())
    choice = RecipeChoice(winner.size, winner.pool, aug, LARGE_INPUT_DECAY if larger else DEFAULT_DECAY, baseline,
                          best, scores, margin_se, len(scored) - n_valid, n_valid, time.perf_counter() - start,
                          LARGE_INPUT_EPOCHS if larger else DEFAULT_TUNE_EPOCHS)
    covers_all = whole and (winner.size == baseline.size or len(scored) == len(sample))
    return choice, caches[winner] if covers_all else None


def _split_shares(items: pd.DataFrame, total: int) -> tuple[int, int]:
    """``(training, validation)`` counts that sum to at most `total`, in `items`' shares (at least one each)."""
    n_valid = int(items["is_valid"].sum())
    n_train = len(items) - n_valid
    if len(items) <= total:
        return n_train, n_valid
    valid = max(1, round(total * n_valid / len(items))) if n_valid else 0
    return total - valid, valid


def _rows_of(cache: FeatureCache, items: pd.DataFrame, subset: pd.DataFrame) -> FeatureCache:
    """`cache`'s rows (computed over `items`: training rows, then validation rows, each in `items`' order) for
    the images of `subset`, in `subset`'s order, so candidates computed over either are scored on the same images."""
    def positions(frame: pd.DataFrame, is_valid: bool) -> dict:
        paths = frame.loc[frame["is_valid"] == is_valid, "path"].astype(str)
        return {path: i for i, path in reversed(list(enumerate(paths)))}

    train_at, valid_at = positions(items, False), positions(items, True)
    train_rows = [train_at[p] for p in subset.loc[~subset["is_valid"], "path"].astype(str)]
    valid_rows = [valid_at[p] for p in subset.loc[subset["is_valid"], "path"].astype(str)]
    return FeatureCache("", np.ascontiguousarray(cache.train[:, train_rows]), np.ascontiguousarray(
        cache.valid[valid_rows]), cache.train_targets[train_rows], cache.valid_targets[valid_rows], None,
        cache.runtime)


def choose_for_frozen_stage(learn, cache_views: int, *, required: bool) -> None:
    """Choose `learn`'s settings, put it at them and keep the chosen features as its frozen cache (`fit_frozen`).

    With nothing to choose (`choice_obstacle`) one line says why, once; ``required`` makes it an error.
    """
    obstacle = choice_obstacle(learn)
    if obstacle is not None:
        if required:
            raise EasyTransferError(f"fit_frozen(choose=True) has nothing to choose: {obstacle}.")
        if not learn.choice_explained:
            logger.info(f"fit_frozen runs at the current settings ({learn.dls.recipe.size} px, "
                        f"{learn.head_config.pool or 'the model own'} pooling): {obstacle}.")
            learn.choice_explained = True
        return
    learn.freeze()
    # seeded inside, so the choice repeats (a resumed run makes the same one), and the run's random state is put
    # back after, so choosing draws nothing from the batches and dropout that follow
    with no_random(0, reproducible=False):
        learn.choice, features = choose_settings(learn, autocast_dtype=autocast_dtype(learn.cbs, learn.device))
    apply_choice(learn, learn.choice)
    if learn.choice.pool != learn.choice.baseline.pool:  # the bundle builds the model with this pooling
        learn.head_config = replace(learn.head_config, pool=learn.choice.pool)
    logger.info(str(learn.choice))
    learn.feature_cache = None
    limit = train_features.CACHE_MEMORY_LIMIT
    in_memory = features is not None and features.train.nbytes + features.valid.nbytes <= limit
    if in_memory and cache_views == 1:  # else the frozen stage computes its own (memory-mapped above the limit)
        module, _ = feature_head(learn)
        features.key = cache_key(learn, module, cache_views)
        learn.feature_cache = features


def apply_choice(learn, choice: RecipeChoice) -> None:
    """Put `learn`'s data at the chosen size and augmentation and its model at the chosen pooling."""
    recipe = learn.dls.recipe
    if choice.size != recipe.size or choice.aug != recipe.aug:
        learn.dls = learn.dls.with_settings(size=choice.size, aug=choice.aug)
    if choice.pool != global_pool_type(learn.model):
        set_global_pool(learn.model, choice.pool)

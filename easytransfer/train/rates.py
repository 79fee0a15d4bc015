"""Learning rates of the recipe: the defaults, checking a rate a user gave, and one rate per layer group."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np

__all__ = ["DEFAULT_DECAY", "DEFAULT_HEAD_LR", "DEFAULT_LR_MAX", "DEFAULT_TUNE_EPOCHS", "FROZEN_LR_FIND_IT",
           "UNFROZEN_LR_FIND_IT",
           "check_lr", "discriminative_lrs"]

DEFAULT_HEAD_LR = 3e-3
DEFAULT_LR_MAX = 1e-3  # fit_discriminative's head rate when not given (fastai's slice(1e-5, 1e-3) with decay 0.1)
DEFAULT_TUNE_EPOCHS = 5  # fit_discriminative's epochs when not given (a classifier's choice may say more)
DEFAULT_DECAY = 0.1  # measured: 0.3 (3e-4 for the top body group) wrecked EfficientNet-Lite0 on textiles
FROZEN_LR_FIND_IT = 100  # fastai's default; on cached features it takes seconds
# measured on flowers5, unfrozen: valley 4.8e-4 with 100 steps (47 s), 3.3e-4 with 50 (24 s), 1.6e-4 with 30
UNFROZEN_LR_FIND_IT = 50


def check_lr(lr, name: str = "lr") -> None:
    """Refuse a learning rate that is not ``None``, ``"find"``, a positive number, a ``slice`` or a sequence of
    positive numbers, before any training starts (issue 19: ``lr_max="abc"`` failed after the frozen stage).

    Args:
        lr: the rate to check.
        name: the argument's name, for the message.

    Raises:
        ValueError: naming `name`, the value and the forms a rate takes.

    >>> check_lr(slice(1e-5, 1e-3))
    >>> check_lr(0, "lr_max")
    Traceback (most recent call last):
    ...
    ValueError: lr_max must be a positive number (e.g. 1e-3), a slice, a sequence of rates or 'find'; got 0
    """
    if lr is None or (isinstance(lr, str) and lr == "find"):
        return
    if isinstance(lr, slice):
        values = [v for v in (lr.start, lr.stop) if v is not None]
    elif isinstance(lr, (Sequence, np.ndarray)) and not isinstance(lr, str):
        values = list(lr)
    else:
        values = [lr]
    if not values or not all(isinstance(v, Real) and 0 < v < np.inf for v in values):
        raise ValueError(f"{name} must be a positive number (e.g. 1e-3), a slice, a sequence of rates or 'find'; "
                         f"got {lr!r}")


def discriminative_lrs(lr_max, n_groups: int, decay: float = DEFAULT_DECAY) -> np.ndarray:
    """One learning rate per layer group, stem first: group k counted from the head gets ``lr_max * decay**k``.

    Args:
        lr_max: the head's rate; or a sequence (one rate per group, stem first), or fastai's ``slice(lo, hi)``
            (rates spaced geometrically from `lo` for the stem to `hi` for the head).
        n_groups: the number of layer groups.
        decay: the factor from one group to the one under it, in (0, 1].

    Returns:
        An array of `n_groups` rates, stem first.

    >>> discriminative_lrs(1e-3, 4, decay=0.1)
    array([1.e-06, 1.e-05, 1.e-04, 1.e-03])
    >>> discriminative_lrs(slice(1e-5, 1e-3), 3)
    array([1.e-05, 1.e-04, 1.e-03])
    """
    if isinstance(lr_max, slice):
        lo = lr_max.start if lr_max.start is not None else lr_max.stop / 10
        return np.geomspace(lo, lr_max.stop, n_groups)
    if isinstance(lr_max, Sequence) or isinstance(lr_max, np.ndarray):
        lrs = np.asarray(lr_max, dtype=float)
        if len(lrs) != n_groups:
            raise ValueError(f"Got {len(lrs)} learning rates for {n_groups} layer groups; give one per group "
                             "(stem first), a slice, or one number.")
        return lrs
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    return float(lr_max) * decay ** np.arange(n_groups - 1, -1, -1, dtype=float)

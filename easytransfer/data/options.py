"""The options of `ImageData.from_folder` / `from_df` / `from_csv` as one record, checked once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from .augment import AUG_PRESETS
from .checks import DEFAULT_MAX_PIXELS

__all__ = ["BALANCE_MODES", "DEFAULT_AUG", "DEFAULT_BS", "LoaderOptions"]

DEFAULT_BS = 16  # measured: batches of 4-16 are as fast per image on CPU and keep buffers small
BALANCE_MODES = (None, "weights", "sampler")
DEFAULT_AUG = "light"  # the preset when none is given


def _as_tuple(tfms: Any) -> tuple:
    """``None``, one transform or a sequence of transforms, as a tuple (fastai accepts all three)."""
    if tfms is None:
        return ()
    if isinstance(tfms, Sequence) and not isinstance(tfms, str):
        return tuple(tfms)
    return (tfms,)


@dataclass(frozen=True)
class LoaderOptions:
    """How to split, check, batch and augment the images; the keyword arguments of `ImageData.from_folder`.

    Built once by the `ImageData` constructors and passed down whole. Every value is checked when the record
    is made, so a wrong option fails before any file is read.

    Attributes:
        valid_pct: share of each class held out for validation when the source has no split of its own.
        test_pct: share of each class held out as a test set (``learn.evaluate()``) when the source has no split of
            its own; 0 for none (default). Taken first, then `valid_pct` of the whole for validation.
        seed: seed of that split.
        bs: batch size.
        size: image side, ``None`` for the model's input size (224 until a model is chosen).
        aug: augmentation preset, one of `AUG_PRESETS`; ``None`` (not given): ``"light"``, which the learner's
            frozen stage may change along with the input size it chooses (`ClassifierLearner.fit_frozen`).
        balance: ``None``, ``"weights"`` (class-weighted loss) or ``"sampler"`` (oversample rare classes).
        item_tfms, batch_tfms: the user's own fastai transforms, after the preset's.
        check: check every file first.
        max_pixels: larger images are excluded.
        num_workers: DataLoader worker processes.
        device: where batches go (``None``: fastai's default).
        label_delim: separator of multi-label labels, ``None`` for single-label data.

    >>> LoaderOptions(bs=8, aug="strong").bs
    8
    >>> LoaderOptions(aug="heavy")
    Traceback (most recent call last):
    ...
    easytransfer.errors.DataError: aug must be one of ('none', 'flips', 'light', 'strong'), got 'heavy'
    """

    valid_pct: float = 0.2
    seed: int = 42
    bs: int = DEFAULT_BS
    size: int | None = None
    aug: str | None = None
    balance: str | None = None
    item_tfms: tuple = ()
    batch_tfms: tuple = ()
    check: bool = True
    max_pixels: int = DEFAULT_MAX_PIXELS
    num_workers: int = 0
    device: Any = None
    label_delim: str | None = None
    test_pct: float = 0.0

    def __post_init__(self):
        # frozen: normalise the transforms through object.__setattr__, once, here
        object.__setattr__(self, "item_tfms", _as_tuple(self.item_tfms))
        object.__setattr__(self, "batch_tfms", _as_tuple(self.batch_tfms))
        problems = self.problems()
        if problems:
            raise DataError("; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with these options, each with its fix; empty when they are usable."""
        out = []
        if self.aug is not None and self.aug not in AUG_PRESETS:
            out.append(f"aug must be one of {AUG_PRESETS}, got {self.aug!r}")
        if self.balance not in BALANCE_MODES:
            out.append(f"balance must be one of {BALANCE_MODES}, got {self.balance!r}")
        if self.balance == "sampler" and self.label_delim is not None:
            out.append("balance='sampler' is for single-label data; use balance='weights' for multi-label.")
        if self.label_delim == "":
            out.append("label_delim='' cannot split labels; pass the separator (e.g. ' ') or None for single-label.")
        if not 0 < self.valid_pct < 1:
            out.append(f"valid_pct must be between 0 and 1 (e.g. 0.2), got {self.valid_pct}")
        if not 0 <= self.test_pct < 1 or self.valid_pct + self.test_pct >= 1:
            out.append(f"test_pct must be 0 (no test split) or between 0 and 1 with valid_pct + test_pct below 1 "
                       f"(e.g. valid_pct=0.2, test_pct=0.2), got test_pct={self.test_pct}, valid_pct={self.valid_pct}")
        if self.bs < 1:
            out.append(f"bs (batch size) must be at least 1, got {self.bs}")
        if self.size is not None and self.size < 1:
            out.append(f"size must be a positive number of pixels or None (the model's), got {self.size}")
        if self.num_workers < 0:
            out.append(f"num_workers must be 0 (load in the main process) or more, got {self.num_workers}")
        if self.max_pixels < 1:
            out.append(f"max_pixels must be a positive number of pixels, got {self.max_pixels}")
        return out

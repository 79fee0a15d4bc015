"""Splitting items into training and validation sets, reproducibly."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["split_train_valid_test", "stratified_split"]


def stratified_split(labels: Sequence[str], valid_pct: float, seed: int) -> np.ndarray:
    """A boolean mask choosing about `valid_pct` of each class for validation, reproducibly.

    Every class with at least two images keeps at least one in each split.

    >>> int(stratified_split(["a"] * 8 + ["b"] * 2, 0.25, seed=0).sum())
    3
    """
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct must be between 0 and 1, got {valid_pct}")
    labels = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels == label)
        n_valid = int(round(len(idx) * valid_pct))
        if len(idx) >= 2:
            n_valid = min(max(n_valid, 1), len(idx) - 1)
        else:
            n_valid = 0
        mask[rng.permutation(idx)[:n_valid]] = True
    return mask


def split_train_valid_test(items: pd.DataFrame, valid_pct: float = 0.2, test_pct: float = 0.2, seed: int = 42):
    """Stratified, seeded split into a train+valid table (with ``is_valid``) and a held-out test table."""
    is_test = stratified_split(items["label"], test_pct, seed)
    test = items[is_test].reset_index(drop=True)
    rest = items[~is_test].reset_index(drop=True)
    rest["is_valid"] = stratified_split(rest["label"], valid_pct / (1 - test_pct), seed + 1)
    return rest, test

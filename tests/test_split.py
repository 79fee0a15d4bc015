"""Tests of easytransfer/data/split.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

from easytransfer.data import stratified_split


def test_stratified_split_keeps_a_training_image_per_class():
    mask = stratified_split(["a"] * 2 + ["b"] * 10, 0.5, seed=3)
    assert mask[:2].sum() == 1 and mask[2:].sum() == 5

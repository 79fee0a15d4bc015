"""Tests of easytransfer/train/rates.py: checking a learning rate, and one rate per layer group."""

from __future__ import annotations

import numpy as np
import pytest

from easytransfer.train.rates import DEFAULT_DECAY, check_lr, discriminative_lrs


@pytest.mark.parametrize("lr", [None, "find", 1e-3, slice(1e-5, 1e-3), [1e-4, 1e-3], np.array([1e-3])])
def test_a_rate_in_any_of_its_forms_passes(lr):
    check_lr(lr)


@pytest.mark.parametrize("lr", [0, -1e-3, "abc", float("inf"), [], [1e-3, 0], slice(None, -1)])
def test_a_bad_rate_names_the_argument_and_the_forms(lr):
    with pytest.raises(ValueError, match=r"head_lr must be a positive number .*'find'; got"):
        check_lr(lr, "head_lr")


def test_rates_decay_from_head_to_stem():
    np.testing.assert_allclose(discriminative_lrs(1e-3, 3), [1e-3 * DEFAULT_DECAY**2, 1e-3 * DEFAULT_DECAY, 1e-3])
    np.testing.assert_allclose(discriminative_lrs(slice(None, 1e-3), 2), [1e-4, 1e-3])
    with pytest.raises(ValueError, match="3 learning rates for 2 layer groups; give one per group"):
        discriminative_lrs([1e-5, 1e-4, 1e-3], 2)
    with pytest.raises(ValueError, match=r"decay must be in \(0, 1\]"):
        discriminative_lrs(1e-3, 2, decay=0)

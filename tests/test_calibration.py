"""Tests of easytransfer/evaluate/calibration.py (moved here from the history-named test files: faults, student, contracts ...)."""

import numpy as np
import pytest
from helpers import fixed_scores

from easytransfer.evaluate.calibration import (
    expected_calibration_error,
    fit_calibration,
    reliability_bins,
)


def test_ece_matches_a_hand_computed_value_and_bins_are_documented():
    probs = np.array([[0.95, 0.05], [0.95, 0.05], [0.55, 0.45], [0.55, 0.45]])
    targets = np.array([0, 1, 0, 0])
    # two full bins: (0.933, 1] holds 0.95 twice, 50 % right; (0.533, 0.6] holds 0.55 twice, 100 % right
    assert expected_calibration_error(probs, targets) == pytest.approx(0.5 * 0.45 + 0.5 * 0.45)
    assert len(reliability_bins(probs, targets).counts) == 15


def test_temperature_and_isotonic_reduce_ece_of_an_over_confident_model():
    probs, targets = fixed_scores(n=3000)
    logits = np.log(probs)
    fit_part, test_part = slice(0, 1500), slice(1500, None)
    before = expected_calibration_error(probs[test_part], targets[test_part])
    for method in ("temperature", "isotonic"):
        cal = fit_calibration(logits[fit_part], targets[fit_part], method)
        after = expected_calibration_error(cal.probabilities(logits[test_part]), targets[test_part])
        assert after < before / 2, (method, before, after)
    assert fit_calibration(logits[fit_part], targets[fit_part]).temperature > 2  # the logits were made 3x too sharp

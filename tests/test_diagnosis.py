"""Tests of easytransfer/train/diagnosis.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from helpers import make_history

from easytransfer.train.diagnosis import diagnose
from easytransfer.train.history import PhaseKind


def test_diagnose_never_calls_a_fit_without_training_a_good_fit():
    history = pd.DataFrame({"phase": ["frozen"] * 2, "epoch": [0, 1], "train_loss": [np.nan, np.nan],
                            "valid_loss": [0.69, 0.69], "accuracy": [0.5, 0.5]})
    result = diagnose(history)
    assert result.verdict == "nothing was trained" and "good fit" not in str(result)


def test_a_gap_with_a_falling_valid_loss_is_not_over_fitting():
    verdict = diagnose(make_history([0.9, 0.7, 0.5, 0.45], train_acc=1.0, valid_acc=0.85)).verdict
    assert verdict == "a gap of 15 points, still improving"


def test_an_early_best_epoch_is_over_fitting():
    diagnosis = diagnose(make_history([0.9, 0.5, 0.52, 0.53, 0.54], train_acc=0.95, valid_acc=0.9))
    assert diagnosis.verdict == "over-fitting"
    assert any("epoch 1" in e for e in diagnosis.evidence)


def test_no_augmentation_advice_for_cached_frozen_features():
    history = make_history([0.9, 0.5, 0.6, 0.7], train_acc=1.0, valid_acc=0.7, kind=PhaseKind.FROZEN, on_features=True)
    diagnosis = diagnose(history)
    assert diagnosis.verdict == "over-fitting"
    text = str(diagnosis)
    assert "aug='strong'" not in text and "cached features of the plain images" in text

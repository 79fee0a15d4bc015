"""Tests of easytransfer/train/history.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import pytest
from helpers import make_history

from easytransfer.train.checkpoint import FitState
from easytransfer.train.history import Phase, PhaseKind, plot_history


def test_train_accuracy_label_says_cached_features_for_cached_frozen_epochs():
    history = make_history([0.9, 0.8], train_acc=0.9, valid_acc=0.8, kind=PhaseKind.FROZEN, on_features=True)
    labels = [t.get_text() for t in plot_history(history).axes[1].get_legend().get_texts()]
    assert "train accuracy (cached features of the plain images)" in labels
    assert not any("augmented" in label for label in labels)


def test_layer_decay_phase_is_recorded_and_read_back():
    phase = Phase(PhaseKind.DISCRIMINATIVE, layer_decay=0.75)
    assert Phase.from_json(phase.to_json()) == phase == Phase.from_name("layer decay 0.75")
    assert Phase.from_json({"kind": "discriminative", "stage": None, "label": None}).layer_decay is None  # old JSON
    assert Phase(PhaseKind.DISCRIMINATIVE, label="vit", layer_decay=0.75).name == "vit"
    with pytest.raises(ValueError, match="layer_decay"):
        Phase(PhaseKind.FROZEN, layer_decay=0.75)
    state = FitState(phase, 3, (1e-3,), 0.1, on_features=False, monitor="valid_loss")
    assert "layer decay 0.75" in state.same_fit(FitState(Phase(PhaseKind.DISCRIMINATIVE), 3, (1e-3,), 0.1, False,
                                                         "valid_loss"))

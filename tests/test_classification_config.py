"""easytransfer/tasks/classification/config.py: the classifier's task_config, round-tripped through its JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from easytransfer.tasks.classification.config import ClassificationConfig
from easytransfer.tasks.registry import get_task


def test_the_registry_names_this_config_and_a_plain_one_round_trips():
    assert get_task("classification").config_type is ClassificationConfig
    assert ClassificationConfig().to_dict() == {"multilabel": False}
    assert ClassificationConfig.from_dict({}) == ClassificationConfig()
    assert ClassificationConfig.from_dict({"multilabel": True}).multilabel is True


def test_calibration_and_conformal_scores_survive_json():
    from easytransfer.evaluate.calibration import fit_calibration
    from easytransfer.evaluate.conformal import ConformalCalibration

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    logits = rng.normal(size=(60, 3)) * 3
    logits[np.arange(60), labels] += 2
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    calibration = fit_calibration(logits, labels, "isotonic")
    conformal = ConformalCalibration.fit(probs, labels, score="aps", mondrian=True, alpha=0.2)
    config = ClassificationConfig(multilabel=False, calibration=calibration, conformal=conformal)
    again = ClassificationConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config


def test_a_multilabel_flag_that_is_not_a_bool_is_refused():
    with pytest.raises(TypeError, match="'multilabel' must be true or false"):
        ClassificationConfig.from_dict({"multilabel": "yes"})

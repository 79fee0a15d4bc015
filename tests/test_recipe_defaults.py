"""The recipe's defaults: a classifier's stay as they were; a task's learner overrides the ones it needs."""

from __future__ import annotations

from easytransfer.tasks.detection.learner import DetectionLearner
from easytransfer.train.learner import TransferLearner
from easytransfer.train.recipe_defaults import RecipeDefaults


def test_a_classifier_keeps_its_defaults():
    defaults = RecipeDefaults()
    assert (defaults.default_monitor(), defaults.default_head_lr(), defaults.default_lr_max(),
            defaults.default_decay(), defaults.default_epochs()) == ("valid_loss", 3e-3, 1e-3, 0.1, 5)
    assert issubclass(TransferLearner, RecipeDefaults)


def test_a_detector_overrides_what_its_task_needs():
    overridden = {name for name in vars(RecipeDefaults) if name.startswith("default_")
                  and getattr(DetectionLearner, name) is not getattr(RecipeDefaults, name)}
    assert overridden == {"default_monitor", "default_head_lr", "default_lr_max", "default_decay"}

"""Tests of easytransfer/tasks/classification/learner.py: `ClassifierLearner` and `transfer_learner`.

Most of the classifier's behaviour is tested where its parts live (test_learner, test_features,
test_classification_probe, test_uncertainty); these are about the class itself.
"""

from __future__ import annotations

import pytest

from easytransfer import ImageData, transfer_learner
from easytransfer.tasks.classification.learner import ClassifierLearner


@pytest.fixture
def learn(image_folder):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)
    return transfer_learner(dls, "test_efficientnet", pretrained=False)


def test_a_fastai_fit_drops_the_calibration_fitted_to_the_old_weights(learn):
    learn.fit_frozen(1)
    with pytest.warns(UserWarning, match="validation set"):
        learn.calibrate()
    with pytest.warns(UserWarning, match="calibration and conformal thresholds are dropped"):
        learn.fit_one_cycle(1, 1e-3)
    assert learn.calibration is None and learn.bundle_config().task_config.calibration is None


def test_each_tasks_learner_is_a_sibling_over_the_recipe():
    from easytransfer import ClassifierLearner, DetectionLearner, SegmentationLearner, TransferLearner
    from easytransfer.tasks.registry import get_task

    for cls in (ClassifierLearner, SegmentationLearner, DetectionLearner):
        assert issubclass(cls, TransferLearner)
        assert get_task(cls.task).name == cls.task
    for cls in (SegmentationLearner, DetectionLearner):  # what they cannot do, they do not have
        assert not issubclass(cls, ClassifierLearner)
        assert not any(hasattr(cls, name) for name in ("calibrate", "conformal"))
    assert not hasattr(DetectionLearner, "_cache_obstacle")  # segmentation caches its encoder's maps, a detector not
    assert not hasattr(TransferLearner, "task") and not hasattr(TransferLearner, "calibrate")
    assert get_task("classification").learner_factory is transfer_learner


def test_the_bundle_record_is_the_recipes_with_the_classifiers_pieces(learn):
    config = learn.bundle_config()
    assert isinstance(learn, ClassifierLearner)
    assert (config.task, config.arch, config.classes) == ("classification", "test_efficientnet", ("cat", "dog"))
    assert config.task_config.multilabel is False and config.head == learn.head_config
    assert config.preprocessing.size == learn.dls.recipe.size


def test_predict_reads_float_and_channels_first_images_as_their_uint8_image(learn):
    import numpy as np
    import torch

    image = np.random.default_rng(0).integers(0, 256, size=(40, 36, 3), dtype=np.uint8)
    _, _, probs = learn.predict(image)
    chw_float = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    _, _, again = learn.predict(chw_float)
    torch.testing.assert_close(again, probs)

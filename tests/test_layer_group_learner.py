"""Tests of easytransfer/train/layer_group_learner.py: what every fit needs, on a tiny classifier."""

from __future__ import annotations

import pytest

from easytransfer import ImageData, transfer_learner
from easytransfer.train.history import PhaseKind
from easytransfer.train.layer_group_learner import LayerGroupLearner


@pytest.fixture
def learn(image_folder):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)
    return transfer_learner(dls, "test_efficientnet", pretrained=False)


def test_fastai_fits_land_in_the_history_once(learn):
    assert learn.fit_one_cycle(1, 1e-3) is learn
    learn.fit_flat_cos(1, 1e-3)
    learn.unfreeze()
    learn.fit(1, 1e-4)
    learn.lr_find(num_it=3)  # a sweep, not a fit: no row
    learn.fit_frozen(1)  # the library's own fit: one row, not two
    assert list(learn.history["phase"]) == ["fit_one_cycle", "fit_flat_cos", "fit", "frozen"]
    assert list(learn.history["epoch"]) == [0, 1, 2, 3] and learn.history["accuracy"].notna().all()
    kinds = [r.phase.kind for r in learn.fit_history]
    assert kinds[:3] == [PhaseKind.FIT] * 3
    assert [r.phase.trains_body for r in learn.fit_history] == [False, False, True, False]
    assert learn.diagnose().verdict  # reads the fastai fits' rows


def test_the_learner_is_a_layer_group_learner_and_says_what_it_is(learn):
    assert isinstance(learn, LayerGroupLearner)
    assert repr(learn).startswith("ClassifierLearner(test_efficientnet, 2 classes, ")
    assert learn.model_identity().classes == ("cat", "dog") == learn.classes

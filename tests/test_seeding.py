"""Tests of easytransfer/seeding.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

from conftest import make_image_folder
from helpers import learner_with_data


def test_transfer_learner_seed_repeats_the_head_and_the_training(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=4)

    def head_after_one_epoch(**kwargs):
        learn = learner_with_data(folder, **kwargs)
        learn.fit_frozen(1, cache=False)
        return learn.model.classifier.weight.detach().clone()

    from easytransfer import set_seed

    first, second = head_after_one_epoch(seed=3), head_after_one_epoch(seed=3)
    assert (first == second).all()
    set_seed(0)
    other = head_after_one_epoch()
    assert not (other == first).all()

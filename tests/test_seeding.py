"""Tests of easytransfer/seeding.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

from conftest import make_image_folder

from easytransfer import ImageData, transfer_learner

TINY = dict(bs=4, size=32)


def _learner(folder, **kwargs):
    data = {k: kwargs.pop(k) for k in ("aug", "test_pct") if k in kwargs}
    dls = ImageData.from_folder(folder, seed=0, **TINY, **data)
    return transfer_learner(dls, "test_efficientnet", pretrained=False, **kwargs)


def test_transfer_learner_seed_repeats_the_head_and_the_training(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=4)

    def head_after_one_epoch(**kwargs):
        learn = _learner(folder, **kwargs)
        learn.fit_frozen(1, cache=False)
        return learn.model.classifier.weight.detach().clone()

    from easytransfer import set_seed

    first, second = head_after_one_epoch(seed=3), head_after_one_epoch(seed=3)
    assert (first == second).all()
    set_seed(0)
    other = head_after_one_epoch()
    assert not (other == first).all()

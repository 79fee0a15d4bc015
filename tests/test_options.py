"""Tests of easytransfer/data/options.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import pytest

from easytransfer import DataError, ImageData
from easytransfer.data import LoaderOptions


@pytest.mark.parametrize("bad, match", [
    (dict(aug="heavy"), "aug must be one of"),
    (dict(balance="oversample"), "balance must be one of"),
    (dict(balance="sampler", label_delim=" "), "balance='sampler' is for single-label data"),
    (dict(valid_pct=1.5), "valid_pct must be between 0 and 1"),
    (dict(valid_pct=0), "valid_pct must be between 0 and 1"),
    (dict(bs=0), "bs .batch size. must be at least 1"),
    (dict(size=-3), "size must be a positive number"),
    (dict(num_workers=-1), "num_workers must be 0"),
    (dict(label_delim=""), "label_delim='' cannot split labels"),
])
def test_loader_options_are_checked_once_with_the_fix(bad, match):
    with pytest.raises(DataError, match=match):
        LoaderOptions(**bad)


def test_bad_options_fail_before_any_file_is_read(tmp_path):
    # the folder does not exist: an option error first means the options were checked before the files
    with pytest.raises(DataError, match="aug must be one of"):
        ImageData.from_folder(tmp_path / "nowhere", aug="heavy")
    with pytest.raises(DataError, match="valid_pct"):
        ImageData.from_csv(tmp_path / "nowhere.csv", valid_pct=2)
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['sizes'\]"):
        ImageData.from_csv(tmp_path / "nowhere.csv", sizes=32)


def test_options_reach_the_recipe_and_transforms_may_be_one_or_none(image_folder):
    from fastai.vision.augment import Dihedral

    assert LoaderOptions(item_tfms=None).item_tfms == ()
    assert LoaderOptions(batch_tfms=Dihedral()).batch_tfms[0].__class__ is Dihedral
    dls = ImageData.from_folder(image_folder, bs=3, size=32, aug="none", balance="weights", seed=0,
                                batch_tfms=[Dihedral()])
    recipe = dls.recipe
    assert (recipe.bs, recipe.size, recipe.size_given, recipe.aug, recipe.balance) == (3, 32, True, "none", "weights")
    assert isinstance(recipe.batch_tfms, tuple) and isinstance(recipe.batch_tfms[0], Dihedral)

"""Tests of easytransfer/deploy/predictor.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_image_folder

from easytransfer import DataError, ImageData, load_model, transfer_learner


def _dls(folder, **kwargs):
    kwargs = {"valid_pct": 0.25, "seed": 0, "bs": 4, "size": 32, "aug": "none", **kwargs}
    return ImageData.from_folder(folder, **kwargs)


def _learner(folder, **kwargs):
    return transfer_learner(_dls(folder), "test_efficientnet", pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cats") / "images", classes=("cat", "dog"), per_class=4, size=32)


@pytest.fixture(scope="module")
def predictor(cats, tmp_path_factory):
    return load_model(_learner(cats).export(tmp_path_factory.mktemp("predictor") / "model"), device="cpu")


def test_a_float_array_in_0_1_is_scaled_not_truncated_to_black(predictor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    as_float = image.astype(np.float32) / 255
    torch.testing.assert_close(predictor.preprocess(as_float), predictor.preprocess(image))
    assert not torch.equal(predictor.preprocess(as_float), predictor.preprocess(np.zeros_like(image)))


def test_a_chw_tensor_is_read_as_the_same_image(predictor):
    image = np.random.default_rng(1).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    torch.testing.assert_close(predictor.preprocess(chw), predictor.preprocess(image))
    torch.testing.assert_close(predictor.preprocess(chw.float() / 255), predictor.preprocess(image))


@pytest.mark.parametrize("bad, match", [(np.full((8, 8, 3), 2.0), r"\[0, 1\]"), (np.full((8, 8, 3), 300), "0..255"),
                                        (np.full((8, 8, 3), np.nan), "NaN")])
def test_out_of_range_arrays_are_refused(predictor, bad, match):
    with pytest.raises(DataError, match=match):
        predictor.predict(bad)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An untrained tiny classifier's bundle (these tests are about paths and exit codes, not accuracy)."""
    root = make_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=3, size=16)
    learn = transfer_learner(ImageData.from_folder(root, valid_pct=0.34, seed=0, bs=2, size=32), "test_efficientnet",
                             pretrained=False)
    return learn.export(tmp_path_factory.mktemp("bundle") / "model")


def test_predict_folder_on_a_missing_path_is_an_error(bundle, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_model(bundle).predict_folder(tmp_path / "no-such-folder")

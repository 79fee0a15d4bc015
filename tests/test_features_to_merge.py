"""Tests of easytransfer/train/features.py, moved out of history-named files; append them to tests/test_features.py once the branches changing that file now have landed."""

import os

import pytest
from conftest import make_image_folder

from easytransfer import ImageData, transfer_learner
from easytransfer.files import is_temporary
from easytransfer.train.features import feature_cache_dir

DEAD_PID = 999_999_999  # above any pid_max: no process has it


def _dls(folder, **kwargs):
    kwargs = {"valid_pct": 0.25, "seed": 0, "bs": 4, "size": 32, "aug": "none", **kwargs}
    return ImageData.from_folder(folder, **kwargs)


def _learner(folder, **kwargs):
    return transfer_learner(_dls(folder), "test_efficientnet", pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cats") / "images", classes=("cat", "dog"), per_class=4, size=32)


def test_the_memory_mapped_feature_cache_lives_in_a_visible_cache_folder(cats, tmp_path, monkeypatch):
    monkeypatch.setenv("EASYTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("easytransfer.train.features.CACHE_MEMORY_LIMIT", 0)  # every cache goes to a file
    stale = feature_cache_dir() / f"features.{DEAD_PID}.zzz.tmp"  # left by a fit killed with -9
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by kill -9")
    learn = _learner(cats)
    learn.fit_frozen(1, patience=None)
    path = learn.feature_cache.path
    assert os.path.dirname(path) == str(tmp_path / "cache" / "features") and is_temporary(path)  # not in /tmp
    assert not stale.exists()

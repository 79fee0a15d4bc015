"""Tests of easytransfer/deploy/bundle.py, moved out of history-named files; append them to tests/test_bundle.py once the branches changing that file now have landed."""

import json
import os
import shutil
import stat

import pytest
from conftest import make_image_folder

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.deploy.bundle import CONFIG_NAME, WEIGHTS_NAME, BundleConfig
from easytransfer.errors import EasyTransferError, WeightsMismatchError

DELETE = object()


def _dls(folder, **kwargs):
    kwargs = {"valid_pct": 0.25, "seed": 0, "bs": 4, "size": 32, "aug": "none", **kwargs}
    return ImageData.from_folder(folder, **kwargs)


def _learner(folder, **kwargs):
    return transfer_learner(_dls(folder), "test_efficientnet", pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cats") / "images", classes=("cat", "dog"), per_class=4, size=32)


@pytest.fixture(scope="module")
def bees(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("bees") / "images", classes=("ant", "bee"), per_class=4, size=32)


def test_weights_beside_another_exports_json_are_refused(cats, bees, tmp_path):
    a = _learner(cats).export(tmp_path / "a")
    x = _learner(bees).export(tmp_path / "x")  # same architecture and class count, other classes
    shutil.copy(a / WEIGHTS_NAME, x / WEIGHTS_NAME)  # what two exports racing into one folder can leave
    with pytest.raises(WeightsMismatchError, match="mixes two exports"):
        load_model(x, device="cpu")
    assert load_model(a, device="cpu").vocab == ["cat", "dog"]


def test_bundle_files_honour_the_umask(cats, tmp_path):
    old = os.umask(0o022)
    try:
        bundle = _learner(cats).export(tmp_path / "model")
    finally:
        os.umask(old)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        assert stat.S_IMODE((bundle / name).stat().st_mode) == 0o644, name  # was 0o600: only the owner could read


def _bundle_json(**changes):
    data = {"format_version": 1, "arch": "resnet18", "source": "timm", "source_arch": "resnet18",
            "classes": ["cat", "dog"], "multilabel": False, "head": {"type": "linear"},
            "preprocessing": {"size": 32, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}}
    for key, value in changes.items():
        fields = data["preprocessing"] if key in ("size", "mean", "std") else data
        if value is DELETE:
            del fields[key]
        else:
            fields[key] = value
    return json.dumps(data)


@pytest.mark.parametrize("changes, match", [
    ({"arch": "hf-hub:timm/resnet18.a1_in1k"}, "Hugging Face Hub"),
    ({"arch": "open_clip:hf-hub:org/repo"}, "arch_config"),
    ({"std": [0.5, 0.0, 0.5]}, "'std' must be positive"),
    ({"std": [0.5, 0.5]}, "three finite numbers"),
    ({"mean": DELETE}, "preprocessing 'mean'"),  # was a raw KeyError
    ({"size": 0}, "'size' must be a positive"),
    ({"size": "224"}, "'size' must be a int"),
    ({"classes": "cat"}, "non-empty list"),
    ({"classes": []}, "non-empty list"),
    ({"classes": ["cat", "cat"]}, "names a class twice"),
    ({"multilabel": "yes"}, "'multilabel' must be a bool"),
    ({"head": ["linear"]}, "'head' must be a dict"),
])
def test_malformed_bundle_json_is_a_clear_error(changes, match):
    with pytest.raises(EasyTransferError, match=match):
        BundleConfig.from_json(_bundle_json(**changes))

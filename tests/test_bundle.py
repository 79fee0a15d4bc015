"""The bundle format: one versioned `BundleConfig`, written and read in one module; heads of every kind load back."""

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder
from helpers import DELETE, bundle_json, tiny_learner

from easytransfer import (
    BundleConfig,
    ClassifierLearner,
    HeadConfig,
    ImageData,
    build_model,
    load_model,
)
from easytransfer.deploy.bundle import (
    BUNDLE_FORMAT_VERSION,
    CONFIG_NAME,
    WEIGHTS_NAME,
    read_bundle_config,
)
from easytransfer.errors import EasyTransferError, WeightsMismatchError
from easytransfer.models.layer_groups import split_layer_groups
from easytransfer.tasks.loading import parse_task_config, read_model_config


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("bundle-data"), per_class=4, size=40)
    return ImageData.from_folder(root, valid_pct=0.25, seed=0, bs=4, size=32)


def _constructed_learner(dls, head: HeadConfig) -> ClassifierLearner:
    """A learner built with the constructor, not the factory, and no head config given."""
    model, spec = build_model("test_efficientnet", len(dls.vocab), pretrained=False, head=head)
    dls = dls.for_model(spec)
    return ClassifierLearner(dls, model, spec=spec, layer_groups=split_layer_groups(model))


@pytest.mark.parametrize("head", [HeadConfig("mlp"), HeadConfig("mlp", dropout=0.2, hidden=64),
                                  HeadConfig("linear", dropout=0.3), HeadConfig("linear")])
def test_a_constructed_learner_exports_a_bundle_that_loads(dls, head, tmp_path):
    learn = _constructed_learner(dls, head)
    assert learn.head_config == head
    bundle = learn.export(tmp_path / "model")
    predictor = load_model(bundle, device="cpu")
    x = torch.zeros(2, 3, 32, 32)
    learn.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(predictor.model(x), learn.model(x))


def test_the_json_carries_a_format_version_and_round_trips(dls, tmp_path):
    learn = _constructed_learner(dls, HeadConfig("mlp", hidden=64))
    bundle = learn.export(tmp_path / "model")
    data = json.loads((bundle / CONFIG_NAME).read_text())
    assert data["format_version"] == BUNDLE_FORMAT_VERSION and data["head"]["hidden"] == 64
    config = read_model_config(bundle)
    assert config == learn.bundle_config() and isinstance(config, BundleConfig)
    assert BundleConfig.from_json(config.to_json(), parse_task_config=parse_task_config) == config
    assert read_bundle_config(bundle).task_config == {"multilabel": False}  # without the registry: the JSON object


def test_a_newer_format_is_refused_with_the_fix(dls, tmp_path):
    bundle = _constructed_learner(dls, HeadConfig()).export(tmp_path / "model")
    data = json.loads((bundle / CONFIG_NAME).read_text())
    data["format_version"] = BUNDLE_FORMAT_VERSION + 1
    (bundle / CONFIG_NAME).write_text(json.dumps(data))
    with pytest.raises(EasyTransferError, match="upgrade easytransfer"):
        load_model(bundle)


def test_a_bundle_without_a_format_version_still_loads(dls, tmp_path):
    bundle = _constructed_learner(dls, HeadConfig()).export(tmp_path / "model")
    data = json.loads((bundle / CONFIG_NAME).read_text())
    del data["format_version"], data["head"]["hidden"]
    (bundle / CONFIG_NAME).write_text(json.dumps(data))
    assert load_model(bundle, device="cpu").config.format_version == 0


def test_the_predictor_runs_on_the_device_it_was_given(dls, tmp_path):
    bundle = _constructed_learner(dls, HeadConfig()).export(tmp_path / "model")
    predictor = load_model(bundle, device="cpu")
    assert predictor.device == torch.device("cpu")
    assert all(p.device.type == "cpu" for p in predictor.model.parameters())
    with pytest.raises(ValueError, match="not a device torch knows"):
        load_model(bundle, device="gpu")


def test_bundles_of_format_1_still_load(tmp_path):
    """Bundles written by easytransfer at ff1eba4 (format 1: the task guessed from its fields) load as before.

    tests/assets/bundles_v1.tar.gz was written by that commit (tiny random models, large tensors zeroed so the
    archive is small); expected.json holds each model's output on one image at the time.
    """
    import tarfile

    import numpy as np
    from PIL import Image

    from easytransfer.tasks.classification.config import ClassificationConfig
    from easytransfer.tasks.detection.model import DetectionConfig
    from easytransfer.tasks.segmentation.model import SegmentationConfig

    with tarfile.open(Path(__file__).parent / "assets" / "bundles_v1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "bundles_v1"
    expected = json.loads((root / "expected.json").read_text())
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 40, 3), dtype=np.uint8))
    for task, config_type in [("classification", ClassificationConfig), ("segmentation", SegmentationConfig),
                              ("detection", DetectionConfig)]:
        assert json.loads((root / task / CONFIG_NAME).read_text())["format_version"] == 1
        predictor = load_model(root / task, device="cpu")
        assert predictor.config.task == task and isinstance(predictor.config.task_config, config_type)
        if task == "classification":
            label, _, probs = predictor.predict(image)
            assert label == expected[task]["label"]
            np.testing.assert_allclose(probs, expected[task]["probs"], atol=1e-5)
            assert predictor.config.task_config.calibration is not None  # learn.calibrate() before the export
            assert predictor.predict_set(image).labels  # learn.conformal() before the export
        elif task == "segmentation":
            mask, probs = predictor.predict(image, probabilities=True)
            assert int(mask.sum()) == expected[task]["mask_sum"]
            np.testing.assert_allclose(probs.mean((1, 2)), expected[task]["probs_mean"], atol=1e-5)
        else:
            assert len(predictor.predict(image, score_threshold=0.0)) == expected[task]["n_boxes"]


def test_weights_beside_another_exports_json_are_refused(cats, bees, tmp_path):
    a = tiny_learner(cats).export(tmp_path / "a")
    x = tiny_learner(bees).export(tmp_path / "x")  # same architecture and class count, other classes
    shutil.copy(a / WEIGHTS_NAME, x / WEIGHTS_NAME)  # what two exports racing into one folder can leave
    with pytest.raises(WeightsMismatchError, match="mixes two exports"):
        load_model(x, device="cpu")
    assert load_model(a, device="cpu").vocab == ["cat", "dog"]


def test_bundle_files_honour_the_umask(cats, tmp_path):
    old = os.umask(0o022)
    try:
        bundle = tiny_learner(cats).export(tmp_path / "model")
    finally:
        os.umask(old)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        assert stat.S_IMODE((bundle / name).stat().st_mode) == 0o644, name  # was 0o600: only the owner could read


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
        BundleConfig.from_json(bundle_json(**changes))

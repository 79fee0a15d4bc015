"""The bundle format: one versioned `BundleConfig`, written and read in one module; heads of every kind load back."""

import json

import pytest
import torch
from conftest import make_image_folder

from easytransfer import BundleConfig, HeadConfig, ImageData, TransferLearner, build_model, load_model
from easytransfer.deploy.bundle import BUNDLE_FORMAT_VERSION, CONFIG_NAME, read_bundle_config
from easytransfer.errors import EasyTransferError
from easytransfer.models.layer_groups import split_layer_groups


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("bundle-data"), per_class=4, size=40)
    return ImageData.from_folder(root, valid_pct=0.25, seed=0, bs=4, size=32)


def _constructed_learner(dls, head: HeadConfig) -> TransferLearner:
    """A learner built with the constructor, not the factory, and no head config given."""
    model, spec = build_model("test_efficientnet", len(dls.vocab), pretrained=False, head=head)
    dls = dls.for_model(spec)
    return TransferLearner(dls, model, spec=spec, layer_groups=split_layer_groups(model))


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
    config = read_bundle_config(bundle)
    assert config == learn.bundle_config() and isinstance(config, BundleConfig)
    assert BundleConfig.from_json(config.to_json()) == config


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

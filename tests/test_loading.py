"""Tests of easytransfer/tasks/loading.py (moved here from the history-named test files: faults, student, contracts ...)."""

import json

import pytest
from helpers import bundle_json, tiny_learner

from easytransfer import load_model
from easytransfer.deploy.bundle import CONFIG_NAME, BundleConfig, read_bundle_config
from easytransfer.errors import EasyTransferError


def test_load_model_never_builds_a_hub_model(cats, tmp_path, monkeypatch):
    bundle = tiny_learner(cats).export(tmp_path / "model")
    data = json.loads((bundle / CONFIG_NAME).read_text())
    data["arch"] = "hf-hub:timm/resnet18.a1_in1k"
    (bundle / CONFIG_NAME).write_text(json.dumps(data))

    def no_network(*args, **kwargs):
        raise AssertionError("load_model tried to build a model from the Hugging Face Hub")

    monkeypatch.setattr("easytransfer.tasks.classification.predictor.build_model", no_network)
    with pytest.raises(EasyTransferError, match="never downloads"):
        load_model(bundle)
    with pytest.raises(EasyTransferError, match="never downloads"):
        read_bundle_config(bundle)


def test_a_hub_model_bundle_with_its_timm_architecture_rebuilds_offline(monkeypatch):
    """An export of an ``hf-hub:`` timm model records the architecture (arch_config), so loading it is offline."""
    import timm

    from easytransfer.models.backends.timm import TimmBackend
    from easytransfer.models.heads import HeadConfig

    hub = "hf-hub:timm/test_convnext.r160_in1k"
    config = BundleConfig.from_json(bundle_json(arch=hub, arch_config={"timm_architecture": "test_convnext"}))
    assert config.arch == hub and config.arch_config == {"timm_architecture": "test_convnext"}
    create = timm.create_model

    def offline_create(name, *args, **kwargs):
        assert not str(name).startswith("hf-hub:"), "built from the Hub"
        return create(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    model, spec = TimmBackend().build(hub, hub, 2, pretrained=False, weights=None, head=HeadConfig(),
                                      arch_config=config.arch_config)
    assert spec.arch == hub and spec.arch_config == {"timm_architecture": "test_convnext"}
    assert model.get_classifier().out_features == 2

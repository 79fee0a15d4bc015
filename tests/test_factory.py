import pytest

from easytransfer import UnknownModelError, create_model, get_model_spec, list_models
from easytransfer.models import resolve_arch
from easytransfer.models.layer_groups import split_layer_groups


def test_spec_comes_from_the_pretrained_config():
    spec = get_model_spec("efficientnet_lite0")
    assert spec.arch == "tf_efficientnet_lite0" and spec.family == "efficientnet"
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.5, 0.5, 0.5)
    assert spec.interpolation == "bicubic" and spec.size == 224
    assert spec.offline_weights is True
    assert get_model_spec("resnet50").mean == pytest.approx((0.485, 0.456, 0.406))


def test_unknown_name_lists_close_names():
    with pytest.raises(UnknownModelError, match="resnet50"):
        resolve_arch("resnet_50")


def test_list_models_filters_and_knows_offline_weights():
    assert "efficientnet_lite0" in list_models("*lite0*", offline_only=True)
    assert all("convnext" in n for n in list_models("*convnext*"))
    assert "resnet50" not in list_models("*", offline_only=True)


def test_convnext_keeps_its_pretrained_head_norm():
    model = create_model("test_convnext", 3, pretrained=False)
    groups = split_layer_groups(model)
    assert any(n.startswith("head.norm") for n in groups.names[-2])  # last body group, not dropped
    assert all(n.startswith("head.fc") for n in groups.names[-1])


def test_resnet_two_stages_match_fastai_split():
    model = create_model("resnet50", 3, pretrained=False)
    groups = split_layer_groups(model, n_stages=2)
    tops = [sorted({n.split(".")[0] for n in g}) for g in groups.names]
    assert tops == [["bn1", "conv1", "layer1", "layer2"], ["layer3", "layer4"], ["fc"]]

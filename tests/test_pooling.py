"""A CNN's global pooling layer: found in timm and torchvision models, swapped, and pooled several ways in one pass
with the same rows as one pass per pooling."""

import pytest
import torch
from torch import nn

from easytransfer import create_model
from easytransfer.models.pooling import (
    find_global_pool,
    global_pool_type,
    pooled_several_ways,
    set_global_pool,
)


@pytest.mark.parametrize("arch, path", [("test_efficientnet", "global_pool"), ("convnext_atto", "head.global_pool"),
                                        ("tv:resnet18", "avgpool")])
def test_the_pooling_layer_of_timm_and_torchvision_cnns_is_found_and_swapped(arch, path):
    model = create_model(arch, 3, pretrained=False).eval()
    assert find_global_pool(model)[0] == path
    assert global_pool_type(model) == "avg"
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        avg = model(x)
        set_global_pool(model, "max")
        assert global_pool_type(model) == "max"
        maxed = model(x)
    assert maxed.shape == avg.shape and not torch.allclose(maxed, avg)


def test_one_pass_pooled_several_ways_gives_each_poolings_rows():
    model = create_model("convnext_atto", 3, pretrained=False).eval()  # a norm after the pooling: per image
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        with pooled_several_ways(model, ("avg", "max")):
            both = model(x)
        assert global_pool_type(model) == "avg"  # the model's own layer is back
        avg = model(x)
        set_global_pool(model, "max")
        maxed = model(x)
    torch.testing.assert_close(both, torch.cat([avg, maxed]))


def test_a_model_without_one_global_pooling_layer_has_none_to_vary():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert find_global_pool(model) is None and global_pool_type(model) is None
    with pytest.raises(ValueError, match="no single global pooling layer"):
        set_global_pool(model, "max")
    two = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1))
    assert find_global_pool(two) is None


def test_a_channels_last_pooling_layer_stays_channels_last():
    model = create_model("sequencer2d_s", 2, pretrained=False).eval()  # timm pools its (B, H, W, C) maps
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        with pooled_several_ways(model, ("avg", "max")):
            both = model(x)
        set_global_pool(model, "max")
        maxed = model(x)
    assert both.shape == (4, 2)
    torch.testing.assert_close(both[2:], maxed)

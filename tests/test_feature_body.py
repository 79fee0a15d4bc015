"""`FeatureBody`, the record a backend's ``create_features`` returns, and `NoMultiScaleFeaturesError`."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from easytransfer.errors import EasyTransferError
from easytransfer.models.feature_body import FeatureBody, NoMultiScaleFeaturesError, as_nchw


def body(reductions=(4, 8, 16, 32), channels=(8, 16, 32, 64)):
    return FeatureBody(nn.Identity(), channels, reductions, (("w",),), arch="some_cnn")


def test_indices_at_finds_the_last_map_at_each_stride():
    assert body().indices_at((8, 16, 32)) == (1, 2, 3)
    dilated = body((2, 4, 8, 16, 16), (8, 16, 24, 32, 64))
    assert dilated.indices_at((8, 16)) == (2, 4) and dilated.output_stride == 16


def test_a_missing_stride_names_the_body_and_the_fix():
    with pytest.raises(NoMultiScaleFeaturesError, match=r"'some_cnn' gives no multi-scale feature maps: no feature "
                       r"map at stride\(s\) \[32\].*To fix it, use a CNN backbone") as caught:
        body((4, 8, 16), (8, 16, 32)).indices_at((8, 16, 32))
    assert isinstance(caught.value, EasyTransferError) and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(("reductions", "channels"), [((8, 4), (1, 2)), ((4, 8), (1,)), ((), ())])
def test_malformed_bodies_are_refused(reductions, channels):
    with pytest.raises(ValueError, match="[Ff]eature"):
        body(reductions, channels)


def test_as_nchw_turns_channels_last_maps_around():
    maps = [torch.zeros(1, 4, 5, 3)]
    assert as_nchw(maps, channels_last=True)[0].shape == (1, 3, 4, 5)
    assert as_nchw(maps, channels_last=False)[0] is maps[0]

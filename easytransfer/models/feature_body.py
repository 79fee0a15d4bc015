"""`FeatureBody`: a backbone as a multi-scale feature extractor, the body of every dense task.

A segmentation encoder and a detection body are the same thing: a backbone cut before its pooling and head that
returns its feature maps at several strides. Each backend makes one with ``create_features`` (timm: the model's
``features_only`` form; torchvision: ``create_feature_extractor`` at the last block of each stride), loads the
full classifier's pre-trained weights into it strictly (`load_body_weights`), and groups its parameters into
natural stages with its own group matcher. Tasks then put a decoder (smp) or a feature pyramid (torchvision) on
top, and split layer groups with `feature_layer_groups`.

>>> from easytransfer.models import create_features
>>> body = create_features("convnext_atto", pretrained=False)
>>> body.channels, body.reductions, len(body.stages)
((40, 80, 160, 320), (4, 8, 16, 32), 5)
>>> [tuple(f.shape[1:]) for f in body.module(torch.zeros(1, 3, 64, 64))][:2]
[(40, 16, 16), (80, 8, 8)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import EasyTransferError

__all__ = ["FeatureBody", "NoMultiScaleFeaturesError"]


class NoMultiScaleFeaturesError(EasyTransferError, ValueError):
    """A backbone that cannot give the multi-scale feature maps a dense task (segmentation, detection) needs."""

    def __init__(self, name: str, reason: str, fix: str | None = None):
        self.name = name
        self.reason = reason
        fix = fix or ("use a CNN backbone with feature maps at strides 8, 16 and 32: a timm CNN ('convnext_atto', "
                      "'efficientnet_lite0', 'resnet18') or a torchvision one ('tv:resnet18', 'tv:mobilenet_v2')")
        super().__init__(f"{name!r} gives no multi-scale feature maps: {reason}. To fix it, {fix}.")


@dataclass(frozen=True, eq=False)
class FeatureBody:
    """A backbone's multi-scale body, as a backend's ``create_features`` returns it.

    Attributes:
        module: the body; ``module(x)`` returns a list of feature maps, highest resolution first.
        channels: channels of each map.
        reductions: stride of each map relative to the input (``(2, 4, 8, 16, 32)``; ConvNeXt starts at 4;
            a dilated body repeats its last stride: ``(2, 4, 8, 16, 16)``).
        stages: the module's own parameter names per natural stage, stem first (from the backend's group
            matcher), every parameter in exactly one; `feature_layer_groups` buckets them.
        weights: where the weights came from (``"random init"``, ``"package ..."``, ``"file ..."``).
        source, arch: the backend and its name for the architecture (``"timm"``, ``"convnext_atto"``).
        channels_last: the maps come as (N, H, W, C) (timm's Swin); `as_nchw` turns them around.
    """

    module: nn.Module
    channels: tuple[int, ...]
    reductions: tuple[int, ...]
    stages: tuple[tuple[str, ...], ...]
    weights: str = "random init"
    source: str = ""
    arch: str = ""
    channels_last: bool = False

    def __post_init__(self):
        if len(self.channels) != len(self.reductions) or not self.channels:
            raise ValueError(f"A feature body needs one channel count per stride, got channels={self.channels} "
                             f"and reductions={self.reductions}.")
        if list(self.reductions) != sorted(self.reductions):
            raise ValueError(f"Feature maps must come highest resolution first, got reductions={self.reductions}.")

    @property
    def output_stride(self) -> int:
        """The stride of the last (coarsest) map."""
        return int(self.reductions[-1])

    def indices_at(self, strides: Sequence[int]) -> tuple[int, ...]:
        """The index of the map at each of `strides` (the last one at that stride).

        Raises:
            NoMultiScaleFeaturesError: a stride the body has no map at.

        >>> body = FeatureBody(nn.Identity(), (16, 24, 40), (4, 8, 16), ((),), arch="x")
        >>> body.indices_at((8, 16))
        (1, 2)
        """
        last = {r: i for i, r in enumerate(self.reductions)}
        absent = [s for s in strides if s not in last]
        if absent:
            raise NoMultiScaleFeaturesError(self.arch or self.source, f"no feature map at stride(s) {absent} "
                                            f"(its maps are at strides {list(self.reductions)})")
        return tuple(last[s] for s in strides)


def as_nchw(features: Sequence[torch.Tensor], channels_last: bool) -> list[torch.Tensor]:
    """The body's maps as (N, C, H, W), whatever layout the body gives them in."""
    if channels_last:
        return [f.permute(0, 3, 1, 2).contiguous() for f in features]
    return list(features)

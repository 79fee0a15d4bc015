"""Segmentation models: a timm backbone as the encoder of a segmentation_models_pytorch decoder (U-Net, FPN ...).

The encoder is smp's ``tu-`` (timm universal) encoder: timm's ``features_only`` version of the backbone. Its
ImageNet weights come through easytransfer's one weights resolver (`load_pretrained`: a local file, the
packaged offline weights, the hub): the full timm model is loaded, and its state dict, filtered to the
``features_only`` body's keys, is loaded strictly into the body (nothing may be missing). The layer groups of
the body come from the full model's ``group_matcher`` (a ``features_only`` model has none; its parameter names
are the full model's), plus one group for the decoder and the segmentation head.

>>> model, spec = build_segmentation_model("test_efficientnet", 3, head="fpn", pretrained=False)
>>> model(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 3, 64, 64])
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import timm
import timm.models
import torch
from torch import nn

from ...choices import SEGMENTATION_HEADS as SEGMENTATION_HEADS
from ...models.factory import get_model_spec, resolve_arch
from ...models.layer_groups import LayerGroups, bucket_stages
from ...models.spec import ModelSpec
from ...models.weights import load_pretrained, load_state_dict_strict
from ..registry import HeadSupport

__all__ = ["ENCODER_PREFIX", "SEGMENTATION_HEADS", "SegmentationConfig", "build_segmentation_model",
           "encoder_layer_groups", "load_encoder_weights", "segmentation_heads"]

ENCODER_PREFIX = "encoder.model."  # where smp's timm universal encoder keeps the features_only timm model
DECODER_PATHS = "decoder,segmentation_head"



_CNN = "timm CNNs with a features_only form and 5 feature levels (EfficientNet(-Lite), MobileNet, ResNet, ConvNeXt ...)"
_OFFLINE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100")
_NOTES = {
    "unet": "skip connections at every scale: thin structures and exact borders (cracks, defects); the default",
    "fpn": "feature pyramid, output at 1/4 resolution then upsampled: lighter, good for larger regions",
    "deeplabv3plus": "atrous pyramid pooling (output stride 16) + a light decoder: wide context, larger objects",
    "unetplusplus": "nested U-Net: a little more accurate at borders, about 3x the decoder compute",
    "linknet": "additive skip connections: the lightest decoder, for CPUs",
}


def segmentation_heads() -> tuple[HeadSupport, ...]:
    """The segmentation heads and the backbones each works with.

    >>> [h.head for h in segmentation_heads()][:3]
    ['unet', 'fpn', 'deeplabv3plus']
    """
    return tuple(HeadSupport("segmentation", name, _CNN, _OFFLINE, _NOTES[name]) for name in SEGMENTATION_HEADS)


@dataclass(frozen=True)
class SegmentationConfig:
    """What a segmentation model is besides its backbone: recorded in the bundle, rebuilt by `load_model`.

    Attributes:
        head: the decoder (a key of `SEGMENTATION_HEADS`).
        ignore_index: the mask value that is no class, or ``None``.

    >>> SegmentationConfig.from_dict(SegmentationConfig("fpn", 255).to_dict())
    SegmentationConfig(head='fpn', ignore_index=255)
    """

    head: str = "unet"
    ignore_index: int | None = None

    def __post_init__(self):
        if self.head not in SEGMENTATION_HEADS:
            raise ValueError(f"head must be one of {sorted(SEGMENTATION_HEADS)} for segmentation, got {self.head!r}")

    def to_dict(self) -> dict:
        return {"head": self.head, "ignore_index": self.ignore_index}

    @classmethod
    def from_dict(cls, data: dict) -> SegmentationConfig:
        ignore = data.get("ignore_index")
        return cls(head=str(data.get("head", "unet")), ignore_index=None if ignore is None else int(ignore))


def load_encoder_weights(body: nn.Module, full: nn.Module, *, where: str) -> None:
    """Load a full timm model's weights into its ``features_only`` `body`: the full state dict filtered to the
    body's keys, loaded strictly (`WeightsMismatchError` when one is missing or of another shape)."""
    own = body.state_dict()
    state = {k: v for k, v in full.state_dict().items() if k in own}
    load_state_dict_strict(body, state, where=where)


def build_segmentation_model(arch: str, n_classes: int, *, head: str = "unet", pretrained: bool = True,
                             weights: str | os.PathLike | None = None) -> tuple[nn.Module, ModelSpec]:
    """A segmentation model: `arch` (a timm name or alias) as the encoder of the `head` decoder, `n_classes` out.

    Args:
        arch: ``"efficientnet_lite0"``, ``"mobilenetv2_100"``, ``"resnet34"`` ... (timm models only).
        n_classes: output channels (classes, background included).
        head: ``"unet"``, ``"fpn"``, ``"deeplabv3plus"``, ``"unetplusplus"`` or ``"linknet"``.
        pretrained: load ImageNet weights into the encoder (`load_pretrained`: packaged weights work offline).
        weights: a local weights file of the full `arch` classifier instead.

    Returns:
        ``(model, spec)``: the smp model (logits of shape (N, n_classes, H, W)) and the backbone's `ModelSpec`,
        whose ``classifier`` names the decoder and head modules and ``weights`` where the encoder's came from.
    """
    import segmentation_models_pytorch as smp

    config = SegmentationConfig(head)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    source, timm_arch = resolve_arch(arch)
    if source != "timm":
        raise ValueError(f"{arch!r} ({source}) cannot be a segmentation encoder; use a timm model such as "
                         "'efficientnet_lite0', 'mobilenetv2_100' or 'resnet34'.")
    spec = get_model_spec(arch)
    model = getattr(smp, SEGMENTATION_HEADS[config.head])(encoder_name=f"tu-{timm_arch}", encoder_weights=None,
                                                          classes=n_classes)
    loaded = "random init"
    if pretrained or weights is not None:
        full = timm.create_model(timm_arch, pretrained=False)
        loaded = load_pretrained(full, timm_arch, weights=weights, source="timm")
        load_encoder_weights(model.encoder.model, full, where=loaded)
    return model, replace(spec, weights=loaded, classifier=DECODER_PATHS)


def encoder_layer_groups(model: nn.Module, arch: str, n_stages: int | None = None) -> LayerGroups:
    """The encoder's stages (from the full timm model's ``group_matcher``), bucketed into `n_stages` groups,
    then one group for the decoder and segmentation head.

    >>> model, _ = build_segmentation_model("test_efficientnet", 2, pretrained=False)
    >>> groups = encoder_layer_groups(model, "test_efficientnet", 2); len(groups), groups.names[0][0]
    (3, 'encoder.model.conv_stem.weight')
    """
    _, timm_arch = resolve_arch(arch)
    with torch.device("meta"):  # only its group matcher is read
        full = timm.create_model(timm_arch, pretrained=False)
    body = model.encoder.model
    grouped = timm.models.group_parameters(body, full.group_matcher(coarse=True))
    stages = [[ENCODER_PREFIX + n for n in grouped[k]] for k in sorted(grouped)]
    stages = [s for s in stages if s]
    encoder = {ENCODER_PREFIX + n for n, _ in body.named_parameters()}
    rest = [n for n, _ in model.named_parameters() if n not in encoder]
    others = [n for n in rest if n.startswith("encoder.")]  # encoder parameters outside the timm body: none known
    if others:
        stages[0] = others + stages[0]
    head = tuple(n for n in rest if not n.startswith("encoder."))
    return LayerGroups(names=tuple(bucket_stages(stages, n_stages)) + (head,))

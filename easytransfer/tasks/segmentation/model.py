"""Segmentation models: any backbone's feature body as the encoder of a segmentation_models_pytorch decoder.

The encoder is the backbone's multi-scale body from its backend (`create_features`: timm's ``features_only``
model, or a torchvision CNN cut at each stride), wrapped as an smp encoder (`FeatureEncoder`); the decoders and
the segmentation head are smp's own (U-Net, FPN, DeepLabV3+, U-Net++, LinkNet). Pre-trained weights are the full
classifier's, loaded into the body strictly by the backend (nothing may be missing). The layer groups are the
body's natural stages (its backend's group matcher), plus one group for the decoder and the segmentation head.

>>> model, spec = build_segmentation_model("test_efficientnet", 3, head="fpn", pretrained=False)
>>> model(torch.zeros(1, 3, 64, 64)).shape
torch.Size([1, 3, 64, 64])
>>> model, spec = build_segmentation_model("tv:resnet18", 2, pretrained=False)  # torchvision backbones too
>>> model(torch.zeros(1, 3, 64, 64)).shape, len(encoder_layer_groups(model))
(torch.Size([1, 2, 64, 64]), 5)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

import torch
from segmentation_models_pytorch.base import SegmentationHead, SegmentationModel
from segmentation_models_pytorch.decoders.deeplabv3.decoder import DeepLabV3PlusDecoder
from segmentation_models_pytorch.decoders.fpn.decoder import FPNDecoder
from segmentation_models_pytorch.decoders.linknet.decoder import LinknetDecoder
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoder
from segmentation_models_pytorch.decoders.unetplusplus.decoder import UnetPlusPlusDecoder
from torch import nn

from ...choices import SEGMENTATION_HEADS as SEGMENTATION_HEADS
from ...models.backends import backend_for
from ...models.factory import get_model_spec
from ...models.feature_body import FeatureBody, NoMultiScaleFeaturesError, as_nchw
from ...models.layer_groups import LayerGroups, feature_layer_groups
from ...models.spec import ModelSpec
from ..registry import HeadSupport

__all__ = ["SEGMENTATION_HEADS", "DecoderHead", "EncoderLayout", "FeatureEncoder", "FeatureSegmentationModel",
           "SegmentationConfig", "build_segmentation_model", "encoder_layer_groups", "segmentation_heads"]

# where the feature body sits: where smp's ``tu-`` encoders keep timm's body too, so that bundles written when the
# encoder was smp's own load unchanged
ENCODER_BODY = "encoder.model"
DECODER_PATHS = "decoder,segmentation_head"
DEEPLAB_OUTPUT_STRIDE = 16  # smp's DeepLabV3+ default: its last stage dilated, as in the paper


_CNN = ("CNNs with feature maps at strides 2 (or 4) to 32, from any source: timm (EfficientNet(-Lite), MobileNet, "
        "ResNet, ConvNeXt, RegNet ...) and torchvision ('tv:resnet18', 'tv:mobilenet_v2', 'tv:convnext_tiny' ...); "
        "not ViTs or CLIP towers")
_DILATED = ("timm CNNs that take output_stride=16 (EfficientNet, MobileNet, ResNet, ConvNeXt, RegNet ...); torchvision "
            "bodies are not dilated here")
_OFFLINE = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100")
_OFFLINE_TORCHVISION = ("tv:mobilenet_v2",)  # not for DeepLabV3+: torchvision bodies are not dilated here
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
    return tuple(HeadSupport("segmentation", name, _DILATED if name == "deeplabv3plus" else _CNN,
                             _OFFLINE if name == "deeplabv3plus" else _OFFLINE + _OFFLINE_TORCHVISION, _NOTES[name])
                 for name in SEGMENTATION_HEADS)


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


class FeatureEncoder(nn.Module):
    """A `FeatureBody` as an smp encoder: ``forward(x)`` gives ``[x, f/2, f/4, f/8, f/16, f/32]``, with
    ``out_channels`` and ``output_stride`` as smp's decoders read them.

    A body whose maps start at stride 4 (ConvNeXt, Swin) gets an empty stride-2 map (0 channels), as smp's own
    ``tu-`` encoders do for them; maps at stride 1 (VGG) are left out. The body sits at ``model`` (smp's place).

    Attributes:
        model: the body module; stages: its parameter names per natural stage (`FeatureBody.stages`).

    >>> from easytransfer.models import create_features
    >>> encoder = FeatureEncoder(create_features("convnext_atto", pretrained=False))
    >>> encoder.out_channels, [tuple(f.shape[1:]) for f in encoder(torch.zeros(1, 3, 64, 64))][1]
    ([3, 0, 40, 80, 160, 320], (0, 32, 32))
    """

    def __init__(self, body: FeatureBody, in_channels: int = 3):
        super().__init__()
        keep = [i for i, r in enumerate(body.reductions) if r >= 2]
        if len(keep) >= 5 and body.reductions[keep[-5]] == 2:
            keep, self.pad_half = keep[-5:], False
        elif len(keep) >= 4 and body.reductions[keep[-4]] == 4:
            keep, self.pad_half = keep[-4:], True
        else:
            raise NoMultiScaleFeaturesError(body.arch, "smp's decoders take maps at strides 2 (or 4), 4, 8, 16 and "
                                            f"32; its maps are at strides {list(body.reductions)}")
        self.model = body.module
        self.indices = tuple(keep)
        self.channels_last = body.channels_last
        self.stages = body.stages
        self._out_channels = [in_channels] + ([0] if self.pad_half else []) + [body.channels[i] for i in keep]
        self._output_stride = int(body.reductions[keep[-1]])

    @property
    def out_channels(self) -> list[int]:
        return self._out_channels

    @property
    def output_stride(self) -> int:
        return self._output_stride

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = as_nchw(self.model(x), self.channels_last)
        maps = [maps[i] for i in self.indices]
        if self.pad_half:  # smp's placeholder for the missing stride-2 level: no channels, half the size (as smp's
            # H // 2), a slice of the input rather than a new tensor, so that tracing follows the batch size
            maps = [x[:, :0, : x.shape[2] // 2, : x.shape[3] // 2], *maps]
        return [x, *maps]


class FeatureSegmentationModel(SegmentationModel):
    """An smp decoder and segmentation head over a `FeatureEncoder`: smp's ``SegmentationModel`` (its ``forward``,
    input-shape check and ``predict``), built from parts instead of from an encoder name.

    Module names are smp's (``encoder``, ``decoder``, ``segmentation_head``), so that weights of models built by
    smp's own classes load into it.
    """

    def __init__(self, encoder: FeatureEncoder, decoder: nn.Module, segmentation_head: nn.Module, *,
                 divisible_input: bool):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.segmentation_head = segmentation_head
        self.classification_head = None
        self.requires_divisible_input_shape = divisible_input  # smp's U-Net pads itself; the others do not


def _decoder_and_head(head: str, channels: list[int], n_classes: int) -> tuple[nn.Module, nn.Module, bool]:
    """smp's decoder and segmentation head for `head` over encoder `channels`, with the arguments and defaults
    smp's model classes (``smp.Unet`` ...) give them; the flag says whether smp initialises them (not DeepLab)."""
    unet_channels = (256, 128, 64, 32, 16)
    if head == "unet":
        decoder = UnetDecoder(encoder_channels=channels, decoder_channels=unet_channels, n_blocks=5,
                              use_norm="batchnorm", add_center_block=False, attention_type=None,
                              interpolation_mode="nearest")
        return decoder, SegmentationHead(unet_channels[-1], n_classes, activation=None, kernel_size=3), True
    if head == "unetplusplus":
        decoder = UnetPlusPlusDecoder(encoder_channels=channels, decoder_channels=unet_channels, n_blocks=5,
                                      use_norm="batchnorm", center=False, attention_type=None,
                                      interpolation_mode="nearest")
        return decoder, SegmentationHead(unet_channels[-1], n_classes, activation=None, kernel_size=3), True
    if head == "fpn":
        decoder = FPNDecoder(encoder_channels=channels, encoder_depth=5, pyramid_channels=256,
                             segmentation_channels=128, dropout=0.2, merge_policy="add", interpolation_mode="nearest")
        return decoder, SegmentationHead(decoder.out_channels, n_classes, activation=None, kernel_size=1,
                                         upsampling=4), True
    if head == "deeplabv3plus":
        decoder = DeepLabV3PlusDecoder(encoder_channels=channels, encoder_depth=5, out_channels=256,
                                       atrous_rates=(12, 24, 36), output_stride=DEEPLAB_OUTPUT_STRIDE,
                                       aspp_separable=True, aspp_dropout=0.5)
        return decoder, SegmentationHead(256, n_classes, activation=None, kernel_size=1, upsampling=4), False
    decoder = LinknetDecoder(encoder_channels=channels, n_blocks=5, prefinal_channels=32, use_norm="batchnorm")
    return decoder, SegmentationHead(32, n_classes, activation=None, kernel_size=1), True


def build_segmentation_model(arch: str, n_classes: int, *, head: str = "unet", pretrained: bool = True,
                             weights: str | os.PathLike | None = None) -> tuple[nn.Module, ModelSpec]:
    """A segmentation model: `arch` (any backend's CNN) as the encoder of the `head` decoder, `n_classes` out.

    Args:
        arch: ``"efficientnet_lite0"``, ``"mobilenetv2_100"``, ``"convnext_atto"``, ``"resnet34"``,
            ``"tv:resnet18"``, ``"tv:mobilenet_v2"`` ...
        n_classes: output channels (classes, background included).
        head: ``"unet"``, ``"fpn"``, ``"deeplabv3plus"``, ``"unetplusplus"`` or ``"linknet"``.
        pretrained: load ImageNet weights into the encoder (`load_pretrained`: packaged weights work offline).
        weights: a local weights file of the full `arch` classifier instead.

    Returns:
        ``(model, spec)``: the model (logits of shape (N, n_classes, H, W)) and the backbone's `ModelSpec`,
        whose ``classifier`` names the decoder and head modules and ``weights`` where the encoder's came from.

    Raises:
        NoMultiScaleFeaturesError: `arch` has no feature maps at the strides the decoder needs, with the fix.
    """
    config = SegmentationConfig(head)
    if n_classes < 1:
        raise ValueError(f"n_classes must be at least 1, got {n_classes}")
    backend, source_arch = backend_for(arch)
    spec = get_model_spec(arch)
    output_stride = DEEPLAB_OUTPUT_STRIDE if config.head == "deeplabv3plus" else None
    body = backend.create_features(source_arch, pretrained=pretrained, weights=weights, output_stride=output_stride,
                                   name=arch)
    encoder = FeatureEncoder(body)
    decoder, segmentation_head, initialise = _decoder_and_head(config.head, encoder.out_channels, n_classes)
    model = FeatureSegmentationModel(encoder, decoder, segmentation_head, divisible_input=config.head != "unet")
    if initialise:
        model.initialize()
    return model, replace(spec, weights=body.weights, classifier=DECODER_PATHS)


@dataclass(frozen=True)
class EncoderLayout:
    """The shape (channels, height, width) of each of an smp encoder's outputs at one input size, and which of them
    carry features (`kept`): what a cache of the encoder's maps stores.

    smp's encoders give the input image first (the decoders read only its size) and, for bodies whose maps start at
    stride 4, an empty stride-2 map; neither is kept: `restore` gives them back as empty tensors of their size.

    >>> model, _ = build_segmentation_model("test_efficientnet", 2, pretrained=False)
    >>> layout = EncoderLayout.of(model.encoder(torch.zeros(1, 3, 64, 64)))
    >>> layout.kept, layout.shapes[1]
    ((1, 2, 3, 4, 5), (16, 32, 32))
    """

    shapes: tuple[tuple[int, int, int], ...]

    @classmethod
    def of(cls, features: list[torch.Tensor]) -> EncoderLayout:
        """The layout of one batch of encoder outputs."""
        return cls(tuple((int(f.shape[1]), int(f.shape[2]), int(f.shape[3])) for f in features))

    @property
    def kept(self) -> tuple[int, ...]:
        """The positions of the outputs with features (not the input image, not an empty placeholder)."""
        return tuple(i for i, (channels, _, _) in enumerate(self.shapes) if i > 0 and channels > 0)

    def keep(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        """The outputs at `kept` of one batch of encoder outputs."""
        return [features[i] for i in self.kept]

    def restore(self, maps) -> list[torch.Tensor]:
        """The encoder's outputs again from the `kept` `maps`: the others as empty (0-channel) tensors of their size,
        scaled as the maps are to the layout's (a window of the maps restores a window of the image)."""
        by_position, first = dict(zip(self.kept, maps)), maps[0]
        (_, kh, kw), (mh, mw) = self.shapes[self.kept[0]], first.shape[-2:]
        return [by_position[i] if i in by_position else first.new_empty((first.shape[0], 0, h * mh // kh, w * mw // kw))
                for i, (_, h, w) in enumerate(self.shapes)]


class DecoderHead(nn.Module):
    """An smp model's decoder and segmentation head as one module over the encoder's feature maps: what the frozen
    stage trains on cached maps. The modules are the model's own (not copies): training this trains the model.

    ``forward(*maps)`` takes the encoder's `EncoderLayout.kept` outputs in order and gives the model's logits.

    >>> model, _ = build_segmentation_model("test_efficientnet", 2, pretrained=False)
    >>> x = torch.randn(2, 3, 64, 64); _ = model.eval()
    >>> maps = model.encoder(x); layout = EncoderLayout.of(maps)
    >>> torch.allclose(DecoderHead(model, layout)(*layout.keep(maps)), model(x), atol=1e-5)
    True
    """

    def __init__(self, model: nn.Module, layout: EncoderLayout):
        super().__init__()
        self.decoder, self.segmentation_head = model.decoder, model.segmentation_head
        self.layout = layout

    def forward(self, *maps: torch.Tensor) -> torch.Tensor:
        return self.segmentation_head(self.decoder(self.layout.restore(maps)))


def encoder_layer_groups(model: nn.Module, n_stages: int | None = None) -> LayerGroups:
    """The encoder body's natural stages (its backend's group matcher) bucketed into `n_stages` groups, then one
    group for the decoder and segmentation head (`feature_layer_groups`).

    >>> model, _ = build_segmentation_model("test_efficientnet", 2, pretrained=False)
    >>> groups = encoder_layer_groups(model, 2); len(groups), groups.names[0][0]
    (3, 'encoder.model.conv_stem.weight')
    """
    return feature_layer_groups(model, ENCODER_BODY, model.encoder.stages, n_stages)

"""Object detectors: torchvision's Faster R-CNN, RetinaNet and FCOS over a timm backbone with a feature pyramid.

The backbone is a timm ``features_only`` body (strides 8, 16 and 32) under torchvision's
`FeaturePyramidNetwork`, as torchvision's own `BackboneWithFPN` does for ResNets. Its pre-trained weights are
the full timm model's (the packaged offline ones for ``efficientnet_lite0`` and ``mobilenetv2_100``), loaded
into the body strictly: every body tensor must come from them. The detector normalises images itself with the
backbone's pre-training mean and std (``image_mean`` / ``image_std`` of torchvision's transform), so the data
stays in [0, 1].

Layer groups: the body's groups come from the full timm model's ``group_matcher(coarse=True)`` (a
``features_only`` body has none), applied to the body's parameter names, then bucketed into `n_stages` as for
classification; the feature pyramid and the detection heads form the last ("head") group.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict, dataclass

import numpy as np
import timm
from timm.models._manipulate import group_with_matcher
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ...choices import DETECTION_HEADS as DETECTION_HEADS
from ...errors import EasyTransferError
from ...models.backends import backend_for
from ...models.layer_groups import DEFAULT_N_STAGES, LayerGroups
from ...models.weights import load_pretrained, load_state_dict_strict
from ..registry import HeadSupport

__all__ = ["DETECTION_HEADS", "DetectionConfig", "TimmFPNBackbone", "build_detector",
           "detection_heads", "detection_layer_groups"]

FEATURE_STRIDES = (8, 16, 32)  # C3-C5, as torchvision's RetinaNet and FCOS; Faster R-CNN adds a max-pooled level
# torchvision's 1000 (2000 in training) are for 800-1333 px COCO images; measured at 128 px on 2 CPU cores the box
# head over 1000 proposals takes ~4 s per batch of 2, and a 320 px image rarely has more than a few objects.
DEFAULT_PROPOSALS = 300
TESTED_BACKBONES = ("efficientnet_lite0", "mobilenetv2_100", "resnet18", "resnet50")


_HEAD_DESCRIPTIONS = {
    "fasterrcnn": "torchvision FasterRCNN: two-stage (RPN + RoI heads), 4 pyramid levels (P3-P5 + max-pooled P6)",
    "retinanet": "torchvision RetinaNet: one-stage, focal loss, 5 pyramid levels (P3-P7)",
    "fcos": "torchvision FCOS: one-stage, anchor-free, 5 pyramid levels (P3-P7)",
}


def detection_heads() -> list[HeadSupport]:
    """The detection heads `detection_learner` builds and the backbones each works with.

    >>> [h.head for h in detection_heads()]
    ['fasterrcnn', 'retinanet', 'fcos']
    """
    return [HeadSupport("detection", head, "timm CNNs with features_only and stride-8/16/32 features "
                        "(EfficientNet, MobileNet, ResNet, ConvNeXt, RegNet ...); not ViTs or torchvision ('tv:') "
                        "models", TESTED_BACKBONES[:2], _HEAD_DESCRIPTIONS[head]) for head in DETECTION_HEADS]


@dataclass(frozen=True)
class DetectionConfig:
    """What rebuilds a detector: recorded in the bundle (``"detection"``) and kept as ``learn.detection_config``.

    Attributes:
        arch: the backbone name as the user typed it; source_arch: its timm name.
        head: one of `DETECTION_HEADS`.
        num_classes: object classes, without the background.
        size: images are ``size x size`` pixels when they reach the detector.
        mean, std: the backbone's pre-training normalisation, applied inside the detector.
        fpn_channels: channels of the feature pyramid.
        out_indices: the timm feature indices the body returns.
        score_thresh: detections scoring lower are dropped; detections_per_img: at most this many per image.
        proposals: Faster R-CNN's region proposals per image at inference (twice as many in training).
    """

    arch: str
    source_arch: str
    head: str
    num_classes: int
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    fpn_channels: int = 256
    out_indices: tuple[int, ...] = (2, 3, 4)
    score_thresh: float = 0.05
    detections_per_img: int = 100
    proposals: int = DEFAULT_PROPOSALS

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> DetectionConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields})


class TimmFPNBackbone(nn.Module):
    """A timm ``features_only`` body under a `FeaturePyramidNetwork` (torchvision's `BackboneWithFPN` shape).

    Returns an ordered dict of pyramid levels (``"0"``, ``"1"``, ``"2"`` and the extra ones); ``out_channels``
    is what torchvision's detectors read.
    """

    def __init__(self, body: nn.Module, out_channels: int, extra_blocks=None):
        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(list(body.feature_info.channels()), out_channels, extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x):
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def _out_indices(source_arch: str) -> tuple[int, ...]:
    """The timm feature indices at strides 8, 16 and 32."""
    info = timm.create_model(source_arch, pretrained=False, features_only=True).feature_info
    indices = tuple(i for i, r in zip(info.out_indices, info.reduction()) if r in FEATURE_STRIDES)
    if len(indices) != len(FEATURE_STRIDES):
        raise EasyTransferError(f"{source_arch!r} has no features at strides {FEATURE_STRIDES} "
                                f"(it has {info.reduction()}); choose a CNN backbone such as 'efficientnet_lite0'.")
    return indices


def _normalised(name: str) -> str:
    # timm's feature wrappers flatten nested module names with "_" ("stages.0" -> "stages_0")
    return name.replace(".", "_")


def _body_to_full_names(body: nn.Module, full: nn.Module) -> dict[str, str]:
    full_names = {_normalised(n): n for n in full.state_dict()}
    return {n: full_names.get(_normalised(n), n) for n in body.state_dict()}


def _load_body(body: nn.Module, full: nn.Module, where: str) -> None:
    """The full model's weights into the body, strictly: every body tensor must be in them."""
    full_state = full.state_dict()
    names = _body_to_full_names(body, full)
    state = {b: full_state[f] for b, f in names.items() if f in full_state}
    load_state_dict_strict(body, state, where=where)


def build_detector(arch: str, num_classes: int, *, head: str = "fasterrcnn", pretrained: bool = True,
                   weights: str | os.PathLike | None = None, size: int = 320, fpn_channels: int = 256,
                   score_thresh: float = 0.05, detections_per_img: int = 100, proposals: int = DEFAULT_PROPOSALS,
                   config: DetectionConfig | None = None) -> tuple[nn.Module, DetectionConfig, nn.Module, str]:
    """A torchvision detector over a timm backbone with a feature pyramid.

    Args:
        arch: a timm CNN (``"efficientnet_lite0"``, ``"mobilenetv2_100"``, ``"resnet50"`` ...).
        num_classes: object classes (the background is added).
        head: ``"fasterrcnn"``, ``"retinanet"`` or ``"fcos"``.
        pretrained: load the backbone's pre-trained weights (offline for the packaged ones).
        weights: a local weights file for the full timm classifier `arch`.
        size: the side of the (square) images it will see; its transform does not resize them again.
        fpn_channels: channels of the feature pyramid (torchvision: 256).
        score_thresh, detections_per_img: how detections are filtered at inference.
        proposals: Faster R-CNN only: region proposals per image at inference (twice as many in training).
        config: rebuild from a recorded `DetectionConfig` instead (the other arguments are then not used).

    Returns:
        ``(detector, config, full timm model, weights source)``; the full model gives the layer groups.

    >>> model, cfg, _, _ = build_detector("efficientnet_lite0", 2, pretrained=False, size=128)
    >>> cfg.head, cfg.mean
    ('fasterrcnn', (0.5, 0.5, 0.5))
    """
    if config is None:
        if head not in DETECTION_HEADS:
            raise ValueError(f"head must be one of {DETECTION_HEADS} for detection, got {head!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        backend, source_arch = backend_for(arch)
        if backend.source != "timm":
            raise EasyTransferError(f"Detection backbones come from timm; {arch!r} is a {backend.source} model. "
                                    "Use a timm CNN such as 'efficientnet_lite0' or 'resnet50'.")
        cfg = timm.create_model(source_arch, pretrained=False).pretrained_cfg
        config = DetectionConfig(arch, source_arch, head, num_classes, size, tuple(cfg["mean"]), tuple(cfg["std"]),
                                 fpn_channels, _out_indices(source_arch), score_thresh, detections_per_img,
                                 proposals)
    full = timm.create_model(config.source_arch, pretrained=False)
    source = "random init"
    if pretrained:
        source = load_pretrained(full, config.source_arch, weights=weights)
    body = timm.create_model(config.source_arch, pretrained=False, features_only=True,
                             out_indices=config.out_indices)
    if pretrained:
        _load_body(body, full, where=source)
    return _detector(body, config), config, full, source


def _detector(body: nn.Module, config: DetectionConfig) -> nn.Module:
    common = dict(min_size=config.size, max_size=config.size, image_mean=list(config.mean),
                  image_std=list(config.std), detections_per_img=config.detections_per_img)
    n = config.num_classes + 1  # label 0 is the background
    if config.head == "fasterrcnn":
        backbone = TimmFPNBackbone(body, config.fpn_channels, LastLevelMaxPool())
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
        roi_pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
        return FasterRCNN(backbone, num_classes=n, rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
                          box_score_thresh=config.score_thresh, rpn_pre_nms_top_n_train=2 * config.proposals,
                          rpn_post_nms_top_n_train=2 * config.proposals, rpn_pre_nms_top_n_test=config.proposals,
                          rpn_post_nms_top_n_test=config.proposals,
                          box_batch_size_per_image=min(512, 2 * config.proposals), **common)
    backbone = TimmFPNBackbone(body, config.fpn_channels, LastLevelP6P7(config.fpn_channels, config.fpn_channels))
    if config.head == "retinanet":
        sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        return RetinaNet(backbone, num_classes=n, anchor_generator=anchors, score_thresh=config.score_thresh,
                         **common)
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    return FCOS(backbone, num_classes=n, anchor_generator=anchors, score_thresh=config.score_thresh, **common)


def detection_layer_groups(detector: nn.Module, full: nn.Module, n_stages: int | None = None) -> LayerGroups:
    """Body groups from the full timm model's group matcher, bucketed into `n_stages`; the rest is the head group.

    >>> model, _, full, _ = build_detector("efficientnet_lite0", 2, pretrained=False, size=128)
    >>> groups = detection_layer_groups(model, full, n_stages=2)
    >>> len(groups), groups.names[0][0], groups.names[-1][0]
    (3, 'backbone.body.conv_stem.weight', 'backbone.fpn.inner_blocks.0.0.weight')
    """
    body = detector.backbone.body
    names = _body_to_full_names(body, full)
    params = [n for n, _ in body.named_parameters()]
    grouped = group_with_matcher([(names[n], n) for n in params], full.group_matcher(coarse=True),
                                             return_values=True)
    stages = [grouped[k] for k in sorted(grouped) if grouped[k]]
    if n_stages is not None and n_stages < 1:
        raise ValueError(f"n_stages must be at least 1, got {n_stages}")
    n_stages = min(n_stages or DEFAULT_N_STAGES, len(stages))
    buckets = np.array_split(np.arange(len(stages)), n_stages)
    body_groups = [tuple(f"backbone.body.{n}" for i in bucket for n in stages[i]) for bucket in buckets]
    in_body = {n for group in body_groups for n in group}
    head = tuple(n for n, _ in detector.named_parameters() if n not in in_body)
    return LayerGroups(names=tuple(body_groups) + (head,))

"""Object detectors: torchvision's Faster R-CNN, RetinaNet, FCOS and Mask R-CNN over any backbone's body with a
feature pyramid.

The backbone is its backend's multi-scale body (`create_features`: timm's ``features_only`` model, or a
torchvision CNN cut at each stride), of which the maps at strides 8, 16 and 32 feed torchvision's
`FeaturePyramidNetwork`, as torchvision's own `BackboneWithFPN` does for ResNets (`FPNBackbone`). Its pre-trained
weights are the full classifier's (the packaged offline ones for ``efficientnet_lite0``, ``mobilenetv2_100`` and
``tv:mobilenet_v2``), loaded into the body strictly by the backend: every body tensor must come from them. The
detector normalises images itself with the backbone's pre-training mean and std (``image_mean`` / ``image_std``
of torchvision's transform), so the data stays in [0, 1].

Mask R-CNN (``head="maskrcnn"``, instance segmentation) is the Faster R-CNN above (same backbone, anchors,
proposals and box RoIAlign) with torchvision's mask branch: a 14 x 14 RoIAlign over the same pyramid levels and
four 3 x 3 convolutions of ``fpn_channels`` (torchvision's 256 at the default) predicting a 28 x 28 mask per class.

Layer groups: the body's natural stages (its backend's group matcher) bucketed into `n_stages` as for
classification; the feature pyramid and the detection heads form the last ("head") group.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict, dataclass

from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, MaskRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from ...choices import DETECTION_HEADS as DETECTION_HEADS
from ...choices import INSTANCE_HEADS
from ...models.backends import backend_for
from ...models.factory import get_model_spec
from ...models.feature_body import FeatureBody, as_nchw
from ...models.layer_groups import LayerGroups, feature_layer_groups
from ..registry import HeadSupport

__all__ = ["DETECTION_HEADS", "DetectionConfig", "FPNBackbone", "build_detector",
           "detection_heads", "detection_layer_groups"]

BODY_PATH = "backbone.body"
FEATURE_STRIDES = (8, 16, 32)  # C3-C5, as torchvision's RetinaNet and FCOS; Faster R-CNN adds a max-pooled level
# torchvision's 1000 (2000 in training) are for 800-1333 px COCO images; measured at 128 px on 2 CPU cores the box
# head over 1000 proposals takes ~4 s per batch of 2, and a 320 px image rarely has more than a few objects.
DEFAULT_PROPOSALS = 300
BOX_REPRESENTATION = 1024  # FasterRCNN's box head width (its TwoMLPHead), which Mask R-CNN's box predictor reads
# Region proposals sampled per image to train the box head (a quarter of them positive). torchvision's 512 (for COCO's
# crowded 800 px images) makes the box head's two 1024-wide layers ~2/3 of a training step at 320 px on a CPU; Fast
# R-CNN itself sampled 64 per image. 128 halves the step and leaves room for the few objects of a small set.
TRAINING_ROIS_PER_IMAGE = 128
TESTED_BACKBONES = ("efficientnet_lite0", "mobilenetv2_100", "resnet18", "resnet50", "convnext_atto", "tv:resnet18")


_HEAD_DESCRIPTIONS = {
    "fasterrcnn": "torchvision FasterRCNN: two-stage (RPN + RoI heads), 4 pyramid levels (P3-P5 + max-pooled P6)",
    "retinanet": "torchvision RetinaNet: one-stage, focal loss, 5 pyramid levels (P3-P7)",
    "fcos": "torchvision FCOS: one-stage, anchor-free, 5 pyramid levels (P3-P7)",
    "maskrcnn": "torchvision MaskRCNN: Faster R-CNN plus a mask per object (instance segmentation); needs data with "
                "masks (from_coco / from_yolo with masks=True)",
}


def detection_heads() -> list[HeadSupport]:
    """The detection heads `detection_learner` builds and the backbones each works with.

    >>> [h.head for h in detection_heads()]
    ['fasterrcnn', 'retinanet', 'fcos', 'maskrcnn']
    """
    return [HeadSupport("detection", head, "CNNs with feature maps at strides 8, 16 and 32, from any source: timm "
                        "(EfficientNet, MobileNet, ResNet, ConvNeXt, RegNet ...) and torchvision ('tv:resnet18', "
                        "'tv:mobilenet_v2', 'tv:convnext_tiny' ...); not ViTs or CLIP towers",
                        TESTED_BACKBONES[:2], _HEAD_DESCRIPTIONS[head]) for head in DETECTION_HEADS]


@dataclass(frozen=True)
class DetectionConfig:
    """What rebuilds a detector: recorded in the bundle (``"detection"``) and kept as ``learn.detection_config``.

    Attributes:
        arch: the backbone name as the user typed it; source_arch: its backend's own name.
        head: one of `DETECTION_HEADS`.
        num_classes: object classes, without the background.
        size: images are ``size x size`` pixels when they reach the detector.
        mean, std: the backbone's pre-training normalisation, applied inside the detector.
        fpn_channels: channels of the feature pyramid.
        out_indices: the indices of the body's maps at strides 8, 16 and 32 (`FeatureBody.indices_at`).
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

    @property
    def instance_masks(self) -> bool:
        """Whether the detector predicts a mask per object (``head="maskrcnn"``)."""
        return self.head in INSTANCE_HEADS

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> DetectionConfig:
        fields = cls.__dataclass_fields__
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in fields})


class FPNBackbone(nn.Module):
    """A `FeatureBody`'s maps at strides 8, 16 and 32 under a `FeaturePyramidNetwork` (torchvision's
    `BackboneWithFPN` shape), whatever backend made the body.

    Returns an ordered dict of pyramid levels (``"0"``, ``"1"``, ``"2"`` and the extra ones); ``out_channels``
    is what torchvision's detectors read.

    Attributes:
        body: the body module; stages: its parameter names per natural stage (`FeatureBody.stages`).
        indices: which of the body's maps feed the pyramid.

    >>> import torch
    >>> from easytransfer.models import create_features
    >>> backbone = FPNBackbone(create_features("tv:resnet18", pretrained=False), 64)
    >>> {k: tuple(v.shape[1:]) for k, v in backbone(torch.zeros(1, 3, 64, 64)).items()}
    {'0': (64, 8, 8), '1': (64, 4, 4), '2': (64, 2, 2)}
    """

    def __init__(self, body: FeatureBody, out_channels: int, extra_blocks=None,
                 indices: tuple[int, ...] | None = None):
        super().__init__()
        self.indices = tuple(indices) if indices is not None else body.indices_at(FEATURE_STRIDES)
        self.body = body.module
        self.channels_last = body.channels_last
        self.stages = body.stages
        self.fpn = FeaturePyramidNetwork([body.channels[i] for i in self.indices], out_channels,
                                         extra_blocks=extra_blocks)
        self.out_channels = out_channels

    def forward(self, x):
        maps = as_nchw(self.body(x), self.channels_last)
        return self.fpn(OrderedDict((str(n), maps[i]) for n, i in enumerate(self.indices)))


def build_detector(arch: str, num_classes: int, *, head: str = "fasterrcnn", pretrained: bool = True,
                   weights: str | os.PathLike | None = None, size: int = 320, fpn_channels: int = 256,
                   score_thresh: float = 0.05, detections_per_img: int = 100, proposals: int = DEFAULT_PROPOSALS,
                   config: DetectionConfig | None = None) -> tuple[nn.Module, DetectionConfig, FeatureBody, str]:
    """A torchvision detector over any backbone's feature body with a feature pyramid.

    Args:
        arch: a CNN of any backend (``"efficientnet_lite0"``, ``"mobilenetv2_100"``, ``"convnext_atto"``,
            ``"resnet50"``, ``"tv:resnet18"`` ...).
        num_classes: object classes (the background is added).
        head: ``"fasterrcnn"``, ``"retinanet"``, ``"fcos"`` or ``"maskrcnn"`` (boxes and instance masks).
        pretrained: load the backbone's pre-trained weights (offline for the packaged ones).
        weights: a local weights file of the full classifier `arch` (loaded even when `pretrained` is False).
        size: the side of the (square) images it will see; its transform does not resize them again.
        fpn_channels: channels of the feature pyramid (torchvision: 256).
        score_thresh, detections_per_img: how detections are filtered at inference.
        proposals: Faster / Mask R-CNN only: region proposals per image at inference (twice as many in training).
        config: rebuild from a recorded `DetectionConfig` instead (the other arguments but `pretrained` and
            `weights` are then not used).

    Returns:
        ``(detector, config, feature body, weights source)``; the body's stages give the layer groups.

    Raises:
        NoMultiScaleFeaturesError: `arch` has no maps at strides 8, 16 and 32 (ViTs), with the fix.

    >>> model, cfg, body, _ = build_detector("efficientnet_lite0", 2, pretrained=False, size=128)
    >>> cfg.head, cfg.mean, cfg.out_indices
    ('fasterrcnn', (0.5, 0.5, 0.5), (2, 3, 4))
    """
    if config is None:
        if head not in DETECTION_HEADS:
            raise ValueError(f"head must be one of {DETECTION_HEADS} for detection, got {head!r}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
    name = arch if config is None else config.arch
    backend, source_arch = backend_for(name)
    body = backend.create_features(source_arch, pretrained=pretrained, weights=weights, name=name)
    if config is None:
        spec = get_model_spec(name)
        config = DetectionConfig(name, source_arch, head, num_classes, size, spec.mean, spec.std, fpn_channels,
                                 body.indices_at(FEATURE_STRIDES), score_thresh, detections_per_img, proposals)
    return _detector(body, config), config, body, body.weights


def _detector(body: FeatureBody, config: DetectionConfig) -> nn.Module:
    common = dict(min_size=config.size, max_size=config.size, image_mean=list(config.mean),
                  image_std=list(config.std), detections_per_img=config.detections_per_img)
    n = config.num_classes + 1  # label 0 is the background
    if config.head in ("fasterrcnn", "maskrcnn"):
        backbone = FPNBackbone(body, config.fpn_channels, LastLevelMaxPool(), config.out_indices)
        anchors = AnchorGenerator(((32,), (64,), (128,), (256,)), ((0.5, 1.0, 2.0),) * 4)
        roi_pool = MultiScaleRoIAlign(["0", "1", "2"], output_size=7, sampling_ratio=2)
        two_stage = dict(rpn_anchor_generator=anchors, box_roi_pool=roi_pool, box_score_thresh=config.score_thresh,
                         rpn_pre_nms_top_n_train=2 * config.proposals, rpn_post_nms_top_n_train=2 * config.proposals,
                         rpn_pre_nms_top_n_test=config.proposals, rpn_post_nms_top_n_test=config.proposals,
                         box_batch_size_per_image=TRAINING_ROIS_PER_IMAGE, **common)
        if config.head == "fasterrcnn":
            return FasterRCNN(backbone, num_classes=n, **two_stage)
        channels = config.fpn_channels  # torchvision: 256 for its 256-channel pyramid
        # given its own mask head, MaskRCNN takes no num_classes: the box predictor is FasterRCNN's default one
        return MaskRCNN(backbone, box_predictor=FastRCNNPredictor(BOX_REPRESENTATION, n),
                        mask_roi_pool=MultiScaleRoIAlign(["0", "1", "2"], output_size=14, sampling_ratio=2),
                        mask_head=MaskRCNNHeads(channels, (channels,) * 4, 1),
                        mask_predictor=MaskRCNNPredictor(channels, channels, n), **two_stage)
    backbone = FPNBackbone(body, config.fpn_channels, LastLevelP6P7(config.fpn_channels, config.fpn_channels),
                           config.out_indices)
    if config.head == "retinanet":
        sizes = tuple((s, int(s * 2 ** (1 / 3)), int(s * 2 ** (2 / 3))) for s in (32, 64, 128, 256, 512))
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * 5)
        return RetinaNet(backbone, num_classes=n, anchor_generator=anchors, score_thresh=config.score_thresh,
                         **common)
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)
    return FCOS(backbone, num_classes=n, anchor_generator=anchors, score_thresh=config.score_thresh, **common)


def detection_layer_groups(detector: nn.Module, n_stages: int | None = None) -> LayerGroups:
    """The body's natural stages (its backend's group matcher) bucketed into `n_stages`; the feature pyramid and the
    detection heads are the head group (`feature_layer_groups`).

    >>> model, *_ = build_detector("efficientnet_lite0", 2, pretrained=False, size=128)
    >>> groups = detection_layer_groups(model, n_stages=2)
    >>> len(groups), groups.names[0][0], groups.names[-1][0]
    (3, 'backbone.body.conv_stem.weight', 'backbone.fpn.inner_blocks.0.0.weight')
    """
    return feature_layer_groups(detector, BODY_PATH, detector.backbone.stages, n_stages)

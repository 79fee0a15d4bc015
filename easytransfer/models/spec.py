"""`ModelSpec`: what easytransfer knows about an architecture before it is trained, and notes per family."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

__all__ = ["FAMILY_NOTES", "ModelSpec"]

# Practical notes per family, shown by `describe_model`; the first pattern that matches the arch wins.
FAMILY_NOTES: list[tuple[str, str]] = [
    ("*dinov2*", "DINOv2: self-supervised ViT features, the strongest general-purpose features for "
                 "linear probes and few images; more compute than a CNN. Built for 224 px unless size= says "
                 "otherwise (its config's 518 px costs ~6x more per image)."),
    ("*siglip*", "SigLIP image tower: language-aligned features (sigmoid loss), mean = std = 0.5; strong "
                 "general features, more compute."),
    ("*clip*", "CLIP image tower: language-aligned features, zero-shot capable; strong general features, "
               "more compute."),
    ("*lite*", "EfficientNet-Lite: EfficientNet without squeeze-excite and with ReLU6; fast on CPU and mobile, "
               "Lite0, Lite1 and Lite2 work offline (their weights are pip packages installed with easytransfer)."),
    ("*efficientnet*", "EfficientNet: balanced accuracy per compute; B3/B4 are the usual sweet spot, "
                       "B5-B7 for large images and big budgets."),
    ("*resne*t*", "ResNet: the baseline that runs anywhere; well understood, robust to fine-tune."),
    ("*convnext*", "ConvNeXt: ViT-level accuracy with CNN efficiency; a strong default on GPU."),
    ("*mobilenet*", "MobileNet: smallest and fastest; for edge devices and CPU inference. MobileNetV2 "
                    "(tv:mobilenet_v2, mobilenetv2_100) works offline here."),
    ("*regnet*", "RegNet: ResNet-like design space with good speed/accuracy trade-offs."),
    ("*swin*", "Swin: hierarchical transformer; strong on dense tasks, more compute."),
    ("*eva*", "EVA: large-scale pre-trained ViT; very strong features, heavy."),
    ("*deit*", "DeiT: ViT trained on ImageNet-1k only; data-efficient transformer."),
    ("*vit*", "ViT: strongest general features at scale, more compute; likes larger datasets or strong "
              "pre-training."),
]


@dataclass(frozen=True)
class ModelSpec:
    """What easytransfer knows about an architecture before it is trained.

    Attributes:
        name: the name as the user typed it.
        source: the backend the architecture comes from (``"timm"``, ``"torchvision"``).
        arch: the name inside that source (``"tf_efficientnet_lite0"``, ``"resnet50"``).
        family: the architecture family (``"efficientnet"``, ``"resnet"``, ``"vision_transformer"`` ...).
        input_size: (channels, height, width) the model runs at: the size it was built for when it has one,
            else the size its weights were trained at (or the ``size`` asked for).
        mean, std: per-channel normalisation of the pre-training data.
        interpolation: resize filter of the pre-training pipeline (``"bicubic"``, ``"bilinear"``).
        crop_pct: centre-crop fraction used by the pre-training evaluation pipeline.
        classifier: module path of the classification head (``"fc"``, ``"classifier.1"``, ``"head.fc"``);
            several heads (a distilled model's ``head`` and ``head_dist``) are joined by commas. Always set.
        num_features: width of the pooled features that feed the head.
        num_params: parameter count of the backbone with its original head.
        offline_weights: whether pre-trained weights are on this machine (installed package or cache).
        weights: where the weights of this instance came from (``"random init"`` until some are loaded).
        arch_config: the source's own description of the architecture when its name alone may not rebuild it
            elsewhere (an open_clip model from a local folder or the hub: its ``open_clip_config.json``); bundles
            keep it so that `load_model` needs neither the folder nor the network. ``None`` for timm and
            torchvision.

    >>> spec = ModelSpec("m", "timm", "m", "resnet", (3, 160, 160), (0.5,) * 3, (0.5,) * 3, "bilinear", 0.9,
    ...                  "fc", 512, 1000, False)
    >>> spec.size, spec.classifier_paths
    (160, ('fc',))
    """

    name: str
    source: str
    arch: str
    family: str
    input_size: tuple[int, int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    crop_pct: float
    classifier: str
    num_features: int
    num_params: int
    offline_weights: bool
    weights: str = "random init"
    arch_config: dict | None = field(default=None, compare=False, repr=False)

    @property
    def size(self) -> int:
        """Square image side the model expects (``input_size[-1]``)."""
        return int(self.input_size[-1])

    @property
    def classifier_paths(self) -> tuple[str, ...]:
        """Module paths of the classification head(s), split from `classifier`."""
        return tuple(p for p in self.classifier.split(",") if p)

    @property
    def notes(self) -> str:
        """The practical note of the first `FAMILY_NOTES` pattern matching the arch, else the family (``""``: none).

        The arch first: timm's MobileNets live in its ``efficientnet`` module, so their family says EfficientNet.

        >>> from dataclasses import replace
        >>> spec = ModelSpec("m", "timm", "mobilenetv2_100", "efficientnet", (3, 224, 224), (0.5,) * 3, (0.5,) * 3,
        ...                  "bilinear", 0.875, "classifier", 1280, 3_500_000, True)
        >>> spec.notes.split(":")[0], replace(spec, arch="m").notes.split(":")[0]
        ('MobileNet', 'EfficientNet')
        """
        for name in (self.arch.lower(), self.family.lower()):
            for pattern, note in FAMILY_NOTES:
                if fnmatch.fnmatch(name, pattern):
                    return note
        return ""

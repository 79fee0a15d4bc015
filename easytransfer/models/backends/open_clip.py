"""The open_clip backend: CLIP image towers as backbones, named ``"open_clip:"`` + where the model comes from.

Names:

- ``"open_clip:ViT-B-32/openai"``: an open_clip model name and one of its pretrained tags
  (``open_clip.list_pretrained()``); the model name alone (``"open_clip:ViT-B-32"``) builds it without weights;
- ``"open_clip:hf-hub:ORG/REPO"``: a Hugging Face repository in open_clip's format;
- ``"open_clip:local-dir:PATH"``: a folder in that format, ``open_clip_config.json`` + ``open_clip_model.safetensors``;
  it works offline (the BPE vocabulary of CLIP's tokenizer ships in open_clip's wheel).

The model is an `OpenClipClassifier`: the image tower's embedding (after CLIP's projection), L2-normalised as in
CLIP's joint image-text space, then the new head. A fresh linear head and a head that starts as the class names'
text embeddings (``head="zero_shot"``, `easytransfer.models.zero_shot`) see the same features. Preprocessing (size,
mean, std, resize filter) is open_clip's own for the model and tag. Layer groups: the stem (patch embedding, class
token, positional embedding, first norm) and one natural stage per transformer block (per stage for ResNet towers,
the trunk's own stages for timm towers), bucketed by the one engine into `n_stages`, then the head.

Every model is built from its open_clip config (``{"model_cfg": ..., "preprocess_cfg": ...}``, the content of
``open_clip_config.json``), kept as `ModelSpec.arch_config`, so an exported bundle is rebuilt without the folder or
the network. Offline, a name that needs the hub fails within seconds with `WeightsUnavailableError` naming the
``local-dir:`` way out; ``pretrained=False`` never touches a weights source.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import EasyTransferError, UnknownModelError, WeightsMismatchError, WeightsUnavailableError
from ..heads import HeadConfig, new_head
from ..matchers import MATCH_PREVIOUS, validate_matcher
from ..spec import ModelSpec
from ..weights import hub_file, load_state_dict_strict
from .base import ModelBackend

__all__ = ["CHECKPOINT_NAMES", "CONFIG_NAME", "LOCAL_DIR_FIX", "OPEN_CLIP_MATCHERS", "OPEN_CLIP_PREFIX",
           "OpenClipBackend", "OpenClipClassifier", "OpenClipName", "clip_tokenizer", "create_clip", "load_clip"]

OPEN_CLIP_PREFIX = "open_clip:"
HF_HUB = "hf-hub:"
LOCAL_DIR = "local-dir:"
CONFIG_NAME = "open_clip_config.json"
# the weights file of a folder or hub repo, in open_clip's own order of preference (safetensors first)
CHECKPOINT_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors",
                    "open_clip_pytorch_model.bin")
LOCAL_DIR_FIX = ("put the model in a folder in open_clip's format (open_clip_config.json + "
                 "open_clip_model.safetensors; e.g. `huggingface-cli download laion/CLIP-ViT-B-32-laion2B-s34B-b79K "
                 "--include 'open_clip_*' --local-dir clip-b32` on a machine that is online) and use "
                 "'open_clip:local-dir:PATH' (docs/zero_shot.md)")
# open_clip's preprocessing keys that a pretrained tag may set
_TAG_PREPROCESS_KEYS = ("mean", "std", "interpolation", "resize_mode", "fill_color")

# Group matchers (timm's form, over `OpenClipClassifier` parameter names) per image tower class. The tower's final
# norm, attention pooling and projection join the last block; the new head is taken out by the engine.
OPEN_CLIP_MATCHERS: dict[str, dict] = {
    "VisionTransformer": validate_matcher(dict(
        stem=r"^visual\.(?:class_embedding|positional_embedding|conv1|ln_pre|patchnorm_pre_ln)",
        blocks=[(r"^visual\.transformer\.resblocks\.(\d+)\.", None),
                (r"^visual\.(?:attn_pool|ln_post|proj)", MATCH_PREVIOUS)],
    )),
    "ModifiedResNet": validate_matcher(dict(
        stem=r"^visual\.(?:conv[123]|bn[123])\.",
        blocks=[(r"^visual\.layer(\d+)\.", None), (r"^visual\.attnpool\.", MATCH_PREVIOUS)],
    )),
}


# ------------------------------------------------------------------------------------------------------- names


@dataclass(frozen=True)
class OpenClipName:
    """An open_clip name, parsed: where the model's config and weights come from.

    Attributes:
        kind: ``"builtin"`` (a model name of open_clip's, with an optional pretrained tag), ``"hf-hub"`` or
            ``"local-dir"``.
        model: the open_clip model name, the hub repository (``"org/repo"``) or the folder.
        tag: the pretrained tag of a built-in model (``"openai"``), else ``None``.

    >>> OpenClipName.parse("ViT-B-32/openai")
    OpenClipName(kind='builtin', model='ViT-B-32', tag='openai')
    >>> OpenClipName.parse("local-dir:models/clip").open_clip_name
    'local-dir:models/clip'
    """

    kind: str
    model: str
    tag: str | None = None

    @classmethod
    def parse(cls, arch: str) -> OpenClipName:
        """Parse the part after ``"open_clip:"`` (no check that the model exists)."""
        if arch.startswith(LOCAL_DIR):
            return cls("local-dir", arch[len(LOCAL_DIR):])
        if arch.startswith(HF_HUB):
            return cls("hf-hub", arch[len(HF_HUB):])
        model, _, tag = arch.partition("/")
        return cls("builtin", model, tag or None)

    @property
    def open_clip_name(self) -> str:
        """The name open_clip's own functions take (``"ViT-B-32"``, ``"hf-hub:org/repo"``, ``"local-dir:PATH"``)."""
        return self.model if self.kind == "builtin" else f"{self.kind}:{self.model}"


def _open_clip():
    # imported on first use: `import easytransfer` stays fast for users who never touch CLIP
    import open_clip

    return open_clip


@lru_cache(maxsize=1)
def open_clip_names() -> tuple[str, ...]:
    """Every ``"open_clip:MODEL/TAG"`` with pretrained weights in open_clip's list.

    >>> "open_clip:ViT-B-32/openai" in open_clip_names()
    True
    """
    return tuple(f"{OPEN_CLIP_PREFIX}{model}/{tag}" for model, tag in _open_clip().list_pretrained())


def _check_builtin(name: str, parsed: OpenClipName) -> None:
    open_clip = _open_clip()
    models = open_clip.list_models()
    if parsed.model not in models:
        close = difflib.get_close_matches(parsed.model, models, n=5, cutoff=0.5)
        raise UnknownModelError(name, [OPEN_CLIP_PREFIX + c for c in close])
    tags = open_clip.list_pretrained_tags_by_model(parsed.model)
    if parsed.tag is not None and parsed.tag not in tags:
        close = difflib.get_close_matches(parsed.tag, tags, n=5, cutoff=0.3) or tags[:5]
        raise UnknownModelError(name, [f"{OPEN_CLIP_PREFIX}{parsed.model}/{t}" for t in close])


# ------------------------------------------------------------------------------------------------- configs


def _read_json(path: Path, where: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise EasyTransferError(f"Could not read {where} ({type(e).__name__}: {e}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_cfg", data), dict):
        raise EasyTransferError(f"{where} is not an open_clip config (a JSON object with 'model_cfg').")
    return data


def _tag_config(parsed: OpenClipName) -> dict:
    return _open_clip().get_pretrained_cfg(parsed.model, parsed.tag) if parsed.tag else {}


def clip_config(arch: str, *, size: int | None = None) -> dict:
    """The open_clip config of `arch` (``{"model_cfg": ..., "preprocess_cfg": ...}``), for input `size` if given.

    Built-in models: open_clip's config, with what the pretrained tag sets (QuickGELU, mean, std, resize filter).
    Folders: their ``open_clip_config.json``. Hub repositories: theirs, from the cache or downloaded.

    >>> clip_config("ViT-B-32/openai")["model_cfg"]["quick_gelu"]
    True
    """
    parsed = OpenClipName.parse(arch)
    open_clip = _open_clip()
    from open_clip.transform import PreprocessCfg  # the defaults open_clip merges every config into

    preprocess = {k: v for k, v in vars(PreprocessCfg()).items()}
    if parsed.kind == "builtin":
        model_cfg = open_clip.get_model_config(parsed.model)
        if model_cfg is None:
            raise UnknownModelError(OPEN_CLIP_PREFIX + arch)
        tag_cfg = _tag_config(parsed)
        if tag_cfg.get("quick_gelu"):
            model_cfg["quick_gelu"] = True
        preprocess.update({k: tag_cfg[k] for k in _TAG_PREPROCESS_KEYS if k in tag_cfg})
    else:
        if parsed.kind == "local-dir":
            folder = Path(parsed.model).expanduser()
            if not (folder / CONFIG_NAME).is_file():
                what = "does not exist" if not folder.is_dir() else f"has no {CONFIG_NAME}"
                raise EasyTransferError(f"open_clip folder {str(folder)!r} {what}; a local-dir: folder holds "
                                        f"{CONFIG_NAME} and {CHECKPOINT_NAMES[0]} (open_clip's format).")
            path = folder / CONFIG_NAME
        else:
            try:
                path = Path(hub_file(parsed.model, [CONFIG_NAME]))
            except OSError as e:
                raise WeightsUnavailableError(OPEN_CLIP_PREFIX + arch, [(f"Hugging Face hub {parsed.model}", str(e))],
                                              fix=LOCAL_DIR_FIX) from None
        data = _read_json(path, repr(str(path)))
        model_cfg = data.get("model_cfg", data)
        preprocess.update(data.get("preprocess_cfg", {}))
    model_cfg = copy.deepcopy(model_cfg)
    if size is not None:
        model_cfg.setdefault("vision_cfg", {})["image_size"] = int(size)
    # JSON types (lists, not tuples): the config is compared with and written to bundles as JSON
    return json.loads(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))


class _DropOpenClipNotices(logging.Filter):
    """open_clip logs "initialized randomly" on the root logger for every model built without weights: we build
    them so on purpose (weights are loaded after, or come from a bundle)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return f"{os.sep}open_clip{os.sep}" not in record.pathname


@contextlib.contextmanager
def _quiet_open_clip():
    quiet = _DropOpenClipNotices()
    root = logging.getLogger()
    root.addFilter(quiet)
    try:
        yield
    finally:
        root.removeFilter(quiet)


def create_clip(config: dict) -> nn.Module:
    """A whole open_clip model (image and text towers) with random weights, built from `config` (`clip_config`).

    open_clip builds models from names and folders; a recorded config is built through a temporary folder in its
    format (config only), so no weights source is ever touched.

    >>> clip = create_clip(clip_config("RN50"))  # doctest: +SKIP
    """
    open_clip = _open_clip()
    with tempfile.TemporaryDirectory(prefix="easytransfer-open-clip-") as folder:
        (Path(folder) / CONFIG_NAME).write_text(json.dumps(config), encoding="utf-8")
        with _quiet_open_clip():  # on the default device: `get_model_spec` builds on "meta", without memory
            return open_clip.create_model(LOCAL_DIR + folder, load_weights=False, pretrained_image=False,
                                          pretrained_text=False, device=torch.get_default_device())


def _safe_alternatives(filename: str) -> list[str]:
    """open_clip's rule: look for a ``.safetensors`` file before a pickled ``.bin`` / ``.pth`` one."""
    if filename == "open_clip_pytorch_model.bin":
        return ["open_clip_model.safetensors", filename]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors", filename]
    return [filename]


def checkpoint_path(arch: str, *, weights: str | os.PathLike | None = None) -> tuple[str, str]:
    """Where the CLIP weights of `arch` are on this machine (downloading them when online); and a description.

    Raises:
        WeightsUnavailableError: naming the source tried and the ``local-dir:`` way out.

    >>> checkpoint_path("ViT-B-32/openai")  # doctest: +SKIP
    ('/home/me/.cache/huggingface/hub/.../open_clip_model.safetensors', 'hub timm/vit_base_patch32_clip_224.openai')
    """
    if weights is not None:
        if not Path(weights).is_file():
            raise FileNotFoundError(f"Weights file {str(weights)!r} does not exist.")
        return str(weights), f"file {weights}"
    name = OPEN_CLIP_PREFIX + arch
    parsed = OpenClipName.parse(arch)
    if parsed.kind == "local-dir":
        folder = Path(parsed.model).expanduser()
        for filename in CHECKPOINT_NAMES:
            if (folder / filename).is_file():
                return str(folder / filename), f"folder {folder}"
        raise WeightsUnavailableError(name, [(f"folder {folder}", f"none of {', '.join(CHECKPOINT_NAMES)} in it")],
                                      fix=LOCAL_DIR_FIX)
    if parsed.kind == "hf-hub":
        repo, filenames = parsed.model, list(CHECKPOINT_NAMES)
    else:
        tag_cfg = _tag_config(parsed)
        if not tag_cfg.get("hf_hub"):
            tags = _open_clip().list_pretrained_tags_by_model(parsed.model)
            more = f" and {len(tags) - 5} more" if len(tags) > 5 else ""
            reason = (f"no pretrained tag in the name; open_clip has {', '.join(tags[:5])}{more} (e.g. "
                      f"'{OPEN_CLIP_PREFIX}{parsed.model}/{tags[0]}')" if tags else "open_clip lists no weights for it")
            raise WeightsUnavailableError(name, [("open_clip's pretrained tags", reason)], fix=LOCAL_DIR_FIX)
        repo, filename = os.path.split(tag_cfg["hf_hub"])
        filenames = _safe_alternatives(filename or "open_clip_pytorch_model.bin")
    try:
        return hub_file(repo, filenames), f"hub {repo}"
    except OSError as e:
        raise WeightsUnavailableError(name, [(f"Hugging Face hub {repo}", str(e))], fix=LOCAL_DIR_FIX) from None


def load_clip(arch: str, *, pretrained: bool = True, weights: str | os.PathLike | None = None,
              size: int | None = None, arch_config: dict | None = None) -> tuple[nn.Module, dict, str]:
    """The whole open_clip model of `arch` with its CLIP weights; ``(model, config, where the weights came from)``.

    Args:
        arch: the name after ``"open_clip:"`` (``"ViT-B-32/openai"``, ``"local-dir:PATH"`` ...).
        pretrained: load the CLIP weights; ``False``: random weights, no weights source touched.
        weights: a CLIP checkpoint file of this architecture (``.safetensors``, ``.bin``, ``.pt``) instead.
        size: input size to build the image tower for (position embeddings are resampled).
        arch_config: a recorded config to build from instead of the name's (`ModelSpec.arch_config`).

    >>> clip, config, where = load_clip("local-dir:clip-b32")  # doctest: +SKIP
    """
    config = arch_config if arch_config is not None else clip_config(arch, size=size)
    path, where = checkpoint_path(arch, weights=weights) if pretrained or weights is not None else (None, "random init")
    clip = create_clip(config)
    if path is not None:
        try:
            with _quiet_open_clip():
                _open_clip().load_checkpoint(clip, path, strict=True)
        except (RuntimeError, KeyError, ValueError) as e:
            raise WeightsMismatchError(f"The weights in {path!r} do not fit {OPEN_CLIP_PREFIX + arch!r}: "
                                       f"{str(e).splitlines()[0]}") from None
    return clip, config, where


def clip_tokenizer(arch: str, config: dict):
    """The tokenizer of `arch`'s text tower: CLIP's BPE tokenizer (its vocabulary ships with open_clip, nothing is
    downloaded) unless the config names another one (then open_clip's own choice, which may download it)."""
    open_clip = _open_clip()
    text_cfg = config["model_cfg"].get("text_cfg", {})
    parsed = OpenClipName.parse(arch)
    if "hf_tokenizer_name" in text_cfg or (parsed.kind == "builtin" and "siglip" in parsed.model.lower()):
        return open_clip.get_tokenizer(parsed.open_clip_name)
    from open_clip.tokenizer import DEFAULT_CONTEXT_LENGTH

    return open_clip.SimpleTokenizer(context_length=text_cfg.get("context_length", DEFAULT_CONTEXT_LENGTH),
                                     **text_cfg.get("tokenizer_kwargs", {}))


# -------------------------------------------------------------------------------------------------- the model


class OpenClipClassifier(nn.Module):
    """A CLIP image tower with a new head on its L2-normalised image embedding: ``head(normalize(visual(x)))``.

    It follows timm's protocol (``forward_features``, ``forward_head``, ``get_classifier``), so the feature cache,
    layer groups and heads work on it as on any timm model.

    Attributes:
        visual: open_clip's image tower, projection included (its output is CLIP's image embedding).
        head: the classifier (``nn.Identity`` until a head is given).
        num_features: width of the image embedding.
        arch_config: the open_clip config the tower was built from.

    >>> tower = nn.Sequential(nn.Flatten(), nn.Linear(12, 4))
    >>> model = OpenClipClassifier(tower, 4, head=nn.Linear(4, 2))
    >>> model(torch.zeros(1, 3, 2, 2)).shape
    torch.Size([1, 2])
    """

    def __init__(self, visual: nn.Module, num_features: int, head: nn.Module | None = None,
                 arch_config: dict | None = None):
        super().__init__()
        self.visual = visual
        self.head = head if head is not None else nn.Identity()
        self.num_features = int(num_features)
        self.arch_config = arch_config

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The L2-normalised image embedding (open_clip's ``encode_image(x, normalize=True)``)."""
        return F.normalize(self.visual(x), dim=-1)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head


def image_classifier(clip: nn.Module, config: dict, n_out: int | None = None,
                     head: HeadConfig | None = None) -> OpenClipClassifier:
    """`clip`'s image tower as an `OpenClipClassifier` (the text tower is left behind), with a new head for `n_out`
    outputs when given (a linear one unless `head` says otherwise)."""
    model = OpenClipClassifier(clip.visual, int(config["model_cfg"]["embed_dim"]), arch_config=config)
    if n_out is not None:
        model.head = new_head(model.num_features, n_out, head or HeadConfig())
    return model


def _prefixed(regex: str, prefix: str) -> str:
    r"""`regex` (over a trunk's parameter names) over names under `prefix`.

    timm's regexes are alternations anchored by ``re.match`` (``^cls_token|pos_embed|^patch_embed``): the
    alternatives are grouped and their own anchors dropped, so that each needs the prefix.

    >>> _prefixed(r"^cls_token|^pos_embed|patch_embed", "visual.trunk.")
    '^visual\\.trunk\\.(?:cls_token|pos_embed|patch_embed)'
    """
    return "^" + re.escape(prefix) + "(?:" + re.sub(r"(^|\||\()\^", r"\1", regex) + ")"


def _timm_tower_matcher(visual: nn.Module) -> dict | None:
    """The matcher of an open_clip ``TimmModel`` tower: its trunk's own, moved under ``visual.trunk.``; the
    tower's projection head (``visual.head``) joins the last stage."""
    trunk = getattr(visual, "trunk", None)
    if trunk is None or not hasattr(trunk, "group_matcher"):
        return None
    matcher = {}
    for entry, spec in trunk.group_matcher(coarse=True).items():
        if isinstance(spec, str):
            matcher[entry] = _prefixed(spec, "visual.trunk.")
        elif spec:
            matcher[entry] = [(_prefixed(regex, "visual.trunk."), suffix) for regex, suffix in spec]
    matcher["projection"] = [(r"^visual\.head\.", MATCH_PREVIOUS)]
    return validate_matcher(matcher)


# ------------------------------------------------------------------------------------------------ the backend


class OpenClipBackend(ModelBackend):
    """open_clip models: CLIP image towers with open_clip's preprocessing, built from their open_clip config.

    >>> OpenClipBackend().resolve("open_clip:ViT-B-32/openai")
    'ViT-B-32/openai'
    """

    source = "open_clip"
    prefix = OPEN_CLIP_PREFIX
    text_heads = True

    def resolve(self, name: str) -> str | None:
        if not name.startswith(self.prefix):
            return None
        arch = name[len(self.prefix):]
        parsed = OpenClipName.parse(arch)
        if not parsed.model:
            raise UnknownModelError(name, ["open_clip:ViT-B-32/openai", "open_clip:local-dir:PATH",
                                           "open_clip:hf-hub:ORG/REPO"])
        if parsed.kind == "builtin":
            _check_builtin(name, parsed)
        return arch

    def list_names(self) -> tuple[str, ...]:
        return open_clip_names()

    def weights_on_disk(self, arch: str) -> bool:
        parsed = OpenClipName.parse(arch)
        if parsed.kind == "local-dir":
            return any((Path(parsed.model).expanduser() / f).is_file() for f in CHECKPOINT_NAMES)
        if parsed.kind == "builtin" and not parsed.tag:
            return False
        try:
            from huggingface_hub import try_to_load_from_cache

            if parsed.kind == "hf-hub":
                repo, filenames = parsed.model, CHECKPOINT_NAMES
            else:
                repo, filename = os.path.split(_tag_config(parsed)["hf_hub"])
                filenames = _safe_alternatives(filename or "open_clip_pytorch_model.bin")
            return any(isinstance(try_to_load_from_cache(repo, f), str) for f in filenames)
        except Exception:
            return False

    def create(self, arch: str, *, head: HeadConfig, size: int | None = None, pretrained: bool = False) -> nn.Module:
        config = clip_config(arch, size=size)
        return image_classifier(create_clip(config), config)

    def spec(self, name: str, arch: str, model: nn.Module, *, size: int | None = None) -> ModelSpec:
        pre = model.visual.preprocess_cfg  # open_clip's final preprocessing, its size the tower's own
        side = pre["size"] if isinstance(pre["size"], int) else max(pre["size"])
        return ModelSpec(
            name=name,
            source=self.source,
            arch=arch,
            family="open_clip",
            input_size=(3, int(side), int(side)),
            mean=tuple(float(m) for m in pre["mean"]),
            std=tuple(float(s) for s in pre["std"]),
            interpolation=str(pre["interpolation"]),
            crop_pct=1.0,  # open_clip's "shortest" resize: shorter side to the size, centre crop, as ours
            classifier="head",
            num_features=model.num_features,
            num_params=sum(p.numel() for p in model.visual.parameters()),
            offline_weights=self.weights_on_disk(arch),
            arch_config=model.arch_config,
        )

    def load_pretrained(self, model: nn.Module, arch: str, *, weights: str | os.PathLike | None = None,
                        head: str | None = None) -> str:
        clip, _, where = load_clip(arch, weights=weights, arch_config=model.arch_config)
        load_state_dict_strict(model.visual, clip.visual.state_dict(), where=where, arch=OPEN_CLIP_PREFIX + arch)
        return where

    def replace_head(self, model: nn.Module, spec: ModelSpec, n_out: int, head: HeadConfig) -> None:
        if head.pool is not None:
            raise ValueError(f"{spec.name!r} pools with its own image tower (CLIP's class token or attention "
                             f"pooling); use pool=None, not pool={head.pool!r}.")
        model.head = new_head(model.num_features, n_out, head)

    def build(self, name: str, arch: str, n_out: int, *, pretrained: bool, weights: str | os.PathLike | None,
              head: HeadConfig, size: int | None = None,
              arch_config: dict | None = None) -> tuple[nn.Module, ModelSpec]:
        # the whole CLIP model is built once and its weights loaded once; the text tower is then left behind
        clip, config, where = load_clip(arch, pretrained=pretrained, weights=weights, size=size,
                                        arch_config=arch_config)
        model = image_classifier(clip, config)
        spec = replace(self.spec(name, arch, model, size=size), weights=where)
        self.replace_head(model, spec, n_out, head)
        return model, spec

    def matcher_for(self, model: nn.Module) -> dict | None:
        if not isinstance(model, OpenClipClassifier):
            return None
        matcher = OPEN_CLIP_MATCHERS.get(type(model.visual).__name__)
        return matcher if matcher is not None else _timm_tower_matcher(model.visual)

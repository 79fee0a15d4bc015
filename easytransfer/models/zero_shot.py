"""Zero-shot heads: class embeddings from a CLIP text tower, made into the Linear head of an image classifier.

A class's embedding is the normalised mean of its normalised prompt embeddings (CLIP's prompt ensembling); the
prompts are `DEFAULT_TEMPLATES` filled with the class name, the user's own templates, or the user's own
descriptions of a class. The zero-shot head is a Linear layer with weights ``logit_scale * class embeddings`` and
no bias, on the L2-normalised image embedding of an `OpenClipClassifier`: its logits are CLIP's,
``logit_scale * cosine(image, class)``, and their softmax the zero-shot probabilities. The same model is what
`zero_shot_classifier` predicts with and what ``transfer_learner(dls, "open_clip:...", head="zero_shot")`` starts
fine-tuning from; only the image tower and the head are kept (no text tower at inference).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from ..devices import resolve_device
from .backends import backend_for
from .backends.open_clip import OPEN_CLIP_PREFIX, clip_tokenizer, image_classifier, load_clip
from .heads import HeadConfig
from .spec import ModelSpec

__all__ = ["DEFAULT_TEMPLATES", "TEXT_BS", "class_prompts", "class_text_embeddings", "prompt_name", "zero_shot_model"]

# A handful of the 80 ImageNet prompt templates of the CLIP paper (OpenAI's prompt-engineering notebook), those
# that describe a photo of any subject; the paper's 7-template ensemble has ImageNet-specific ones ("a origami {}.",
# "a {} in a video game.").
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a bad photo of a {}.",
    "a cropped photo of a {}.",
    "a close-up photo of a {}.",
    "a bright photo of a {}.",
    "a photo of the large {}.",
    "a photo of the small {}.",
)
TEXT_BS = 256  # prompts per pass of the text tower


def prompt_name(name: str) -> str:
    """How a class name reads inside a prompt: folder-style ``_`` and ``-`` become spaces.

    >>> prompt_name("hot_dog"), prompt_name("Golden-Retriever")
    ('hot dog', 'Golden Retriever')
    """
    return " ".join(str(name).replace("_", " ").replace("-", " ").split())


def class_prompts(classes: Sequence[str], templates: Sequence[str] | None = None,
                  descriptions: Mapping[str, Sequence[str] | str] | None = None) -> dict[str, list[str]]:
    """The texts whose embeddings make each class's embedding, in class order.

    Args:
        classes: class names, in output order.
        templates: prompt templates with ``{}`` where the class name goes (`prompt_name` of it); default
            `DEFAULT_TEMPLATES`.
        descriptions: class -> its own texts (or one text), used instead of the templates for that class.

    >>> class_prompts(["cat", "hot_dog"], ["a photo of a {}."], {"cat": ["a small furry pet"]})
    {'cat': ['a small furry pet'], 'hot_dog': ['a photo of a hot dog.']}
    """
    classes = [str(c) for c in classes]
    if not classes:
        raise ValueError("A zero-shot classifier needs at least one class name.")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise ValueError(f"Class names must be unique; repeated: {repeated}.")
    templates = list(DEFAULT_TEMPLATES if templates is None else ([templates] if isinstance(templates, str)
                                                                  else templates))
    if not templates:
        raise ValueError("templates is empty; give at least one, e.g. ['a photo of a {}.'] (or None: the defaults).")
    bad = [t for t in templates if not isinstance(t, str) or "{}" not in t]
    if bad:
        raise ValueError(f"Every template needs '{{}}' where the class name goes; these have none: {bad}.")
    descriptions = dict(descriptions or {})
    unknown = sorted(set(descriptions) - set(classes))
    if unknown:
        raise ValueError(f"descriptions names {unknown}, which are not among the classes {classes}.")
    prompts = {}
    for name in classes:
        if name in descriptions:
            texts = descriptions[name]
            texts = [texts] if isinstance(texts, str) else [str(t) for t in texts]
            if not texts:
                raise ValueError(f"descriptions[{name!r}] is empty; give at least one text, or leave the class out "
                                 "to use the templates.")
            prompts[name] = texts
        else:
            prompts[name] = [t.format(prompt_name(name)) for t in templates]
    return prompts


def class_text_embeddings(clip: nn.Module, tokenizer, prompts: Mapping[str, Sequence[str]], *,
                          batch_size: int = TEXT_BS) -> torch.Tensor:
    """(classes, dim) unit-norm class embeddings: per class, the normalised mean of its normalised prompt embeddings.

    Args:
        clip: a whole open_clip model (its ``encode_text`` is used, on the device it is on).
        tokenizer: its tokenizer (`clip_tokenizer`).
        prompts: class -> texts (`class_prompts`).

    >>> emb = class_text_embeddings(clip, tokenizer, class_prompts(["cat", "dog"]))  # doctest: +SKIP
    """
    texts = [t for group in prompts.values() for t in group]
    device = next(clip.parameters()).device
    was_training = clip.training
    clip.eval()
    parts = []
    with torch.no_grad():
        for i in range(0, len(texts), batch_size):
            tokens = tokenizer(texts[i:i + batch_size]).to(device)
            parts.append(F.normalize(clip.encode_text(tokens).float(), dim=-1))
    clip.train(was_training)
    per_prompt = torch.cat(parts)
    sizes = [len(group) for group in prompts.values()]
    means = torch.stack([chunk.mean(0) for chunk in per_prompt.split(sizes)])
    return F.normalize(means, dim=-1)


def _head_linear(head: nn.Module) -> nn.Linear:
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 1:
        raise ValueError("A zero-shot head is one Linear layer (with optional dropout before it).")
    return linears[0]


def zero_shot_model(arch: str, classes: Sequence[str], *, templates: Sequence[str] | None = None,
                    descriptions: Mapping[str, Sequence[str] | str] | None = None, pretrained: bool = True,
                    weights: str | os.PathLike | None = None, size: int | None = None,
                    head: HeadConfig | None = None, device: str | torch.device | None = None,
                    ) -> tuple[nn.Module, ModelSpec]:
    """A CLIP image tower whose head is the zero-shot classifier of `classes`; ``(model, spec)``.

    The head's weights are ``logit_scale * class_text_embeddings(...)``, its bias zero, so the model's logits are
    ``logit_scale * cosine(image embedding, class embedding)``. The text tower is used once and left behind.

    Args:
        arch: an open_clip name (``"open_clip:ViT-B-32/openai"``, ``"open_clip:local-dir:PATH"`` ...).
        classes: class names, in output order.
        templates, descriptions: the prompts (`class_prompts`).
        pretrained, weights, size: as for `build_model`.
        head: a ``HeadConfig("zero_shot", dropout=...)``; default ``HeadConfig("zero_shot")``.
        device: where the text tower runs (``None``: CUDA when available); the model comes back on the CPU.

    >>> model, spec = zero_shot_model("open_clip:local-dir:clip-b32", ["cat", "dog"])  # doctest: +SKIP
    """
    head = head if head is not None else HeadConfig("zero_shot")
    if head.type != "zero_shot":
        raise ValueError(f"zero_shot_model builds a head='zero_shot', not {head.type!r}.")
    prompts = class_prompts(classes, templates, descriptions)
    backend, source_arch = backend_for(arch)
    if not backend.text_heads:
        raise ValueError(f"A zero-shot head needs a CLIP text tower, and {arch!r} ({backend.source}) has none; use an "
                         f"open_clip model, e.g. '{OPEN_CLIP_PREFIX}ViT-B-32/openai'.")
    clip, config, where = load_clip(source_arch, pretrained=pretrained, weights=weights, size=size)
    clip.to(resolve_device(device))
    embeddings = class_text_embeddings(clip, clip_tokenizer(source_arch, config), prompts)
    scale = float(clip.logit_scale.detach().float().exp())
    model = image_classifier(clip.cpu(), config)
    spec = replace(backend.spec(arch, source_arch, model, size=size), weights=where)
    backend.replace_head(model, spec, len(prompts), head)
    linear = _head_linear(model.head)
    with torch.no_grad():
        linear.weight.copy_(scale * embeddings.cpu())
        linear.bias.zero_()
    return model.train(), spec

"""Layer groups: a model's parameters split into ordered groups, stem first, new head last.

One engine serves every architecture: timm's ``group_matcher(coarse=True)`` (regexes over parameter names,
turned into ordered groups by ``timm.models.group_parameters``) gives the model's natural stages; they are
bucketed into `n_stages` contiguous body groups, and the new classifier forms the head group. Freezing,
gradual unfreezing and discriminative learning rates all work on these groups.

Layer decay works on finer groups, one per block (`block_layer_groups`): the model's
``group_matcher(coarse=False)``, as timm's own ``param_groups_layer_decay`` reads it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import timm.models
from torch import nn

from ..errors import NoBlockGroupsError
from .backends import registered_backends
from .backends.torchvision import TORCHVISION_MATCHERS as TORCHVISION_MATCHERS
from .matchers import matcher_stages, validate_matcher

__all__ = ["DEFAULT_N_STAGES", "TORCHVISION_MATCHERS", "LayerGroups", "block_layer_groups", "bucket_stages",
           "feature_layer_groups", "fine_matcher_for", "matcher_for", "split_layer_groups"]

DEFAULT_N_STAGES = 4


@dataclass(frozen=True)
class LayerGroups:
    """Parameter names per layer group, ordered from stem to head; the last group is the head."""

    names: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.names)

    @property
    def n_body(self) -> int:
        return len(self.names) - 1

    def params(self, model: nn.Module) -> list[list[nn.Parameter]]:
        """The parameters of `model` in each group (the form fastai's ``splitter`` returns)."""
        by_name = dict(model.named_parameters())
        return [[by_name[n] for n in group] for group in self.names]

    def splitter(self, model: nn.Module) -> list[list[nn.Parameter]]:
        """Use as fastai ``Learner(splitter=groups.splitter)``."""
        return self.params(model)

    def summary(self, model: nn.Module, lrs=None) -> pd.DataFrame:
        """One row per group: first and last parameter's module, parameter count, trainable, learning rate."""
        rows = []
        for i, (names, params) in enumerate(zip(self.names, self.params(model))):
            trainable = [p.requires_grad for p in params]
            rows.append({
                "group": i,
                "name": "head" if i == len(self.names) - 1 else ("stem" if i == 0 else f"stage {i}"),
                "first": names[0].rsplit(".", 1)[0] if names else "",
                "last": names[-1].rsplit(".", 1)[0] if names else "",
                "params": sum(p.numel() for p in params),
                "trainable": "yes" if all(trainable) else ("no" if not any(trainable) else "partly"),
                "lr": float(lrs[i]) if lrs is not None else float("nan"),
            })
        return pd.DataFrame(rows).set_index("group")


def matcher_for(model: nn.Module) -> dict | None:
    """The model's group matcher, from the backend it belongs to; ``None`` when there is none.

    timm models answer their own ``group_matcher(coarse=True)``; torchvision ones get theirs from
    `TORCHVISION_MATCHERS`.

    >>> import torchvision
    >>> sorted(matcher_for(torchvision.models.resnet18()))
    ['blocks', 'stem']
    """
    for backend in registered_backends():
        matcher = backend.matcher_for(model)
        if matcher is not None:
            return matcher
    return None


def _head_param_names(model: nn.Module, head: str | None) -> set[str]:
    if head:
        modules = [model.get_submodule(path) for path in head.split(",") if path]
    else:
        classifier = model.get_classifier()
        modules = list(classifier) if isinstance(classifier, (tuple, list)) else [classifier]
    head_ids = {id(p) for module in modules for p in module.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head_ids}


def _natural_stages(model: nn.Module, head: set[str], matcher: dict | None) -> list[list[str]]:
    """Body parameter names per natural stage, from a group matcher or, without one, module order."""
    if matcher is not None:
        return matcher_stages(model, matcher, exclude=head)
    else:
        warnings.warn(
            f"{type(model).__name__} has no group matcher; its layer groups follow its top-level modules "
            "in order, which may not match its real stages.",
            stacklevel=3,
        )
        order: dict[str, list[str]] = {}
        for n, _ in model.named_parameters():
            if n not in head:
                order.setdefault(n.split(".", 1)[0], []).append(n)
        stages = list(order.values())
    return [s for s in stages if s]


def split_layer_groups(
    model: nn.Module, n_stages: int | None = None, *, head: str | None = None, matcher: dict | None = None
) -> LayerGroups:
    """Split `model` into `n_stages` body groups plus one head group.

    Args:
        model: a timm or torchvision model with its new head.
        n_stages: body groups wanted; default `DEFAULT_N_STAGES`, or fewer when the model has fewer
            natural stages.
        head: module path of the new head, several joined by commas (``"head.linear,head_dist.linear"``);
            default timm's ``get_classifier()`` (`ModelSpec.classifier` is always the right value).
        matcher: group matcher in timm's form (default: `matcher_for(model)`); checked by `validate_matcher`.

    Returns:
        The `LayerGroups`, the head last.

    >>> import timm
    >>> groups = split_layer_groups(timm.create_model("test_resnet", num_classes=3), n_stages=2)
    >>> len(groups), groups.names[-1]
    (3, ('fc.weight', 'fc.bias'))
    """
    head_names = _head_param_names(model, head)
    matcher = validate_matcher(matcher) if matcher is not None else matcher_for(model)
    stages = _natural_stages(model, head_names, matcher)
    if n_stages is not None and n_stages < 1:
        raise ValueError(f"n_stages must be at least 1, got {n_stages}")
    body = bucket_stages(stages, n_stages)
    head_group = tuple(n for n, _ in model.named_parameters() if n in head_names)
    return LayerGroups(names=tuple(body) + (head_group,))


def bucket_stages(stages: list[list[str]], n_stages: int | None = None) -> list[tuple[str, ...]]:
    """Natural stages (parameter names, stem first) bucketed into `n_stages` contiguous body groups.

    Default `DEFAULT_N_STAGES`, or fewer when there are fewer stages. `np.array_split` puts the extra stages in
    the first buckets: ResNet's 5 stages into 2 buckets gives stem..layer2 | layer3..layer4, fastai's own split.

    >>> bucket_stages([["a"], ["b"], ["c"]], 2)
    [('a', 'b'), ('c',)]
    """
    if n_stages is not None and n_stages < 1:
        raise ValueError(f"n_stages must be at least 1, got {n_stages}")
    n_stages = min(n_stages or DEFAULT_N_STAGES, len(stages))
    buckets = np.array_split(np.arange(len(stages)), n_stages)
    return [tuple(n for i in bucket for n in stages[i]) for bucket in buckets]


def feature_layer_groups(model: nn.Module, body: str, stages: Sequence[Sequence[str]],
                         n_stages: int | None = None) -> LayerGroups:
    """Layer groups of a dense model: its feature body's natural stages bucketed into `n_stages`, then one head group.

    Args:
        model: the whole model (a segmentation model, a detector).
        body: module path of the feature body inside `model` (``"encoder.model"``, ``"backbone.body"``).
        stages: the body's parameter names per natural stage (`FeatureBody.stages`, from the backend's matcher).
        n_stages: body groups wanted (default `DEFAULT_N_STAGES`, fewer when the body has fewer stages).

    Returns:
        The `LayerGroups`: the body's buckets, then every other parameter (decoder, pyramid, heads) as the head.

    Raises:
        ValueError: `stages` names a parameter that is not in the body.

    >>> from easytransfer.models import create_features
    >>> body = create_features("tv:resnet18", pretrained=False)
    >>> model = nn.ModuleDict({"body": body.module, "head": nn.Conv2d(512, 2, 1)})
    >>> groups = feature_layer_groups(model, "body", body.stages, 2)
    >>> len(groups), groups.names[0][0], groups.names[1][0], groups.names[-1]
    (3, 'body.conv1.weight', 'body.layer3.0.conv1.weight', ('head.weight', 'head.bias'))
    """
    prefix = body + "."
    names = [n for n, _ in model.named_parameters()]
    in_body = [n for n in names if n.startswith(prefix)]
    staged = [[prefix + n for n in stage] for stage in stages]
    unknown = sorted({n for stage in staged for n in stage} - set(in_body))
    if unknown:
        raise ValueError(f"The stages name parameters that are not in {body!r} (e.g. {unknown[:3]}); give the "
                         "stages of the body that sits at that path.")
    covered = {n for stage in staged for n in stage}
    left = [n for n in in_body if n not in covered]
    if left:  # body parameters the stages do not hold: with the last stage, as timm does unmatched ones
        staged = [*staged[:-1], [*staged[-1], *left]] if staged else [left]
    staged = [s for s in staged if s]
    head = tuple(n for n in names if not n.startswith(prefix))
    return LayerGroups(names=tuple(bucket_stages(staged, n_stages)) + (head,))


def fine_matcher_for(model: nn.Module) -> dict | None:
    """The model's per-block group matcher (timm's ``group_matcher(coarse=False)``); ``None`` when it has none.

    >>> import timm
    >>> print(fine_matcher_for(timm.create_model("test_resnet"))["blocks"])  # one group per residual block
    ^layer(\\d+)\\.(\\d+)
    """
    for backend in registered_backends():
        matcher = backend.fine_matcher_for(model)
        if matcher is not None:
            return matcher
    return None


def block_layer_groups(model: nn.Module, *, head: str | None = None) -> LayerGroups:
    """One group per block of `model` (stem first, each transformer block or CNN block, then the head), for layer decay.

    The groups are timm's ``param_groups_layer_decay`` layers: ``timm.models.group_parameters`` over the model's
    ``group_matcher(coarse=False)``. The final norm joins the last block; parameters no regex matches (ViT's
    ``fc_norm``, SigLIP's attention-pool head) join the new head, as in timm. ViT's ``cls_token``, ``reg_token``
    (registers), ``pos_embed`` and ``patch_embed`` form the stem.

    Args:
        model: a timm model with its new head.
        head: module path(s) of the new head, as for `split_layer_groups` (default ``get_classifier()``).

    Returns:
        The `LayerGroups`, one per block, the head last; every parameter in exactly one group.

    Raises:
        NoBlockGroupsError: the model has no per-block matcher (torchvision models, hand-written matchers).

    >>> import timm
    >>> groups = block_layer_groups(timm.create_model("test_vit", num_classes=3))  # 6 blocks
    >>> len(groups), groups.names[0][:2], groups.names[-1]
    (8, ('cls_token', 'pos_embed'), ('head.weight', 'head.bias'))
    """
    matcher = fine_matcher_for(model)
    if matcher is None:
        raise NoBlockGroupsError(type(model).__name__)
    head_names = _head_param_names(model, head)
    layer_of = timm.models.group_parameters(model, matcher, reverse=True)  # name -> layer id, stem 0
    top = max(layer_of.values())
    layer_of.update({n: top for n in head_names})  # the new head is the top layer even if a regex matched it
    layers = sorted(set(layer_of.values()))
    by_layer: dict[int, list[str]] = {layer: [] for layer in layers}
    for name, _ in model.named_parameters():
        by_layer[layer_of[name]].append(name)
    return LayerGroups(names=tuple(tuple(by_layer[layer]) for layer in layers))

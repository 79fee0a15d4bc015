"""Layer groups: a model's parameters split into ordered groups, stem first, new head last.

One engine serves every architecture: timm's ``group_matcher(coarse=True)`` (regexes over parameter names,
turned into ordered groups by ``timm.models.group_parameters``) gives the model's natural stages; they are
bucketed into `n_stages` contiguous body groups, and the new classifier forms the head group. Freezing,
gradual unfreezing and discriminative learning rates all work on these groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import timm.models
from torch import nn

__all__ = ["LayerGroups", "split_layer_groups", "DEFAULT_N_STAGES"]

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


def _head_param_names(model: nn.Module) -> set[str]:
    head = model.get_classifier()
    head_ids = {id(p) for p in head.parameters()}
    return {n for n, p in model.named_parameters() if id(p) in head_ids}


def _natural_stages(model: nn.Module, head: set[str]) -> list[list[str]]:
    """Body parameter names per natural stage, from the model's own group matcher."""
    names = [n for n, _ in model.named_parameters()]
    if hasattr(model, "group_matcher"):
        grouped = timm.models.group_parameters(model, model.group_matcher(coarse=True))
        stages = [[n for n in grouped[k] if n not in head] for k in sorted(grouped)]
    else:  # no matcher: one stage per top-level child, in module order
        order: dict[str, list[str]] = {}
        for n in names:
            if n not in head:
                order.setdefault(n.split(".", 1)[0], []).append(n)
        stages = list(order.values())
    return [s for s in stages if s]


def split_layer_groups(model: nn.Module, n_stages: int | None = None) -> LayerGroups:
    """Split `model` into `n_stages` body groups plus one head group.

    Args:
        model: a timm model whose classifier (``get_classifier()``) is the new head.
        n_stages: body groups wanted; default `DEFAULT_N_STAGES`, or fewer when the model has fewer
            natural stages.

    >>> import timm
    >>> groups = split_layer_groups(timm.create_model("test_resnet", num_classes=3), n_stages=2)
    >>> len(groups), groups.names[-1]
    (3, ('fc.weight', 'fc.bias'))
    """
    head = _head_param_names(model)
    stages = _natural_stages(model, head)
    n_stages = min(n_stages or DEFAULT_N_STAGES, len(stages))
    if n_stages < 1:
        raise ValueError(f"n_stages must be at least 1, got {n_stages}")
    # np.array_split puts the extra stages in the first buckets: ResNet's 5 stages into 2 buckets gives
    # stem..layer2 | layer3..layer4, fastai's own split.
    buckets = np.array_split(np.arange(len(stages)), n_stages)
    body = [tuple(n for i in bucket for n in stages[i]) for bucket in buckets]
    head_names = tuple(n for n, _ in model.named_parameters() if n in head)
    return LayerGroups(names=tuple(body) + (head_names,))

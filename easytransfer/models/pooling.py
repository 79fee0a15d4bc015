"""The global pooling layer of a CNN: find it, read its type, swap it, or pool one feature map several ways at once.

A CNN's head starts with one global pooling layer that turns the body's feature map into one vector per image:
timm's ``SelectAdaptivePool2d`` (``model.global_pool``, or ``model.head.global_pool`` in ConvNeXt) or
torchvision's ``avgpool`` (``nn.AdaptiveAvgPool2d(1)``). Models that pool otherwise (a ViT's class token, CLIP's
attention pooling) have none, and `find_global_pool` says so with ``None``.

`pooled_several_ways` lets one forward pass give the head's input for several pooling types: the pooling layer
stacks its results along the batch axis, and every layer after it (a norm, a flatten) works per image, so the
head's input for pooling ``k`` is the ``k``-th block of rows.

>>> import torch
>>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
>>> global_pool_type(model)
'avg'
>>> with pooled_several_ways(model, ("avg", "max")):
...     tuple(model(torch.zeros(2, 3, 8, 8)).shape)
(4, 4)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
from torch import nn

__all__ = ["SWAPPABLE_POOLS", "PoolStack", "find_global_pool", "global_pool_type", "pooled_several_ways",
           "set_global_pool"]

SWAPPABLE_POOLS = ("avg", "max")  # what every global pooling layer found here can become


def _is_timm_pool(module: nn.Module) -> bool:
    return type(module).__name__ == "SelectAdaptivePool2d" and hasattr(module, "pool_type")


def _is_global(module: nn.Module) -> bool:
    if _is_timm_pool(module):
        return True
    if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        return module.output_size in (1, (1, 1))
    return False


def find_global_pool(model: nn.Module) -> tuple[str, nn.Module] | None:
    """``(path, layer)`` of `model`'s one global pooling layer, or ``None`` when it has none or several.

    >>> find_global_pool(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveMaxPool2d(1)))[0]
    '1'
    """
    found = [(name, m) for name, m in model.named_modules() if _is_global(m)]
    outer = [(name, m) for name, m in found if not any(name.startswith(f"{other}.") for other, _ in found)]
    return outer[0] if len(outer) == 1 else None  # (timm's layer holds torch's pooling layer inside)


def global_pool_type(model: nn.Module) -> str | None:
    """How `model` pools its feature map: ``"avg"``, ``"max"``, timm's other names, or ``None`` (no such layer)."""
    found = find_global_pool(model)
    if found is None:
        return None
    layer = found[1]
    if _is_timm_pool(layer):
        return "avg" if layer.pool_type in ("fast", "fastavg") else str(layer.pool_type)
    return "avg" if isinstance(layer, nn.AdaptiveAvgPool2d) else "max"


def _pool_like(layer: nn.Module, pool: str) -> nn.Module:
    """A global pooling layer of type `pool` that fits where `layer` is (same flattening and input format)."""
    if pool not in SWAPPABLE_POOLS:
        raise ValueError(f"pool must be one of {SWAPPABLE_POOLS}, got {pool!r}")
    if _is_timm_pool(layer):  # its inner pooling knows the layout: channels last (Sequencer, MLP-Mixers) or not
        channels_last = tuple(getattr(layer.pool, "dim", (2, 3))) == (1, 2)
        flatten = isinstance(layer.flatten, nn.Flatten) or getattr(layer.pool, "flatten", False) is True
        return type(layer)(1, pool_type=pool, flatten=flatten, input_fmt="NHWC" if channels_last else "NCHW")
    return nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)


def set_global_pool(model: nn.Module, pool: str) -> None:
    """Make `model`'s global pooling layer pool by `pool` (``"avg"`` or ``"max"``); it has no weights to lose.

    >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.AdaptiveAvgPool2d(1))
    >>> set_global_pool(model, "max"); global_pool_type(model)
    'max'
    """
    found = find_global_pool(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no single global pooling layer to change to {pool!r}")
    path, layer = found
    model.set_submodule(path, _pool_like(layer, pool))


class PoolStack(nn.Module):
    """Pool a feature map each way of `pools` and stack the results along the batch axis (pool-major)."""

    def __init__(self, layers: Sequence[nn.Module]):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([layer(x) for layer in self.layers])


@contextlib.contextmanager
def pooled_several_ways(model: nn.Module, pools: Sequence[str]) -> Iterator[None]:
    """While inside, `model`'s pooling layer returns ``len(pools)`` blocks of rows, one per pooling type.

    For a batch of B images the layers after the pooling see ``len(pools) * B`` rows: rows ``k*B .. (k+1)*B`` are
    pooled by ``pools[k]``. The model's own layer is put back on leaving, whatever happens inside.
    """
    found = find_global_pool(model)
    if found is None:
        raise ValueError(f"{type(model).__name__} has no single global pooling layer to vary")
    path, layer = found
    model.set_submodule(path, PoolStack([_pool_like(layer, p) for p in pools]))
    try:
        yield
    finally:
        model.set_submodule(path, layer)

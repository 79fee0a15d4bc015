"""New classification heads, and replacing a backbone's head whatever the family calls it."""

from __future__ import annotations

from torch import nn

__all__ = ["find_last_linear", "mlp_head", "replace_linear_head"]


def mlp_head(n_in: int, n_out: int, *, hidden: int = 512, dropout: float = 0.5) -> nn.Sequential:
    """fastai-style bigger head: dropout, linear, ReLU, BatchNorm, dropout, linear.

    >>> mlp_head(1280, 3)[-1]
    Linear(in_features=512, out_features=3, bias=True)
    """
    return nn.Sequential(
        nn.Dropout(dropout / 2),
        nn.Linear(n_in, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, n_out),
    )


def find_last_linear(model: nn.Module) -> str:
    """Module path of the last ``nn.Linear`` in `model` (torchvision: ``fc``, ``classifier.1``, ``heads.head``)."""
    path = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            path = name
    if path is None:
        raise ValueError(f"{type(model).__name__} has no Linear layer to replace as its head.")
    return path


def replace_linear_head(
    model: nn.Module, path: str, n_out: int, *, head: str = "linear", dropout: float | None = None
) -> nn.Module:
    """Replace the Linear layer at `path` with a new head for `n_out` outputs; returns the new head."""
    old = model.get_submodule(path)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"{path!r} in {type(model).__name__} is a {type(old).__name__}, not a Linear layer.")
    if head == "linear":
        new = nn.Linear(old.in_features, n_out)
        if dropout:
            new = nn.Sequential(nn.Dropout(dropout), new)
    elif head == "mlp":
        new = mlp_head(old.in_features, n_out, dropout=0.5 if dropout is None else dropout)
    else:
        raise ValueError(f"head must be 'linear' or 'mlp', got {head!r}")
    model.set_submodule(path, new)
    return new

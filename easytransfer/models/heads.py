"""New classification heads, and replacing a backbone's head whatever the family calls it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

__all__ = ["HEAD_TYPES", "HeadConfig", "find_classifier_layer", "find_last_linear", "mlp_head", "new_head",
           "replace_conv_head", "replace_linear_head"]

# "zero_shot": a linear head that starts as the class names' CLIP text embeddings (open_clip models only;
# `easytransfer.models.zero_shot`); its shape is a linear head's, so a bundle rebuilds it like one
HEAD_TYPES = ("linear", "mlp", "zero_shot")
POOL_TYPES = (None, "avg", "max", "avgmax")
MLP_HIDDEN = 512
MLP_DROPOUT = 0.5


@dataclass(frozen=True)
class HeadConfig:
    """Which new head a model has: what `replace_linear_head` builds and a bundle records.

    Attributes:
        type: ``"linear"`` (one Linear layer), ``"mlp"`` (hidden layer, BatchNorm and dropout) or
            ``"zero_shot"`` (a Linear layer initialised from CLIP text embeddings of the class names).
        dropout: dropout before the last Linear layer (``None``: none for linear, `MLP_DROPOUT` for mlp).
        hidden: width of the MLP's hidden layer.
        pool: how the body's feature map becomes one vector: ``None`` (the model's own pooling), ``"avg"``,
            ``"max"`` (keeps a small, strong response such as a small defect instead of averaging it away) or
            ``"avgmax"`` (their mean; timm models only).

    >>> HeadConfig.from_module(mlp_head(64, 3, hidden=32, dropout=0.2))
    HeadConfig(type='mlp', dropout=0.2, hidden=32, pool=None)
    """

    type: str = "linear"
    dropout: float | None = None
    hidden: int = MLP_HIDDEN
    pool: str | None = None

    def __post_init__(self):
        if self.type not in HEAD_TYPES:
            raise ValueError(f"head must be one of {HEAD_TYPES}, got {self.type!r}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pool not in POOL_TYPES:
            raise ValueError(f"pool must be one of {POOL_TYPES}, got {self.pool!r}")
        if self.type == "mlp" and self.dropout is None:
            object.__setattr__(self, "dropout", MLP_DROPOUT)  # so equal heads compare equal

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        return cls(type=data.get("type", "linear"), dropout=data.get("dropout"),
                   hidden=int(data.get("hidden", MLP_HIDDEN)), pool=data.get("pool"))

    @classmethod
    def from_module(cls, head: nn.Module) -> HeadConfig:
        """The config that rebuilds `head` (a Linear, Dropout + Linear, or an `mlp_head`)."""
        if isinstance(head, (nn.Linear, nn.Conv2d)):  # a 1x1 Conv2d is SqueezeNet's linear classifier
            return cls("linear")
        layers = list(head.children()) if isinstance(head, nn.Sequential) else []
        if len(layers) == 2 and isinstance(layers[0], nn.Dropout) and isinstance(layers[1], (nn.Linear, nn.Conv2d)):
            return cls("linear", dropout=layers[0].p)
        kinds = [type(m) for m in layers]
        if kinds == [nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear]:
            return cls("mlp", dropout=layers[4].p, hidden=layers[1].out_features)
        raise ValueError(f"A {type(head).__name__} head cannot be described as a HeadConfig; build the learner "
                         "with transfer_learner(..., head='linear' or 'mlp').")


def mlp_head(n_in: int, n_out: int, *, hidden: int = MLP_HIDDEN, dropout: float = MLP_DROPOUT) -> nn.Sequential:
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


def find_classifier_layer(model: nn.Module) -> str:
    """Module path of `model`'s classifier: its last ``nn.Linear``, else its last 1x1 ``nn.Conv2d`` (SqueezeNet).

    >>> find_classifier_layer(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 10, 1)))
    '2'
    """
    try:
        return find_last_linear(model)
    except ValueError:
        pass
    path = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d) and module.kernel_size == (1, 1):
            path = name
    if path is None:
        raise ValueError(f"{type(model).__name__} has no Linear or 1x1 Conv2d layer to replace as its head.")
    return path


def replace_conv_head(model: nn.Module, path: str, n_out: int, head: HeadConfig = HeadConfig()) -> nn.Module:
    """Replace the 1x1 Conv2d classifier at `path` (SqueezeNet) with one of `n_out` channels; returns it.

    >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 10, 1))
    >>> replace_conv_head(model, "1", 4)
    Conv2d(8, 4, kernel_size=(1, 1), stride=(1, 1))
    """
    old = model.get_submodule(path)
    if not isinstance(old, nn.Conv2d) or old.kernel_size != (1, 1):
        raise ValueError(f"{path!r} in {type(model).__name__} is a {type(old).__name__}, not a 1x1 Conv2d.")
    if head.type != "linear":
        raise ValueError(f"head={head.type!r} needs a Linear classifier, and {type(model).__name__}'s is a 1x1 "
                         "Conv2d; use head='linear' (with dropout= if you want dropout before it).")
    new = nn.Conv2d(old.in_channels, n_out, 1)
    if head.dropout:
        new = nn.Sequential(nn.Dropout(head.dropout), new)
    model.set_submodule(path, new)
    return new


def new_head(n_in: int, n_out: int, head: HeadConfig = HeadConfig()) -> nn.Module:
    """A new head of `head`'s kind from `n_in` features to `n_out` outputs (a zero-shot head is shaped as a linear one).

    >>> new_head(16, 3, HeadConfig("linear", dropout=0.1))
    Sequential(
      (0): Dropout(p=0.1, inplace=False)
      (1): Linear(in_features=16, out_features=3, bias=True)
    )
    """
    if head.type == "mlp":
        return mlp_head(n_in, n_out, hidden=head.hidden, dropout=head.dropout)
    new = nn.Linear(n_in, n_out)
    return nn.Sequential(nn.Dropout(head.dropout), new) if head.dropout else new


def replace_linear_head(model: nn.Module, path: str, n_out: int, head: HeadConfig = HeadConfig()) -> nn.Module:
    """Replace the Linear layer at `path` with a new head for `n_out` outputs; returns the new head."""
    old = model.get_submodule(path)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"{path!r} in {type(model).__name__} is a {type(old).__name__}, not a Linear layer.")
    new = new_head(old.in_features, n_out, head)
    model.set_submodule(path, new)
    return new

"""New classification heads, and replacing a backbone's head whatever the family calls it.

Besides the trained heads (``"linear"``, ``"mlp"``) there are two few-shot heads that are *fitted* on cached
features by `fit_frozen` and exported like any other: `PrototypeHead` (cosine similarity to each class's mean
feature, ``method="prototype"``) and `KNNHead` (a vote of the nearest training images, ``method="knn"``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["HEAD_TYPES", "KNN_SMOOTHING", "HeadConfig", "KNNHead", "PrototypeHead", "find_classifier_layer",
           "find_last_linear", "mlp_head", "new_head", "replace_conv_head", "replace_linear_head"]

# "zero_shot": a linear head that starts as the class names' CLIP text embeddings (open_clip models only;
# `easytransfer.models.zero_shot`); its shape is a linear head's, so a bundle rebuilds it like one
HEAD_TYPES = ("linear", "mlp", "zero_shot", "prototype", "knn")
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
        k: ``"knn"`` only: the neighbours that vote.
        exemplars: ``"knn"`` only: the number of training features the head stores.

    ``"prototype"`` (a `PrototypeHead`) and ``"knn"`` (a `KNNHead`) are fitted by ``fit_frozen(method=...)``;
    their numbers (class means, stored features) are in the weights, so the config only sizes them.

    >>> HeadConfig.from_module(mlp_head(64, 3, hidden=32, dropout=0.2))
    HeadConfig(type='mlp', dropout=0.2, hidden=32, pool=None, k=None, exemplars=None)
    >>> HeadConfig.from_module(KNNHead(64, 3, exemplars=20, k=5)).to_dict()["k"]
    5
    """

    type: str = "linear"
    dropout: float | None = None
    hidden: int = MLP_HIDDEN
    pool: str | None = None
    k: int | None = None
    exemplars: int | None = None

    def __post_init__(self):
        if self.type not in HEAD_TYPES:
            raise ValueError(f"head must be one of {HEAD_TYPES}, got {self.type!r}")
        if self.dropout is not None and not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.pool not in POOL_TYPES:
            raise ValueError(f"pool must be one of {POOL_TYPES}, got {self.pool!r}")
        if self.type == "mlp" and self.dropout is None:
            object.__setattr__(self, "dropout", MLP_DROPOUT)  # so equal heads compare equal
        if self.type == "knn" and not (isinstance(self.k, int) and isinstance(self.exemplars, int)
                                       and 1 <= self.k <= self.exemplars):
            raise ValueError("head='knn' holds training features and is made by learn.fit_frozen(1, method='knn'); "
                             f"its HeadConfig needs 1 <= k <= exemplars, got k={self.k}, exemplars={self.exemplars}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> HeadConfig:
        return cls(type=data.get("type", "linear"), dropout=data.get("dropout"),
                   hidden=int(data.get("hidden", MLP_HIDDEN)), pool=data.get("pool"),
                   k=_int_or_none(data.get("k")), exemplars=_int_or_none(data.get("exemplars")))

    @classmethod
    def from_module(cls, head: nn.Module) -> HeadConfig:
        """The config that rebuilds `head` (a Linear, Dropout + Linear, an `mlp_head`, a few-shot head)."""
        if isinstance(head, PrototypeHead):  # before Linear: it is one
            return cls("prototype")
        if isinstance(head, KNNHead):
            return cls("knn", k=head.k, exemplars=int(head.exemplars.shape[0]))
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


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


class PrototypeHead(nn.Linear):
    """A cosine classifier: a Linear layer applied to the L2-normalised feature vector.

    ``fit_frozen(method="prototype")`` sets row c of the weight to ``scale * m_c / |m_c|``, where m_c is the mean
    of class c's normalised training features, and the bias to 0, so the logits are the scaled cosine
    similarities to the class means (the nearest class mean wins; -1e4 for a class without training images).
    Its weight and bias stay ordinary parameters: a later gradient fit trains it as a cosine classifier.

    >>> head = PrototypeHead.from_features(torch.tensor([[1.0, 0], [3, 0], [0, 2]]), torch.tensor([0, 0, 1]), 2,
    ...                                    scale=10.0)
    >>> head(torch.tensor([[2.0, 1.0]])).detach().round(decimals=2)  # 10 * cosine to (1, 0) and to (0, 1)
    tensor([[8.9400, 4.4700]])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(x, dim=-1), self.weight, self.bias)

    @classmethod
    def from_features(cls, features: torch.Tensor, labels: torch.Tensor, n_classes: int, *,
                      scale: float) -> PrototypeHead:
        """The head whose rows are `scale` times the normalised mean of each class's normalised `features`."""
        features = F.normalize(features.float(), dim=-1)
        sums = torch.zeros(n_classes, features.shape[1]).index_add_(0, labels, features)
        counts = torch.bincount(labels, minlength=n_classes)
        head = cls(features.shape[1], n_classes)
        with torch.no_grad():
            head.weight.copy_(scale * F.normalize(sums, dim=-1))
            head.bias.copy_(torch.where(counts > 0, 0.0, -1e4))
        return head


KNN_SMOOTHING = 1.0  # add-one (Laplace) smoothing of the vote: a class no neighbour voted for keeps a finite loss


class KNNHead(nn.Module):
    """The `k` nearest training images by cosine similarity vote; the output is the log of the smoothed vote.

    With ``votes_c`` the neighbours of class c, ``p_c = (votes_c + s) / (k + s * n_classes)`` with
    s = `KNN_SMOOTHING`; the head returns ``log p``, so the softmax the learner and `load_model` apply gives p
    back and the cross-entropy is ``-log p`` of the true class. The normalised training features and their
    labels are buffers: they are exported with the weights (memory grows with the training set).

    Args:
        in_features, out_features: feature width and number of classes.
        exemplars: number of stored training features (filled by `from_features` or a loaded state dict).
        k: neighbours that vote.

    >>> head = KNNHead.from_features(torch.tensor([[1.0, 0], [0, 1], [1, 1]]), torch.tensor([0, 1, 1]), 2, k=1)
    >>> head(torch.tensor([[2.0, 0.1]])).softmax(-1)
    tensor([[0.6667, 0.3333]])
    """

    def __init__(self, in_features: int, out_features: int, *, exemplars: int, k: int):
        super().__init__()
        if not 1 <= k <= exemplars:
            raise ValueError(f"k must be between 1 and the {exemplars} stored training features, got {k}")
        self.in_features, self.out_features, self.k = in_features, out_features, k
        self.register_buffer("exemplars", torch.zeros(exemplars, in_features))
        self.register_buffer("labels", torch.zeros(exemplars, dtype=torch.long))

    @classmethod
    def from_features(cls, features: torch.Tensor, labels: torch.Tensor, n_classes: int, *, k: int) -> KNNHead:
        """The head that stores the normalised `features` and their `labels`."""
        head = cls(features.shape[1], n_classes, exemplars=features.shape[0], k=k)
        head.exemplars.copy_(F.normalize(features.float(), dim=-1))
        head.labels.copy_(labels)
        return head

    def neighbour_labels(self, x: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """Labels of the `k` (default ``self.k``) most similar stored features of each row of `x`, nearest first."""
        similarity = F.normalize(x, dim=-1) @ self.exemplars.to(x.dtype).T
        return self.labels[similarity.topk(k or self.k, dim=1).indices]

    def vote(self, neighbours: torch.Tensor) -> torch.Tensor:
        """Log of the smoothed vote of `neighbours` (rows of neighbour labels, one column per neighbour)."""
        votes = torch.zeros(neighbours.shape[0], self.out_features, device=neighbours.device)
        votes.scatter_add_(1, neighbours, torch.ones(neighbours.shape, device=neighbours.device))
        return torch.log((votes + KNN_SMOOTHING) / (neighbours.shape[1] + KNN_SMOOTHING * self.out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vote(self.neighbour_labels(x))

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, " \
               f"exemplars={self.exemplars.shape[0]}, k={self.k}"


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
    if head.type == "prototype":
        return PrototypeHead(n_in, n_out)
    if head.type == "knn":
        return KNNHead(n_in, n_out, exemplars=head.exemplars, k=head.k)
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

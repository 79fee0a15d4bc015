"""`TransferLearner`: a fastai `Learner` that knows its backbone, its layer groups and the transfer recipe."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from fastai.callback.schedule import ParamScheduler
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.metrics import accuracy, accuracy_multi
from torch import nn

from .callbacks import FrozenBatchNormCallback, PhaseLogCallback, warmup_cosine
from .data import ImageData
from .models import ModelSpec, build_model
from .splitters import LayerGroups, split_layer_groups

__all__ = ["TransferLearner", "discriminative_lrs", "transfer_learner"]

DEFAULT_HEAD_LR = 3e-3


DEFAULT_DECAY = 0.1  # measured: 0.3 (3e-4 for the top body group) wrecked EfficientNet-Lite0 on textiles


def discriminative_lrs(lr_max, n_groups: int, decay: float = DEFAULT_DECAY) -> np.ndarray:
    """One learning rate per layer group, stem first: group k counted from the head gets ``lr_max * decay**k``.

    `lr_max` may also be a sequence (one rate per group, stem first) or fastai's ``slice(lo, hi)``
    (rates spaced geometrically from `lo` for the stem to `hi` for the head).

    >>> discriminative_lrs(1e-3, 4, decay=0.1)
    array([1.e-06, 1.e-05, 1.e-04, 1.e-03])
    """
    if isinstance(lr_max, slice):
        lo = lr_max.start if lr_max.start is not None else lr_max.stop / 10
        return np.geomspace(lo, lr_max.stop, n_groups)
    if isinstance(lr_max, Sequence) or isinstance(lr_max, np.ndarray):
        lrs = np.asarray(lr_max, dtype=float)
        if len(lrs) != n_groups:
            raise ValueError(f"Got {len(lrs)} learning rates for {n_groups} layer groups.")
        return lrs
    if not 0 < decay <= 1:
        raise ValueError(f"decay must be in (0, 1], got {decay}")
    return float(lr_max) * decay ** np.arange(n_groups - 1, -1, -1, dtype=float)


class TransferLearner(Learner):
    """A fastai `Learner` for transfer learning: frozen-body training, unfreezing, discriminative rates.

    Build one with `transfer_learner`. It starts with the body frozen.

    Attributes:
        spec: the backbone's `ModelSpec` (preprocessing, family, source).
        layer_groups: the `LayerGroups` (stem ... head) that freezing and learning rates work on.
        history: one row per epoch of every fit so far (phase, losses, metrics, learning rates, seconds).
    """

    def __init__(self, dls: DataLoaders, model: nn.Module, *, spec: ModelSpec, layer_groups: LayerGroups,
                 train_bn: bool = False, freeze_bn_stats: bool = True, **kwargs):
        cbs = list(kwargs.pop("cbs", None) or [])
        if not train_bn:
            cbs.append(FrozenBatchNormCallback(all_layers=freeze_bn_stats))
        super().__init__(dls, model, splitter=layer_groups.splitter, train_bn=train_bn, cbs=cbs, **kwargs)
        self.spec = spec
        self.layer_groups = layer_groups
        self.history = pd.DataFrame()
        self.freeze()

    @property
    def n_groups(self) -> int:
        return len(self.layer_groups)

    def summary_groups(self) -> pd.DataFrame:
        """The layer groups as a table: first and last module, parameters, trainable or frozen, current lr.

        >>> learn.unfreeze(2); learn.summary_groups()  # doctest: +SKIP
        """
        lrs = [h["lr"] for h in self.opt.hypers] if self.opt is not None else None
        return self.layer_groups.summary(self.model, lrs)

    def unfreeze(self, n: int | None = None) -> TransferLearner:
        """Make all layer groups trainable, or only the head and the last `n` body groups.

        >>> learn.unfreeze(2)  # doctest: +SKIP
        """
        if n is None:
            self.freeze_to(0)
        else:
            if not 0 <= n <= self.layer_groups.n_body:
                raise ValueError(f"n must be between 0 and {self.layer_groups.n_body} (the body groups), got {n}")
            self.freeze_to(self.layer_groups.n_body - n)
        return self

    def _fit_scheduled(self, epochs: int, lrs: np.ndarray, *, warmup_pct: float, phase: str, cbs=None):
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        if self.opt is None:
            self.create_opt()
        self.opt.set_hyper("lr", lrs)
        scheduler = ParamScheduler({"lr": warmup_cosine(lrs, warmup_pct)})
        self.fit(epochs, cbs=[scheduler, PhaseLogCallback(phase)] + list(cbs or []))
        return self

    def fit_frozen(self, epochs: int, lr: float = DEFAULT_HEAD_LR, *, warmup_pct: float = 0.1, cbs=None):
        """Train only the new head with the body frozen (feature extraction).

        The frozen body's BatchNorm layers run with their pre-trained statistics (inference mode) unless the
        learner was built with ``train_bn=True``. The learning rate warms up linearly over the first
        `warmup_pct` of steps, then follows a cosine to near zero.

        Returns:
            the learner.

        >>> learn.fit_frozen(3)  # doctest: +SKIP
        """
        self.freeze()
        lrs = np.full(self.n_groups, float(lr))
        return self._fit_scheduled(epochs, lrs, warmup_pct=warmup_pct, phase="frozen", cbs=cbs)

    def fit_discriminative(self, epochs: int, lr_max=1e-3, *, decay: float = DEFAULT_DECAY, warmup_pct: float = 0.1,
                           cbs=None):
        """Train the unfrozen groups, each with its own learning rate decaying from head to stem.

        Group k counted from the head gets ``lr_max * decay**k``; a list (stem first) or ``slice(lo, hi)``
        is accepted too. Call `unfreeze` first: groups still frozen stay frozen.

        The default ``decay=0.1`` gives 1e-3, 1e-4, 1e-5 ... from the head down, as fastai's
        ``slice(1e-5, 1e-3)``: with 0.3 the top body group's 3e-4 made the valid loss jump on the textile set.

        >>> learn.unfreeze(); learn.fit_discriminative(5, lr_max=1e-3, decay=0.1)  # doctest: +SKIP
        """
        lrs = discriminative_lrs(lr_max, self.n_groups, decay)
        return self._fit_scheduled(epochs, lrs, warmup_pct=warmup_pct, phase="discriminative", cbs=cbs)

    def interpret(self, dl=None):
        """Predictions on `dl` (the validation set by default), computed once; see `Interpretation`."""
        from .interpret import Interpretation

        return Interpretation.from_learner(self, dl)

    def export(self, path, **kwargs):
        """Write a model bundle (safetensors weights + JSON) to folder `path`; no pickle is involved."""
        from .export import export_bundle

        return export_bundle(self, path)


def _default_metrics(dls) -> list:
    multilabel = isinstance(dls, ImageData) and dls.is_multilabel
    return [accuracy_multi] if multilabel else [accuracy]


def _n_out(dls) -> int:
    return len(dls.vocab)


def transfer_learner(
    dls: DataLoaders,
    arch: str = "efficientnet_lite0",
    *,
    pretrained: bool = True,
    weights: str | None = None,
    n_stages: int | None = None,
    head: str = "linear",
    metrics=None,
    train_bn: bool = False,
    freeze_bn_stats: bool = True,
    **kwargs,
) -> TransferLearner:
    """A `TransferLearner` for `dls` with a pre-trained `arch` whose head is replaced for the data's classes.

    The data is rebuilt with the model's own preprocessing (input size, resize filter, mean and std from its
    pretrained config) when it is an `ImageData`; other fastai DataLoaders get the model's normalisation.

    Args:
        dls: the data (`ImageData.from_folder` ...).
        arch: architecture name (``"efficientnet_lite0"``, ``"resnet50"``, ``"convnext_tiny"`` ...).
        pretrained: load pre-trained weights (``False``: random initialisation, no download).
        weights: a local weights file for `arch` (``.safetensors`` or ``.pth``).
        n_stages: number of body layer groups (default 4, fewer when the model has fewer stages).
        head: ``"linear"`` (a new Linear layer) or ``"mlp"`` (hidden layer, BatchNorm and dropout).
        metrics: fastai metrics; default accuracy (multi-label: ``accuracy_multi``).
        train_bn: keep training BatchNorm layers of a frozen body (fastai's behaviour); default ``False``.
        freeze_bn_stats: BatchNorm layers normalise with their pre-trained statistics during all training,
            also after unfreezing (Keras' rule; default). ``False``: unfrozen BN layers use batch statistics.
            Measured on the textile set with batches of 16: batch statistics after unfreezing sent the
            validation accuracy to chance, frozen statistics let it improve.

    >>> from easytransfer import ImageData, transfer_learner
    >>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
    >>> learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3)  # doctest: +SKIP
    """
    model, spec = build_model(arch, _n_out(dls), pretrained=pretrained, weights=weights, head=head)
    if isinstance(dls, ImageData):
        dls = dls.for_model(spec)
    else:
        dls.add_tfms([Normalize.from_stats(spec.mean, spec.std, cuda=False)], "after_batch")
    groups = split_layer_groups(model, n_stages, head=spec.classifier if spec.source == "torchvision" else None)
    return TransferLearner(
        dls, model, spec=spec, layer_groups=groups, metrics=metrics if metrics is not None else _default_metrics(dls),
        train_bn=train_bn, freeze_bn_stats=freeze_bn_stats, **kwargs,
    )

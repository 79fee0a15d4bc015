"""`TransferLearner`: a fastai `Learner` that knows its backbone, its layer groups and the transfer recipe."""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.mixup import CutMix, MixHandler, MixUp
from fastai.callback.schedule import ParamScheduler
from fastai.callback.tracker import EarlyStoppingCallback
from fastai.data.core import DataLoaders
from fastai.data.transforms import Normalize
from fastai.learner import Learner
from fastai.losses import BCEWithLogitsLossFlat, CrossEntropyLossFlat, LabelSmoothingCrossEntropyFlat
from fastai.metrics import accuracy, accuracy_multi
from fastai.optimizer import OptimWrapper
from fastai.torch_core import set_seed
from fastai.vision.core import PILImage
from matplotlib.figure import Figure
from PIL import Image
from torch import nn

from ..data.arrays import rgb_from_array
from ..data.augment import uses_cutmix
from ..data.images import open_rgb
from ..data.loaders import ImageData
from ..data.sources import candidate_files
from ..deploy.bundle import BundleConfig, Preprocessing, write_bundle
from ..devices import resolve_device
from ..errors import DataError, EasyTransferError
from ..evaluate.calibration import Calibration, fit_calibration
from ..evaluate.conformal import ConformalCalibration
from ..evaluate.diagnosis import ConfidenceCheck, Diagnosis, diagnose
from ..log import get_logger
from ..models.factory import ModelSpec, build_model, head_dropout
from ..models.heads import HeadConfig
from ..models.layer_groups import LayerGroups, block_layer_groups, split_layer_groups
from ..models.weights import load_state_dict_strict
from ..models.zero_shot import zero_shot_model
from ..tasks.classification.interpretation import Interpretation, as_dataloader
from ..tasks.classification.prediction_sets import ConformalPredictor
from ..tasks.classification.probe import fit_knn_head, fit_logistic_probe, fit_prototype_head, record_probe
from ..tasks.classification.uncertainty import (
    calibration_activation,
    folder_probabilities,
    image_probabilities,
    raw_logits,
)
from .callbacks import (
    BestWeightsCallback,
    FrozenBatchNormCallback,
    PhaseLogCallback,
    StopOnNaNCallback,
    better,
    warmup_cosine,
)
from .checkpoint import (
    BEST_NAME,
    LAST_NAME,
    CheckpointCallback,
    FitState,
    ModelIdentity,
    read_checkpoint,
    restore_optimizer,
)
from .distributed import (
    RankSplit,
    broadcast_object,
    distributed_run,
    is_main_process,
    one_process_view,
    rank_trainer,
)
from .features import (
    DEFAULT_CACHE_VIEWS,
    FeatureCache,
    FeatureCacheUnsupported,
    cache_key,
    compute_feature_cache,
    feature_head,
)
from .head_loop import HeadLoop
from .history import FineTuneChoice, History, Phase, PhaseKind, as_history, plot_history
from .lr_finder import LRFinderResult, find_lr
from .precision import autocast_dtype, mixed_precision_callback

__all__ = ["FIT_FROZEN_METHODS", "TransferLearner", "discriminative_lrs", "transfer_learner"]

logger = get_logger(__name__)

DEFAULT_HEAD_LR = 3e-3
FIT_FROZEN_METHODS = ("gradient", "logistic", "prototype", "knn")
FEW_SHOT_HEADS = ("prototype", "knn")  # head types fitted by fit_frozen(method=...), not built for training


FROZEN_LR_FIND_IT = 100  # fastai's default; on cached features it takes seconds
# measured on flowers5, unfrozen: valley 4.8e-4 with 100 steps (47 s), 3.3e-4 with 50 (24 s), 1.6e-4 with 30
UNFROZEN_LR_FIND_IT = 50
DEFAULT_DECAY = 0.1  # measured: 0.3 (3e-4 for the top body group) wrecked EfficientNet-Lite0 on textiles


def check_lr(lr, name: str = "lr") -> None:
    """Refuse a learning rate that is not ``None``, ``"find"``, a positive number, a ``slice`` or a sequence of
    positive numbers, before any training starts (issue 19: ``lr_max="abc"`` failed after the frozen stage).

    >>> check_lr(0, "lr_max")
    Traceback (most recent call last):
    ...
    ValueError: lr_max must be a positive number (e.g. 1e-3), a slice, a sequence of rates or 'find'; got 0
    """
    if lr is None or (isinstance(lr, str) and lr == "find"):
        return
    if isinstance(lr, slice):
        values = [v for v in (lr.start, lr.stop) if v is not None]
    elif isinstance(lr, (Sequence, np.ndarray)) and not isinstance(lr, str):
        values = list(lr)
    else:
        values = [lr]
    if not values or not all(isinstance(v, Real) and 0 < v < np.inf for v in values):
        raise ValueError(f"{name} must be a positive number (e.g. 1e-3), a slice, a sequence of rates or 'find'; "
                         f"got {lr!r}")


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

    Build one with `transfer_learner`. It starts with the body frozen. While the head trains on cached
    features an inner fastai Learner runs the loop (`HeadLoop`); this learner is not changed for it, and every
    callback of the fit sees this learner, whose ``model`` is always the whole model.

    Args:
        device: where to train (``"cpu"``, ``"cuda"``, a `torch.device`); default the device the DataLoaders
            were given, else CUDA when available, else CPU. The model and the DataLoaders are moved there.

    Attributes:
        spec: the backbone's `ModelSpec` (preprocessing, family, source).
        layer_groups: the `LayerGroups` (stem ... head) that freezing and learning rates work on.
        device: the `torch.device` everything runs on: model, data, cached features, checkpoints loaded.
        fit_history: the typed `History`: one `EpochRecord` per epoch of every fit so far.
        history: the same as a DataFrame (phase, epoch, losses, metrics, train_accuracy, lr_i, seconds).
        fine_tune_choice: the `FineTuneChoice` of the last `fine_tune` that ran both stages, else ``None``;
            ``fine_tune_kept`` is its ``kept`` (``"frozen"`` or ``"fine-tuned"``).

    >>> learn = TransferLearner(dls, model, spec=spec, layer_groups=groups, device="cpu")  # doctest: +SKIP
    """

    task = "classification"  # what the model predicts; subclasses: "segmentation", "detection"

    def __init__(self, dls: DataLoaders, model: nn.Module, *, spec: ModelSpec, layer_groups: LayerGroups,
                 head_config: HeadConfig | None = None, checkpoint_dir: str | os.PathLike | None = None,
                 train_bn: bool = False, freeze_bn_stats: bool = True, channels_last: bool = True,
                 device: str | torch.device | None = None, **kwargs):
        cbs = list(kwargs.pop("cbs", None) or [])
        device = resolve_device(device, getattr(dls, "device", None))
        model = model.to(device)
        dls.to(device)
        if not train_bn:
            cbs.append(FrozenBatchNormCallback(all_layers=freeze_bn_stats))
        if channels_last:  # measured on 2 CPU cores: 1.6x faster training steps, 2x faster inference
            model = model.to(memory_format=torch.channels_last)
            cbs.append(ChannelsLast())
        super().__init__(dls, model, splitter=layer_groups.splitter, train_bn=train_bn, cbs=cbs, **kwargs)
        self.device = device
        self.spec = spec
        self.head_config = head_config if head_config is not None else _head_config_of(model, spec)
        self.feature_cache = None
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.layer_groups = layer_groups
        self.fit_history = History()
        self.lr_find_result = None
        self.stop_reason = None
        self.best_epoch = None
        self.fit_start: tuple[float, int] | None = None  # (monitor value, history row) the last fit had to beat
        self.fine_tune_choice = None
        self.last_interpretation: Interpretation | None = None  # what save_report shows by default
        self._interpretation_cache: tuple[tuple, Interpretation] | None = None
        self.calibration: Calibration | None = None  # set by `calibrate`
        self.conformal_calibration: ConformalCalibration | None = None  # set by `conformal`; exported
        self.world = None  # the `World` of a distributed run while `distributed()` is active
        self.freeze()

    def __repr__(self) -> str:
        """One line a notebook shows when a fit is the last line of a cell.

        >>> learn  # doctest: +SKIP
        TransferLearner(efficientnet_lite0, 3 classes, 5 layer groups of which 4 frozen, 6 epochs trained)
        """
        trainable = [any(p.requires_grad for p in g) for g in self.layer_groups.params(self.model)]
        n_classes = len(getattr(self.dls, "vocab", ()) or ())
        return (f"{type(self).__name__}({self.spec.name}, {n_classes} classes, {self.n_groups} layer groups of which "
                f"{trainable.count(False)} frozen, {len(self.fit_history)} epochs trained)")


    @contextmanager
    def distributed(self, *, sync_bn: bool | None = None, verbose: bool = True) -> Iterator[TransferLearner]:
        """Train data-parallel in the processes torchrun started (fastai's ``distrib_ctx``, CPU-safe).

        Run the script with ``torchrun --nproc_per_node N script.py`` (or ``easytransfer train DATA --nproc N``):
        inside the block every fit, `lr_find` and `fine_tune` runs on all ranks, each on its share of every
        epoch's images, with gradients averaged (DDP), so the weights are the same on every rank. The feature
        cache is computed by all ranks, each on its share, and gathered; `lr_find`'s suggestion and each
        epoch's figures are rank 0's, so early stopping and best weights agree; rank 0 alone prints, writes
        checkpoints, `export` s and saves reports (also after the block). One line says
        ``distributed: N processes (backend gloo|nccl)``. On CUDA each rank uses its own GPU (``LOCAL_RANK``)
        and BatchNorm is synchronised (`sync_bn`; never on the CPU). Outside torchrun the block changes nothing.

        >>> with learn.distributed():  # doctest: +SKIP
        ...     learn.fine_tune(5)
        >>> learn.export("model")  # rank 0 writes it  # doctest: +SKIP
        """
        with distributed_run(self, sync_bn=sync_bn, verbose=verbose):
            yield self

    def to_fp16(self, **kwargs) -> TransferLearner:
        """fastai's ``to_fp16`` (float16 mixed precision, AMP) on a GPU, also for the feature cache; off on the CPU.

        >>> learn.to_fp16().fine_tune(5)  # doctest: +SKIP
        """
        return self._mixed_precision("fp16", **kwargs)

    def to_bf16(self) -> TransferLearner:
        """fastai's ``to_bf16`` (bfloat16 mixed precision) on a GPU, also for the feature cache; off on the CPU."""
        return self._mixed_precision("bf16")

    def _mixed_precision(self, precision: str, **kwargs) -> TransferLearner:
        self.remove_cbs([cb for cb in self.cbs if isinstance(cb, MixedPrecision)])
        callback = mixed_precision_callback(precision, self.device, **kwargs)
        if callback is None:
            logger.info(f"Mixed precision ({precision}) is for CUDA devices; on {self.device} the learner trains in "
                        "float32.")
        else:
            self.add_cb(callback)
        return self

    @property
    def n_groups(self) -> int:
        return len(self.layer_groups)

    @property
    def fine_tune_kept(self) -> str | None:
        """``"frozen"`` or ``"fine-tuned"``: the weights the last `fine_tune` kept (``None``: it chose nothing)."""
        return self.fine_tune_choice.kept if self.fine_tune_choice is not None else None

    @property
    def history(self) -> pd.DataFrame:
        """``fit_history`` as a DataFrame, one row per epoch (``learn.history.to_csv("history.csv")``)."""
        return self.fit_history.to_frame()

    @history.setter
    def history(self, value: History | pd.DataFrame) -> None:
        self.fit_history = as_history(value)

    def freeze_to(self, n: int) -> None:
        """fastai's ``freeze_to``; frozen parameters also drop their (zero) gradients.

        fastai's optimizer steps every parameter that holds a gradient, so a zero gradient left from an
        unfrozen fit would let weight decay move a frozen weight (and invalidate the feature cache).
        """
        super().freeze_to(n)
        for p in self.model.parameters():
            if not p.requires_grad:
                p.grad = None

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

    def _monitor_names(self) -> list[str]:
        return ["train_loss", "valid_loss"] + [m.name for m in self.metrics]

    def _check_fit_args(self, epochs: int, monitor: str, patience: int | None) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {epochs}")
        names = self._monitor_names()
        if monitor not in names:
            raise ValueError(f"monitor={monitor!r} is not recorded; choose one of {names}.")
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be at least 1 (or None for no early stopping), got {patience}")

    def _fit_callbacks(self, phase: Phase, monitor: str, patience: int | None, restore_best: bool,
                       on_features: bool = False) -> list:
        cbs = [PhaseLogCallback(phase, self.fit_history, on_features=on_features), StopOnNaNCallback()]
        if restore_best:
            cbs.append(BestWeightsCallback(monitor=monitor))
        if patience is not None:
            cbs.append(EarlyStoppingCallback(monitor=monitor, patience=patience))
        return cbs

    def _fit_scheduled(self, epochs: int, lrs: np.ndarray, *, warmup_pct: float, phase: Phase, monitor: str,
                       patience: int | None, restore_best: bool, cbs=None, resume: bool = False,
                       features: FeatureCache | None = None):
        """Fit with warm-up + cosine from `lrs` (one per group); on cached `features` when given, else the images."""
        self._check_fit_args(epochs, monitor, patience)
        self._check_head_trains()
        self._check_batches()
        start = self._start_candidate(monitor, features) if restore_best and not resume else None
        self.fit_start = start
        self.best_epoch = None
        self.fine_tune_choice = None  # any later fit changes the weights fine_tune chose
        self._forget_calibration()
        if self.opt is None:
            self.create_opt()
        state = FitState(phase, epochs, tuple(float(x) for x in lrs), warmup_pct, on_features=features is not None,
                         monitor=monitor)
        best = None
        if resume:  # before the callbacks are made: it replaces the history they append to
            done, best = self._resume(state)
            if done >= epochs:
                logger.info(f"Nothing to resume: the checkpoint's {phase.name} fit already finished its {epochs} "
                            "epochs.")
                if restore_best and best is not None:  # as the finished fit ended: on its best epoch's weights
                    load_state_dict_strict(self.model, best[1], where=f"checkpoint {str(self.checkpoint_dir)!r}")
                    self.best_epoch = best[2]
                return self
            state = replace(state, done=done, best=best[0] if best is not None else None)
        else:
            self.opt.set_hyper("lr", lrs)
        fit_cbs = self._fit_callbacks(phase, monitor, patience, restore_best, on_features=features is not None)
        for cb in fit_cbs:
            if isinstance(cb, BestWeightsCallback):
                cb.initial, cb.start = best, start
        schedule = warmup_cosine(lrs, warmup_pct)
        if state.done:
            schedule = _continued(schedule, state.done / epochs)
        if self.checkpoint_dir is not None:
            fit_cbs.append(CheckpointCallback(self.checkpoint_dir, state, self.model_identity()))
        all_cbs = [ParamScheduler({"lr": schedule})] + fit_cbs + list(cbs or [])
        if features is None:
            self.fit(epochs - state.done, cbs=all_cbs)
        else:
            self._head_loop(features).fit(epochs - state.done, cbs=all_cbs)
        return self

    def _check_batches(self) -> None:
        """A fit that would run no training batch (fewer images than the batch size) is an error, not a fit."""
        train = self.dls.train
        if len(train) == 0:
            raise DataError(f"The training DataLoader has no batch: {len(train.dataset)} training images with "
                            f"bs={train.bs} (the last incomplete batch is dropped). Use a batch size of at most "
                            f"{len(train.dataset)}, or add images.")
        if len(self.dls.loaders) > 1 and len(self.dls.valid.dataset) == 0:
            raise DataError("The validation set is empty, so no epoch can be scored; add images or give a "
                            "validation split.")

    def _start_candidate(self, monitor: str, features: FeatureCache | None) -> tuple[float, int] | None:
        """``(monitor value, history row)`` of the weights a fit starts from, when they were trained here.

        A fit keeps them unless one of its epochs beats them on validation, so no fit makes a trained model
        worse (one validation pass; nothing for a first fit or a training-loss monitor).
        """
        if not len(self.fit_history) or monitor == "train_loss":
            return None
        row = self.best_epoch if self.best_epoch is not None else len(self.fit_history) - 1
        return self._validation_value(monitor, features), row

    def _resume(self, state: FitState):
        """Load the last checkpoint of an interrupted fit: weights, optimizer, history; (epochs done, best)."""
        if self.checkpoint_dir is None:
            raise EasyTransferError("resume=True needs a checkpoint folder: transfer_learner(..., checkpoint_dir=...).")
        last = read_checkpoint(Path(self.checkpoint_dir) / LAST_NAME, device=self.device)
        other_model = self.model_identity().mismatch(last.identity) if last.identity is not None else None
        if other_model is not None:
            raise EasyTransferError(f"The checkpoint in {str(self.checkpoint_dir)!r} belongs to another model "
                                    f"({other_model}); resume with the same architecture and data, or give another "
                                    "checkpoint_dir.")
        other = state.same_fit(last.state)
        if other is not None:
            raise EasyTransferError(f"The checkpoint in {str(self.checkpoint_dir)!r} is of another fit "
                                    f"({other}); call the same fit.")
        load_state_dict_strict(self.model, last.model_state, where=f"checkpoint {str(self.checkpoint_dir)!r}")
        restore_optimizer(self.opt, last.optimizer_tensors, last.optimizer_meta)
        self.fit_history = History(list(last.state.history))
        best = None
        best_path = Path(self.checkpoint_dir) / BEST_NAME
        if last.state.best is not None and best_path.is_file():
            best_ckpt = read_checkpoint(best_path, device=self.device)
            best = (last.state.best, best_ckpt.model_state, len(best_ckpt.state.history) - 1)
        logger.info(f"Resuming the {last.state.phase.name} fit after epoch {last.state.done} of {last.state.epochs}.")
        return last.state.done, best

    def _body_is_frozen(self) -> bool:
        return not any(p.requires_grad for group in self.layer_groups.params(self.model)[:-1] for p in group)

    def lr_find(self, start_lr: float = 1e-7, end_lr: float = 10.0, num_it: int | None = None, stop_div: bool = True,
                *, decay: float | None = None) -> LRFinderResult:
        """Sweep the learning rate and suggest one; the model and optimizer are restored exactly afterwards.

        With the body frozen it sweeps the head on cached features (seconds, `num_it` default 100); unfrozen it
        stops as soon as the loss diverges (4x its best) and `num_it` defaults to 50 (`UNFROZEN_LR_FIND_IT`).

        Works frozen (the head's rate) and unfrozen: then every trainable group is swept together, group k from
        the head at ``decay**k`` times the head's rate (default `DEFAULT_DECAY`; ``decay=1`` for one rate), and
        the suggestions are for the head, i.e. the `lr_max` of `fit_discriminative`.

        Returns:
            an `LRFinderResult` with ``.valley``, ``.steep``, ``.minimum``, ``.slide``, ``.suggested`` and
            ``.plot()``; also kept as ``learn.lr_find_result``.

        >>> res = learn.lr_find(); res.plot(); learn.fit_frozen(3, lr=res.valley)  # doctest: +SKIP
        """
        self._check_head_trains()
        if num_it is None:
            num_it = FROZEN_LR_FIND_IT if self._body_is_frozen() else UNFROZEN_LR_FIND_IT
        cache = self._feature_cache_or_none(cache_views=1, caller="lr_find") if self._body_is_frozen() else None
        if cache is not None:
            result = find_lr(self, start_lr, end_lr, num_it, stop_div, loop=self._head_loop(cache))
        elif self._body_is_frozen():
            result = find_lr(self, start_lr, end_lr, num_it, stop_div)
        else:
            ratios = discriminative_lrs(1.0, self.n_groups, DEFAULT_DECAY if decay is None else decay)
            result = find_lr(self, start_lr * ratios, end_lr * ratios, num_it, stop_div)
        if self.world is not None:  # every rank swept in step (DDP); rank 0's suggestion is everyone's
            result = broadcast_object(result)
        self.lr_find_result = result
        return result

    def _resolve_lr(self, lr, default: float, *, decay: float | None = None) -> float:
        check_lr(lr)
        if lr is None:
            return default
        if isinstance(lr, str):
            if lr != "find":
                raise ValueError(f"lr must be a number or 'find', got {lr!r}")
            result = self.lr_find(decay=decay)
            logger.info(f"lr_find suggests {result.suggested:.2e} ({result}).")
            return result.suggested
        return lr

    def fit_frozen(self, epochs: int, lr: float | str | None = None, *, warmup_pct: float = 0.1,
                   monitor: str = "valid_loss", patience: int | None = 5, restore_best: bool = True,
                   cache: bool = True, cache_views: int = DEFAULT_CACHE_VIEWS, method: str = "gradient",
                   k: int | None = None, cbs=None, resume: bool = False):
        """Train only the new head with the body frozen (feature extraction).

        The frozen body's BatchNorm layers run with their pre-trained statistics (inference mode) unless the
        learner was built with ``train_bn=True``. The learning rate warms up linearly over the first
        `warmup_pct` of steps, then follows a cosine to near zero.

        With ``cache=True`` (default) the body's pooled features are computed once (`cache_views` views per
        training image: the plain image, plus augmented ones when more than 1) and the head trains on them,
        with the same schedule, callbacks, metrics, history and early stopping; the features are reused by the
        next frozen fit and by `lr_find` while the weights, preprocessing and files stay the same. Not possible
        (and skipped) with ``train_bn=True``, MixUp / CutMix, or a model with more than one head module.

        Args:
            epochs: number of epochs (fewer when early stopping ends the fit; one fit for the other methods).
            lr: the head's peak learning rate; default `DEFAULT_HEAD_LR` (3e-3); ``"find"`` runs `lr_find` first.
            monitor: ``"valid_loss"`` (default), ``"train_loss"`` or a metric's name.
            patience: stop after this many epochs without improvement of `monitor`; ``None``: never.
            restore_best: at the end, load the weights of the epoch with the best `monitor`.
            cache: train the head on cached features when possible.
            cache_views: views per training image in the cache (1 = the plain image only).
            method: how the head is made (the other three fit it in one go on the cached features of the plain
                training images, choosing their setting by validation log-loss, and add one history row):

                - ``"gradient"`` (default): trained by gradient descent;
                - ``"logistic"``: a linear probe, an L2-regularised logistic regression written into the linear
                  head (regularisation ``C`` chosen; a prototype or k-NN head is first replaced by a Linear);
                - ``"prototype"``: a `PrototypeHead` replaces the head: softmax of the scaled cosine similarity
                  to each class's mean normalised feature (the nearest class mean wins; ``scale`` chosen);
                - ``"knn"``: a `KNNHead` replaces the head: the smoothed vote of the `k` nearest training images
                  by cosine similarity (``k`` chosen from `KNN_KS`); it stores the training features.

                Prototype and k-NN heads are for single-label data; they are exported like any head.
            k: ``method="knn"`` only: use this many neighbours instead of choosing.
            cbs: extra fastai callbacks for this fit.
            resume: continue an interrupted fit from the last checkpoint in ``checkpoint_dir`` (same schedule).

        >>> learn.fit_frozen(3)  # doctest: +SKIP
        >>> learn.fit_frozen(1, method="prototype"); learn.head_config.type  # doctest: +SKIP
        'prototype'
        """
        self.freeze()
        if method not in FIT_FROZEN_METHODS:
            raise ValueError(f"method must be one of {FIT_FROZEN_METHODS}, got {method!r}")
        if k is not None and method != "knn":
            raise ValueError(f"k= is the number of neighbours of method='knn'; method={method!r} takes no k.")
        if cache_views < 1:
            raise ValueError(f"cache_views must be at least 1, got {cache_views}")
        features = self._feature_cache_or_none(cache_views) if cache or method != "gradient" else None
        if method != "gradient":
            if features is None:
                raise ValueError(f"method={method!r} needs cached features: {self._cache_obstacle()}")
            self.fine_tune_choice = None
            self._forget_calibration()
            if method == "logistic":
                if self.head_config.type in FEW_SHOT_HEADS:  # the probe is written into a Linear layer
                    self._install_head(nn.Linear(features.train.shape[-1], len(self.dls.vocab)))
                return fit_logistic_probe(self, features)
            start = time.perf_counter()
            if method == "prototype":
                head, fit = fit_prototype_head(features, len(self.dls.vocab))
            else:
                head, fit = fit_knn_head(features, len(self.dls.vocab), k=k)
            self._install_head(head)
            return record_probe(self, features, fit, start)
        lr = float(self._resolve_lr(lr, DEFAULT_HEAD_LR))
        lrs = np.full(self.n_groups, lr)
        kwargs = dict(warmup_pct=warmup_pct, phase=Phase(PhaseKind.FROZEN), monitor=monitor, patience=patience,
                      restore_best=restore_best, cbs=cbs, resume=resume)
        return self._fit_scheduled(epochs, lrs, features=features, **kwargs)

    def _install_head(self, head: nn.Module) -> None:
        """Put a fitted `head` where the cached features enter the model; groups, optimizer, config follow.

        A Linear-shaped head (a `PrototypeHead`, a Linear) in place of a Linear of its shape takes over that
        Linear's parameters (values copied), so the optimizer and layer groups are untouched; otherwise the head
        group is re-read from ``spec.classifier`` and the optimizer is rebuilt with the body still frozen.
        """
        module, _ = feature_head(self)
        path = next(name for name, m in self.model.named_modules() if m is module)
        head = head.to(self.device)
        keeps = (isinstance(head, nn.Linear) and isinstance(module, nn.Linear) and module.bias is not None
                 and module.weight.shape == head.weight.shape)
        if keeps:
            with torch.no_grad():
                module.weight.copy_(head.weight)
                module.bias.copy_(head.bias)
            head.weight, head.bias = module.weight, module.bias
        self.model.set_submodule(path, head)
        if not keeps:
            paths = self.spec.classifier_paths
            names = tuple(n for n, _ in self.model.named_parameters() if any(n.startswith(p + ".") for p in paths))
            self.layer_groups = LayerGroups(self.layer_groups.names[:-1] + (names,))
            self.splitter = self.layer_groups.splitter
            self.create_opt()
            self.freeze()
        self.head_config = replace(HeadConfig.from_module(head), pool=self.head_config.pool)

    def _check_head_trains(self) -> None:
        """A clear error instead of autograd's when the head has nothing to train (a k-NN head)."""
        if self.head_config.type == "knn":
            raise EasyTransferError(
                f"The head is a {self.head_config.type!r} head: it stores training features and has no weights "
                "to train by gradient descent. fit_frozen(1, method='logistic') or method='prototype' gives it a "
                "head with weights again (then fit_frozen(epochs) trains it), or build a new learner.")

    # ------------------------------------------------------------------------------------ cached features

    def _cache_obstacle(self) -> str | None:
        """Why features cannot be cached for this learner (``None`` when they can)."""
        if getattr(self, "train_bn", False):
            return "BatchNorm layers train (train_bn=True)"
        if not isinstance(self.dls, ImageData):
            return "the data is not an ImageData"
        if any(isinstance(cb, MixHandler) for cb in self.cbs):
            return "MixUp / CutMix mixes the images of each batch (aug='strong' adds CutMix; mix='none' turns it off)"
        if feature_head(self) is None:
            return f"the head of {self.spec.name} is not a single module"
        return None

    def _feature_cache_or_none(self, cache_views: int, caller: str = "fit_frozen"):
        """The cached features for the current weights, data and views (computed when needed), or ``None``.

        Says in one line when the cheap path is lost (and why), and when `lr_find` does the one-time feature pass.
        """
        obstacle = self._cache_obstacle()
        if obstacle is not None:
            logger.info(f"{caller}: the head trains on the images, not on cached features, because {obstacle}: "
                        "every frozen epoch is a full pass through the body.")
            return None
        module, _ = feature_head(self)
        key = cache_key(self, module, cache_views)
        if self.feature_cache is None or self.feature_cache.key != key:
            if caller == "lr_find":
                logger.info(f"lr_find: computing the frozen body's features of the {len(self.dls.train_ds)} "
                            f"training and {len(self.dls.valid_ds)} validation images once (one pass); the sweep and "
                            "later frozen fits reuse them.")
            self.feature_cache = None  # free the old one first
            try:
                ranks = RankSplit(self.world) if self.world is not None else None
                self.feature_cache = compute_feature_cache(self, module, cache_views, key, ranks=ranks,
                                                           autocast_dtype=autocast_dtype(self.cbs, self.device))
            except FeatureCacheUnsupported as e:
                logger.info(f"Training the head on images, not cached features: {e}.")
                return None
        return self.feature_cache

    def _head_loop(self, cache: FeatureCache) -> HeadLoop:
        """The loop that trains the head on `cache` with this learner's optimizer and callbacks."""
        _, trainable = feature_head(self)
        inner_cbs = [rank_trainer(self.device)] if self.world is not None else []  # DDP over the head alone
        return HeadLoop(self, cache.dataloaders(self.dls, self.device), trainable, inner_cbs=inner_cbs)

    def fit_discriminative(self, epochs: int, lr_max=1e-3, *, decay: float = DEFAULT_DECAY,
                           layer_decay: float | None = None, warmup_pct: float = 0.1, monitor: str = "valid_loss",
                           patience: int | None = 5, restore_best: bool = True, cbs=None,
                           phase: str | Phase = "discriminative", resume: bool = False):
        """Train the unfrozen groups, each with its own learning rate decaying from head to stem.

        Group k counted from the head gets ``lr_max * decay**k``; a list (stem first) or ``slice(lo, hi)``
        is accepted too, and ``lr_max="find"`` runs `lr_find` (with the same decay) first. Call `unfreeze`
        first: groups still frozen stay frozen. Early stopping and best-weight restore as in `fit_frozen`.

        The default ``decay=0.1`` gives 1e-3, 1e-4, 1e-5 ... from the head down, as fastai's
        ``slice(1e-5, 1e-3)``: with 0.3 the top body group's 3e-4 made the valid loss jump on the textile set.
        `phase` labels the fit's rows in the history (a `Phase`, or a name).

        Layer decay (``layer_decay=0.75``, the BEiT / MAE / timm recipe for fine-tuning ViTs) gives every block
        its own rate instead of every layer group: the head gets `lr_max`, the block under it
        ``lr_max * layer_decay``, and so on down to the stem (patch embedding, position embedding, class and
        register tokens) at ``lr_max * layer_decay**(n_blocks + 1)``. The blocks are timm's
        ``group_matcher(coarse=False)`` (`block_layer_groups`: each transformer block, or each CNN block of a
        timm ResNet, EfficientNet, ConvNeXt ...); `decay` is not used then, and `lr_max` is one rate or
        ``"find"``. What is frozen is still decided by the layer groups (`unfreeze`): frozen parameters stay
        frozen. During this fit only, the optimizer has one parameter group per block and ``learn.layer_groups``
        are the blocks; both go back to the usual layer groups afterwards (optimizer moments carried over). The
        history's ``lr_i`` columns hold one rate per block for this fit (stem first), and its phase is named
        ``"layer decay 0.75"`` (``Phase.layer_decay``). A model without per-block groups (torchvision's) raises
        `NoBlockGroupsError`, which names ``decay=``.

        >>> learn.unfreeze(); learn.fit_discriminative(5, lr_max=1e-3, decay=0.1)  # doctest: +SKIP
        >>> learn.fit_discriminative(5, lr_max=1e-4, layer_decay=0.75)  # a ViT, per block  # doctest: +SKIP
        """
        common = dict(warmup_pct=warmup_pct, monitor=monitor, patience=patience, restore_best=restore_best,
                      cbs=cbs, resume=resume)
        if layer_decay is not None:
            return self._fit_layer_decay(epochs, lr_max, layer_decay, phase=_discriminative_phase(phase), **common)
        lr_max = self._resolve_lr(lr_max, 1e-3, decay=decay)
        lrs = discriminative_lrs(lr_max, self.n_groups, decay)
        return self._fit_scheduled(epochs, lrs, phase=_discriminative_phase(phase), **common)

    def _fit_layer_decay(self, epochs: int, lr_max, layer_decay: float, *, phase: Phase, **kwargs):
        """`fit_discriminative` with one rate per block: ``lr_max * layer_decay**k``, k counted from the head."""
        if not isinstance(layer_decay, Real) or not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], e.g. 0.75; got {layer_decay!r}")
        one_rate = lr_max is None or isinstance(lr_max, str) or (isinstance(lr_max, Real) and lr_max > 0)
        if not one_rate:  # a string other than "find" gets _resolve_lr's error
            raise ValueError(f"With layer_decay, lr_max is the head's rate (a positive number) or 'find', got "
                             f"{lr_max!r}; the other rates follow from layer_decay.")
        blocks = block_layer_groups(self.model, head=self.spec.classifier)
        phase = replace(phase, layer_decay=layer_decay)
        with self._optimizer_over(blocks):
            lr_max = self._resolve_lr(lr_max, 1e-3, decay=layer_decay)
            lrs = discriminative_lrs(float(lr_max), len(blocks), layer_decay)
            return self._fit_scheduled(epochs, lrs, phase=phase, **kwargs)

    @contextmanager
    def _optimizer_over(self, groups: LayerGroups) -> Iterator[None]:
        """Within the block: `groups` are the layer groups and the optimizer has one parameter group per group.

        ``requires_grad`` (what is frozen) is not touched. The optimizer's per-parameter state (Adam's moments)
        is carried into the new optimizer and back; afterwards the learner's own layer groups and optimizer
        (or a new one over them) are back, also when the fit is interrupted.
        """
        if isinstance(self.opt_func, OptimWrapper):
            raise ValueError("Per-block rates need fastai's own optimizer (opt_func such as Adam), not an "
                             "OptimWrapper; use decay= instead.")
        own_groups, own_opt = self.layer_groups, self.opt
        self.layer_groups, self.splitter = groups, groups.splitter
        try:
            self.create_opt()
            if own_opt is not None:
                _carry_optimizer_state(own_opt, self.opt)
            yield
        finally:
            block_opt = self.opt
            self.layer_groups, self.splitter = own_groups, own_groups.splitter
            if own_opt is None:
                self.create_opt()
            else:
                self.opt = own_opt
            if block_opt is not None and block_opt is not own_opt:
                _carry_optimizer_state(block_opt, self.opt)
                _carry_top_rates(block_opt, self.opt)

    def fine_tune(self, epochs: int, frozen_epochs: int = 3, *, lr: float | str | None = None, lr_max=1e-3,
                  decay: float = DEFAULT_DECAY, monitor: str = "valid_loss", patience: int | None = 5,
                  warmup_pct: float = 0.1, restore_best: bool = True, cache: bool = True,
                  cache_views: int = DEFAULT_CACHE_VIEWS, cbs=None) -> TransferLearner:
        """The recipe in one call: train the head, unfreeze, fine-tune, and keep the stage that validates better.

        Runs ``fit_frozen(frozen_epochs, lr=lr)``, ``unfreeze()`` and ``fit_discriminative(epochs, lr_max=lr_max,
        decay=decay)``, each ending with its best epoch's weights. Then both stages' weights are measured on the
        validation set by `monitor` (lower is better for a loss, higher for a metric, as in every fit) and the
        frozen stage's weights (a copy of the whole model state kept in memory, buffers included) come back when
        fine-tuning made `monitor` worse: on small or unusual data fine-tuning can lose what the head learnt. One
        line says which weights were kept and both values; ``learn.fine_tune_choice`` keeps them, and
        `diagnose` says so when the frozen-stage weights were kept. The body stays unfrozen either way. Measuring
        costs one pass over the validation images before and after fine-tuning (fastai's ``validate``).

        Args:
            epochs: epochs of fine-tuning; ``0`` trains the head only.
            frozen_epochs: epochs of the frozen stage; ``0`` skips it (then there is nothing to choose from).
            lr: the head's rate in the frozen stage (as in `fit_frozen`; ``"find"`` runs `lr_find`).
            lr_max, decay: the discriminative rates of the fine-tuning stage (as in `fit_discriminative`).
            monitor: ``"valid_loss"`` or a metric's name; early stopping, best weights and the choice use it.
            patience, warmup_pct, restore_best, cbs: as in `fit_frozen` and `fit_discriminative`, for both stages.
            cache, cache_views: as in `fit_frozen`, for the frozen stage.

        Returns:
            the learner. A fit stopped by a non-finite loss (``learn.stop_reason``) in the frozen stage ends the
            recipe there, as in `fit_gradual`.

        >>> learn.fine_tune(5, frozen_epochs=3)  # doctest: +SKIP
        fine_tune kept the fine-tuned weights (valid_loss 0.4120 < 0.5300 after the frozen stage)
        """
        if not isinstance(epochs, Integral) or not isinstance(frozen_epochs, Integral):
            raise TypeError(f"fine_tune(epochs, frozen_epochs) takes whole numbers of epochs, got {epochs!r}, "
                            f"{frozen_epochs!r}; the rates are lr= (head) and lr_max= (fastai's fine_tune takes "
                            "base_lr second)")
        if epochs < 0 or frozen_epochs < 0 or epochs + frozen_epochs == 0:
            raise ValueError(f"fine_tune needs epochs >= 0 and frozen_epochs >= 0, not both 0; got epochs={epochs}, "
                             f"frozen_epochs={frozen_epochs}")
        valid_names = self._monitor_names()[1:]
        if monitor not in valid_names:
            raise ValueError(f"fine_tune chooses by a validation figure; monitor={monitor!r} is not one of "
                             f"{valid_names}.")
        check_lr(lr, "lr")  # both rates before the first stage: a bad lr_max must not wait for the frozen stage
        check_lr(lr_max, "lr_max")
        common = dict(warmup_pct=warmup_pct, monitor=monitor, patience=patience, restore_best=restore_best, cbs=cbs)
        self.fine_tune_choice = None
        if frozen_epochs:
            self.fit_frozen(frozen_epochs, lr=lr, cache=cache, cache_views=cache_views, **common)
            if epochs == 0 or self.stop_reason:
                return self
            frozen_state = {name: t.detach().clone() for name, t in self.model.state_dict().items()}
            frozen_best_epoch = self.best_epoch if self.best_epoch is not None else len(self.fit_history) - 1
            frozen_value = None if restore_best else self._validation_value(monitor)
        self.unfreeze()
        self.fit_discriminative(epochs, lr_max=lr_max, decay=decay, **common)
        if not frozen_epochs:
            return self
        if frozen_value is None:  # measured by the fit, which kept those weights unless an epoch beat them
            frozen_value = self.fit_start[0]
        tuned_value = self._validation_value(monitor)
        kept = "frozen" if better(monitor, frozen_value, tuned_value) else "fine-tuned"
        if kept == "frozen":
            load_state_dict_strict(self.model, frozen_state, where="the frozen stage of fine_tune")
            self.best_epoch = frozen_best_epoch
        self.fine_tune_choice = FineTuneChoice(kept, monitor, frozen_value, tuned_value)
        logger.info(str(self.fine_tune_choice))
        return self

    def _validation_value(self, monitor: str, features: FeatureCache | None = None) -> float:
        """`monitor` of the current weights on the validation set: one pass over its images, or over their
        cached `features` (the body does not run again) when given."""
        values = self.validate() if features is None else self._head_loop(features).validate()
        return float(dict(zip(self._monitor_names()[1:], values))[monitor])

    def fit_gradual(self, epochs_per_stage: int = 5, lr_max: float = 1e-3, *, head_lr: float | None = None,
                    decay: float = DEFAULT_DECAY, warmup_pct: float = 0.1, max_unfrozen: int | None = None,
                    monitor: str = "valid_loss", patience: int | None = 5, restore_best: bool = True, cbs=None):
        """Gradual unfreezing (ULMFiT): train the head, then open one more body group from the top per stage.

        Stage 0 trains the head alone (`fit_frozen` with `head_lr`); stage k has the last k body groups
        unfrozen and trains with discriminative rates (`lr_max`, `decay`); every stage warms up again and
        ends with the best weights of that stage. History phases are ``"stage 0"``, ``"stage 1"`` ...

        Args:
            epochs_per_stage: epochs in each stage.
            max_unfrozen: open at most this many body groups (default: all of them).

        >>> learn.fit_gradual(epochs_per_stage=2, max_unfrozen=2)  # doctest: +SKIP
        """
        n_body = self.layer_groups.n_body
        last = n_body if max_unfrozen is None else max_unfrozen
        if not 0 <= last <= n_body:
            raise ValueError(f"max_unfrozen must be between 0 and {n_body} (the body groups), got {max_unfrozen}")
        check_lr(head_lr, "head_lr")
        check_lr(lr_max, "lr_max")
        common = dict(warmup_pct=warmup_pct, monitor=monitor, patience=patience, restore_best=restore_best, cbs=cbs)
        self.freeze()
        head = float(self._resolve_lr(head_lr, DEFAULT_HEAD_LR))
        self._fit_scheduled(epochs_per_stage, np.full(self.n_groups, head), phase=Phase(PhaseKind.GRADUAL, 0),
                            features=self._feature_cache_or_none(DEFAULT_CACHE_VIEWS), **common)
        for k in range(1, last + 1):
            if getattr(self, "stop_reason", None):
                break
            self.unfreeze(k)
            self.fit_discriminative(epochs_per_stage, lr_max, decay=decay, phase=Phase(PhaseKind.GRADUAL, k),
                                    **common)
        return self

    def plot_history(self, axes=None, title: str | None = None) -> Figure:
        """Train and valid loss and the metrics of every epoch so far, phases shaded; returns the Figure.

        >>> learn.plot_history().savefig("history.png")  # doctest: +SKIP
        """
        return plot_history(self.fit_history, axes=axes, title=title)

    def diagnose(self, interp: Interpretation | None = None) -> Diagnosis:
        """Under-fitting, over-fitting or a good fit, in plain words, from ``learn.fit_history``; with next steps.

        A trained single-label classifier also gets its calibration error on the validation set (from `interp`,
        an interpretation of it, or one validation pass), and the advice to calibrate when it is over-confident.

        >>> print(learn.diagnose())  # doctest: +SKIP
        """
        trainable = [any(p.requires_grad for p in g) for g in self.layer_groups.params(self.model)[:-1]]
        return diagnose(self.fit_history, n_valid=len(self.dls.valid_ds), frozen_body_groups=trainable.count(False),
                        restored_epoch=self.best_epoch, fine_tune=self.fine_tune_choice, task=self.task,
                        confidence=self._confidence_check(interp))

    def _confidence_check(self, interp: Interpretation | None) -> ConfidenceCheck | None:
        if self.task != "classification" or getattr(self.dls, "is_multilabel", False) or not len(self.fit_history):
            return None
        interp = interp if interp is not None else self.interpret()
        if interp.multilabel or not len(interp.targs):
            return None
        return ConfidenceCheck(interp.calibration_error(), float(interp.probs.max(axis=1).mean()), interp.accuracy,
                               calibrated=self.calibration is not None)

    def interpret(self, dl=None, tta: bool = False) -> Interpretation:
        """Predictions on `dl`, computed once; every table and plot of the `Interpretation` reads them.

        Args:
            dl: the validation set (default), a DataLoader, a folder of class sub-folders or a list of files.
            tta: average the plain pass with augmented ones (`tta`).

        Predictions on the same images with the same weights are made once: `evaluate` then `interpret` on a
        folder (or the validation or test set) costs one pass. The result is kept as ``learn.last_interpretation``,
        which `save_report` shows by default.

        >>> interp = learn.interpret(); interp.per_class(); interp.plot_top_losses(9)  # doctest: +SKIP
        """
        return self._interpretation(dl, tta=tta, test_set=False)

    def _interpretation(self, dl, *, tta: bool, test_set: bool) -> Interpretation:
        """`interpret` on `dl` (on the data's test split when `test_set`), reused while images and weights match."""
        images = _images_key(dl, test_set)
        key = None if images is None else images + (tta, id(self.dls), _weights_fingerprint(self.model),
                                                     id(self.calibration))
        cached = self._interpretation_cache
        if key is not None and cached is not None and cached[0] == key:
            interp = cached[1]
        else:
            loader = self.dls.labelled_dl() if test_set else dl
            interp = Interpretation.from_learner(self, loader, tta=tta)
            interp.data_name = None if images is None else " ".join(str(part) for part in images[:2])
            self._interpretation_cache = (key, interp) if key is not None else None
        self.last_interpretation = interp
        return interp

    def get_preds(self, ds_idx=1, dl=None, with_input=False, with_decoded=False, with_loss=False, act=None,
                  **kwargs):
        """fastai's ``get_preds``; after `calibrate` the probabilities are the calibrated ones (``act`` not given).

        `predict`, `tta`, `interpret` and `evaluate` all read their probabilities from here.
        """
        if act is None and self.calibration is not None:
            act = calibration_activation(self.calibration)
        return super().get_preds(ds_idx, dl, with_input, with_decoded, with_loss, act, **kwargs)

    def calibrate(self, dl=None, method: str = "temperature") -> TransferLearner:
        """Fit a probability calibration on labelled images; every later prediction uses it, and `export` keeps it.

        Args:
            dl: the calibration set: a folder of class sub-folders, a table with ``path`` and ``label``, a list of
                files or a DataLoader; default the validation set (with a warning: images the model was not chosen
                on give an honest fit).
            method: ``"temperature"`` (one number divides the logits: the predicted class never changes) or
                ``"isotonic"`` (an increasing step function per class; needs a few hundred images).

        Training again drops the calibration (it was fitted to the old weights); calibrating drops conformal
        sets made before (call `conformal` after `calibrate`).

        >>> learn.calibrate("data/calib"); learn.interpret("data/test").calibration_error()  # doctest: +SKIP
        """
        self._check_single_label("calibrate")
        if dl is None:
            warnings.warn("Calibrating on the validation set, which also chose the weights; a separate set of "
                          "labelled images gives an honest fit: learn.calibrate('path/to/calib').", stacklevel=2)
        logits, targets = raw_logits(self, as_dataloader(self, dl))
        self.calibration = fit_calibration(logits, targets, method)
        self.conformal_calibration = None  # its thresholds were for the probabilities before
        return self

    def conformal(self, calib=None, alpha: float = 0.1, *, mondrian: bool = False, score: str = "lac",
                  allow_empty: bool = False) -> ConformalPredictor:
        """Conformal prediction sets: labels that hold the true one with probability at least ``1 - alpha``.

        The promise holds on images exchangeable with `calib` (same source and conditions), on average over
        the draw of the calibration set; docs/when_the_model_is_unsure.md says what it does not promise.

        Args:
            calib: labelled calibration images not used for training (a folder, a table, a list of files or a
                DataLoader), or this learner's `Interpretation` of them (no new inference); default the
                validation set (with a warning).
            alpha: the error rate: 0.1 asks for sets that miss the true label at most 10 % of the time.
            mondrian: one threshold per class (coverage within each class) instead of one overall.
            score: ``"lac"`` (smallest sets) or ``"aps"`` (sets that adapt to how hard the image is).
            allow_empty: keep empty sets; by default an empty set becomes the top label.

        Returns:
            a `ConformalPredictor` (``predict``, ``predict_folder``, ``evaluate``); its scores are also kept as
            ``learn.conformal_calibration`` and travel in the exported bundle (`Predictor.predict_set`).

        >>> cp = learn.conformal("data/calib", alpha=0.1); cp.predict("photo.jpg").labels  # doctest: +SKIP
        ['stain']
        """
        self._check_single_label("conformal")
        if calib is None:
            warnings.warn("Conformal thresholds from the validation set, which also chose the weights; coverage is "
                          "only promised on a separate calibration set: learn.conformal('path/to/calib').",
                          stacklevel=2)
        interp = calib if isinstance(calib, Interpretation) else self.interpret(calib)
        self.conformal_calibration = ConformalCalibration.fit(interp.probs, interp.targs, score=score, alpha=alpha,
                                                              mondrian=mondrian, allow_empty=allow_empty)
        return ConformalPredictor(self.conformal_calibration, self.dls.vocab,
                                  probabilities=lambda images: image_probabilities(self, images),
                                  interpret=self.interpret,
                                  folder_probabilities=lambda path: folder_probabilities(self, path))

    def _check_single_label(self, what: str) -> None:
        if self.task != "classification" or getattr(self.dls, "is_multilabel", False):
            kind = "multi-label classification" if self.task == "classification" else self.task
            raise EasyTransferError(f"learn.{what}() is for single-label classification; this learner does {kind}. "
                                    "For multi-label data, threshold each label's probability instead.")

    def _forget_calibration(self) -> None:
        """Training changes the weights: a calibration or conformal thresholds fitted before no longer hold."""
        if self.calibration is not None or self.conformal_calibration is not None:
            warnings.warn("Training changes the model: its calibration and conformal thresholds are dropped; call "
                          "learn.calibrate() / learn.conformal() again after training.", stacklevel=3)
        self.calibration = None
        self.conformal_calibration = None

    def tta(self, dl=None, n: int = 4, beta: float = 0.25, **kwargs):
        """Test-time augmentation: `n` passes with the training augmentations, averaged with the plain pass.

        `dl` is a DataLoader, a folder, a list of files or a dataset index (fastai's ``ds_idx``; default the
        validation set). Returns ``(probs, targets)`` as fastai's `Learner.tta` does.

        >>> probs, targs = learn.tta(learn.dls.valid)  # doctest: +SKIP
        """
        loader = as_dataloader(self, dl if dl is not None else kwargs.pop("ds_idx", 1))
        loader = loader.new(shuffle=False, drop_last=False)
        return super().tta(dl=loader, n=n, beta=beta, **kwargs)

    def predict(self, item, rm_type_tfms=None, with_input: bool = False):
        """fastai's ``predict`` for one image given as a path, a PIL image or an HxWx3 array.

        Returns ``(label, class index, probabilities)``; see `load_model` for the same outside a notebook.

        >>> label, idx, probs = learn.predict("photo.jpg")  # doctest: +SKIP
        """
        if isinstance(item, (str, os.PathLike)):
            item = PILImage.create(open_rgb(item))
        elif isinstance(item, (np.ndarray, torch.Tensor)):
            item = PILImage.create(rgb_from_array(item))
        elif isinstance(item, Image.Image) and not isinstance(item, PILImage):
            item = PILImage.create(item.convert("RGB"))
        return super().predict(item, rm_type_tfms=rm_type_tfms, with_input=with_input)

    def evaluate(self, test=None, tta: bool = False) -> dict:
        """Loss, accuracy and macro / weighted F1 on held-out images, from one inference pass.

        Args:
            test: ``None`` (the data's test split: its ``test/`` folder or ``test_pct``), a folder of class
                sub-folders, a list of files (labelled by their folder), a table with ``path`` and ``label``, or a
                DataLoader.
            tta: use test-time augmentation.

        >>> learn.evaluate("data/test")  # doctest: +SKIP
        {'n_images': 90, 'loss': 0.41, 'accuracy': 0.87, 'macro_f1': 0.86, 'weighted_f1': 0.86}

        With ``test=None`` the data must have a test split: a ``test/`` folder, or ``test_pct=`` when it was
        built. A following ``interpret`` of the same images reuses these predictions.
        """
        return self._interpretation(test, tta=tta, test_set=test is None).scores()

    def save_report(self, path, dl=None, interp=None, top_k: int = 9) -> Path:
        """One self-contained HTML file: data, model, layer groups, history, LR finder, mistakes, diagnosis.

        The same for segmentation (mIoU, per-class IoU and Dice, pixel confusion matrix, top-loss overlays) and
        detection (mAP@0.5, mAP, per-class AP, top losses with boxes); `interp`: an interpretation to reuse;
        `top_k`: how many top losses are drawn. By default the report shows the last `interpret` (or `evaluate`)
        without predicting again, e.g. the test set after ``learn.evaluate()``; the validation set when there was
        none.

        >>> learn.evaluate(); learn.save_report("report.html")  # doctest: +SKIP
        """
        from ..evaluate.html_report import save_report

        if interp is None and dl is None and self.task == "classification":
            interp = self.last_interpretation
        if not is_main_process():  # a distributed run: rank 0 writes it
            return Path(path)
        with one_process_view():
            return save_report(self, path, dl=dl, top_k=top_k, interp=interp)

    def model_identity(self) -> ModelIdentity:
        """The architecture and classes this learner's checkpoints record (what `export` writes)."""
        config = self.bundle_config()
        return ModelIdentity(config.arch, config.classes)

    def bundle_config(self) -> BundleConfig:
        """What `export` writes beside the weights: architecture, classes, head and preprocessing."""
        spec, recipe = self.spec, getattr(self.dls, "recipe", None)
        source = recipe if recipe is not None else spec
        size = recipe.size if recipe is not None else spec.size
        return BundleConfig(
            arch=spec.name, source=spec.source, source_arch=spec.arch, classes=tuple(str(c) for c in self.dls.vocab),
            multilabel=bool(getattr(self.dls, "is_multilabel", False)), head=self.head_config,
            preprocessing=Preprocessing(int(size), source.interpolation, tuple(source.mean), tuple(source.std)),
            arch_config=spec.arch_config, calibration=self.calibration, conformal=self.conformal_calibration,
        )

    def export(self, path) -> Path:
        """Write a model bundle (safetensors weights + JSON) to folder `path`; no pickle is involved.

        >>> learn.export("runs/textile-model")  # doctest: +SKIP
        """
        if not is_main_process():  # a distributed run: rank 0 writes it
            return Path(path)
        return write_bundle(path, self.model, self.bundle_config())


_MIXES = {"mixup": MixUp, "cutmix": CutMix}


def _images_key(dl, test_set: bool) -> tuple | None:
    """What names the images `dl` gives, for reusing an interpretation; ``None`` when it cannot be told."""
    if test_set:
        return ("test split",)
    if dl is None:
        return ("validation set",)
    if isinstance(dl, (str, os.PathLike)):
        folder = Path(dl).expanduser().resolve()
        return ("folder", str(folder), tuple(candidate_files(folder)) if folder.is_dir() else ())
    if isinstance(dl, (list, tuple)) and dl and all(isinstance(p, (str, os.PathLike)) for p in dl):
        return ("files", tuple(str(Path(p).expanduser().resolve()) for p in dl))
    return None  # a DataLoader or a table: predicted every time


def _weights_fingerprint(model: nn.Module) -> tuple[float, ...]:
    """The sum of each tensor of the model's state: changes with any training step or loaded weights."""
    with torch.no_grad():
        return tuple(float(t.float().sum()) for t in model.state_dict().values() if t.is_floating_point())


def _continued(schedule, offset: float):
    """`schedule` from `offset` (the share of the fit already done) to its end, over the remaining epochs."""
    def rest(pct):
        return schedule(offset + pct * (1 - offset))

    return rest


def _carry_optimizer_state(source, target) -> None:
    """Copy fastai optimizer state per parameter (moments, step counts) from `source` to `target`, same params."""
    for p, *_ in source.all_params():
        state = source.state.get(p)  # a plain dict after load_state_dict: .get, not the defaultdict's []
        if state:
            target.state[p] = {**target.state.get(p, {}), **state}


def _carry_top_rates(source, target) -> None:
    """Give each of `target`'s parameter groups the highest rate `source` last had for one of its parameters.

    After a per-block fit the layer groups' rates (`summary_groups`) are then those the fit ended with.
    """
    rate_of = {id(p): h["lr"] for group, h in zip(source.param_lists, source.hypers) for p in group}
    rates = [max((rate_of[id(p)] for p in group if id(p) in rate_of), default=h["lr"])
             for group, h in zip(target.param_lists, target.hypers)]
    target.set_hyper("lr", rates)


def _head_config_of(model: nn.Module, spec: ModelSpec) -> HeadConfig:
    """The `HeadConfig` that rebuilds `model`'s head (timm keeps a linear head's dropout as ``drop_rate``)."""
    paths = spec.classifier_paths
    if len(paths) != 1:
        return HeadConfig()
    config = HeadConfig.from_module(model.get_submodule(paths[0]))
    drop_rate = head_dropout(model, spec)
    if config.type == "linear" and config.dropout is None and drop_rate > 0:
        return HeadConfig("linear", dropout=drop_rate)
    return config


def _discriminative_phase(phase: str | Phase) -> Phase:
    """`fit_discriminative`'s phase: a `Phase`, or a name ("stage 2" is a gradual stage; others label the fit)."""
    if isinstance(phase, Phase):
        return phase
    parsed = Phase.from_name(phase)
    return parsed if parsed.trains_body else Phase(PhaseKind.DISCRIMINATIVE, label=phase)


def _loss_func(dls, label_smoothing: float):
    """The loss for the data's balance setting and label smoothing; ``None``: fastai's default for the data."""
    multilabel = isinstance(dls, ImageData) and dls.is_multilabel
    if label_smoothing:
        if multilabel:
            raise ValueError("label_smoothing is for single-label data; this data is multi-label.")
        if not 0 < label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in (0, 1), got {label_smoothing}")
    weighted = isinstance(dls, ImageData) and dls.recipe.balance == "weights"
    weight = dls.class_weights() if weighted else None
    if multilabel:
        return BCEWithLogitsLossFlat(pos_weight=weight) if weighted else None
    if label_smoothing:
        return LabelSmoothingCrossEntropyFlat(eps=label_smoothing, weight=weight)
    return CrossEntropyLossFlat(weight=weight) if weighted else None


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
    dropout: float | None = None,
    pool: str | None = None,
    metrics=None,
    wd: float | None = None,
    label_smoothing: float = 0.0,
    mix: str | None = None,
    train_bn: bool = False,
    freeze_bn_stats: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    matcher: dict | None = None,
    size: int | None = None,
    seed: int | None = None,
    mixed_precision: str | None = None,
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
        head: ``"linear"`` (a new Linear layer), ``"mlp"`` (hidden layer, BatchNorm and dropout), or for open_clip
            models ``"zero_shot"``: a Linear layer that starts as the zero-shot classifier of the data's classes
            (CLIP text embeddings of `DEFAULT_TEMPLATES` prompts, scaled by CLIP's logit scale), so the first
            predictions are `zero_shot_classifier`'s and fine-tuning starts from there (docs/zero_shot.md).
        dropout: dropout before the head's last layer (default none for ``"linear"``, 0.5 for ``"mlp"``).
        pool: ``"max"``, ``"avg"`` or ``"avgmax"`` (timm) to pool the body's feature map that way instead of the
            model's own pooling; ``"max"`` keeps a small defect's strong response that an average dilutes
            (docs/small_defects.md). Recorded in the bundle.
        metrics: fastai metrics; default accuracy (multi-label: ``accuracy_multi``).
        wd: weight decay (fastai's default 0.01, decoupled as in AdamW).
        label_smoothing: e.g. ``0.1``: cross-entropy with label smoothing (single-label data only).
        mix: ``"mixup"`` or ``"cutmix"``: fastai's MixUp / CutMix callback on every training batch; by default
            CutMix when the data was built with ``aug="strong"`` (``mix="none"`` turns it off).
            Data built with ``balance="weights"`` gets a class-weighted loss.
        train_bn: keep training BatchNorm layers of a frozen body (fastai's behaviour); default ``False``.
        freeze_bn_stats: BatchNorm layers normalise with their pre-trained statistics during all training,
            also after unfreezing (Keras' rule; default). ``False``: unfrozen BN layers use batch statistics.
            Measured on the textile set with batches of 16: batch statistics after unfreezing sent the
            validation accuracy to chance, frozen statistics let it improve.
        checkpoint_dir: save ``last.safetensors`` and ``best.safetensors`` there after every epoch (atomically),
            so an interrupted fit can continue with ``resume=True``.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or a `torch.device`; default the device the DataLoaders
            were given, else CUDA when available, else CPU. Kept as ``learn.device``; the model, the data, the
            cached features, `lr_find`, `interpret` / `evaluate` and resumed checkpoints all use it.
        matcher: layer groups for a model without a group matcher of its own: timm's form, group name ->
            regex over parameter names (``{"stem": r"^conv1", "blocks": r"^layer(\\d+)"}``); checked first.
        size: run the model at this input size: ViT-like timm models are built for it (``img_size``), CNNs
            take it as is, and the data is resized to it. Default: the data's own ``size`` when it was given one
            (``ImageData.from_folder(..., size=...)``, which always wins: a different `size` here is ignored with
            a warning), else the model's (DINOv2: 224 px, not the 518 of its pretrained config; see
            ``easytransfer.models.backends.timm.DEFAULT_SIZES``). The model and the data always agree on it.
        seed: seed Python, numpy and torch (fastai's ``set_seed``, also ``easytransfer.set_seed``) before the head
            is made, so the head's initial weights and the order of the training batches repeat: the same
            figures in a notebook as from ``easytransfer train --seed`` (which passes it). ``from_folder(seed=)``
            fixes only the split. Default ``None``: not seeded.
        mixed_precision: ``"fp16"`` or ``"bf16"``: train (and compute cached features) in mixed precision on a
            GPU, as ``learn.to_fp16()`` / ``learn.to_bf16()``; ignored with a message on the CPU. Default off.

    Returns:
        The learner, its body frozen (only the new head trains until `unfreeze`).

    >>> from easytransfer import ImageData, transfer_learner
    >>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
    >>> learn = transfer_learner(dls, "efficientnet_lite0"); learn.fit_frozen(3)  # doctest: +SKIP
    """
    if seed is not None:
        set_seed(seed)
    cbs = list(kwargs.pop("cbs", None) or [])
    recipe = getattr(dls, "recipe", None)
    if mix is None and recipe is not None and uses_cutmix(recipe.aug):
        mix = "cutmix"  # part of the "strong" augmentation preset
    if mix not in (None, "none"):
        if mix not in _MIXES:
            raise ValueError(f"mix must be one of {sorted(_MIXES)}, 'none' or None, got {mix!r}")
        cbs.append(_MIXES[mix]())
    loss_func = _loss_func(dls, label_smoothing)
    if loss_func is not None and "loss_func" not in kwargs:
        kwargs["loss_func"] = loss_func
    head_config = HeadConfig(head, dropout, pool=pool)
    if isinstance(dls, ImageData) and recipe.size_given:  # the data's own size wins; a ViT is built for it
        if size is not None and size != recipe.size:
            warnings.warn(f"size={size} is ignored: the data was built with size={recipe.size}, which wins; "
                          "give the size to one of them.", stacklevel=2)
        size = recipe.size
    if head_config.type == "zero_shot":
        if isinstance(dls, ImageData) and dls.is_multilabel:
            raise ValueError("head='zero_shot' starts from a softmax over the classes (single-label data); this data "
                             "is multi-label: use head='linear'.")
        model, spec = zero_shot_model(arch, [str(c) for c in dls.vocab], pretrained=pretrained, weights=weights,
                                      size=size, head=head_config, device=device)
    else:
        model, spec = build_model(arch, _n_out(dls), pretrained=pretrained, weights=weights, head=head_config,
                                  size=size)
    if isinstance(dls, ImageData):
        dls = dls.for_model(spec)
    else:
        dls.add_tfms([Normalize.from_stats(spec.mean, spec.std, cuda=False)], "after_batch")
    groups = split_layer_groups(model, n_stages, head=spec.classifier, matcher=matcher)
    learn = TransferLearner(
        dls, model, spec=spec, layer_groups=groups, metrics=metrics if metrics is not None else _default_metrics(dls),
        head_config=head_config, checkpoint_dir=checkpoint_dir, train_bn=train_bn, freeze_bn_stats=freeze_bn_stats,
        wd=wd, cbs=cbs, device=device, **kwargs,
    )
    if mixed_precision not in (None, "no"):
        learn._mixed_precision(mixed_precision)  # to_fp16 / to_bf16; an unknown name raises ValueError
    return learn

"""`LayerGroupLearner`: a fastai `Learner` over layer groups whose fits are scheduled, recorded and resumable.

It is the machinery under `TransferLearner` (which adds the public recipe): the device, freezing by layer group,
mixed precision, data-parallel runs, the typed history every fit appends to (also a plain fastai
``learn.fit_one_cycle(1)``), the warm-up + cosine fit with early stopping, best weights, checkpoints and
``resume=True``. It knows no task: a subclass answers the hooks (`classes`,
`_feature_cache_or_none`, `_training_loop`, `_check_trainable`, `_weights_will_change`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.channelslast import ChannelsLast
from fastai.callback.fp16 import MixedPrecision
from fastai.callback.schedule import LRFinder, ParamScheduler
from fastai.data.core import DataLoaders
from fastai.learner import Learner
from fastcore.foundation import L
from torch import nn

from ..devices import resolve_device
from ..errors import DataError, EasyTransferError
from ..log import get_logger
from ..models.factory import ModelSpec
from ..models.heads import HeadConfig
from ..models.layer_groups import LayerGroups
from ..models.weights import load_state_dict_strict
from .callbacks import (
    BestWeightsCallback,
    FrozenBatchNormCallback,
    PhaseLogCallback,
    StartCandidate,
    StopOnNaNCallback,
    TieAwareEarlyStopping,
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
from .distributed import distributed_run
from .history import History, Phase, PhaseKind, as_history
from .precision import mixed_precision_callback

__all__ = ["LayerGroupLearner"]

logger = get_logger(__name__)


class LayerGroupLearner(Learner):
    """A fastai `Learner` over `LayerGroups`: freezing, device, precision, history and scheduled, resumable fits.

    Use `TransferLearner` (or a task's learner); this class holds what every fit needs and no task's knowledge.

    Args:
        dls: the DataLoaders.
        model: the whole model.
        spec: the backbone's `ModelSpec`.
        layer_groups: the `LayerGroups` (stem ... head) freezing and learning rates work on.
        head_config: the head's `HeadConfig` (what a bundle records; default ``HeadConfig()``).
        checkpoint_dir: save checkpoints there after every epoch of a recipe fit.
        train_bn, freeze_bn_stats: BatchNorm in a frozen body (see `transfer_learner`).
        channels_last: channels-last memory format (faster convolutions on the CPU).
        device: where to train; default the DataLoaders' device, else CUDA when available, else CPU.

    Returns:
        The learner with its body frozen.

    >>> learn = ClassifierLearner(dls, model, spec=spec, layer_groups=groups, device="cpu")  # doctest: +SKIP
    """

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
        self.head_config = head_config if head_config is not None else HeadConfig()
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.layer_groups = layer_groups
        self.fit_history = History()
        self.lr_find_result = None
        self.stop_reason = None
        self.best_epoch = None
        self.fit_start: StartCandidate | None = None  # the weights the last fit had to beat
        self.fine_tune_choice = None
        self.last_interpretation = None  # the last interpret / evaluate a subclass kept: what save_report shows
        self.world = None  # the `World` of a distributed run while `distributed()` is active
        self._schedule_name: str | None = None  # the fastai schedule a plain fit runs under (`fit_one_cycle` ...)
        self.freeze()

    def __repr__(self) -> str:
        """One line a notebook shows when a fit is the last line of a cell.

        >>> learn  # doctest: +SKIP
        ClassifierLearner(efficientnet_lite0, 3 classes, 5 layer groups of which 4 frozen, 6 epochs trained)
        """
        trainable = [any(p.requires_grad for p in g) for g in self.layer_groups.params(self.model)]
        return (f"{type(self).__name__}({self.spec.name}, {len(self.classes)} classes, {self.n_groups} layer groups "
                f"of which {trainable.count(False)} frozen, {len(self.fit_history)} epochs trained)")

    # ------------------------------------------------------------------------------------ hooks of a task

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names in output order (what a bundle records); each task's learner says where they are."""
        return tuple(str(c) for c in (getattr(self.dls, "vocab", None) or ()))

    def _feature_cache_or_none(self, cache_views: int, caller: str = "fit_frozen"):
        """Cached body features a frozen fit can train the head on, or ``None`` (here: always; the images)."""
        return None

    def _training_loop(self, features) -> Learner:
        """The learner a fit runs in: this one, or (a subclass with a feature cache) one over `features`."""
        return self

    def _check_trainable(self) -> None:
        """Raise a clear error before a fit when the model has nothing to train by gradient descent."""

    def _weights_will_change(self) -> None:
        """Called before every fit: drop what was fitted to the current weights (a classifier's calibration)."""

    # ------------------------------------------------------------------------------------ state

    @contextmanager
    def distributed(self, *, sync_bn: bool | None = None, verbose: bool = True) -> Iterator[LayerGroupLearner]:
        """Train data-parallel in the processes torchrun started (fastai's ``distrib_ctx``, CPU-safe).

        Run the script with ``torchrun --nproc_per_node N script.py`` (or ``easytransfer train DATA --nproc N``):
        inside the block every fit, `lr_find` and `fine_tune` runs on all ranks, each on its share of every
        epoch's images, with gradients averaged (DDP), so the weights are the same on every rank. A feature
        cache is computed by all ranks, each on its share, and gathered; `lr_find`'s suggestion and each
        epoch's figures are rank 0's, so early stopping and best weights agree; rank 0 alone prints, writes
        checkpoints, `export` s and saves reports (also after the block). One line says
        ``distributed: N processes (backend gloo|nccl)``. On CUDA each rank uses its own GPU (``LOCAL_RANK``)
        and BatchNorm is synchronised (`sync_bn`; never on the CPU). Outside torchrun the block changes nothing.

        Args:
            sync_bn: synchronise BatchNorm statistics across GPUs (default: on CUDA).
            verbose: print the one line about the processes.

        Returns:
            A context manager giving the learner.

        >>> with learn.distributed():  # doctest: +SKIP
        ...     learn.fine_tune(5)
        >>> learn.export("model")  # rank 0 writes it  # doctest: +SKIP
        """
        with distributed_run(self, sync_bn=sync_bn, verbose=verbose):
            yield self

    def to_fp16(self, **kwargs) -> LayerGroupLearner:
        """fastai's ``to_fp16`` (float16 mixed precision, AMP) on a GPU, also for a feature cache; off on the CPU.

        >>> learn.to_fp16().fine_tune(5)  # doctest: +SKIP
        """
        return self._mixed_precision("fp16", **kwargs)

    def to_bf16(self) -> LayerGroupLearner:
        """fastai's ``to_bf16`` (bfloat16 mixed precision) on a GPU, also for a feature cache; off on the CPU.

        >>> learn.to_bf16().fine_tune(5)  # doctest: +SKIP
        """
        return self._mixed_precision("bf16")

    def _mixed_precision(self, precision: str, **kwargs) -> LayerGroupLearner:
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
        """The number of layer groups (body groups and the head)."""
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
        unfrozen fit would let weight decay move a frozen weight (and invalidate a feature cache).

        >>> learn.freeze_to(-1)  # doctest: +SKIP
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

    def unfreeze(self, n: int | None = None) -> LayerGroupLearner:
        """Make all layer groups trainable, or only the head and the last `n` body groups.

        Args:
            n: how many body groups to open from the top (default all).

        Returns:
            The learner.

        >>> learn.unfreeze(2)  # doctest: +SKIP
        """
        if n is None:
            self.freeze_to(0)
        else:
            if not 0 <= n <= self.layer_groups.n_body:
                raise ValueError(f"n must be between 0 and {self.layer_groups.n_body} (the body groups), got {n}")
            self.freeze_to(self.layer_groups.n_body - n)
        return self

    def _body_is_frozen(self) -> bool:
        return not any(p.requires_grad for group in self.layer_groups.params(self.model)[:-1] for p in group)

    def model_identity(self) -> ModelIdentity:
        """The architecture and classes this learner's checkpoints record (what `export` writes).

        >>> learn.model_identity()  # doctest: +SKIP
        ModelIdentity(arch='efficientnet_lite0', classes=('cat', 'dog'))
        """
        return ModelIdentity(self.spec.name, tuple(self.classes))

    # ------------------------------------------------------------------------------------ fastai's own fits

    def fit(self, n_epoch, lr=None, wd=None, cbs=None, reset_opt=False, start_epoch=0):
        """fastai's ``fit``; a fit called directly (also through ``fit_one_cycle`` ...) lands in the history.

        The recipe's fits (`fit_frozen`, `fit_discriminative` ...) bring their own `PhaseLogCallback`, and
        `lr_find` its `LRFinder`; any other fit gets a `PhaseLogCallback` whose phase is `PhaseKind.FIT`, named
        after fastai's schedule (``"fit_one_cycle"``, ``"fit_flat_cos"``, ``"fit_sgdr"``; ``"fit"`` for a plain
        one), so ``learn.history``, `diagnose` and the report see its epochs.

        >>> learn.fit_one_cycle(1); learn.history.phase.tolist()  # doctest: +SKIP
        ['fit_one_cycle']
        """
        cbs = list(L(cbs))
        if not any(isinstance(cb, (PhaseLogCallback, LRFinder)) for cb in [*cbs, *self.cbs]):
            self._weights_will_change()
            self.best_epoch = None
            self.fine_tune_choice = None
            phase = Phase(PhaseKind.FIT, label=self._schedule_name, body_trained=not self._body_is_frozen())
            cbs.append(PhaseLogCallback(phase, self.fit_history))
        super().fit(n_epoch, lr=lr, wd=wd, cbs=cbs, reset_opt=reset_opt, start_epoch=start_epoch)

    @contextmanager
    def _schedule_named(self, name: str) -> Iterator[None]:
        self._schedule_name = name
        try:
            yield
        finally:
            self._schedule_name = None

    def fit_one_cycle(self, *args, **kwargs) -> LayerGroupLearner:
        """fastai's ``fit_one_cycle``, recorded in the history as phase ``"fit_one_cycle"``; returns the learner.

        >>> learn.fit_one_cycle(1, 1e-3)  # doctest: +SKIP
        """
        with self._schedule_named("fit_one_cycle"):
            super().fit_one_cycle(*args, **kwargs)
        return self

    def fit_flat_cos(self, *args, **kwargs) -> LayerGroupLearner:
        """fastai's ``fit_flat_cos``, recorded in the history as phase ``"fit_flat_cos"``; returns the learner.

        >>> learn.fit_flat_cos(1, 1e-3)  # doctest: +SKIP
        """
        with self._schedule_named("fit_flat_cos"):
            super().fit_flat_cos(*args, **kwargs)
        return self

    def fit_sgdr(self, *args, **kwargs) -> LayerGroupLearner:
        """fastai's ``fit_sgdr``, recorded in the history as phase ``"fit_sgdr"``; returns the learner.

        >>> learn.fit_sgdr(2, 1, 1e-3)  # doctest: +SKIP
        """
        with self._schedule_named("fit_sgdr"):
            super().fit_sgdr(*args, **kwargs)
        return self

    # ------------------------------------------------------------------------------------ the scheduled fit

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
            cbs.append(TieAwareEarlyStopping(monitor=monitor, patience=patience))
        return cbs

    def _fit_scheduled(self, epochs: int, lrs: np.ndarray, *, warmup_pct: float, phase: Phase, monitor: str,
                       patience: int | None, restore_best: bool, cbs=None, resume: bool = False, features=None):
        """Fit with warm-up + cosine from `lrs` (one per group); on cached `features` when given, else the images."""
        self._check_fit_args(epochs, monitor, patience)
        self._check_trainable()
        self._check_batches()
        start = self._start_candidate(monitor, features) if restore_best and not resume else None
        self.fit_start = start
        self.best_epoch = None
        self.fine_tune_choice = None  # any later fit changes the weights fine_tune chose
        self._weights_will_change()
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
        self._training_loop(features).fit(epochs - state.done, cbs=all_cbs)
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

    def _start_candidate(self, monitor: str, features) -> StartCandidate | None:
        """The weights a fit starts from (`monitor` value, history row, validation loss), when they were trained here.

        A fit keeps them unless one of its epochs beats them on validation, so no fit makes a trained model
        worse (one validation pass; nothing for a first fit or a training-loss monitor).
        """
        if not len(self.fit_history) or monitor == "train_loss":
            return None
        row = self.best_epoch if self.best_epoch is not None else len(self.fit_history) - 1
        values = self._validation_values(features)
        return StartCandidate(values[monitor], row, values["valid_loss"])

    def _validation_value(self, monitor: str, features=None) -> float:
        """`monitor` of the current weights on the validation set: one pass over its images, or over their
        cached `features` (the body does not run again) when given."""
        return self._validation_values(features)[monitor]

    def _validation_values(self, features=None) -> dict[str, float]:
        """The validation loss and metrics of the current weights, by name (`_validation_value`'s pass)."""
        values = self._training_loop(features).validate()
        return {name: float(v) for name, v in zip(self._monitor_names()[1:], values)}

    def _resume(self, state: FitState):
        """Load the last checkpoint of an interrupted fit: weights, optimizer, history; (epochs done, best)."""
        if self.checkpoint_dir is None:
            raise EasyTransferError("resume=True needs a checkpoint folder: give the learner checkpoint_dir=... "
                                    "(transfer_learner(..., checkpoint_dir=...)).")
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


def _continued(schedule, offset: float):
    """`schedule` from `offset` (the share of the fit already done) to its end, over the remaining epochs."""
    def rest(pct):
        return schedule(offset + pct * (1 - offset))

    return rest

"""fastai callbacks and schedules used by `TransferLearner`."""

from __future__ import annotations

import math
import time
from typing import NamedTuple

import numpy as np
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.schedule import SchedCos, SchedLin, combine_scheds
from fastai.callback.tracker import EarlyStoppingCallback, TrackerCallback
from torch import nn

from ..log import get_logger
from .distributed import any_rank
from .history import EpochRecord, History, Phase

__all__ = ["BestWeightsCallback", "FrozenBatchNormCallback", "LossTieBreak", "PhaseLogCallback", "StartCandidate",
           "StopOnNaNCallback", "TieAwareEarlyStopping", "better", "warmup_cosine"]

logger = get_logger(__name__)

_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def warmup_cosine(lr_max, warmup_pct: float = 0.1, start_div: float = 100.0, final_div: float = 1e4):
    """Linear warm-up from ``lr_max / start_div`` over `warmup_pct` of training, then cosine to ``lr_max / final_div``.

    `lr_max` may be an array with one rate per layer group; the schedule is applied to each.

    >>> sched = warmup_cosine(np.array([1e-3, 1e-2]), warmup_pct=0.1)
    >>> sched(0.1)
    array([0.001, 0.01 ])
    """
    lr_max = np.asarray(lr_max, dtype=float)
    anneal = SchedCos(lr_max, lr_max / final_div)
    if warmup_pct <= 0:
        return anneal
    if not warmup_pct < 1:
        raise ValueError(f"warmup_pct must be in [0, 1), got {warmup_pct}")
    return combine_scheds([warmup_pct, 1 - warmup_pct], [SchedLin(lr_max / start_div, lr_max), anneal])


def better(monitor: str, value: float, other: float) -> bool:
    """Whether `value` of `monitor` is strictly better than `other`, by fastai's `TrackerCallback` rule.

    Lower is better for a monitor whose name contains ``"loss"`` or ``"error"``, higher for other metrics
    (accuracy, F1). A finite value beats a non-finite one.

    >>> better("valid_loss", 0.4, 0.5), better("accuracy", 0.4, 0.5), better("accuracy", 0.4, float("nan"))
    (True, False, True)
    """
    if not math.isfinite(value):
        return False
    if not math.isfinite(other):
        return True
    comp = TrackerCallback(monitor=monitor).comp  # np.less or np.greater, as BestWeightsCallback decides
    return bool(comp(value, other))


class FrozenBatchNormCallback(Callback):
    """Run BatchNorm layers in inference mode (pre-trained running statistics) while training.

    With ``all_layers=False`` only BN layers whose parameters are all frozen are affected: Keras' rule for
    feature extraction, so a frozen body keeps the statistics it was pre-trained with instead of drifting
    them towards the new data's batches. With ``all_layers=True`` every BN layer stays in inference mode, also
    after unfreezing (Keras' rule for fine-tuning): the BN weights and biases still train, but the layers
    normalise with the same statistics in training and validation. On small data whose statistics differ
    from ImageNet this avoids the jump in validation loss that batch statistics of 16 images cause.
    """

    order = -5  # after TrainEvalCallback (-10) has called model.train()

    def __init__(self, all_layers: bool = True):
        self.all_layers = all_layers

    def before_train(self):
        for module in self.learn.model.modules():
            if isinstance(module, _BN_TYPES):
                params = list(module.parameters(recurse=False))
                if self.all_layers or (params and not any(p.requires_grad for p in params)):
                    module.eval()


class PhaseLogCallback(Callback):
    """Append one `EpochRecord` per epoch to a `History`: losses, metrics, train accuracy, peak rates, seconds.

    Args:
        phase: the fit's `Phase` (a name such as ``"frozen"`` is read with `Phase.from_name`).
        history: the `History` to append to; default ``learn.fit_history``.

    >>> learn.fit(3, cbs=PhaseLogCallback(Phase(PhaseKind.FROZEN), learn.fit_history))  # doctest: +SKIP
    """

    order = 55  # after Recorder (50) has written the epoch's log
    run_valid = False

    def __init__(self, phase: Phase | str, history: History | None = None, on_features: bool = False):
        self.phase = phase if isinstance(phase, Phase) else Phase.from_name(phase)
        self.history = history
        self.on_features = on_features

    def before_epoch(self):
        self._start = time.perf_counter()
        self._peak_lrs = None
        self._correct, self._seen = 0.0, 0

    def after_batch(self):
        lrs = [float(h["lr"]) for h in self.learn.opt.hypers]  # one per layer group, stem first
        self._peak_lrs = lrs if self._peak_lrs is None else [max(a, b) for a, b in zip(self._peak_lrs, lrs)]
        self._count_correct()

    def _count_correct(self):
        """Accuracy on the training batches as they were trained (augmented), for `diagnose`."""
        pred, yb = self.learn.pred, self.learn.yb
        if not isinstance(pred, torch.Tensor) or len(yb) != 1 or not isinstance(yb[0], torch.Tensor):
            return
        with torch.no_grad():
            targ = yb[0]
            if targ.shape == pred.shape:  # multi-label: one-hot targets, threshold the sigmoid at 0.5
                hits = ((pred.sigmoid() > 0.5) == targ.bool()).float().mean(dim=1)
            elif pred.ndim == 2 and targ.ndim == 1:
                hits = (pred.argmax(dim=1) == targ).float()
            else:
                return
        self._correct += float(hits.sum())
        self._seen += len(hits)

    def after_epoch(self):
        history = self.history if self.history is not None else self.learn.fit_history
        values = dict(zip(self.learn.recorder.metric_names[1:], self.learn.recorder.log[1:]))
        values.pop("time", None)
        values = {k: float(v) if v is not None else np.nan for k, v in values.items()}
        train_loss, valid_loss = values.pop("train_loss", np.nan), values.pop("valid_loss", np.nan)
        history.append(EpochRecord(
            self.phase, len(history), train_loss, valid_loss, metrics=values,
            train_accuracy=self._correct / self._seen if self._seen else np.nan,
            lrs=tuple(self._peak_lrs or ()), seconds=time.perf_counter() - self._start, on_features=self.on_features))


def _changeable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of what training can change: parameters that require or hold a gradient, and all buffers.

    A parameter that neither requires nor holds a gradient is neither touched by autograd nor stepped by
    fastai's optimizer, so a frozen body is not copied (nor are its gigabytes for a large model).
    """
    state = {name: p.detach().clone() for name, p in model.named_parameters()
             if p.requires_grad or p.grad is not None}
    state.update({name: b.detach().clone() for name, b in model.named_buffers()})
    return state


def _load_changeable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    tensors = dict(model.named_parameters())
    tensors.update(dict(model.named_buffers()))
    with torch.no_grad():
        for name, value in state.items():
            tensors[name].copy_(value)


class StartCandidate(NamedTuple):
    """The weights a fit starts from, as a candidate it must beat: their `monitor` value, history row and validation
    loss (the tie-break)."""

    value: float
    row: int
    loss: float = math.inf


class LossTieBreak(TrackerCallback):
    """fastai's `TrackerCallback` where an epoch that ties the best value of a metric monitor exactly and has a lower
    validation loss counts as better (``new_best``).

    A metric can sit on one value for several epochs: mAP@0.5 at 0 while a detector still learns to find anything,
    accuracy at 1.0 on a small validation set. Without the tie-break the first of those epochs would be kept and
    early stopping would count the others as no progress, although the loss says the model is getting better.
    A loss monitor has no ties to break.

    >>> learn.fit(10, cbs=TieAwareEarlyStopping(monitor="map50", patience=3))  # doctest: +SKIP
    """

    def before_fit(self):
        super().before_fit()
        self.best_loss = math.inf

    def after_epoch(self):
        super().after_epoch()
        values = dict(zip(self.recorder.metric_names[1:], self.recorder.values[-1]))
        loss = float(values.get("valid_loss", math.inf))
        if (not self.new_best and "loss" not in self.monitor and values[self.monitor] == self.best
                and loss < self.best_loss):
            self.new_best = True
        if self.new_best:
            self.best_loss = loss


class TieAwareEarlyStopping(EarlyStoppingCallback, LossTieBreak):
    """fastai's `EarlyStoppingCallback` with `LossTieBreak`: an epoch that ties the best metric with a lower
    validation loss resets the patience.

    >>> learn.fit(10, cbs=TieAwareEarlyStopping(monitor="map50", patience=5))  # doctest: +SKIP
    """


class BestWeightsCallback(LossTieBreak):
    """Keep the weights of the best epoch by `monitor` in memory and load them when the fit ends.

    Built on fastai's `TrackerCallback` (the same `monitor`, `comp` and `min_delta` as `SaveModelCallback`),
    but nothing is written to disk. The copy includes buffers such as BatchNorm statistics. When the best
    epoch is not the last one, one line says which epoch's weights were restored. With `start` set to a
    `StartCandidate`, the weights the model has when the fit begins count as a candidate with that `monitor`
    value (`row`: their epoch in the history): an epoch must beat them to be kept, so a fit never ends with
    weights worse on validation than the ones it started from (``kept_start`` says when it kept them). A tie on a
    metric goes to the lower validation loss (`LossTieBreak`).

    >>> learn.fit(10, cbs=BestWeightsCallback(monitor="accuracy"))  # doctest: +SKIP
    """

    order = 58  # after PhaseLogCallback (55) has written the epoch's history row

    def __init__(self, monitor: str = "valid_loss", comp=None, min_delta: float = 0.0, verbose: bool = True):
        super().__init__(monitor=monitor, comp=comp, min_delta=min_delta, reset_on_fit=True)
        self.verbose = verbose
        self.initial = None  # (best value, state, history row) carried over from a resumed fit
        self.start: StartCandidate | None = None  # the weights the fit starts from, to be beaten
        self.kept_start = False

    def before_fit(self):
        super().before_fit()
        self.best_state, self.best_row, self.last_row, self.kept_start = None, None, None, False
        if self.initial is not None:
            self.best, self.best_state, self.best_row = self.initial
        elif self.start is not None:
            self.best, self.best_row, self.best_loss = self.start
            self.best_state = _changeable_state(self.learn.model)

    def after_epoch(self):
        super().after_epoch()
        self.last_row = self._history_epoch()
        if self.new_best:
            self.best_state, self.best_row = _changeable_state(self.learn.model), self.last_row

    def _history_epoch(self) -> int:
        history = getattr(self.learn, "fit_history", None)
        return len(history) - 1 if isinstance(history, History) and len(history) else self.epoch

    def after_fit(self):
        if self.run and self.best_state is not None and self.best_row != self.last_row:
            _load_changeable_state(self.learn.model, self.best_state)
            self.kept_start = self.start is not None and self.initial is None and self.best_row == self.start.row
            if self.verbose and self.kept_start:
                logger.info(f"No epoch of this fit beat the weights it started from ({self.monitor} "
                            f"{self.best:.4f}); kept those.")
            elif self.verbose:
                logger.info(f"Restored the weights of epoch {self.best_row} (best {self.monitor}: {self.best:.4f}).")
        self.learn.best_epoch = self.best_row
        self.best_state = None
        super().after_fit()


class StopOnNaNCallback(Callback):
    """Stop training cleanly when the loss becomes NaN or infinite, and go back to the last good weights.

    The weights are copied at the start of the fit and after every epoch whose losses were finite; on a
    non-finite loss (caught before the backward pass) they are restored, ``learn.stop_reason`` says what
    happened and the fit ends. fastai's `TerminateOnNaNCallback` only stops.
    """

    order = 57

    def before_fit(self):
        self.good_state, self.good_epoch = _changeable_state(self.learn.model), None
        self.learn.stop_reason = None

    def after_loss(self):
        # in a distributed run every rank must stop at the same batch, or the others wait for it forever
        if self.training and any_rank(not torch.isfinite(self.learn.loss).all()):
            self._stop(f"the training loss became {float(self.learn.loss.detach().float().mean())}"
                       f" at epoch {self.epoch}, batch {self.iter}")

    def after_epoch(self):
        values = [v for v in self.learn.recorder.log[1:] if isinstance(v, float)]
        if any_rank(any(not math.isfinite(v) for v in values)):
            self._stop(f"a non-finite loss or metric at the end of epoch {self.epoch}")
        self.good_state, self.good_epoch = _changeable_state(self.learn.model), self.epoch

    def _stop(self, what: str):
        _load_changeable_state(self.learn.model, self.good_state)
        where = "the start of this fit" if self.good_epoch is None else f"the end of epoch {self.good_epoch}"
        self.learn.stop_reason = (f"Stopped: {what}. Restored the weights from {where}. "
                                  "Lower the learning rate (try learn.lr_find()) or check the data for broken labels.")
        logger.warning(self.learn.stop_reason)
        raise CancelFitException()

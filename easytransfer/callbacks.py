"""fastai callbacks and schedules used by `TransferLearner`."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
from fastai.callback.core import Callback
from fastai.callback.schedule import SchedCos, SchedLin, combine_scheds
from torch import nn

__all__ = ["FrozenBatchNormCallback", "PhaseLogCallback", "warmup_cosine"]

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
    """Append one row per epoch to ``learn.history``: phase, losses, metrics, peak learning rates, seconds."""

    order = 55  # after Recorder (50) has written the epoch's log
    run_valid = False

    def __init__(self, phase: str):
        self.phase = phase

    def before_epoch(self):
        self._start = time.perf_counter()
        self._peak_lrs = None

    def after_batch(self):
        lrs = [float(h["lr"]) for h in self.learn.opt.hypers]
        self._peak_lrs = lrs if self._peak_lrs is None else [max(a, b) for a, b in zip(self._peak_lrs, lrs)]

    def after_epoch(self):
        recorder = self.learn.recorder
        names = list(recorder.metric_names)
        log = list(recorder.log)
        row = {"phase": self.phase}
        for name, value in zip(names, log):
            if name == "time":
                continue
            row[name] = value if name == "epoch" else (float(value) if value is not None else np.nan)
        row["epoch"] = len(self.learn.history)
        for i, lr in enumerate(self._peak_lrs or []):
            row[f"lr_{i}"] = lr  # the epoch's peak rate of layer group i (0 = stem)
        row["seconds"] = time.perf_counter() - self._start
        self.learn.history = pd.concat([self.learn.history, pd.DataFrame([row])], ignore_index=True)

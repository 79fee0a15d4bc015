"""Training the head on cached features: an inner fastai `Learner` whose events reach the outer learner's callbacks.

While the body is frozen its output does not change, so the head can train on features computed once. The
outer `TransferLearner` is never modified for this: a `HeadLoop` builds a separate fastai `Learner` over the
feature DataLoaders and the trainable head module (the same module object as in the outer model), with the
outer learner's loss, metrics, opt_func, wd and *optimizer*. Sharing the optimizer is exact: with the body
frozen only the head's parameters get gradients, and fastai's optimizer steps only parameters that have one,
so the step, the rates of every layer group and the optimizer state are those of an uncached frozen fit.

The inner learner owns only the loop mechanics (train/eval mode, counters, tensor casting). Every other
callback -- the outer learner's own (Recorder, progress, frozen BatchNorm), the fit's schedule, history,
early stopping, best weights, NaN stop, checkpoints and the user's ``cbs`` -- stays attached to the outer
learner and gets each event relayed with the loop state (epoch, iter, n_epoch, training, xb, yb, pred,
loss ...) mirrored onto it. So in a callback ``self.learn`` is the outer learner, ``self.learn.model`` the whole
model, ``self.learn.opt`` the optimizer that steps, and ``self.learn.recorder`` records the fit; changes a
callback makes to the batch (``xb``, ``yb``, ``pred``, ``loss``) go back into the inner loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

from fastai.callback.core import Callback, TrainEvalCallback
from fastai.data.core import DataLoaders
from fastai.learner import CastToTensor, Learner
from fastai.torch_core import to_device
from torch import nn

__all__ = ["HeadLoop", "InnerHead", "InnerLearner", "RelayCallback"]

LOOP_STATE = ("n_epoch", "epoch", "iter", "n_iter", "training", "pct_train", "train_iter", "dl",
              "xb", "yb", "pred", "loss", "loss_grad")  # what fastai's loop sets on the learner
BATCH_STATE = ("xb", "yb", "pred", "loss", "loss_grad")  # what a callback may change for the loop
LOOP_MECHANICS = (TrainEvalCallback, CastToTensor)  # the inner learner's own; the outer ones are not relayed


class RelayCallback(Callback):
    """Run `callback` (attached to the outer learner `outer`) on an inner learner's events, at its own order.

    Before each event the inner loop's state is copied onto `outer`; afterwards the batch state (which the
    callback may have changed, e.g. ``xb``) is copied back.
    """

    def __init__(self, callback: Callback, outer: Learner):
        self.callback, self.outer = callback, outer
        self.order = callback.order

    def __call__(self, event_name: str):
        inner, outer = self.learn, self.outer
        for name in LOOP_STATE:
            if name in vars(inner):
                setattr(outer, name, getattr(inner, name))
        try:
            return self.callback(event_name)
        finally:
            for name in BATCH_STATE:
                if name in vars(outer):
                    setattr(inner, name, getattr(outer, name))

    def __repr__(self) -> str:
        return f"RelayCallback({self.callback!r})"


class InnerHead(nn.Module):
    """The head as the inner learner's model, holding the very same module (and parameters).

    fastai calls ``model.reset()`` before every fit when the model has one (meant for RNN state); timm's
    ``ClassifierHead.reset(num_classes)`` means "replace the classifier", so the head is not handed over bare.
    It passes on every input of a batch (a segmentation decoder takes one feature map per scale).
    """

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, *xs):
        return self.head(*xs)


class InnerLearner(Learner):
    """The inner fastai `Learner`: batches go to the feature DataLoaders' device (the outer learner's).

    fastai asks the model's first parameter where a batch goes; a `KNNHead` has no parameters (only buffers).
    """

    def _set_device(self, b):
        return to_device(b, self.dls.device)


class HeadLoop:
    """Fit or validate `head` on cached features with `learn`'s optimizer and callbacks, `learn` unchanged.

    Args:
        learn: the outer learner (a `ClassifierLearner` with its body frozen).
        dls: the feature DataLoaders (``FeatureCache.dataloaders``), on ``learn.device``.
        head: the trainable head module, a sub-module of ``learn.model``.
        inner_cbs: callbacks of the inner learner itself, each in place of the outer learner's callback of its
            type (a distributed run's `RankTrainer`, which wraps the inner model and data, not the outer ones).

    Attributes:
        inner: the inner fastai `Learner` (an `InnerLearner`) over `dls` and `head`.

    >>> loop = HeadLoop(learn, cache.dataloaders(learn.dls, learn.device), head)  # doctest: +SKIP
    >>> loop.fit(3, cbs=[ParamScheduler({"lr": warmup_cosine(lrs)})])  # doctest: +SKIP
    """

    def __init__(self, learn: Learner, dls: DataLoaders, head: nn.Module, inner_cbs: Sequence[Callback] = ()):
        self.outer = learn
        self.inner_cbs = list(inner_cbs)
        self.inner = InnerLearner(dls, InnerHead(head), loss_func=learn.loss_func, opt_func=learn.opt_func,
                                  lr=learn.lr, metrics=learn.metrics, path=learn.path, wd=learn.wd,
                                  wd_bn_bias=learn.wd_bn_bias, train_bn=learn.train_bn, moms=learn.moms,
                                  default_cbs=False, cbs=[TrainEvalCallback(), CastToTensor(), *self.inner_cbs])

    @property
    def dls(self) -> DataLoaders:
        return self.inner.dls

    @contextmanager
    def _relayed(self, cbs):
        outer = self.outer
        if outer.opt is None:
            outer.create_opt()
        self.inner.opt = outer.opt  # the same optimizer: see the module's docstring
        with outer.added_cbs(list(cbs or [])):
            own = LOOP_MECHANICS + tuple(type(cb) for cb in self.inner_cbs)
            relays = [RelayCallback(cb, outer) for cb in outer.cbs if not isinstance(cb, own)]
            try:
                with self.inner.added_cbs(relays):
                    yield
            finally:
                self.inner.opt = None
                outer.dl, outer.xb, outer.yb, outer.pred, outer.loss = None, (None,), (None,), None, None

    def fit(self, n_epoch: int, cbs=None) -> None:
        """``learn.fit(n_epoch, cbs=cbs)``, with the head on the cached features."""
        with self._relayed(cbs):
            self.inner.fit(n_epoch)

    def validate(self, dl=None) -> list:
        """``learn.validate(dl=dl)`` on the features: ``[valid loss, *metrics]`` (default: the validation features)."""
        outer = self.outer
        with self._relayed(None), outer.no_logging(), outer.no_mbar():
            self.inner.validate(dl=dl)
        return getattr(outer, "final_record", None)

"""Training: fit_gradual, early stopping, best-weight restore, NaN stop, lr_find, history plot, diagnosis, options."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from fastai.callback.core import Callback, CancelFitException
from fastai.callback.mixup import MixUp
from fastai.losses import LabelSmoothingCrossEntropyFlat
from fastai.metrics import Metric
from matplotlib.figure import Figure

from easytransfer import ImageData, transfer_learner
from easytransfer.train.callbacks import BestWeightsCallback, TieAwareEarlyStopping
from easytransfer.train.diagnosis import diagnose
from easytransfer.train.rates import DEFAULT_HEAD_LR


@pytest.fixture
def dls(image_folder):
    return ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)


@pytest.fixture
def learn(dls):
    return transfer_learner(dls, "test_efficientnet", pretrained=False)


class EpochScore(Metric):
    """A metric whose value is fixed per epoch, to make 'the best epoch' known in advance."""

    def __init__(self, scores):
        self.scores, self.epoch = scores, 0

    def reset(self):
        pass

    def accumulate(self, learn):
        self.epoch = learn.epoch

    @property
    def value(self):
        return self.scores[self.epoch]

    @property
    def name(self):
        return "score"


class RecordWeights(Callback):
    """Copies of the weights after every epoch (run after the history and tracker callbacks)."""

    order = 90

    def before_fit(self):
        self.states = []

    def after_epoch(self):
        self.states.append({k: v.detach().clone() for k, v in self.learn.model.state_dict().items()})


class FirstLrOfEachFit(Callback):
    order = 100  # after ParamScheduler (60) has set the batch's rates

    def __init__(self):
        self.lrs = []

    def before_batch(self):
        if self.training and self.epoch == 0 and self.iter == 0:
            self.lrs.append([h["lr"] for h in self.learn.opt.hypers])


def _same_state(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _trainable(learn):
    return [all(p.requires_grad for p in g) for g in learn.layer_groups.params(learn.model)]


@pytest.mark.parametrize("cache", [False, True])
def test_fit_frozen_body_gets_no_gradient_and_default_lr_is_in_range(learn, cache):
    assert 1e-3 <= DEFAULT_HEAD_LR <= 1e-2
    body = [p for g in learn.layer_groups.params(learn.model)[:-1] for p in g]
    before = [p.detach().clone() for p in body]
    learn.fit_frozen(1, cache=cache)
    assert all(not p.requires_grad and (p.grad is None or not p.grad.any()) for p in body)
    assert all(torch.equal(a, p) for a, p in zip(before, body))
    assert learn.history["lr_0"].max() == pytest.approx(learn.history[f"lr_{learn.n_groups - 1}"].max())


def test_freeze_to_opens_groups_from_k(learn):
    learn.freeze_to(2)
    assert _trainable(learn) == [False, False] + [True] * (learn.n_groups - 2)
    learn.freeze()
    assert _trainable(learn) == [False] * (learn.n_groups - 1) + [True]


def _trained_state(learn, cache):
    """The whole model's state: callbacks see the whole model also when the head trains on cached features."""
    return learn.model.state_dict()


@pytest.mark.parametrize("cache", [False, True])
def test_best_epoch_weights_are_restored_at_the_end_of_the_fit(dls, cache):
    scores = [0.5, 0.9, 0.7, 0.6]  # best epoch: 1
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, metrics=[EpochScore(scores)])
    recorder = RecordWeights()
    learn.fit_frozen(4, lr=1e-2, monitor="score", patience=None, cbs=[recorder], cache=cache)
    assert len(learn.history) == 4 and learn.best_epoch == 1
    assert _same_state(_trained_state(learn, cache), recorder.states[1])
    assert not _same_state(_trained_state(learn, cache), recorder.states[-1])


@pytest.mark.parametrize("cache", [False, True])
def test_best_weights_by_default_valid_loss(learn, cache):
    recorder = RecordWeights()
    learn.fit_frozen(3, lr=5e-2, cbs=[recorder], cache=cache)
    best = int(learn.history["valid_loss"].to_numpy().argmin())
    assert learn.best_epoch == best
    assert _same_state(_trained_state(learn, cache), recorder.states[best])


def test_restore_best_false_keeps_the_last_weights(dls):
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, metrics=[EpochScore([0.9, 0.1])])
    recorder = RecordWeights()
    learn.fit_frozen(2, monitor="score", restore_best=False, cbs=[recorder], cache=False)
    assert _same_state(learn.model.state_dict(), recorder.states[-1])


def test_early_stopping_ends_the_fit_after_patience_epochs(dls):
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, metrics=[EpochScore([0.9] + [0.5] * 9)])
    learn.fit_frozen(10, monitor="score", patience=2)
    assert len(learn.history) == 3  # the best epoch and two without improvement


def _tracked(cb, rows):
    """Runs `cb` over epochs of (valid_loss, score) rows on a stand-in recorder; the epochs it took as new best."""
    recorder = SimpleNamespace(metric_names=["epoch", "train_loss", "valid_loss", "score", "time"], values=[])
    cb.learn = SimpleNamespace(recorder=recorder, epoch=0, model=torch.nn.Linear(1, 1))
    cb.before_fit()
    best = []
    for epoch, (loss, score) in enumerate(rows):
        cb.learn.epoch = epoch
        recorder.values.append([1.0, loss, score])
        cb.after_epoch()
        best += [epoch] if cb.new_best else []
    return best


def test_a_tie_on_the_metric_goes_to_the_lower_validation_loss():
    rows = [(2.0, 0.0), (1.5, 0.0), (1.8, 0.0), (1.2, 0.0), (1.3, 0.4), (1.0, 0.4)]  # map50 stuck at 0, then a tie
    assert _tracked(BestWeightsCallback(monitor="score", verbose=False), rows) == [0, 1, 3, 4, 5]
    assert _tracked(TieAwareEarlyStopping(monitor="score", patience=2), rows) == [0, 1, 3, 4, 5]  # never stops
    with pytest.raises(CancelFitException):  # equal scores and no lower loss: no progress
        _tracked(TieAwareEarlyStopping(monitor="score", patience=2), [(1.0, 0.0), (1.1, 0.0), (1.2, 0.0)])
    assert _tracked(BestWeightsCallback(monitor="valid_loss", verbose=False), [(1.0, 0), (1.0, 0)]) == [0]


def test_a_fit_on_a_flat_metric_keeps_the_lowest_validation_loss(dls):
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, metrics=[EpochScore([0.0] * 4)])
    recorder = RecordWeights()
    learn.fit_frozen(4, lr=5e-2, monitor="score", patience=None, cbs=[recorder], cache=False)
    best = int(learn.history["valid_loss"].to_numpy().argmin())
    assert learn.best_epoch == best
    assert _same_state(learn.model.state_dict(), recorder.states[best])


def test_unknown_monitor_is_a_clear_error(learn):
    with pytest.raises(ValueError, match="monitor='f1'.*valid_loss"):
        learn.fit_frozen(1, monitor="f1")


class PoisonInputs(Callback):
    """Turn the inputs of epoch 1 into NaNs, so the loss becomes NaN."""

    order = 0

    def before_batch(self):
        if self.training and self.epoch == 1:
            self.learn.xb = (self.learn.xb[0] * float("nan"),)


@pytest.mark.parametrize("cache", [False, True])
def test_nan_loss_stops_cleanly_and_restores_the_last_good_weights(learn, cache):
    recorder = RecordWeights()
    learn.fit_frozen(4, cbs=[PoisonInputs(), recorder], cache=cache)
    assert "nan" in learn.stop_reason and "epoch 1" in learn.stop_reason
    assert len(learn.history) == 1  # only the good epoch is in the history
    state = learn.model.state_dict()
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    assert _same_state(_trained_state(learn, cache), recorder.states[0])


def test_fit_gradual_opens_one_more_group_per_stage_and_rewarms(learn):
    first = FirstLrOfEachFit()
    learn.fit_gradual(epochs_per_stage=1, lr_max=1e-3, head_lr=2e-3, max_unfrozen=2, decay=0.5, cbs=[first])
    assert learn.history["phase"].tolist() == ["stage 0", "stage 1", "stage 2"]
    n = learn.n_groups
    assert _trainable(learn) == [False] * (n - 3) + [True] * 3
    head_first = [lrs[-1] for lrs in first.lrs]  # every stage starts its warm-up near zero again
    np.testing.assert_allclose(head_first, [2e-3 / 100, 1e-3 / 100, 1e-3 / 100])
    np.testing.assert_allclose(first.lrs[2][-3:], np.array([0.25, 0.5, 1.0]) * 1e-3 / 100)
    with pytest.raises(ValueError, match="max_unfrozen"):
        learn.fit_gradual(1, max_unfrozen=n)


def _opt_state(learn):
    sd = learn.opt.state_dict()
    return [{k: (v.clone() if torch.is_tensor(v) else v) for k, v in s.items()} for s in sd["state"]], \
        [dict(h) for h in sd["hypers"]]


def _assert_same_opt(before, after):
    (states_a, hypers_a), (states_b, hypers_b) = before, after
    assert hypers_a == hypers_b
    assert len(states_a) == len(states_b)
    for a, b in zip(states_a, states_b):
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]


@pytest.mark.parametrize("unfrozen", [False, True])
def test_lr_find_suggests_and_restores_weights_and_optimizer_exactly(learn, unfrozen):
    learn.fit_frozen(1)
    if unfrozen:
        learn.unfreeze()
        learn.fit_discriminative(1)
    weights = {k: v.clone() for k, v in learn.model.state_dict().items()}
    opt = _opt_state(learn)
    assert any(len(s) for s in opt[0])  # Adam moments exist, so the check below means something
    result = learn.lr_find(num_it=20)
    assert _same_state(weights, learn.model.state_dict())
    _assert_same_opt(opt, _opt_state(learn))
    assert {"valley", "steep", "minimum", "slide"} <= set(result.suggestions)
    assert result.valley == result.suggestions["valley"] > 0
    assert len(result.lrs) == len(result.losses) > 10 and np.all(np.diff(result.lrs) > 0)
    assert isinstance(result.plot(), Figure)
    assert learn.lr_find_result is result
    assert _trainable(learn) == ([True] * learn.n_groups if unfrozen else [False] * (learn.n_groups - 1) + [True])


def test_lr_find_on_a_fresh_learner_leaves_no_adam_moments(learn):
    opt = _opt_state(learn)
    learn.lr_find(num_it=10)
    _assert_same_opt(opt, _opt_state(learn))
    assert not any("grad_avg" in s for s in _opt_state(learn)[0])


def test_lr_find_unfrozen_sweeps_groups_with_the_decay(learn):
    learn.unfreeze()
    seen = []

    class Spy(Callback):
        order = 100

        def before_batch(self):
            if self.training:
                seen.append([h["lr"] for h in self.learn.opt.hypers])

    learn.add_cb(Spy())
    learn.lr_find(num_it=12, decay=0.5)
    ratios = np.array(seen[3]) / seen[3][-1]
    np.testing.assert_allclose(ratios, 0.5 ** np.arange(learn.n_groups - 1, -1, -1))


def test_lr_find_option_of_fit_frozen_uses_the_suggestion(learn):
    learn.fit_frozen(1, lr="find", warmup_pct=0)
    suggested = learn.lr_find_result.suggested
    assert learn.recorder.hps["lr"][0] == pytest.approx(suggested)
    with pytest.raises(ValueError, match="'find'"):
        learn.fit_frozen(1, lr="fast")


def test_history_plot_returns_a_figure_with_train_and_valid_curves(learn):
    learn.fit_frozen(2)
    learn.unfreeze(1)
    learn.fit_discriminative(1)
    fig = learn.plot_history()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    labels = [line.get_label() for line in fig.axes[0].get_lines()]
    assert labels == ["train loss", "valid loss"]
    assert len(fig.axes[0].get_lines()[0].get_xdata()) == 3
    assert {"train_accuracy", "accuracy"} <= set(learn.history.columns)
    with pytest.raises(ValueError, match="empty"):
        transfer_learner(learn.dls, "test_efficientnet", pretrained=False).plot_history()


def _history(rows, phase="frozen"):
    return pd.DataFrame([dict(phase=phase, epoch=i, train_loss=tl, valid_loss=vl, accuracy=va, train_accuracy=ta)
                         for i, (tl, vl, ta, va) in enumerate(rows)])


def test_diagnose_under_fitting_suggests_unfreezing_when_only_the_head_trained():
    d = diagnose(_history([(1.2, 1.1, 0.50, 0.52), (1.0, 0.95, 0.62, 0.63)]))
    assert d.verdict == "under-fitting"
    assert "unfreeze" in str(d).lower() and "62.0%" in str(d)


def test_diagnose_over_fitting_from_the_gap_and_from_a_rising_valid_loss():
    gap = diagnose(_history([(0.5, 0.6, 0.9, 0.80), (0.1, 0.7, 1.0, 0.75)], phase="discriminative"))
    assert gap.verdict == "over-fitting"
    assert any("augmentation" in a for a in gap.advice) and any("weight decay" in a for a in gap.advice)
    assert any("fewer groups" in a or "feature extraction" in a for a in gap.advice)
    rising = diagnose(_history([(0.6, 0.40, 0.92, 0.92), (0.3, 0.45, 0.95, 0.92), (0.2, 0.55, 0.96, 0.90)]))
    assert rising.verdict == "over-fitting" and "lowest at epoch 0" in str(rising)


def test_diagnose_good_fit_and_empty_history():
    d = diagnose(_history([(0.3, 0.32, 0.95, 0.94), (0.29, 0.31, 0.96, 0.95)]))
    assert d.verdict == "good fit"
    assert diagnose(pd.DataFrame()).verdict == "too early to tell"


def test_diagnose_on_a_learner_mentions_the_small_validation_set(learn):
    learn.fit_frozen(1)
    text = str(learn.diagnose())
    assert text.startswith("Diagnosis: ") and "only 4 validation images" in text


def test_regularisation_options(dls):
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, dropout=0.3, wd=0.05,
                             label_smoothing=0.1, mix="mixup")
    assert learn.model.drop_rate == 0.3 and learn.wd == 0.05
    assert isinstance(learn.loss_func, LabelSmoothingCrossEntropyFlat)
    assert any(isinstance(cb, MixUp) for cb in learn.cbs)
    learn.fit_frozen(1)
    assert np.isfinite(learn.history["train_loss"]).all()
    with pytest.raises(ValueError, match="mix"):
        transfer_learner(dls, "test_efficientnet", pretrained=False, mix="blend")


def test_dropout_on_a_torchvision_linear_head(dls):
    learn = transfer_learner(dls, "tv:mobilenet_v3_small", pretrained=False, dropout=0.2)
    head = learn.model.get_submodule(learn.spec.classifier)
    assert isinstance(head[0], torch.nn.Dropout) and head[0].p == 0.2 and head[1].out_features == 2


def test_diagnose_low_train_accuracy_is_under_fitting_even_with_a_gap():
    d = diagnose(_history([(1.0, 0.9, 0.50, 0.44), (0.92, 0.87, 0.66, 0.55)]))
    assert d.verdict == "under-fitting"
    assert not any("Fewer epochs" in a for a in d.advice)


def test_diagnose_does_not_advise_unfreezing_when_everything_is_unfrozen():
    rows = [(1.0, 0.9, 0.50, 0.50), (0.9, 0.85, 0.6, 0.6)]
    some_frozen = diagnose(_history(rows, phase="discriminative"), frozen_body_groups=2)
    all_open = diagnose(_history(rows, phase="discriminative"), frozen_body_groups=0)
    assert any("learn.unfreeze()" in a for a in some_frozen.advice)
    assert not any("learn.unfreeze()" in a for a in all_open.advice)


class AllGroupLrs(Callback):
    order = 100  # after ParamScheduler

    def __init__(self):
        self.lrs = []

    def before_batch(self):
        if self.training:
            self.lrs.append([h["lr"] for h in self.learn.opt.hypers])


def test_every_groups_rate_follows_decay_warmup_and_cosine_at_every_step(learn):
    from easytransfer.train.callbacks import warmup_cosine

    learn.unfreeze()
    spy = AllGroupLrs()
    learn.fit_discriminative(3, lr_max=2e-3, decay=0.1, warmup_pct=0.1, cbs=[spy])
    n = learn.n_groups
    peak = 2e-3 * 0.1 ** np.arange(n - 1, -1, -1)  # e.g. 2e-7 ... 2e-4, 2e-3 for five groups
    sched = warmup_cosine(peak, warmup_pct=0.1)
    steps = len(spy.lrs)
    for i in (0, 1, steps // 2, steps - 1):
        np.testing.assert_allclose(spy.lrs[i], sched(i / steps), rtol=1e-9)


def test_lr_max_find_sweeps_then_fits_discriminatively(learn):
    learn.unfreeze()
    spy = AllGroupLrs()
    learn.fit_discriminative(1, lr_max="find", decay=0.5, warmup_pct=0, cbs=[spy])
    head = learn.lr_find_result.suggested
    np.testing.assert_allclose(spy.lrs[0], head * 0.5 ** np.arange(learn.n_groups - 1, -1, -1))


def test_diagnose_says_which_epochs_weights_the_model_has():
    rows = [(0.6, 0.40, 0.92, 0.92), (0.3, 0.45, 0.95, 0.92), (0.2, 0.55, 0.96, 0.90)]
    assert "weights of epoch 0, the best one (valid loss 0.4000, valid accuracy 92.0%)" in str(
        diagnose(_history(rows), restored_epoch=0))
    assert "weights of epoch" not in str(diagnose(_history(rows), restored_epoch=2))


def test_lr_find_default_length_frozen_and_unfrozen(learn):
    from easytransfer.train.rates import FROZEN_LR_FIND_IT, UNFROZEN_LR_FIND_IT

    spy = AllGroupLrs()
    learn.add_cb(spy)
    learn.lr_find(stop_div=False)
    assert len(spy.lrs) == len(learn.lr_find_result.lrs) == FROZEN_LR_FIND_IT
    # frozen, on cached features: the learner's optimizer steps the head, every group at the head's rate
    assert {len(group_lrs) for group_lrs in spy.lrs} == {learn.n_groups}
    assert all(len(set(group_lrs)) == 1 for group_lrs in spy.lrs)
    learn.unfreeze()
    spy.lrs.clear()
    result = learn.lr_find(stop_div=False)
    assert len(result.lrs) == len(spy.lrs) == UNFROZEN_LR_FIND_IT == 50
    assert {len(group_lrs) for group_lrs in spy.lrs} == {learn.n_groups}


def test_diagnose_reads_a_probe_row_as_head_only_training():  # defect 6, on a history table
    gap = diagnose(_history([(0.5, 0.6, 0.9, 0.80), (0.1, 0.7, 1.0, 0.75)], phase="logistic"))
    assert gap.verdict == "over-fitting"
    assert not any("Fine-tune less" in a for a in gap.advice)


def _wording(learner_class) -> dict:
    """How a task's learner words `diagnose` (its class attributes, as `TransferLearner.diagnose` passes them)."""
    return dict(mistakes_hint=learner_class.mistakes_hint, augmentation_advice=learner_class.augmentation_advice,
                accuracy_per_image=learner_class.accuracy_per_image)


def test_diagnose_names_each_tasks_own_tools():
    from easytransfer import ClassifierLearner, DetectionLearner, SegmentationLearner

    detection = pd.DataFrame([dict(phase="frozen", epoch=i, train_loss=tl, valid_loss=vl)
                              for i, (tl, vl) in enumerate([(1.0, 0.9), (0.8, 0.7)])])
    text = str(diagnose(detection, n_valid=30, **_wording(DetectionLearner)))
    assert "plot_top_losses() (predicted and true boxes)" in text and "plot_confusion_matrix" not in text
    assert "every score rests on few images" in text and "of accuracy" not in text
    rising = pd.DataFrame([dict(phase="discriminative", epoch=i, train_loss=tl, valid_loss=vl)
                           for i, (tl, vl) in enumerate([(0.6, 0.40), (0.3, 0.45), (0.2, 0.55)])])
    overfit = diagnose(rising, **_wording(SegmentationLearner))
    assert overfit.verdict == "over-fitting" and not any("CutMix" in a or "ImageData" in a for a in overfit.advice)
    assert any("move the masks" in a for a in overfit.advice)
    assert "one image is 3.3% of accuracy" in str(diagnose(detection, n_valid=30))  # a classifier's, the default
    assert str(diagnose(detection, n_valid=30, **_wording(ClassifierLearner))) == str(diagnose(detection, n_valid=30))

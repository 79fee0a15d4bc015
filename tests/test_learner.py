"""Tests of easytransfer/train/learner.py: the recipe every task's learner shares (on a classifier)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from fastai.callback.core import Callback
from helpers import learner_with_data, tiny_learner
from test_checkpoint import InterruptAt
from torch import nn

from easytransfer import (
    DataError,
    EasyTransferError,
    ImageData,
    NoBlockGroupsError,
    discriminative_lrs,
    transfer_learner,
)
from easytransfer.devices import feature_batch_size, resolve_device
from easytransfer.train.callbacks import warmup_cosine
from easytransfer.train.features import FEATURE_BS
from easytransfer.train.history import History, Phase, PhaseKind, plot_history


@pytest.fixture
def learn(image_folder):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)
    return transfer_learner(dls, "test_efficientnet", pretrained=False)


def _trainable_groups(learn):
    return [all(p.requires_grad for p in g) for g in learn.layer_groups.params(learn.model)]


@pytest.mark.parametrize("cache", [False, True])  # without the cache the body runs in training mode each batch
def test_fit_frozen_trains_only_the_head_with_frozen_bn_statistics(learn, cache):
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    head = set(learn.layer_groups.names[-1])
    learn.fit_frozen(1, lr=1e-2, cache=cache)
    after = learn.model.state_dict()
    body_keys = [k for k in before if k not in head]
    assert all(torch.equal(before[k], after[k]) for k in body_keys)  # incl. BN running stats
    assert not all(torch.equal(before[k], after[k]) for k in head)
    assert _trainable_groups(learn) == [False] * (learn.n_groups - 1) + [True]


def test_train_bn_true_is_fastais_behaviour(image_folder):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, train_bn=True)
    bn = next(m for m in learn.model.modules() if isinstance(m, nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    learn.fit_frozen(1)
    assert not torch.equal(stats, bn.running_mean)


def test_unfreeze_opens_all_or_the_last_n_groups(learn):
    n = learn.n_groups
    learn.unfreeze(2)
    assert _trainable_groups(learn) == [False] * (n - 3) + [True] * 3
    learn.unfreeze()
    assert _trainable_groups(learn) == [True] * n
    learn.freeze()
    assert _trainable_groups(learn) == [False] * (n - 1) + [True]
    with pytest.raises(ValueError, match="between 0 and"):
        learn.unfreeze(n)


def test_discriminative_rates_follow_the_formula():
    np.testing.assert_allclose(discriminative_lrs(1e-3, 4, decay=0.1), [1e-6, 1e-5, 1e-4, 1e-3])
    np.testing.assert_allclose(discriminative_lrs(slice(1e-5, 1e-3), 3), [1e-5, 1e-4, 1e-3])
    np.testing.assert_allclose(discriminative_lrs([1, 2, 3], 3), [1, 2, 3])
    with pytest.raises(ValueError):
        discriminative_lrs([1, 2], 3)


def test_fit_discriminative_gives_each_group_its_rate_and_records_history(learn):
    learn.fit_frozen(1)
    learn.unfreeze()
    learn.fit_discriminative(2, lr_max=1e-3, decay=0.5, warmup_pct=0.25)
    hist = learn.history
    assert hist["phase"].tolist() == ["frozen", "discriminative", "discriminative"]
    assert {"train_loss", "valid_loss", "accuracy", "seconds"} <= set(hist.columns)
    peak = hist[hist.phase == "discriminative"][[f"lr_{i}" for i in range(learn.n_groups)]].max().to_numpy()
    expected = 1e-3 * 0.5 ** np.arange(learn.n_groups - 1, -1, -1)
    np.testing.assert_allclose(peak, expected, rtol=0.05)
    head_lrs = np.array(learn.recorder.hps["lr"])  # the head's rate at each step
    steps = len(head_lrs)
    schedule = warmup_cosine(expected, warmup_pct=0.25)
    np.testing.assert_allclose(head_lrs, [schedule(i / steps)[-1] for i in range(steps)])
    assert head_lrs[0] == pytest.approx(1e-3 / 100)  # linear warm-up starts near zero
    assert schedule(1.0)[-1] == pytest.approx(1e-3 / 1e4)  # and the cosine ends near zero


def test_interpret_and_export(learn, tmp_path):
    import json

    learn.fit_frozen(1)
    interp = learn.interpret()
    assert interp.probs.shape == (len(learn.dls.valid_ds), 2)
    np.testing.assert_allclose(interp.probs.sum(1), 1, rtol=1e-5)
    assert interp.plot_confusion_matrix().axes
    out = learn.export(tmp_path / "bundle")
    config = json.loads((out / "easytransfer.json").read_text())
    assert config["classes"] == ["cat", "dog"] and config["arch"] == "test_efficientnet"
    assert (out / "model.safetensors").stat().st_size > 0


@pytest.mark.parametrize("freeze_bn_stats", [True, False])
def test_bn_statistics_policy_after_unfreezing(image_folder, freeze_bn_stats):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, freeze_bn_stats=freeze_bn_stats)
    bn = next(m for m in learn.model.modules() if isinstance(m, nn.BatchNorm2d))
    stats, weight = bn.running_mean.clone(), bn.weight.detach().clone()
    learn.unfreeze()
    learn.fit_discriminative(1, lr_max=1e-2)
    assert not torch.equal(weight, bn.weight.detach())  # BN weights train once unfrozen
    assert torch.equal(stats, bn.running_mean) == freeze_bn_stats


# ------------------------------------------------------------------------------------------------ devices


@pytest.mark.parametrize("device", [None, "cpu", torch.device("cpu")])
def test_the_learner_owns_one_device_and_everything_is_on_it(image_folder, device):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, device=device)
    expected = torch.device("cuda") if device is None and torch.cuda.is_available() else torch.device("cpu")
    assert isinstance(learn.device, torch.device) and learn.device == expected
    assert all(p.device == learn.device for p in learn.model.parameters())
    assert learn.dls.device == learn.device
    learn.fit_frozen(1)
    xb, yb = learn.feature_cache.dataloaders(learn.dls, learn.device).valid.one_batch()
    assert xb.device == yb.device == learn.device


def test_the_datas_own_device_is_respected(image_folder, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # as on a GPU machine
    assert resolve_device(None) == torch.device("cuda")
    assert resolve_device(None, data_device=torch.device("cpu")) == torch.device("cpu")
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64, device=torch.device("cpu"))
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)  # would fail if it moved to CUDA
    assert learn.device == torch.device("cpu") and learn.dls.device == torch.device("cpu")


@pytest.mark.parametrize("bad", ["nonsense", "cuda:x", "meta"])
def test_an_unknown_device_is_a_clear_error(image_folder, bad):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=64)
    with pytest.raises(ValueError, match=rf"device='{bad}'.*'cpu', 'cuda'"):
        transfer_learner(dls, "test_efficientnet", pretrained=False, device=bad)


def test_cuda_without_cuda_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device='cuda' but torch sees no CUDA device"):
        resolve_device("cuda")


def test_feature_batch_size_per_device():
    assert feature_batch_size(torch.device("cpu")) == FEATURE_BS == 8
    assert feature_batch_size(torch.device("cuda")) > 8


# -------------------------------------------------------------------------------------------- typed history


def test_fit_history_is_typed_and_history_is_the_same_table(learn):
    learn.fit_frozen(1)
    learn.fit_frozen(1, method="logistic")
    learn.unfreeze(1)
    learn.fit_discriminative(1)
    learn.fit_gradual(epochs_per_stage=1, max_unfrozen=1)
    kinds = [(r.phase.kind, r.phase.stage) for r in learn.fit_history]
    assert kinds == [(PhaseKind.FROZEN, None), (PhaseKind.PROBE, None), (PhaseKind.DISCRIMINATIVE, None),
                     (PhaseKind.GRADUAL, 0), (PhaseKind.GRADUAL, 1)]
    assert [r.phase.trains_body for r in learn.fit_history] == [False, False, True, False, True]
    assert learn.fit_history.metric_names == ["accuracy"]
    probe = learn.fit_history[1]
    assert "C" in probe.extras and "C" not in probe.metrics and probe.lrs == ()
    table = learn.history
    assert table["phase"].tolist() == ["frozen", "logistic", "discriminative", "stage 0", "stage 1"]
    assert list(table.columns) == ["phase", "epoch", "train_loss", "valid_loss", "accuracy", "train_accuracy"] + [
        f"lr_{i}" for i in range(learn.n_groups)] + ["seconds", "C"]
    assert History.from_frame(table).to_frame().equals(table)  # a saved table reads back to the same records
    # the typed history knows which epochs trained on cached features; the table does not record it
    for source, batches in ((learn.fit_history, "augmented batches; cached features when frozen"),
                            (table, "augmented batches")):
        assert [line.get_label() for line in plot_history(source).axes[1].get_lines()] == [
            f"train accuracy ({batches})", "valid accuracy"]


def test_a_frozen_fit_after_fine_tuning_leaves_the_body_alone(learn):
    learn.unfreeze()
    learn.fit_discriminative(1)  # leaves zero gradients on every parameter
    learn.freeze()
    body = [p for g in learn.layer_groups.params(learn.model)[:-1] for p in g]
    before = [p.detach().clone() for p in body]
    learn.fit_frozen(1, cache=False, lr=1e-2)  # weight decay must not reach a frozen weight
    assert all(torch.equal(a, p) for a, p in zip(before, body))


# ------------------------------------------------------------------------------------------------ fine_tune


def _state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _spy_on_stages(learn, monkeypatch, corrupt_fine_tuned: bool = False) -> dict:
    """Record the model's state after each stage of `fine_tune`; optionally ruin the fine-tuned head."""
    states = {}
    fit_frozen, fit_discriminative = learn.fit_frozen, learn.fit_discriminative

    def frozen(*args, **kwargs):
        result = fit_frozen(*args, **kwargs)
        states["frozen"] = _state(learn.model)
        return result

    def discriminative(*args, **kwargs):
        result = fit_discriminative(*args, **kwargs)
        if corrupt_fine_tuned:  # every image now gets class 0 with a logit margin of 100: a huge valid loss
            head = learn.model.get_classifier()
            with torch.no_grad():
                head.weight.zero_()
                head.bias.copy_(torch.tensor([100.0, 0.0]))
        states["fine-tuned"] = _state(learn.model)
        return result

    monkeypatch.setattr(learn, "fit_frozen", frozen)
    monkeypatch.setattr(learn, "fit_discriminative", discriminative)
    return states


def test_fine_tune_keeps_the_frozen_stage_when_fine_tuning_made_it_worse(learn, monkeypatch, capsys):
    states = _spy_on_stages(learn, monkeypatch, corrupt_fine_tuned=True)
    assert learn.fine_tune(1, frozen_epochs=1, lr=1e-2) is learn
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("fine_tune kept the frozen-stage weights (valid_loss ") and "after fine-tuning" in line
    assert _same_state(_state(learn.model), states["frozen"])  # parameters and BN buffers, all of them
    assert not _same_state(states["fine-tuned"], states["frozen"])
    choice = learn.fine_tune_choice
    assert learn.fine_tune_kept == "frozen" and choice.monitor == "valid_loss"
    assert choice.fine_tuned_value > 10 > choice.frozen_value
    assert learn.best_epoch == 0  # the frozen stage's row, not the fine-tuning one
    text = str(learn.diagnose())
    assert "fine_tune kept the frozen-stage weights" in text and "learn.fine_tune(5, lr_max=1e-4)" in text
    learn.fit_frozen(1)  # a later fit changes the weights: the choice no longer describes them
    assert learn.fine_tune_kept is None and "fine_tune kept" not in str(learn.diagnose())


def test_fine_tune_keeps_the_fine_tuned_weights_when_better_and_records_both_phases(learn, monkeypatch, capsys):
    states = _spy_on_stages(learn, monkeypatch)
    learn.fine_tune(2, frozen_epochs=1, lr=1e-6, lr_max=1e-2, patience=None)  # a head that barely trained
    choice = learn.fine_tune_choice
    assert choice.fine_tuned_value < choice.frozen_value  # the premise: fine-tuning helped
    assert learn.fine_tune_kept == "fine-tuned"
    assert _same_state(_state(learn.model), states["fine-tuned"])
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("fine_tune kept the fine-tuned weights")
    assert learn.history["phase"].tolist() == ["frozen", "discriminative", "discriminative"]
    assert [r.phase.kind for r in learn.fit_history] == [PhaseKind.FROZEN] + [PhaseKind.DISCRIMINATIVE] * 2
    assert _trainable_groups(learn) == [True] * learn.n_groups
    assert "fine_tune kept" not in str(learn.diagnose())


@pytest.mark.parametrize(("monitor", "kept"), [("valid_loss", "fine-tuned"), ("accuracy", "frozen")])
def test_fine_tune_compares_losses_lower_and_metrics_higher(learn, monkeypatch, capsys, monitor, kept):
    # the fine-tuned weights have the lower loss but also the lower accuracy: the monitor decides
    scripted = iter([[0.5, 0.9], [0.3, 0.6]])  # learn.validate() after the frozen stage, then after fine-tuning
    monkeypatch.setattr(learn, "validate", lambda *args, **kwargs: next(scripted))
    learn.fine_tune(1, frozen_epochs=1, monitor=monitor)
    assert learn.fine_tune_kept == kept
    line = capsys.readouterr().err.strip().splitlines()[-1]
    expected = {"valid_loss": "(valid_loss 0.3000 < 0.5000 after the frozen stage)",
                "accuracy": "(accuracy 0.9000 after the frozen stage > 0.6000 after fine-tuning)"}[monitor]
    assert line.endswith(expected)


def test_fine_tune_stages_may_be_skipped_and_arguments_are_checked(learn):
    learn.fine_tune(0, frozen_epochs=1)  # the head only: nothing to choose
    assert learn.history["phase"].tolist() == ["frozen"] and learn.fine_tune_kept is None
    assert _trainable_groups(learn) == [False] * (learn.n_groups - 1) + [True]
    learn.fine_tune(1, frozen_epochs=0)
    assert learn.history["phase"].tolist() == ["frozen", "discriminative"] and learn.fine_tune_kept is None
    with pytest.raises(ValueError, match="not both 0"):
        learn.fine_tune(0, frozen_epochs=0)
    with pytest.raises(ValueError, match="validation figure"):
        learn.fine_tune(1, monitor="train_loss")
    with pytest.raises(TypeError, match="base_lr"):
        learn.fine_tune(1, 2e-3)  # fastai's fine_tune(epochs, base_lr)


# ---------------------------------------------------------------------------------------- never made worse


class _RuinHeadBeforeValidation(Callback):
    """Every epoch's validation sees class 0 with a logit margin of 100: a huge valid loss."""

    def before_validate(self):
        head = self.learn.model.get_classifier()
        with torch.no_grad():
            head.weight.zero_()
            head.bias.copy_(torch.tensor([100.0, 0.0]))


def test_a_fit_keeps_the_weights_it_started_from_when_no_epoch_beats_them(learn, capsys):
    learn.fit_frozen(1, lr=1e-2)
    start = _state(learn.model)
    learn.unfreeze()
    learn.fit_discriminative(2, cbs=[_RuinHeadBeforeValidation()], patience=None)
    assert _same_state(_state(learn.model), start)
    assert "No epoch of this fit beat the weights it started from (valid_loss " in capsys.readouterr().err
    assert learn.best_epoch == 0 and len(learn.fit_history) == 3  # the frozen epoch, row 0 of the history


def test_library_messages_go_to_the_easytransfer_logger_and_can_be_silenced(learn, capsys):
    import logging

    learn.fit_frozen(1, lr=1e-2)
    learn.unfreeze()
    learn.fit_discriminative(1, cbs=[_RuinHeadBeforeValidation()], patience=None)  # keeps its start: says so
    out = capsys.readouterr()
    assert "No epoch of this fit beat" in out.err and "No epoch of this fit beat" not in out.out
    logging.getLogger("easytransfer").setLevel(logging.WARNING)
    try:
        learn.fit_discriminative(1, cbs=[_RuinHeadBeforeValidation()], patience=None)
    finally:
        logging.getLogger("easytransfer").setLevel(logging.INFO)
    assert "No epoch of this fit beat" not in capsys.readouterr().err


def test_a_first_fit_or_a_better_fit_keeps_its_own_best_epoch(learn, capsys):
    learn.fit_frozen(1, lr=1e-6)  # a head that barely trained: fine-tuning beats it
    learn.unfreeze()
    learn.fit_discriminative(2, lr_max=1e-2, patience=None)
    assert learn.best_epoch in (1, 2)
    assert "No epoch of this fit beat" not in capsys.readouterr().err


def test_a_fit_that_would_run_no_batch_is_an_error(cats):
    learn = tiny_learner(cats)
    learn.dls.train.bs = 64  # more than the training images: fastai drops the only, incomplete batch
    with pytest.raises(DataError, match="no batch"):
        learn.fit_frozen(1)
    assert len(learn.fit_history) == 0


def test_bad_learning_rates_fail_before_any_epoch(bundle, image_folder):
    learn = transfer_learner(ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=2, size=32),
                             "test_efficientnet", pretrained=False)
    with pytest.raises(ValueError, match="lr_max must be a positive number.*got 'abc'"):
        learn.fine_tune(1, 1, lr_max="abc")
    for lr in (0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="must be a positive number"):
            learn.fit_frozen(1, lr=lr)
    with pytest.raises(ValueError, match="must be a positive number"):
        learn.fit_discriminative(1, lr_max=slice(0, 1e-3))
    assert len(learn.history) == 0


def test_lost_cache_and_lr_find_feature_pass_are_said(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", per_class=4)
    learn = learner_with_data(folder, aug="strong")
    learn.fit_frozen(1)
    assert "because MixUp / CutMix mixes the images" in capsys.readouterr().err
    learn = learner_with_data(folder, train_bn=True)
    learn.fit_frozen(1)
    assert "because BatchNorm layers train (train_bn=True)" in capsys.readouterr().err
    learn = learner_with_data(folder)
    learn.lr_find(num_it=10)
    assert "lr_find: computing the frozen body's features" in capsys.readouterr().err
    learn.lr_find(num_it=10)  # the features are cached: nothing to say
    assert "computing" not in capsys.readouterr().err


def test_learner_repr_is_readable(tmp_path):
    learn = learner_with_data(make_image_folder(tmp_path / "images", per_class=4))
    assert repr(learn).startswith("ClassifierLearner(test_efficientnet, 2 classes, ")
    assert " at 0x" not in repr(learn)


def test_evaluate_then_interpret_on_the_same_folder_is_one_pass(tmp_path):
    learn = learner_with_data(make_image_folder(tmp_path / "images", per_class=4))
    test = make_image_folder(tmp_path / "test", per_class=2, seed=3)
    calls = []
    learn.get_preds = lambda *a, _orig=learn.get_preds, **k: calls.append(1) or _orig(*a, **k)
    scores = learn.evaluate(str(test))
    interp = learn.interpret(str(test))
    assert len(calls) == 1 and math.isclose(interp.accuracy, scores["accuracy"])
    learn.fit_frozen(1)  # new weights: predicted again
    learn.interpret(str(test))
    assert len(calls) >= 2


class GrabRates(Callback):
    """Each parameter's learning rate at the first training batch (warmup_pct=0: the peak rates)."""

    order = 60

    def after_batch(self):
        if self.training and not hasattr(self, "rates"):
            names = {id(p): n for n, p in self.learn.model.named_parameters()}
            opt = self.learn.opt
            self.rates = {names[id(p)]: h["lr"] for pg, h in zip(opt.param_lists, opt.hypers) for p in pg}
            self.n_param_groups = len(opt.param_lists)


def _expected_rate(name: str, lr_max: float, d: float, n_blocks: int) -> float:
    """``lr_max * d**(depth from the head)``: head 0, the last block (and the final norm) 1 ... the stem n+1."""
    if name.startswith("head"):
        return lr_max
    if name.startswith("blocks."):
        return lr_max * d ** (n_blocks - int(name.split(".")[1]))
    if name.startswith("norm."):
        return lr_max * d
    return lr_max * d ** (n_blocks + 1)  # cls_token, reg_token, pos_embed, patch_embed


def test_layer_decay_gives_each_block_its_rate_and_frozen_groups_stay_frozen(towers_folder, tiny_towers):
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2, size=28)
    learn = transfer_learner(dls, "vit_small_patch14_reg4_dinov2", pretrained=False, n_stages=2)
    coarse = learn.layer_groups
    learn.unfreeze(1)  # the stem bucket (tokens, block 0) stays frozen
    frozen = {n for n, p in learn.model.named_parameters() if not p.requires_grad}
    assert "reg_token" in frozen and "blocks.0.attn.qkv.weight" in frozen and "blocks.1.attn.qkv.weight" not in frozen
    before = {n: p.detach().clone() for n, p in learn.model.named_parameters()}
    grab = GrabRates()
    learn.fit_discriminative(1, lr_max=1e-3, layer_decay=0.5, warmup_pct=0.0, restore_best=False, cbs=[grab])

    assert grab.n_param_groups == 2 + 2  # stem, block 0, block 1 (+ final norm), head
    for name, rate in grab.rates.items():
        assert rate == pytest.approx(_expected_rate(name, 1e-3, 0.5, 2)), name
    after = dict(learn.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) and not after[n].requires_grad for n in frozen)
    assert not torch.equal(before["blocks.1.attn.qkv.weight"], after["blocks.1.attn.qkv.weight"])

    row = learn.fit_history[-1]
    assert row.phase == Phase(PhaseKind.DISCRIMINATIVE, layer_decay=0.5) and row.phase.name == "layer decay 0.5"
    assert row.lrs == pytest.approx((1e-3 / 8, 1e-3 / 4, 1e-3 / 2, 1e-3))  # one peak rate per block, stem first
    # afterwards: the usual layer groups, in the learner and in the optimizer
    assert learn.layer_groups is coarse and len(learn.opt.param_lists) == len(coarse)
    assert [[id(p) for p in g] for g in learn.opt.param_lists] == [[id(p) for p in g] for g in coarse.params(learn.model)]
    rates = [h["lr"] for h in learn.opt.hypers]  # each group's top block's rate at the end of the fit
    assert rates == sorted(rates) and len(set(rates)) == len(rates)
    learn.fit_discriminative(1, lr_max=1e-3, decay=0.1, restore_best=False)
    assert learn.fit_history[-1].phase.name == "discriminative" and len(learn.fit_history[-1].lrs) == len(coarse)


def test_layer_decay_without_block_groups_names_decay(towers_folder):
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2, size=32)
    learn = transfer_learner(dls, "tv:mobilenet_v3_small", pretrained=False)
    groups = learn.layer_groups
    with pytest.raises(NoBlockGroupsError, match="decay="):
        learn.fit_discriminative(1, layer_decay=0.75)
    assert learn.layer_groups is groups


def test_layer_decay_arguments_are_checked(towers_folder):
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2, size=32)
    learn = transfer_learner(dls, "test_vit", pretrained=False)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        learn.fit_discriminative(1, layer_decay=1.5)
    with pytest.raises(ValueError, match="head's rate"):
        learn.fit_discriminative(1, lr_max=slice(1e-5, 1e-3), layer_decay=0.75)


@pytest.mark.slow
def test_layer_decay_with_lr_find_sweeps_the_blocks(towers_folder):
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2, size=32)
    learn = transfer_learner(dls, "test_vit", pretrained=False)
    learn.unfreeze()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.fit_discriminative(1, lr_max="find", layer_decay=0.75, restore_best=False)
    assert len(learn.fit_history[-1].lrs) == 6 + 2 and len(learn.opt.param_lists) == learn.n_groups


def test_an_interrupted_layer_decay_fit_leaves_the_layer_groups_and_resumes(towers_folder, tmp_path):
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2, size=32, aug="none")
    learn = transfer_learner(dls, "test_vit", pretrained=False, checkpoint_dir=tmp_path / "ckpt")
    coarse = learn.layer_groups
    learn.unfreeze()
    with pytest.raises(KeyboardInterrupt):
        learn.fit_discriminative(2, lr_max=1e-3, layer_decay=0.75, patience=None, cbs=[InterruptAt(1)])
    assert learn.layer_groups is coarse and len(learn.opt.param_lists) == len(coarse)
    with pytest.raises(EasyTransferError, match="of another fit"):  # the checkpoint is of a layer-decay fit
        learn.fit_discriminative(2, lr_max=1e-3, patience=None, resume=True)
    learn.fit_discriminative(2, lr_max=1e-3, layer_decay=0.75, patience=None, resume=True)
    assert learn.history["epoch"].tolist() == [0, 1] and set(learn.history["phase"]) == {"layer decay 0.75"}


def test_no_class_in_the_learners_is_over_400_lines():
    import ast
    import inspect

    import easytransfer.tasks.classification.learner as classification
    import easytransfer.tasks.detection.learner as detection
    import easytransfer.tasks.segmentation.learner as segmentation
    import easytransfer.train.layer_group_learner as layer_group_learner
    import easytransfer.train.learner as recipe

    for module in (recipe, layer_group_learner, classification, segmentation, detection):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.ClassDef):
                assert node.end_lineno - node.lineno < 400, f"{module.__name__}.{node.name}"


def test_the_recipe_base_is_abstract_until_a_task_says_what_its_bundle_records():
    import inspect

    from easytransfer import ClassifierLearner, DetectionLearner, SegmentationLearner, TransferLearner

    assert inspect.isabstract(TransferLearner)
    assert TransferLearner.__abstractmethods__ == {"preprocessing", "task_config"}
    assert not any(inspect.isabstract(cls) for cls in (ClassifierLearner, SegmentationLearner, DetectionLearner))

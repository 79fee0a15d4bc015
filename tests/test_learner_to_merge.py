"""Tests of easytransfer/train/learner.py, moved out of history-named files; append them to tests/test_learner.py once the branches changing that file now have landed."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import timm
import torch
from conftest import make_image_folder
from fastai.callback.core import Callback
from test_checkpoint import InterruptAt

from easytransfer import (
    DataError,
    EasyTransferError,
    ImageData,
    NoBlockGroupsError,
    transfer_learner,
)
from easytransfer.train.history import Phase, PhaseKind


def _dls(folder, **kwargs):
    kwargs = {"valid_pct": 0.25, "seed": 0, "bs": 4, "size": 32, "aug": "none", **kwargs}
    return ImageData.from_folder(folder, **kwargs)


def _learner(folder, **kwargs):
    return transfer_learner(_dls(folder), "test_efficientnet", pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cats") / "images", classes=("cat", "dog"), per_class=4, size=32)


def test_a_fit_that_would_run_no_batch_is_an_error(cats):
    learn = _learner(cats)
    learn.dls.train.bs = 64  # more than the training images: fastai drops the only, incomplete batch
    with pytest.raises(DataError, match="no batch"):
        learn.fit_frozen(1)
    assert len(learn.fit_history) == 0


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An untrained tiny classifier's bundle (these tests are about paths and exit codes, not accuracy)."""
    root = make_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=3, size=16)
    learn = transfer_learner(ImageData.from_folder(root, valid_pct=0.34, seed=0, bs=2, size=32), "test_efficientnet",
                             pretrained=False)
    return learn.export(tmp_path_factory.mktemp("bundle") / "model")


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


TINY = dict(bs=4, size=32)
TINY_TOWER = dict(depth=2, embed_dim=32, num_heads=2)


def _learner_with_data(folder, **kwargs):
    """A tiny learner; ``aug`` and ``test_pct`` go to the data."""
    data = {k: kwargs.pop(k) for k in ("aug", "test_pct") if k in kwargs}
    dls = ImageData.from_folder(folder, seed=0, **TINY, **data)
    return transfer_learner(dls, "test_efficientnet", pretrained=False, **kwargs)


def test_lost_cache_and_lr_find_feature_pass_are_said(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", per_class=4)
    learn = _learner_with_data(folder, aug="strong")
    learn.fit_frozen(1)
    assert "because MixUp / CutMix mixes the images" in capsys.readouterr().err
    learn = _learner_with_data(folder, train_bn=True)
    learn.fit_frozen(1)
    assert "because BatchNorm layers train (train_bn=True)" in capsys.readouterr().err
    learn = _learner_with_data(folder)
    learn.lr_find(num_it=10)
    assert "lr_find: computing the frozen body's features" in capsys.readouterr().err
    learn.lr_find(num_it=10)  # the features are cached: nothing to say
    assert "computing" not in capsys.readouterr().err


def test_learner_repr_is_readable(tmp_path):
    learn = _learner_with_data(make_image_folder(tmp_path / "images", per_class=4))
    assert repr(learn).startswith("ClassifierLearner(test_efficientnet, 2 classes, ")
    assert " at 0x" not in repr(learn)


def test_evaluate_then_interpret_on_the_same_folder_is_one_pass(tmp_path):
    learn = _learner_with_data(make_image_folder(tmp_path / "images", per_class=4))
    test = make_image_folder(tmp_path / "test", per_class=2, seed=3)
    calls = []
    learn.get_preds = lambda *a, _orig=learn.get_preds, **k: calls.append(1) or _orig(*a, **k)
    scores = learn.evaluate(str(test))
    interp = learn.interpret(str(test))
    assert len(calls) == 1 and math.isclose(interp.accuracy, scores["accuracy"])
    learn.fit_frozen(1)  # new weights: predicted again
    learn.interpret(str(test))
    assert len(calls) >= 2


@pytest.fixture
def tiny_towers(monkeypatch):
    """Every timm model built in the test is the tiny version of its builder."""
    real = timm.create_model

    def create_tiny(name, *args, **kwargs):
        return real(name, *args, **{**kwargs, **TINY_TOWER})

    monkeypatch.setattr(timm, "create_model", create_tiny)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("towers"), per_class=3, size=40)


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


def test_layer_decay_gives_each_block_its_rate_and_frozen_groups_stay_frozen(folder, tiny_towers):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2, size=28)
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


def test_layer_decay_without_block_groups_names_decay(folder):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2, size=32)
    learn = transfer_learner(dls, "tv:mobilenet_v3_small", pretrained=False)
    groups = learn.layer_groups
    with pytest.raises(NoBlockGroupsError, match="decay="):
        learn.fit_discriminative(1, layer_decay=0.75)
    assert learn.layer_groups is groups


def test_layer_decay_arguments_are_checked(folder):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2, size=32)
    learn = transfer_learner(dls, "test_vit", pretrained=False)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        learn.fit_discriminative(1, layer_decay=1.5)
    with pytest.raises(ValueError, match="head's rate"):
        learn.fit_discriminative(1, lr_max=slice(1e-5, 1e-3), layer_decay=0.75)


@pytest.mark.slow
def test_layer_decay_with_lr_find_sweeps_the_blocks(folder):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2, size=32)
    learn = transfer_learner(dls, "test_vit", pretrained=False)
    learn.unfreeze()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn.fit_discriminative(1, lr_max="find", layer_decay=0.75, restore_best=False)
    assert len(learn.fit_history[-1].lrs) == 6 + 2 and len(learn.opt.param_lists) == learn.n_groups


def test_an_interrupted_layer_decay_fit_leaves_the_layer_groups_and_resumes(folder, tmp_path):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2, size=32, aug="none")
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

"""Cached-feature feature extraction, the frozen LR finder on features, and the logistic-regression probe."""

import gc
import os

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
from helpers import DEAD_PID, tiny_learner

import easytransfer.train.features as features
from easytransfer import ImageData, transfer_learner
from easytransfer.files import is_temporary
from easytransfer.tasks.classification.probe import PROBE_CS
from easytransfer.train.features import feature_cache_dir
from easytransfer.train.history import PhaseKind


class ForwardCounter:
    """Counts images pushed through the model's stem (i.e. through the body)."""

    def __init__(self, learn):
        self.images = 0
        learn.model.conv_stem.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.images += len(args[0])


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "images", per_class=8)


def _learner(folder, aug="none", **kwargs):
    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, size=48, aug=aug)
    set_seed(0)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, **kwargs)
    learn.dls.train.shuffle = False  # the same order on both paths
    return learn


def test_cached_fit_matches_the_uncached_fit(folder):
    a, b = _learner(folder), _learner(folder)
    b.model.load_state_dict(a.model.state_dict())
    set_seed(1)
    a.fit_frozen(1, cache=False, restore_best=False)
    set_seed(1)
    b.fit_frozen(1, restore_best=False)
    assert b.feature_cache is not None and a.feature_cache is None
    head_a, head_b = a.model.get_classifier(), b.model.get_classifier()
    torch.testing.assert_close(head_a.weight, head_b.weight, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(head_a.bias, head_b.bias, rtol=1e-5, atol=1e-6)
    assert not torch.equal(head_a.weight, _learner(folder).model.get_classifier().weight)  # it did train
    np.testing.assert_allclose(a.history["valid_loss"], b.history["valid_loss"], rtol=1e-5)
    assert list(a.history.columns) == list(b.history.columns)


def test_the_body_sees_each_image_once_and_the_cache_is_reused_until_something_changes(folder, tmp_path):
    learn = _learner(folder)
    counter = ForwardCounter(learn)
    n_train, n_valid = len(learn.dls.train_ds), len(learn.dls.valid_ds)
    learn.fit_frozen(5)
    assert counter.images == n_train + n_valid  # one look at the data for five epochs
    learn.fit_frozen(2)
    learn.lr_find(num_it=20)
    assert counter.images == n_train + n_valid  # reused by the next fit and by lr_find
    learn.unfreeze(1)
    learn.fit_discriminative(1)  # the body's weights change ...
    seen = counter.images
    learn.fit_frozen(1)
    assert counter.images - seen == n_train + n_valid  # ... so the features are computed again
    key = learn.feature_cache.key
    os.utime(learn.dls.recipe.items["path"][0], ns=(1, 1))  # a file changes
    learn.fit_frozen(1)
    assert learn.feature_cache.key != key


def test_cache_false_pushes_every_epoch_through_the_body(folder):
    learn = _learner(folder)
    counter = ForwardCounter(learn)
    learn.fit_frozen(2, cache=False)
    assert counter.images >= 2 * len(learn.dls.valid_ds) + len(learn.dls.train) * learn.dls.train.bs


def test_augmented_views(folder):
    learn = _learner(folder, aug="light")
    learn.fit_frozen(1, cache_views=3)
    cache = learn.feature_cache
    n = len(learn.dls.train_ds)
    assert cache.train.shape[:2] == (3, n)
    plain = _learner(folder, aug="light")
    plain.model.load_state_dict(learn.model.state_dict())
    plain.fit_frozen(1, cache_views=1)
    np.testing.assert_allclose(cache.train[0], plain.feature_cache.train[0], rtol=1e-5, atol=1e-6)
    assert not np.allclose(cache.train[1], cache.train[0])  # augmented views differ from the plain one
    # ... but each stays closest to its own image's plain view (the classes differ in colour)
    for v in (1, 2):
        dist = ((cache.train[v][:, None] - cache.train[0][None]) ** 2).sum(-1)
        same_class = cache.train_targets.numpy()[dist.argmin(1)] == cache.train_targets.numpy()
        assert same_class.all()
    with pytest.raises(ValueError, match="cache_views"):
        learn.fit_frozen(1, cache_views=0)


def test_large_caches_are_memory_mapped_files(folder, monkeypatch):
    monkeypatch.setattr(features, "CACHE_MEMORY_LIMIT", 0)
    learn = _learner(folder)
    learn.fit_frozen(2)
    path = learn.feature_cache.path
    assert path is not None and os.path.getsize(path) >= learn.feature_cache.train.nbytes
    assert isinstance(learn.feature_cache.train, np.memmap)
    assert len(learn.history) == 2 and np.isfinite(learn.history["valid_loss"]).all()
    learn.feature_cache = None
    gc.collect()
    assert not os.path.exists(path)  # removed with the cache


def test_no_cache_when_batchnorm_trains_or_images_are_mixed(folder):
    assert _learner(folder, train_bn=True)._cache_obstacle() == "BatchNorm layers train (train_bn=True)"
    assert "MixUp" in _learner(folder, mix="mixup")._cache_obstacle()
    learn = _learner(folder, train_bn=True)
    learn.fit_frozen(1)
    assert learn.feature_cache is None and len(learn.history) == 1
    with pytest.raises(ValueError, match="needs cached features: BatchNorm layers train"):
        learn.fit_frozen(1, method="logistic")


def test_logistic_probe_is_written_into_the_head(folder):
    learn = _learner(folder)
    before = learn.model.get_classifier().weight.detach().clone()
    learn.fit_frozen(1, method="logistic")
    row = learn.history.iloc[-1]
    assert row["phase"] == "logistic" and row["C"] in PROBE_CS
    assert not torch.equal(before, learn.model.get_classifier().weight)
    loss, acc = learn.validate()  # the whole model on the validation images agrees with the probe's figures
    assert loss == pytest.approx(row["valid_loss"], rel=1e-4, abs=1e-5) and acc == pytest.approx(row["accuracy"])
    assert row["accuracy"] == 1.0  # the classes differ in mean colour: linearly separable


def test_logistic_probe_needs_a_linear_head(folder):
    learn = _learner(folder, head="mlp")
    with pytest.raises(ValueError, match="needs a linear head"):
        learn.fit_frozen(1, method="logistic")


def test_the_probes_C_is_not_plotted_as_a_validation_metric(folder):  # defect 5
    learn = _learner(folder)
    learn.fit_frozen(1, method="logistic")
    labels = [line.get_label() for line in learn.plot_history().axes[1].get_lines()]
    assert "valid accuracy" in labels and "valid C" not in labels
    assert learn.history.iloc[-1]["C"] in PROBE_CS  # still in the table, as an extra


def test_a_logistic_probe_is_diagnosed_as_feature_extraction_not_fine_tuning(folder):  # defect 6
    learn = _learner(folder)
    learn.fit_frozen(1, method="logistic")
    advice = learn.diagnose().advice
    assert not any("Fine-tune less" in a or "Unfreeze more" in a for a in advice)
    assert any("fit_discriminative" in a for a in advice)  # the next step after a probe is fine-tuning


class SeesTheOuterLearner(Callback):
    """What a user's callback sees during a fit on cached features, at each batch and epoch event."""

    def __init__(self, learn):
        self.outer, self.n_params = learn, sum(p.numel() for p in learn.model.parameters())
        self.seen, self.epochs, self.batches = [], [], 0

    def _look(self, event):
        model = self.learn.model
        groups = self.learn.layer_groups.params(model)  # works: the model has every group
        self.seen.append((event, self.learn is self.outer, model is self.outer.model,
                          sum(p.numel() for p in model.parameters()) == self.n_params,
                          len(groups) == self.outer.n_groups, self.learn.opt is self.outer.opt))

    def before_batch(self):
        self._look("before_batch")
        if self.training:
            self.batches += 1
            assert self.learn.xb[0].ndim == 2 and self.learn.xb[0].device == self.outer.device  # features
            assert 0 <= self.iter < self.n_iter and self.n_epoch == 3

    def after_batch(self):
        self._look("after_batch")
        assert self.learn.pred.shape == (len(self.learn.yb[0]), 2) and self.learn.loss is not None

    def after_epoch(self):
        self._look("after_epoch")
        self.epochs.append(self.epoch)


def test_callbacks_of_a_cached_fit_see_the_whole_model_and_the_loop_state(folder):
    learn = _learner(folder)
    counter = ForwardCounter(learn)
    spy = SeesTheOuterLearner(learn)
    learn.fit_frozen(3, patience=None, cbs=[spy])
    assert counter.images == len(learn.dls.train_ds) + len(learn.dls.valid_ds)  # it did run on cached features
    assert spy.epochs == [0, 1, 2]
    assert spy.batches == 3 * len(learn.dls.train)
    assert {event for event, *_ in spy.seen} == {"before_batch", "after_batch", "after_epoch"}
    assert all(all(checks) for _, *checks in spy.seen)
    assert learn.recorder.values and len(learn.recorder.values) == 3  # the learner's Recorder recorded the fit
    assert learn.xb == (None,) and learn.dl is None  # no batch of the fit left behind


def test_the_learners_attributes_are_never_swapped_during_cached_fits_lr_find_and_the_probe(folder):
    learn = _learner(folder)
    model, dls, opt, splitter = learn.model, learn.dls, learn.opt, learn.splitter

    class Check(Callback):
        def before_batch(self):
            assert (learn.model, learn.dls, learn.splitter) == (model, dls, splitter) and learn.opt is opt

    learn.add_cb(Check())
    learn.fit_frozen(1)
    learn.lr_find(num_it=10)
    learn.fit_frozen(1, method="logistic")
    learn.fit_gradual(epochs_per_stage=1, max_unfrozen=0)
    assert (learn.model, learn.dls, learn.splitter) == (model, dls, splitter) and learn.opt is opt
    assert [r.phase.kind for r in learn.fit_history] == [PhaseKind.FROZEN, PhaseKind.PROBE, PhaseKind.GRADUAL]


def test_the_head_and_the_cached_batches_are_on_the_learners_device(folder):
    learn = _learner(folder, device="cpu")
    assert learn.device == torch.device("cpu")
    learn.fit_frozen(1)
    dls = learn.feature_cache.dataloaders(learn.dls, learn.device)
    xb, yb = dls.train.one_batch()
    assert xb.device == yb.device == learn.device
    assert all(p.device == learn.device for p in learn.model.parameters())
    assert all(p.device == learn.device for p in learn.model.get_classifier().parameters())


def test_a_head_that_pools_caches_the_input_of_its_linear_layer(folder):
    """Sequencer's classifier is timm's ClassifierHead (pooling, dropout, fc) with a `reset(num_classes)` method."""
    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, aug="none")
    learn = transfer_learner(dls, "sequencer2d_s", pretrained=False, device="cpu")
    assert learn.spec.classifier == "head"
    learn.fit_frozen(1)
    cache = learn.feature_cache
    assert cache is not None and cache.train.shape[-1] == learn.model.get_classifier().fc.in_features
    assert np.isfinite(learn.history["valid_loss"]).all()


def test_a_head_the_model_never_calls_itself_trains_without_the_cache(folder):
    """CrossViT's classifier is a ModuleList of two heads that forward indexes into: nothing to hook."""
    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, aug="none")
    learn = transfer_learner(dls, "crossvit_tiny_240", pretrained=False, device="cpu")
    learn.fit_frozen(1)
    assert learn.feature_cache is None and len(learn.history) == 1


def test_the_memory_mapped_feature_cache_lives_in_a_visible_cache_folder(cats, tmp_path, monkeypatch):
    monkeypatch.setenv("EASYTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("easytransfer.train.features.CACHE_MEMORY_LIMIT", 0)  # every cache goes to a file
    stale = feature_cache_dir() / f"features.{DEAD_PID}.zzz.tmp"  # left by a fit killed with -9
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by kill -9")
    learn = tiny_learner(cats)
    learn.fit_frozen(1, patience=None)
    path = learn.feature_cache.path
    assert os.path.dirname(path) == str(tmp_path / "cache" / "features") and is_temporary(path)  # not in /tmp
    assert not stale.exists()

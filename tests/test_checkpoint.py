"""Checkpoints are written atomically every epoch; an interrupted fit resumes on the same schedule."""


import numpy as np
import pytest
import torch
from conftest import make_image_folder
from fastai.callback.core import Callback
from fastai.torch_core import set_seed
from helpers import plant_temporaries, tiny_learner
from safetensors.torch import save_file

from easytransfer import ImageData, transfer_learner
from easytransfer.errors import EasyTransferError
from easytransfer.train.checkpoint import LAST_NAME, CheckpointCallback, FitState, read_checkpoint
from easytransfer.train.history import Phase


class LrSpy(Callback):
    order = 100

    def __init__(self):
        self.lrs = []

    def before_batch(self):
        if self.training:
            self.lrs.append([h["lr"] for h in self.learn.opt.hypers])


class InterruptAt(Callback):
    """Ctrl-C in the middle of an epoch."""

    def __init__(self, epoch):
        self.at = epoch

    def after_batch(self):
        if self.training and self.epoch == self.at and self.iter == 1:
            raise KeyboardInterrupt


def _learner(folder, ckpt):
    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, size=48, aug="none")
    set_seed(0)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, checkpoint_dir=ckpt)
    learn.dls.train.shuffle = False
    learn.unfreeze()
    return learn


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "images", per_class=8)


def test_interrupted_fit_resumes_on_the_same_schedule(folder, tmp_path):
    full = _learner(folder, tmp_path / "full")
    spy_full = LrSpy()
    full.fit_discriminative(4, lr_max=1e-3, patience=None, cbs=[spy_full])

    first = _learner(folder, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        first.fit_discriminative(4, lr_max=1e-3, patience=None, cbs=[InterruptAt(2)])
    state = read_checkpoint(tmp_path / "run" / LAST_NAME).state
    assert state.done == 2 and len(state.history) == 2  # the last good checkpoint: epoch 1 finished
    assert not list((tmp_path / "run").glob("*.tmp"))

    resumed = _learner(folder, tmp_path / "run")  # a fresh process would start like this
    spy = LrSpy()
    resumed.fit_discriminative(4, lr_max=1e-3, patience=None, cbs=[spy], resume=True)
    assert resumed.history["epoch"].tolist() == [0, 1, 2, 3] == full.history["epoch"].tolist()
    per_epoch = len(spy_full.lrs) // 4
    np.testing.assert_allclose(spy.lrs, spy_full.lrs[2 * per_epoch:], rtol=1e-9)  # the same schedule
    assert read_checkpoint(tmp_path / "run" / LAST_NAME).state.done == 4
    assert (tmp_path / "run" / "best.safetensors").is_file()


def test_resume_checks_the_fit_and_the_folder(folder, tmp_path):
    learn = _learner(folder, tmp_path / "ckpt")
    learn.fit_discriminative(1, patience=None)
    with pytest.raises(EasyTransferError, match="of another fit"):
        learn.fit_discriminative(3, resume=True)
    learn.checkpoint_dir = None
    with pytest.raises(EasyTransferError, match="checkpoint_dir"):
        learn.fit_discriminative(1, resume=True)


def test_a_cached_frozen_fit_resumes_too(folder, tmp_path):
    full = _learner(folder, tmp_path / "full")
    full.freeze()
    spy_full = LrSpy()
    full.fit_frozen(4, patience=None, cbs=[spy_full])
    first = _learner(folder, tmp_path / "run")
    first.freeze()
    with pytest.raises(KeyboardInterrupt):
        first.fit_frozen(4, patience=None, cbs=[InterruptAt(1)])
    checkpoint = read_checkpoint(tmp_path / "run" / LAST_NAME)
    assert checkpoint.state.on_features is True
    assert checkpoint.model_state.keys() == first.model.state_dict().keys()  # the whole model, not the head
    resumed = _learner(folder, tmp_path / "run")
    resumed.freeze()
    spy = LrSpy()
    resumed.fit_frozen(4, patience=None, cbs=[spy], resume=True)
    assert resumed.history["epoch"].tolist() == [0, 1, 2, 3]
    per_epoch = len(spy_full.lrs) // 4
    np.testing.assert_allclose(spy.lrs, spy_full.lrs[per_epoch:], rtol=1e-9)


def test_a_checkpoint_folder_is_cleaned_when_a_fit_opens_it(tmp_path):
    dead, live = plant_temporaries(tmp_path / "ckpt")
    callback = CheckpointCallback(tmp_path / "ckpt", FitState(Phase.from_name("frozen"), 1, (1e-3,), 0.1,
                                                               on_features=False, monitor="valid_loss"))
    callback.learn = type("FakeLearner", (), {"recorder": type("R", (), {"metric_names": ["epoch"]})()})()
    callback.before_fit()
    assert not dead.exists() and live.exists()


@pytest.mark.slow  # two tiny fits: ~6 s on 2 cores
def test_resume_refuses_a_checkpoint_of_other_classes(cats, bees, tmp_path):
    tiny_learner(cats, checkpoint_dir=tmp_path / "ckpt").fit_frozen(1, patience=None)
    other = tiny_learner(bees, checkpoint_dir=tmp_path / "ckpt")  # same architecture, same class count
    with pytest.raises(EasyTransferError, match=r"another model \(classes \['cat', 'dog'\]"):
        other.fit_frozen(1, patience=None, resume=True)


@pytest.mark.parametrize("content", ["garbage", "foreign", "bad-json"])
def test_a_checkpoint_that_is_not_ours_gives_a_clear_error(tmp_path, content):
    path = tmp_path / LAST_NAME
    if content == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif content == "foreign":
        save_file({"w": torch.zeros(2)}, str(path))  # a safetensors file without our metadata
    else:
        save_file({"w": torch.zeros(2)}, str(path), metadata={"easytransfer": "{not json"})
    with pytest.raises(EasyTransferError, match="checkpoint"):
        read_checkpoint(path)

"""Tests of easytransfer/train/block_optimizer.py: one optimizer group per block for a fit, then back."""

from __future__ import annotations

from functools import partial

import pytest
from fastai.optimizer import OptimWrapper
from torch.optim import SGD

from easytransfer import ImageData, transfer_learner
from easytransfer.models.layer_groups import block_layer_groups
from easytransfer.train.block_optimizer import optimizer_over


@pytest.fixture
def learn(image_folder):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=32, aug="none")
    return transfer_learner(dls, "test_efficientnet", pretrained=False)


def test_the_blocks_are_the_groups_inside_and_the_layer_groups_come_back(learn):
    learn.unfreeze()
    learn.create_opt()
    own_groups, own_opt = learn.layer_groups, learn.opt
    blocks = block_layer_groups(learn.model, head=learn.spec.classifier)
    frozen = [p.requires_grad for p in learn.model.parameters()]
    with optimizer_over(learn, blocks):
        assert learn.layer_groups is blocks and len(learn.opt.param_lists) == len(blocks) > len(own_groups)
        learn.opt.set_hyper("lr", [1e-3] * len(blocks))
        learn.fit(1)  # the blocks' optimizer steps and keeps Adam's moments
        moments = {id(p): st for p, *_ in learn.opt.all_params() if (st := learn.opt.state.get(p))}
    assert learn.layer_groups is own_groups and learn.opt is own_opt
    assert [p.requires_grad for p in learn.model.parameters()] == frozen  # what is frozen is not touched
    carried = {id(p) for p, *_ in learn.opt.all_params() if learn.opt.state.get(p)}
    assert moments and set(moments) <= carried
    assert max(h["lr"] for h in learn.opt.hypers) == pytest.approx(1e-3)  # the rates the fit ended with


def test_a_torch_optimizer_is_refused_with_the_alternative(image_folder):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=32, aug="none")
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, opt_func=partial(OptimWrapper, opt=SGD))
    with pytest.raises(ValueError, match="use decay= instead"), optimizer_over(learn, learn.layer_groups):
        pass

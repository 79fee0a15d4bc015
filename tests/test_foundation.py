"""Foundation towers from timm (DINOv2 with and without registers, CLIP, SigLIP) and per-block layer decay.

Full-size towers are only built on the meta device (no memory, no initialisation); anything that runs is a
tiny version of the same timm builder (``depth=2, embed_dim=32``), so the code path is the real one.
"""

import warnings

import pytest
import timm
import torch
from conftest import make_image_folder
from fastai.callback.core import Callback
from test_checkpoint import InterruptAt
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

from easytransfer import (
    EasyTransferError,
    ImageData,
    NoBlockGroupsError,
    build_model,
    get_model_spec,
    load_model,
    transfer_learner,
)
from easytransfer.models.backends.timm import default_size
from easytransfer.models.layer_groups import block_layer_groups, split_layer_groups
from easytransfer.train.checkpoint import FitState
from easytransfer.train.history import Phase, PhaseKind

# name -> (size when none is given, mean, std, patch size)
TOWERS = {
    "vit_small_patch14_dinov2": (224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 14),
    "vit_small_patch14_reg4_dinov2": (224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 14),
    "vit_base_patch16_clip_224.openai": (224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, 16),
    "vit_base_patch16_siglip_224": (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 16),
}
TINY = dict(depth=2, embed_dim=32, num_heads=2)


@pytest.fixture
def tiny_towers(monkeypatch):
    """Every timm model built in the test is the tiny version of its builder."""
    real = timm.create_model

    def create_tiny(name, *args, **kwargs):
        return real(name, *args, **{**kwargs, **TINY})

    monkeypatch.setattr(timm, "create_model", create_tiny)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("towers"), per_class=3, size=40)


@pytest.mark.parametrize("arch", TOWERS)
def test_tower_spec_size_and_normalisation(arch):
    size, mean, std, _ = TOWERS[arch]
    spec = get_model_spec(arch)
    assert spec.size == size and spec.input_size == (3, size, size)
    assert spec.mean == pytest.approx(mean) and spec.std == pytest.approx(std)  # the tower's own, from timm
    assert spec.interpolation == "bicubic" and spec.classifier == "head"
    assert get_model_spec(arch, size=448).size == 448


def test_dinov2_defaults_to_224_not_its_configs_518():
    assert timm.models.get_pretrained_cfg("vit_small_patch14_dinov2").input_size[-1] == 518
    assert default_size("vit_small_patch14_dinov2") == default_size("vit_small_patch14_reg4_dinov2") == 224
    assert default_size("vit_base_patch16_clip_224") is None


@pytest.mark.parametrize("arch", TOWERS)
def test_tower_groups_cover_every_parameter_once_with_tokens_in_the_stem(arch):
    with torch.device("meta"):
        model, spec = build_model(arch, 3, pretrained=False)
    names = [n for n, _ in model.named_parameters()]
    tokens = {n for n in names if n.split(".")[0] in ("cls_token", "reg_token", "pos_embed", "patch_embed")}
    assert ("reg_token" in names) == ("reg4" in arch)
    for groups in (split_layer_groups(model, head=spec.classifier), block_layer_groups(model, head=spec.classifier)):
        flat = [n for g in groups.names for n in g]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
        assert tokens <= set(groups.names[0])
        assert {"head.weight", "head.bias"} <= set(groups.names[-1])
    assert len(block_layer_groups(model, head=spec.classifier)) == 12 + 2  # stem, 12 blocks, head


@pytest.mark.parametrize("arch", TOWERS)
def test_tiny_tower_trains_at_the_size_asked_for(arch, folder, tiny_towers):
    patch = TOWERS[arch][3]
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2)
    learn = transfer_learner(dls, arch, pretrained=False, size=2 * patch)
    assert learn.spec.size == learn.dls.recipe.size == 2 * patch
    assert learn.model.patch_embed.img_size == (2 * patch, 2 * patch)
    assert learn.dls.recipe.mean == learn.spec.mean == pytest.approx(TOWERS[arch][1])
    xb, _ = learn.dls.one_batch()
    assert xb.shape[-2:] == (2 * patch, 2 * patch)
    learn.model.eval()
    with torch.inference_mode():
        assert learn.model(xb).shape == (2, 2)


def test_dinov2_data_follows_the_default_size_and_a_data_size_builds_the_model(folder, tiny_towers):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2)
    learn = transfer_learner(dls, "vit_small_patch14_dinov2", pretrained=False)
    assert learn.spec.size == learn.dls.recipe.size == 224 and learn.model.patch_embed.img_size == (224, 224)
    given = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2, size=28)
    learn = transfer_learner(given, "vit_small_patch14_dinov2", pretrained=False)
    assert learn.spec.size == 28 and learn.model.patch_embed.img_size == (28, 28)  # built for the data
    with pytest.warns(UserWarning, match="size=56 is ignored"):
        learn = transfer_learner(given, "vit_small_patch14_dinov2", pretrained=False, size=56)
    assert learn.spec.size == learn.dls.recipe.size == 28


def test_a_vit_bundle_at_another_size_loads(folder, tiny_towers, tmp_path):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=2)
    learn = transfer_learner(dls, "vit_small_patch14_reg4_dinov2", pretrained=False, size=28)
    predictor = load_model(learn.export(tmp_path / "bundle"), device="cpu")  # rebuilt for 28 px, strict load
    assert predictor.config.preprocessing.size == 28


# ------------------------------------------------------------------------------------------------ layer decay


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


def test_layer_decay_uses_timms_fine_groups_on_cnns():
    model = timm.create_model("test_resnet", num_classes=2)
    groups = block_layer_groups(model, head="fc")
    assert groups.names[0][0].startswith("conv1.") and groups.names[-1] == ("fc.weight", "fc.bias")
    blocks = {".".join(n.split(".")[:2]) for g in groups.names[1:-1] for n in g if n.startswith("layer")}
    assert len(groups) == len(blocks) + 2  # one group per residual block (layerN.M)


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


def test_layer_decay_phase_is_recorded_and_read_back():
    phase = Phase(PhaseKind.DISCRIMINATIVE, layer_decay=0.75)
    assert Phase.from_json(phase.to_json()) == phase == Phase.from_name("layer decay 0.75")
    assert Phase.from_json({"kind": "discriminative", "stage": None, "label": None}).layer_decay is None  # old JSON
    assert Phase(PhaseKind.DISCRIMINATIVE, label="vit", layer_decay=0.75).name == "vit"
    with pytest.raises(ValueError, match="layer_decay"):
        Phase(PhaseKind.FROZEN, layer_decay=0.75)
    state = FitState(phase, 3, (1e-3,), 0.1, on_features=False, monitor="valid_loss")
    assert "layer decay 0.75" in state.same_fit(FitState(Phase(PhaseKind.DISCRIMINATIVE), 3, (1e-3,), 0.1, False,
                                                         "valid_loss"))


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

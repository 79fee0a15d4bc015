"""Tests of easytransfer/models/backends/timm.py (moved here from the history-named test files: faults, student, contracts ...)."""

import pytest
import timm
import torch
from helpers import TOWERS

from easytransfer import (
    ImageData,
    get_model_spec,
    load_model,
    transfer_learner,
)
from easytransfer.models.backends.timm import default_size


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
def test_tiny_tower_trains_at_the_size_asked_for(arch, towers_folder, tiny_towers):
    patch = TOWERS[arch][3]
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2)
    learn = transfer_learner(dls, arch, pretrained=False, size=2 * patch)
    assert learn.spec.size == learn.dls.recipe.size == 2 * patch
    assert learn.model.patch_embed.img_size == (2 * patch, 2 * patch)
    assert learn.dls.recipe.mean == learn.spec.mean == pytest.approx(TOWERS[arch][1])
    xb, _ = learn.dls.one_batch()
    assert xb.shape[-2:] == (2 * patch, 2 * patch)
    learn.model.eval()
    with torch.inference_mode():
        assert learn.model(xb).shape == (2, 2)


def test_dinov2_data_follows_the_default_size_and_a_data_size_builds_the_model(towers_folder, tiny_towers):
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2)
    learn = transfer_learner(dls, "vit_small_patch14_dinov2", pretrained=False)
    assert learn.spec.size == learn.dls.recipe.size == 224 and learn.model.patch_embed.img_size == (224, 224)
    given = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2, size=28)
    learn = transfer_learner(given, "vit_small_patch14_dinov2", pretrained=False)
    assert learn.spec.size == 28 and learn.model.patch_embed.img_size == (28, 28)  # built for the data
    with pytest.warns(UserWarning, match="size=56 is ignored"):
        learn = transfer_learner(given, "vit_small_patch14_dinov2", pretrained=False, size=56)
    assert learn.spec.size == learn.dls.recipe.size == 28


def test_a_vit_bundle_at_another_size_loads(towers_folder, tiny_towers, tmp_path):
    dls = ImageData.from_folder(towers_folder, valid_pct=0.34, seed=0, bs=2)
    learn = transfer_learner(dls, "vit_small_patch14_reg4_dinov2", pretrained=False, size=28)
    predictor = load_model(learn.export(tmp_path / "bundle"), device="cpu")  # rebuilt for 28 px, strict load
    assert predictor.config.preprocessing.size == 28

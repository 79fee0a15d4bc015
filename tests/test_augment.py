"""Tests of easytransfer/data/augment.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import random
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from conftest import make_image_folder
from fastai.callback.mixup import CutMix
from fastai.vision.augment import (
    AffineCoordTfm,
    CropPad,
    DihedralItem,
    RandomCrop,
    RandomResizedCrop,
    RandomResizedCropGPU,
    Resize,
    ResizeMethod,
    SpaceTfm,
)
from PIL import Image

from easytransfer import ImageData, transfer_learner
from easytransfer.data.augment import AUG_PRESETS, batch_augmentations, item_transforms, uses_cutmix

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)


def test_augmentation_presets_change_training_only(image_folder):
    built = {aug: ImageData.from_folder(image_folder, bs=4, size=32, aug=aug, seed=0)
             for aug in ("none", "light", "strong")}
    valid = [dls.valid.one_batch()[0] for dls in built.values()]
    # validation preprocessing is the same (fastai's affine transforms resample with an identity matrix: ~1e-6)
    assert all(torch.allclose(valid[0], v, atol=1e-5) for v in valid[1:])
    names = [type(t).__name__ for t in built["strong"].train.after_batch.fs]
    assert {"Rotate", "Brightness", "Contrast", "Saturation"} <= set(names)
    assert any(type(t).__name__ == "RandomResizedCrop" for t in built["light"].train.after_item.fs)
    learn = transfer_learner(built["strong"], "test_efficientnet", pretrained=False)
    assert any(isinstance(cb, CutMix) for cb in learn.cbs)
    assert not any(isinstance(cb, CutMix) for cb in
                   transfer_learner(built["strong"], "test_efficientnet", pretrained=False, mix="none").cbs)
    with pytest.raises(ValueError, match="aug must be one of"):
        ImageData.from_folder(image_folder, aug="heavy")


def _dihedral_images(x: torch.Tensor) -> list[torch.Tensor]:
    """The 8 flips / rotations by multiples of 90 degrees of a CxHxW image (square)."""
    return [torch.rot90(y, k, dims=(-2, -1)) for y in (x, x.flip(-1)) for k in range(4)]


def test_the_flips_preset_neither_crops_nor_zooms_nor_changes_values():
    tfms = item_transforms("flips", 64, 3)
    assert [type(t) for t in tfms] == [Resize, DihedralItem]
    assert tfms[0].method == ResizeMethod.Crop and tfms[1].order > tfms[0].order  # the flips act on the resized image
    assert not any(isinstance(t, (RandomResizedCrop, RandomCrop, CropPad, RandomResizedCropGPU, AffineCoordTfm,
                                  SpaceTfm)) for t in tfms)
    assert batch_augmentations("flips") == [] and not uses_cutmix("flips")


def _marked_pixel_folder(root: Path, size: int) -> Path:
    """PNG images of the model's size: "defect" is black with one white pixel (a different one per image)."""
    for cls in ("defect", "ok"):
        (root / cls).mkdir(parents=True)
        for i in range(4):
            arr = np.full((size, size, 3), 0 if cls == "defect" else 90, dtype=np.uint8)
            if cls == "defect":
                arr[2 + i, size - 3 - 2 * i] = 255
            Image.fromarray(arr).save(root / cls / f"{cls}_{i}.png")
    return root


def _item_through(dl, item) -> torch.Tensor:
    """`item`'s image after `dl`'s item transforms, as `dl` applies them (fastai sets the split before iterating)."""
    dl.after_item.split_idx = dl.split_idx
    return dl.after_item(item)[0]


def test_the_flips_preset_keeps_every_pixel_of_the_validation_image(tmp_path):
    dls = ImageData.from_folder(_marked_pixel_folder(tmp_path / "images", 32), bs=6, size=32, aug="flips",
                                valid_pct=0.25, seed=0)
    random.seed(0)  # fastai's DihedralItem draws with `random`
    drawn = set()
    for item in dls.train_ds:
        reference = _item_through(dls.valid, item)  # the validation-resized image
        orbit = _dihedral_images(reference)
        marked = int((reference == 255).all(dim=0).sum())
        assert marked == (1 if dls.vocab[item[1]] == "defect" else 0)
        for _ in range(16):
            augmented = _item_through(dls.train, item)
            matches = [k for k, y in enumerate(orbit) if torch.equal(augmented, y)]
            assert matches, "a training image is not a flip / 90-degree rotation of the validation image"
            if marked:  # a marked image tells the 8 transforms apart; a plain one matches them all
                drawn.add(matches[0])
            assert int((augmented == 255).all(dim=0).sum()) == marked  # the defect's pixel is never cut out
    assert drawn == set(range(8))  # all 8 transforms occur (identity included)
    # whole batches too: each normalised training image is a dihedral transform of a normalised validation one
    from fastai.torch_core import TensorImage

    references = dls.valid.after_batch(TensorImage(torch.stack([_item_through(dls.valid, it) for it in dls.train_ds])))
    xb, _ = dls.train.one_batch()
    for x in xb:
        assert any(torch.equal(x, y) for ref in references for y in _dihedral_images(ref))


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("aug") / "images", per_class=4, size=40)


@pytest.mark.parametrize("aug", AUG_PRESETS)
def test_every_augmentation_preset_builds_batches_and_shows_them(aug, tiny_folder):
    dls = ImageData.from_folder(tiny_folder, bs=2, size=32, aug=aug, valid_pct=0.25, seed=0)
    for dl in (dls.train, dls.valid):
        xb, yb = dl.one_batch()
        assert xb.shape == (2, 3, 32, 32) and yb.shape == (2,), (aug, dl.split_idx)
    plt.close("all")
    dls.show_batch(max_n=2)
    assert len(plt.gcf().axes) == 2
    plt.close("all")

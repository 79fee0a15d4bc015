import random
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_image_folder
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

from easytransfer import DataError, ImageData, get_model_spec
from easytransfer.data import LoaderOptions, stratified_split
from easytransfer.data.augment import batch_augmentations, item_transforms, uses_cutmix
from easytransfer.errors import DataWarning


def test_from_folder_class_subfolders_is_a_stratified_seeded_split(image_folder):
    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=1, bs=4)
    assert list(dls.vocab) == ["cat", "dog"]
    items = dls.recipe.items
    assert items.groupby("label")["is_valid"].sum().tolist() == [2, 2]
    again = ImageData.from_folder(image_folder, valid_pct=0.34, seed=1, bs=4)
    assert again.recipe.items["is_valid"].tolist() == items["is_valid"].tolist()
    xb, yb = dls.one_batch()
    assert xb.shape == (4, 3, 224, 224) and yb.shape == (4,)


@pytest.mark.parametrize("valid_name", ["valid", "val"])
def test_from_folder_train_valid_layout(tmp_path, valid_name):
    make_image_folder(tmp_path / "train", per_class=4)
    make_image_folder(tmp_path / valid_name, per_class=2, seed=1)
    dls = ImageData.from_folder(tmp_path)
    assert len(dls.train_ds) == 8 and len(dls.valid_ds) == 4


def test_for_model_applies_the_models_preprocessing(image_folder):
    dls = ImageData.from_folder(image_folder, bs=4).for_model(get_model_spec("efficientnet_lite0"))
    assert dls.recipe.interpolation == "bicubic" and dls.recipe.mean == (0.5, 0.5, 0.5)
    xb, _ = dls.one_batch()
    assert xb.min() >= -1.0001 and xb.max() <= 1.0001  # (x - 0.5) / 0.5
    kept = ImageData.from_folder(image_folder, bs=4, size=96).for_model(get_model_spec("efficientnet_lite0"))
    assert kept.one_batch()[0].shape[-1] == 96


def test_no_images_is_a_clear_error(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="No images found"):
        ImageData.from_folder(tmp_path / "empty")


def test_one_class_is_a_clear_error(tmp_path):
    make_image_folder(tmp_path, classes=("cat",))
    with pytest.raises(DataError, match="Only one class"):
        ImageData.from_folder(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ImageData.from_folder(tmp_path / "nope")


def test_from_df_checks_columns(image_folder):
    files = sorted(image_folder.rglob("*.jpg"))
    df = pd.DataFrame({"file": [str(f) for f in files], "y": [f.parent.name for f in files]})
    with pytest.raises(DataError, match="'label'"):
        ImageData.from_df(df, fn_col="file")
    dls = ImageData.from_df(df, fn_col="file", label_col="y", bs=4)
    assert list(dls.vocab) == ["cat", "dog"]


def test_stratified_split_keeps_a_training_image_per_class():
    mask = stratified_split(["a"] * 2 + ["b"] * 10, 0.5, seed=3)
    assert mask[:2].sum() == 1 and mask[2:].sum() == 5


def test_validation_images_are_decoded_once_per_run(image_folder, monkeypatch):
    import torch

    import easytransfer.data.images as images

    dls = ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=4, size=32)
    calls = []
    original = images.open_rgb
    monkeypatch.setattr(images, "open_rgb", lambda p: calls.append(p) or original(p))
    first = [xb.clone() for xb, _ in dls.valid]
    n = len(calls)
    assert n == len(dls.valid_ds)
    second = [xb for xb, _ in dls.valid]
    assert len(calls) == n  # the second epoch reads no file
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    list(dls.train)
    assert len(calls) > n  # training images (random augmentation) are read every epoch


@pytest.mark.parametrize("bad, match", [
    (dict(aug="heavy"), "aug must be one of"),
    (dict(balance="oversample"), "balance must be one of"),
    (dict(balance="sampler", label_delim=" "), "balance='sampler' is for single-label data"),
    (dict(valid_pct=1.5), "valid_pct must be between 0 and 1"),
    (dict(valid_pct=0), "valid_pct must be between 0 and 1"),
    (dict(bs=0), "bs .batch size. must be at least 1"),
    (dict(size=-3), "size must be a positive number"),
    (dict(num_workers=-1), "num_workers must be 0"),
    (dict(label_delim=""), "label_delim='' cannot split labels"),
])
def test_loader_options_are_checked_once_with_the_fix(bad, match):
    with pytest.raises(DataError, match=match):
        LoaderOptions(**bad)


def test_bad_options_fail_before_any_file_is_read(tmp_path):
    # the folder does not exist: an option error first means the options were checked before the files
    with pytest.raises(DataError, match="aug must be one of"):
        ImageData.from_folder(tmp_path / "nowhere", aug="heavy")
    with pytest.raises(DataError, match="valid_pct"):
        ImageData.from_csv(tmp_path / "nowhere.csv", valid_pct=2)
    with pytest.raises(TypeError, match=r"Unknown option\(s\) \['sizes'\]"):
        ImageData.from_csv(tmp_path / "nowhere.csv", sizes=32)


def test_options_reach_the_recipe_and_transforms_may_be_one_or_none(image_folder):
    from fastai.vision.augment import Dihedral

    assert LoaderOptions(item_tfms=None).item_tfms == ()
    assert LoaderOptions(batch_tfms=Dihedral()).batch_tfms[0].__class__ is Dihedral
    dls = ImageData.from_folder(image_folder, bs=3, size=32, aug="none", balance="weights", seed=0,
                                batch_tfms=[Dihedral()])
    recipe = dls.recipe
    assert (recipe.bs, recipe.size, recipe.size_given, recipe.aug, recipe.balance) == (3, 32, True, "none", "weights")
    assert isinstance(recipe.batch_tfms, tuple) and isinstance(recipe.batch_tfms[0], Dihedral)


def test_data_warnings_point_at_the_callers_line(tmp_path):
    root = make_image_folder(tmp_path / "images", per_class=4)
    table = pd.DataFrame({"path": [str(p) for p in sorted(root.rglob("*.jpg"))] + ["gone.jpg"],
                          "label": ["cat"] * 4 + ["dog"] * 4 + ["dog"]})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ImageData.from_df(table, bs=2, size=32)
    data_warnings = [w for w in caught if issubclass(w.category, DataWarning)]
    assert data_warnings and {w.filename for w in data_warnings} == {__file__}


# ------------------------------------------------------------------------------------ the "flips" preset


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


def test_converting_images_in_threads_leaves_the_warning_filters_as_they_were():
    """The file check converts in threads; a conversion that silences Pillow must not leave a filter behind."""
    import warnings
    from concurrent.futures import ThreadPoolExecutor

    from PIL import Image

    from easytransfer.data.images import to_rgb

    palette = Image.new("P", (16, 16))
    palette.info["transparency"] = b"\x00" * 256  # transparency as bytes: Pillow advises RGBA
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        before = list(warnings.filters)
        with ThreadPoolExecutor(8) as pool:
            modes = set(pool.map(lambda _: to_rgb(palette.copy())[0].mode, range(400)))
        assert modes == {"RGB"} and warnings.filters == before

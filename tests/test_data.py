import warnings

import pandas as pd
import pytest
from conftest import make_image_folder

from easytransfer import DataError, ImageData, get_model_spec
from easytransfer.data import LoaderOptions, stratified_split
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

import pandas as pd
import pytest
from conftest import make_image_folder

from easytransfer import DataError, ImageData, get_model_spec
from easytransfer.data import stratified_split


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

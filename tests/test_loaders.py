from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_image_folder
from fastai.callback.data import WeightedDL

from easytransfer import DataError, ImageData, get_model_spec, transfer_learner
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


def test_fewer_training_images_than_the_batch_size_still_train(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=6, size=32)  # 12 images: 8 train, 4 valid
    with pytest.warns(DataWarning, match="fewer than the batch size 16"):
        dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, size=32)  # the default bs=16
    n_train = len(dls.train_ds)
    assert dls.train.bs == n_train and len(dls.train) == 1  # one batch per epoch, not zero
    assert any("fewer than the batch size" in m for m in dls.report.messages)


def test_an_empty_validation_set_is_refused(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=1, size=32)  # one image per class: none to validate
    with pytest.raises(DataError, match="No validation images"):
        ImageData.from_folder(folder, valid_pct=0.2, seed=0, size=32)


TINY = dict(bs=4, size=32)


def test_from_folder_holds_out_a_test_split_and_evaluate_uses_it(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=10)
    dls = ImageData.from_folder(folder, valid_pct=0.2, test_pct=0.2, seed=42, **TINY)
    assert len(dls.recipe.test_items) == 4 and len(dls.valid_ds) == 4 and len(dls.train_ds) == 12
    used = set(dls.recipe.items["path"])
    assert not used & set(dls.recipe.test_items["path"])
    assert dls.report.counts["test"].to_dict() == {"cat": 2, "dog": 2}
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    assert learn.evaluate()["n_images"] == 4


def test_from_df_holds_out_a_test_split(tmp_path):
    import pandas as pd

    folder = make_image_folder(tmp_path / "images", per_class=10)
    table = pd.DataFrame({"path": [str(p) for p in sorted(folder.rglob("*.jpg"))]})
    table["label"] = [p.split("/")[-2] for p in table["path"]]
    dls = ImageData.from_df(table, valid_pct=0.2, test_pct=0.2, **TINY)
    assert len(dls.recipe.test_items) == 4


def test_test_set_from_layout_and_folder_and_unseen_labels(tmp_path):
    make_image_folder(tmp_path / "train", per_class=4)
    make_image_folder(tmp_path / "valid", per_class=2, seed=1)
    make_image_folder(tmp_path / "test", per_class=3, seed=2)
    dls = ImageData.from_folder(tmp_path, bs=4, size=32)
    assert dls.report.counts.to_dict() == {"train": {"cat": 4, "dog": 4}, "valid": {"cat": 2, "dog": 2},
                                           "test": {"cat": 3, "dog": 3}}
    assert len(dls.labelled_dl().dataset) == 6
    assert len(dls.labelled_dl(tmp_path / "test").dataset) == 6
    make_image_folder(tmp_path / "other", classes=("cat", "fox"), per_class=2)
    with pytest.raises(DataError, match=r"Test labels \['fox'\] never appear in training"):
        dls.labelled_dl(tmp_path / "other")


def test_imbalance_warns_and_balance_options(tmp_path):
    root = make_image_folder(tmp_path / "imgs", classes=("common",), per_class=30)
    make_image_folder(root, classes=("rare",), per_class=3, seed=5)
    with pytest.warns(DataWarning, match=r"Class 'rare' has 2 training images, 8% of the largest"):
        ImageData.from_folder(root, bs=4, size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        weighted = ImageData.from_folder(root, bs=4, size=32, balance="weights")
        sampled = ImageData.from_folder(root, bs=8, size=32, balance="sampler")
    w = weighted.class_weights()
    assert w[1] / w[0] == pytest.approx(24 / 2)  # train counts: common 24, rare 2
    learn = transfer_learner(weighted, "test_efficientnet", pretrained=False)
    assert torch.allclose(learn.loss_func.func.weight, w)
    assert isinstance(sampled.train, WeightedDL)
    np.random.seed(0)
    seen = np.concatenate([yb.numpy() for _ in range(10) for _, yb in sampled.train])
    assert 0.35 < seen.mean() < 0.65  # the rare class (1) is drawn about as often as the common one (10 epochs)
    with pytest.raises(ValueError, match="balance"):
        ImageData.from_folder(root, balance="oversample")


def test_own_transforms_and_show_batch(image_folder):
    import matplotlib

    matplotlib.use("Agg")
    from fastai.vision.augment import Dihedral

    dls = ImageData.from_folder(image_folder, bs=4, size=32, aug="light", batch_tfms=[Dihedral(p=1.0)])
    assert any(isinstance(t, Dihedral) for t in dls.train.after_batch.fs)
    dls.show_batch(max_n=4)
    assert len(matplotlib.pyplot.gcf().axes) == 4

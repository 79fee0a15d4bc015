"""A deliberately messy folder and CSV: the data builds, training runs, and the report names every bad file."""

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_image_folder
from fastai.callback.data import WeightedDL
from fastai.callback.mixup import CutMix
from PIL import Image

from easytransfer import DataError, ImageData, transfer_learner
from easytransfer.data.images import open_rgb
from easytransfer.errors import DataWarning


def _jpeg_bytes(size=(40, 40), colour=(200, 30, 30), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", **kw)
    return buf.getvalue()


def make_messy_folder(root: Path) -> dict:
    """Good images in cat/ and dog/, plus one of every kind of trouble. Returns {name: path}."""
    make_image_folder(root, per_class=6)
    (root / "bird").mkdir()  # an empty class folder
    f = {}
    f["truncated"] = root / "cat" / "truncated.jpg"
    noisy = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=95)
    f["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    f["empty"] = root / "cat" / "empty.jpg"
    f["empty"].write_bytes(b"")
    f["text"] = root / "dog" / "notes.jpg"
    f["text"].write_text("this is not an image, it is a note someone saved with the wrong name\n")
    f["huge"] = root / "dog" / "huge.png"
    Image.new("RGB", (300, 300), (0, 90, 0)).save(f["huge"])
    f["png_as_jpg"] = root / "cat" / "png_named.jpg"
    Image.new("RGB", (40, 40), (10, 200, 10)).save(f["png_as_jpg"], "PNG")
    f["gif_as_jpg"] = root / "dog" / "gif_named.jpg"
    Image.new("RGB", (40, 40), (10, 10, 200)).convert("P").save(f["gif_as_jpg"], "GIF")
    f["cmyk"] = root / "cat" / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(f["cmyk"], "JPEG")
    f["sixteen"] = root / "dog" / "sixteen.png"
    Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16)).save(f["sixteen"])
    f["rgba"] = root / "cat" / "rgba.png"
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(f["rgba"])
    f["palette"] = root / "dog" / "palette.png"
    Image.new("RGB", (40, 40), (120, 60, 200)).quantize(8).save(f["palette"])
    f["rotated"] = root / "cat" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (60, 40), (220, 220, 30)).save(f["rotated"], "JPEG", exif=exif.tobytes())
    return f


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "messy"
    return root, make_messy_folder(root)


def test_messy_folder_builds_trains_and_reports_every_file(messy):
    root, f = messy
    with pytest.warns(DataWarning, match=r"Using \d+ of \d+ image files; excluded 4"):
        dls = ImageData.from_folder(root, valid_pct=0.3, seed=0, bs=4, size=64, max_pixels=50_000)
    reasons = {Path(p).name: r for p, r in dls.report.reasons().items()}
    assert reasons["truncated.jpg"].startswith("truncated or corrupt")
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["notes.jpg"] == "not an image: a text file"
    assert reasons["huge.png"].startswith("too large: 300x300 pixels")
    assert len(reasons) == 4
    notes = dls.report.converted.groupby("path")["note"].apply(" | ".join)
    notes = {Path(p).name: n for p, n in notes.items()}
    assert "PNG content in a .jpg file" in notes["png_named.jpg"]
    assert "GIF content in a .jpg file" in notes["gif_named.jpg"]
    assert "CMYK -> RGB" in notes["cmyk.jpg"]
    assert "16-bit greyscale -> 8-bit RGB" in notes["sixteen.png"]
    assert "transparency flattened onto white" in notes["rgba.png"]
    assert "palette -> RGB" in notes["palette.png"]
    assert "EXIF orientation 6 applied" in notes["rotated.jpg"]
    assert any("'bird'" in m and "empty" in m for m in dls.report.messages)
    assert list(dls.vocab) == ["cat", "dog"]
    assert dls.report.counts.sum().sum() == len(dls.train_ds) + len(dls.valid_ds) == 6 + 6 + 7
    text = str(dls.report)
    assert "truncated.jpg" in text and "Images per class and split" in text
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    learn.fit_frozen(1)
    assert np.isfinite(learn.history["valid_loss"]).all()


def test_conversions_give_upright_8bit_rgb(messy):
    _, f = messy
    sixteen = np.asarray(open_rgb(f["sixteen"]))
    assert sixteen.shape == (40, 40, 3) and abs(sixteen.mean() - 30000 / 257) < 1  # scaled, not clipped to 255
    assert open_rgb(f["rotated"]).size == (40, 60)  # stored 60x40, displayed upright 40x60
    assert np.asarray(open_rgb(f["rgba"]))[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    cmyk = np.asarray(open_rgb(f["cmyk"]))[0, 0]
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # CMYK (0, 255, 255, 0) is red


def test_csv_with_windows_paths_and_missing_rows(messy, tmp_path):
    root, _ = messy
    good = sorted((root / "cat").glob("cat_*.jpg")) + sorted((root / "dog").glob("dog_*.jpg"))
    rows = [("C:\\Users\\ann\\pictures\\" + p.parent.name + "\\" + p.name, p.parent.name) for p in good]
    rows += [("C:\\Users\\ann\\pictures\\cat\\gone_1.jpg", "cat"), ("/home/bob/data/dog/gone_2.jpg", "dog")]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["file", "species"]).to_csv(csv, index=False)
    with pytest.warns(DataWarning) as caught:
        dls = ImageData.from_csv(csv, root, fn_col="file", label_col="species", bs=4, size=64)
    texts = [str(w.message) for w in caught]
    assert any("2 of 14 rows of CSV" in t and "gone_1.jpg" in t and "gone_2.jpg" in t for t in texts)
    assert any("excluded 2 (2 file not found)" in t for t in texts)
    assert len(dls.train_ds) + len(dls.valid_ds) == 12
    excluded = dls.report.excluded
    assert sorted(Path(p.replace("\\", "/")).name for p in excluded["path"]) == ["gone_1.jpg", "gone_2.jpg"]
    assert set(excluded["reason"]) == {"file not found"}
    assert any("found by file name" in m and "C:\\\\Users" in m for m in dls.report.messages)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    learn.fit_frozen(1)
    assert len(learn.history) == 1


def test_csv_errors_name_the_input(tmp_path, image_folder):
    csv = tmp_path / "labels.csv"
    pd.DataFrame({"file": ["a.jpg", "b.jpg"], "y": ["cat", "dog"]}).to_csv(csv, index=False)
    with pytest.raises(DataError, match=r"Column 'label' is not in CSV .*labels.csv.*'file', 'y'"):
        ImageData.from_csv(csv, image_folder, fn_col="file")
    with pytest.raises(DataError, match="None of the 2 files named in CSV"):
        ImageData.from_csv(csv, image_folder, fn_col="file", label_col="y")
    with pytest.raises(DataError, match="does not exist"):
        ImageData.from_csv(tmp_path / "nope.csv")


def test_a_class_whose_files_are_all_broken_is_reported(tmp_path):
    root = make_image_folder(tmp_path / "imgs", per_class=4)
    (root / "bird").mkdir()
    (root / "bird" / "a.jpg").write_bytes(b"")
    with pytest.warns(DataWarning):
        dls = ImageData.from_folder(root, bs=4, size=32)
    assert list(dls.vocab) == ["cat", "dog"]
    assert any("'bird'" in m and "no usable images" in m for m in dls.report.messages)


def test_only_broken_files_is_a_clear_error(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        (tmp_path / cls / "x.jpg").write_text("not an image")
    with pytest.raises(DataError, match="None of the 2 files"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ImageData.from_folder(tmp_path)


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


def test_own_transforms_and_show_batch(image_folder):
    import matplotlib

    matplotlib.use("Agg")
    from fastai.vision.augment import Dihedral

    dls = ImageData.from_folder(image_folder, bs=4, size=32, aug="light", batch_tfms=[Dihedral(p=1.0)])
    assert any(isinstance(t, Dihedral) for t in dls.train.after_batch.fs)
    dls.show_batch(max_n=4)
    assert len(matplotlib.pyplot.gcf().axes) == 4


def test_unchecked_broken_file_fails_with_a_data_error_naming_it(image_folder):
    (image_folder / "cat" / "bad.jpg").write_text("oops")
    with pytest.raises(DataError, match=r"Could not read image '.*bad\.jpg'"):  # when fastai first reads it
        dls = ImageData.from_folder(image_folder, bs=4, size=32, check=False, valid_pct=0.5)
        transfer_learner(dls, "test_efficientnet", pretrained=False).fit_frozen(1)

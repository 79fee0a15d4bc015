"""A deliberately messy folder and CSV: the data builds, training runs, and the report names every bad file."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder

from easytransfer import DataError, ImageData, transfer_learner
from easytransfer.errors import DataWarning


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


def test_unchecked_broken_file_fails_with_a_data_error_naming_it(image_folder):
    (image_folder / "cat" / "bad.jpg").write_text("oops")
    with pytest.raises(DataError, match=r"Could not read image '.*bad\.jpg'"):  # when fastai first reads it
        dls = ImageData.from_folder(image_folder, bs=4, size=32, check=False, valid_pct=0.5)
        transfer_learner(dls, "test_efficientnet", pretrained=False).fit_frozen(1)

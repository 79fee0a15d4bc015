"""Tests of easytransfer/data/tables.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_image_folder
from PIL import Image

from easytransfer import DataError, ImageData, transfer_learner
from easytransfer.data.tables import table_items
from easytransfer.errors import DataWarning


def _table(folder: Path, labels: list[str], names: list[str] | None = None, **columns) -> pd.DataFrame:
    files = sorted(str(f) for f in folder.rglob("*.jpg"))
    names = names if names is not None else files[: len(labels)]
    return pd.DataFrame({"path": names, "label": labels, **columns})


def test_duplicate_rows_are_used_once_with_a_warning(image_folder):
    files = sorted(str(f) for f in image_folder.rglob("*.jpg"))
    table = pd.DataFrame({"path": files + files[:4], "label": [Path(f).parent.name for f in files + files[:4]]})
    with pytest.warns(DataWarning, match="4 row.s. of the table repeat a file already listed"):
        found = table_items(table)
    assert len(found.items) == len(files) and found.items["path"].is_unique
    with pytest.warns(DataWarning, match="repeat a file"):
        dls = ImageData.from_df(table, bs=4, size=32, seed=0)
    train, valid = set(dls.train.items["path"]), set(dls.valid.items["path"])
    assert not train & valid and len(train | valid) == len(files)


def test_one_file_with_two_labels_is_an_error_or_merged_for_multi_label(image_folder):
    files = sorted(str(f) for f in image_folder.rglob("*.jpg"))
    table = pd.DataFrame({"path": files + files[:1], "label": ["cat"] * len(files) + ["dog"]})
    with pytest.raises(DataError, match=r"different labels, e.g. .*\['cat', 'dog'\].*label_delim="):
        table_items(table)
    with pytest.warns(DataWarning, match="repeat a file"):
        found = table_items(table, label_delim=" ")
    assert found.items.set_index("path")["label"][files[0]] == "cat dog" and len(found.items) == len(files)
    split = pd.DataFrame({"path": files[:1] * 2, "label": ["cat"] * 2, "v": [True, False]})
    with pytest.raises(DataError, match="both the training and the validation"):
        table_items(split, valid_col="v")


@pytest.mark.parametrize(("delim", "labels", "cleaned"), [
    (" ", ["cat  dog", "dog ", " cat", "cat dog cat"], ["cat dog", "dog", "cat", "cat dog"]),
    (";", ["cat;", "dog;;cat", ";dog", "cat; dog"], ["cat", "dog;cat", "dog", "cat;dog"]),
])
def test_doubled_or_trailing_label_delimiters_build(image_folder, delim, labels, cleaned):
    table = _table(image_folder, labels * 3)
    dls = ImageData.from_df(table, label_delim=delim, bs=4, size=32, seed=0, valid_pct=0.25)
    assert list(dls.vocab) == ["cat", "dog"]
    x, y = dls.one_batch()
    assert y.shape[1] == 2
    found = table_items(table, label_delim=delim)
    assert found.items["label"].tolist() == cleaned * 3


def test_valid_col_strings_no_and_zero_are_training_rows(image_folder):
    words = ["no", "yes", "0", "1", "False", "True", "train", "valid", "0", "no", "1", "n"]
    table = _table(image_folder, ["cat"] * 12, v=words)
    found = table_items(table, valid_col="v")
    assert found.items["split"].tolist() == ["train", "valid"] * 4 + ["train", "train", "valid", "train"]
    with pytest.raises(DataError, match=r"'v' of the table must say.*\['maybe'\]"):
        table_items(_table(image_folder, ["cat"] * 2, v=["maybe", "yes"]), valid_col="v")


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

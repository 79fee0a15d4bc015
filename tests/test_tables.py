"""Tests of easytransfer/data/tables.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

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

"""easytransfer/data/report.py: the file check's findings, summed up in one line and in full."""

from __future__ import annotations

import pandas as pd

from easytransfer.data.report import DataReport, class_counts


def test_summary_reasons_imbalance_and_the_full_text():
    excluded = pd.DataFrame({"path": ["a.jpg", "b.png", "c.jpg"], "label": ["cat", "dog", "dog"],
                             "split": ["train", "train", "valid"],
                             "reason": ["not an image: cannot identify", "empty file", "not an image: truncated"]})
    converted = pd.DataFrame({"path": ["d.jpg"], "label": ["cat"], "note": ["CMYK -> RGB"]})
    counts = pd.DataFrame({"train": [8, 2], "valid": [2, 1]}, index=["cat", "dog"])
    report = DataReport(excluded, converted, counts, ["2 path(s) found by file name"], n_files=16)
    assert report.summary() == ("Using 13 of 16 image files; excluded 3 (2 not an image, 1 empty file); "
                                "1 converted or misnamed.")
    assert report.reasons() == {"a.jpg": "not an image: cannot identify", "b.png": "empty file",
                                "c.jpg": "not an image: truncated"}
    assert report.imbalance == 0.25
    text = str(report)
    for part in ("Excluded files:", "  b.png [dog, train]: empty file", "Converted or misnamed (kept):",
                 "  d.jpg: CMYK -> RGB", "Notes:", "  - 2 path(s) found by file name"):
        assert part in text, part
    assert DataReport().imbalance is None and DataReport(n_files=3).summary() == "Using 3 of 3 image files."


def test_class_counts_per_split_with_multi_label_rows():
    items = pd.DataFrame({"label": ["cat", "dog", "cat;dog", "cat"], "is_valid": [False, False, False, True]})
    counts = class_counts(items, label_delim=";")
    assert counts.loc["cat"].tolist() == [2, 1] and counts.loc["dog"].tolist() == [2, 0]

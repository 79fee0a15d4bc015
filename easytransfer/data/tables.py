"""Labelled files named by a table (a DataFrame or a CSV): resolved, with rows that cannot be used set aside."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError, MissingColumnError
from .paths import resolve_paths
from .report import warn_data
from .sources import FoundItems

__all__ = ["table_items"]


def _require_columns(df: pd.DataFrame, columns: Sequence[str], source: str) -> None:
    for col in columns:
        if col not in df.columns:
            raise MissingColumnError(col, source, df.columns)
    if len(df) == 0:
        raise DataError(f"{source} has no rows.")


def table_items(df: pd.DataFrame, folder: str | os.PathLike | None = None, *, fn_col: str = "path",
                label_col: str = "label", valid_col: str | None = None, label_delim: str | None = None,
                source: str = "the table") -> FoundItems:
    """The files a table names, resolved against `folder`; rows without a file or a label are excluded.

    A path that does not exist as written (e.g. an absolute path from another machine) is looked up by its file
    name inside `folder`. Missing files are warned about at once; no file found at all is an error. A file
    named twice is used once (with a warning); twice with different labels is an error for single-label data,
    and its labels are merged for multi-label data (`label_delim`). Multi-label labels are split on
    `label_delim`, stripped, and empty parts (``"a  b"``, ``"a;"``) dropped. `valid_col` holds booleans,
    1 / 0, or the words true / false, yes / no, valid / train.

    >>> table_items(pd.DataFrame({"file": ["a.jpg"], "y": ["cat"]}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    easytransfer.errors.MissingColumnError: Column 'path' is not in the table; its columns are ['file', 'y']. ...
    """
    _require_columns(df, [fn_col, label_col] + ([valid_col] if valid_col else []), source)
    base = Path(folder).expanduser() if folder is not None else Path(".")
    messages: list[str] = []
    paths = resolve_paths(df[fn_col].tolist(), base, messages)
    labels = _clean_labels(df[label_col], label_delim)
    no_label = labels.isna() | (labels == "")
    split = (np.where(_valid_flags(df[valid_col], valid_col, source), "valid", "train") if valid_col
             else np.full(len(df), None, dtype=object))
    rows = pd.DataFrame({"path": [p if p is not None else str(n) for p, n in zip(paths, df[fn_col])],
                         "label": labels.fillna("").to_numpy(), "split": split})
    missing = np.array([p is None for p in paths])
    if missing.all():
        raise DataError(f"None of the {len(df)} files named in {source} exists (looked in {str(base)!r}, "
                        f"also by file name), e.g. {rows['path'].head(3).tolist()}. Pass folder= with the "
                        "folder the images are in.")
    bad = missing | no_label.to_numpy()
    reasons = np.where(missing, "file not found", "no label")
    excluded = rows[bad].assign(reason=reasons[bad]).reset_index(drop=True)
    if missing.any():
        first = rows["path"][missing].head(3).tolist()
        text = (f"{int(missing.sum())} of {len(df)} rows of {source} name files that do not exist, "
                f"e.g. {first}; they are excluded")
        messages.append(text)
        warn_data(text + ".")
    items = _merge_duplicates(rows[~bad].reset_index(drop=True), label_delim, source, messages)
    return FoundItems(items=items, source=source, excluded=excluded, messages=messages)


# the words a valid_col may hold (lower case), and whether each marks a validation row
VALID_WORDS = {"true": True, "1": True, "1.0": True, "yes": True, "y": True, "valid": True, "validation": True,
               "val": True, "false": False, "0": False, "0.0": False, "no": False, "n": False, "train": False,
               "training": False}


def _valid_flags(column: pd.Series, name: str, source: str) -> np.ndarray:
    """`column` as booleans; the strings ``"no"`` / ``"0"`` are False (``astype(bool)`` made every row valid)."""
    if column.dtype == bool:
        return column.to_numpy()
    flags = column.astype(str).str.strip().str.lower().map(VALID_WORDS)
    unknown = flags.isna()
    if unknown.any():
        examples = sorted(set(column[unknown].astype(str)))[:5]
        raise DataError(f"Column {name!r} of {source} must say which rows are for validation (True / False, 1 / 0, "
                        f"yes / no or valid / train); {int(unknown.sum())} row(s) hold something else, e.g. "
                        f"{examples}. Fix those rows, or leave valid_col out for a random split.")
    return flags.to_numpy(dtype=bool)


def _clean_labels(labels: pd.Series, label_delim: str | None) -> pd.Series:
    """Stripped labels (``NaN`` stays); multi-label: split on `label_delim`, empty parts dropped, joined again."""
    text = labels.where(labels.isna(), labels.astype(str).str.strip())
    if label_delim is None:
        return text

    def clean(row):
        if not isinstance(row, str):
            return row
        parts = dict.fromkeys(part.strip() for part in row.split(label_delim))  # ordered, without repeats
        return label_delim.join(part for part in parts if part)

    return text.map(clean)


def _merge_duplicates(items: pd.DataFrame, label_delim: str | None, source: str, messages: list[str]) -> pd.DataFrame:
    """One row per file: repeats are dropped with a warning; different labels are an error (single-label) or
    merged (multi-label); a file marked both train and valid is an error."""
    repeated = items["path"].duplicated(keep=False)
    if not repeated.any():
        return items
    groups = items[repeated].groupby("path", sort=False)
    split_conflict = groups["split"].nunique(dropna=False) > 1
    if split_conflict.any():
        path = split_conflict[split_conflict].index[0]
        raise DataError(f"{int(split_conflict.sum())} file(s) of {source} are in both the training and the "
                        f"validation rows, e.g. {path!r}: a file in both makes the validation score meaningless. "
                        "Give each file one row.")
    label_sets = groups["label"].unique()
    conflict = label_sets.map(len) > 1
    if conflict.any() and label_delim is None:
        path = conflict[conflict].index[0]
        raise DataError(f"{int(conflict.sum())} file(s) of {source} have rows with different labels, e.g. {path!r}: "
                        f"{list(label_sets[path])}. Give each file one label, or pass label_delim= (e.g. ' ') for "
                        "multi-label data: the labels of a file's rows are then merged.")
    if label_delim is not None:
        merged = label_sets.map(lambda rows: label_delim.join(dict.fromkeys(
            part for row in rows for part in row.split(label_delim))))
        items = items.assign(label=items["path"].map(merged).fillna(items["label"]))
    n_dropped = int(items["path"].duplicated().sum())
    text = (f"{n_dropped} row(s) of {source} repeat a file already listed (e.g. {items['path'][repeated].iloc[0]!r}); "
            "each file is used once")
    messages.append(text)
    warn_data(text + ".")
    return items.drop_duplicates("path").reset_index(drop=True)

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
                label_col: str = "label", valid_col: str | None = None, source: str = "the table") -> FoundItems:
    """The files a table names, resolved against `folder`; rows without a file or a label are excluded.

    A path that does not exist as written (e.g. an absolute path from another machine) is looked up by its file
    name inside `folder`. Missing files are warned about at once; no file found at all is an error.

    >>> table_items(pd.DataFrame({"file": ["a.jpg"], "y": ["cat"]}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    easytransfer.errors.DataError: Column 'path' is not in the table; its columns are ['file', 'y']. Pass fn_col=...
    """
    _require_columns(df, [fn_col, label_col] + ([valid_col] if valid_col else []), source)
    base = Path(folder).expanduser() if folder is not None else Path(".")
    messages: list[str] = []
    paths = resolve_paths(df[fn_col].tolist(), base, messages)
    labels = df[label_col]
    no_label = labels.isna() | (labels.astype(str).str.strip() == "")
    split = (np.where(df[valid_col].astype(bool), "valid", "train") if valid_col
             else np.full(len(df), None, dtype=object))
    rows = pd.DataFrame({"path": [p if p is not None else str(n) for p, n in zip(paths, df[fn_col])],
                         "label": labels.astype(str).str.strip().to_numpy(), "split": split})
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
    return FoundItems(items=rows[~bad].reset_index(drop=True), source=source, excluded=excluded, messages=messages)

"""Gathering image files: every candidate file under a folder, and class sub-folders as labelled items."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

__all__ = ["VALID_NAMES", "candidate_files", "class_folder_items", "find_split_folder"]

VALID_NAMES = ("valid", "val", "validation")
IGNORED_FILES = {"thumbs.db", "desktop.ini"}


def candidate_files(folder: Path) -> list[Path]:
    """Every non-hidden file under `folder` (the file check decides which are images)."""
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if not name.startswith(".") and name.lower() not in IGNORED_FILES:
                files.append(Path(root) / name)
    return files


def class_folder_items(folder: Path, split: str | None, messages: list[str]) -> pd.DataFrame:
    """One row per file in `folder`'s class sub-folders (label = sub-folder name); notes empty classes."""
    rows = []
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        files = candidate_files(class_dir)
        if not files:
            messages.append(f"class folder {class_dir.name!r} in {str(folder)!r} is empty; it is not a class")
        rows += [(str(f.resolve()), class_dir.name, split) for f in files]
    loose = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose and class_dirs:
        messages.append(f"{len(loose)} file(s) directly in {str(folder)!r} are ignored: images must be in one "
                        "sub-folder per class")
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def find_split_folder(path: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (path / name).is_dir():
            return path / name
    return None

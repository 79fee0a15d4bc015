"""Gathering image files: every candidate file under a folder, and class sub-folders as labelled items."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from ..errors import DataError
from .report import warn_data

__all__ = ["VALID_NAMES", "FoundItems", "candidate_files", "class_folder_items", "find_split_folder", "folder_items",
           "require_class_folders", "resolved"]

VALID_NAMES = ("valid", "val", "validation")
IGNORED_FILES = {"thumbs.db", "desktop.ini"}


def candidate_files(folder: str | os.PathLike, problems: list[str] | None = None) -> list[Path]:
    """Every non-hidden file under `folder` (the file check decides which are images).

    A sub-folder that cannot be read (permission denied) is left out with a note in `problems` (a `DataWarning`
    when `problems` is ``None``), not silently taken as empty. A symbolic link that loops is listed like any
    file: the file check excludes it and says why.

    >>> candidate_files("no/such/folder")
    Traceback (most recent call last):
    ...
    easytransfer.errors.DataError: Folder 'no/such/folder' does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"Folder {str(folder)!r} does not exist or is not a folder.")
    notes: list[str] = []

    def unreadable(error: OSError) -> None:
        notes.append(f"folder {error.filename!r} cannot be read ({error.strerror.lower()}); its files are left "
                     "out: give your user read and execute permission on it")

    files = []
    for root, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.lower() in IGNORED_FILES:
                continue
            files.append(Path(root) / name)
    if problems is None:
        for note in notes:
            warn_data(note + ".")
    else:
        problems.extend(notes)
    return files


def resolved(path: Path) -> str:
    """`path` absolute with its symbolic links resolved; a link that loops is only made absolute.

    >>> resolved(Path("/tmp/../tmp/x.jpg"))
    '/tmp/x.jpg'
    """
    try:
        return str(path.resolve())
    except (RuntimeError, OSError):  # Python 3.11-3.12 raise RuntimeError on a symlink loop, 3.13 OSError
        return str(path.absolute())


def class_folder_items(folder: Path, split: str | None, messages: list[str]) -> pd.DataFrame:
    """One row per file in `folder`'s class sub-folders (label = sub-folder name); notes empty classes."""
    rows = []
    try:
        entries = list(folder.iterdir())
    except PermissionError:
        raise DataError(f"Folder {str(folder)!r} cannot be read (permission denied): give your user read and "
                        "execute permission on it.") from None
    class_dirs = sorted(p for p in entries if p.is_dir() and not p.name.startswith("."))
    for class_dir in class_dirs:
        n_notes = len(messages)
        files = candidate_files(class_dir, messages)
        if not files and len(messages) == n_notes:  # not "empty" when it could not be read
            messages.append(f"class folder {class_dir.name!r} in {str(folder)!r} is empty; it is not a class")
        rows += [(resolved(f), class_dir.name, split) for f in files]
    loose = [p for p in entries if p.is_file() and not p.name.startswith(".")]
    if loose and class_dirs:
        messages.append(f"{len(loose)} file(s) directly in {str(folder)!r} are ignored: images must be in one "
                        "sub-folder per class")
    return pd.DataFrame(rows, columns=["path", "label", "split"])


def require_class_folders(folder: Path) -> None:
    """A `DataError` unless `folder` has at least one class sub-folder; says so when its images lie loose in it.

    Called before anything is predicted, so a wrong layout fails in a second, not after an inference pass.

    >>> import tempfile; root = Path(tempfile.mkdtemp()); (root / "1.jpg").write_bytes(b"")
    0
    >>> require_class_folders(root)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    easytransfer.errors.DataError: The 1 file(s) in '...' lie loose, without class folders: ...
    """
    if any(p.is_dir() and not p.name.startswith(".") for p in folder.iterdir()):
        return
    loose = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if loose:
        raise DataError(f"The {len(loose)} file(s) in {str(folder)!r} lie loose, without class folders: put each "
                        f"class's images in a sub-folder named after the class ({str(folder / 'cat' / '1.jpg')!r}, "
                        f"{str(folder / 'dog' / '2.jpg')!r}).")
    raise DataError(f"No images found in {str(folder)!r}: it has no class sub-folders (e.g. "
                    f"{str(folder / 'cat' / '1.jpg')!r}, {str(folder / 'dog' / '2.jpg')!r}).")


def find_split_folder(path: Path, names: Sequence[str]) -> Path | None:
    """The first sub-folder of `path` named one of `names`, or ``None``."""
    for name in names:
        if (path / name).is_dir():
            return path / name
    return None


@dataclass(frozen=True)
class FoundItems:
    """Labelled files gathered from a folder or a table, before the file check.

    Attributes:
        items: one row per candidate file: ``path``, ``label``, ``split`` (``"train"``, ``"valid"``, ``"test"``
            or ``None`` when the source does not say).
        source: how to name the source in messages (``"'images/'"``, ``"the table"``, ``"CSV 'labels.csv'"``).
        excluded: rows already left out (``path``, ``label``, ``split``, ``reason``), e.g. files not found.
        messages: what the gathering noticed (empty class folders, paths found by file name ...).
    """

    items: pd.DataFrame
    source: str
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["path", "label", "split", "reason"]))
    messages: list[str] = field(default_factory=list)

    @property
    def n_candidates(self) -> int:
        """Files considered: those gathered and those already excluded."""
        return len(self.items) + len(self.excluded)


def folder_items(path: str | os.PathLike) -> FoundItems:
    """The files of a folder of class sub-folders, or of ``train/`` + ``valid/`` (or ``val/``) [+ ``test/``].

    >>> folder_items("no/such/folder")
    Traceback (most recent call last):
    ...
    easytransfer.errors.DataError: Image folder 'no/such/folder' does not exist or is not a folder.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DataError(f"Image folder {str(path)!r} does not exist or is not a folder.")
    messages: list[str] = []
    train_dir = find_split_folder(path, ("train",))
    valid_dir = find_split_folder(path, VALID_NAMES)
    if train_dir is not None and valid_dir is not None:
        parts = [class_folder_items(train_dir, "train", messages), class_folder_items(valid_dir, "valid", messages)]
        test_dir = find_split_folder(path, ("test",))
        if test_dir is not None:
            parts.append(class_folder_items(test_dir, "test", messages))
        items = pd.concat(parts, ignore_index=True)
    else:
        require_class_folders(path)
        items = class_folder_items(path, None, messages)
    return FoundItems(items=items, source=repr(str(path)), messages=messages)

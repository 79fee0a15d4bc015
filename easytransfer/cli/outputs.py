"""Output paths of the ``easytransfer`` commands, checked before any work starts.

A run that would end in a traceback when it writes its results (``--out`` naming a file, ``--csv`` naming a
folder, a parent that is a file) fails at once instead, with the flag, the path and the fix. Missing parent
folders are fine: they are created when the file is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import EasyTransferError

__all__ = ["output_file", "output_folder"]


def _check_parents(path: Path, flag: str) -> None:
    """The nearest existing parent of `path` must be a folder this user can write in."""
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise EasyTransferError(f"{flag} {str(path)!r}: {str(existing)!r} is a file, not a folder; choose a path "
                                "inside a folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EasyTransferError(f"{flag} {str(path)!r}: cannot write in {str(existing)!r} (permission denied); "
                                "choose a folder you can write in.")


def output_folder(path: str | os.PathLike, flag: str) -> Path:
    """`path` as a folder to write results into (new or existing); created later, by the command.

    >>> output_folder(__file__, "--out")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    easytransfer.errors.EasyTransferError: --out '...outputs.py' is a file; give a folder (new or existing) ...
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise EasyTransferError(f"{flag} {str(path)!r} is a file; give a folder (new or existing) for the results.")
    _check_parents(path, flag)
    return path


def output_file(path: str | os.PathLike, flag: str, example: str) -> Path:
    """`path` as a file to write (replaced if it exists); its missing parent folders are created later.

    >>> output_file(Path(__file__).parent, "--csv", "predictions.csv")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    easytransfer.errors.EasyTransferError: --csv '...cli' is a folder; give a file name, e.g. '...predictions.csv'.
    """
    path = Path(path)
    if path.is_dir():
        raise EasyTransferError(f"{flag} {str(path)!r} is a folder; give a file name, e.g. {str(path / example)!r}.")
    _check_parents(path, flag)
    return path

"""Output paths of the ``easytransfer`` commands, checked before any work starts; and the printed results every
task's command-line module shares (`print_scores`, `write_scores`, `require_predictions`).

A run that would end in a traceback when it writes its results (``--out`` naming a file, ``--csv`` naming a
folder, a parent that is a file) fails at once instead, with the flag, the path and the fix. Missing parent
folders are fine: they are created when the file is written.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError, EasyTransferError

__all__ = ["output_file", "output_folder", "print_scores", "require_predictions", "write_scores"]


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


def print_scores(scores: dict) -> None:
    """Per-class scores as a table, then one ``name: value`` line per overall score.

    >>> print_scores({"n_images": 3, "miou": 0.5})
    n_images: 3
    miou: 0.5000
    """
    per_class = {k: v for k, v in scores.items() if isinstance(v, dict)}
    if per_class:
        import pandas as pd

        print(pd.DataFrame(per_class).to_string(float_format=lambda v: f"{v:.4f}"))
    for name, value in scores.items():
        if not isinstance(value, dict):
            print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")


def write_scores(scores: dict, path: str | os.PathLike | None) -> None:
    """Write `scores` as JSON to `path` (``--json``; nothing when ``None``) and say so.

    >>> write_scores({"miou": 0.5}, None)
    """
    if path is None:
        return
    import json

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(scores, indent=2))
    print(f"scores written to {path}")


def require_predictions(n_files: int, n_predicted: int, paths) -> None:
    """No image found, or none of them readable, is a failure (exit 2), not an empty success.

    >>> require_predictions(0, 0, ["empty/"])
    Traceback (most recent call last):
    ...
    easytransfer.errors.DataError: No files found in ['empty/']: give image files or folders that hold images.
    """
    if n_files == 0:
        raise DataError(f"No files found in {paths}: give image files or folders that hold images.")
    if n_predicted == 0:
        raise DataError(f"None of the {n_files} file(s) in {paths} could be predicted (each ERROR line above says "
                        "why): give readable image files.")

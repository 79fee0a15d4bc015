"""What every task's command-line module (``tasks/<task>/cli.py``) shares: the argparse group it adds flags to,
argument types, the image folder of a dense task, and the printed results (scores, a run with nothing predicted).

It sits under ``tasks/`` so that those modules never import the command line (``easytransfer.cli``), which sits
above them and finds them through the registry. Nothing here imports torch.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Protocol

from ..errors import DataError, EasyTransferError

__all__ = ["FlagGroup", "image_folder", "name_list", "print_scores", "require_predictions", "write_scores"]


class FlagGroup(Protocol):
    """What a task's command-line module adds its flags to: an argparse parser or argument group."""

    def add_argument(self, *names: str, **options) -> argparse.Action: ...


def name_list(text: str) -> list[str]:
    """Comma-separated names (class names in id order), for argparse's ``type=``.

    >>> name_list("background, crack")
    ['background', 'crack']
    """
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected comma-separated names such as 'background,crack', got {text!r}")
    return names


def image_folder(args: argparse.Namespace, needed: str) -> Path:
    """The image folder of a dense task: DATA or ``--images`` (one of them); `needed` names the other flag wanted.

    >>> str(image_folder(argparse.Namespace(images=None, data="shapes", task="segmentation"), "--masks DIR"))
    'shapes'
    """
    if args.images and args.data and args.images != args.data:
        raise EasyTransferError(f"Give the images once: DATA ({args.data!r}) or --images ({args.images!r}).")
    images = args.images or args.data
    if images is None:
        raise EasyTransferError(f"--task {args.task} needs the image folder: add --images DIR (and {needed}).")
    return Path(images)


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

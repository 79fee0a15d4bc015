"""Segmentation's part of the ``easytransfer`` command line: its flags, its data and learner, its results.

The command line finds this module through the registry (``Task.cli``); nothing here imports torch at module
level, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...choices import SEGMENTATION_HEADS
from ...errors import EasyTransferError
from ..command_line import FlagGroup, image_folder, name_list, print_scores, require_predictions, write_scores

__all__ = ["DISTRIBUTED", "HEADS", "MODEL_FLAGS", "TRAIN_FLAGS", "add_evaluate_arguments", "add_predict_arguments",
           "add_train_arguments", "build_learner", "check_train_args", "evaluate", "finish_training", "predict"]

HEADS = tuple(SEGMENTATION_HEADS)  # for --head's help
DISTRIBUTED = False  # ``train --nproc``: not tested data-parallel yet
TRAIN_FLAGS = ("masks", "codes", "ignore_index")  # flags only segmentation's training takes
MODEL_FLAGS = ("masks",)  # flags only a segmentation model's evaluate / predict take


def add_train_arguments(group: FlagGroup, command: str) -> None:
    """Add ``--masks``, ``--codes`` and ``--ignore-index`` to `group` (``train`` and ``lr-find`` alike).

    >>> parser = argparse.ArgumentParser(); add_train_arguments(parser, "train")
    >>> parser.parse_args(["--codes", "bg,crack"]).codes
    ['bg', 'crack']
    """
    group.add_argument("--masks", default=None, help="the folder of masks named like the images (one channel of "
                       "class ids)")
    group.add_argument("--codes", type=name_list, default=None,
                       help="class names in id order, e.g. background,crack (default class_0 ...)")
    group.add_argument("--ignore-index", type=int, default=None,
                       help="a mask value that is no class (e.g. 255), not trained on nor scored")


def add_evaluate_arguments(group: FlagGroup) -> None:
    """Add ``--masks`` (the true masks) to ``evaluate``'s `group`."""
    group.add_argument("--masks", default=None, help="the folder of true masks named like the images")


def add_predict_arguments(group: FlagGroup) -> None:
    """Segmentation's ``predict`` takes the shared ``--out`` (the mask folder) and no flag of its own."""


def check_train_args(args: argparse.Namespace) -> None:
    """Segmentation needs its images and masks."""
    image_folder(args, "--masks DIR")
    if args.masks is None:
        raise EasyTransferError("--task segmentation needs the masks: add --masks DIR (a folder of one-channel "
                                "class-id masks named like the images).")


def build_learner(args: argparse.Namespace, *, common: dict, pretrained: dict, head: str):
    """`SegmentationData.from_folders` of the images and masks, and its `segmentation_learner`."""
    from .data import SegmentationData
    from .learner import segmentation_learner

    dls = SegmentationData.from_folders(image_folder(args, "--masks DIR"), args.masks, codes=args.codes,
                                        ignore_index=args.ignore_index, **common)
    return segmentation_learner(dls, args.arch, head, **pretrained)


def finish_training(learn, args: argparse.Namespace, out: Path) -> None:
    """The validation scores (printed and in metrics.json) and the pixel confusion matrix, after `export`."""
    import json

    interp = learn.interpret()
    scores = interp.scores()
    interp.plot_confusion_matrix().savefig(out / "confusion_matrix.png", dpi=100)
    (out / "metrics.json").write_text(json.dumps(scores, indent=2))
    print_scores(scores)
    print(f"written to {out.resolve()} (model/, history.csv, history.png, metrics.json, confusion_matrix.png)")


def evaluate(predictor, args: argparse.Namespace) -> None:
    """mIoU, pixel accuracy, per-class IoU and Dice against ``--masks`` (printed; ``--json``: written)."""
    if args.masks is None:
        raise EasyTransferError(f"{args.model!r} is a segmentation model: add --masks DIR, the true masks named "
                                "like the images.")
    scores = predictor.evaluate(args.data, args.masks, progress=False)
    print_scores(scores)
    write_scores(scores, args.json)


def predict(predictor, args: argparse.Namespace) -> None:
    """One PNG of class ids per image, at the image's size, under ``--out`` (sub-folders kept)."""
    import pandas as pd

    if args.out is None:
        raise EasyTransferError(f"{args.model!r} is a segmentation model: add --out DIR, the folder for one mask PNG "
                                "(class ids) per image.")
    if args.csv:
        raise EasyTransferError("--csv is for classification and detection models; a segmentation model writes "
                                "mask PNGs to --out.")
    tables = [predictor.predict_folder(raw, args.out) for raw in args.paths]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["path", "mask", "error"])
    for row in table.itertuples():
        print(f"{row.path}\tERROR\t{row.error}" if row.error else f"{row.path}\t{row.mask}")
    written = int((table["error"] == "").sum())
    require_predictions(len(table), written, args.paths)
    print(f"{written} masks (class ids {', '.join(f'{i}={c}' for i, c in enumerate(predictor.vocab))}) "
          f"written to {args.out}")

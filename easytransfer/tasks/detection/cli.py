"""Detection's part of the ``easytransfer`` command line: its flags, its data and learner, its results.

The command line finds this module through the registry (``Task.cli``); nothing here imports torch at module
level, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...choices import ANNOTATION_FORMATS, DEFAULT_DETECTION_SIZE, DETECTION_HEADS, INSTANCE_HEADS
from ...errors import EasyTransferError
from ..command_line import FlagGroup, image_folder, name_list, print_scores, require_predictions, write_scores

__all__ = ["CSV_COLUMNS", "DISTRIBUTED", "HEADS", "MODEL_FLAGS", "TRAIN_FLAGS", "add_evaluate_arguments",
           "add_predict_arguments", "add_train_arguments", "build_learner", "check_train_args", "evaluate",
           "finish_training", "predict"]

HEADS = DETECTION_HEADS  # for --head's help
DISTRIBUTED = False  # ``train --nproc``: not tested data-parallel yet
TRAIN_FLAGS = ("annotations", "format", "names")  # flags only detection's training takes
MODEL_FLAGS = ("annotations", "format", "names", "tta")  # and its evaluate / predict
CSV_COLUMNS = ["path", "label", "score", "x1", "y1", "x2", "y2"]  # ``predict --csv``: one row per box


def _annotation_arguments(group: FlagGroup, names_help: str) -> None:
    group.add_argument("--annotations", default=None, help="a folder of VOC .xml or YOLO .txt files, or a COCO "
                       ".json file")
    group.add_argument("--format", choices=ANNOTATION_FORMATS, default=None,
                       help="the annotation format (default: from the files)")
    group.add_argument("--names", type=name_list, default=None, help=names_help)


def add_train_arguments(group: FlagGroup, command: str) -> None:
    """Add ``--annotations``, ``--format`` and ``--names`` to `group` (``train`` and ``lr-find`` alike).

    >>> parser = argparse.ArgumentParser(); add_train_arguments(parser, "train")
    >>> parser.parse_args(["--format", "voc"]).format
    'voc'
    """
    _annotation_arguments(group, "class names in id order (needed for YOLO; VOC / COCO: the classes kept)")


def _tta_argument(group: FlagGroup) -> None:
    group.add_argument("--tta", action="store_const", const=True, default=None,
                       help="also detect on each image's horizontal flip and merge the boxes (twice the time)")


def add_evaluate_arguments(group: FlagGroup) -> None:
    """Add ``--annotations``, ``--format``, ``--names`` (YOLO ids) and ``--tta`` to ``evaluate``'s `group`."""
    _annotation_arguments(group, "YOLO: class names in id order (default the model's classes)")
    _tta_argument(group)


def add_predict_arguments(group: FlagGroup) -> None:
    """Detection's ``predict`` takes the shared ``--csv``, ``--out`` (drawn boxes) and ``--threshold``, and ``--tta``
    (the horizontal flip's boxes merged in: `flip_tta`).

    >>> parser = argparse.ArgumentParser(); add_predict_arguments(parser)
    >>> parser.parse_args(["--tta"]).tta, parser.parse_args([]).tta
    (True, None)
    """
    _tta_argument(group)


def check_train_args(args: argparse.Namespace) -> None:
    """Detection needs its images and annotations."""
    image_folder(args, "--annotations DIR|FILE")
    if args.annotations is None:
        raise EasyTransferError("--task detection needs the boxes: add --annotations DIR|FILE (VOC .xml folder, "
                                "COCO .json file or YOLO .txt folder; --format voc|coco|yolo if not clear).")


def build_learner(args: argparse.Namespace, *, common: dict, pretrained: dict, head: str):
    """`DetectionData.from_annotations` of the images and boxes (default size `DEFAULT_DETECTION_SIZE`; with their
    instance masks for ``--head maskrcnn``), and its `detection_learner`."""
    from .data import DetectionData
    from .learner import detection_learner

    common = {**common, "size": common.get("size") or DEFAULT_DETECTION_SIZE}
    dls = DetectionData.from_annotations(image_folder(args, "--annotations DIR|FILE"), args.annotations,
                                         format=args.format, names=args.names, masks=head in INSTANCE_HEADS,
                                         **common)
    return detection_learner(dls, args.arch, head, **pretrained)


def finish_training(learn, args: argparse.Namespace, out: Path) -> None:
    """The validation scores (printed and in metrics.json), after `export`."""
    import json

    scores = learn.evaluate()
    (out / "metrics.json").write_text(json.dumps(scores, indent=2))
    print_scores(scores)
    print(f"written to {out.resolve()} (model/, history.csv, history.png, metrics.json)")


def evaluate(predictor, args: argparse.Namespace) -> None:
    """COCO mAP@0.5, mAP@0.5:0.95 and per-class AP against ``--annotations`` (printed; ``--json``: written)."""
    if args.annotations is None:
        raise EasyTransferError(f"{args.model!r} is a detection model: add --annotations DIR|FILE (VOC .xml "
                                "folder, COCO .json file or YOLO .txt folder).")
    scores = predictor.evaluate(args.data, args.annotations, format=args.format, names=args.names,
                                tta=bool(args.tta))
    print_scores(scores)
    write_scores(scores, args.json)


def predict(predictor, args: argparse.Namespace) -> None:
    """``path, label, score, x1, y1, x2, y2`` per box in the image's pixels (``--csv``: written; ``--out``: each
    image with its boxes drawn)."""
    import pandas as pd

    tables = [predictor.predict_folder(raw, out=args.out, tta=bool(args.tta)) for raw in args.paths]
    table = pd.concat(tables, ignore_index=True)
    for row in table[table["error"].notna()].itertuples():
        print(f"{row.path}\tERROR\t{row.error}")
    boxes = table[table["label"].notna()][CSV_COLUMNS].copy()
    boxes["score"] = boxes["score"].round(4)
    boxes[CSV_COLUMNS[3:]] = boxes[CSV_COLUMNS[3:]].round(1)
    for row in boxes.itertuples(index=False):
        print("\t".join(str(v) for v in row))
    require_predictions(table["path"].nunique(), table.loc[table["error"].isna(), "path"].nunique(), args.paths)
    if args.out:
        print(f"images with their boxes drawn written to {args.out}")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        boxes.to_csv(args.csv, index=False)
        print(f"{len(boxes)} boxes written to {args.csv}")

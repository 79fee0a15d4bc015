"""``easytransfer evaluate``, ``predict`` and ``export``: the commands that use a saved model bundle."""

from __future__ import annotations

import json
from pathlib import Path

from ..choices import ANNOTATION_FORMATS
from ..errors import DataError, EasyTransferError
from .arguments import TASKS, name_list
from .outputs import output_file, output_folder

__all__ = ["HANDLERS", "add_parsers", "bundle_task", "print_scores"]


def _task_arg(p) -> None:
    p.add_argument("--task", choices=TASKS, default=None,
                   help="classification, segmentation or detection; default: what the bundle says (an error if "
                   "it says another)")


def add_parsers(commands) -> None:
    """Add ``evaluate``, ``predict`` and ``export`` to `commands` (the sub-parsers of `build_parser`)."""
    evaluate = commands.add_parser("evaluate", help="the scores of a model on labelled images",
                                   description="Classification: predict a folder of class sub-folders and print "
                                   "the per-class table and the accuracy. Segmentation (--masks): mIoU, pixel "
                                   "accuracy, per-class IoU and Dice. Detection (--annotations): COCO mAP@0.5, "
                                   "mAP@0.5:0.95 and per-class AP. The task is the bundle's.")
    evaluate.add_argument("model", help="a model bundle folder (learn.export / easytransfer train)")
    evaluate.add_argument("data", help="a folder of class sub-folders; segmentation / detection: the image folder")
    _task_arg(evaluate)
    evaluate.add_argument("--masks", default=None, help="segmentation: the folder of true masks named like the images")
    evaluate.add_argument("--annotations", default=None,
                          help="detection: a folder of VOC .xml or YOLO .txt files, or a COCO .json file")
    evaluate.add_argument("--format", choices=ANNOTATION_FORMATS, default=None,
                          help="detection: the annotation format (default: from the files)")
    evaluate.add_argument("--names", type=name_list, default=None,
                          help="detection, YOLO: class names in id order (default the model's classes)")
    evaluate.add_argument("--json", default=None, metavar="PATH", help="segmentation / detection: also write the "
                          "scores to this JSON file")

    predict = commands.add_parser("predict", help="predict images or folders with a model bundle",
                                  description="Classification: print path, label and probability for each image "
                                  "(folders streamed in batches). Segmentation: write one mask PNG of class ids per "
                                  "image to --out. Detection: print (and --csv: write) path,label,score,x1,y1,x2,y2 "
                                  "per box.")
    predict.add_argument("model", help="a model bundle folder")
    predict.add_argument("paths", nargs="+", help="image files or folders")
    _task_arg(predict)
    predict.add_argument("--csv", default=None, help="also write every prediction here (classification: all class "
                         "probabilities; detection: one row per box)")
    predict.add_argument("--out", default=None, help="segmentation: the folder for the mask PNGs (required)")
    predict.add_argument("--threshold", type=float, default=0.5,
                         help="detection: the lowest score of a box kept; multi-label: of a label (default 0.5)")
    predict.add_argument("--alpha", type=float, default=None,
                         help="classification: also print each image's conformal set of labels, which holds the true "
                         "one with probability >= 1 - alpha (needs a bundle exported after learn.conformal(...))")

    export = commands.add_parser("export", help="convert a model bundle to ONNX or TorchScript",
                                 description="Write the bundle's model (classification or segmentation; not "
                                 "detection) as ONNX (onnxruntime) or TorchScript; both run without easytransfer.")
    export.add_argument("model", help="a model bundle folder")
    kind = export.add_mutually_exclusive_group(required=True)
    kind.add_argument("--onnx", nargs="?", const="", metavar="PATH", help="ONNX file (default MODEL/model.onnx)")
    kind.add_argument("--torchscript", nargs="?", const="", metavar="PATH", help="TorchScript file (default "
                      "MODEL/model.pt)")


def bundle_task(config, wanted: str | None) -> str:
    """``"classification"``, ``"segmentation"`` or ``"detection"``: what the bundle's config says; `wanted` (the
    --task flag) must agree with it."""
    task = config.task if config.task in ("segmentation", "detection") else "classification"
    if wanted is not None and wanted != task:
        raise EasyTransferError(f"--task {wanted} does not match the model: its bundle is a {task} model; drop "
                                f"--task (the bundle says it) or use a {wanted} bundle.")
    return task


def _other_task_flags(args, task: str) -> None:
    flags = {"segmentation": ("masks", "out"), "detection": ("annotations", "format", "names")}
    for owner, names in flags.items():
        used = ["--" + n for n in names if getattr(args, n, None) is not None]
        if used and owner != task:
            raise EasyTransferError(f"{' '.join(used)} {'is' if len(used) == 1 else 'are'} for a {owner} model, and "
                                    f"{args.model!r} is a {task} model; leave {'it' if len(used) == 1 else 'them'} "
                                    "out.")


def print_scores(scores: dict) -> None:
    """Per-class scores as a table, then one ``name: value`` line per overall score."""
    import pandas as pd

    per_class = {k: v for k, v in scores.items() if isinstance(v, dict)}
    if per_class:
        print(pd.DataFrame(per_class).to_string(float_format=lambda v: f"{v:.4f}"))
    for name, value in scores.items():
        if not isinstance(value, dict):
            print(f"{name}: {value:.4f}" if isinstance(value, float) else f"{name}: {value}")


def _load(args):
    from ..deploy.bundle import read_bundle_config
    from ..tasks.loading import load_model

    task = bundle_task(read_bundle_config(args.model), args.task)
    _other_task_flags(args, task)
    return task, load_model(args.model, threshold=getattr(args, "threshold", 0.5))


def _evaluate(args) -> None:
    if args.json:
        output_file(args.json, "--json", "scores.json")
    task, predictor = _load(args)
    if task == "classification":
        if args.json:
            raise EasyTransferError("--json is for segmentation and detection models; a classifier's table is printed.")
        _evaluate_classifier(predictor, Path(args.data))
        return
    if task == "segmentation":
        if args.masks is None:
            raise EasyTransferError(f"{args.model!r} is a segmentation model: add --masks DIR, the true masks named "
                                    "like the images.")
        scores = predictor.evaluate(args.data, args.masks, progress=False)
    else:
        if args.annotations is None:
            raise EasyTransferError(f"{args.model!r} is a detection model: add --annotations DIR|FILE (VOC .xml "
                                    "folder, COCO .json file or YOLO .txt folder).")
        scores = predictor.evaluate(args.data, args.annotations, format=args.format, names=args.names)
    print_scores(scores)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(scores, indent=2))
        print(f"scores written to {args.json}")


def _evaluate_classifier(predictor, folder: Path) -> None:
    """The per-class table and the accuracy on a folder of class sub-folders (the layout is checked first)."""
    if not folder.is_dir():
        raise DataError(f"Data folder {str(folder)!r} does not exist or is not a folder.")
    interp = predictor.interpret(folder)  # the layout and the files are checked before any inference
    print(interp.per_class().to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"accuracy: {interp.accuracy:.4f} on {len(interp.targs)} images")


def _image_files(raw_paths) -> list[tuple[Path, Path]]:
    """``(file, path relative to the argument's folder)`` of every image the arguments name."""
    from ..data.sources import candidate_files

    files = []
    for raw in raw_paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{raw!r} does not exist.")
        if path.is_file():
            files.append((path, Path(path.name)))
        else:
            files += [(Path(f), Path(f).relative_to(path)) for f in candidate_files(path)]
    return files


def _predict(args) -> None:
    if args.csv:
        output_file(args.csv, "--csv", "predictions.csv")
    if args.out:
        output_folder(args.out, "--out")
    task, predictor = _load(args)
    if task == "segmentation":
        _predict_masks(predictor, args)
    elif task == "detection":
        _predict_boxes(predictor, args)
    else:
        _predict_labels(predictor, args)


def _predict_labels(predictor, args) -> None:
    import pandas as pd

    tables = []
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{raw!r} does not exist.")
        tables.append(predictor.predict_folder(path, alpha=args.alpha))
    table = pd.concat(tables, ignore_index=True)
    for row in table.itertuples():
        if not pd.isna(row.error):
            print(f"{row.path}\tERROR\t{row.error}")
        elif args.alpha is None:
            print(f"{row.path}\t{row.label}\t{row.probability:.4f}")
        else:
            print(f"{row.path}\t{row.label}\t{row.probability:.4f}\t{{{row.set}}}")
    _require_predictions(len(table), int(table["error"].isna().sum()), args.paths)
    if args.alpha is not None:
        sizes = table["set_size"].dropna()
        print(f"alpha={args.alpha}: {int((sizes > 1).sum())} of {len(sizes)} images have more than one label in "
              "their set (send those to a person)")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"{len(table)} predictions written to {args.csv}")


def _require_predictions(n_files: int, n_predicted: int, paths) -> None:
    """No image found, or none of them readable, is a failure (exit 2), not an empty success."""
    if n_files == 0:
        raise DataError(f"No files found in {paths}: give image files or folders that hold images.")
    if n_predicted == 0:
        raise DataError(f"None of the {n_files} file(s) in {paths} could be predicted (each ERROR line above says "
                        "why): give readable image files.")


def _predict_masks(predictor, args) -> None:
    """One PNG of class ids per image, at the image's size, under --out (sub-folders kept)."""
    import numpy as np
    from PIL import Image

    if args.out is None:
        raise EasyTransferError(f"{args.model!r} is a segmentation model: add --out DIR, the folder for one mask PNG "
                                "(class ids) per image.")
    if args.csv:
        raise EasyTransferError("--csv is for classification and detection models; a segmentation model writes "
                                "mask PNGs to --out.")
    out = Path(args.out)
    files = _image_files(args.paths)
    written = 0
    for path, relative in files:
        try:
            mask = predictor.predict(path)
        except Exception as e:  # an unreadable image is reported and skipped, as predict_folder does
            print(f"{path}\tERROR\t{type(e).__name__}: {e}".splitlines()[0])
            continue
        target = out / relative.with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        if mask.dtype != np.uint8:  # more than 256 classes: 16-bit PNG
            mask = mask.astype(np.uint16)
        Image.fromarray(mask).save(target)
        written += 1
        print(f"{path}\t{target}")
    _require_predictions(len(files), written, args.paths)
    print(f"{written} masks (class ids {', '.join(f'{i}={c}' for i, c in enumerate(predictor.vocab))}) "
          f"written to {out}")


def _predict_boxes(predictor, args) -> None:
    """``path, label, score, x1, y1, x2, y2`` per box, in the image's pixels."""
    import csv

    rows = []
    files = _image_files(args.paths)
    n_predicted = 0
    for path, _ in files:
        try:
            found = predictor.predict(str(path))
        except Exception as e:  # an unreadable image is reported and skipped
            print(f"{path}\tERROR\t{type(e).__name__}: {e}".splitlines()[0])
            continue
        n_predicted += 1
        rows += [(str(path), label, round(score, 4), *(round(v, 1) for v in box)) for label, score, box in found]
    for row in rows:
        print("\t".join(str(v) for v in row))
    _require_predictions(len(files), n_predicted, args.paths)
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["path", "label", "score", "x1", "y1", "x2", "y2"])
            writer.writerows(rows)
        print(f"{len(rows)} boxes written to {args.csv}")


def _export(args) -> None:
    for flag, given, example in (("--onnx", args.onnx, "model.onnx"), ("--torchscript", args.torchscript, "model.pt")):
        if given:
            output_file(given, flag, example)
    from ..deploy.convert import export_onnx, export_torchscript
    from ..tasks.loading import load_model

    predictor = load_model(args.model)
    predictor.check_exportable("ONNX" if args.onnx is not None else "TorchScript")  # the task says whether it can
    size = predictor.config.preprocessing.size
    if args.onnx is not None:
        path = export_onnx(predictor.model, args.onnx or Path(args.model) / "model.onnx", size)
    else:
        path = export_torchscript(predictor.model, args.torchscript or Path(args.model) / "model.pt", size)
    print(f"written {path}")


HANDLERS = {"evaluate": _evaluate, "predict": _predict, "export": _export}

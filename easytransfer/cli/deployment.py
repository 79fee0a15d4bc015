"""``easytransfer evaluate``, ``predict`` and ``export``: the commands that use a saved model bundle."""

from __future__ import annotations

from pathlib import Path

from ..errors import EasyTransferError
from ..tasks.command_line import print_scores as print_scores  # the scores table the tasks print
from ..tasks.registry import available_tasks
from .arguments import flag, task_cli, task_names
from .outputs import output_file, output_folder

__all__ = ["HANDLERS", "add_parsers", "bundle_task", "print_scores"]


def _task_arg(p) -> None:
    p.add_argument("--task", choices=task_names(), default=None,
                   help="the model's task; default: what the bundle says (an error if it says another)")


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
    evaluate.add_argument("--json", default=None, metavar="PATH", help="segmentation / detection: also write the "
                          "scores to this JSON file")
    for task in available_tasks():
        task_cli(task.name).add_evaluate_arguments(evaluate.add_argument_group(f"a {task.name} model"))

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
    predict.add_argument("--out", default=None, help="segmentation: the folder for the mask PNGs (required); "
                         "detection: also write each image with its boxes drawn here")
    predict.add_argument("--threshold", type=float, default=0.5,
                         help="detection: the lowest score of a box kept; multi-label: of a label (default 0.5)")
    for task in available_tasks():
        task_cli(task.name).add_predict_arguments(predict.add_argument_group(f"a {task.name} model"))

    export = commands.add_parser("export", help="convert a model bundle to ONNX or TorchScript",
                                 description="Write the bundle's model as ONNX (onnxruntime) or TorchScript; both run "
                                 "without easytransfer. A detector's file takes one image of the bundle's size and "
                                 "gives boxes, scores and labels.")
    export.add_argument("model", help="a model bundle folder")
    kind = export.add_mutually_exclusive_group(required=True)
    kind.add_argument("--onnx", nargs="?", const="", metavar="PATH", help="ONNX file (default MODEL/model.onnx)")
    kind.add_argument("--torchscript", nargs="?", const="", metavar="PATH", help="TorchScript file (default "
                      "MODEL/model.pt)")


def bundle_task(config, wanted: str | None) -> str:
    """The task the bundle's config says (its ``task``); `wanted` (the --task flag) must agree with it."""
    task = config.task
    if wanted is not None and wanted != task:
        raise EasyTransferError(f"--task {wanted} does not match the model: its bundle is a {task} model; drop "
                                f"--task (the bundle says it) or use a {wanted} bundle.")
    return task


def _other_task_flags(args, task: str) -> None:
    """Flags only another task's models take are an error that names them."""
    for owner in available_tasks():
        used = [flag(n) for n in task_cli(owner.name).MODEL_FLAGS if getattr(args, n, None) is not None]
        if used and owner.name != task:
            raise EasyTransferError(f"{' '.join(used)} {'is' if len(used) == 1 else 'are'} for a {owner.name} model, "
                                    f"and {args.model!r} is a {task} model; leave {'it' if len(used) == 1 else 'them'} "
                                    "out.")


def _load(args):
    from ..tasks.loading import load_model, read_model_config

    task = bundle_task(read_model_config(args.model), args.task)
    _other_task_flags(args, task)
    return task, load_model(args.model, threshold=getattr(args, "threshold", 0.5))


def _evaluate(args) -> None:
    if args.json:
        output_file(args.json, "--json", "scores.json")
    task, predictor = _load(args)
    task_cli(task).evaluate(predictor, args)


def _predict(args) -> None:
    if args.csv:
        output_file(args.csv, "--csv", "predictions.csv")
    if args.out:
        output_folder(args.out, "--out")
    task, predictor = _load(args)
    task_cli(task).predict(predictor, args)


def _export(args) -> None:
    for flag_name, given, example in (("--onnx", args.onnx, "model.onnx"),
                                      ("--torchscript", args.torchscript, "model.pt")):
        if given:
            output_file(given, flag_name, example)
    from ..tasks.loading import load_model

    predictor = load_model(args.model)  # the task's predictor writes its model (and says when it cannot)
    if args.onnx is not None:
        path = predictor.export_onnx(args.onnx or Path(args.model) / "model.onnx")
    else:
        path = predictor.export_torchscript(args.torchscript or Path(args.model) / "model.pt")
    print(f"written {path}")


HANDLERS = {"evaluate": _evaluate, "predict": _predict, "export": _export}

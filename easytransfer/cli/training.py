"""``easytransfer train``, ``lr-find`` and ``demo``: the commands that fit a model."""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
from pathlib import Path

from ..choices import (
    ANNOTATION_FORMATS,
    AUG_PRESETS,
    DEFAULT_DETECTION_BS,
    DEFAULT_DETECTION_SIZE,
    DETECTION_HEADS,
    PRECISIONS,
    SEGMENTATION_HEADS,
)
from ..errors import EasyTransferError
from .arguments import TASKS, learning_rate, name_list, non_negative_int, positive_int
from .launch import add_distributed_args, announce_world, needs_launch, run_under_torchrun
from .outputs import output_file, output_folder

__all__ = ["HANDLERS", "add_parsers"]


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", nargs="?", default=None,
                   help="classification: a folder of class sub-folders (or train/ + valid/), or a CSV with path,label "
                   "columns; segmentation / detection: the image folder (or --images)")
    p.add_argument("--task", choices=TASKS, default="classification",
                   help="classification (default), segmentation (--masks) or detection (--annotations)")
    p.add_argument("--arch", default="efficientnet_lite0", help="architecture (default efficientnet_lite0)")
    p.add_argument("--valid-pct", type=float, default=0.2, help="validation share per class (default 0.2)")
    p.add_argument("--test-pct", type=float, default=0.0,
                   help="classification: share of each class held out as a test set, scored after training "
                   "(default 0: none)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and the training (default 42)")
    p.add_argument("--fn-col", default="path", help="CSV data: the column of image files (default path)")
    p.add_argument("--label-col", default="label", help="CSV data: the column of labels (default label)")
    p.add_argument("--bs", type=positive_int, default=None,
                   help=f"batch size (default 16; segmentation 8, detection {DEFAULT_DETECTION_BS})")
    p.add_argument("--size", type=positive_int, default=None,
                   help=f"image size (default: the model's; segmentation: a multiple of 32; detection "
                   f"{DEFAULT_DETECTION_SIZE})")
    p.add_argument("--aug", choices=AUG_PRESETS, default=None,
                   help="augmentation preset (default light, flips for segmentation and detection; flips also for "
                   "inspection images with small defects; detection has no strong)")
    p.add_argument("--weights", default=None, help="a local .safetensors / .pth weights file for --arch")
    p.add_argument("--random-init", action="store_true", help="no pre-trained weights (for tests and baselines)")
    dense = p.add_argument_group("segmentation and detection")
    dense.add_argument("--images", default=None, help="the image folder (instead of DATA)")
    dense.add_argument("--head", default=None, help=f"segmentation: {', '.join(SEGMENTATION_HEADS)} (default unet); "
                       f"detection: {', '.join(DETECTION_HEADS)} (default fasterrcnn)")
    dense.add_argument("--masks", default=None, help="segmentation: the folder of masks named like the images "
                       "(one channel of class ids)")
    dense.add_argument("--codes", type=name_list, default=None,
                       help="segmentation: class names in id order, e.g. background,crack (default class_0 ...)")
    dense.add_argument("--ignore-index", type=int, default=None,
                       help="segmentation: a mask value that is no class (e.g. 255), not trained on nor scored")
    dense.add_argument("--annotations", default=None, help="detection: a folder of VOC .xml or YOLO .txt files, or "
                       "a COCO .json file")
    dense.add_argument("--format", choices=ANNOTATION_FORMATS, default=None,
                       help="detection: the annotation format (default: from the files)")
    dense.add_argument("--names", type=name_list, default=None,
                       help="detection: class names in id order (needed for YOLO; VOC / COCO: the classes kept)")


def add_parsers(commands) -> None:
    """Add ``train``, ``lr-find`` and ``demo`` to `commands` (the sub-parsers of `build_parser`)."""
    train = commands.add_parser("train", help="the whole recipe on your images; writes a model bundle and a report",
                                description="Train the head with the body frozen, unfreeze, fine-tune with "
                                "discriminative learning rates, and write the model bundle, history, plots and an "
                                "HTML report to --out.")
    _data_args(train)
    train.add_argument("--frozen-epochs", type=non_negative_int, default=3, help="head-only epochs (default 3)")
    train.add_argument("--epochs", type=non_negative_int, default=5, help="fine-tuning epochs (default 5; 0: none)")
    train.add_argument("--lr", type=learning_rate, default=None, help="head learning rate, or 'find' (default 3e-3)")
    train.add_argument("--lr-max", type=learning_rate, default=1e-3,
                       help="fine-tuning head rate, or 'find' (default 1e-3)")
    train.add_argument("--out", default=None, help="output folder (default easytransfer_runs/train-<time>); "
                       "checkpoints go to OUT/checkpoints until the model is exported")
    train.add_argument("--resume", action="store_true",
                       help="continue the interrupted run in --out from its checkpoints (same data and arguments)")
    train.add_argument("--test", default=None, metavar="DIR",
                       help="classification: a folder of class sub-folders held out for testing; scored after "
                       "training (instead of --test-pct)")
    train.add_argument("--mixed-precision", choices=PRECISIONS, default="no",
                       help="fp16 or bf16 mixed precision on a GPU (fastai's to_fp16 / to_bf16); ignored on the CPU")
    add_distributed_args(train)

    lr_find = commands.add_parser("lr-find", help="sweep the learning rate and print the suggestions",
                                  description="Run the LR finder on DATA (body frozen unless --unfrozen) and print "
                                  "valley / steep / minimum / slide; --plot writes the curve.")
    _data_args(lr_find)
    lr_find.add_argument("--unfrozen", action="store_true", help="sweep with every layer group unfrozen")
    lr_find.add_argument("--num-it", type=positive_int, default=None,
                         help="iterations (default 100 frozen, 50 unfrozen)")
    lr_find.add_argument("--plot", default=None, help="write the plot to this PNG file")

    demo = commands.add_parser(
        "demo",
        help="train EfficientNet-Lite0 (real ImageNet weights, offline) on a textile-inspection task",
        description="Offline demo: EfficientNet-Lite0 with packaged ImageNet weights learns to tell nominal "
        "textile images from local and global defects (conformal-clip-data), then reports on held-out "
        "test images.",
    )
    demo.add_argument("--epochs", type=positive_int, default=4, help="fine-tuning epochs after unfreezing (default 4)")
    demo.add_argument("--frozen-epochs", type=positive_int, default=3, help="head-only epochs first (default 3)")
    demo.add_argument("--limit", type=non_negative_int, default=150, help="images per class, 0 for all (default 150)")
    demo.add_argument("--out", default=None, help="output folder (default easytransfer_runs/demo-<time>)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the sampling and the splits")
    demo.add_argument("--bs", type=positive_int, default=16, help="batch size (default 16)")


_DEFAULTS = {  # batch size, augmentation preset, head per task (the library's own defaults)
    "classification": (16, "light", None),
    "segmentation": (8, "flips", "unet"),
    "detection": (DEFAULT_DETECTION_BS, "flips", "fasterrcnn"),
}
_TASK_FLAGS = {"segmentation": ("masks", "codes", "ignore_index"), "detection": ("annotations", "format", "names")}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _check_task_flags(args) -> None:
    """Flags of another task are an error that names the flag and the --task it belongs to."""
    for task, names in _TASK_FLAGS.items():
        used = [_flag(n) for n in names if getattr(args, n) is not None]
        if used and args.task != task:
            raise EasyTransferError(f"{' '.join(used)} {'is' if len(used) == 1 else 'are'} for --task {task}; add "
                                    f"--task {task}, or leave {'it' if len(used) == 1 else 'them'} out.")
    if args.task == "classification":
        extra = [_flag(n) for n in ("images", "head") if getattr(args, n) is not None]
        if extra:
            raise EasyTransferError(f"{' '.join(extra)} {'is' if len(extra) == 1 else 'are'} for --task "
                                    "segmentation or detection; a classifier reads DATA (a folder or a CSV).")
        if args.data is None:
            raise EasyTransferError("Give DATA: a folder of class sub-folders or a CSV with path,label columns "
                                    "(or --task segmentation / detection with --images).")


def _images(args) -> Path:
    if args.images and args.data and args.images != args.data:
        raise EasyTransferError(f"Give the images once: DATA ({args.data!r}) or --images ({args.images!r}).")
    images = args.images or args.data
    if images is None:
        needed = "--masks DIR" if args.task == "segmentation" else "--annotations DIR|FILE"
        raise EasyTransferError(f"--task {args.task} needs the image folder: add --images DIR (and {needed}).")
    return Path(images)


def _learner(args):
    _check_task_flags(args)  # before importing torch: a wrong flag fails at once
    from fastai.torch_core import set_seed

    set_seed(args.seed)
    bs, aug, head = _DEFAULTS[args.task]
    common = dict(bs=args.bs or bs, size=args.size, aug=args.aug or aug, seed=args.seed, valid_pct=args.valid_pct)
    pretrained = dict(pretrained=not args.random_init, weights=args.weights)
    if args.task == "segmentation":
        from ..tasks.segmentation.data import SegmentationData
        from ..tasks.segmentation.learner import segmentation_learner

        images = _images(args)
        if args.masks is None:
            raise EasyTransferError("--task segmentation needs the masks: add --masks DIR (a folder of one-channel "
                                    "class-id masks named like the images).")
        dls = SegmentationData.from_folders(images, args.masks, codes=args.codes, ignore_index=args.ignore_index,
                                            **common)
        return segmentation_learner(dls, args.arch, args.head or head, **pretrained)
    if args.task == "detection":
        from ..tasks.detection.data import DetectionData
        from ..tasks.detection.learner import detection_learner

        images = _images(args)
        if args.annotations is None:
            raise EasyTransferError("--task detection needs the boxes: add --annotations DIR|FILE (VOC .xml folder, "
                                    "COCO .json file or YOLO .txt folder; --format voc|coco|yolo if not clear).")
        if common["size"] is None:
            common["size"] = DEFAULT_DETECTION_SIZE
        dls = DetectionData.from_annotations(images, args.annotations, format=args.format, names=args.names,
                                             **common)
        return detection_learner(dls, args.arch, args.head or head, **pretrained)

    from ..data.loaders import ImageData
    from ..tasks.classification.learner import transfer_learner

    data = Path(args.data)
    if args.test_pct:
        common["test_pct"] = args.test_pct
    if data.suffix.lower() == ".csv":
        dls = ImageData.from_csv(data, fn_col=args.fn_col, label_col=args.label_col, **common)
    else:
        dls = ImageData.from_folder(data, **common)
    return transfer_learner(dls, args.arch, seed=args.seed, **pretrained)


def _fit(learn, args, checkpoints: Path) -> None:
    """The recipe's stages (`_fit_stages`), in mixed precision when asked (a GPU only) and data-parallel under
    torchrun (`TransferLearner.distributed`; a plain process is unchanged)."""
    if args.mixed_precision != "no":  # a GPU only; on the CPU one line says it is off
        {"fp16": learn.to_fp16, "bf16": learn.to_bf16}[args.mixed_precision]()
    with learn.distributed(verbose=False):  # `announce_world` said it at the start
        _fit_stages(learn, args, checkpoints)


def _fit_stages(learn, args, checkpoints: Path) -> None:
    """The head with the body frozen, then everything with discriminative rates; each stage checkpoints into its
    own folder under `checkpoints` and, with ``--resume``, continues from it."""
    if args.frozen_epochs:
        learn.checkpoint_dir = checkpoints / "frozen"
        learn.fit_frozen(args.frozen_epochs, lr=args.lr, resume=_resumable(args, learn.checkpoint_dir))
    if args.epochs:
        learn.unfreeze()
        learn.checkpoint_dir = checkpoints / "fine-tune"
        learn.fit_discriminative(args.epochs, lr_max=args.lr_max, resume=_resumable(args, learn.checkpoint_dir))


def _resumable(args, folder: Path) -> bool:
    from ..train.checkpoint import LAST_NAME

    return bool(args.resume) and (folder / LAST_NAME).is_file()


def _checkpoint_folder(args, out: Path) -> Path:
    checkpoints = out / "checkpoints"
    if args.resume and not checkpoints.is_dir():
        raise EasyTransferError(f"--resume: {str(out)!r} has no checkpoints/ folder, so there is nothing to resume; "
                                "give the --out of the interrupted run, or leave --resume out.")
    return checkpoints


def _bars_to_stderr():
    """On a terminal, fastai's bars and epoch table (progress, not results) go to standard error, so standard
    output holds only the results; piped, `_bars_on_a_terminal` already shows no bars."""
    return contextlib.redirect_stdout(sys.stderr) if sys.stdout.isatty() else contextlib.nullcontext()


@contextlib.contextmanager
def _bars_on_a_terminal(learn):
    """fastai's epoch bars only when standard output is a terminal; piped or redirected, one plain line per epoch
    (``epoch 0  train_loss 1.0536  valid_loss 1.1386  accuracy 0.3333  time 00:00``) instead of bars."""
    if sys.stdout.isatty():
        yield
        return

    def epoch_line(log) -> None:
        names = learn.recorder.metric_names
        print("  ".join(f"{name} {value:.4f}" if isinstance(value, float) else f"{name} {value}"
                        for name, value in zip(names, log)), flush=True)

    logger, learn.logger = learn.logger, epoch_line
    try:
        with learn.no_bar():
            yield
    finally:
        learn.logger = logger


def _write_history(learn, out: Path) -> None:
    learn.history.to_csv(out / "history.csv", index=False)
    if len(learn.history):
        learn.plot_history().savefig(out / "history.png", dpi=100)


def _train(args) -> None:
    import time

    if args.resume and not args.out:
        raise EasyTransferError("--resume needs the --out folder of the interrupted run.")
    out = output_folder(args.out, "--out") if args.out else Path("easytransfer_runs") / time.strftime(
        "train-%Y%m%d-%H%M%S")
    checkpoints = _checkpoint_folder(args, out)
    _check_test_flags(args)
    if args.test and not Path(args.test).is_dir():
        raise EasyTransferError(f"--test {args.test!r} is not a folder; give a folder of class sub-folders.")
    if needs_launch(args):  # the ranks get this output folder: their clocks may differ
        run_under_torchrun(args, args.argv, str(out))
        return
    from ..train.distributed import is_main_process, one_process_view

    announce_world()
    main = is_main_process()  # rank 0 of a distributed run (or a plain process) prints and writes
    learn = _learner(args)  # bad data or an unknown architecture fail here, before anything is written
    if main:
        out.mkdir(parents=True, exist_ok=True)
        n_valid = len(learn.dls.valid.dataset)
        test_items = getattr(getattr(learn.dls, "recipe", None), "test_items", None)
        held_out = f", {len(test_items)} held-out test" if test_items is not None else ""
        print(f"{learn.spec.name} ({args.task}): {len(learn.dls.train.dataset)} training, {n_valid} validation"
              f"{held_out} images, classes {list(learn.dls.vocab)}; weights: {learn.spec.weights}")
    with _bars_on_a_terminal(learn):
        try:
            with _bars_to_stderr():
                _fit(learn, args, checkpoints)
        except KeyboardInterrupt:
            if main:
                print(f"Interrupted; the finished epochs are checkpointed in {checkpoints}. Continue with the same "
                      f"command and --resume --out {out}", file=sys.stderr)
            raise
        if not main:
            return
        with one_process_view():  # the other ranks are done: fastai must not wait for them
            _write_outputs(learn, args, out, checkpoints)


def _write_outputs(learn, args, out: Path, checkpoints: Path) -> None:
    learn.export(out / "model")
    shutil.rmtree(checkpoints, ignore_errors=True)  # the bundle is the result; the checkpoints only served a resume
    _write_history(learn, out)
    if args.task != "classification":
        _finish_dense(learn, args, out)
        return
    _finish_classifier(learn, args, out)


def _finish_classifier(learn, args, out: Path) -> None:
    """The validation (and test) tables, the diagnosis, the confusion matrix and the report."""
    interp = learn.interpret()
    test = _test_interpretation(learn, args)  # the report shows the test set when there is one
    shown = test if test is not None else interp
    shown.plot_confusion_matrix().savefig(out / "confusion_matrix.png", dpi=100)
    learn.save_report(out / "report.html", interp=shown)
    print(interp.report())
    print(learn.diagnose())
    print(f"written to {out.resolve()} (model/, history.csv, history.png, confusion_matrix.png, report.html)")
    print(f"valid accuracy: {interp.accuracy:.4f}")
    if test is not None:
        print(f"test set ({len(test.targs)} images, never trained on):")
        print(test.report())
        print(f"test accuracy: {test.accuracy:.4f}")


def _check_test_flags(args) -> None:
    """--test and --test-pct are for classifiers, and one at a time."""
    if (args.test or args.test_pct) and args.task != "classification":
        raise EasyTransferError("--test and --test-pct are for --task classification; segmentation and detection "
                                "read a test/ folder beside train/ and valid/.")
    if args.test and args.test_pct:
        raise EasyTransferError("Give one test set: --test DIR (a folder of class sub-folders) or --test-pct "
                                f"(a share of DATA), not both (got --test {args.test!r} and --test-pct "
                                f"{args.test_pct}).")


def _test_interpretation(learn, args):
    """The interpretation of the held-out test set (--test DIR, --test-pct or DATA's test/ folder), or None."""
    if args.test:
        return learn.interpret(args.test)
    if learn.dls.recipe.test_items is not None:
        learn.evaluate()  # the test split, named so in the report
        return learn.last_interpretation
    return None


def _finish_dense(learn, args, out: Path) -> None:
    """Segmentation and detection: the validation scores (printed and in metrics.json) and their plots."""
    from .deployment import print_scores

    written = ["model/", "history.csv", "history.png", "metrics.json"]
    if args.task == "segmentation":
        interp = learn.interpret()
        scores = interp.scores()
        interp.plot_confusion_matrix().savefig(out / "confusion_matrix.png", dpi=100)
        written.append("confusion_matrix.png")
    else:
        scores = learn.evaluate()
    (out / "metrics.json").write_text(json.dumps(scores, indent=2))
    print_scores(scores)
    print(f"written to {out.resolve()} ({', '.join(written)})")


def _lr_find(args) -> None:
    if args.plot:
        output_file(args.plot, "--plot", "lr_find.png")
    learn = _learner(args)
    if args.unfrozen:
        learn.unfreeze()
    with _bars_on_a_terminal(learn), _bars_to_stderr():
        result = learn.lr_find(num_it=args.num_it)
    for name, value in result.suggestions.items():
        print(f"{name}: {value:.2e}")
    if args.plot:
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        result.plot().savefig(args.plot, dpi=100)
        print(f"plot written to {args.plot}")


def _demo(args) -> None:
    if args.out:
        output_folder(args.out, "--out")
    from .demo import run_demo

    run_demo(epochs=args.epochs, frozen_epochs=args.frozen_epochs, limit=args.limit or None, out=args.out,
             seed=args.seed, bs=args.bs)


HANDLERS = {"train": _train, "lr-find": _lr_find, "demo": _demo}

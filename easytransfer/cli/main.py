"""The ``easytransfer`` command line: train, lr-find, evaluate, predict, export, models, describe, demo.

Every subcommand has ``--help``; errors print one line (``easytransfer: error: ...``) and exit with 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import EasyTransferError
from .allocator import reexec_with_jemalloc

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="a folder of class sub-folders (or train/ + valid/), or a CSV with path,label columns")
    p.add_argument("--arch", default="efficientnet_lite0", help="architecture (default efficientnet_lite0)")
    p.add_argument("--valid-pct", type=float, default=0.2, help="validation share per class (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and the training (default 42)")
    p.add_argument("--bs", type=_positive_int, default=16, help="batch size (default 16)")
    p.add_argument("--size", type=_positive_int, default=None, help="image size (default: the model's)")
    p.add_argument("--aug", choices=("none", "light", "strong"), default="light", help="augmentation preset")
    p.add_argument("--weights", default=None, help="a local .safetensors / .pth weights file for --arch")
    p.add_argument("--random-init", action="store_true", help="no pre-trained weights (for tests and baselines)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easytransfer", description="Transfer learning for images.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="the whole recipe on your images; writes a model bundle and a report",
                                description="Train the head with the body frozen, unfreeze, fine-tune with "
                                "discriminative learning rates, and write the model bundle, history, plots and an "
                                "HTML report to --out.")
    _data_args(train)
    train.add_argument("--frozen-epochs", type=_non_negative_int, default=3, help="head-only epochs (default 3)")
    train.add_argument("--epochs", type=_non_negative_int, default=5, help="fine-tuning epochs (default 5; 0: none)")
    train.add_argument("--lr", default=None, help="head learning rate, or 'find' (default 3e-3)")
    train.add_argument("--lr-max", default="1e-3", help="fine-tuning head rate, or 'find' (default 1e-3)")
    train.add_argument("--out", default=None, help="output folder (default easytransfer_runs/train-<time>)")

    lr_find = commands.add_parser("lr-find", help="sweep the learning rate and print the suggestions",
                                  description="Run the LR finder on DATA (body frozen unless --unfrozen) and print "
                                  "valley / steep / minimum / slide; --plot writes the curve.")
    _data_args(lr_find)
    lr_find.add_argument("--unfrozen", action="store_true", help="sweep with every layer group unfrozen")
    lr_find.add_argument("--num-it", type=_positive_int, default=None,
                         help="iterations (default 100 frozen, 50 unfrozen)")
    lr_find.add_argument("--plot", default=None, help="write the plot to this PNG file")

    evaluate = commands.add_parser("evaluate", help="per-class precision / recall / F1 of a model on labelled images",
                                   description="Predict a folder of class sub-folders with a model bundle and print "
                                   "the per-class table and the accuracy.")
    evaluate.add_argument("model", help="a model bundle folder (learn.export / easytransfer train)")
    evaluate.add_argument("data", help="a folder of class sub-folders")

    predict = commands.add_parser("predict", help="predict images or folders with a model bundle",
                                  description="Print path, label and probability for each image; folders are "
                                  "streamed in batches.")
    predict.add_argument("model", help="a model bundle folder")
    predict.add_argument("paths", nargs="+", help="image files or folders")
    predict.add_argument("--csv", default=None, help="also write every prediction (all class probabilities) here")

    export = commands.add_parser("export", help="convert a model bundle to ONNX or TorchScript",
                                 description="Write the bundle's model as ONNX (onnxruntime) or TorchScript; both run "
                                 "without easytransfer.")
    export.add_argument("model", help="a model bundle folder")
    kind = export.add_mutually_exclusive_group(required=True)
    kind.add_argument("--onnx", nargs="?", const="", metavar="PATH", help="ONNX file (default MODEL/model.onnx)")
    kind.add_argument("--torchscript", nargs="?", const="", metavar="PATH", help="TorchScript file (default "
                      "MODEL/model.pt)")

    models = commands.add_parser("models", help="list architecture names", description="List the architecture "
                                 "names easytransfer accepts, filtered by a shell-style pattern.")
    models.add_argument("pattern", nargs="?", default="*", help="e.g. '*convnext*' (default all)")
    models.add_argument("--offline", action="store_true", help="only those whose weights are on this machine")

    describe = commands.add_parser("describe", help="facts about an architecture", description="Print an "
                                   "architecture's source, preprocessing, size and notes.")
    describe.add_argument("arch")

    demo = commands.add_parser(
        "demo",
        help="train EfficientNet-Lite0 (real ImageNet weights, offline) on a textile-inspection task",
        description="Offline demo: EfficientNet-Lite0 with packaged ImageNet weights learns to tell nominal "
        "textile images from local and global defects (conformal-clip-data), then reports on held-out "
        "test images.",
    )
    demo.add_argument("--epochs", type=_positive_int, default=4, help="fine-tuning epochs after unfreezing (default 4)")
    demo.add_argument("--frozen-epochs", type=_positive_int, default=3, help="head-only epochs first (default 3)")
    demo.add_argument("--limit", type=_non_negative_int, default=150, help="images per class, 0 for all (default 150)")
    demo.add_argument("--out", default=None, help="output folder (default easytransfer_runs/demo-<time>)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the sampling and the splits")
    demo.add_argument("--bs", type=_positive_int, default=16, help="batch size (default 16)")
    return parser


def _lr(text):
    if text is None or text == "find":
        return text
    return float(text)


def _learner(args):
    from fastai.torch_core import set_seed

    from ..data.loaders import ImageData
    from ..train.learner import transfer_learner

    set_seed(args.seed)
    data = Path(args.data)
    common = dict(bs=args.bs, size=args.size, aug=args.aug, seed=args.seed, valid_pct=args.valid_pct)
    if data.suffix.lower() == ".csv":
        dls = ImageData.from_csv(data, **common)
    else:
        dls = ImageData.from_folder(data, **common)
    return transfer_learner(dls, args.arch, pretrained=not args.random_init, weights=args.weights)


def _train(args) -> None:
    import time

    out = Path(args.out) if args.out else Path("easytransfer_runs") / time.strftime("train-%Y%m%d-%H%M%S")
    learn = _learner(args)  # bad data or an unknown architecture fail here, before anything is written
    out.mkdir(parents=True, exist_ok=True)
    print(f"{learn.spec.name}: {len(learn.dls.train_ds)} training, {len(learn.dls.valid_ds)} validation images, "
          f"classes {list(learn.dls.vocab)}; weights: {learn.spec.weights}")
    if args.frozen_epochs:
        learn.fit_frozen(args.frozen_epochs, lr=_lr(args.lr))
    if args.epochs:
        learn.unfreeze()
        learn.fit_discriminative(args.epochs, lr_max=_lr(args.lr_max))
    learn.export(out / "model")
    learn.history.to_csv(out / "history.csv", index=False)
    if len(learn.history):
        learn.plot_history().savefig(out / "history.png", dpi=100)
    interp = learn.interpret()
    interp.plot_confusion_matrix().savefig(out / "confusion_matrix.png", dpi=100)
    learn.save_report(out / "report.html", interp=interp)
    interp.report()
    print(learn.diagnose())
    print(f"written to {out.resolve()} (model/, history.csv, history.png, confusion_matrix.png, report.html)")
    print(f"valid accuracy: {interp.accuracy:.4f}")


def _lr_find(args) -> None:
    learn = _learner(args)
    if args.unfrozen:
        learn.unfreeze()
    result = learn.lr_find(num_it=args.num_it)
    for name, value in result.suggestions.items():
        print(f"{name}: {value:.2e}")
    if args.plot:
        result.plot().savefig(args.plot, dpi=100)
        print(f"plot written to {args.plot}")


def _evaluate(args) -> None:
    from ..data.sources import class_folder_items
    from ..deploy.predictor import load_model
    from ..errors import DataError
    from ..evaluate.metrics import per_class_report

    predictor = load_model(args.model)
    folder = Path(args.data)
    if not folder.is_dir():
        raise DataError(f"Data folder {str(folder)!r} does not exist or is not a folder.")
    items = class_folder_items(folder, "test", [])
    unseen = sorted(set(items["label"]) - set(predictor.vocab))
    if unseen:
        raise DataError(f"Labels {unseen} in {str(folder)!r} are not classes of the model ({predictor.vocab}).")
    table = predictor.predict_folder(folder)
    table = table.merge(items[["path", "label"]].rename(columns={"label": "actual"}), on="path", how="inner")
    table = table[table["error"].isna()]
    if table.empty:
        raise DataError(f"No readable images with a class sub-folder in {str(folder)!r}.")
    index = {c: i for i, c in enumerate(predictor.vocab)}
    report = per_class_report(table["actual"].map(index).to_numpy(), table["label"].map(index).to_numpy(),
                              predictor.vocab)
    print(report.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"accuracy: {(table['actual'] == table['label']).mean():.4f} on {len(table)} images")


def _predict(args) -> None:
    import pandas as pd

    from ..deploy.predictor import load_model

    predictor = load_model(args.model)
    tables = []
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{raw!r} does not exist.")
        tables.append(predictor.predict_folder(path))
    table = pd.concat(tables, ignore_index=True)
    for row in table.itertuples():
        print(f"{row.path}\t{row.label}\t{row.probability:.4f}" if pd.isna(row.error) else
              f"{row.path}\tERROR\t{row.error}")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"{len(table)} predictions written to {args.csv}")


def _export(args) -> None:
    from ..deploy.convert import export_onnx, export_torchscript
    from ..deploy.predictor import load_model

    predictor = load_model(args.model)
    size = predictor.config.preprocessing.size
    if args.onnx is not None:
        path = export_onnx(predictor.model, args.onnx or Path(args.model) / "model.onnx", size)
    else:
        path = export_torchscript(predictor.model, args.torchscript or Path(args.model) / "model.pt", size)
    print(f"written {path}")


def _models(args) -> None:
    from ..models.factory import list_models

    names = list_models(args.pattern, offline_only=args.offline)
    print("\n".join(names) if names else f"no architecture matches {args.pattern!r}")


def _describe(args) -> None:
    from ..models.factory import describe_model

    describe_model(args.arch)


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(epochs=args.epochs, frozen_epochs=args.frozen_epochs, limit=args.limit or None, out=args.out,
             seed=args.seed, bs=args.bs)


COMMANDS = {"train": _train, "lr-find": _lr_find, "evaluate": _evaluate, "predict": _predict, "export": _export,
            "models": _models, "describe": _describe, "demo": _demo}


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the console script: run under jemalloc when it is installed (docs/performance.md)
        reexec_with_jemalloc(sys.argv[1:])
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except (EasyTransferError, FileNotFoundError, NotADirectoryError, ValueError, ImportError) as exc:
        print(f"easytransfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("easytransfer: interrupted", file=sys.stderr)
        return 130
    return 0



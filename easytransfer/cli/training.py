"""``easytransfer train``, ``lr-find`` and ``demo``: the commands that fit a model."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.augment import AUG_PRESETS
from .arguments import non_negative_int, positive_int

__all__ = ["HANDLERS", "add_parsers"]


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("data", help="a folder of class sub-folders (or train/ + valid/), or a CSV with path,label columns")
    p.add_argument("--arch", default="efficientnet_lite0", help="architecture (default efficientnet_lite0)")
    p.add_argument("--valid-pct", type=float, default=0.2, help="validation share per class (default 0.2)")
    p.add_argument("--seed", type=int, default=42, help="seed of the split and the training (default 42)")
    p.add_argument("--bs", type=positive_int, default=16, help="batch size (default 16)")
    p.add_argument("--size", type=positive_int, default=None, help="image size (default: the model's)")
    p.add_argument("--aug", choices=AUG_PRESETS, default="light",
                   help="augmentation preset (default light; flips for inspection images with small defects)")
    p.add_argument("--weights", default=None, help="a local .safetensors / .pth weights file for --arch")
    p.add_argument("--random-init", action="store_true", help="no pre-trained weights (for tests and baselines)")


def add_parsers(commands) -> None:
    """Add ``train``, ``lr-find`` and ``demo`` to `commands` (the sub-parsers of `build_parser`)."""
    train = commands.add_parser("train", help="the whole recipe on your images; writes a model bundle and a report",
                                description="Train the head with the body frozen, unfreeze, fine-tune with "
                                "discriminative learning rates, and write the model bundle, history, plots and an "
                                "HTML report to --out.")
    _data_args(train)
    train.add_argument("--frozen-epochs", type=non_negative_int, default=3, help="head-only epochs (default 3)")
    train.add_argument("--epochs", type=non_negative_int, default=5, help="fine-tuning epochs (default 5; 0: none)")
    train.add_argument("--lr", default=None, help="head learning rate, or 'find' (default 3e-3)")
    train.add_argument("--lr-max", default="1e-3", help="fine-tuning head rate, or 'find' (default 1e-3)")
    train.add_argument("--out", default=None, help="output folder (default easytransfer_runs/train-<time>)")

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


def _demo(args) -> None:
    from .demo import run_demo

    run_demo(epochs=args.epochs, frozen_epochs=args.frozen_epochs, limit=args.limit or None, out=args.out,
             seed=args.seed, bs=args.bs)


HANDLERS = {"train": _train, "lr-find": _lr_find, "demo": _demo}

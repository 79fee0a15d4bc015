"""The classifier's part of the ``easytransfer`` command line: its flags, its data and learner, its results.

The command line (``easytransfer.cli``) finds this module through the registry (``Task.cli``) and calls the
functions every task's ``cli`` module has (see ``easytransfer.cli.training``). Nothing here imports torch at
module level: ``easytransfer train --help`` builds its parser from these functions without loading it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ...errors import DataError, EasyTransferError
from ..command_line import FlagGroup, require_predictions
from ..registry import available_tasks

__all__ = ["DISTRIBUTED", "HEADS", "MODEL_FLAGS", "TRAIN_FLAGS", "add_evaluate_arguments", "add_predict_arguments",
           "add_train_arguments", "build_learner", "check_train_args", "evaluate", "finish_training", "predict"]

HEADS: tuple[str, ...] = ()  # the classifier's head is chosen in Python (transfer_learner(head=...)), not here
DISTRIBUTED = True  # ``train --nproc``: trained data-parallel under torchrun in tests/test_distributed.py
TRAIN_FLAGS = ("test_pct", "fn_col", "label_col", "test")  # flags only a classifier's training takes
MODEL_FLAGS = ("alpha",)  # flags only a classifier's evaluate / predict take


def add_train_arguments(group: FlagGroup, command: str) -> None:
    """Add the classifier's flags of ``train`` / ``lr-find`` (`command`) to `group`.

    >>> parser = argparse.ArgumentParser(); add_train_arguments(parser.add_argument_group("c"), "train")
    >>> parser.parse_args(["--test-pct", "0.2"]).test_pct
    0.2
    """
    group.add_argument("--test-pct", type=float, default=None,
                       help="a share of each class held out as a test set, scored after training (default: none)")
    group.add_argument("--fn-col", default=None, help="CSV data: the column of image files (default path)")
    group.add_argument("--label-col", default=None, help="CSV data: the column of labels (default label)")
    if command == "train":
        group.add_argument("--test", default=None, metavar="DIR",
                           help="a folder of class sub-folders held out for testing; scored after training (instead "
                           "of --test-pct)")


def add_evaluate_arguments(group: FlagGroup) -> None:
    """A classifier's ``evaluate`` takes no flags of its own (DATA is a folder of class sub-folders)."""


def add_predict_arguments(group: FlagGroup) -> None:
    """Add ``--alpha`` (conformal sets) to ``predict``'s `group`.

    >>> parser = argparse.ArgumentParser(); add_predict_arguments(parser.add_argument_group("c"))
    >>> parser.parse_args(["--alpha", "0.1"]).alpha
    0.1
    """
    group.add_argument("--alpha", type=float, default=None,
                       help="also print each image's conformal set of labels, which holds the true one with "
                       "probability >= 1 - alpha (needs a bundle exported after learn.conformal(...))")


def check_train_args(args: argparse.Namespace) -> None:
    """The classifier's flag errors, before anything is loaded: flags of the dense tasks, no DATA, two test sets."""
    extra = ["--" + n for n in ("images", "head") if getattr(args, n, None) is not None]
    if extra:
        others = " or ".join(t.name for t in available_tasks() if t.name != "classification")
        raise EasyTransferError(f"{' '.join(extra)} {'is' if len(extra) == 1 else 'are'} for --task {others}; a "
                                "classifier reads DATA (a folder or a CSV).")
    if args.data is None:
        raise EasyTransferError("Give DATA: a folder of class sub-folders or a CSV with path,label columns "
                                "(or --task segmentation / detection with --images).")
    test = getattr(args, "test", None)
    if test and args.test_pct:
        raise EasyTransferError("Give one test set: --test DIR (a folder of class sub-folders) or --test-pct "
                                f"(a share of DATA), not both (got --test {test!r} and --test-pct {args.test_pct}).")
    if test and not Path(test).is_dir():
        raise EasyTransferError(f"--test {test!r} is not a folder; give a folder of class sub-folders.")


def build_learner(args: argparse.Namespace, *, common: dict, pretrained: dict, head: str):
    """The classifier's data (a folder of class sub-folders or a CSV) and its `transfer_learner`.

    Args:
        args: the parsed flags; common: the data options every task takes (bs, size, aug, seed, valid_pct);
        pretrained: ``pretrained`` / ``weights``; head: the registry's default head (the learner's own default).
    """
    from ...data.loaders import ImageData
    from .learner import transfer_learner

    data = Path(args.data)
    common = {**common, "aug": args.aug}  # no --aug: the frozen stage may choose it with the input size
    if args.test_pct:
        common = {**common, "test_pct": args.test_pct}
    if data.suffix.lower() == ".csv":
        dls = ImageData.from_csv(data, fn_col=args.fn_col or "path", label_col=args.label_col or "label", **common)
    else:
        dls = ImageData.from_folder(data, **common)
    return transfer_learner(dls, args.arch, seed=args.seed, **pretrained)


def finish_training(learn, args: argparse.Namespace, out: Path) -> None:
    """The validation (and test) tables, the diagnosis, the confusion matrix and the report, after `export`."""
    interp = learn.interpret()
    test = _test_interpretation(learn, args)  # the report shows the test set when there is one
    shown = test if test is not None else interp
    shown.plot_confusion_matrix().savefig(out / "confusion_matrix.png", dpi=100)
    learn.save_report(out / "report.html", interp=shown)
    if learn.choice is not None:
        print(learn.choice)
    print(interp.report())
    print(learn.diagnose())
    print(f"written to {out.resolve()} (model/, history.csv, history.png, confusion_matrix.png, report.html)")
    print(f"valid accuracy: {interp.accuracy:.4f}")
    if test is not None:
        print(f"test set ({len(test.targs)} images, never trained on):")
        print(test.report())
        print(f"test accuracy: {test.accuracy:.4f}")


def _test_interpretation(learn, args):
    """The interpretation of the held-out test set (--test DIR, --test-pct or DATA's test/ folder), or None."""
    if getattr(args, "test", None):
        return learn.interpret(args.test)
    if learn.dls.recipe.test_items is not None:
        learn.evaluate()  # the test split, named so in the report
        return learn.last_interpretation
    return None


def evaluate(predictor, args: argparse.Namespace) -> None:
    """The per-class table and the accuracy on a folder of class sub-folders (the layout is checked first)."""
    if args.json:
        raise EasyTransferError("--json is for segmentation and detection models; a classifier's table is printed.")
    folder = Path(args.data)
    if not folder.is_dir():
        raise DataError(f"Data folder {str(folder)!r} does not exist or is not a folder.")
    interp = predictor.interpret(folder)  # the layout and the files are checked before any inference
    print(interp.per_class().to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"accuracy: {interp.accuracy:.4f} on {len(interp.targs)} images")


def predict(predictor, args: argparse.Namespace) -> None:
    """``path, label, probability`` (and the conformal set with ``--alpha``) per image; ``--csv``: every class."""
    import pandas as pd

    if args.out is not None:
        raise EasyTransferError("--out is for segmentation and detection models (masks, drawn boxes); a classifier "
                                "prints its labels (and --csv writes them).")
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
    require_predictions(len(table), int(table["error"].isna().sum()), args.paths)
    if args.alpha is not None:
        sizes = table["set_size"].dropna()
        print(f"alpha={args.alpha}: {int((sizes > 1).sum())} of {len(sizes)} images have more than one label in "
              "their set (send those to a person)")
    if args.csv:
        Path(args.csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.csv, index=False)
        print(f"{len(table)} predictions written to {args.csv}")

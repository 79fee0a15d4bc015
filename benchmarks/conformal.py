"""Calibration and conformal prediction sets on images the model has not seen: coverage, set size, ECE.

    python benchmarks/conformal.py                                   # textile100 and flowers100, seed 0
    python benchmarks/conformal.py --datasets textile100 --seeds 0,1

Datasets (four disjoint parts each: train, valid (early stopping), calibration (the calibration fit and the
conformal thresholds: separate halves), test):
- ``textile100``: the packaged textile images, the few_shot benchmark's textile100 protocol (100 training
  images per class, 100 validation, 100 test), plus 100 calibration images per class.
- ``flowers100``: ``../shared/data/flowers5``: 100 training, 50 validation and 100 calibration images per class
  from its train split; its ``val/`` split (550 images) is the test set.

The model is efficientnet_lite0 with its head trained 3 frozen epochs on cached features (``--epochs N`` adds N
unfrozen epochs; on 2 shared CPU cores they take long). The logits of the calibration and test images are
computed once; each calibration is then applied to them exactly as ``learn.calibrate`` does (`Calibration`).
For each calibration (none, temperature, isotonic, fitted on one half of the calibration images)
and each alpha (0.05 / 0.1 / 0.2), global and Mondrian (one threshold per class), split conformal sets use the
other half; the table gives test ECE, coverage, the lowest per-class coverage, average set size and the share of
single-label sets (images a person need not see).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd
from fastai.torch_core import set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))

from few_shot import FLOWERS, _take  # noqa: E402  (the same data protocol)

from easytransfer import ImageData, transfer_learner  # noqa: E402
from easytransfer.datasets import textile_items  # noqa: E402
from easytransfer.evaluate.calibration import expected_calibration_error, fit_calibration, softmax  # noqa: E402
from easytransfer.evaluate.conformal import ConformalCalibration, evaluate_sets  # noqa: E402
from easytransfer.tasks.classification.uncertainty import raw_logits  # noqa: E402

ARCH = "efficientnet_lite0"
ALPHAS = (0.05, 0.1, 0.2)
CALIBRATIONS = ("none", "temperature", "isotonic")


def textile100(seed: int) -> dict[str, pd.DataFrame]:
    counts = {c: [100, 100, 100] for c in ("nominal", "local", "global")}
    split = _take(textile_items(seed=seed), {c: [n[0], n[1], n[2] + 100] for c, n in counts.items()}, seed)
    return _split_calibration(split, 100, seed)


def flowers100(seed: int) -> dict[str, pd.DataFrame]:
    def folder(part):
        return pd.DataFrame([(str(p), p.parent.name) for p in sorted((FLOWERS / part).glob("*/*"))],
                            columns=["path", "label"])

    train = folder("train")
    split = _take(train, {label: [100, 50, 100] for label in sorted(set(train["label"]))}, seed)
    return {"train": split["train"], "valid": split["valid"], "calib": split["test"], "test": folder("val")}


def _split_calibration(split: dict[str, pd.DataFrame], per_class: int, seed: int) -> dict[str, pd.DataFrame]:
    """Move `per_class` images of each class of the test part into a calibration part."""
    rest = split["test"].sample(frac=1.0, random_state=seed)
    calib = rest.groupby("label", group_keys=False).head(per_class)
    return {"train": split["train"], "valid": split["valid"], "calib": calib.reset_index(drop=True),
            "test": rest.drop(calib.index).reset_index(drop=True)}


DATASETS = {"textile100": textile100, "flowers100": flowers100}


def halves(table: pd.DataFrame, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two stratified halves: one fits the calibration, the other gives the conformal thresholds."""
    shuffled = table.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    in_first = shuffled.groupby("label").cumcount() < shuffled.groupby("label")["label"].transform("size") // 2
    return shuffled[in_first].reset_index(drop=True), shuffled[~in_first].reset_index(drop=True)


def run(dataset: str, seed: int, epochs: int) -> list[dict]:
    split = DATASETS[dataset](seed)
    set_seed(seed)
    start = time.perf_counter()
    table = pd.concat([split["train"].assign(is_valid=False), split["valid"].assign(is_valid=True)])
    dls = ImageData.from_df(table, valid_col="is_valid", bs=16)
    learn = transfer_learner(dls, ARCH, device="cpu")
    learn.fit_frozen(3)
    if epochs:
        learn.unfreeze()
        learn.fit_discriminative(epochs, lr_max=1e-3)
    fit_part, conformal_part = halves(split["calib"], seed)
    logits = {name: raw_logits(learn, learn.dls.labelled_dl(part))
              for name, part in (("fit", fit_part), ("conformal", conformal_part), ("test", split["test"]))}
    vocab = [str(v) for v in learn.dls.vocab]
    rows = []
    for calibration in CALIBRATIONS:
        if calibration == "none":
            probs = {name: softmax(z) for name, (z, _) in logits.items()}
        else:
            fitted = fit_calibration(*logits["fit"], method=calibration)
            probs = {name: fitted.probabilities(z) for name, (z, _) in logits.items()}
        conf_targs, test_targs = logits["conformal"][1], logits["test"][1]
        ece = expected_calibration_error(probs["test"], test_targs)
        accuracy = float((probs["test"].argmax(1) == test_targs).mean())
        for alpha in ALPHAS:
            for mondrian in (False, True):
                cal = ConformalCalibration.fit(probs["conformal"], conf_targs, alpha=alpha, mondrian=mondrian)
                result = evaluate_sets(cal.prediction_sets(probs["test"]), test_targs, vocab, alpha)
                rows.append({"dataset": dataset, "seed": seed, "calibration": calibration, "alpha": alpha,
                             "sets": "Mondrian" if mondrian else "global", "accuracy": accuracy, "ece": ece,
                             "coverage": result.coverage, "min_class_coverage": min(result.per_class_coverage.values()),
                             "avg_set_size": result.avg_set_size, "singletons": result.singleton_share,
                             "n_calib": cal.n_images, "n_test": result.n_images})
                print("RUN " + json.dumps(rows[-1]), flush=True)
    print(f"DONE {dataset} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--epochs", type=int, default=0, help="unfrozen epochs after the 3 frozen ones")
    args = parser.parse_args(argv)
    rows = [row for dataset in args.datasets.split(",") for seed in (int(s) for s in args.seeds.split(","))
            for row in run(dataset, seed, args.epochs)]
    figures = ["accuracy", "ece", "coverage", "min_class_coverage", "avg_set_size", "singletons"]
    table = pd.DataFrame(rows).groupby(["dataset", "calibration", "alpha", "sets"], sort=False)[figures].mean()
    with pd.option_context("display.width", 200, "display.max_rows", 200):
        print(table.round(3).to_string())


if __name__ == "__main__":
    main()

"""The three lines with no options (the frozen stage chooses size and pooling) beside today's defaults spelled out.

    python benchmarks/choosing_recipe.py                                         # every dataset, seeds 0-4 / 0-2
    python benchmarks/choosing_recipe.py --datasets textile-protocol --seeds 0,1

Each run is the recipe a user types, ``ImageData.from_df(table, valid_col="is_valid")``,
``transfer_learner(dls, "efficientnet_lite0")``, ``fit_frozen()``, ``unfreeze()``, ``fit_discriminative()``, then
``interpret`` on the held-out test images, in two forms measured one after the other in the same process:

- ``defaults``: today's defaults spelled out, ``size=224, aug="light"`` on the data and ``pool="avg"`` on the
  learner (nothing left to choose: the recipe before issue 26);
- ``choosing``: no options; ``fit_frozen`` chooses the input size and pooling (``learn.choice``).

Recorded: test accuracy, on textile nominal-vs-defective accuracy and the recall of class ``local``; the validation
loss and accuracy after the frozen stage and after fine-tuning (is fine-tuning better than the frozen head?); what
was chosen; wall seconds of the whole run and their ratio to the defaults' of the same seed.

Datasets: `few_shot.py`'s (``textile-protocol``: 50 / 25 / 25 nominal / local / global in each of train, valid,
test; ``textile30`` / ``textile100`` / ``textile300``; ``flowers20``: 20 training and 50 validation images per
class of flowers5, its ``val/`` the test set) and ``flowers2``: a natural two-class set, roses against tulips, 150
images of each from flowers5's train split, 20 % of them for validation, flowers5's ``val/`` of those two classes
as the test set (215 images); ``grey-parts`` (`grey_parts.py`): synthetic grey parts with defects of 0.1-0.5 %
of the pixels, split by part (160 / 48 / 120 images of 40 / 12 / 30 parts). They need ``../shared/data``
(flowers) and the ``conformal-clip-data`` package.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.torch_core import set_seed
from sklearn.metrics import balanced_accuracy_score

sys.path.insert(0, str(Path(__file__).resolve().parent))

from few_shot import ARCH, DATASETS, FLOWERS, scores  # noqa: E402  (the same data protocol)
from grey_parts import grey_parts  # noqa: E402

from easytransfer import ImageData, transfer_learner  # noqa: E402

METHODS = ("defaults", "choosing")
FLOWERS2 = ("roses", "tulips")
FLOWERS2_PER_CLASS = 150


def flowers2(seed: int) -> dict[str, pd.DataFrame]:
    """Roses against tulips: 150 of each (seeded), 20 % of them validation; flowers5's val/ is the test set."""
    rng = np.random.default_rng(seed)
    train, valid = [], []
    for label in FLOWERS2:
        files = rng.permutation(sorted(str(p) for p in (FLOWERS / "train" / label).glob("*")))[:FLOWERS2_PER_CLASS]
        n_valid = round(0.2 * len(files))
        valid += [(p, label) for p in files[:n_valid]]
        train += [(p, label) for p in files[n_valid:]]
    test = [(str(p), label) for label in FLOWERS2 for p in sorted((FLOWERS / "val" / label).glob("*"))]
    columns = ["path", "label"]
    return {"train": pd.DataFrame(train, columns=columns), "valid": pd.DataFrame(valid, columns=columns),
            "test": pd.DataFrame(test, columns=columns)}


ALL_DATASETS = DATASETS | {"flowers2": flowers2, "grey-parts": grey_parts}


def _valid_figures(learn) -> tuple[float, float]:
    """Validation loss and accuracy of the weights the learner holds now (the fits restored their best)."""
    loss, acc = learn.validate()[:2]
    return float(loss), float(acc)


def run(split: dict[str, pd.DataFrame], method: str, seed: int) -> dict:
    """The three lines on one split, in `method`'s form: test figures, validation figures per stage, seconds."""
    table = pd.concat([split["train"].assign(is_valid=False), split["valid"].assign(is_valid=True)])
    set_seed(seed)
    start = time.perf_counter()
    if method == "defaults":
        dls = ImageData.from_df(table, valid_col="is_valid", size=224, aug="light")
        learn = transfer_learner(dls, ARCH, pool="avg")
    else:
        dls = ImageData.from_df(table, valid_col="is_valid")
        learn = transfer_learner(dls, ARCH)
    learn.fit_frozen()
    frozen_seconds = time.perf_counter() - start
    measuring = time.perf_counter()
    frozen_loss, frozen_acc = _valid_figures(learn)
    start += time.perf_counter() - measuring  # not part of the recipe
    learn.unfreeze()
    learn.fit_discriminative()
    interp = learn.interpret(learn.dls.labelled_dl(split["test"]))
    seconds = time.perf_counter() - start
    tuned_loss, tuned_acc = _valid_figures(learn)
    vocab = np.array(interp.vocab)
    choice = learn.choice
    labels, preds = vocab[interp.targs], vocab[interp.preds]
    return scores(labels, preds) | {"balanced_accuracy": float(balanced_accuracy_score(labels, preds)),
        "seconds": seconds, "frozen_stage_seconds": frozen_seconds,
        "chosen": f"{choice.size}/{choice.pool}" if choice is not None else "-",
        "choice_seconds": choice.seconds if choice is not None else 0.0,
        "frozen_valid_loss": frozen_loss, "frozen_valid_accuracy": frozen_acc,
        "tuned_valid_loss": tuned_loss, "tuned_valid_accuracy": tuned_acc}


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per dataset and method; seconds as the median of each seed's ratio to defaults."""
    figures = [c for c in rows.columns if c not in ("dataset", "method", "seed", "chosen")]
    table = rows.groupby(["dataset", "method"])[figures].agg(["mean", "std"])
    table.columns = [f"{a} {b}" for a, b in table.columns]
    base = rows[rows["method"] == "defaults"].set_index(["dataset", "seed"])["seconds"]
    ratios = rows.assign(ratio=[r["seconds"] / base.get((r["dataset"], r["seed"]), np.nan)
                                for _, r in rows.iterrows()])
    table["seconds / defaults (median)"] = ratios.groupby(["dataset", "method"])["ratio"].median()
    table["chosen"] = rows.groupby(["dataset", "method"])["chosen"].agg(lambda c: " ".join(c))
    table["fine-tuned better than frozen (valid loss)"] = rows.assign(
        better=rows["tuned_valid_loss"] < rows["frozen_valid_loss"]).groupby(["dataset", "method"])["better"].mean()
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="textile-protocol,flowers2,grey-parts,flowers20,textile30,textile100")
    parser.add_argument("--seeds", default="0,1,2,3,4", help="seeds of textile-protocol")
    parser.add_argument("--other-seeds", default="0,1,2", help="seeds of the other datasets")
    parser.add_argument("--methods", default=",".join(METHODS), help="which forms to run (default both)")
    parser.add_argument("--out", default=None, help="also write every run as JSON lines here")
    parser.add_argument("--summarize", default=None, help="only print the summary of these JSON-lines files "
                        "(comma-separated; runs of earlier invocations)")
    args = parser.parse_args(argv)
    if args.summarize:
        rows = [json.loads(line) for path in args.summarize.split(",") for line in Path(path).read_text().splitlines()]
        with pd.option_context("display.width", 250, "display.max_columns", 60):
            print(summary(pd.DataFrame(rows)).round(3).T.to_string())
        return
    rows = []
    for dataset in args.datasets.split(","):
        seeds = args.seeds if dataset == "textile-protocol" else args.other_seeds
        for seed in (int(s) for s in seeds.split(",")):
            split = ALL_DATASETS[dataset](seed)
            for method in args.methods.split(","):
                rows.append({"dataset": dataset, "method": method, "seed": seed} | run(split, method, seed))
                print("RUN " + json.dumps(rows[-1]), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(rows[-1]) + "\n")
    with pd.option_context("display.width", 250, "display.max_columns", 60):
        print(summary(pd.DataFrame(rows)).round(3).T.to_string())


if __name__ == "__main__":
    main()

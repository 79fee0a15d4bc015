"""Can the frozen stage choose its input size and pooling from validation, cheaply? (issue 26's evidence)

    python benchmarks/recipe_choice.py                                   # textile protocol seeds 0,1,2 + flowers20
    python benchmarks/recipe_choice.py --datasets textile-protocol --seeds 0 --margins 1,2

For each candidate (input size in {the model's own 224, 448} x pooling in {"avg", "max"}) the three-line
recipe's frozen stage, with no options but these: ``ImageData.from_df(..., size=S, aug="none")``,
``transfer_learner(dls, "efficientnet_lite0", pool=P)``, ``learn.fit_frozen(1, method="logistic")`` (one feature
pass over the training and validation images, then the logistic probe on the cached features). Recorded: the
validation log-loss and accuracy, the held-out test accuracy, on textile the nominal-vs-defective accuracy and
the recall of class 'local', the seconds of the feature pass (``fit_frozen``'s wall time less the probe's) and of
the probe.

Then a selection rule on validation only: keep the baseline (224 / avg, the model's own settings) unless another
candidate's validation log-loss is lower by more than k standard errors of the paired difference (bootstrap over
validation images; `--margins`, one rule each); among those that clear the margin, the lowest log-loss wins. Beside
it: the plain arg-min of validation log-loss (no margin) and the oracle (best test accuracy, which no rule can
see). Every figure is printed beside the baseline measured in the same run; seconds as ratios to it.

Datasets and splits are `few_shot.py`'s: ``textile-protocol`` (50 / 25 / 25 nominal / local / global in each of
train, valid, test), ``textile30`` / ``textile100`` / ``textile300``, ``flowers20`` (20 training and 50
validation images per class from flowers5's train split; its ``val/`` is the test set).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.torch_core import set_seed

sys.path.insert(0, str(Path(__file__).resolve().parent))

from few_shot import ARCH, DATASETS, scores  # noqa: E402  (the same data protocol)

from easytransfer import ImageData, transfer_learner  # noqa: E402
from easytransfer.train.features import feature_head  # noqa: E402

SIZES = (224, 448)  # the model's own size and about twice it
POOLS = ("avg", "max")
BASELINE = "224/avg"
BOOTSTRAP = 2000


def candidate_names() -> list[str]:
    return [f"{s}/{p}" for s in SIZES for p in POOLS]


def run_candidate(split: dict[str, pd.DataFrame], size: int, pool: str, seed: int) -> tuple[dict, np.ndarray]:
    """The frozen stage at one candidate's settings: figures, and the per-image validation log-losses."""
    table = pd.concat([split["train"].assign(is_valid=False), split["valid"].assign(is_valid=True)])
    set_seed(seed)
    dls = ImageData.from_df(table, valid_col="is_valid", bs=16, size=size, aug="none")
    learn = transfer_learner(dls, ARCH, device="cpu", pool=pool)
    start = time.perf_counter()
    learn.fit_frozen(1, method="logistic")
    frozen_seconds = time.perf_counter() - start
    probe_seconds = learn.fit_history[-1].seconds
    # per-image validation log-loss from the cached features and the fitted head (no second pass)
    _, head = feature_head(learn)
    head.eval()
    with torch.inference_mode():
        logits = head(torch.as_tensor(np.asarray(learn.feature_cache.valid), dtype=torch.float32,
                                      device=learn.device)).float().cpu()
    targets = learn.feature_cache.valid_targets.long()
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none").numpy()
    valid_acc = float((logits.argmax(1) == targets).float().mean())
    start = time.perf_counter()
    interp = learn.interpret(learn.dls.labelled_dl(split["test"]))
    test_seconds = time.perf_counter() - start
    vocab = np.array(interp.vocab)
    test = scores(vocab[interp.targs], vocab[interp.preds])
    figures = {"valid_logloss": float(losses.mean()), "valid_accuracy": valid_acc,
               "test_accuracy": test["accuracy"]}
    if "defective_accuracy" in test:
        figures |= {"test_defective_accuracy": test["defective_accuracy"], "test_recall_local": test["recall_local"]}
    figures |= {"feature_seconds": frozen_seconds - probe_seconds, "probe_seconds": probe_seconds,
                "test_pass_seconds": test_seconds, "C": learn.fit_history[-1].extras.get("C")}
    return figures, losses


def paired_se(base: np.ndarray, other: np.ndarray, seed: int) -> tuple[float, float]:
    """Mean of ``base - other`` (positive: `other` has the lower log-loss) and its bootstrap standard error."""
    diff = base - other
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(diff), size=(BOOTSTRAP, len(diff)))
    return float(diff.mean()), float(diff[idx].mean(1).std())


def choose(figures: dict[str, dict], gains: dict[str, tuple[float, float]], margin: float) -> str:
    """The baseline unless a candidate beats its validation log-loss by more than `margin` standard errors."""
    clear = [name for name, (g, se) in gains.items() if g > margin * se]
    return min(clear, key=lambda n: figures[n]["valid_logloss"]) if clear else BASELINE


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="textile-protocol,flowers20")
    parser.add_argument("--seeds", default="0,1,2", help="seeds of the textile sets (flowers20: --flowers-seeds)")
    parser.add_argument("--flowers-seeds", default="0")
    parser.add_argument("--margins", default="1,2", help="standard errors a candidate must win by (one rule each)")
    parser.add_argument("--out", default=None, help="also write every run as JSON lines here")
    args = parser.parse_args(argv)
    margins = [float(m) for m in args.margins.split(",")]
    rows, picks = [], []
    for dataset in args.datasets.split(","):
        seeds = args.flowers_seeds if dataset.startswith("flowers") else args.seeds
        for seed in (int(s) for s in seeds.split(",")):
            split = DATASETS[dataset](seed)
            figures, losses = {}, {}
            for name in candidate_names():
                size, pool = name.split("/")
                figures[name], losses[name] = run_candidate(split, int(size), pool, seed)
                row = {"dataset": dataset, "seed": seed, "candidate": name} | figures[name]
                rows.append(row)
                print("RUN " + json.dumps(row), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(row) + "\n")
            gains = {n: paired_se(losses[BASELINE], losses[n], seed) for n in losses if n != BASELINE}
            picked = {m: choose(figures, gains, m) for m in margins}
            argmin = min(figures, key=lambda n: figures[n]["valid_logloss"])
            oracle = max(figures, key=lambda n: (figures[n]["test_accuracy"], n == BASELINE))
            choice_seconds = sum(f["feature_seconds"] + f["probe_seconds"] for f in figures.values())
            base_seconds = figures[BASELINE]["feature_seconds"] + figures[BASELINE]["probe_seconds"]
            pick = {"dataset": dataset, "seed": seed, "argmin": argmin, "oracle": oracle,
                    "baseline_test_accuracy": figures[BASELINE]["test_accuracy"],
                    "argmin_test_accuracy": figures[argmin]["test_accuracy"],
                    "oracle_test_accuracy": figures[oracle]["test_accuracy"],
                    "choice_seconds_over_baseline": choice_seconds / base_seconds}
            for m, name in picked.items():
                pick |= {f"rule@{m:g}SE": name, f"rule@{m:g}SE_test_accuracy": figures[name]["test_accuracy"]}
                if "test_recall_local" in figures[name]:
                    pick[f"rule@{m:g}SE_test_recall_local"] = figures[name]["test_recall_local"]
            pick["gains"] = {n: [round(g, 4), round(se, 4)] for n, (g, se) in gains.items()}
            picks.append(pick)
            print("PICK " + json.dumps(pick), flush=True)
    report(pd.DataFrame(rows), picks)


def report(rows: pd.DataFrame, picks: list[dict]) -> None:
    """Every candidate beside the baseline of the same run (seconds as ratios), then the rule's picks."""
    base = rows[rows["candidate"] == BASELINE].set_index(["dataset", "seed"])
    table = rows.copy()
    for col in ("feature_seconds", "test_pass_seconds"):
        table[col.replace("_seconds", " x base")] = [
            r[col] / base.loc[(r["dataset"], r["seed"]), col] for _, r in table.iterrows()]
    for col in ("valid_logloss", "test_accuracy"):
        table[f"d {col}"] = [r[col] - base.loc[(r["dataset"], r["seed"]), col] for _, r in table.iterrows()]
    cols = ["dataset", "seed", "candidate", "valid_logloss", "d valid_logloss", "valid_accuracy", "test_accuracy",
            "d test_accuracy", "test_defective_accuracy", "test_recall_local", "feature_seconds", "feature x base",
            "probe_seconds", "test pass x base"]
    cols = [c for c in cols if c in table.columns]
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(table[cols].round(3).to_string(index=False))
        means = table.groupby(["dataset", "candidate"])[[c for c in cols[3:] if c in table.columns]].mean()
        print("\nmean over seeds")
        print(means.round(3).to_string())
        print(f"\nrule@kSE: keep {BASELINE} unless a candidate's validation log-loss is lower by > k bootstrap SE "
              "(paired over validation images); gain / SE of each candidate:")
        for p in picks:
            print(f"  {p['dataset']} seed {p['seed']}: " + ", ".join(
                f"{n} {g:+.3f} / {se:.3f} = {g / se:+.2f} SE" for n, (g, se) in p["gains"].items()))
        shown = pd.DataFrame(picks).drop(columns=["gains"]).set_index(["dataset", "seed"]).T
        print(shown.to_string())


if __name__ == "__main__":
    main()

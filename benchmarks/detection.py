"""Object detection: the recipe's three lines with no options against torchvision's plain training loop on the
same detector, weights, images, size and epochs, over seeds and two sets.

Sets (``--sets``):
- ``raccoon``: ``../shared/data/raccoon`` (Pascal VOC XML), its ``split/train_labels.csv`` (160 images; 15% of
  them held out for validation, drawn by the seed) and ``split/test_labels.csv`` (40 images: the figures).
- ``coco-person``: the 62 images of ``../shared/data/coco128_seg`` with a person (YOLO labels; the other classes'
  boxes left out): a one-class YOLO-format set of small, crowded objects. A fixed 20% of the images (13) are the
  test set; 15% of the rest validate, drawn by the seed.

Methods (``--methods``):
- ``recipe``: ``learn = detection_learner(dls)``, ``learn.fit_frozen(3)``, ``learn.unfreeze()``,
  ``learn.fit_discriminative(6)``: every option the library's default (`--frozen-epochs`, `--epochs`).
- ``plain``: torchvision's reference loop (``train_one_epoch``): every layer trains from the start, SGD 0.01 with
  momentum 0.9 and weight decay 1e-4, cosine over all steps, BatchNorm statistics updating; as many epochs as the
  recipe's two stages together.

Prints test mAP@0.5, mAP (COCO 0.50:0.95) and wall seconds per set, seed and method, and the recipe's ratio to the
plain loop; ``--out runs.jsonl`` appends every run (with the recipe's per-epoch history), ``--summarize runs.jsonl``
prints the table of earlier runs.

    python benchmarks/detection.py --sets raccoon,coco-person --seeds 0,1,2 --out runs/detection.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from easytransfer import DetectionData, detection_learner
from easytransfer.evaluate.box_metrics import average_precision
from easytransfer.tasks.detection.data import voc_items, yolo_items
from easytransfer.tasks.detection.interpretation import detect
from easytransfer.tasks.detection.model import build_detector

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
RACCOON = SHARED / "raccoon"
COCO128 = SHARED / "coco128_seg"


def _cleared(found: pd.DataFrame) -> pd.DataFrame:
    found = found.reset_index(drop=True)
    found.attrs["messages"] = []
    return found


def raccoon_data(seed: int, size: int, bs: int) -> DetectionData:
    found = voc_items(RACCOON / "images", RACCOON / "annotations")
    names = found["path"].map(lambda p: Path(p).name if p else None)
    train = set(pd.read_csv(RACCOON / "split" / "train_labels.csv")["filename"])
    test = set(pd.read_csv(RACCOON / "split" / "test_labels.csv")["filename"])
    return DetectionData.build(_cleared(found[names.isin(train)]), valid_pct=0.15, seed=seed,
                               test=_cleared(found[names.isin(test)]), size=size, bs=bs)


def coco_person_data(seed: int, size: int, bs: int) -> DetectionData:
    found = yolo_items(COCO128 / "images" / "train2017", COCO128 / "labels" / "train2017", {0: "person"})
    found = found[found["labels"].map(len) > 0].reset_index(drop=True)
    test = np.random.default_rng(1234).permutation(len(found))[: round(0.2 * len(found))]
    is_test = np.isin(np.arange(len(found)), test)
    return DetectionData.build(_cleared(found[~is_test]), valid_pct=0.15, seed=seed, test=_cleared(found[is_test]),
                               size=size, bs=bs)


SETS = {"raccoon": raccoon_data, "coco-person": coco_person_data}


def run_recipe(dls, args) -> dict:
    start = time.perf_counter()
    learn = detection_learner(dls, args.arch, args.head, device="cpu")
    learn.fit_frozen(args.frozen_epochs)
    frozen_seconds = time.perf_counter() - start
    learn.unfreeze()
    learn.fit_discriminative(args.epochs)
    seconds = time.perf_counter() - start
    scores = learn.evaluate()
    history = learn.history[["phase", "epoch", "train_loss", "valid_loss", "map50"]].round(4)
    return {"map50": scores["map50"], "map": scores["map"], "seconds": seconds, "frozen_seconds": frozen_seconds,
            "history": history.to_dict("records")}


def run_plain(dls, args) -> dict:
    """torchvision's reference loop (train_one_epoch): every layer trains, SGD with momentum, BN statistics update."""
    start = time.perf_counter()
    model, *_ = build_detector(args.arch, len(dls.classes), head=args.head, size=dls.recipe.size)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=1e-4)
    epochs = args.frozen_epochs + args.epochs
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * len(dls.train))
    for _ in range(epochs):
        model.train()
        for images, targets in dls.train:
            loss = sum(model(images, list(targets)).values())
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    seconds = time.perf_counter() - start
    preds, targets = detect(model, dls.items_dl())
    ap = average_precision(targets, preds, dls.classes)
    return {"map50": ap.map50, "map": ap.map, "seconds": seconds}


RUNNERS = {"recipe": run_recipe, "plain": run_plain}


def summarize(rows: list[dict]) -> pd.DataFrame:
    """One line per set and seed: each method's mAP@0.5, mAP and seconds, and the recipe's ratio to the plain loop."""
    table = pd.DataFrame(rows)
    wide = table.pivot_table(index=["set", "seed"], columns="method", values=["map50", "map", "seconds"])
    wide.columns = [f"{metric} {method}" for metric, method in wide.columns]
    if {"seconds recipe", "seconds plain"} <= set(wide.columns):
        wide["seconds ratio"] = wide["seconds recipe"] / wide["seconds plain"]
    return wide.round(4)


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="raccoon,coco-person")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default="recipe,plain")
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--head", default="fasterrcnn")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--frozen-epochs", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, help="append every run to this JSON-lines file")
    parser.add_argument("--summarize", type=Path, help="print the table of the runs in this file and stop")
    args = parser.parse_args(argv)
    if args.summarize:
        rows = [json.loads(line) for line in args.summarize.read_text().splitlines() if line.strip()]
        table = summarize(rows)
        print(table.to_string())
        return table
    rows = []
    for name in args.sets.split(","):
        for seed in [int(s) for s in args.seeds.split(",")]:
            for method in args.methods.split(","):
                torch.manual_seed(seed)
                dls = SETS[name](seed, args.size, args.bs)
                row = {"set": name, "seed": seed, "method": method, "arch": args.arch, "head": args.head,
                       "size": args.size, "epochs": [args.frozen_epochs, args.epochs],
                       "threads": torch.get_num_threads(), **RUNNERS[method](dls, args)}
                print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
                rows.append(row)
                if args.out:
                    args.out.parent.mkdir(parents=True, exist_ok=True)
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")
    table = summarize(rows)
    print(f"\n{args.arch} + {args.head}, {args.size} px, {args.frozen_epochs} frozen + {args.epochs} unfrozen "
          f"epochs (plain loop: {args.frozen_epochs + args.epochs}), test images")
    print(table.to_string())
    return table


if __name__ == "__main__":
    main()

"""Object detection on the raccoon set: the recipe (`fit_frozen` + `unfreeze` + `fit_discriminative`) against
torchvision's plain training loop on the same detector, weights, images, size and epochs.

Data: ``../shared/data/raccoon`` (Pascal VOC XML), its ``split/train_labels.csv`` (160 images; 15% of them held
out for validation) and ``split/test_labels.csv`` (40 images: the figures). Prints mAP@0.5 and mAP (COCO
0.50:0.95) on the test images with wall seconds.

    python benchmarks/detection.py --size 320 --frozen-epochs 2 --epochs 2 [--plain] [--head fasterrcnn]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd
import torch

from easytransfer import DetectionData, detection_learner
from easytransfer.evaluate.box_metrics import average_precision
from easytransfer.tasks.detection.data import voc_items
from easytransfer.tasks.detection.interpretation import detect
from easytransfer.tasks.detection.model import build_detector

RACCOON = Path(__file__).resolve().parents[2] / "shared" / "data" / "raccoon"


def raccoon_data(root: Path, size: int, bs: int, seed: int) -> DetectionData:
    found = voc_items(root / "images", root / "annotations")
    names = found["path"].map(lambda p: Path(p).name if p else None)
    train = set(pd.read_csv(root / "split" / "train_labels.csv")["filename"])
    test = set(pd.read_csv(root / "split" / "test_labels.csv")["filename"])
    def pick(keep):
        return found[names.isin(keep)].reset_index(drop=True)

    train_found, test_found = pick(train), pick(test)
    train_found.attrs["messages"], test_found.attrs["messages"] = [], []
    return DetectionData.build(train_found, valid_pct=0.15, seed=seed, test=test_found, size=size, bs=bs)


def run_recipe(dls, args) -> dict:
    start = time.perf_counter()
    learn = detection_learner(dls, args.arch, args.head, device="cpu")
    learn.fit_frozen(args.frozen_epochs, lr=args.lr)
    learn.unfreeze()
    learn.fit_discriminative(args.epochs, lr_max=args.lr / 3)
    seconds = time.perf_counter() - start
    scores = learn.evaluate()
    if args.overlays:
        args.overlays.mkdir(parents=True, exist_ok=True)
        learn.interpret().plot_top_losses(6).savefig(args.overlays / "detection_top_losses.png", dpi=80)
        print(f"top-loss overlays: {args.overlays / 'detection_top_losses.png'}")
    return {"method": "easytransfer recipe", "map50": scores["map50"], "map": scores["map"], "seconds": seconds}


def run_plain(dls, args) -> dict:
    """torchvision's reference loop (train_one_epoch): every layer trains, SGD with momentum, BN statistics update."""
    start = time.perf_counter()
    torch.manual_seed(args.seed)
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
    return {"method": "torchvision plain loop", "map50": ap.map50, "map": ap.map, "seconds": seconds}


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=RACCOON)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--head", default="fasterrcnn")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--frozen-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain", action="store_true", help="also run torchvision's plain loop")
    parser.add_argument("--overlays", type=Path, default=Path("runs/benchmarks"),
                        help="write the test set's top-loss overlays (image, predicted and true boxes) here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    dls = raccoon_data(args.root, args.size, args.bs, args.seed)
    print(dls.report.summary(), dls.report.counts.to_dict())
    rows = [run_recipe(dls, args)]
    if args.plain:
        rows.append(run_plain(dls, args))
    table = pd.DataFrame(rows).set_index("method")
    print(f"\nraccoon test set (40 images), {args.arch} + {args.head}, {args.size} px, "
          f"{args.frozen_epochs} frozen + {args.epochs} unfrozen epochs, {torch.get_num_threads()} threads")
    print(table.round(4).to_string())
    return table


if __name__ == "__main__":
    main()

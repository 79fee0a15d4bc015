"""The three-line recipe against fastai's own `vision_learner` + `fine_tune`, same model, weights, data and epochs.

Both sides get EfficientNet-Lite0 with the packaged ImageNet weights, the same training and validation
images (a seeded per-class subset of ``../shared/data/flowers5/train``), 224 px images, batch size 16,
horizontal flips, the model's normalisation (mean = std = 0.5) and the same number of frozen and unfrozen
epochs. Both are scored on the same held-out test images (``flowers5/val``), which neither side sees while
training; the validation accuracy is printed too. Runs alternate (ours, fastai, ours, ...) so that drift in
the machine's speed hits both; with ``--repeats`` above 1 the medians are printed.

    python benchmarks/recipe_vs_fastai.py --per-class 50 --frozen-epochs 2 --epochs 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

FLOWERS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flowers5"
ARCH = "efficientnet_lite0"
SIZE = 224


def flower_items(root: Path, per_class: int, valid_per_class: int, seed: int):
    """A seeded per-class subset of ``train/`` (train + valid rows) and all of ``val/`` as the test set."""
    rng = np.random.default_rng(seed)
    rows = []
    for cls_dir in sorted(p for p in (root / "train").iterdir() if p.is_dir()):
        files = sorted(cls_dir.glob("*.jpg"))
        pick = rng.permutation(len(files))[: per_class + valid_per_class]
        for j, k in enumerate(pick):
            rows.append((str(files[k]), cls_dir.name, j >= per_class))
    train_valid = pd.DataFrame(rows, columns=["path", "label", "is_valid"])
    test = pd.DataFrame([(str(f), d.name) for d in sorted((root / "val").iterdir()) if d.is_dir()
                         for f in sorted(d.glob("*.jpg"))], columns=["path", "label"])
    return train_valid, test


def run_ours(train_valid, test, frozen_epochs, epochs, bs, seed):
    from fastai.torch_core import set_seed

    from easytransfer import ImageData, transfer_learner

    set_seed(seed)
    start = time.perf_counter()
    dls = ImageData.from_df(train_valid, valid_col="is_valid", bs=bs, size=SIZE)
    learn = transfer_learner(dls, ARCH)
    learn.fit_frozen(frozen_epochs)
    learn.unfreeze()
    learn.fit_discriminative(epochs)
    seconds = time.perf_counter() - start
    valid_acc = float(learn.validate()[1])
    test_acc = float(learn.validate(dl=learn.dls.labelled_dl(test))[1])
    return seconds, valid_acc, test_acc


def run_fastai(train_valid, test, frozen_epochs, epochs, bs, seed):
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, ColSplitter, Normalize
    from fastai.metrics import accuracy
    from fastai.torch_core import set_seed
    from fastai.vision.augment import FlipItem, Resize
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    from easytransfer import create_model

    set_seed(seed)
    start = time.perf_counter()
    block = DataBlock(
        blocks=(ImageBlock, CategoryBlock), get_x=ColReader("path"), get_y=ColReader("label"),
        splitter=ColSplitter("is_valid"), item_tfms=[Resize(SIZE), FlipItem(0.5)],
        # vision_learner adds normalisation only for archs it knows; give it the model's own statistics
        batch_tfms=[Normalize.from_stats([0.5] * 3, [0.5] * 3, cuda=False)],
    )
    dls = block.dataloaders(train_valid, bs=bs, num_workers=0, device="cpu")

    def arch(pretrained=True):  # the same backbone with the same packaged ImageNet weights
        return create_model(ARCH, 1000, pretrained=pretrained)

    learn = vision_learner(dls, arch, metrics=accuracy)
    learn.fine_tune(epochs, freeze_epochs=frozen_epochs)
    seconds = time.perf_counter() - start
    valid_acc = float(learn.validate()[1])
    test_acc = float(learn.validate(dl=dls.test_dl(test, with_labels=True))[1])
    return seconds, valid_acc, test_acc


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=FLOWERS)
    parser.add_argument("--per-class", type=int, default=50, help="training images per class")
    parser.add_argument("--valid-per-class", type=int, default=20)
    parser.add_argument("--frozen-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="unfrozen epochs")
    parser.add_argument("--bs", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        raise SystemExit(f"{args.data} not found: this benchmark needs ../shared/data/flowers5 (../shared/README.md)")
    train_valid, test = flower_items(args.data, args.per_class, args.valid_per_class, args.seed)
    n_train = int((~train_valid["is_valid"]).sum())
    print(f"flowers5: {n_train} train, {int(train_valid['is_valid'].sum())} valid, {len(test)} test images; "
          f"{ARCH}, {SIZE} px, bs {args.bs}, {args.frozen_epochs} frozen + {args.epochs} unfrozen epochs")
    results = {"ours": [], "fastai": []}
    runners = {"ours": run_ours, "fastai": run_fastai}
    for r in range(args.repeats):
        for name in ("ours", "fastai"):
            res = runners[name](train_valid, test, args.frozen_epochs, args.epochs, args.bs, args.seed + r)
            results[name].append(res)
            print(f"  run {r + 1} {name}: {res[0]:.1f} s, valid accuracy {res[1]:.4f}, test accuracy {res[2]:.4f}")
    med = {name: [statistics.median(x[i] for x in runs) for i in range(3)] for name, runs in results.items()}
    (ours_s, ours_v, ours_t), (fa_s, fa_v, fa_t) = med["ours"], med["fastai"]
    label = "median of " + str(args.repeats) if args.repeats > 1 else "one run each"
    print(f"recipe vs fastai fine_tune ({label}):")
    print(f"  wall time: ours {ours_s:.1f} s, baseline {fa_s:.1f} s, ratio {fa_s / ours_s:.2f}")
    print(f"  valid accuracy: ours {ours_v:.4f}, baseline {fa_v:.4f}")
    print(f"  test accuracy: ours {ours_t:.4f}, baseline {fa_t:.4f}")
    return med


if __name__ == "__main__":
    main()

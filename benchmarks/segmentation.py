"""Crack segmentation on CrackForest (``../shared/data/cracks_cfd``): easytransfer's recipe beside a plain smp loop.

118 road photos (480x320) with BSDS ``.seg`` masks (segment 1 = crack, 0.35-6.3% of the pixels). Both runs use
the same U-Net on EfficientNet-Lite0 (packaged ImageNet weights), the same seeded 80/20 split, size, batch size,
loss (cross-entropy + Dice) and number of epochs. Prints crack IoU, per-class IoU, mIoU and wall seconds.

``--frozen-cache-compare`` runs the recipe twice from the same weights, the frozen stage on the encoder's cached
feature maps (the default) and on the images (``fit_frozen(cache=False)``), and prints the frozen stage's wall and
CPU seconds of each (and the wall seconds of its epochs alone: the rest is the one pass that fills the cache), their
ratios, and the scores after the whole recipe. On a machine other processes share, the CPU seconds (this process's
own) are the steadier comparison.

    python benchmarks/segmentation.py --size 256 --frozen-epochs 2 --epochs 4
    python benchmarks/segmentation.py --size 256 --frozen-epochs 3 --epochs 2 --frozen-cache-compare --no-plain
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastai.torch_core import set_seed

from easytransfer import SegmentationData, segmentation_learner
from easytransfer.evaluate.metrics import pixel_confusion_matrix, segmentation_scores
from easytransfer.tasks.segmentation.learner import CrossEntropyDiceLoss

ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cracks_cfd"
CODES = ["background", "crack"]


def read_bsds_seg(path: str | Path) -> np.ndarray:
    """A BSDS ``.seg`` file (header, ``data``, then ``segment row col_start col_end`` runs) as a 0/1 crack mask."""
    lines = Path(path).read_text().splitlines()
    header = dict(line.split(" ", 1) for line in lines[: lines.index("data")] if " " in line)
    mask = np.zeros((int(header["height"]), int(header["width"])), dtype=np.uint8)
    for line in lines[lines.index("data") + 1:]:
        if line.strip():
            segment, row, start, end = map(int, line.split())
            if segment == 1:
                mask[row, start:end + 1] = 1
    return mask


def crack_mask(image_path) -> np.ndarray:
    """`mask_fn` for CrackForest: ``image/001.jpg`` -> ``seg/001.seg``."""
    return read_bsds_seg(Path(image_path).parent.parent / "seg" / (Path(image_path).stem + ".seg"))


def labelled_images(root: Path) -> list[Path]:
    return sorted(p for p in (root / "image").glob("*.jpg") if (root / "seg" / f"{p.stem}.seg").is_file())


@dataclass(frozen=True)
class RecipeRun:
    """One run of the recipe: the frozen stage's wall seconds (and its epochs' own), the whole run's, the scores."""

    cache: bool
    frozen_seconds: float
    frozen_cpu_seconds: float
    frozen_epoch_seconds: float
    seconds: float
    scores: dict


def run_easytransfer(dls, args, *, cache: bool = True):
    set_seed(42)  # the same decoder initialisation and batches whichever path the frozen stage takes
    start = time.perf_counter()
    learn = segmentation_learner(dls, "efficientnet_lite0", "unet", loss="ce+dice")
    frozen_start, frozen_cpu_start = time.perf_counter(), time.process_time()
    learn.fit_frozen(args.frozen_epochs, lr=args.head_lr, monitor="miou", cache=cache)
    frozen_seconds, frozen_cpu = time.perf_counter() - frozen_start, time.process_time() - frozen_cpu_start
    frozen_epochs = float(learn.history["seconds"].sum())
    learn.unfreeze()
    learn.fit_discriminative(args.epochs, lr_max=args.lr, monitor="miou")
    run = RecipeRun(cache, frozen_seconds, frozen_cpu, frozen_epochs, time.perf_counter() - start, learn.evaluate())
    return run, learn


def print_frozen_cache_compare(cached: RecipeRun, uncached: RecipeRun) -> None:
    for run in (cached, uncached):
        name = "cache=True " if run.cache else "cache=False"
        print(f"{name}  frozen stage {run.frozen_seconds:.1f} s wall, {run.frozen_cpu_seconds:.1f} s CPU (its "
              f"epochs {run.frozen_epoch_seconds:.1f} s wall)  whole recipe {run.seconds:.0f} s  crack IoU "
              f"{run.scores['per_class_iou']['crack']:.3f}  mIoU {run.scores['miou']:.3f}")
    print(f"frozen stage, cache=False / cache=True: {uncached.frozen_seconds / cached.frozen_seconds:.2f}x wall, "
          f"{uncached.frozen_cpu_seconds / cached.frozen_cpu_seconds:.2f}x CPU")


def run_plain_smp(learn, args) -> tuple[dict, float]:
    """A plain PyTorch loop on a fresh model with the same weights source, data loaders and loss."""
    from easytransfer.tasks.segmentation.model import build_segmentation_model

    torch.manual_seed(0)
    dls = learn.dls
    model, _ = build_segmentation_model("efficientnet_lite0", len(CODES), head="unet", pretrained=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    loss_func = CrossEntropyDiceLoss()
    epochs = args.frozen_epochs + args.epochs
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=epochs * len(dls.train))
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        for xb, yb in dls.train:
            xb, yb = xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)
            loss = loss_func(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    cm = np.zeros((len(CODES), len(CODES)), dtype=np.int64)
    with torch.inference_mode():
        for xb, yb in dls.valid:
            preds = model(xb.as_subclass(torch.Tensor)).argmax(1)
            cm += pixel_confusion_matrix(yb.numpy(), preds.numpy(), len(CODES))
    return segmentation_scores(cm, CODES), time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--frozen-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--head-lr", type=float, default=3e-3)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--no-plain", action="store_true", help="skip the plain smp loop")
    parser.add_argument("--frozen-cache-compare", action="store_true",
                        help="also run the recipe with fit_frozen(cache=False) and compare the frozen stages")
    parser.add_argument("--overlays", type=Path, default=Path("runs/benchmarks"),
                        help="write the validation images' top-loss overlays (image, prediction, truth) here")
    args = parser.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    images = labelled_images(args.root)
    # mask_fn with a test list: the folder holds 37 unlabelled photos too, so the images are listed here
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp()) / "image"
    folder.mkdir()
    for p in images:
        (folder / p.name).symlink_to(p)
    dls = SegmentationData.from_folders(folder, codes=CODES,
                                        mask_fn=lambda p: crack_mask(args.root / "image" / Path(p).name),
                                        valid_pct=0.2, seed=42, size=args.size, bs=args.bs, aug="flips")
    print(f"{len(images)} labelled images: {len(dls.train_ds)} train, {len(dls.valid_ds)} valid, size {args.size}")
    print(dls.report.counts)
    run, learn = run_easytransfer(dls, args)
    scores = run.scores
    print(f"easytransfer  crack IoU {scores['per_class_iou']['crack']:.3f}  per-class {scores['per_class_iou']}  "
          f"mIoU {scores['miou']:.3f}  dice {scores['dice']:.3f}  pixel acc {scores['pixel_accuracy']:.4f}  "
          f"{run.seconds:.0f} s")
    if args.frozen_cache_compare:
        print_frozen_cache_compare(run, run_easytransfer(dls, args, cache=False)[0])
    if args.overlays:
        args.overlays.mkdir(parents=True, exist_ok=True)
        learn.interpret().plot_top_losses(4).savefig(args.overlays / "segmentation_top_losses.png", dpi=80)
        print(f"top-loss overlays: {args.overlays / 'segmentation_top_losses.png'}")
    if not args.no_plain:
        plain, plain_seconds = run_plain_smp(learn, args)
        print(f"plain smp     crack IoU {plain['per_class_iou']['crack']:.3f}  per-class {plain['per_class_iou']}  "
              f"mIoU {plain['miou']:.3f}  dice {plain['dice']:.3f}  pixel acc {plain['pixel_accuracy']:.4f}  "
              f"{plain_seconds:.0f} s")
    shutil.rmtree(folder.parent, ignore_errors=True)


if __name__ == "__main__":
    main()

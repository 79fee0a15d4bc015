"""Instance segmentation on coco128_seg: Mask R-CNN trained by the recipe (`fit_frozen` + `unfreeze` +
`fit_discriminative`, the detection defaults), exported, loaded back with `load_model`, predicting masks on an
image it never trained on.

Data: ``../shared/data/coco128_seg`` (the first 128 COCO train2017 photos, YOLO-seg polygons, 71 of COCO's 80
classes present; names from ``coco128.yaml``), read with ``DetectionData.from_yolo(..., masks=True)``, 20% of the
images held out for validation (the figures). COCO photos are in the pre-training set of COCO detectors, not of
the ImageNet backbone used here; use the figures to check that the pipeline learns, not as accuracy claims.
Prints box mAP@0.5, mask mAP@0.5 and mask mAP (COCO 0.50:0.95) on the validation images, the wall seconds, and
the masks the loaded bundle predicts on one validation image.

    python benchmarks/instance.py --size 320 --frozen-epochs 1 --epochs 2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from easytransfer import DetectionData, detection_learner, load_model

COCO128_SEG = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128_seg"


def coco128_names(root: Path) -> dict[int, str]:
    """Class id -> name from ``coco128.yaml``."""
    return {int(k): str(v) for k, v in yaml.safe_load((root / "coco128.yaml").read_text())["names"].items()}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=COCO128_SEG)
    parser.add_argument("--arch", default="efficientnet_lite0")
    parser.add_argument("--size", type=int, default=320)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--frozen-epochs", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlays", type=Path, default=Path("runs/benchmarks"),
                        help="write the validation images' top-loss overlays (boxes and masks) here")
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    dls = DetectionData.from_yolo(args.root / "images" / "train2017", args.root / "labels" / "train2017",
                                  coco128_names(args.root), masks=True, valid_pct=0.2, seed=args.seed,
                                  size=args.size, bs=args.bs)
    items = dls.recipe.items
    print(f"{(~items['is_valid']).sum()} training and {items['is_valid'].sum()} validation images, "
          f"{sum(len(m) for m in items['masks'])} instance masks; {dls.report.summary()}")

    learn = detection_learner(dls, args.arch, "maskrcnn", device="cpu")
    learn.fit_frozen(args.frozen_epochs)
    learn.unfreeze()
    learn.fit_discriminative(args.epochs)
    train_seconds = time.perf_counter() - start
    interp = learn.interpret(losses=bool(args.overlays))
    scores = interp.scores()
    if args.overlays:
        args.overlays.mkdir(parents=True, exist_ok=True)
        interp.plot_top_losses(6).savefig(args.overlays / "instance_top_losses.png", dpi=80)
        print(f"top-loss overlays: {args.overlays / 'instance_top_losses.png'}")

    with tempfile.TemporaryDirectory() as folder:
        predictor = load_model(learn.export(Path(folder) / "coco128-maskrcnn"), device="cpu")
        held_out = items.loc[items["is_valid"], "path"].iloc[0]
        found = {threshold: predictor.predict(held_out, score_threshold=threshold)
                 for threshold in (predictor.threshold, learn.detection_config.score_thresh)}
    seconds = time.perf_counter() - start
    print(f"\ncoco128_seg validation ({scores['n_images']} images), {args.arch} + maskrcnn, {args.size} px, "
          f"{args.frozen_epochs} frozen + {args.epochs} unfrozen epochs, {torch.get_num_threads()} threads")
    print(f"box mAP@0.5      {scores['map50']:.4f}")
    print(f"mask mAP@0.5     {scores['mask_map50']:.4f}")
    print(f"mask mAP         {scores['mask_map']:.4f}")
    print(f"seconds          {seconds:.0f} (training {train_seconds:.0f})")
    with Image.open(held_out) as img:
        print(f"held-out image   {Path(held_out).name} ({img.width} x {img.height}), predicted by the loaded bundle:")
    for threshold, objects in found.items():
        shapes = sorted({tuple(mask.shape) for *_, mask in objects})
        print(f"  score >= {threshold}: {len(objects)} masks of shape {shapes}, boolean: "
              f"{all(mask.dtype == np.bool_ for *_, mask in objects)}; best (label, score, pixels): "
              f"{[(label, round(score, 3), int(mask.sum())) for label, score, _, mask in objects[:3]]}")
    return {**scores, "seconds": seconds, "masks": {t: len(objects) for t, objects in found.items()}}


if __name__ == "__main__":
    main()

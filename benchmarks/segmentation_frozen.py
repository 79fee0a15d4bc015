"""Segmentation's frozen stage: the three lines with no options (``fit_frozen(3)`` on cached maps, trained on random
windows) beside the frozen stage on the images (``cache=False``, the path before issue 27) and on whole cached maps
(``cache_window=None``), one after the other in one process from the same seed.

Sets (``--sets``):
- ``cracks``: CrackForest (``../shared/data/cracks_cfd``, 118 road photos, crack vs background; 20% validation).
- ``coco-semantic``: a 12-class scene set made from ``../shared/data/coco128_seg``'s instance polygons: the 11 most
  frequent classes (person, car, cup, chair, book, bowl, ...) drawn as class ids, larger instances first, the rest
  background; 126 photos, 20% validation. Written once under ``~/.cache/easytransfer-bench/coco_semantic``.

Each run: ``learn = segmentation_learner(dls)``, ``learn.fit_frozen(3, ...)``, ``learn.unfreeze()``,
``learn.fit_discriminative(6)``, every other option the library's default. Prints the frozen stage's wall and CPU
seconds and its ratio to ``cache=False``'s, the validation mIoU after the frozen stage and after the whole recipe
(``--frozen-only``: the frozen stage alone, a quick timing).

    python benchmarks/segmentation_frozen.py --sets coco-semantic,cracks --seeds 0 --out runs/frozen.jsonl
    python benchmarks/segmentation_frozen.py --frozen-only --methods windows,images
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
from fastai.torch_core import set_seed
from PIL import Image, ImageDraw
from segmentation import CODES, ROOT, crack_mask, labelled_images

from easytransfer import SegmentationData, segmentation_learner

COCO128 = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco128_seg"
COCO_SEMANTIC = Path.home() / ".cache" / "easytransfer-bench" / "coco_semantic"
N_CLASSES = 11
METHODS = {"images": {"cache": False}, "windows": {}, "whole-maps": {"cache_window": None}}


def _polygons(label_file: Path) -> list[tuple[int, np.ndarray]]:
    rows = (line.split() for line in label_file.read_text().splitlines())
    return [(int(v[0]), np.array(v[1:], float).reshape(-1, 2)) for v in rows if len(v) >= 7]


def _area(points: np.ndarray) -> float:
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def coco_semantic(root: Path = COCO128, out: Path = COCO_SEMANTIC) -> tuple[Path, Path, list[str]]:
    """Images, masks and codes of the 12-class set (written once)."""
    labels = {f.stem: _polygons(f) for f in sorted((root / "labels" / "train2017").glob("*.txt"))}
    counts = Counter(c for polygons in labels.values() for c, _ in polygons)
    top = [c for c, _ in counts.most_common(N_CLASSES)]
    codes = ["background", *(str(c) for c in top)]
    images, masks = out / "images", out / "masks"
    if (out / "codes.txt").is_file():
        return images, masks, codes
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(exist_ok=True)
    for stem, polygons in labels.items():
        image = root / "images" / "train2017" / f"{stem}.jpg"
        if not image.is_file():
            continue
        with Image.open(image) as img:
            width, height = img.size
        mask = Image.new("L", (width, height), 0)
        draw = ImageDraw.Draw(mask)
        for c, points in sorted((p for p in polygons if p[0] in top), key=lambda p: -_area(p[1])):
            draw.polygon([(x * width, y * height) for x, y in points], fill=top.index(c) + 1)
        (images / image.name).unlink(missing_ok=True)
        (images / image.name).symlink_to(image)
        mask.save(masks / f"{stem}.png")
    (out / "codes.txt").write_text("\n".join(codes))
    return images, masks, codes


def dataset(name: str, seed: int) -> SegmentationData:
    if name == "coco-semantic":
        images, masks, codes = coco_semantic()
        return SegmentationData.from_folders(images, masks, codes=codes, valid_pct=0.2, seed=seed)
    folder = Path(tempfile.mkdtemp()) / "image"
    folder.mkdir()
    for path in labelled_images(ROOT):
        (folder / path.name).symlink_to(path)
    return SegmentationData.from_folders(folder, codes=CODES, valid_pct=0.2, seed=seed,
                                         mask_fn=lambda p: crack_mask(ROOT / "image" / Path(p).name))


def run(dls: SegmentationData, seed: int, options: dict, frozen_only: bool = False) -> dict:
    set_seed(seed)  # the same decoder initialisation whichever path the frozen stage takes
    learn = segmentation_learner(dls)
    wall, cpu = time.perf_counter(), time.process_time()
    learn.fit_frozen(3, **options)
    frozen, frozen_cpu = time.perf_counter() - wall, time.process_time() - cpu
    frozen_miou = learn.evaluate()["miou"]
    if frozen_only:
        return {"frozen_s": frozen, "frozen_cpu_s": frozen_cpu, "frozen_miou": frozen_miou, "miou": float("nan"),
                "seconds": time.perf_counter() - wall, "size": learn.dls.recipe.size}
    learn.unfreeze()
    learn.fit_discriminative(6)
    return {"frozen_s": frozen, "frozen_cpu_s": frozen_cpu, "frozen_miou": frozen_miou,
            "miou": learn.evaluate()["miou"], "seconds": time.perf_counter() - wall, "size": learn.dls.recipe.size}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="coco-semantic,cracks")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"of {list(METHODS)}; 'images' is the baseline")
    parser.add_argument("--frozen-only", action="store_true", help="the frozen stage alone (no fine-tuning)")
    parser.add_argument("--out", type=Path, help="append every run to this JSON-lines file")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    print("set            seed  frozen stage      frozen s (CPU s)   x images  mIoU frozen  mIoU recipe")
    for name in args.sets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            dls = dataset(name, seed)
            base = None
            for method in sorted(methods, key=lambda m: m != "images"):  # the baseline first: its ratio is printed
                row = {"set": name, "seed": seed, "method": method, **run(dls, seed, METHODS[method], args.frozen_only)}
                base = row["frozen_s"] if method == "images" else base
                ratio = f"{base / row['frozen_s']:.2f}x" if base else "-"
                print(f"{name:14s} {seed:4d}  {method:16s} {row['frozen_s']:7.1f} ({row['frozen_cpu_s']:7.1f})  "
                      f"{ratio:>8s}  {row['frozen_miou']:11.4f}  {row['miou']:11.4f}", flush=True)
                if args.out:
                    with args.out.open("a") as f:
                        f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()

"""Planning numbers for a teacher: seconds per 100 images per epoch for the models whose weights work offline.

    python benchmarks/planning_numbers.py                      # every offline model, 16 textile images per class
    python benchmarks/planning_numbers.py --per-class 30 --archs efficientnet_lite0

For each model, on the packaged textile images (no ``../shared`` needed), at its own input size, batch size 16:

- feature pass: the one-time pass of the frozen body over the training and validation images (`fit_frozen`'s
  first call, or `lr_find`'s);
- cached frozen epoch: one `fit_frozen` epoch on those cached features (the head alone);
- fine-tuning epoch: one `fit_discriminative` epoch with every group unfrozen (training images, plus the
  validation pass);
- prediction: `load_model(...).predict_folder` on the validation images (batches of 8, as `easytransfer
  predict` runs), and one `predict(image)` call per image (a photo at a time, as in a live demo).

Each is printed as seconds per 100 images (training images for the epochs, all images for the feature pass,
predicted images for prediction), with the wall seconds and the image count it rests on. The machine's load is
printed too: on a shared machine the figures are upper bounds.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.datasets import textile_folder

ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100", "tv:mobilenet_v2")


def per_100(seconds: float, n_images: int) -> float:
    """Seconds per 100 images.

    >>> per_100(3.0, 50)
    6.0
    """
    return 100 * seconds / max(n_images, 1)


def measure(arch: str, folder: Path, out: Path) -> dict:
    """The four figures for `arch` on `folder` (class sub-folders); the bundle is written under `out`."""
    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=16)
    learn = transfer_learner(dls, arch, seed=0)
    n_train, n_valid = len(learn.dls.train_ds), len(learn.dls.valid_ds)
    start = time.perf_counter()
    learn.fit_frozen(1)  # the feature pass, then one epoch on the features
    first = time.perf_counter() - start
    start = time.perf_counter()
    learn.fit_frozen(1)  # the features are cached now: the epoch alone
    cached_epoch = time.perf_counter() - start
    feature_pass = max(first - cached_epoch, 0.0)
    learn.unfreeze()
    start = time.perf_counter()
    learn.fit_discriminative(1)
    fine_tune_epoch = time.perf_counter() - start
    bundle = learn.export(out / arch.replace(":", "_"))
    predictor = load_model(bundle, device="cpu")
    valid_files = learn.dls.recipe.items.loc[learn.dls.recipe.items["is_valid"], "path"].tolist()
    valid_folder = out / "valid"
    valid_folder.mkdir(parents=True, exist_ok=True)
    for path in valid_files:
        link = valid_folder / Path(path).name
        if not link.exists():
            link.symlink_to(path)
    start = time.perf_counter()
    predictor.predict_folder(valid_folder, progress=False)
    prediction = time.perf_counter() - start
    start = time.perf_counter()
    for path in valid_files:
        predictor.predict(path)
    one_by_one = time.perf_counter() - start
    for link in valid_folder.iterdir():
        link.unlink()
    return {"arch": arch, "size": learn.dls.recipe.size, "n_train": n_train, "n_valid": n_valid,
            "feature_pass": per_100(feature_pass, n_train + n_valid),
            "cached_frozen_epoch": per_100(cached_epoch, n_train),
            "fine_tuning_epoch": per_100(fine_tune_epoch, n_train),
            "prediction": per_100(prediction, len(valid_files)), "one_by_one": per_100(one_by_one, len(valid_files)),
            "wall": first + cached_epoch + fine_tune_epoch + prediction + one_by_one}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default=",".join(ARCHS), help="comma-separated models (default: the offline ones)")
    parser.add_argument("--per-class", type=int, default=16, help="textile images per class (default 16)")
    args = parser.parse_args()
    import torch

    print(f"{os.cpu_count()} CPU cores, torch threads {torch.get_num_threads()}, load average "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (1, 5, 15 min)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = textile_folder(limit=args.per_class, seed=0, dest=Path(tmp) / "images")
        header = "arch                 size  train  valid  feature pass  cached frozen epoch  fine-tuning epoch  " \
                 "prediction  one by one  (s per 100 images)  wall s"
        print(header)
        for arch in args.archs.split(","):
            r = measure(arch, folder, Path(tmp) / "models")
            print(f"{r['arch']:<20} {r['size']:>4}  {r['n_train']:>5}  {r['n_valid']:>5}  {r['feature_pass']:>12.1f}  "
                  f"{r['cached_frozen_epoch']:>19.2f}  {r['fine_tuning_epoch']:>17.1f}  {r['prediction']:>10.1f}"
                  f"  {r['one_by_one']:>10.1f}  {'':>18}  {r['wall']:>6.0f}", flush=True)
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()

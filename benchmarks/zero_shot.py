"""Zero-shot and few-shot heads on the tiny CLIP that ships with the tests (``tests/assets/tiny_clip``).

    python benchmarks/zero_shot.py                 # colours and shapes, 10 labelled images per class
    python benchmarks/zero_shot.py --shots 5

The tiny CLIP learned 32 px images of one coloured shape from captions (``tools/train_tiny_clip.py``). Every
figure is a test accuracy on fresh images (a seed training never used), printed beside chance and beside the
zero-shot classifier, the baseline that needs no labelled image at all:

- ``zero-shot``: `zero_shot_classifier` with the default CLIP photo templates; ``zero-shot held-out``: with
  wordings the model never saw in training;
- ``prototype``, ``knn``, ``logistic``: `fit_frozen(method=...)` on the image tower's cached features;
- ``zero_shot head + fit_frozen``: `transfer_learner(head="zero_shot")`, then 5 frozen epochs.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

from tiny_clip_data import HELD_OUT_COLOUR_WORDINGS, HELD_OUT_SHAPE_WORDINGS, write_eval_folder  # noqa: E402

from easytransfer import ImageData, transfer_learner, zero_shot_classifier  # noqa: E402

ARCH = f"open_clip:local-dir:{ROOT / 'tests' / 'assets' / 'tiny_clip'}"
TEST_SEED, TRAIN_SEED = 1234, 77


def accuracy_of(predictor_or_learner, folder: Path) -> float:
    """Accuracy on a folder of class sub-folders (a Predictor's `evaluate`, or a learner's)."""
    return float(predictor_or_learner.evaluate(str(folder))["accuracy"])


def run_task(by: str, shots: int, work: Path) -> list[tuple[str, float, float]]:
    """(method, accuracy, seconds) for one task: ``by="colour"`` or ``"shape"``."""
    test = write_eval_folder(work / f"{by}-test", per_class=30, seed=TEST_SEED, by=by)
    train = write_eval_folder(work / f"{by}-train", per_class=shots * 2, seed=TRAIN_SEED, by=by)
    classes = sorted(p.name for p in test.iterdir())
    slot = "{colour}" if by == "colour" else "{shape}"
    wordings = HELD_OUT_COLOUR_WORDINGS if by == "colour" else HELD_OUT_SHAPE_WORDINGS
    held_out = [w.replace(slot, "{}") for w in wordings]
    rows = [("chance", 1 / len(classes), 0.0)]
    for name, templates in (("zero-shot", None), ("zero-shot held-out wordings", held_out)):
        start = time.perf_counter()
        classifier = zero_shot_classifier(classes, ARCH, templates=templates, device="cpu")
        rows.append((name, accuracy_of(classifier, test), time.perf_counter() - start))
    for method in ("prototype", "knn", "logistic", "zero_shot head + fit_frozen"):
        start = time.perf_counter()
        dls = ImageData.from_folder(train, valid_pct=0.5, seed=0, bs=16)  # `shots` training images per class
        if method.startswith("zero_shot"):
            learn = transfer_learner(dls, ARCH, head="zero_shot", device="cpu")
            learn.fit_frozen(5)
        else:
            learn = transfer_learner(dls, ARCH, device="cpu")
            learn.fit_frozen(1, method=method)
        rows.append((method, accuracy_of(learn, test), time.perf_counter() - start))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=10, help="labelled training images per class")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results = {by: run_task(by, args.shots, Path(tmp)) for by in ("colour", "shape")}
    print(f"\ntiny CLIP, test accuracy on fresh images ({args.shots} labelled images per class for the heads)")
    print(f"{'method':32s} {'colour':>8s} {'shape':>8s} {'seconds':>8s}")
    for (method, colour, t1), (_, shape, t2) in zip(results["colour"], results["shape"]):
        print(f"{method:32s} {colour:8.3f} {shape:8.3f} {t1 + t2:8.1f}")


if __name__ == "__main__":
    main()

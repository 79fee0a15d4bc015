"""The offline demo: EfficientNet-Lite0 with real ImageNet weights learns a textile-inspection task.

The images come from the ``conformal-clip-data`` package: 2,000 simulated 250x250 textile images, classes
``nominal``, ``local`` (a small local defect) and ``global`` (a defect over the whole image).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.torch_core import set_seed

from ..data.loaders import ImageData
from ..data.split import split_train_valid_test
from ..datasets import textile_items
from ..tasks import get_task

__all__ = ["run_demo"]


def _counts(train_valid: pd.DataFrame, test: pd.DataFrame) -> pd.DataFrame:
    split = np.where(train_valid["is_valid"], "valid", "train")
    table = pd.crosstab(train_valid["label"].rename("class"), pd.Series(split, name="split"))
    table["test"] = test["label"].value_counts()
    return table.fillna(0).astype(int)


def run_demo(
    *,
    epochs: int = 4,
    frozen_epochs: int = 3,
    limit: int | None = 150,
    out: str | Path | None = None,
    seed: int = 42,
    arch: str = "efficientnet_lite0",
    bs: int = 16,
) -> dict:
    """Train `arch` on the textile images and evaluate it on held-out test images.

    Returns:
        ``{"test_accuracy": ..., "out": Path, "per_class": DataFrame}``.

    >>> run_demo(epochs=1, frozen_epochs=1, limit=20)  # doctest: +SKIP
    """
    out = Path(out) if out is not None else Path("easytransfer_runs") / time.strftime("demo-%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    set_seed(seed)  # the same run every time: sampling, splits, initial head and batch order
    train_valid, test = split_train_valid_test(textile_items(limit, seed), seed=seed)
    dls = ImageData.from_df(train_valid, valid_col="is_valid", bs=bs)
    learn = get_task("classification").learner_factory(dls, arch)  # transfer_learner, through the registry
    spec = learn.spec
    print(f"model: {arch} ({spec.arch}, {spec.num_params / 1e6:.1f}M parameters), weights: {spec.weights}")
    print(f"preprocessing: the model's {learn.dls.recipe.size}px {spec.interpolation}, mean {spec.mean}, "
          f"std {spec.std}")
    print("images per class and split:")
    print(_counts(train_valid, test).to_string())

    print(f"\n1) feature extraction: choosing the input size and pooling from validation, then training the new "
          f"head for {frozen_epochs} epochs, body frozen")
    learn.fit_frozen(frozen_epochs)
    if learn.choice is not None:
        print(learn.choice)
    print(f"\n2) fine-tuning: all {learn.n_groups} layer groups unfrozen, discriminative learning rates")
    learn.unfreeze()
    learn.fit_discriminative(epochs)
    print()
    print(learn.diagnose())

    interp = learn.interpret(learn.dls.labelled_dl(test))
    print(f"\n3) held-out test set ({len(test)} images): per-class precision, recall, F1, support")
    print(interp.report())
    interp.plot_confusion_matrix().savefig(out / "confusion_matrix.png", dpi=100)
    learn.history.to_csv(out / "history.csv", index=False)
    learn.plot_history().savefig(out / "history.png", dpi=100)
    learn.save_report(out / "report.html", interp=interp)  # the held-out test set
    learn.export(out / "model")
    print(f"\noutputs written to {out.resolve()} (confusion_matrix.png, history.csv, history.png, report.html, model/)")
    print(f"test accuracy: {interp.accuracy:.4f}")
    return {"test_accuracy": interp.accuracy, "out": out, "per_class": interp.per_class()}

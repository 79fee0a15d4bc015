"""A synthetic inspection set: grey machined parts, good or with one small defect, split by part.

    python benchmarks/grey_parts.py --seed 0 --show 8   # build it and print where the images are

Built because no installable package ships one and issue 26's hidden check is of this kind: grey parts
photographed several times each, defects from 0.1 % to 0.5 % of the pixels (a pit or a scratch), and the split
made **by part**, so the test images show parts the model never saw. Every part has its own shape, brushed
texture, holes and grey level; every photo of it its own shift, rotation, lighting and sensor noise. Half the
photos of a part are good, half carry a defect at a random place on the part.

`grey_parts(seed)` returns ``{"train", "valid", "test"}`` tables (``path``, ``label`` in ``good`` / ``defect``) as
`few_shot.py`'s datasets do; the images are written once per seed under ``~/.cache/easytransfer-bench/``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

SIZE = 512  # px, square photos
PARTS = {"train": 40, "valid": 12, "test": 30}
PHOTOS_PER_PART = 4  # two good, two with a defect
DEFECT_AREA = (0.001, 0.005)  # share of the image's pixels
CACHE = Path.home() / ".cache" / "easytransfer-bench"


@dataclass(frozen=True)
class Part:
    """What stays the same in every photo of one part."""

    mask: np.ndarray  # bool (SIZE, SIZE): where the part is
    surface: np.ndarray  # float (SIZE, SIZE): its grey level with the brushed texture


def _part(rng: np.random.Generator) -> Part:
    """A rounded plate or a disc, with holes, a grey level and a brushed texture of its own."""
    yy, xx = np.mgrid[:SIZE, :SIZE] / SIZE - 0.5
    if rng.random() < 0.5:
        half_w, half_h, r = rng.uniform(0.28, 0.4), rng.uniform(0.22, 0.38), 0.08
        dx, dy = np.maximum(np.abs(xx) - half_w + r, 0), np.maximum(np.abs(yy) - half_h + r, 0)
        mask = np.hypot(dx, dy) <= r
    else:
        mask = np.hypot(xx, yy) <= rng.uniform(0.3, 0.42)
    for _ in range(rng.integers(1, 5)):  # holes
        cx, cy, hr = rng.uniform(-0.2, 0.2), rng.uniform(-0.2, 0.2), rng.uniform(0.02, 0.06)
        mask &= np.hypot(xx - cx, yy - cy) > hr
    angle = rng.uniform(0, 180)
    brushed = ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), sigma=(0.7, rng.uniform(8, 20)))
    brushed = ndimage.rotate(brushed, angle, reshape=False, mode="reflect")
    brushed /= brushed.std() + 1e-8
    shading = 0.05 * (xx * np.cos(angle) + yy * np.sin(angle))
    surface = rng.uniform(0.45, 0.62) + 0.035 * brushed + shading
    return Part(mask, surface)


def _defect(rng: np.random.Generator, part: Part) -> np.ndarray:
    """A signed intensity change covering 0.1-0.5 % of the image: a dark pit or a scratch (dark or bright)."""
    area = rng.uniform(*DEFECT_AREA) * SIZE * SIZE
    inside = np.argwhere(ndimage.binary_erosion(part.mask, iterations=20))
    cy, cx = inside[rng.integers(len(inside))]
    yy, xx = np.mgrid[:SIZE, :SIZE]
    if rng.random() < 0.5:  # a pit: an ellipse
        ratio = rng.uniform(0.5, 1.0)
        a = np.sqrt(area / (np.pi * ratio))
        shape = ((xx - cx) / a) ** 2 + ((yy - cy) / (a * ratio)) ** 2 <= 1
        change = -rng.uniform(0.12, 0.25)
    else:  # a scratch: a thin line
        width = rng.uniform(2.0, 4.0)
        length = area / width
        theta = rng.uniform(0, np.pi)
        along = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        across = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        shape = (np.abs(along) <= length / 2) & (np.abs(across) <= width / 2)
        change = rng.choice([-1, 1]) * rng.uniform(0.12, 0.25)
    return ndimage.gaussian_filter(shape.astype(float), 0.8) * change * part.mask


def _photo(rng: np.random.Generator, part: Part, defect: np.ndarray | None) -> Image.Image:
    """One photo of `part` (with `defect` drawn on it): background, lighting, shift, rotation, sensor noise."""
    background = 0.16 + 0.02 * ndimage.gaussian_filter(rng.normal(size=(SIZE, SIZE)), 6)
    image = np.where(part.mask, part.surface, background)
    if defect is not None:
        image = image + defect
    image = ndimage.rotate(image, rng.uniform(-8, 8), reshape=False, mode="nearest", order=1)
    image = ndimage.shift(image, rng.uniform(-16, 16, size=2), mode="nearest", order=1)
    image = image * rng.uniform(0.9, 1.1) + rng.normal(0, 0.012, size=image.shape)
    return Image.fromarray((np.clip(image, 0, 1) * 255).astype(np.uint8)).convert("RGB")


def grey_parts(seed: int, root: Path = CACHE) -> dict[str, pd.DataFrame]:
    """The set for `seed`: written on first use, then read from ``root``."""
    folder = root / f"grey_parts_seed{seed}"
    tables = {split: folder / f"{split}.csv" for split in PARTS}
    if not all(t.exists() for t in tables.values()):
        _write(folder, seed)
    return {split: pd.read_csv(t) for split, t in tables.items()}


def _write(folder: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for split, n_parts in PARTS.items():
        rows = []
        for _ in range(n_parts):
            part = _part(rng)
            for k in range(PHOTOS_PER_PART):
                label = "defect" if k % 2 else "good"
                path = folder / f"{n:04d}_{label}.png"
                _photo(rng, part, _defect(rng, part) if label == "defect" else None).save(path)
                rows.append((str(path), label, n // PHOTOS_PER_PART))
                n += 1
        pd.DataFrame(rows, columns=["path", "label", "part"]).to_csv(folder / f"{split}.csv", index=False)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=0, help="print this many image paths")
    args = parser.parse_args(argv)
    split = grey_parts(args.seed)
    for name, table in split.items():
        print(name, len(table), "images of", table["part"].nunique(), "parts:", table["label"].value_counts().to_dict())
    for path in split["train"]["path"][: args.show]:
        print(path)


if __name__ == "__main__":
    main()

"""Shared fixtures: tiny image folders made on the fly, and small subsets of the packaged textile images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def make_image_folder(root: Path, classes=("cat", "dog"), per_class: int = 6, size: int = 40, seed: int = 0) -> Path:
    """Class sub-folders of small random JPEGs whose mean colour depends on the class (so they are learnable)."""
    rng = np.random.default_rng(seed)
    for k, cls in enumerate(classes):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.full((size, size, 3), 60 + 120 * k, dtype=np.int16)
            noise = rng.integers(-40, 40, size=(size, size, 3))
            arr = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / cls / f"{cls}_{i}.jpg")
    return root


@pytest.fixture
def image_folder(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images")


@pytest.fixture(scope="session")
def textile_subset(tmp_path_factory) -> Path:
    """30 textile images per class, as class sub-folders of symlinks."""
    from easytransfer.datasets import textile_items

    root = tmp_path_factory.mktemp("textile")
    for path, label in textile_items(limit=30, seed=0).itertuples(index=False):
        (root / label).mkdir(exist_ok=True)
        os.symlink(path, root / label / Path(path).name)
    return root

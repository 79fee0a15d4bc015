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


# A tiny random CLIP in open_clip's folder format (open_clip_config.json + open_clip_model.safetensors): a 4-block
# ViT on 32 px images and a 1-layer text tower reading 16 tokens. The vocabulary stays CLIP's 49408 tokens: the
# BPE tokenizer that ships in open_clip's wheel produces those ids.
TINY_CLIP_CONFIG = {
    "model_cfg": {
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 4, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
    },
    "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                       "interpolation": "bicubic", "resize_mode": "shortest"},
}


def make_tiny_clip_folder(root: Path, seed: int = 0, config: dict = TINY_CLIP_CONFIG) -> Path:
    """Write a random tiny CLIP into `root` in open_clip's local-dir format; returns `root`."""
    import json

    import open_clip
    from safetensors.torch import save_file

    root.mkdir(parents=True, exist_ok=True)
    (root / "open_clip_config.json").write_text(json.dumps(config))
    torch.manual_seed(seed)
    clip = open_clip.create_model(f"local-dir:{root}", load_weights=False, pretrained_text=False)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, str(root / "open_clip_model.safetensors"))
    return root


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory) -> str:
    """The name of a tiny random CLIP in a local-dir folder: ``"open_clip:local-dir:PATH"``."""
    return f"open_clip:local-dir:{make_tiny_clip_folder(tmp_path_factory.mktemp('tiny_clip'))}"

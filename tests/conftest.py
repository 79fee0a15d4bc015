"""Shared fixtures: tiny image folders made on the fly, small subsets of the packaged textile images, tiny bundles
and runs. Plain helpers shared by several test modules are in helpers.py."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY_TOWER
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


@pytest.fixture(scope="module")
def cats(tmp_path_factory) -> Path:
    """4 small images each of cat and dog."""
    return make_image_folder(tmp_path_factory.mktemp("cats") / "images", classes=("cat", "dog"), per_class=4, size=32)


@pytest.fixture(scope="module")
def bees(tmp_path_factory) -> Path:
    """4 small images each of ant and bee: the classes of `cats` are not these."""
    return make_image_folder(tmp_path_factory.mktemp("bees") / "images", classes=("ant", "bee"), per_class=4, size=32)


@pytest.fixture(scope="module")
def towers_folder(tmp_path_factory) -> Path:
    """3 images per class, 40 px: data for the tiny ViT towers (the `tiny_towers` fixture)."""
    return make_image_folder(tmp_path_factory.mktemp("towers"), per_class=3, size=40)


@pytest.fixture
def tiny_towers(monkeypatch):
    """Every timm model built in the test is the tiny version of its builder."""
    import timm

    real = timm.create_model

    def create_tiny(name, *args, **kwargs):
        return real(name, *args, **{**kwargs, **TINY_TOWER})

    monkeypatch.setattr(timm, "create_model", create_tiny)


def make_messy_folder(root: Path) -> dict:
    """Good images in cat/ and dog/, plus one of every kind of trouble. Returns {name: path}."""
    make_image_folder(root, per_class=6)
    (root / "bird").mkdir()  # an empty class folder
    f = {}
    f["truncated"] = root / "cat" / "truncated.jpg"
    noisy = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=95)
    f["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    f["empty"] = root / "cat" / "empty.jpg"
    f["empty"].write_bytes(b"")
    f["text"] = root / "dog" / "notes.jpg"
    f["text"].write_text("this is not an image, it is a note someone saved with the wrong name\n")
    f["huge"] = root / "dog" / "huge.png"
    Image.new("RGB", (300, 300), (0, 90, 0)).save(f["huge"])
    f["png_as_jpg"] = root / "cat" / "png_named.jpg"
    Image.new("RGB", (40, 40), (10, 200, 10)).save(f["png_as_jpg"], "PNG")
    f["gif_as_jpg"] = root / "dog" / "gif_named.jpg"
    Image.new("RGB", (40, 40), (10, 10, 200)).convert("P").save(f["gif_as_jpg"], "GIF")
    f["cmyk"] = root / "cat" / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(f["cmyk"], "JPEG")
    f["sixteen"] = root / "dog" / "sixteen.png"
    Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16)).save(f["sixteen"])
    f["rgba"] = root / "cat" / "rgba.png"
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(f["rgba"])
    f["palette"] = root / "dog" / "palette.png"
    Image.new("RGB", (40, 40), (120, 60, 200)).quantize(8).save(f["palette"])
    f["rotated"] = root / "cat" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (60, 40), (220, 220, 30)).save(f["rotated"], "JPEG", exif=exif.tobytes())
    return f


@pytest.fixture
def messy(tmp_path):
    """(root, {kind of trouble: path}) of `make_messy_folder`."""
    root = tmp_path / "messy"
    return root, make_messy_folder(root)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An untrained tiny classifier's bundle (these tests are about paths and exit codes, not accuracy)."""
    from easytransfer import ImageData, transfer_learner

    root = make_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=3, size=16)
    learn = transfer_learner(ImageData.from_folder(root, valid_pct=0.34, seed=0, bs=2, size=32), "test_efficientnet",
                             pretrained=False)
    return learn.export(tmp_path_factory.mktemp("bundle") / "model")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A working directory holding ``images/`` (6 per class), ``test/`` (3 per class) and a trained ``run/``."""
    from easytransfer.cli import main

    root = tmp_path_factory.mktemp("student")
    make_image_folder(root / "images", per_class=6)
    make_image_folder(root / "test", per_class=3, seed=1)
    code = main(["train", str(root / "images"), "--arch", "test_efficientnet", "--random-init", "--frozen-epochs",
                 "1", "--epochs", "0", "--size", "32", "--bs", "4", "--out", str(root / "run")])
    assert code == 0
    return root


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

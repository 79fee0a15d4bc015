"""Tiny synthetic data for every registered task, made on the fly: what the task contract trains on.

`TASK_DATA` maps a task's registered name to a `TaskData`: how to write a few small, learnable images with their
labels under a folder and build the task's data object from them (with a held-out test set, so
``learn.evaluate()`` has something to score), the learner's extra keyword arguments that keep it small, and how
to compare the learner's prediction of one image with the exported predictor's. A task registered without an
entry here fails tests/test_task_contract.py with a message asking for one.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from conftest import make_image_folder
from PIL import Image

ARCH = "test_efficientnet"  # timm's tiny test model: random weights, no download, fast on a CPU
SIZE = 32


@dataclass(frozen=True)
class Made:
    """A task's data object and a few image files to predict (never seen in training)."""

    data: object
    images: list[Path]


@dataclass(frozen=True)
class TaskData:
    """What the contract needs of one task.

    Attributes:
        make: ``make(root) -> Made``: writes the images (and labels) under `root` and builds the data.
        same_prediction: ``same_prediction(from_learner, from_predictor)`` asserts the two predictions of one
            image agree (labels equal, numbers within float tolerance); each task's ``predict`` has its own shape.
        learner_kwargs: extra keyword arguments of the task's learner factory (small detector ...).
        predict_kwargs: keyword arguments of both ``learn.predict`` and the predictor's ``predict``.
    """

    make: Callable[[Path], Made]
    same_prediction: Callable[[object, object], None]
    learner_kwargs: dict = field(default_factory=dict)
    predict_kwargs: dict = field(default_factory=dict)


def _close(a, b, atol: float = 1e-4) -> bool:
    a, b = (x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x) for x in (a, b))
    return a.shape == b.shape and np.allclose(a.astype(float), b.astype(float), atol=atol)


# ------------------------------------------------------------------------------------------------ classification


def make_classification(root: Path) -> Made:
    from easytransfer import ImageData

    folder = make_image_folder(root / "images", classes=("cat", "dog"), per_class=6, size=SIZE)
    dls = ImageData.from_folder(folder, valid_pct=0.25, test_pct=0.25, seed=0, bs=4, size=SIZE, aug="none")
    extra = make_image_folder(root / "unseen", classes=("cat", "dog"), per_class=1, size=SIZE, seed=1)
    return Made(dls, sorted(extra.rglob("*.jpg")))


def same_classification(learned, predicted) -> None:
    """``learn.predict``: (label, index, probs); ``Predictor.predict``: (label, probability, probs)."""
    label, index, probs = learned
    p_label, probability, p_probs = predicted
    assert str(label) == p_label
    assert _close(probs, p_probs), (probs, p_probs)
    assert abs(float(probs[int(index)]) - probability) < 1e-4


# ------------------------------------------------------------------------------------------------ segmentation

RED, GREEN = (220, 30, 30), (30, 200, 30)


def write_shapes(root: Path, n: int, size: int = SIZE, seed: int = 0) -> tuple[Path, Path]:
    """Images of a red square (class 1) and a green disc (class 2) on grey; masks with exactly those pixels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    side = size // 3
    for i in range(n):
        img = np.full((size, size, 3), 60, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(1, size - side - 1, 2)
        img[y:y + side, x:x + side], mask[y:y + side, x:x + side] = RED, 1
        cy, cx = rng.integers(size // 8, size - size // 8, 2)
        yy, xx = np.ogrid[:size, :size]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (size // 8) ** 2
        img[disc], mask[disc] = GREEN, 2
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return root / "images", root / "masks"


def make_segmentation(root: Path) -> Made:
    from easytransfer import SegmentationData

    images, masks = write_shapes(root / "train", n=8)
    test_images, test_masks = write_shapes(root / "test", n=2, seed=1)
    unseen, _ = write_shapes(root / "unseen", n=2, seed=2)
    dls = SegmentationData.from_folders(images, masks, codes=["bg", "square", "disc"], test=test_images,
                                        test_masks=test_masks, valid_pct=0.25, size=SIZE, bs=4, seed=0)
    return Made(dls, sorted(unseen.iterdir()))


def same_segmentation(learned, predicted) -> None:
    """Both give ``(mask, probs)`` at the image's own size (``probabilities=True``); a pixel on a near tie may
    differ in the mask."""
    (mask, probs), (p_mask, p_probs) = learned, predicted
    assert _close(probs, p_probs), np.abs(np.asarray(probs) - np.asarray(p_probs)).max()
    assert mask.shape == p_mask.shape == probs.shape[1:] and (mask == p_mask).mean() > 0.99


# ------------------------------------------------------------------------------------------------ detection

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def write_voc(root: Path, n: int, width: int = 64, height: int = 56, seed: int = 0) -> tuple[Path, Path]:
    """Images of a red and a blue rectangle on grey with their exact boxes as Pascal VOC XML."""
    rng = np.random.default_rng(seed)
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    for i in range(n):
        img = np.full((height, width, 3), 30, np.uint8)
        body = ""
        for name, colour in COLOURS.items():
            w, h = (int(v) for v in rng.integers(12, 24, 2))
            x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
            img[y:y + h, x:x + w] = colour
            body += (f"<object><name>{name}</name><bndbox><xmin>{x}</xmin><ymin>{y}</ymin><xmax>{x + w}</xmax>"
                     f"<ymax>{y + h}</ymax></bndbox></object>")
        Image.fromarray(img).save(images / f"im{i}.png")
        (annotations / f"im{i}.xml").write_text(f"<annotation><filename>im{i}.png</filename>{body}</annotation>")
    return images, annotations


def make_detection(root: Path) -> Made:
    from easytransfer import DetectionData

    images, annotations = write_voc(root / "train", n=6)
    test = write_voc(root / "test", n=2, seed=1)
    unseen, _ = write_voc(root / "unseen", n=2, seed=2)
    dls = DetectionData.from_voc(images, annotations, test=test, valid_pct=0.34, size=SIZE * 2, bs=2, seed=0)
    return Made(dls, sorted(unseen.iterdir()))


def same_detection(learned, predicted) -> None:
    """Both give ``[(label, score, (x1, y1, x2, y2)), ...]`` best first, in the image's own pixels."""
    assert learned, "no box to compare: the contract keeps every box (score_threshold=0)"
    assert [b[0] for b in learned] == [b[0] for b in predicted]
    assert _close([b[1] for b in learned], [b[1] for b in predicted])
    assert _close(np.reshape([b[2] for b in learned], (-1, 4)), np.reshape([b[2] for b in predicted], (-1, 4)),
                  atol=1e-2)


# ------------------------------------------------------------------------------------------------ instance masks

INSTANCE_COLOURS = {"block": (220, 30, 30), "disc": (30, 30, 220)}


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE of a boolean mask: run lengths over its column-major pixels, starting with 0s."""
    flat = mask.flatten(order="F").astype(np.int8)
    changes = np.flatnonzero(np.diff(np.concatenate([[0], flat, [1 - flat[-1]]])))
    return {"size": list(mask.shape), "counts": np.diff(np.concatenate([[0], changes])).tolist()}


def write_instance_scenes(root: Path, n: int, width: int = 80, height: int = 64, seed: int = 0) -> dict:
    """Images of a red block (left half) and a blue disc (right half) on grey, with their instance masks three ways:
    YOLO-seg labels (the block's exact corners, a 24-point polygon of the disc), and a COCO file whose block is a
    polygon and whose disc is the exact mask as RLE (compressed on even images, uncompressed on odd ones).

    Returns ``{"images", "labels", "coco", "truth"}``: the folders, the JSON file and, per image file name, the
    exact ``(class, mask)`` of each object as drawn.
    """
    from pycocotools import mask as mask_utils

    rng = np.random.default_rng(seed)
    images, labels = root / "images", root / "labels"
    images.mkdir(parents=True)
    labels.mkdir()
    names = list(INSTANCE_COLOURS)
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(names)]}
    truth = {}
    yy, xx = np.mgrid[:height, :width]
    for i in range(n):
        img = np.full((height, width, 3), 90, np.uint8)
        w, h = (int(v) for v in rng.integers(10, 20, 2))
        x, y = int(rng.integers(1, width // 2 - w)), int(rng.integers(1, height - h - 1))
        block = np.zeros((height, width), bool)
        block[y:y + h, x:x + w] = True
        r = int(rng.integers(6, 10))
        cx, cy = int(rng.integers(width // 2 + r + 1, width - r - 1)), int(rng.integers(r + 1, height - r - 1))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 <= r ** 2
        img[block], img[disc] = INSTANCE_COLOURS["block"], INSTANCE_COLOURS["disc"]
        name = f"scene{i}.png"
        Image.fromarray(img).save(images / name)
        truth[name] = [("block", block), ("disc", disc)]
        angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        disc_polygon = np.stack([(cx + 0.5 + (r + 0.5) * np.cos(angles)) / width,
                                 (cy + 0.5 + (r + 0.5) * np.sin(angles)) / height], 1).reshape(-1)
        block_polygon = np.array([x, y, x + w, y, x + w, y + h, x, y + h], float) / np.tile([width, height], 4)
        (labels / f"scene{i}.txt").write_text(
            "\n".join(f"{k} " + " ".join(f"{v:.6f}" for v in poly) for k, poly in enumerate([block_polygon,
                                                                                              disc_polygon])))
        coco["images"].append({"id": i, "file_name": name, "width": width, "height": height})
        ys, xs = np.nonzero(disc)
        if i % 2 == 0:
            disc_rle = mask_utils.encode(np.asfortranarray(disc.astype(np.uint8)))
            disc_rle["counts"] = disc_rle["counts"].decode()
        else:
            disc_rle = _uncompressed_rle(disc)
        for k, (segmentation, bbox) in enumerate([
                ([[x, y, x + w, y, x + w, y + h, x, y + h]], [x, y, w, h]),
                (disc_rle, [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)])]):
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i, "category_id": k + 1,
                                        "bbox": bbox, "segmentation": segmentation, "iscrowd": 0,
                                        "area": float(bbox[2] * bbox[3])})
    (root / "instances.json").write_text(json.dumps(coco))
    return {"images": images, "labels": labels, "coco": root / "instances.json", "truth": truth}


TASK_DATA: dict[str, TaskData] = {
    "classification": TaskData(make_classification, same_classification),
    "segmentation": TaskData(make_segmentation, same_segmentation, {"head": "unet"}, {"probabilities": True}),
    # a small pyramid and few proposals: fast steps on a CPU; every box kept (an untrained detector scores low),
    # so there are boxes to compare
    "detection": TaskData(make_detection, same_detection, {"fpn_channels": 32, "proposals": 16, "score_thresh": 0.0},
                          {"score_threshold": 0.0}),
}

"""Synthetic captioned images for the tiny CLIP test asset: one coloured shape on a plain grey background.

Shared by ``tools/train_tiny_clip.py`` (training captions and held-out evaluation) and
``tests/test_tiny_clip.py`` (the zero-shot check). The caption templates come in two sets that share no word
other than the colour and shape names: ``TRAIN_*`` templates are the only text the model sees in training,
``HELD_OUT_*`` wordings are used only to evaluate zero-shot classification.

Write an evaluation folder (class sub-folders per colour, or per shape) for a zero-shot classifier:

    python tools/tiny_clip_data.py /tmp/tiny_clip_colours --per-class 20 --seed 1234
    python tools/tiny_clip_data.py /tmp/tiny_clip_shapes --by shape
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

IMAGE_SIZE = 32

# RGB centres; each image jitters its colour by up to COLOUR_JITTER per channel.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "green": (40, 170, 50),
    "blue": (35, 70, 220),
    "yellow": (235, 215, 35),
    "purple": (140, 45, 185),
    "orange": (245, 135, 25),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")
COLOUR_JITTER = 20

# Training captions: the shape and colour, only the colour ("a red shape") or only the shape ("a circle").
TRAIN_BOTH_TEMPLATES = (
    "a {colour} {shape}",
    "a photo of a {colour} {shape}",
    "{colour} {shape} on a background",
    "a picture of a {colour} {shape}",
    "the {shape} in {colour}",
    "a {shape} coloured {colour}",
    "{colour} {shape}",
)
TRAIN_COLOUR_TEMPLATES = ("a {colour} shape", "a photo of a {colour} shape", "{colour} shape on a background")
TRAIN_SHAPE_TEMPLATES = ("a {shape}", "a photo of a {shape}", "a {shape} on a background")

# Evaluation only: no word here except the colour and shape names appears in a training caption.
HELD_OUT_COLOUR_WORDINGS = ("{colour}", "an image showing something {colour}", "this icon looks {colour}")
HELD_OUT_SHAPE_WORDINGS = ("{shape}", "an image showing one {shape}", "this icon looks like one {shape}")


@dataclass(frozen=True)
class ShapeImages:
    """A batch of synthetic images with their labels.

    Attributes:
        images: uint8 array (n, IMAGE_SIZE, IMAGE_SIZE, 3).
        colours: index into ``COLOURS`` per image.
        shapes: index into ``SHAPES`` per image.
    """

    images: np.ndarray
    colours: np.ndarray
    shapes: np.ndarray


def _shape_masks(shapes: np.ndarray, cx, cy, radius, angle, size: int, supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage in [0, 1], shape (n, size, size), by supersampling each pixel."""
    n = len(shapes)
    grid = ((np.arange(size * supersample) + 0.5) / supersample).astype(np.float32)
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    cx, cy, radius, angle = (np.asarray(x, dtype=np.float32)[:, None, None] for x in (cx, cy, radius, angle))
    dx, dy = xs[None] - cx, ys[None] - cy
    cos, sin = np.cos(angle), np.sin(angle)
    u = (cos * dx + sin * dy) / radius  # rotated, in units of the radius
    v = (-sin * dx + cos * dy) / radius
    inside = np.zeros((n, *u.shape[1:]), dtype=bool)
    for k, name in enumerate(SHAPES):
        sel = shapes == k
        if not sel.any():
            continue
        a, b = u[sel], v[sel]
        if name == "circle":
            m = a * a + b * b <= 1.0
        elif name == "square":
            m = np.maximum(np.abs(a), np.abs(b)) <= 0.8
        elif name == "triangle":  # apex up, base at b = 0.5
            m = (b <= 0.5) & (b >= -1.0 + 1.732 * np.abs(a))
        else:  # cross: two bars of half-width 0.3
            m = ((np.abs(a) <= 0.3) & (np.abs(b) <= 0.95)) | ((np.abs(b) <= 0.3) & (np.abs(a) <= 0.95))
        inside[sel] = m
    return inside.reshape(n, size, supersample, size, supersample).mean(axis=(2, 4))


def make_shape_images(n: int, *, seed: int, size: int = IMAGE_SIZE) -> ShapeImages:
    """``n`` images of one coloured shape (random colour, shape, size, position, rotation) on a grey background.

    Args:
        n: number of images.
        seed: the images are a pure function of ``(n, seed, size)``.
        size: side in pixels.

    Returns:
        ShapeImages with uint8 images and per-image colour and shape indices.

    Example:
        >>> batch = make_shape_images(8, seed=0)
        >>> batch.images.shape
        (8, 32, 32, 3)
    """
    rng = np.random.default_rng(seed)
    colours = rng.integers(len(COLOURS), size=n)
    shapes = rng.integers(len(SHAPES), size=n)
    radius = rng.uniform(0.2, 0.4, size=n) * size
    cx = rng.uniform(radius, size - radius)
    cy = rng.uniform(radius, size - radius)
    angle = rng.uniform(-0.4, 0.4, size=n)
    coverage = _shape_masks(shapes, cx, cy, radius, angle, size)[..., None]

    background = rng.uniform(40, 215, size=(n, 1, 1, 1)) + rng.normal(0, 1, size=(n, size, size, 1)) * rng.uniform(
        0, 8, size=(n, 1, 1, 1)
    )  # neutral grey, plain or lightly noisy
    centres = np.array(list(COLOURS.values()), dtype=np.float64)[colours]
    fill = centres + rng.uniform(-COLOUR_JITTER, COLOUR_JITTER, size=(n, 3))
    images = background * (1 - coverage) + fill[:, None, None, :] * coverage
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return ShapeImages(images=images, colours=colours, shapes=shapes)


def training_captions(colours: np.ndarray, shapes: np.ndarray, rng: np.random.Generator) -> list[str]:
    """One training caption per image: colour and shape (60%), colour only (20%) or shape only (20%)."""
    colour_names, captions = list(COLOURS), []
    for c, s in zip(colours, shapes):
        kind = rng.uniform()
        pool = TRAIN_BOTH_TEMPLATES if kind < 0.6 else TRAIN_COLOUR_TEMPLATES if kind < 0.8 else TRAIN_SHAPE_TEMPLATES
        template = pool[rng.integers(len(pool))]
        captions.append(template.format(colour=colour_names[c], shape=SHAPES[s]))
    return captions


def zero_shot_accuracy(model, tokenizer, images, labels: np.ndarray, names: list[str], wordings, slot: str) -> float:
    """Accuracy of zero-shot classification: each class is the mean embedding of its prompts.

    Args:
        model: an open_clip CLIP model in eval mode.
        tokenizer: its tokenizer (``open_clip.get_tokenizer``).
        images: preprocessed image tensor (n, 3, h, w).
        labels: true class index per image.
        names: class names, in label order.
        wordings: prompt templates with a ``{colour}`` or ``{shape}`` slot.
        slot: the slot's name, ``"colour"`` or ``"shape"``.

    Returns:
        The fraction of images whose nearest class embedding is their own class.
    """
    import torch

    with torch.no_grad():
        image_features = torch.nn.functional.normalize(model.encode_image(images), dim=-1)
        class_features = []
        for name in names:
            prompts = tokenizer([w.format(**{slot: name}) for w in wordings])
            text_features = torch.nn.functional.normalize(model.encode_text(prompts), dim=-1)
            class_features.append(torch.nn.functional.normalize(text_features.mean(0), dim=-1))
        predicted = (image_features @ torch.stack(class_features).T).argmax(-1).numpy()
    return float((predicted == np.asarray(labels)).mean())


def write_eval_folder(root: str | Path, *, per_class: int = 20, seed: int = 1234, by: str = "colour") -> Path:
    """Write PNGs of fresh synthetic images as class sub-folders (``root/red/…``, or ``root/circle/…``).

    Args:
        root: folder to create.
        per_class: images per class (the generator is drawn until every class has this many).
        seed: generator seed; training used other seeds, so these images are new to the model.
        by: ``"colour"`` or ``"shape"``: which label names the sub-folders.

    Returns:
        ``root`` as a Path.

    Example:
        >>> write_eval_folder("/tmp/tiny_clip_eval", per_class=5)  # doctest: +SKIP
    """
    from PIL import Image

    if by not in ("colour", "shape"):
        raise ValueError(f"by={by!r}: use 'colour' or 'shape'")
    names = list(COLOURS) if by == "colour" else list(SHAPES)
    n = per_class * len(names) * 2
    while True:  # draw more until the rarest class has per_class images
        batch = make_shape_images(n, seed=seed)
        labels = batch.colours if by == "colour" else batch.shapes
        if np.bincount(labels, minlength=len(names)).min() >= per_class:
            break
        n *= 2
    root = Path(root)
    for k, name in enumerate(names):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, idx in enumerate(np.flatnonzero(labels == k)[:per_class]):
            Image.fromarray(batch.images[idx]).save(root / name / f"{name}_{i:03d}.png")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path)
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--by", choices=("colour", "shape"), default="colour")
    args = parser.parse_args()
    root = write_eval_folder(args.root, per_class=args.per_class, seed=args.seed, by=args.by)
    print(f"wrote {root}")


if __name__ == "__main__":
    main()

"""Augmentation presets ``"none"``, ``"flips"``, ``"light"`` and ``"strong"`` as fastai item and batch transforms.

Validation and test images always get the same deterministic preprocessing (shorter side to `size`, centre
crop), whatever the preset; the random transforms run on training batches only.

Which preset:

- ``"flips"`` for inspection images (textiles, surfaces, micrographs, X-rays of parts) where a defect may be
  anywhere and small: flips and 90-degree rotations move every pixel but drop none and change no value, so an
  image labelled defective still shows its defect. Right when the class does not depend on orientation.
- ``"light"`` (default) for natural photos: a random crop of 60-100% of the area and a horizontal flip. The crop
  can cut a small object out of an image whose label says it is there.
- ``"strong"`` for larger natural-photo sets that over-fit: smaller crops, rotation, colour jitter and CutMix.
- ``"none"`` to measure what augmentation brings, or when orientation itself carries the class.
"""

from __future__ import annotations

from fastai.vision.augment import (
    Brightness,
    Contrast,
    DihedralItem,
    FlipItem,
    RandomResizedCrop,
    Resize,
    ResizeMethod,
    Rotate,
    Saturation,
)

from ..choices import AUG_PRESETS as AUG_PRESETS

__all__ = ["AUG_PRESETS", "batch_augmentations", "item_transforms", "uses_cutmix"]

LIGHT_MIN_SCALE = 0.6  # light zoom: a crop keeps at least 60% of the image, so small objects and defects stay in
STRONG_MIN_SCALE = 0.35
STRONG_MAX_ROTATE = 15.0
STRONG_LIGHTING = 0.2


def _check(aug: str) -> None:
    if aug not in AUG_PRESETS:
        raise ValueError(f"aug must be one of {AUG_PRESETS}, got {aug!r}")


def _train_only(tfm):
    tfm.split_idx = 0  # fastai: a transform whose split_idx is 0 runs on the training set only
    return tfm


def _valid_only(tfm):
    tfm.split_idx = 1
    return tfm


def _after_resize(tfm):
    tfm.order = Resize.order + 1  # fastai sorts item transforms by `order`; DihedralItem's own (0) runs first
    return tfm


def item_transforms(aug: str, size: int, resample) -> list:
    """Per-image transforms: resize / random-resized-crop to `size` with the model's `resample` filter, flips.

    - ``"none"``: shorter side to `size` and a square crop (centred for validation, random position for
      training, which only matters for non-square images).
    - ``"flips"``: the resize of ``"none"``, then for training images one of the 8 flips / rotations by
      multiples of 90 degrees, drawn uniformly (fastai's `DihedralItem`, identity included); no crop, zoom
      or change of pixel values, so every pixel of the resized image is kept.
    - ``"light"``: training images get a random crop of 60-100% of the area (aspect 3:4 to 4:3) and a random
      horizontal flip.
    - ``"strong"``: the same from 35% of the area, plus the batch transforms of `batch_augmentations`.

    >>> [type(t).__name__ for t in item_transforms("light", 224, 3)]
    ['Resize', 'RandomResizedCrop', 'FlipItem']
    >>> [type(t).__name__ for t in item_transforms("flips", 224, 3)]
    ['Resize', 'DihedralItem']
    """
    _check(aug)
    resamples = (resample, 0)  # 0 = NEAREST for masks
    resize = Resize(size, method=ResizeMethod.Crop, resamples=resamples)
    if aug == "none":
        return [resize]
    if aug == "flips":
        return [resize, _after_resize(DihedralItem())]
    min_scale = LIGHT_MIN_SCALE if aug == "light" else STRONG_MIN_SCALE
    crop = RandomResizedCrop(size, min_scale=min_scale, resamples=resamples)
    return [_valid_only(resize), _train_only(crop), FlipItem(p=0.5)]


def batch_augmentations(aug: str) -> list:
    """Batch transforms (training only) of a preset: ``"strong"`` adds rotation and colour jitter.

    >>> [type(t).__name__ for t in batch_augmentations("strong")]
    ['Rotate', 'Brightness', 'Contrast', 'Saturation']
    """
    _check(aug)
    if aug != "strong":
        return []
    return [Rotate(max_deg=STRONG_MAX_ROTATE, p=0.75), Brightness(max_lighting=STRONG_LIGHTING, p=0.75),
            Contrast(max_lighting=STRONG_LIGHTING, p=0.75), Saturation(max_lighting=STRONG_LIGHTING, p=0.75)]


def uses_cutmix(aug: str) -> bool:
    """The ``"strong"`` preset also mixes training images with fastai's `CutMix` (added by `transfer_learner`)."""
    return aug == "strong"

"""DataLoaders for semantic segmentation: images with masks of class ids, checked, split, sized and normalised.

`SegmentationData` is to segmentation what `ImageData` is to classification: a fastai `DataLoaders` (built with
fastai's image and mask blocks) that remembers how it was built (`SegmentationRecipe`), so
`segmentation_learner` can rebuild it with the model's resize filter, mean and std. Every image and mask is
checked once when the data is built; what cannot be used is excluded and listed in ``dls.report``.

Masks follow every geometric transform of their image (resize, random crop, flips) and are always resampled
with the nearest filter, so a mask keeps its class ids.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.data.block import DataBlock, TransformBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import ColReader, ColSplitter, IntToFloatTensor, Normalize
from fastai.vision.augment import FlipItem, RandomResizedCrop, RandTransform, Resize, ResizeMethod
from fastai.vision.core import AddMaskCodes, PILMask
from matplotlib.figure import Figure
from PIL import Image

from ...data.augment import AUG_PRESETS, LIGHT_MIN_SCALE, STRONG_MIN_SCALE, batch_augmentations
from ...data.checks import DEFAULT_MAX_PIXELS, check_image_file
from ...data.images import ImageBlockRGB, resample_filter
from ...data.options import DEFAULT_BS
from ...data.report import DataReport, warn_data
from ...data.sources import candidate_files
from ...errors import DataError

__all__ = ["SIZE_MULTIPLE", "MaskReader", "SegmentationData", "SegmentationRecipe", "labelled_mask_items", "read_mask"]

SIZE_MULTIPLE = 32  # U-Net, FPN and DeepLabV3+ halve the image 5 times and add the maps back: 2**5 divides the side
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OVERLAY_ALPHA = 0.45
DEFAULT_SIZE = 224  # until a model is chosen (a multiple of SIZE_MULTIPLE)


def read_mask(source) -> np.ndarray:
    """A mask as a 2-D integer array of class ids, from a file (PNG, BMP, TIFF ...: one channel; an RGB file
    whose three channels are equal is read as one) or an array.

    >>> read_mask(np.array([[0, 1], [2, 0]])).tolist()
    [[0, 1], [2, 0]]
    """
    if isinstance(source, (str, os.PathLike)):
        with Image.open(source) as img:
            arr = np.asarray(img)
    else:
        arr = np.asarray(source)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and (arr[..., :3] == arr[..., :1]).all():
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise DataError(f"A mask must be one channel of class ids (HxW), got shape {arr.shape}; convert colour "
                        "masks to class ids with mask_fn.")
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
        if not np.all(np.mod(arr, 1) == 0):
            raise DataError(f"A mask must hold whole class ids, got values such as {arr.ravel()[:3].tolist()}.")
    return arr.astype(np.int64)


@dataclass(frozen=True)
class MaskReader:
    """The DataBlock's ``get_y``: the mask of an item row, from its ``mask`` file or from ``mask_fn(image path)``.

    A ``mask_fn`` may return a path (then read with `read_mask`) or an array of class ids.
    """

    mask_fn: Callable | None = None

    def __call__(self, row) -> PILMask:
        source = row["mask"] if isinstance(row["mask"], str) and row["mask"] else self.mask_fn(row["path"])
        arr = read_mask(source)
        return PILMask.create(arr.astype(np.uint8))


@dataclass(frozen=True)
class SegmentationRecipe:
    """Everything needed to (re)build segmentation DataLoaders: the item table and the preprocessing.

    Attributes:
        items: one row per image: ``path``, ``mask`` (the mask file, ``""`` when `mask_fn` gives it), ``is_valid``.
        codes: class names, index = class id.
        ignore_index: mask value that is no class (not trained on, not scored), or ``None``.
        mask_fn: ``mask_fn(image path) -> mask path or array``, when masks are not files beside the images.
        size: square side images and masks are resized to (a multiple of `SIZE_MULTIPLE`).
        size_given: whether the user chose `size`.
        interpolation, mean, std: the model's resize filter for images and normalisation.
        bs, num_workers, aug: batch size, worker processes, augmentation preset.
        test_items: held-out test rows (``path``, ``mask``), or ``None``.
        report: what the file check found.
    """

    items: pd.DataFrame
    codes: tuple[str, ...]
    ignore_index: int | None = None
    mask_fn: Callable | None = None
    size: int = 256
    size_given: bool = False
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_STATS[0]
    std: tuple[float, ...] = IMAGENET_STATS[1]
    bs: int = DEFAULT_BS
    num_workers: int = 0
    aug: str = "flips"
    test_items: pd.DataFrame | None = None
    report: DataReport | None = field(default=None, compare=False)


def segmentation_item_transforms(aug: str, size: int, resample) -> list:
    """Item transforms for an image and its mask: resize to `size` x `size` (whole image, squished: every pixel
    is kept and predictions map back onto the original), then the preset's random crops and flips (training).

    Masks are resampled with the nearest filter (fastai's ``resamples=(image filter, 0)``).

    >>> [type(t).__name__ for t in segmentation_item_transforms("light", 64, 2)]
    ['Resize', 'RandomResizedCrop', 'FlipItem']
    """
    if aug not in AUG_PRESETS:
        raise ValueError(f"aug must be one of {AUG_PRESETS}, got {aug!r}")
    resamples = (resample, 0)
    resize = Resize(size, method=ResizeMethod.Squish, resamples=resamples)
    if aug == "none":
        return [resize]
    if aug == "flips":
        return [resize, DihedralPair()]
    min_scale = LIGHT_MIN_SCALE if aug == "light" else STRONG_MIN_SCALE
    resize.split_idx = 1
    crop = RandomResizedCrop(size, min_scale=min_scale, resamples=resamples)
    crop.split_idx = 0
    return [resize, crop, FlipItem(p=0.5)]


class DihedralPair(RandTransform):
    """One of the 8 flips / rotations by multiples of 90 degrees, the same for an image and its mask.

    fastai's `DihedralItem` has no rule for a `PILMask`; PIL's own transposes move pixels exactly (no resampling).
    """

    order = Resize.order + 1

    def before_call(self, b, split_idx):
        super().before_call(b, split_idx)
        self.k = int(np.random.randint(8))

    def encodes(self, x: Image.Image):
        return x if self.k == 0 else x.transpose(Image.Transpose(self.k - 1))


def MaskBlockIds(codes: Sequence[str]) -> TransformBlock:  # noqa: N802 (named like fastai's MaskBlock)
    """fastai's `MaskBlock`, whose items are already `PILMask` objects (made by `MaskReader`)."""
    return TransformBlock(type_tfms=_as_pil_mask, item_tfms=AddMaskCodes(codes=list(codes)),
                          batch_tfms=IntToFloatTensor)


def _as_pil_mask(mask) -> PILMask:
    return mask if isinstance(mask, PILMask) else PILMask.create(mask)


class SegmentationData(DataLoaders):
    """fastai `DataLoaders` of images and class-id masks that checks its files and rebuilds itself for a model.

    >>> dls = SegmentationData.from_folders("images/", "masks/", codes=["background", "crack"])  # doctest: +SKIP
    >>> dls.show_batch(); print(dls.report)  # doctest: +SKIP
    """

    recipe: SegmentationRecipe

    @classmethod
    def from_recipe(cls, recipe: SegmentationRecipe, *, device=None) -> SegmentationData:
        """Build the DataLoaders a `SegmentationRecipe` describes (no file check)."""
        resample = resample_filter(recipe.interpolation)
        datablock = DataBlock(
            blocks=(ImageBlockRGB, MaskBlockIds(recipe.codes)),
            get_x=ColReader("path"),
            get_y=MaskReader(recipe.mask_fn),
            splitter=ColSplitter("is_valid"),
            item_tfms=segmentation_item_transforms(recipe.aug, recipe.size, resample),
            batch_tfms=batch_augmentations(recipe.aug) + [Normalize.from_stats(recipe.mean, recipe.std, cuda=False)],
        )
        dls = datablock.dataloaders(recipe.items.reset_index(drop=True), bs=recipe.bs,
                                    num_workers=recipe.num_workers, device=device)
        obj = cls(*dls.loaders, path=".", device=dls.device)
        obj.recipe = recipe
        return obj

    @classmethod
    def from_folders(
        cls,
        images: str | os.PathLike,
        masks: str | os.PathLike | None = None,
        *,
        codes: Sequence[str] | None = None,
        valid_pct: float = 0.2,
        seed: int = 42,
        test: str | os.PathLike | Sequence | None = None,
        test_masks: str | os.PathLike | None = None,
        ignore_index: int | None = None,
        mask_fn: Callable | None = None,
        bs: int = 8,
        size: int | None = None,
        aug: str = "flips",
        check: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        num_workers: int = 0,
        device=None,
    ) -> SegmentationData:
        """DataLoaders from a folder of images and a folder of masks with the same file names (any extension).

        A mask is one channel of class ids (0, 1, 2 ...; a PNG with values 0 and 1, not 0 and 255). Every
        image and mask is checked once: unreadable images, missing or unreadable masks, masks of another size
        than their image and ids beyond `codes` are excluded with the reason (``print(dls.report)``).

        Args:
            images: folder of images (searched recursively).
            masks: folder of masks named like the images (``a.jpg`` -> ``a.png``); not needed with `mask_fn`.
            codes: class names, index = class id; default ``class_0 ... class_<max id>`` from the masks.
            valid_pct, seed: random share of images held out for validation, and its seed.
            test: a folder or list of held-out images, with masks found like the training ones (`mask_fn`, else
                `test_masks`, else `masks`); `SegmentationLearner.evaluate` scores them.
            ignore_index: a mask value that is no class (e.g. 255 for "unlabelled"): not trained on, not scored.
            mask_fn: ``mask_fn(image path) -> mask path or array`` for other layouts and formats.
            bs: batch size.
            size: square side (a multiple of 32); default the model's input size, rounded up to a multiple of 32.
            aug: ``"flips"`` (default: the 8 flips and 90-degree rotations, nothing cropped), ``"none"``,
                ``"light"`` (random crop of 60-100% of the area and flips), ``"strong"`` (also rotation and
                colour jitter).
            check: check every file first.

        >>> dls = SegmentationData.from_folders("images/", "masks/", codes=["background", "crack"],  # doctest: +SKIP
        ...                                     size=256)
        """
        if masks is None and mask_fn is None:
            raise DataError("Give the masks: a folder of masks named like the images (masks=...) or mask_fn=.")
        if not 0 <= valid_pct < 1:
            raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct}")
        if not isinstance(bs, int) or bs < 1:
            raise ValueError(f"bs (batch size) must be a whole number of at least 1, got {bs!r}")
        if aug not in AUG_PRESETS:
            raise ValueError(f"aug must be one of {AUG_PRESETS}, got {aug!r}")
        if size is not None and (not isinstance(size, int) or size < SIZE_MULTIPLE or size % SIZE_MULTIPLE):
            raise ValueError(f"size must be a multiple of {SIZE_MULTIPLE} pixels (the models halve it 5 times), "
                             f"got {size!r}; e.g. "
                             f"{max(SIZE_MULTIPLE, round((size or 0) / SIZE_MULTIPLE) * SIZE_MULTIPLE)}.")
        images = Path(images).expanduser()
        if not images.is_dir():
            raise DataError(f"Image folder {str(images)!r} does not exist or is not a folder.")
        rows = _paired_rows(candidate_files(images), masks, mask_fn)
        checked = _check_pairs(rows, check=check, max_pixels=max_pixels, mask_fn=mask_fn, ignore_index=ignore_index)
        kept, excluded, counts = checked
        if not len(kept):
            reasons = excluded["reason"].value_counts().head(3)
            why = "; ".join(f"{n} x {reason}" for reason, n in reasons.items()) or "no image files"
            raise DataError(f"No usable image with a mask in {str(images)!r} ({len(rows)} images): {why}. Masks are "
                            "matched by file name without extension.")
        rng = np.random.default_rng(seed)
        is_valid = rng.permutation(len(kept)) < round(valid_pct * len(kept))
        if valid_pct > 0 and not is_valid.any() and len(kept) > 1:
            is_valid[rng.integers(len(kept))] = True
        kept = kept.assign(is_valid=is_valid)
        test_items = None
        if test is not None:
            test_files = list(test) if isinstance(test, (list, tuple)) else candidate_files(Path(test).expanduser())
            test_rows = _paired_rows(test_files, test_masks if test_masks is not None else masks, mask_fn)
            test_kept, test_excluded, test_counts = _check_pairs(test_rows, check=check, max_pixels=max_pixels,
                                                                  mask_fn=mask_fn, ignore_index=ignore_index)
            excluded = pd.concat([excluded, test_excluded.assign(split="test")], ignore_index=True)
            test_items = test_kept[["path", "mask"]].reset_index(drop=True) if len(test_kept) else None
            counts = {**counts, **{k: ("test", v) for k, v in test_counts.items()}}
        codes = _codes(codes, kept, counts, ignore_index)
        report = DataReport(excluded=excluded, counts=_pixel_counts(kept, counts, codes), n_files=len(rows)
                            + (0 if test is None else len(test_rows)),
                            messages=[f"counts are pixels per class (ignore_index {ignore_index} not counted)"])
        if len(report.excluded):
            warn_data(f"{report.summary()} See dls.report for every file and reason.")
        recipe = SegmentationRecipe(
            items=kept[["path", "mask", "is_valid"]].reset_index(drop=True), codes=tuple(codes),
            ignore_index=ignore_index, mask_fn=mask_fn, size=size or DEFAULT_SIZE,
            size_given=size is not None, bs=bs, num_workers=num_workers, aug=aug, test_items=test_items,
            report=report)
        return cls.from_recipe(recipe, device=device)

    def for_model(self, spec) -> SegmentationData:
        """The same data with `spec`'s resize filter, mean and std (and its size, rounded up to a multiple of 32,
        unless the user chose one)."""
        size = self.recipe.size if self.recipe.size_given else -(-spec.size // SIZE_MULTIPLE) * SIZE_MULTIPLE
        recipe = replace(self.recipe, size=size, interpolation=spec.interpolation, mean=tuple(spec.mean),
                         std=tuple(spec.std))
        return type(self).from_recipe(recipe, device=self.device)

    @property
    def codes(self) -> list[str]:
        """Class names, index = class id."""
        return list(self.recipe.codes)

    @property
    def vocab(self) -> list[str]:
        """The class names (`codes`), as a classification `ImageData`'s ``vocab``."""
        return self.codes

    @property
    def ignore_index(self) -> int | None:
        return self.recipe.ignore_index

    @property
    def report(self) -> DataReport | None:
        """What the file check found: excluded files with reasons, pixels per class and split."""
        return self.recipe.report

    def labelled_dl(self, items=None):
        """A validation-style DataLoader over the test images (default) or a table with ``path`` and ``mask``."""
        if items is None:
            if self.recipe.test_items is None:
                raise DataError("This data has no test set: build it with test=... or pass a table with 'path' and "
                                "'mask' columns.")
            items = self.recipe.test_items
        return self.test_dl(items.reset_index(drop=True), with_labels=True)

    def show_batch(self, max_n: int = 6, ncols: int = 3, ds_idx: int = 0, alpha: float = OVERLAY_ALPHA) -> Figure:
        """Images of one batch (training by default) with their masks drawn over them; returns the Figure."""
        dl = self.loaders[ds_idx]
        xb, yb = dl.one_batch()
        images = denormalize(xb[:max_n], self.recipe.mean, self.recipe.std)
        masks = yb[:max_n].cpu().numpy()
        return plot_overlays([[(img, m, "")] for img, m in zip(images, masks)], len(self.codes),
                             ncols=ncols, alpha=alpha, ignore_index=self.ignore_index)


# ------------------------------------------------------------------------------------------------ drawing


def denormalize(xb: torch.Tensor, mean, std) -> np.ndarray:
    """A normalised batch (N, 3, H, W) back to uint8 images (N, H, W, 3) for display."""
    x = xb.detach().float().cpu() * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def mask_colours(n_classes: int) -> np.ndarray:
    """One RGB colour per class (class 0 transparent in overlays), from matplotlib's tab10 / tab20."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n_classes <= 10 else "tab20"]
    return (np.array([cmap(i % cmap.N)[:3] for i in range(n_classes)]) * 255).astype(np.uint8)


def overlay(image: np.ndarray, mask: np.ndarray, n_classes: int, alpha: float = OVERLAY_ALPHA,
            ignore_index: int | None = None) -> np.ndarray:
    """`image` (H, W, 3 uint8) with the non-zero classes of `mask` blended over it in their colours."""
    colours = mask_colours(max(n_classes, 1))
    out = image.astype(np.float32).copy()
    valid = (mask > 0) & (mask < n_classes)
    if ignore_index is not None:
        valid &= mask != ignore_index
    out[valid] = (1 - alpha) * out[valid] + alpha * colours[mask[valid]]
    return out.round().astype(np.uint8)


def plot_overlays(rows, n_classes: int, *, ncols: int = 3, alpha: float = OVERLAY_ALPHA,
                  ignore_index: int | None = None, titles: Sequence[str] | None = None) -> Figure:
    """A grid of overlays: `rows` is a list of panels per item, each ``(image, mask or None, caption)``."""
    panels = [p for row in rows for p in row]
    per_item = max(len(r) for r in rows) if rows else 1
    ncols = per_item if per_item > 1 else ncols
    nrows = max(1, -(-len(panels) // ncols))
    fig = Figure(figsize=(3 * ncols, 3 * nrows))
    for i, (image, mask, caption) in enumerate(panels):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        ax.imshow(image if mask is None else overlay(image, mask, n_classes, alpha, ignore_index))
        ax.set_title(caption, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------------------ building


def labelled_mask_items(images, masks=None, *, mask_fn: Callable | None = None, ignore_index: int | None = None,
                        check: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Images paired with their masks and checked as `SegmentationData.from_folders` does, without a DataLoader.

    Args:
        images: a folder of images (searched recursively) or a list of image files.
        masks: the folder of masks named like the images; or `mask_fn` (``image path -> mask path or array``).
        ignore_index, check, max_pixels: as for `SegmentationData.from_folders`.

    Returns:
        ``(kept, excluded)``: ``path`` and ``mask`` (``""`` when `mask_fn` gives it) of every usable pair, and
        ``path`` and ``reason`` of every image left out.

    >>> kept, excluded = labelled_mask_items("test/images", "test/masks")  # doctest: +SKIP
    """
    if masks is None and mask_fn is None:
        raise DataError("Give the masks: a folder of masks named like the images (masks=...) or mask_fn=.")
    if isinstance(images, (list, tuple)):
        files = list(images)
    else:
        folder = Path(images).expanduser()
        if not folder.is_dir():
            raise DataError(f"Image folder {str(folder)!r} does not exist or is not a folder.")
        files = candidate_files(folder)
    kept, excluded, _ = _check_pairs(_paired_rows(files, masks, mask_fn), check=check, max_pixels=max_pixels,
                                     mask_fn=mask_fn, ignore_index=ignore_index)
    return kept[["path", "mask"]], excluded[["path", "reason"]]


def _paired_rows(files, masks, mask_fn) -> pd.DataFrame:
    """``path`` and ``mask`` per image: the mask file of the same name (without extension) in `masks`, or ``""``
    when `mask_fn` gives the mask (or when none was found: the check then excludes the image)."""
    paths = [str(Path(p).resolve()) for p in files]
    if mask_fn is not None:
        return pd.DataFrame({"path": paths, "mask": [""] * len(paths)})
    folder = Path(masks).expanduser()
    if not folder.is_dir():
        raise DataError(f"Mask folder {str(folder)!r} does not exist or is not a folder.")
    by_stem: dict[str, str] = {}
    for f in sorted(folder.rglob("*")):
        if f.is_file() and not f.name.startswith("."):
            by_stem.setdefault(f.stem, str(f.resolve()))
    return pd.DataFrame({"path": paths, "mask": [by_stem.get(Path(p).stem, "") for p in paths]})


def _check_pair(row, check: bool, max_pixels: int, mask_fn, ignore_index):
    """``(reason or None, {class id: pixels})`` for one image and its mask."""
    if check:
        image_check = check_image_file(row.path, max_pixels)
        if not image_check.ok:
            return image_check.reason, {}
    if not row.mask and mask_fn is None:
        return "no mask with the same name in the mask folder", {}
    try:
        source = row.mask or mask_fn(row.path)
        mask = read_mask(source)
    except Exception as e:  # any reader error (a user's mask_fn too) excludes the one image, with the reason
        return f"mask unreadable: {type(e).__name__}: {e}".splitlines()[0], {}
    with Image.open(row.path) as img:
        width, height = img.size
    if mask.shape != (height, width):
        return f"mask is {mask.shape[1]}x{mask.shape[0]}, the image {width}x{height}", {}
    values = mask[mask != ignore_index] if ignore_index is not None else mask
    if values.size and (values.min() < 0 or values.max() > 254):
        if set(np.unique(values).tolist()) <= {0, 255}:  # a black-and-white picture, not class ids
            return ("mask holds 0 and 255 only (black and white, not class ids): give mask_fn a reader that maps "
                    "255 to class 1, e.g. mask_fn=lambda p: read_mask(MASK_DIR / (Path(p).stem + '.png')) // 255, "
                    "or ignore_index=255 if 255 marks pixels that are no class"), {}
        return f"mask holds ids outside 0-254 ({int(values.min())}..{int(values.max())})", {}
    ids, n = np.unique(values, return_counts=True)
    return None, dict(zip(ids.tolist(), n.tolist()))


def _check_pairs(rows: pd.DataFrame, *, check: bool, max_pixels: int, mask_fn, ignore_index):
    """(kept rows, excluded rows with reasons, {path: pixel counts}) for every image and its mask, in threads."""
    with ThreadPoolExecutor(min(8, 2 * (os.cpu_count() or 1))) as pool:
        results = list(pool.map(lambda r: _check_pair(r, check, max_pixels, mask_fn, ignore_index),
                                rows.itertuples()))
    ok = np.array([reason is None for reason, _ in results], dtype=bool)
    excluded = pd.DataFrame({"path": rows["path"][~ok].tolist(), "label": "", "split": "-",
                             "reason": [reason for reason, _ in results if reason is not None]})
    counts = {p: c for p, (reason, c) in zip(rows["path"], results) if reason is None}
    return rows[ok].reset_index(drop=True), excluded, counts


def _codes(codes, kept: pd.DataFrame, counts: dict, ignore_index) -> list[str]:
    seen = {i for c in counts.values() for i in (c[1] if isinstance(c, tuple) else c)}
    top = max(seen) if seen else 0
    if codes is None:
        return [f"class_{i}" for i in range(max(top + 1, 2))]
    codes = [str(c) for c in codes]
    if top >= len(codes):
        raise DataError(f"The masks hold class id {top} but codes names only {len(codes)} classes ({codes}); add "
                        f"names, or set ignore_index for a value that is no class.")
    return codes


def _pixel_counts(kept: pd.DataFrame, counts: dict, codes) -> pd.DataFrame:
    """Pixels per class (rows) and split (columns)."""
    split_of = dict(zip(kept["path"], np.where(kept["is_valid"], "valid", "train")))
    table: dict[str, np.ndarray] = {s: np.zeros(len(codes), dtype=np.int64) for s in ("train", "valid")}
    for path, c in counts.items():
        split, c = c if isinstance(c, tuple) else (split_of.get(path, "train"), c)
        column = table.setdefault(split, np.zeros(len(codes), dtype=np.int64))
        for i, n in c.items():
            if 0 <= i < len(codes):
                column[i] += n
    return pd.DataFrame(table, index=pd.Index(list(codes), name="class"))

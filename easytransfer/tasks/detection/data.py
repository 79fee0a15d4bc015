"""DataLoaders for object detection: images with boxes from Pascal VOC XML, COCO JSON or YOLO text files.

`DetectionData` is a fastai `DataLoaders` whose batches are what torchvision's detection models take: a
``(B, 3, size, size)`` tensor of images scaled to [0, 1] (the detector normalises them itself with the
backbone's mean and std) and a `DetectionTargets` (one dict per image with ``boxes``, absolute ``x1, y1, x2,
y2`` pixels of the resized image, and ``labels``, 1-based: 0 is the background). Every geometric transform of
an image (the resize to ``size x size``, the horizontal flip) is applied to its boxes. Every file is checked
once, as for `ImageData`: what cannot be used is excluded and listed in ``dls.report``.

Instance masks (for ``head="maskrcnn"``): ``from_coco(..., masks=True)`` reads each annotation's
``segmentation`` (polygons or RLE) and ``from_yolo(..., masks=True)`` YOLO-seg polygons; each target then also
has ``masks``, a ``(n, size, size)`` uint8 tensor (one mask per box, resized and flipped with the image; see
`masks`).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from matplotlib.figure import Figure
from PIL import Image

from ...choices import ANNOTATION_FORMATS as ANNOTATION_FORMATS
from ...choices import DEFAULT_DETECTION_BS as DEFAULT_DETECTION_BS
from ...choices import DEFAULT_DETECTION_SIZE as DEFAULT_DETECTION_SIZE
from ...data.checks import DEFAULT_MAX_PIXELS, check_items
from ...data.images import open_rgb, resample_filter
from ...data.report import DataReport, warn_data
from ...data.sources import candidate_files
from ...errors import DataError
from .masks import boolean_masks, mask_overlay, resized_masks, segmentation_rle, yolo_polygon_rle

__all__ = ["ANNOTATION_FORMATS", "DETECTION_AUG_PRESETS", "DetectionData", "DetectionDataset", "DetectionRecipe",
           "DetectionTargets", "annotation_format", "draw_boxes", "resize_boxes", "hflip_boxes"]

DETECTION_AUG_PRESETS = ("none", "flips", "light")
MIN_BOX_SIDE = 1.0  # pixels of the resized image; torchvision rejects boxes without a positive width and height


@dataclass(frozen=True)
class DetectionRecipe:
    """Everything needed to (re)build detection DataLoaders.

    Attributes:
        items: one row per image: ``path`` (absolute), ``boxes`` (an ``(n, 4)`` float array of ``x1, y1, x2, y2``
            pixels of the original image), ``labels`` (a tuple of `n` class names), ``is_valid`` (bool), and with
            `masks` ``masks`` (a tuple of `n` pycocotools RLEs at the original image's size).
        classes: class names; class ``i`` of `classes` is label ``i + 1`` in the targets (0 is the background).
        size: images (and their boxes) are resized to ``size x size``.
        bs: batch size.
        aug: ``"none"``, ``"flips"`` (horizontal flip) or ``"light"`` (flip, brightness and contrast jitter).
        interpolation: resize filter name.
        num_workers: DataLoader worker processes.
        test_items: held-out test images (same columns, without ``is_valid``), when given.
        report: what the file check found (``dls.report``).
        masks: the items have instance masks: targets carry ``masks`` (``head="maskrcnn"`` needs them).
    """

    items: pd.DataFrame
    classes: tuple[str, ...]
    size: int = DEFAULT_DETECTION_SIZE
    bs: int = DEFAULT_DETECTION_BS
    aug: str = "flips"
    interpolation: str = "bilinear"
    num_workers: int = 0
    test_items: pd.DataFrame | None = None
    report: DataReport | None = field(default=None, compare=False)
    masks: bool = False


class DetectionTargets:
    """The targets of a batch: one dict per image (``boxes``, ``labels``; ``masks`` for data with instance masks), as
    torchvision's detectors take them.

    It is not a list on purpose: fastai reads the batch size as ``len(yb[0])``, which for a plain list of dicts
    would be the number of boxes of the first image.
    """

    def __init__(self, targets: Sequence[dict]):
        self.targets = list(targets)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        return self.targets[i]

    def __iter__(self):
        return iter(self.targets)

    def to(self, device) -> DetectionTargets:
        return DetectionTargets([{k: v.to(device) for k, v in t.items()} for t in self.targets])

    def __repr__(self) -> str:
        return f"DetectionTargets({len(self)} images, {sum(len(t['boxes']) for t in self.targets)} boxes)"


def resize_boxes(boxes: np.ndarray, from_size: tuple[int, int], to_size: tuple[int, int]) -> np.ndarray:
    """Boxes ``x1, y1, x2, y2`` of an image of ``(width, height)`` `from_size`, for the image resized to `to_size`.

    >>> resize_boxes(np.array([[10., 20., 30., 40.]]), (100, 200), (50, 50)).tolist()
    [[5.0, 5.0, 15.0, 10.0]]
    """
    sx, sy = to_size[0] / from_size[0], to_size[1] / from_size[1]
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], dtype=np.float32)


def hflip_boxes(boxes: np.ndarray, width: int) -> np.ndarray:
    """Boxes of an image `width` pixels wide after a horizontal flip.

    >>> hflip_boxes(np.array([[10., 0., 30., 5.]]), 100).tolist()
    [[70.0, 0.0, 90.0, 5.0]]
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
    return boxes


class DetectionDataset(torch.utils.data.Dataset):
    """Images and their boxes, resized to ``size x size`` (boxes scaled with them), flipped when training.

    Item ``i`` is ``(image, target)``: a float ``(3, size, size)`` tensor in [0, 1] and ``{"boxes", "labels"}``
    (with `masks`, also ``"masks"``: ``(n, size, size)`` uint8, resized and flipped with the image).
    Boxes are clipped to the image; boxes left without a positive width or height are dropped (with their masks).
    """

    def __init__(self, items: pd.DataFrame, classes: Sequence[str], size: int, *, train: bool = False,
                 aug: str = "none", interpolation: str = "bilinear", seed: int | None = None, masks: bool = False):
        self.items = items.reset_index(drop=True)
        self.class_index = {c: i + 1 for i, c in enumerate(classes)}
        self.size, self.train, self.aug, self.masks = size, train, aug, masks
        self.resample = resample_filter(interpolation)
        # seed None: draw from torch's global generator, which fastai's set_seed seeds (runs repeat exactly)
        self.rng = None if seed is None else np.random.default_rng(seed)

    def _uniform(self, low: float, high: float, n: int = 1) -> np.ndarray:
        if self.rng is not None:
            return self.rng.uniform(low, high, size=n)
        return (low + (high - low) * torch.rand(n, dtype=torch.float64)).numpy()

    def __len__(self) -> int:
        return len(self.items)

    def load(self, i: int) -> tuple[Image.Image, np.ndarray, list[str]]:
        """The original image (upright RGB), its boxes clipped to it, and their labels."""
        row = self.items.iloc[i]
        img = open_rgb(row["path"])
        boxes = np.asarray(row["boxes"], dtype=np.float32).reshape(-1, 4).copy()
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, img.width)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, img.height)
        return img, boxes, list(row["labels"])

    def __getitem__(self, i: int):
        img, boxes, labels = self.load(i)
        boxes = resize_boxes(boxes, img.size, (self.size, self.size))
        img = img.resize((self.size, self.size), self.resample)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        masks = resized_masks(self.items.iloc[i]["masks"], self.size) if self.masks else None
        if self.train and self.aug in ("flips", "light") and self._uniform(0, 1)[0] < 0.5:
            x = x.flip(-1)
            boxes = hflip_boxes(boxes, self.size)
            masks = masks.flip(-1) if masks is not None else None
        if self.train and self.aug == "light":
            brightness, contrast = self._uniform(0.8, 1.2, 2)
            x = ((x - x.mean()) * contrast + x.mean() * brightness).clamp_(0, 1)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & ((boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
        target = {
            "boxes": torch.from_numpy(boxes[keep]).float().reshape(-1, 4),
            "labels": torch.tensor([self.class_index[lab] for lab, k in zip(labels, keep) if k], dtype=torch.int64),
        }
        if masks is not None:
            target["masks"] = masks[torch.from_numpy(keep)]
        return x, target


def collate_detection(items) -> tuple[torch.Tensor, DetectionTargets]:
    """Stack the images (all ``size x size``) and keep the targets per image."""
    return torch.stack([x for x, _ in items]), DetectionTargets([t for _, t in items])


class DetectionDL(DataLoader):
    """A fastai `DataLoader` of `collate_detection` batches; targets follow the images to the device."""

    def create_batch(self, b):
        return collate_detection(b)

    def after_batch(self, b):
        images, targets = b
        return images, targets.to(images.device)


class DetectionData(DataLoaders):
    """fastai `DataLoaders` for object detection, from VOC, COCO or YOLO annotations, with checked files.

    >>> dls = DetectionData.from_voc("raccoon/images", "raccoon/annotations", size=320)  # doctest: +SKIP
    >>> dls.classes, print(dls.report)  # doctest: +SKIP
    """

    recipe: DetectionRecipe

    @classmethod
    def from_recipe(cls, recipe: DetectionRecipe, *, device=None) -> DetectionData:
        """Build the DataLoaders a `DetectionRecipe` describes (its items are trusted: no file check)."""
        items = recipe.items.reset_index(drop=True)
        common = dict(size=recipe.size, interpolation=recipe.interpolation, masks=recipe.masks)
        train_ds = DetectionDataset(items[~items["is_valid"]], recipe.classes, train=True, aug=recipe.aug, **common)
        valid_ds = DetectionDataset(items[items["is_valid"]], recipe.classes, **common)
        train = DetectionDL(train_ds, bs=recipe.bs, shuffle=True, drop_last=len(train_ds) > recipe.bs,
                            num_workers=recipe.num_workers, device=device)
        valid = DetectionDL(valid_ds, bs=recipe.bs, shuffle=False, num_workers=recipe.num_workers, device=device)
        obj = cls(train, valid, path=".", device=device)
        obj.recipe = recipe
        return obj

    @property
    def classes(self) -> list[str]:
        """Class names; class ``i`` is label ``i + 1`` of the targets and the detector's outputs."""
        return list(self.recipe.classes)

    vocab = classes

    @property
    def report(self) -> DataReport | None:
        """What the file check found: excluded files with reasons, conversions, boxes per class and split."""
        return self.recipe.report

    def with_size(self, size: int) -> DetectionData:
        """The same data resized to ``size x size``."""
        return type(self).from_recipe(replace(self.recipe, size=size), device=self.device)

    def items_dl(self, items: pd.DataFrame | None = None, bs: int | None = None) -> DetectionDL:
        """A validation-style DataLoader (no augmentation) over `items` (default: the test set, else validation)."""
        if items is None:
            items = self.recipe.test_items
            if items is None:
                return self.valid
        ds = DetectionDataset(items, self.recipe.classes, self.recipe.size, interpolation=self.recipe.interpolation,
                              masks=self.recipe.masks)
        return DetectionDL(ds, bs=bs or self.recipe.bs, shuffle=False, device=self.device)

    @property
    def has_masks(self) -> bool:
        """Whether the targets carry instance masks (``masks=True`` when loading; ``head="maskrcnn"`` needs them)."""
        return self.recipe.masks

    def show_batch(self, max_n: int = 6, ncols: int = 3, train: bool = True) -> Figure:
        """Images of a training (or validation) batch with their boxes, class names and masks; returns the Figure."""
        images, targets = self.one_batch() if train else next(iter(self.valid))
        n = min(max_n, len(images))
        nrows = (n + ncols - 1) // ncols
        fig = Figure(figsize=(3 * ncols, 3 * nrows))
        for i in range(n):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            draw_boxes(ax, images[i], true=targets[i], classes=self.classes)
        fig.tight_layout()
        return fig

    # -------------------------------------------------------------------------------------------- sources

    @classmethod
    def from_voc(cls, images: str | os.PathLike, annotations: str | os.PathLike, *, valid_pct: float = 0.2,
                 seed: int = 42, test: tuple | None = None, **kwargs) -> DetectionData:
        """DataLoaders from a folder of images and a folder of Pascal VOC XML files (one per image).

        Each XML's ``filename`` names its image in `images` (else an image with the XML's own name);
        its ``object`` elements give ``name`` and ``bndbox`` (``xmin ymin xmax ymax`` pixels).

        Args:
            images: folder of images.
            annotations: folder of ``.xml`` files.
            valid_pct: share of the images held out for validation (seeded, random).
            seed: seed of the split.
            test: ``(images, annotations)`` of a held-out test set, for `evaluate`.
            kwargs: ``bs``, ``size``, ``aug``, ``classes``, ``check``, ``max_pixels``, ``num_workers``,
                ``device`` (see `DetectionData.build`).

        >>> dls = DetectionData.from_voc("images/", "annotations/", size=320, bs=8)  # doctest: +SKIP
        """
        found = voc_items(images, annotations)
        test_found = voc_items(*test) if test is not None else None
        return cls.build(found, valid_pct=valid_pct, seed=seed, test=test_found, **kwargs)

    @classmethod
    def from_coco(cls, images: str | os.PathLike, json_path: str | os.PathLike, *, masks: bool = False,
                  valid_pct: float = 0.2, seed: int = 42, test: tuple | None = None, **kwargs) -> DetectionData:
        """DataLoaders from a folder of images and a COCO ``instances`` JSON file (``bbox`` is ``x, y, w, h``).

        Crowd annotations (``iscrowd=1``) are left out; images without annotations are kept (background only).
        With ``masks=True`` each annotation's ``segmentation`` (polygons, or RLE as pycocotools reads it) is its
        instance mask (for ``head="maskrcnn"``); an annotation without one is left out with a message. Other
        arguments as in `from_voc`; ``test=(images, json_path)``.

        >>> dls = DetectionData.from_coco("images/", "instances.json")  # doctest: +SKIP
        >>> dls = DetectionData.from_coco("images/", "instances.json", masks=True)  # doctest: +SKIP
        """
        found, classes = coco_items(images, json_path, masks=masks)
        test_found = coco_items(*test, masks=masks)[0] if test is not None else None
        kwargs.setdefault("classes", classes)
        return cls.build(found, valid_pct=valid_pct, seed=seed, test=test_found, **kwargs)

    @classmethod
    def from_yolo(cls, images: str | os.PathLike, labels: str | os.PathLike, names, *, masks: bool = False,
                  valid_pct: float = 0.2, seed: int = 42, test: tuple | None = None, **kwargs) -> DetectionData:
        """DataLoaders from a folder of images and a folder of YOLO text files (``class cx cy w h``, normalised).

        An image without a label file has no boxes (background). `names` are the class names in class-id order
        (a list, or a dict id -> name). YOLO-seg lines (``class x1 y1 x2 y2 ...``, a normalised polygon) give the
        polygon's extent as the box, and with ``masks=True`` the polygon as the instance mask (for
        ``head="maskrcnn"``; a plain box line is then left out with a message). Other arguments as in `from_voc`;
        ``test=(images, labels)``.

        >>> dls = DetectionData.from_yolo("images/", "labels/", ["cat", "dog"])  # doctest: +SKIP
        >>> dls = DetectionData.from_yolo("images/", "labels-seg/", ["cat", "dog"], masks=True)  # doctest: +SKIP
        """
        names = _yolo_names(names)
        found = yolo_items(images, labels, names, masks=masks)
        test_found = yolo_items(*test, names, masks=masks) if test is not None else None
        kwargs.setdefault("classes", [names[k] for k in sorted(names)])
        return cls.build(found, valid_pct=valid_pct, seed=seed, test=test_found, **kwargs)

    @classmethod
    def from_annotations(cls, images: str | os.PathLike, annotations: str | os.PathLike, *, format: str | None = None,
                         names: Sequence[str] | None = None, valid_pct: float = 0.2, seed: int = 42,
                         **kwargs) -> DetectionData:
        """`from_voc`, `from_coco` or `from_yolo`, chosen by `format` or by `annotation_format` from the files.

        Args:
            images: folder of images.
            annotations: a folder of VOC ``.xml`` files, a COCO ``.json`` file, or a folder of YOLO ``.txt`` files.
            format: ``"voc"``, ``"coco"`` or ``"yolo"``; default: what `annotations` holds.
            names: class names in class-id order (YOLO: required); VOC / COCO: the classes and their order.
            valid_pct, seed, kwargs: as for `from_voc`; ``masks=True`` (COCO and YOLO) reads instance masks.

        >>> dls = DetectionData.from_annotations("images/", "labels/", names=["cat", "dog"])  # doctest: +SKIP
        """
        format = format or annotation_format(annotations)
        if format == "voc" and kwargs.pop("masks", False):
            raise DataError("Pascal VOC XML holds boxes only; instance masks come from a COCO .json file (polygons or "
                            "RLE) or YOLO-seg .txt labels (polygons).")
        if format == "yolo":
            if not names:
                raise DataError("YOLO labels hold class ids, not names: give the class names in id order "
                                "(names=[...]; on the command line --names a,b).")
            return cls.from_yolo(images, annotations, list(names), valid_pct=valid_pct, seed=seed, **kwargs)
        if names:
            kwargs["classes"] = list(names)
        if format == "coco":
            return cls.from_coco(images, annotations, valid_pct=valid_pct, seed=seed, **kwargs)
        if format == "voc":
            return cls.from_voc(images, annotations, valid_pct=valid_pct, seed=seed, **kwargs)
        raise ValueError(f"format must be one of {ANNOTATION_FORMATS}, got {format!r}")

    @classmethod
    def build(cls, found: pd.DataFrame, *, valid_pct: float = 0.2, seed: int = 42, test: pd.DataFrame | None = None,
              bs: int = DEFAULT_DETECTION_BS, size: int = DEFAULT_DETECTION_SIZE, aug: str = "flips",
              classes: Sequence[str] | None = None, check: bool = True, max_pixels: int = DEFAULT_MAX_PIXELS,
              num_workers: int = 0, device=None) -> DetectionData:
        """Check the files, split, report and build, from a table of ``path``, ``boxes``, ``labels``.

        Args:
            found: one row per image (what `voc_items`, `coco_items`, `yolo_items` return); a ``masks`` column
                (RLEs, one per box) gives the targets instance masks.
            valid_pct, seed: the random validation split.
            test: the same table for a held-out test set.
            bs: batch size.
            size: images and boxes are resized to ``size x size`` (the detector runs at that size).
            aug: ``"none"``, ``"flips"`` (default) or ``"light"``; see `DetectionRecipe`.
            classes: class names in label order (default: sorted names found in the annotations).
            check, max_pixels: the file check, as in `ImageData.from_folder`.
            num_workers, device: DataLoader worker processes, device of the batches.
        """
        if aug not in DETECTION_AUG_PRESETS:
            raise ValueError(f"aug must be one of {DETECTION_AUG_PRESETS}, got {aug!r}")
        if not 0 <= valid_pct < 1:
            raise ValueError(f"valid_pct must be in [0, 1), got {valid_pct}")
        if not isinstance(size, int) or size < 32:
            raise ValueError(f"size must be a whole number of pixels, at least 32; got {size!r}")
        if not isinstance(bs, int) or bs < 1:
            raise ValueError(f"bs (batch size) must be a whole number of at least 1, got {bs!r}")
        kept, report = _checked(found, check, max_pixels, "train")
        test_kept = None
        if test is not None:
            test_kept, test_report = _checked(test, check, max_pixels, "test")
            report.excluded = pd.concat([report.excluded, test_report.excluded], ignore_index=True)
            report.converted = pd.concat([report.converted, test_report.converted], ignore_index=True)
            report.messages += test_report.messages
            report.n_files += test_report.n_files
        if len(kept) == 0:
            raise DataError(f"None of the {len(found)} annotated images is usable; see dls.report's reasons in the "
                            "warning above, or check that the annotations name the image files.")
        seen = sorted({lab for labs in kept["labels"] for lab in labs})
        if classes is None:
            classes = seen
        unknown = sorted(set(seen) - set(classes))
        if unknown:
            raise DataError(f"Annotations use the classes {unknown}, which are not in classes={list(classes)}.")
        if not classes:
            raise DataError("No boxes found in the annotations: a detector needs boxes of at least one class.")
        rng = np.random.default_rng(seed)
        kept = kept.assign(is_valid=rng.random(len(kept)) < valid_pct)
        if valid_pct > 0 and not kept["is_valid"].any():  # tiny data: hold out at least one image
            kept.loc[kept.index[int(rng.integers(len(kept)))], "is_valid"] = True
        if kept["is_valid"].all():
            raise DataError(f"All {len(kept)} images went to validation; lower valid_pct or add images.")
        report.counts = box_counts(kept, test_kept, classes)
        if len(report.excluded) or report.messages:
            warn_data(f"{report.summary()} See dls.report for every file and reason.")
        recipe = DetectionRecipe(items=kept, classes=tuple(str(c) for c in classes), size=size, bs=bs, aug=aug,
                                 num_workers=num_workers, test_items=test_kept, report=report,
                                 masks="masks" in found.columns)
        return cls.from_recipe(recipe, device=device)


def box_counts(items: pd.DataFrame, test_items: pd.DataFrame | None, classes: Sequence[str]) -> pd.DataFrame:
    """Boxes per class (rows) and split (columns ``train``, ``valid`` and, with a test set, ``test``)."""
    parts = {"train": items[~items["is_valid"]], "valid": items[items["is_valid"]]}
    if test_items is not None:
        parts["test"] = test_items
    table = pd.DataFrame({split: [sum(list(labs).count(c) for labs in part["labels"]) for c in classes]
                          for split, part in parts.items()}, index=pd.Index(list(classes), name="class"))
    table.columns.name = "split"
    return table


def _checked(found: pd.DataFrame, check: bool, max_pixels: int, split: str) -> tuple[pd.DataFrame, DataReport]:
    """The rows whose image passes the file check, and a `DataReport` of the others."""
    messages = list(found.attrs.get("messages", []))
    missing = found["path"].isna()
    table = found.assign(label=[",".join(labs) for labs in found["labels"]])
    excluded_missing = table[missing].assign(path=table.loc[missing, "annotation"], split=split,
                                             reason="image file not found") if "annotation" in table else table.iloc[:0]
    kept, excluded, converted = check_items(table[~missing].reset_index(drop=True), check=check, max_pixels=max_pixels)
    excluded = pd.concat([excluded_missing, excluded.assign(split=split)], ignore_index=True)
    if "reason" not in excluded:
        excluded = excluded.assign(reason=pd.Series(dtype=str))
    report = DataReport(excluded=excluded[["path", "label", "split", "reason"]].reset_index(drop=True),
                        converted=converted, messages=messages, n_files=len(found))
    columns = ["path", "boxes", "labels"] + (["masks"] if "masks" in found.columns else [])
    return kept[columns].reset_index(drop=True), report


# ------------------------------------------------------------------------------------------------ parsers


def _image_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise DataError(f"Image folder {str(folder)!r} does not exist or is not a folder.")
    return {p.name: p for p in candidate_files(folder)}


def _table(rows: list[dict], messages: list[str], masks: bool = False) -> pd.DataFrame:
    columns = ["path", "boxes", "labels", "annotation"] + (["masks"] if masks else [])
    table = pd.DataFrame(rows, columns=columns)
    table.attrs["messages"] = messages
    return table


def _row(path: Path | None, boxes: list, labels: list, annotation: str, where: str, messages: list[str],
         masks: list[dict] | None = None) -> dict:
    """One image's row: its boxes with a positive width and height (the others are left out with a message), their
    labels and, when the data has them, their masks (RLEs)."""
    arr = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    ok = (arr[:, 2] > arr[:, 0]) & (arr[:, 3] > arr[:, 1])
    if not ok.all():
        messages.append(f"{where}: left out {int((~ok).sum())} box(es) without a positive width and height")
    row = {"path": str(path.resolve()) if path else None, "boxes": arr[ok],
           "labels": tuple(lab for lab, k in zip(labels, ok) if k), "annotation": annotation}
    if masks is not None:
        row["masks"] = tuple(m for m, k in zip(masks, ok) if k)
    return row


def voc_items(images: str | os.PathLike, annotations: str | os.PathLike) -> pd.DataFrame:
    """One row per VOC XML file: ``path`` (``None`` when its image is missing), ``boxes``, ``labels``."""
    images, annotations = Path(images).expanduser(), Path(annotations).expanduser()
    if not annotations.is_dir():
        raise DataError(f"Annotation folder {str(annotations)!r} does not exist or is not a folder.")
    files = _image_files(images)
    by_stem = {Path(name).stem: p for name, p in files.items()}
    rows, messages = [], []
    xmls = sorted(annotations.glob("*.xml"))
    if not xmls:
        raise DataError(f"No .xml files in {str(annotations)!r}; from_voc reads Pascal VOC XML annotations.")
    for xml in xmls:
        try:
            root = ET.parse(xml).getroot()
        except ET.ParseError as e:
            messages.append(f"{xml}: not readable XML ({e}); left out")
            continue
        name = (root.findtext("filename") or "").strip()
        path = files.get(name) or by_stem.get(Path(name).stem) or by_stem.get(xml.stem)
        boxes, labels = [], []
        for obj in root.iter("object"):
            box = obj.find("bndbox")
            if box is None:
                continue
            boxes.append([float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(obj.findtext("name").strip())
        rows.append(_row(path, boxes, labels, str(xml), str(xml), messages))
    return _table(rows, messages)


def coco_items(images: str | os.PathLike, json_path: str | os.PathLike, *, masks: bool = False
               ) -> tuple[pd.DataFrame, list[str]]:
    """One row per image of a COCO JSON file, and the category names in category-id order.

    With `masks`, each annotation's ``segmentation`` (polygons or RLE) as a compressed RLE (column ``masks``).
    """
    images, json_path = Path(images).expanduser(), Path(json_path).expanduser()
    try:
        data = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DataError(f"COCO annotation file {str(json_path)!r} does not exist.") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{str(json_path)!r} is not valid JSON: {e}") from None
    files = _image_files(images)
    categories = {c["id"]: c["name"] for c in data.get("categories", [])}
    image_records = {img["id"]: img for img in data.get("images", [])}
    per_image: dict = {img_id: ([], [], []) for img_id in image_records}
    messages = []
    for ann in data.get("annotations", []):
        if ann.get("iscrowd", 0) or ann["image_id"] not in per_image:
            continue
        boxes, labels, rles = per_image[ann["image_id"]]
        if masks:
            img = image_records[ann["image_id"]]
            try:
                rles.append(segmentation_rle(ann.get("segmentation"), *_image_size(img, files)))
            except ValueError as e:
                messages.append(f"{json_path} annotation {ann.get('id')}: no usable segmentation ({e}); left out")
                continue
        x, y, w, h = ann["bbox"]
        boxes.append([x, y, x + w, y + h])
        labels.append(categories[ann["category_id"]])
    rows = []
    for img in data.get("images", []):
        boxes, labels, rles = per_image[img["id"]]
        rows.append(_row(files.get(Path(img["file_name"]).name), boxes, labels,
                         f"{json_path} image {img['file_name']}", f"{json_path} image {img['id']}", messages,
                         rles if masks else None))
    return _table(rows, messages, masks), [categories[k] for k in sorted(categories)]


def _image_size(record: dict, files: dict[str, Path]) -> tuple[int, int]:
    """``(height, width)`` of a COCO image record (from the image file when the record lacks them)."""
    if record.get("height") and record.get("width"):
        return int(record["height"]), int(record["width"])
    path = files.get(Path(record["file_name"]).name)
    if path is None:
        raise ValueError(f"the image {record['file_name']!r} is missing and its record has no height and width")
    with Image.open(path) as img:
        return img.height, img.width


def annotation_format(annotations: str | os.PathLike) -> str:
    """``"coco"`` for a ``.json`` file, ``"voc"`` for a folder of ``.xml`` files, ``"yolo"`` for one of ``.txt``.

    >>> annotation_format("instances_train.json")
    'coco'
    """
    path = Path(annotations).expanduser()
    if path.suffix.lower() == ".json":
        return "coco"
    if not path.is_dir():
        raise DataError(f"Annotations {str(path)!r} are neither a COCO .json file nor a folder of VOC .xml / "
                        "YOLO .txt files.")
    suffixes = {f.suffix.lower() for f in path.rglob("*") if f.is_file()}
    if ".xml" in suffixes:
        return "voc"
    if ".txt" in suffixes:
        return "yolo"
    raise DataError(f"No .xml (VOC) or .txt (YOLO) files in {str(path)!r}; say which format it is "
                    "(format='voc' | 'coco' | 'yolo'; on the command line --format).")


def _yolo_names(names) -> dict[int, str]:
    if isinstance(names, Mapping):
        return {int(k): str(v) for k, v in names.items()}
    if isinstance(names, (str, os.PathLike)):
        raise TypeError("names are the class names in class-id order (a list, or a dict id -> name), not a path.")
    return {i: str(n) for i, n in enumerate(names)}


def yolo_items(images: str | os.PathLike, labels: str | os.PathLike, names: Mapping[int, str], *,
               masks: bool = False) -> pd.DataFrame:
    """One row per image: boxes from ``labels/<image stem>.txt`` in pixels (none without a label file).

    With `masks`, each YOLO-seg polygon rasterised at the image's size as a compressed RLE (column ``masks``).
    """
    images, labels = Path(images).expanduser(), Path(labels).expanduser()
    if not labels.is_dir():
        raise DataError(f"Label folder {str(labels)!r} does not exist or is not a folder.")
    rows, messages = [], []
    for name, path in sorted(_image_files(images).items()):
        txt = labels / (Path(name).stem + ".txt")
        boxes, labs, rles = [], [], []
        if txt.is_file():
            try:
                with Image.open(path) as img:
                    width, height = img.size
            except (OSError, ValueError):  # the file check reports it
                width, height = 1, 1
            for line in txt.read_text().splitlines():
                parts = line.split()
                if len(parts) < 5:
                    continue
                cls_id, values = int(float(parts[0])), [float(v) for v in parts[1:]]
                if cls_id not in names:
                    messages.append(f"{txt}: class id {cls_id} is not in names; box left out")
                    continue
                if len(values) == 4:
                    cx, cy, w, h = values
                    box = [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]
                else:  # a YOLO-seg polygon: the box is its extent
                    xs, ys = values[0::2], values[1::2]
                    box = [min(xs), min(ys), max(xs), max(ys)]
                if masks:
                    try:
                        rles.append(yolo_polygon_rle(values, width, height))
                    except ValueError as e:
                        messages.append(f"{txt}: a line without an instance mask ({e}); left out")
                        continue
                boxes.append([box[0] * width, box[1] * height, box[2] * width, box[3] * height])
                labs.append(names[cls_id])
        rows.append(_row(path, boxes, labs, str(txt), str(txt), messages, rles if masks else None))
    if not rows:
        raise DataError(f"No images found in {str(images)!r}.")
    return _table(rows, messages, masks)


# ------------------------------------------------------------------------------------------------ drawing


def draw_boxes(ax, image: torch.Tensor, *, true: dict | None = None, pred: dict | None = None,
               classes: Sequence[str] = (), score_threshold: float = 0.5, title: str | None = None):
    """Draw a ``(3, H, W)`` [0, 1] image on `ax` with true boxes (green) and predicted ones (red, with scores), and
    their instance masks (semi-transparent, same colours) when the dicts have ``masks``."""
    from matplotlib.patches import Rectangle

    ax.imshow(image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_axis_off()

    def name(label) -> str:
        i = int(label) - 1
        return classes[i] if 0 <= i < len(classes) else str(int(label))

    layers = [(true, "lime", None)]
    if pred is not None:
        keep = pred["scores"] >= score_threshold
        layers.append(({k: v[keep] for k, v in pred.items()}, "red", pred["scores"][keep]))
    for target, colour, scores in layers:
        if target is None:
            continue
        if "masks" in target:
            ax.imshow(mask_overlay(boolean_masks(target["masks"]), colour))
        for j, (box, label) in enumerate(zip(target["boxes"].tolist(), target["labels"].tolist())):
            x1, y1, x2, y2 = box
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor=colour, linewidth=1.5))
            text = name(label) if scores is None else f"{name(label)} {float(scores[j]):.2f}"
            ax.text(x1, y1, text, color="black", fontsize=7, va="bottom",
                    bbox=dict(facecolor=colour, alpha=0.6, pad=1, edgecolor="none"))
    if title:
        ax.set_title(title, fontsize=8)

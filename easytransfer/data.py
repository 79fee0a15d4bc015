"""DataLoaders for image classification, built from folders or tables, sized and normalised for a model.

`ImageData` is a fastai `DataLoaders` that remembers how it was built (a table of files, labels and
splits), so `transfer_learner` can rebuild it with the chosen model's input size, resize filter, mean and std
(`ImageData.for_model`) without the user repeating them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock
from fastai.data.core import DataLoaders
from fastai.data.transforms import ColReader, ColSplitter, Normalize, get_image_files
from fastai.vision.augment import FlipItem, Resize, ResizeMethod
from fastai.vision.data import ImageBlock
from PIL import Image

from .errors import DataError

__all__ = ["IMAGENET_STATS", "DataRecipe", "ImageData", "stratified_split"]

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
DEFAULT_BS = 16  # measured: batches of 4-16 are as fast per image on CPU and keep buffers small
VALID_NAMES = ("valid", "val", "validation")

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


@dataclass(frozen=True)
class DataRecipe:
    """Everything needed to (re)build the DataLoaders: the item table and the preprocessing.

    Attributes:
        items: one row per image: ``path`` (absolute), ``label`` (a class name, or for multi-label data a
            string of labels joined by `label_delim`), ``is_valid`` (bool).
        size: square side images are resized to.
        size_given: whether the user chose `size` (then a model does not override it).
        interpolation: resize filter name (``"bilinear"``, ``"bicubic"`` ...).
        mean, std: per-channel normalisation.
        label_delim: separator of multi-label labels, ``None`` for single-label data.
        bs: batch size.
        num_workers: DataLoader worker processes.
        flip: random horizontal flips of training images.
    """

    items: pd.DataFrame
    size: int = 224
    size_given: bool = False
    interpolation: str = "bilinear"
    mean: tuple[float, ...] = IMAGENET_STATS[0]
    std: tuple[float, ...] = IMAGENET_STATS[1]
    label_delim: str | None = None
    bs: int = DEFAULT_BS
    num_workers: int = 0
    flip: bool = True
    test_items: pd.DataFrame | None = None


def stratified_split(labels: Sequence[str], valid_pct: float, seed: int) -> np.ndarray:
    """A boolean mask choosing about `valid_pct` of each class for validation, reproducibly.

    Every class with at least two images keeps at least one in each split.

    >>> stratified_split(["a"] * 8 + ["b"] * 2, 0.25, seed=0).sum()
    3
    """
    if not 0 < valid_pct < 1:
        raise ValueError(f"valid_pct must be between 0 and 1, got {valid_pct}")
    labels = np.asarray(labels, dtype=object)
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in sorted(set(labels)):
        idx = np.flatnonzero(labels == label)
        n_valid = int(round(len(idx) * valid_pct))
        if len(idx) >= 2:
            n_valid = min(max(n_valid, 1), len(idx) - 1)
        else:
            n_valid = 0
        mask[rng.permutation(idx)[:n_valid]] = True
    return mask


def _class_folder_items(folder: Path) -> pd.DataFrame:
    """One row per image in `folder`'s class sub-folders (label = sub-folder name)."""
    rows = []
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(get_image_files(class_dir)):
            rows.append((str(f.resolve()), class_dir.name))
    return pd.DataFrame(rows, columns=["path", "label"])


def _find_split_folder(path: Path, names: Sequence[str]) -> Path | None:
    for name in names:
        if (path / name).is_dir():
            return path / name
    return None


def _check_items(items: pd.DataFrame, source: str) -> None:
    if len(items) == 0:
        raise DataError(
            f"No images found in {source}. Put one sub-folder per class with images inside "
            "(e.g. images/cat/1.jpg, images/dog/2.jpg), or train/ and valid/ folders laid out that way."
        )
    classes = sorted(set(items["label"]))
    if len(classes) < 2:
        raise DataError(
            f"Only one class ({classes[0]!r}) found in {source}; a classifier needs at least two. "
            "Add a sub-folder for each other class."
        )
    train_labels = set(items.loc[~items["is_valid"], "label"])
    missing = [c for c in classes if c not in train_labels]
    if missing:
        raise DataError(f"Classes {missing} in {source} have no training images; add some or remove them.")


class ImageData(DataLoaders):
    """fastai `DataLoaders` for image classification that can rebuild itself for a model.

    >>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
    >>> dls.vocab, dls.recipe.size  # doctest: +SKIP
    (['cat', 'dog'], 224)
    """

    recipe: DataRecipe

    @classmethod
    def from_recipe(cls, recipe: DataRecipe, *, device=None) -> ImageData:
        """Build the DataLoaders a `DataRecipe` describes."""
        multilabel = recipe.label_delim is not None
        resample = _RESAMPLE.get(recipe.interpolation, Image.Resampling.BILINEAR)
        item_tfms = [Resize(recipe.size, method=ResizeMethod.Crop, resamples=(resample, Image.Resampling.NEAREST))]
        if recipe.flip:
            item_tfms.append(FlipItem(p=0.5))
        block = (
            MultiCategoryBlock(vocab=_multilabel_vocab(recipe.items["label"], recipe.label_delim))
            if multilabel
            else CategoryBlock(vocab=sorted(set(recipe.items["label"])))
        )
        datablock = DataBlock(
            blocks=(ImageBlock, block),
            get_x=ColReader("path"),
            get_y=ColReader("label", label_delim=recipe.label_delim),
            splitter=ColSplitter("is_valid"),
            item_tfms=item_tfms,
            batch_tfms=[Normalize.from_stats(recipe.mean, recipe.std, cuda=False)],
        )
        dls = datablock.dataloaders(
            recipe.items.reset_index(drop=True), bs=recipe.bs, num_workers=recipe.num_workers, device=device
        )
        obj = cls(*dls.loaders, path=".", device=dls.device)
        obj.recipe = recipe
        return obj

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        *,
        valid_pct: float = 0.2,
        seed: int = 42,
        bs: int = DEFAULT_BS,
        size: int | None = None,
        num_workers: int = 0,
        device=None,
    ) -> ImageData:
        """DataLoaders from a folder of class sub-folders, or from ``train/`` + ``valid/`` (or ``val/``).

        Args:
            path: the folder.
            valid_pct: share of each class held out for validation (class sub-folder layout only).
            seed: seed of the split, so that it is the same every run.
            bs: batch size.
            size: image side; by default the chosen model's input size (224 until a model is chosen).
            num_workers: DataLoader worker processes (0 is fastest on a small CPU).

        >>> dls = ImageData.from_folder("path/to/images", valid_pct=0.2, seed=42)  # doctest: +SKIP
        """
        path = Path(path).expanduser()
        if not path.is_dir():
            raise DataError(f"Image folder {str(path)!r} does not exist or is not a folder.")
        train_dir = _find_split_folder(path, ("train",))
        valid_dir = _find_split_folder(path, VALID_NAMES)
        test_items = None
        if train_dir is not None and valid_dir is not None:
            train, valid = _class_folder_items(train_dir), _class_folder_items(valid_dir)
            items = pd.concat([train.assign(is_valid=False), valid.assign(is_valid=True)], ignore_index=True)
            test_dir = _find_split_folder(path, ("test",))
            if test_dir is not None:
                test_items = _class_folder_items(test_dir).assign(is_valid=True)
        else:
            items = _class_folder_items(path)
            items["is_valid"] = stratified_split(items["label"], valid_pct, seed) if len(items) else []
        _check_items(items, repr(str(path)))
        recipe = DataRecipe(
            items=items, size=size or 224, size_given=size is not None, bs=bs, num_workers=num_workers,
            test_items=test_items,
        )
        return cls.from_recipe(recipe, device=device)

    @classmethod
    def from_df(
        cls,
        df: pd.DataFrame,
        folder: str | os.PathLike | None = None,
        *,
        fn_col: str = "path",
        label_col: str = "label",
        valid_col: str | None = None,
        valid_pct: float = 0.2,
        seed: int = 42,
        label_delim: str | None = None,
        bs: int = DEFAULT_BS,
        size: int | None = None,
        num_workers: int = 0,
        device=None,
    ) -> ImageData:
        """DataLoaders from a table with a file column and a label column.

        Args:
            df: the table.
            folder: folder that relative file names are relative to.
            fn_col, label_col: names of the file and label columns.
            valid_col: optional boolean column marking validation rows; otherwise a stratified
                `valid_pct` split with `seed`.
            label_delim: separator for multi-label labels (``"cat dog"`` with ``" "``).

        >>> dls = ImageData.from_df(pd.DataFrame({"path": files, "label": labels}))  # doctest: +SKIP
        """
        for col in [fn_col, label_col] + ([valid_col] if valid_col else []):
            if col not in df.columns:
                raise DataError(f"Column {col!r} is not in the table; its columns are {list(df.columns)}.")
        base = Path(folder) if folder is not None else Path(".")
        items = pd.DataFrame(
            {
                "path": [str((base / str(f)).resolve()) for f in df[fn_col]],
                "label": df[label_col].astype(str).to_numpy(),
            }
        )
        if valid_col:
            items["is_valid"] = df[valid_col].astype(bool).to_numpy()
        elif label_delim is None:
            items["is_valid"] = stratified_split(items["label"], valid_pct, seed)
        else:
            items["is_valid"] = np.random.default_rng(seed).random(len(items)) < valid_pct
        _check_items(items, "the table")
        recipe = DataRecipe(
            items=items, size=size or 224, size_given=size is not None, label_delim=label_delim, bs=bs,
            num_workers=num_workers,
        )
        return cls.from_recipe(recipe, device=device)

    def for_model(self, spec) -> ImageData:
        """The same data, resized, filtered and normalised the way `spec`'s weights were trained.

        A size the user chose explicitly is kept.
        """
        recipe = replace(
            self.recipe,
            size=self.recipe.size if self.recipe.size_given else spec.size,
            interpolation=spec.interpolation,
            mean=tuple(spec.mean),
            std=tuple(spec.std),
        )
        return type(self).from_recipe(recipe, device=self.device)

    @property
    def is_multilabel(self) -> bool:
        return self.recipe.label_delim is not None

    def labelled_dl(self, items: pd.DataFrame | Sequence[str | os.PathLike], labels: Sequence[str] | None = None):
        """A validation-style DataLoader (no augmentation) over labelled images, e.g. a held-out test set.

        Args:
            items: a table with ``path`` and ``label`` columns, or a list of files with `labels`.
        """
        if not isinstance(items, pd.DataFrame):
            if labels is None:
                raise ValueError("labels are required when items is a list of files")
            items = pd.DataFrame({"path": [str(Path(p).resolve()) for p in items], "label": list(labels)})
        unseen = sorted(set(items["label"]) - set(map(str, self.vocab)))
        if unseen and not self.is_multilabel:
            raise DataError(f"Test labels {unseen} never appear in training (classes: {list(self.vocab)}).")
        return self.test_dl(items.reset_index(drop=True), with_labels=True)


def _multilabel_vocab(labels: pd.Series, delim: str) -> list[str]:
    return sorted({lab for row in labels for lab in str(row).split(delim) if lab})

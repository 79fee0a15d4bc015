"""DataLoaders for image classification, built from folders or tables, checked, sized and normalised for a model.

`ImageData` is a fastai `DataLoaders` that remembers how it was built (a table of files, labels and
splits), so `transfer_learner` can rebuild it with the chosen model's input size, resize filter, mean and std
(`ImageData.for_model`) without the user repeating them. Every file is checked once when the data is built;
what cannot be used is excluded and listed in ``dls.report``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.data import WeightedDL
from fastai.data.block import CategoryBlock, DataBlock, MultiCategoryBlock
from fastai.data.core import DataLoaders, TfmdDL
from fastai.data.transforms import ColReader, ColSplitter, Normalize

from ..errors import DataError
from .augment import AUG_PRESETS, batch_augmentations, item_transforms
from .checks import DEFAULT_MAX_PIXELS, check_items
from .images import ImageBlockRGB, resample_filter
from .options import BALANCE_MODES, DEFAULT_AUG, DEFAULT_BS, LoaderOptions
from .report import IMBALANCE_RATIO, DataReport, class_counts, warn_data
from .sources import FoundItems, class_folder_items, folder_items, require_class_folders
from .split import stratified_split
from .tables import table_items

__all__ = ["BALANCE_MODES", "IMAGENET_STATS", "DataRecipe", "ImageData", "MemoizedDL", "labelled_items"]

IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
MEMO_LIMIT = 512 * 2**20  # bytes of decoded validation images kept per DataLoader


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
        aug: augmentation preset, one of `AUG_PRESETS` (see `easytransfer.data.augment`).
        aug_given: whether the user chose `aug` (then the learner's choice of settings keeps it).
        balance: ``None``, ``"weights"`` (class-weighted loss) or ``"sampler"`` (weighted sampling).
        item_tfms, batch_tfms: the user's own fastai transforms, after the preset's.
        test_items: held-out test images (``path``, ``label``), when the source had them.
        report: what the file check found (``dls.report``).
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
    aug: str = DEFAULT_AUG
    aug_given: bool = False
    balance: str | None = None
    item_tfms: tuple = ()
    batch_tfms: tuple = ()
    test_items: pd.DataFrame | None = None
    report: DataReport | None = field(default=None, compare=False)


class MemoizedDL(TfmdDL):
    """A validation DataLoader that decodes and resizes each image once per run, then reuses the result.

    Its item transforms are deterministic (resize and centre crop), so item `i` is the same every epoch; the
    decoded uint8 images are kept up to `MEMO_LIMIT` bytes (beyond that, items are decoded as usual).
    Batch transforms (normalisation) still run on every batch.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._memo, self._memo_bytes = {}, 0

    def do_item(self, s):
        deterministic = getattr(self.dataset, "split_idx", None) == 1  # TTA switches to training transforms
        if not deterministic or s is None:
            return super().do_item(s)
        if s in self._memo:
            return self._memo[s]
        item = super().do_item(s)
        if item is not None:
            nbytes = sum(t.nbytes for t in item if isinstance(t, torch.Tensor))
            if self._memo_bytes + nbytes <= MEMO_LIMIT:
                self._memo[s] = item
                self._memo_bytes += nbytes
        return item


def _sampler_weights(train_labels: pd.Series) -> np.ndarray:
    counts = train_labels.value_counts()
    return (1.0 / train_labels.map(counts)).to_numpy(dtype=float)


class ImageData(DataLoaders):
    """fastai `DataLoaders` for image classification that checks its files and can rebuild itself for a model.

    >>> from easytransfer.datasets import textile_folder
    >>> dls = ImageData.from_folder(textile_folder(limit=4, seed=0), valid_pct=0.2, seed=42, bs=4)
    >>> list(dls.vocab), dls.recipe.size
    (['global', 'local', 'nominal'], 224)
    >>> print(dls.report.summary())
    Using 12 of 12 image files.
    """

    recipe: DataRecipe

    @classmethod
    def from_recipe(cls, recipe: DataRecipe, *, device=None) -> ImageData:
        """Build the DataLoaders a `DataRecipe` describes (no file check: the recipe's items are trusted)."""
        datablock = _datablock(recipe)
        items = recipe.items.reset_index(drop=True)
        kwargs = dict(bs=recipe.bs, num_workers=recipe.num_workers, device=device)
        if recipe.balance == "sampler":
            dss = datablock.datasets(items)
            weights = _sampler_weights(items["label"].iloc[list(dss.splits[0])])
            dls = dss.dataloaders(dl_type=WeightedDL, dl_kwargs=({"wgts": weights}, {}),
                                  after_item=datablock.item_tfms, after_batch=datablock.batch_tfms, **kwargs)
        else:
            dls = datablock.dataloaders(items, **kwargs)
        train, valid = dls.loaders[:2]
        obj = cls(train, valid.new(cls=MemoizedDL), *dls.loaders[2:], path=".", device=dls.device)
        obj.recipe = recipe
        return obj

    @classmethod
    def _build(cls, found: FoundItems, options: LoaderOptions) -> ImageData:
        """Check the files, split what has no split yet, report, and build."""
        kept, report = _checked_items(found, options)
        kept = _assign_splits(kept, options)
        test = kept[kept["split"] == "test"][["path", "label"]].reset_index(drop=True)
        kept = kept[kept["split"] != "test"].reset_index(drop=True)
        kept["is_valid"] = kept["split"] == "valid"
        report.counts = class_counts(kept, options.label_delim, test)
        if len(report.excluded) or len(report.converted) or report.messages:
            warn_data(f"{report.summary()} See dls.report for every file and reason.")
        _require_usable(kept[["path", "label", "is_valid"]], found.source, found.n_candidates)
        _warn_imbalance(report)
        options = _batch_size_for(int((~kept["is_valid"]).sum()), options, report)
        return cls.from_recipe(_recipe(kept, test, report, options), device=options.device)

    @classmethod
    def from_folder(
        cls,
        path: str | os.PathLike,
        *,
        valid_pct: float = 0.2,
        test_pct: float = 0.0,
        seed: int = 42,
        bs: int = DEFAULT_BS,
        size: int | None = None,
        aug: str | None = None,
        balance: str | None = None,
        item_tfms=None,
        batch_tfms=None,
        check: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        num_workers: int = 0,
        device=None,
    ) -> ImageData:
        """DataLoaders from a folder of class sub-folders, or from ``train/`` + ``valid/`` (or ``val/``) [+ ``test/``].

        Every file is checked once (in parallel): files that cannot be decoded, are empty, are not images or
        have more than `max_pixels` pixels are excluded; greyscale, palette, transparent, CMYK, 16-bit and
        EXIF-rotated images are converted to upright RGB when loaded. ``print(dls.report)`` lists it all.

        Args:
            path: the folder.
            valid_pct: share of each class held out for validation (class sub-folder layout only).
            test_pct: share of each class held out as a test set that training never sees (class sub-folder
                layout only; default 0, none): ``learn.evaluate()`` scores it. With ``valid_pct=0.2, test_pct=0.2``
                60% of each class trains.
            seed: seed of the split, so that it is the same every run.
            bs: batch size.
            size: image side; by default the chosen model's input size (224 until a model is chosen).
            aug: ``"none"``, ``"flips"`` (flips and 90-degree rotations, nothing cropped: inspection images),
                ``"light"`` (flip + random resized crop) or ``"strong"`` (also rotation, colour jitter and CutMix);
                see `easytransfer.data.augment`. Default ``None``: ``"light"``, unless the learner's frozen stage
                chooses a larger input for small details, which trains without random crops
                (`ClassifierLearner.fit_frozen`); a preset given here is always kept.
            balance: ``"weights"`` (class-weighted loss) or ``"sampler"`` (oversample rare classes).
            item_tfms, batch_tfms: your own fastai transforms, applied after the preset's.
            check: check every file first (``False`` trusts them: faster on huge, clean folders).
            max_pixels: larger images are excluded (decompression bombs, huge scans).
            num_workers: DataLoader worker processes (0 is fastest on a small CPU).

        The options are checked (`LoaderOptions`) before any file is read.

        >>> from easytransfer.datasets import textile_folder
        >>> dls = ImageData.from_folder(textile_folder(limit=4, seed=0), valid_pct=0.2, seed=42, bs=4)
        >>> len(dls.train_ds), len(dls.valid_ds)
        (9, 3)
        """
        options = LoaderOptions(valid_pct=valid_pct, test_pct=test_pct, seed=seed, bs=bs, size=size, aug=aug,
                                balance=balance, item_tfms=item_tfms, batch_tfms=batch_tfms, check=check,
                                max_pixels=max_pixels, num_workers=num_workers, device=device)
        return cls._build(folder_items(path), options)

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
        test_pct: float = 0.0,
        seed: int = 42,
        label_delim: str | None = None,
        bs: int = DEFAULT_BS,
        size: int | None = None,
        aug: str | None = None,
        balance: str | None = None,
        item_tfms=None,
        batch_tfms=None,
        check: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        num_workers: int = 0,
        device=None,
    ) -> ImageData:
        """DataLoaders from a table with a file column and a label column (multi-label with `label_delim`).

        File names are relative to `folder` (or absolute). A path that does not exist as written, such as an
        absolute path from another machine (Windows or POSIX), is looked up by its file name inside `folder`.
        Rows whose file is missing or whose label is empty are excluded with a warning; if no row is left
        that is an error. Files are checked as in `from_folder`.

        The arguments not listed here are those of `from_folder`.

        Args:
            df: the table.
            folder: folder that relative file names are relative to.
            fn_col, label_col: names of the file and label columns.
            valid_col: optional boolean column marking validation rows; otherwise a stratified
                `valid_pct` split with `seed`.
            test_pct: share of each class held out as a test set (rows without a split of their own; default 0).
            label_delim: separator for multi-label labels (``"cat dog"`` with ``" "``).

        >>> from easytransfer.datasets import textile_items
        >>> table = textile_items(limit=4, seed=0)  # columns path and label
        >>> dls = ImageData.from_df(table, valid_pct=0.25, seed=42, bs=4)
        >>> dls.report.counts["valid"].to_dict()
        {'global': 1, 'local': 1, 'nominal': 1}
        """
        options = LoaderOptions(valid_pct=valid_pct, test_pct=test_pct, seed=seed, bs=bs, size=size, aug=aug,
                                balance=balance, item_tfms=item_tfms, batch_tfms=batch_tfms, check=check,
                                max_pixels=max_pixels, num_workers=num_workers, device=device,
                                label_delim=label_delim)
        found = table_items(df, folder, fn_col=fn_col, label_col=label_col, valid_col=valid_col,
                            label_delim=label_delim)
        return cls._build(found, options)

    @classmethod
    def from_csv(cls, csv: str | os.PathLike, folder: str | os.PathLike | None = None, *, fn_col: str = "path",
                 label_col: str = "label", valid_col: str | None = None, label_delim: str | None = None,
                 **kwargs) -> ImageData:
        """DataLoaders from a CSV file with a file column and a label column; see `from_df`.

        `folder` defaults to the CSV's own folder; `kwargs` are the other options of `from_folder`.

        >>> dls = ImageData.from_csv("labels.csv", "images/", fn_col="file", label_col="tags",
        ...                          label_delim=" ")  # doctest: +SKIP
        """
        options = _options_from_kwargs(kwargs, label_delim=label_delim)
        csv = Path(csv).expanduser()
        try:
            df = pd.read_csv(csv)
        except FileNotFoundError:
            raise DataError(f"CSV file {str(csv)!r} does not exist.") from None
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DataError(f"Could not read {str(csv)!r} as a CSV table: {e}") from None
        found = table_items(df, csv.parent if folder is None else folder, fn_col=fn_col, label_col=label_col,
                            valid_col=valid_col, label_delim=label_delim, source=f"CSV {str(csv)!r}")
        return cls._build(found, options)

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

    def with_settings(self, *, size: int | None = None, aug: str | None = None,
                      items: pd.DataFrame | None = None) -> ImageData:
        """The same data at another input `size` and / or augmentation preset `aug` (or over other `items`).

        What is not given stays as it is; the new DataLoaders are built from the recipe (no file is checked again).

        >>> from easytransfer.datasets import textile_folder
        >>> dls = ImageData.from_folder(textile_folder(limit=4, seed=0), bs=4)
        >>> dls.with_settings(size=448, aug="none").recipe.size, dls.recipe.size
        (448, 224)
        """
        recipe = replace(self.recipe, size=self.recipe.size if size is None else int(size),
                         aug=self.recipe.aug if aug is None else aug,
                         items=self.recipe.items if items is None else items)
        if recipe.aug not in AUG_PRESETS:
            raise DataError(f"aug must be one of {AUG_PRESETS}, got {recipe.aug!r}")
        return type(self).from_recipe(recipe, device=self.device)

    @property
    def is_multilabel(self) -> bool:
        return self.recipe.label_delim is not None

    @property
    def report(self) -> DataReport | None:
        """What the file check found: excluded files with reasons, conversions, counts per class and split."""
        return self.recipe.report

    def class_weights(self) -> torch.Tensor:
        """Loss weights from the training counts: ``n / (n_classes * count)`` per class (vocab order).

        For multi-label data, the positive weight of each label: negatives / positives.
        """
        items = self.recipe.items[~self.recipe.items["is_valid"]]
        if self.is_multilabel:
            split = items["label"].astype(str).str.split(self.recipe.label_delim)
            pos = np.array([sum(lab in row for row in split) for lab in self.vocab], dtype=float)
            return torch.tensor((len(items) - pos) / np.maximum(pos, 1), dtype=torch.float32)
        counts = items["label"].value_counts()
        per_class = np.array([counts.get(c, 0) for c in self.vocab], dtype=float)
        return torch.tensor(len(items) / (len(per_class) * np.maximum(per_class, 1)), dtype=torch.float32)

    def labelled_dl(self, items=None, labels: Sequence[str] | None = None):
        """A validation-style DataLoader (no augmentation) over labelled images, e.g. a held-out test set.

        Args:
            items: ``None`` (the ``test/`` folder the data was built from), a folder of class sub-folders,
                a table with ``path`` and ``label`` columns, or a list of files with `labels`.

        Unreadable files in a folder are excluded with a warning; labels never seen in training are an error.
        """
        if items is None:
            if self.recipe.test_items is None:
                raise DataError("This data has no test set: pass a folder of class sub-folders, a table or a list "
                                "of files with labels.")
            items = self.recipe.test_items
        items = labelled_items(items, labels)
        seen = set(map(str, self.vocab))
        if self.is_multilabel:
            used = {lab for row in items["label"].astype(str) for lab in row.split(self.recipe.label_delim) if lab}
        else:
            used = set(items["label"].astype(str))
        unseen = sorted(used - seen)
        if unseen:
            raise DataError(f"Test labels {unseen} never appear in training (classes: {list(self.vocab)}). "
                            "Remove those images or add training images for them.")
        return self.test_dl(items, with_labels=True)


def labelled_items(items, labels: Sequence[str] | None = None) -> pd.DataFrame:
    """The ``path`` and ``label`` table of labelled images given as a folder, a table or a list of files.

    Args:
        items: a folder of class sub-folders (its files are checked; unreadable ones are excluded with a warning),
            a table with ``path`` and ``label`` columns, or a list of files with `labels`.
        labels: the labels of a list of files.

    >>> labelled_items(["a/cat/1.jpg"], ["cat"])["label"].tolist()
    ['cat']
    """
    if isinstance(items, (str, os.PathLike)):
        folder = Path(items).expanduser()
        if not folder.is_dir():
            raise DataError(f"Test folder {str(folder)!r} does not exist or is not a folder.")
        require_class_folders(folder)
        messages: list[str] = []
        found = class_folder_items(folder, "test", messages)
        items, excluded, _ = check_items(found, check=True, max_pixels=DEFAULT_MAX_PIXELS)
        if len(excluded):
            warn_data(f"Excluded {len(excluded)} of {len(found)} test files: "
                      + "; ".join(f"{p}: {r}" for p, r in zip(excluded["path"][:3], excluded["reason"][:3])))
        if len(items) == 0:
            raise DataError(f"No usable images found in test folder {str(folder)!r}.")
    elif not isinstance(items, pd.DataFrame):
        if labels is None:
            raise ValueError("labels are required when items is a list of files")
        items = pd.DataFrame({"path": [str(Path(p).resolve()) for p in items], "label": list(labels)})
    missing = [c for c in ("path", "label") if c not in items]
    if missing:
        raise DataError(f"The table of labelled images lacks the column(s) {missing}; it needs 'path' and 'label'.")
    return items[["path", "label"]].reset_index(drop=True)


# ------------------------------------------------------------------------------------------------ building


def _options_from_kwargs(kwargs: dict, **given) -> LoaderOptions:
    """`LoaderOptions` from a constructor's ``**kwargs``, naming the unknown ones."""
    unknown = sorted(set(kwargs) - set(LoaderOptions.__dataclass_fields__) - set(given))
    if unknown:
        raise TypeError(f"Unknown option(s) {unknown}; the options are {sorted(LoaderOptions.__dataclass_fields__)}.")
    return LoaderOptions(**kwargs, **given)


def _checked_items(found: FoundItems, options: LoaderOptions) -> tuple[pd.DataFrame, DataReport]:
    """The files that pass the check, and a report of what was excluded or converted (counts come later)."""
    kept, excluded, converted = check_items(found.items, check=options.check, max_pixels=options.max_pixels)
    if len(found.excluded):
        excluded = pd.concat([found.excluded, excluded], ignore_index=True)
    excluded = excluded.assign(split=excluded["split"].fillna("-"))[["path", "label", "split", "reason"]]
    messages = list(found.messages)
    if options.label_delim is None:
        messages += [f"class {label!r} has no usable images left; it is not a class"
                     for label in sorted(set(excluded["label"]) - set(kept["label"]))]
    report = DataReport(excluded=excluded.reset_index(drop=True), converted=converted, messages=messages,
                        n_files=found.n_candidates)
    return kept, report


def _assign_splits(kept: pd.DataFrame, options: LoaderOptions) -> pd.DataFrame:
    """Rows without a split from their source go to test (`test_pct`), valid or train: stratified for single-label
    data, with `split_train_valid_test`'s shares and seeds."""
    unsplit = kept["split"].isna()
    if unsplit.any() and options.test_pct > 0:
        is_test = _held_out(kept.loc[unsplit, "label"], options.test_pct, options.seed, options.label_delim)
        kept.loc[kept.index[unsplit.to_numpy()][is_test], "split"] = "test"
        unsplit = kept["split"].isna()
        valid_share = options.valid_pct / (1 - options.test_pct)
        seed = options.seed + 1
    else:
        valid_share, seed = options.valid_pct, options.seed
    if unsplit.any():
        mask = _held_out(kept.loc[unsplit, "label"], valid_share, seed, options.label_delim)
        kept.loc[unsplit, "split"] = np.where(mask, "valid", "train")
    return kept


def _held_out(labels: pd.Series, share: float, seed: int, label_delim: str | None) -> np.ndarray:
    """A boolean mask of about `share` of the rows: stratified per class, random for multi-label rows."""
    if label_delim is None:
        return stratified_split(labels, share, seed)
    return np.random.default_rng(seed).random(len(labels)) < share


def _require_usable(items: pd.DataFrame, source: str, n_candidates: int) -> None:
    """At least two classes, each with training images; otherwise an error that says what to add."""
    if len(items) == 0:
        if n_candidates:
            raise DataError(f"None of the {n_candidates} files in {source} is a usable image; "
                            "see the reasons in the warning above, or check the folder.")
        raise DataError(
            f"No images found in {source}. Put one sub-folder per class with images inside "
            "(e.g. images/cat/1.jpg, images/dog/2.jpg), or train/ and valid/ folders laid out that way."
        )
    classes = sorted(set(items["label"]))
    if len(classes) < 2:
        raise DataError(
            f"Only one class ({classes[0]!r}) found in {source}; a classifier needs at least two. "
            "Add a sub-folder (or rows) for each other class."
        )
    train_labels = set(items.loc[~items["is_valid"], "label"])
    missing = [c for c in classes if c not in train_labels]
    if missing:
        raise DataError(f"Classes {missing} in {source} have no training images; add some or remove them.")
    if not items["is_valid"].any():
        raise DataError(f"No validation images in {source} ({len(items)} training images): too few images per class "
                        "for the validation share. Add images (at least 2 per class), raise valid_pct, or give a "
                        "valid/ folder (or a valid column) of your own.")


def _batch_size_for(n_train: int, options: LoaderOptions, report: DataReport) -> LoaderOptions:
    """`options` with a batch size no larger than the training set: fastai drops the last incomplete training
    batch, so with fewer images than `bs` an epoch would train on nothing."""
    if n_train >= options.bs:
        return options
    text = (f"Only {n_train} training images, fewer than the batch size {options.bs}: using bs={n_train} so that "
            "every epoch trains (the last incomplete batch is dropped).")
    report.messages.append(text)
    warn_data(text)
    return replace(options, bs=n_train)


def _warn_imbalance(report: DataReport) -> None:
    ratio = report.imbalance
    if ratio is None or ratio >= IMBALANCE_RATIO:
        return
    train = report.counts["train"]
    small, large = train.idxmin(), train.idxmax()
    text = (f"Class {small!r} has {int(train[small])} training images, {ratio:.0%} of the largest class {large!r} "
            f"({int(train[large])}). Consider balance='weights' or balance='sampler', and read the per-class recall.")
    report.messages.append(text)
    warn_data(text)


def _recipe(kept: pd.DataFrame, test: pd.DataFrame, report: DataReport, options: LoaderOptions) -> DataRecipe:
    return DataRecipe(
        items=kept[["path", "label", "is_valid"]], size=options.size or 224, size_given=options.size is not None,
        label_delim=options.label_delim, bs=options.bs, num_workers=options.num_workers,
        aug=options.aug or DEFAULT_AUG, aug_given=options.aug is not None, balance=options.balance,
        item_tfms=options.item_tfms, batch_tfms=options.batch_tfms,
        test_items=test if len(test) else None, report=report,
    )


def _datablock(recipe: DataRecipe) -> DataBlock:
    """The fastai `DataBlock` of a recipe: RGB images, (multi-)category labels, its split and transforms."""
    resample = resample_filter(recipe.interpolation)
    if recipe.label_delim is not None:
        block = MultiCategoryBlock(vocab=_multilabel_vocab(recipe.items["label"], recipe.label_delim))
    else:
        block = CategoryBlock(vocab=sorted(set(recipe.items["label"])))
    return DataBlock(
        blocks=(ImageBlockRGB, block),
        get_x=ColReader("path"),
        get_y=ColReader("label", label_delim=recipe.label_delim),
        splitter=ColSplitter("is_valid"),
        item_tfms=item_transforms(recipe.aug, recipe.size, resample) + list(recipe.item_tfms),
        batch_tfms=batch_augmentations(recipe.aug) + list(recipe.batch_tfms)
        + [Normalize.from_stats(recipe.mean, recipe.std, cuda=False)],
    )


def _multilabel_vocab(labels: pd.Series, delim: str) -> list[str]:
    return sorted({lab for row in labels for lab in str(row).split(delim) if lab})

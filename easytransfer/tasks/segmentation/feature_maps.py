"""Cached feature maps for segmentation's frozen stage: the frozen encoder runs once, the decoder trains on its maps.

With the encoder frozen (its BatchNorm layers in inference mode) its feature maps at every scale are the same in
every epoch, so `compute_map_cache` computes them once, in eval mode under ``torch.inference_mode``: view 0 of every
training image is the plain preprocessed image (the validation transforms), views 1..k-1 are drawn with the training
augmentations, each with its own mask (flips and crops move the mask with the image), and the validation images
once. Each epoch draws one view per image. The learner trains the decoder and segmentation head (`DecoderHead`, the
model's own modules) on the maps in a `HeadLoop`, with its loss, metrics, optimizer, schedule and callbacks.

Each training item is a window of its view's maps (`FROZEN_WINDOW` of the side, at a random place on the grid of the
coarsest map, the same place at every scale and in the mask), drawn anew every epoch; validation reads whole maps.
The decoder then learns at the images' own scale (what `predict` sees) from a random crop, as segmentation models are
usually trained, and a step costs about a quarter of a whole-image step: the decoder, not the encoder, is most of a
segmentation model's work (U-Net on EfficientNet-Lite0 at 256 px: 2.51 of 2.99 GMACs per image), so caching the
encoder alone saves little. The encoder saw the whole image, so the window's maps hold the context around it.

The maps are kept as float16 (float32 when a map does not fit float16's range), in CPU memory up to
`MAP_CACHE_MEMORY_LIMIT` (2 GiB); a larger cache is a memory-mapped file in `feature_cache_dir()` (deleted with the
cache), and when that disk has no room for it `MapCacheTooLarge` says so (the learner then trains on the images). The
plain passes read and resize the images in `PASS_THREADS` threads.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import weakref
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import to_device
from fastcore.basics import chunked
from torch import nn

from ...devices import feature_batch_size
from ...errors import EasyTransferError
from ...files import remove_stale_temporaries
from ...progress import progress_bar
from ...train.features import feature_cache_dir, random_state_kept
from .data import SegmentationData, SegmentationRecipe
from .model import EncoderLayout

__all__ = ["FROZEN_WINDOW", "MAP_CACHE_MEMORY_LIMIT", "MAP_DTYPE", "FeatureMapCache", "MapCacheTooLarge",
           "compute_map_cache", "map_cache_key", "window_cells"]

MAP_CACHE_MEMORY_LIMIT = 2 << 30  # bytes in CPU memory; a larger cache is memory-mapped from a file
# half the bytes of float32; measured on CrackForest at 256 px (EfficientNet-Lite0 U-Net): the logits differ by
# 2e-4 of their largest value, the argmax not at all
MAP_DTYPE = np.float16
DISK_MARGIN = 1 << 30  # bytes a memory-mapped cache leaves free on its disk
PASS_THREADS = min(8, os.cpu_count() or 1)  # image reading and resizing release the GIL: one thread per core
FLOAT16_MAX = float(np.finfo(np.float16).max)
# side of a training window on the cached maps, a fraction of the image's side: a quarter of the decoder's work.
# Measured on CrackForest and a 12-class scene set from coco128_seg (docs/segmentation.md): the recipe's scores
# hold, the frozen stage is several times faster
FROZEN_WINDOW = 0.5
MIN_WINDOW_CELLS = 2  # a window is at least 2 cells of the coarsest map wide; a grid of 2 cells is read whole


class MapCacheTooLarge(EasyTransferError):
    """The feature maps fit neither in memory (`MAP_CACHE_MEMORY_LIMIT`) nor on the cache folder's disk."""


class _Float16Overflow(Exception):
    """A map holds values beyond float16's range: the cache is made again in float32."""


@dataclass
class FeatureMapCache:
    """The frozen encoder's kept maps (`EncoderLayout.kept`) of every training view and validation image, and masks.

    Attributes:
        key: `map_cache_key` of the encoder weights, data and views the maps were computed from.
        layout: the encoder's outputs at the data's size (`DecoderHead` restores the ones not kept).
        train_maps: one array per kept map, (views, images, channels, height, width), float16 or float32.
        train_masks: (views, images, height, width) class ids (uint8), each view's own.
        valid_maps, valid_masks: the same for the validation images (one view).
        paths: the memory-mapped files (empty when in memory), deleted when the cache is.
    """

    key: str
    layout: EncoderLayout
    train_maps: tuple[np.ndarray, ...]
    train_masks: np.ndarray
    valid_maps: tuple[np.ndarray, ...]
    valid_masks: np.ndarray
    paths: tuple[str, ...] = field(default=())

    @property
    def views(self) -> int:
        return self.train_masks.shape[0]

    @property
    def nbytes(self) -> int:
        """Bytes of maps and masks."""
        arrays = (*self.train_maps, self.train_masks, *self.valid_maps, self.valid_masks)
        return sum(int(a.nbytes) for a in arrays)

    def dataloaders(self, like: DataLoaders, device: torch.device, window: float | None = None) -> DataLoaders:
        """DataLoaders of ``(*maps, mask)`` with the batch size, shuffling and drop_last of `like`, on `device`;
        the maps come as float32, the masks as int64 (what the model's batches hold).

        Args:
            like: the learner's DataLoaders.
            device: where the batches go.
            window: each training item is a random window of this fraction of the side (`window_cells`), the same
                place at every scale and in the mask; ``None`` reads whole maps. Validation reads whole maps.

        >>> cache.dataloaders(learn.dls, learn.device).one_batch()[-1].shape  # doctest: +SKIP
        torch.Size([8, 224, 224])
        >>> cache.dataloaders(learn.dls, learn.device, window=0.5).one_batch()[-1].shape  # doctest: +SKIP
        torch.Size([8, 96, 96])
        """
        cells = self.train_maps[-1].shape[-2:]  # the coarsest map's grid
        train_window = window_cells(cells, window) if window is not None else None
        train = DataLoader(_MapDataset(self.train_maps, self.train_masks, train_window), bs=like.train.bs,
                           shuffle=like.train.shuffle, drop_last=like.train.drop_last, after_batch=_training_dtype)
        valid = DataLoader(_MapDataset(self.valid_maps, self.valid_masks), bs=like.valid.bs, shuffle=False,
                           drop_last=False, after_batch=_training_dtype)
        return DataLoaders(train, valid, device=device)


def window_cells(cells: tuple[int, int], fraction: float) -> tuple[int, int] | None:
    """The (height, width) in cells of the coarsest map of a training window `fraction` of the side, rounded down,
    at least `MIN_WINDOW_CELLS`; ``None`` (whole maps) where that is not smaller than the grid.

    >>> window_cells((7, 7), 0.5), window_cells((10, 8), 0.5), window_cells((3, 3), 0.5), window_cells((2, 2), 0.5)
    ((3, 3), (5, 4), (2, 2), None)
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"the window must be a fraction of the side in (0, 1], got {fraction!r}")
    window = tuple(max(MIN_WINDOW_CELLS, int(n * fraction)) for n in cells)
    return window if any(w < n for w, n in zip(window, cells)) else None


class _MapDataset:
    """Items ``(*maps, mask)`` from cached views; each access draws one view at random and, with `window` (cells of
    the coarsest map), a window at a random place on that map's grid, cut at the same place from every map and the
    mask."""

    def __init__(self, maps: tuple[np.ndarray, ...], masks: np.ndarray, window: tuple[int, int] | None = None):
        self.maps, self.masks, self.window = maps, masks, window
        self.views = masks.shape[0]
        self.n_inp = len(maps)  # fastai's Learner splits a batch into inputs (the maps) and the target
        self.cells = maps[-1].shape[-2:]

    def __len__(self) -> int:
        return self.masks.shape[1]

    def __getitem__(self, i):
        v = int(np.random.randint(self.views)) if self.views > 1 else 0
        arrays = (*(m[v, i] for m in self.maps), self.masks[v, i])
        if self.window is not None:
            top, left = (int(np.random.randint(n - w + 1)) for n, w in zip(self.cells, self.window))
            arrays = tuple(_cut(a, (top, left), self.window, self.cells) for a in arrays)
        return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)


def _cut(array: np.ndarray, start: tuple[int, int], window: tuple[int, int], cells: tuple[int, int]) -> np.ndarray:
    """The window at `start` (cells of the coarsest grid) of a map (..., H, W) whose sides are whole multiples of the
    grid's."""
    (h, w), (top, left), (wh, ww) = array.shape[-2:], start, window
    fh, fw = h // cells[0], w // cells[1]
    return array[..., top * fh:(top + wh) * fh, left * fw:(left + ww) * fw]


def _training_dtype(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """A batch's maps as float32 and its masks as int64, converted on the device (fewer bytes to move there)."""
    return tuple(t.float() if t.is_floating_point() else t.long() for t in batch)


def map_cache_key(encoder: nn.Module, recipe: SegmentationRecipe, views: int) -> str:
    """A digest of everything the maps depend on: the encoder's weights and buffers, the preprocessing, the files
    (path, size, modification time) and their split, and the number of views.

    >>> map_cache_key(learn.model.encoder, learn.dls.recipe, 1)[:8]  # doctest: +SKIP
    '3f2a9c1e'
    """
    h = hashlib.sha256()
    for name, t in encoder.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    h.update(repr((recipe.size, recipe.interpolation, tuple(recipe.mean), tuple(recipe.std), recipe.aug,
                   recipe.ignore_index, repr(recipe.mask_fn), views)).encode())
    for row in recipe.items.itertuples(index=False):
        h.update(repr((row.path, row.mask, bool(row.is_valid), _stamp(row.path), _stamp(row.mask))).encode())
    return h.hexdigest()


def _stamp(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except (OSError, TypeError, ValueError):
        return None
    return st.st_size, st.st_mtime_ns


def compute_map_cache(encoder: nn.Module, dls: SegmentationData, views: int, key: str, device: torch.device, *,
                      autocast_dtype: torch.dtype | None = None, cache_dir: str | os.PathLike | None = None,
                      memory_limit: int | None = None) -> FeatureMapCache:
    """The `encoder`'s maps of `views` views of every training image and of the validation images, on `device`.

    Args:
        encoder: the model's (frozen) encoder; run in eval mode, put back as it was.
        dls: the data: its training and validation images, size, transforms and batch size.
        views: views per training image (1: the plain image only).
        key: `map_cache_key`, kept with the maps.
        autocast_dtype: run the encoder under ``torch.autocast`` in this dtype (mixed precision on a GPU).
        cache_dir: where a memory-mapped cache goes (default `feature_cache_dir()`).
        memory_limit: bytes kept in memory (default `MAP_CACHE_MEMORY_LIMIT`); a larger cache is memory-mapped.

    Raises:
        MapCacheTooLarge: beyond `memory_limit`, and the cache folder's disk has no room for it either.

    >>> cache = compute_map_cache(learn.model.encoder, learn.dls, 1, key, learn.device)  # doctest: +SKIP
    """
    if memory_limit is None:
        memory_limit = MAP_CACHE_MEMORY_LIMIT
    try:
        return _compute(encoder, dls, views, key, device, MAP_DTYPE, autocast_dtype, cache_dir, memory_limit)
    except _Float16Overflow:  # rare (a body without normalisation at its outputs): twice the bytes, exact
        return _compute(encoder, dls, views, key, device, np.float32, autocast_dtype, cache_dir, memory_limit)


def _compute(encoder, dls, views, key, device, dtype, autocast_dtype, cache_dir, memory_limit) -> FeatureMapCache:
    recipe = dls.recipe
    n_train, n_valid = int((~recipe.items["is_valid"]).sum()), len(dls.valid_ds)
    was_training = encoder.training
    encoder.eval()
    try:
        with torch.inference_mode():
            layout = EncoderLayout.of(encoder(torch.zeros(1, 3, recipe.size, recipe.size, device=device)))
        store = _Storage(layout, recipe.size, dtype, views * n_train + n_valid, memory_limit, cache_dir)
        cache = FeatureMapCache(key, layout, *store.arrays(views, n_train), *store.arrays(1, n_valid),
                                paths=tuple(store.paths))
        try:
            _fill(cache, _Pass(encoder, layout, device, autocast_dtype), dls, device)
        except BaseException:
            _remove(cache.paths)  # a float16 overflow (made again in float32) or an interrupted pass
            raise
    finally:
        encoder.train(was_training)
    if cache.paths:
        weakref.finalize(cache, _remove, cache.paths)
    return cache


def _fill(cache: FeatureMapCache, run: _Pass, dls: SegmentationData, device: torch.device) -> None:
    """Write the plain view, the augmented views and the validation images' maps into `cache`'s arrays."""
    items = dls.recipe.items
    train_items = items[~items["is_valid"]].reset_index(drop=True)
    bs = feature_batch_size(device)
    n_train, n_valid = cache.train_masks.shape[1], cache.valid_masks.shape[1]
    train_batches, valid_batches = -(-n_train // bs), -(-n_valid // bs)
    with random_state_kept():  # the plain passes draw nothing from the run (as classification's cache)
        plain = dls.labelled_dl(train_items[["path", "mask"]]).new(bs=bs, device=device)
        run.write(_threaded_batches(plain), cache.train_maps, cache.train_masks, 0, n_batches=train_batches,
                  comment=f"feature maps of {n_train} images")
    for v in range(1, cache.views):
        augmented = dls.train.new(shuffle=False, drop_last=False, bs=bs, device=device)
        run.write(iter(augmented), cache.train_maps, cache.train_masks, v, n_batches=train_batches,
                  comment=f"augmented view {v + 1}/{cache.views}")
    with random_state_kept():
        run.write(_threaded_batches(dls.valid.new(bs=bs, device=device)), cache.valid_maps, cache.valid_masks, 0,
                  n_batches=valid_batches, comment=f"feature maps of {n_valid} validation images")


class _Storage:
    """Allocates the cache's arrays: in memory up to `memory_limit` bytes in all, else memory-mapped files."""

    def __init__(self, layout: EncoderLayout, size: int, dtype, images: int, memory_limit: int, cache_dir):
        self.layout, self.size, self.dtype = layout, size, np.dtype(dtype)
        per_image = sum(layout.shapes[i][0] * layout.shapes[i][1] * layout.shapes[i][2] for i in layout.kept)
        nbytes = images * (per_image * self.dtype.itemsize + size * size)
        self.paths: list[str] = []
        self.folder = None
        if nbytes > memory_limit:
            self.folder = Path(cache_dir) if cache_dir is not None else feature_cache_dir()
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder)  # caches of processes killed before they could delete theirs
            free = shutil.disk_usage(self.folder).free
            if nbytes + DISK_MARGIN > free:
                raise MapCacheTooLarge(f"the feature maps of {images} images take {nbytes / 2**30:.1f} GiB: more than "
                                       f"{memory_limit / 2**30:.1f} GiB in memory, and {str(self.folder)!r} has "
                                       f"{free / 2**30:.1f} GiB free (set EASYTRANSFER_CACHE_DIR to a larger disk, "
                                       "or a smaller size)")

    def arrays(self, views: int, n: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
        maps = tuple(self._array((views, n, *self.layout.shapes[i]), self.dtype) for i in self.layout.kept)
        return maps, self._array((views, n, self.size, self.size), np.uint8)

    def _array(self, shape: tuple[int, ...], dtype) -> np.ndarray:
        if self.folder is None:
            return np.empty(shape, dtype=dtype)
        fd, path = tempfile.mkstemp(prefix=f"features.{os.getpid()}.", suffix=".tmp", dir=self.folder)
        os.close(fd)
        self.paths.append(path)
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)


@dataclass
class _Pass:
    """Runs the encoder over batches and writes the kept maps and the masks of one view into the arrays."""

    encoder: nn.Module
    layout: EncoderLayout
    device: torch.device
    autocast_dtype: torch.dtype | None

    def write(self, batches: Iterator, maps: tuple[np.ndarray, ...], masks: np.ndarray, view: int, *,
              n_batches: int, comment: str) -> None:
        dtype = torch.float16 if maps[0].dtype == np.float16 else torch.float32
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else contextlib.nullcontext())
        start = 0
        with torch.inference_mode(), autocast:
            for xb, yb in progress_bar(batches, total=n_batches, comment=comment):
                xb = xb.as_subclass(torch.Tensor).to(self.device).contiguous(memory_format=torch.channels_last)
                end = start + len(xb)
                for array, m in zip(maps, self.layout.keep(self.encoder(xb))):
                    if dtype == torch.float16 and m.abs().amax() > FLOAT16_MAX:
                        raise _Float16Overflow()
                    array[view, start:end] = m.to(dtype).cpu().numpy()
                masks[view, start:end] = yb.as_subclass(torch.Tensor).cpu().numpy()
                start = end
        if start != masks.shape[1]:
            raise RuntimeError(f"the pass gave {start} images, not {masks.shape[1]}")  # a bug, not the data


def _threaded_batches(dl) -> Iterator:
    """`dl`'s batches in order, its items read and resized in `PASS_THREADS` threads.

    For a DataLoader without shuffling or random transforms (the plain passes), so the threads' order of work
    does not matter. At most a few batches of items wait in memory.
    """
    dl.before_iter()  # fastai's DataLoader sets its batch transforms' split there
    ahead = 2 * dl.bs
    with ThreadPoolExecutor(PASS_THREADS) as pool:
        pending: deque = deque()

        def items():
            for i in range(len(dl.dataset)):
                pending.append(pool.submit(dl.do_item, i))
                if len(pending) > ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()

        for chunk in chunked(items(), dl.bs):
            batch = dl.do_batch(chunk)
            yield dl.after_batch(to_device(batch, dl.device) if dl.device is not None else batch)
    dl.after_iter()


def _remove(paths: tuple[str, ...]) -> None:
    for path in paths:
        try:
            os.remove(path)
        except OSError:
            pass

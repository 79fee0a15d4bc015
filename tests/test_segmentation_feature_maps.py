"""Cached feature maps for segmentation's frozen stage: what is stored, that the decoder trains on it exactly as on
the images, and the bounds (memory-mapped beyond the memory limit, the images when the disk has no room)."""

from __future__ import annotations

import gc
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from fastai.torch_core import set_seed
from task_data import write_shapes

import easytransfer.tasks.segmentation.feature_maps as feature_maps
from easytransfer import SegmentationData, segmentation_learner
from easytransfer.tasks.segmentation.feature_maps import (
    FeatureMapCache,
    MapCacheTooLarge,
    compute_map_cache,
    map_cache_key,
)
from easytransfer.tasks.segmentation.model import DecoderHead, EncoderLayout
from easytransfer.train.history import PhaseKind

SIZE = 32
CODES = ["bg", "square", "disc"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small steps on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, Path]:
    return write_shapes(tmp_path_factory.mktemp("shapes"), n=10, size=SIZE)


def _learner(shapes, aug: str = "flips", **kwargs):
    images, masks = shapes
    dls = SegmentationData.from_folders(images, masks, codes=CODES, size=SIZE, bs=4, seed=0, valid_pct=0.2, aug=aug)
    set_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return segmentation_learner(dls, "test_efficientnet", "unet", pretrained=False, **kwargs)


class EncoderCounter:
    """Counts the images pushed through the encoder."""

    def __init__(self, learn):
        self.images = 0
        learn.model.encoder.register_forward_hook(self)

    def __call__(self, module, args, output):
        self.images += len(args[0])


def _states(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_the_cache_holds_the_encoder_maps_and_the_masks_of_the_validation_images(shapes):
    learn = _learner(shapes)
    model, dls = learn.model, learn.dls
    cache = compute_map_cache(model.encoder, dls, 1, "key", learn.device)
    assert isinstance(cache, FeatureMapCache) and cache.paths == () and cache.views == 1
    assert all(m.dtype == np.float16 for m in (*cache.train_maps, *cache.valid_maps))
    assert cache.train_masks.shape == (1, len(dls.train_ds), SIZE, SIZE) and cache.train_masks.dtype == np.uint8
    model.eval()
    xb, yb = dls.valid.new(bs=len(dls.valid_ds), shuffle=False).one_batch()
    with torch.no_grad():
        maps = cache.layout.keep(model.encoder(xb.as_subclass(torch.Tensor)))
        for stored, computed in zip(cache.valid_maps, maps):
            torch.testing.assert_close(torch.from_numpy(stored[0]).float(), computed, rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(cache.valid_masks[0], yb.numpy())
        # the decoder on the stored (float16) maps gives the model's logits on the images, to float16's rounding
        cached = DecoderHead(model, cache.layout)(*(torch.from_numpy(m[0]).float() for m in cache.valid_maps))
        full = model(xb.as_subclass(torch.Tensor))
    assert (cached - full).abs().max() < 1e-2 * full.abs().max()
    assert torch.equal(cached.argmax(1), full.argmax(1)) or (cached.argmax(1) == full.argmax(1)).float().mean() > .99


def test_fit_frozen_trains_the_decoder_on_one_pass_of_the_encoder(shapes):
    learn = _learner(shapes)
    counter = EncoderCounter(learn)
    encoder_before, decoder_before = _states(learn.model.encoder), _states(learn.model.decoder)
    learn.lr_find(num_it=5)  # the one pass: the sweep and the fits below reuse it
    n_images = len(learn.dls.train_ds) + len(learn.dls.valid_ds)
    assert counter.images == n_images + 1  # + the one zero image that gives the maps' shapes
    learn.fit_frozen(2, lr=1e-2)
    learn.fit_frozen(1, lr=1e-3)
    assert counter.images == n_images + 1
    assert all(torch.equal(v, learn.model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    after = learn.model.decoder.state_dict()
    assert any(not torch.equal(v, after[k]) for k, v in decoder_before.items())  # it trained
    records = learn.fit_history.records
    assert [r.phase.kind for r in records] == [PhaseKind.FROZEN] * 3 and all(r.on_features for r in records)
    assert learn.history["miou"].notna().all() and list(learn.history["phase"]) == ["frozen"] * 3
    learn.unfreeze()
    assert learn.feature_cache is None  # the encoder will train: its maps would go stale


def test_cache_false_trains_on_the_images(shapes):
    learn = _learner(shapes)
    counter = EncoderCounter(learn)
    encoder_before = _states(learn.model.encoder)
    learn.fit_frozen(2, lr=1e-2, cache=False)
    assert learn.feature_cache is None
    assert counter.images >= 2 * (len(learn.dls.train_ds) // 4 * 4 + len(learn.dls.valid_ds))  # every epoch
    assert all(torch.equal(v, learn.model.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert [r.on_features for r in learn.fit_history.records] == [False, False]
    assert list(learn.history["phase"]) == ["frozen", "frozen"]


def test_the_cached_fit_is_the_uncached_fit(shapes, monkeypatch):
    monkeypatch.setattr(feature_maps, "MAP_DTYPE", np.float32)  # exact maps: only the float sums' order differs
    a, b = _learner(shapes, aug="none"), _learner(shapes, aug="none")
    b.model.load_state_dict(a.model.state_dict())
    for learn in (a, b):
        learn.dls.train.shuffle = False  # the same batches on both paths
    a.fit_frozen(1, lr=1e-2, cache=False, restore_best=False)
    b.fit_frozen(1, lr=1e-2, restore_best=False)
    assert b.feature_cache is not None and a.feature_cache is None
    for (name, pa), pb in zip(a.model.named_parameters(), b.model.parameters()):
        torch.testing.assert_close(pa, pb, rtol=1e-4, atol=1e-5, msg=name)
    np.testing.assert_allclose(a.history["valid_loss"], b.history["valid_loss"], rtol=1e-4)
    np.testing.assert_allclose(a.history["miou"], b.history["miou"], rtol=1e-4)


def test_augmented_views_keep_their_own_masks(shapes):
    learn = _learner(shapes)
    cache = compute_map_cache(learn.model.encoder, learn.dls, 3, "key", learn.device)
    assert cache.views == 3 and cache.train_masks.shape[0] == 3
    plain = cache.train_masks[0]
    assert any(not np.array_equal(plain, cache.train_masks[v]) for v in (1, 2))  # flips and turns moved them
    for v in (1, 2):  # a flip or turn keeps each mask's pixel counts
        assert sorted(np.bincount(plain.ravel(), minlength=3)) == sorted(np.bincount(cache.train_masks[v].ravel(),
                                                                                     minlength=3))
    key = map_cache_key(learn.model.encoder, learn.dls.recipe, 3)
    assert key != map_cache_key(learn.model.encoder, learn.dls.recipe, 1)


def _cell_ids(side: int, cells: int) -> np.ndarray:
    """(side, side) ids of the coarsest grid's cells: row * cells + column."""
    rows = np.arange(side) * cells // side
    return rows[:, None] * cells + rows[None, :]


def test_training_windows_cut_every_map_and_the_mask_at_one_place():
    size, cells = 128, 4  # maps at strides 2 ... 32; the coarsest is 4 x 4 cells
    strides = (2, 4, 8, 16, 32)
    layout = EncoderLayout(((3, size, size), *((1, size // s, size // s) for s in strides)))
    maps = tuple(np.broadcast_to(_cell_ids(size // s, cells), (1, 6, 1, size // s, size // s)).astype(np.float16)
                 for s in strides)
    masks = np.broadcast_to(_cell_ids(size, cells), (1, 6, size, size)).astype(np.uint8)
    cache = FeatureMapCache("key", layout, maps, masks, maps, masks)
    like = SimpleNamespace(train=SimpleNamespace(bs=2, shuffle=True, drop_last=False), valid=SimpleNamespace(bs=2))
    dls = cache.dataloaders(like, torch.device("cpu"), window=0.5)
    places = set()
    for _ in range(10):
        *xb, yb = dls.train.one_batch()
        assert yb.shape == (2, 64, 64) and [m.shape[-1] for m in xb] == [32, 16, 8, 4, 2]
        for i in range(2):
            ids = yb[i].unique()
            assert len(ids) == 4 and int(ids[-1] - ids[0]) == cells + 1  # a 2 x 2 block of cells, whole
            assert all(torch.equal(m[i, 0].unique().long(), ids) for m in xb)  # the same place in every map
            places.add(int(ids[0]))
    assert len(places) > 2  # drawn anew
    *xb, yb = dls.valid.one_batch()
    assert yb.shape == (2, size, size)  # validation reads whole maps
    assert feature_maps.window_cells((4, 4), 1.0) is None and feature_maps.window_cells((9, 9), 0.5) == (4, 4)
    with pytest.raises(ValueError, match="fraction"):
        feature_maps.window_cells((4, 4), 0)


class DecoderInputSides:
    """The sides of the maps the decoder reads, in training and in evaluation mode."""

    def __init__(self, learn):
        self.train, self.eval = set(), set()
        learn.model.decoder.register_forward_hook(self)

    def __call__(self, module, args, output):
        (self.train if module.training else self.eval).add(int(output.shape[-1]))


def test_the_frozen_stage_trains_on_windows_and_validates_on_whole_images(tmp_path):
    images, masks = write_shapes(tmp_path, n=8, size=128)
    dls = SegmentationData.from_folders(images, masks, codes=CODES, size=128, bs=4, seed=0, valid_pct=0.25)
    set_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = segmentation_learner(dls, "test_efficientnet", "unet", pretrained=False)
    sides = DecoderInputSides(learn)
    learn.fit_frozen(1, lr=1e-2)
    assert learn.fit_history.records[-1].on_features
    assert sides.train == {64} and sides.eval == {128}  # half the side in training, whole images in validation
    sides.train.clear()
    learn.fit_frozen(1, lr=1e-2, cache_window=None)
    assert sides.train == {128}


def test_beyond_the_memory_limit_the_maps_are_memory_mapped(shapes, tmp_path):
    learn = _learner(shapes)
    in_memory = compute_map_cache(learn.model.encoder, learn.dls, 1, "key", learn.device)
    mapped = compute_map_cache(learn.model.encoder, learn.dls, 1, "key", learn.device, memory_limit=0,
                               cache_dir=tmp_path)
    assert mapped.paths and all(Path(p).parent == tmp_path for p in mapped.paths)
    assert all(isinstance(m, np.memmap) for m in mapped.train_maps)
    for a, b in zip((*in_memory.train_maps, in_memory.valid_masks), (*mapped.train_maps, mapped.valid_masks)):
        np.testing.assert_array_equal(a, b)
    paths = mapped.paths
    del mapped
    gc.collect()
    assert not any(Path(p).exists() for p in paths)


def test_with_no_room_on_disk_the_frozen_stage_trains_on_the_images(shapes, monkeypatch, caplog):
    learn = _learner(shapes)
    monkeypatch.setattr(feature_maps, "MAP_CACHE_MEMORY_LIMIT", 0)
    monkeypatch.setattr(feature_maps.shutil, "disk_usage", lambda _: type("Usage", (), {"free": 0})())
    with pytest.raises(MapCacheTooLarge, match="GiB free"):
        compute_map_cache(learn.model.encoder, learn.dls, 1, "key", learn.device, memory_limit=0)
    logging.getLogger("easytransfer").addHandler(caplog.handler)
    try:
        learn.fit_frozen(1, lr=1e-2)
    finally:
        logging.getLogger("easytransfer").removeHandler(caplog.handler)
    assert learn.feature_cache is None and not learn.fit_history.records[-1].on_features
    assert "not on cached feature maps" in caplog.text and "GiB free" in caplog.text


def test_maps_beyond_float16_are_kept_as_float32(shapes):
    learn = _learner(shapes)

    class Loud(torch.nn.Module):  # an encoder whose deepest map is beyond float16's range
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, x):
            maps = self.encoder(x)
            return [*maps[:-1], maps[-1] * 1e6 + 1e5]

    cache = compute_map_cache(Loud(learn.model.encoder), learn.dls, 1, "key", learn.device)
    assert all(m.dtype == np.float32 for m in cache.train_maps) and np.isfinite(cache.train_maps[-1]).all()


def test_train_bn_trains_on_the_images(shapes, caplog):
    learn = _learner(shapes, train_bn=True)
    logging.getLogger("easytransfer").addHandler(caplog.handler)
    try:
        learn.fit_frozen(1, lr=1e-2)
    finally:
        logging.getLogger("easytransfer").removeHandler(caplog.handler)
    assert learn.feature_cache is None and "train_bn=True" in caplog.text

"""Cached body features: with the body frozen, compute the pooled features once and train the head on them.

The features are the input of the model's head module (captured with a forward pre-hook, so any timm or
torchvision model works), computed in eval mode under ``torch.inference_mode`` with channels-last memory. View 0
of every training image is the plain preprocessed image (the validation transforms); views 1..k-1 are drawn with
the training augmentations. Each epoch draws one view per image.

The features are computed on the learner's device (model and batches there), kept in CPU memory (or, above
`CACHE_MEMORY_LIMIT`, a memory-mapped file in `feature_cache_dir()`: ``~/.cache/easytransfer/features`` unless
``EASYTRANSFER_CACHE_DIR`` or ``XDG_CACHE_HOME`` say otherwise; deleted when the cache is, and files left there
by killed processes are removed when the next one is made), and the feature DataLoaders yield batches on
the learner's device again. The head trains on them in a `HeadLoop` (an inner fastai Learner); see
`easytransfer.train.head_loop`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from fastai.data.core import DataLoaders
from fastai.data.load import DataLoader
from fastai.torch_core import get_random_states, set_random_states
from torch import nn

from ..devices import CPU_FEATURE_BS, feature_batch_size
from ..errors import EasyTransferError
from ..files import remove_stale_temporaries
from ..models.factory import head_dropout
from ..models.pooling import global_pool_type, pooled_several_ways
from ..progress import progress_bar
from ..runtime import CpuForward, cpu_forward
from .distributed import RankSplit

__all__ = ["CACHE_MEMORY_LIMIT", "DEFAULT_CACHE_VIEWS", "FEATURE_BS", "FeatureCache", "FeatureCacheUnsupported",
           "HeadInput", "cache_key", "compute_feature_cache", "compute_pooled_caches", "feature_cache_dir",
           "feature_head", "random_state_kept"]

DEFAULT_CACHE_VIEWS = 1  # measured on flowers5 (docs/performance.md): more views cost a pass each, no gain
FEATURE_BS = CPU_FEATURE_BS  # the CPU value; `feature_batch_size(device)` gives each device's
CACHE_MEMORY_LIMIT = 1 << 30  # bytes: larger caches live in a memory-mapped file


class FeatureCacheUnsupported(EasyTransferError):
    """This model's head does not take one feature vector per image, so its input cannot be cached."""


def feature_head(learn) -> tuple[nn.Module, nn.Module] | None:
    """``(module, trainable_head)``: the module whose input is the feature vector, and what to train on it.

    ``None`` when the head group is not exactly one module (e.g. a distilled ViT's two heads).
    For timm models built with ``dropout=`` the functional dropout before the classifier is made a module.
    """
    path = learn.spec.classifier
    if not path or "," in path:
        return None
    try:
        module = learn.model.get_submodule(path)
    except AttributeError:
        return None
    head_params = {id(p) for p in learn.layer_groups.params(learn.model)[-1]}
    if head_params != {id(p) for p in module.parameters()}:
        return None
    module = _pooled_input_layer(module)
    if any(isinstance(m, nn.Conv2d) for m in module.modules()):
        return None  # a convolutional classifier (SqueezeNet) takes a feature map, not a pooled vector
    if type(module).forward is nn.Module.forward:
        return None  # a container the model indexes into (CrossViT's ModuleList of heads) is never called itself
    drop_rate = head_dropout(learn.model, learn.spec)
    trainable = nn.Sequential(nn.Dropout(drop_rate), module) if drop_rate > 0 else module
    return module, trainable


def _pooled_input_layer(head: nn.Module) -> nn.Module:
    """The layer whose input is the pooled feature vector: `head` itself, or, when `head` is timm's
    ``ClassifierHead`` (pooling, dropout, fc) whose only parameters are its last Linear, that Linear."""
    linears = [m for m in head.modules() if isinstance(m, nn.Linear)]
    if isinstance(head, nn.Linear) or len(linears) != 1:
        return head
    if {id(p) for p in head.parameters()} == {id(p) for p in linears[0].parameters()}:
        return linears[0]
    return head


def cache_key(learn, head: nn.Module, views: int) -> str:
    """A digest of everything the features depend on: body weights, preprocessing, pooling, files, views."""
    h = hashlib.sha256()
    head_ids = {id(t) for t in list(head.parameters()) + list(head.buffers())}
    for name, t in learn.model.state_dict(keep_vars=True).items():
        if id(t) in head_ids:
            continue
        h.update(name.encode())
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    recipe = learn.dls.recipe
    h.update(repr((recipe.size, recipe.interpolation, tuple(recipe.mean), tuple(recipe.std), recipe.aug,
                   [repr(t) for t in recipe.item_tfms], [repr(t) for t in recipe.batch_tfms], views,
                   global_pool_type(learn.model))).encode())
    for row in recipe.items.itertuples(index=False):
        try:
            st = os.stat(row.path)
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = None
        h.update(repr((row.path, row.label, bool(row.is_valid), stamp)).encode())
    return h.hexdigest()


class _FeatureDataset:
    """Training items from `views` cached views per image; each access draws one view at random."""

    def __init__(self, features, targets: torch.Tensor):
        self.features, self.targets = features, targets
        self.views = features.shape[0]

    def __len__(self) -> int:
        return self.features.shape[1]

    def __getitem__(self, i):
        v = int(np.random.randint(self.views)) if self.views > 1 else 0
        return torch.from_numpy(np.array(self.features[v, i], dtype=np.float32)), self.targets[i]


@dataclass
class FeatureCache:
    """Cached features: ``train`` (views, N, D) and ``valid`` (N, D) arrays (in memory or memory-mapped)."""

    key: str
    train: np.ndarray
    valid: np.ndarray
    train_targets: torch.Tensor
    valid_targets: torch.Tensor
    path: str | None = None
    runtime: str = "torch"  # what computed the features on the CPU: "onnxruntime" or "torch"

    def dataloaders(self, like: DataLoaders, device: torch.device) -> DataLoaders:
        """Feature DataLoaders with the batch size, shuffling and drop_last of `like`, yielding batches on `device`.

        >>> cache.dataloaders(learn.dls, learn.device).one_batch()[0].shape  # doctest: +SKIP
        torch.Size([16, 1280])
        """
        train = DataLoader(_FeatureDataset(self.train, self.train_targets), bs=like.train.bs,
                           shuffle=like.train.shuffle, drop_last=like.train.drop_last)
        valid = DataLoader(_FeatureDataset(self.valid[None], self.valid_targets), bs=like.valid.bs,
                           shuffle=False, drop_last=False)
        return DataLoaders(train, valid, device=device)


class HeadInput(nn.Module):
    """`model`'s forward pass that returns the input of its head module (the pooled features), not its output.

    The head is named by its path in `model` (``learn.spec.classifier``'s Linear), so the model is not copied.

    >>> body = HeadInput(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 2)), "1")
    >>> tuple(body(torch.zeros(5, 3, 2, 2)).shape)
    (5, 12)
    """

    def __init__(self, model: nn.Module, head_path: str):
        super().__init__()
        self.model, self.head_path = model, head_path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        captured = []
        handle = self.model.get_submodule(self.head_path).register_forward_pre_hook(
            lambda _, args: captured.append(args[0]))
        try:
            self.model(x)
        finally:
            handle.remove()
        if len(captured) != 1:
            raise FeatureCacheUnsupported(f"the head was called {len(captured)} times for one batch")
        if captured[0].ndim != 2:  # a head that pools or runs per token: its input is not one vector per image
            raise FeatureCacheUnsupported(f"the head's input has shape {tuple(captured[0].shape)}, not (batch, "
                                          "features)")
        return captured[0]


def _module_path(model: nn.Module, module: nn.Module) -> str:
    return next(name for name, m in model.named_modules() if m is module)


def _features_of(forward, dl, comment: str, device: torch.device, *, ranks: RankSplit | None = None,
                 autocast_dtype: torch.dtype | None = None):
    """Run `forward` (a `CpuForward` or a `HeadInput`) over `dl` on `device`; return its outputs (N, D, in CPU
    memory) and the targets.

    With `ranks` each rank runs over its share of `dl` and every rank gets all N rows, in `dl`'s order.
    """
    n_items = len(dl.dataset)
    if ranks is not None:
        dl = ranks.shard(dl)
    captured, targets = [], []
    autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                else contextlib.nullcontext())
    with torch.inference_mode(), autocast:
        for batch in progress_bar(dl, total=len(dl), comment=comment):
            xb, yb = batch[0], batch[1]
            captured.append(forward(xb.to(device).contiguous(memory_format=torch.channels_last)).detach().float().cpu())
            targets.append(yb.detach().cpu())
    features, targets = torch.cat(captured), torch.cat(targets)
    if ranks is not None:
        features, targets = ranks.gather(features, n_items), ranks.gather(targets, n_items)
    return features.numpy(), targets


def feature_cache_dir() -> Path:
    """Where memory-mapped feature caches live: ``$EASYTRANSFER_CACHE_DIR/features``, else
    ``$XDG_CACHE_HOME/easytransfer/features``, else ``~/.cache/easytransfer/features`` (safe to delete when no
    fit runs).

    >>> feature_cache_dir().name
    'features'
    """
    if os.environ.get("EASYTRANSFER_CACHE_DIR"):
        return Path(os.environ["EASYTRANSFER_CACHE_DIR"]) / "features"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "easytransfer" / "features"


def _allocate(shape, cache_dir: str | os.PathLike | None):
    nbytes = int(np.prod(shape)) * 4
    if nbytes <= CACHE_MEMORY_LIMIT:
        return np.empty(shape, dtype=np.float32), None
    folder = Path(cache_dir) if cache_dir is not None else feature_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(folder)  # caches of processes killed before they could delete theirs
    fd, path = tempfile.mkstemp(prefix=f"features.{os.getpid()}.", suffix=".tmp", dir=folder)
    os.close(fd)
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=shape), path


@contextmanager
def random_state_kept() -> Iterator[None]:
    """Put Python's, NumPy's and PyTorch's random states back as they were after the block (fastai's
    `no_random` without the seeding): a deterministic pass (plain features) then draws nothing from the run, so
    the head trains on the same batches whether the frozen stage or the choice before it computed the features.

    >>> state = torch.get_rng_state()
    >>> with random_state_kept():
    ...     _ = torch.rand(3)
    >>> torch.equal(torch.get_rng_state(), state)
    True
    """
    states = get_random_states()
    try:
        yield
    finally:
        set_random_states(**states)


def compute_feature_cache(learn, module: nn.Module, views: int, key: str, cache_dir: str | None = None,
                          runtime: str | None = None, *, ranks: RankSplit | None = None,
                          autocast_dtype: torch.dtype | None = None):
    """Compute `views` views of the training features and one of the validation features on ``learn.device``.

    On the CPU the passes run through `easytransfer.runtime.cpu_forward` (`runtime`: ``"auto"``, ``"torch"``,
    or ``None`` for ``EASYTRANSFER_RUNTIME``); the cache's ``runtime`` says which ran.

    Args:
        ranks: in a distributed run, each rank computes its share of the images and all ranks get every row.
        autocast_dtype: run the body under ``torch.autocast`` in this dtype (mixed precision on a GPU); the
            features are kept as float32.
    """
    dls = learn.dls
    recipe = dls.recipe
    items = recipe.items
    train_items = items[~items["is_valid"]].reset_index(drop=True)
    model, device = learn.model, learn.device
    body = HeadInput(model, _module_path(model, module))
    # on the CPU, ONNX Runtime where it gives the same features (exported once, for every pass below)
    images = len(train_items) * views + len(dls.valid_ds)
    forward = cpu_forward(body, runtime=runtime, images=images) if device.type == "cpu" else body
    bs = feature_batch_size(device)
    was_training = model.training
    model.eval()
    try:
        passes = dict(ranks=ranks, autocast_dtype=autocast_dtype)
        with random_state_kept():  # the plain pass draws nothing (the same head whoever computed the features)
            plain_train = dls.labelled_dl(train_items[["path", "label"]]).new(bs=bs, device=device)
            first, train_targets = _features_of(forward, plain_train, f"features of {len(train_items)} images",
                                                device, **passes)
        train, path = _allocate((views, *first.shape), cache_dir)
        train[0] = first
        for v in range(1, views):
            aug_dl = dls.train.new(shuffle=False, drop_last=False, bs=bs, device=device)
            feats, targets = _features_of(forward, aug_dl, f"augmented view {v + 1}/{views}", device, **passes)
            if not torch.equal(targets, train_targets):
                raise RuntimeError("augmented views came in another order than the plain one")  # a bug, not data
            train[v] = feats
        with random_state_kept():
            valid_feats, valid_targets = _features_of(forward, dls.valid.new(bs=bs, device=device),
                                                      f"features of {len(dls.valid_ds)} validation images", device,
                                                      **passes)
    finally:
        model.train(was_training)
    used = forward.runtime if isinstance(forward, CpuForward) else "torch"
    cache = FeatureCache(key, train, valid_feats, train_targets, valid_targets, path, used)
    if path is not None:
        weakref.finalize(cache, _remove, path)
    return cache


def compute_pooled_caches(learn, module: nn.Module, dls, pools: tuple[str, ...], *,
                          autocast_dtype: torch.dtype | None = None) -> dict[str, FeatureCache]:
    """The plain-view features of `dls`' training and validation images, pooled each way of `pools`, in one pass.

    The model's global pooling layer stacks its results along the batch axis (`pooled_several_ways`), so every
    image goes through the body once whatever the number of pooling types. Each returned `FeatureCache` has one
    view and an empty key (the caller names it). On the CPU the pass runs through `cpu_forward`.

    >>> caches = compute_pooled_caches(learn, module, learn.dls, ("avg", "max"))  # doctest: +SKIP
    >>> caches["max"].valid.shape  # doctest: +SKIP
    (25, 1280)
    """
    model, device = learn.model, learn.device
    items = dls.recipe.items
    train_items = items[~items["is_valid"]].reset_index(drop=True)
    k = len(pools)
    was_training = model.training
    model.eval()
    try:
        with pooled_several_ways(model, pools):
            body = HeadInput(model, _module_path(model, module))
            images = len(train_items) + len(dls.valid_ds)
            inner = cpu_forward(body, images=images) if device.type == "cpu" else body

            def forward(xb: torch.Tensor) -> torch.Tensor:  # (k*B, D), pool-major, as (B, k*D)
                out = inner(xb)
                return out.reshape(k, xb.shape[0], -1).transpose(0, 1).reshape(xb.shape[0], -1)

            bs = feature_batch_size(device)
            plain_train = dls.labelled_dl(train_items[["path", "label"]]).new(bs=bs, device=device)
            train, train_targets = _features_of(forward, plain_train, f"features of {len(train_items)} images at "
                                                f"{dls.recipe.size} px", device, autocast_dtype=autocast_dtype)
            valid, valid_targets = _features_of(forward, dls.valid.new(bs=bs, device=device),
                                                f"features of {len(dls.valid_ds)} validation images at "
                                                f"{dls.recipe.size} px", device, autocast_dtype=autocast_dtype)
    finally:
        model.train(was_training)
    used = inner.runtime if isinstance(inner, CpuForward) else "torch"
    width = train.shape[1] // k
    return {pool: FeatureCache("", np.ascontiguousarray(train[None, :, i * width:(i + 1) * width]),
                               np.ascontiguousarray(valid[:, i * width:(i + 1) * width]), train_targets,
                               valid_targets, None, used)
            for i, pool in enumerate(pools)}


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except OSError:
        pass

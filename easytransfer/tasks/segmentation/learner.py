"""`SegmentationLearner`: the transfer recipe (frozen encoder, unfreezing, discriminative rates) for segmentation.

It is a `TransferLearner` whose layer groups are the encoder's stages plus one decoder-and-head group, so
`fit_frozen`, `unfreeze`, `fit_discriminative`, `fit_gradual`, `lr_find`, early stopping, checkpoints, history,
plots, `export` and `diagnose` are the recipe's. With the encoder frozen, the decoder and head train on the
encoder's feature maps at every scale, computed once (`FeatureMapCache`, in a `HeadLoop`); ``cache=False`` trains
on the images.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from fastai.learner import Metric
from fastai.losses import CrossEntropyLossFlat
from torch import nn

from ...deploy.bundle import SQUISH_RULE, Preprocessing
from ...evaluate.metrics import segmentation_scores
from ...log import get_logger
from ...models.heads import HeadConfig
from ...train.callbacks import FrozenBatchNormCallback
from ...train.distributed import unwrap_model
from ...train.features import DEFAULT_CACHE_VIEWS
from ...train.head_loop import HeadLoop
from ...train.learner import TransferLearner
from ...train.precision import autocast_dtype
from .data import SegmentationData
from .feature_maps import FROZEN_WINDOW, FeatureMapCache, MapCacheTooLarge, compute_map_cache, map_cache_key
from .interpretation import SegmentationInterpretation, flip_averaged_logits
from .model import DecoderHead, SegmentationConfig, build_segmentation_model, encoder_layer_groups

__all__ = ["LOSSES", "CrossEntropyDiceLoss", "MeanIoU", "SegmentationLearner", "segmentation_learner"]

logger = get_logger(__name__)

LOSSES = ("ce", "ce+dice")
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)  # timm's BatchNormAct2d included


class MeanIoU(Metric):
    """mIoU over all pixels of the validation set (one confusion matrix accumulated per epoch), as ``"miou"``."""

    def __init__(self, n_classes: int, ignore_index: int | None = None):
        self.n_classes, self.ignore_index = n_classes, ignore_index
        self.reset()

    def reset(self):
        self.cm = torch.zeros(self.n_classes, self.n_classes, dtype=torch.int64)

    def accumulate(self, learn):
        preds, targs = learn.pred.argmax(1).flatten(), learn.y.flatten().long()
        keep = (targs >= 0) & (targs < self.n_classes)
        if self.ignore_index is not None:
            keep &= targs != self.ignore_index
        counts = torch.bincount(targs[keep] * self.n_classes + preds[keep], minlength=self.n_classes**2)
        self.cm += counts.cpu().view(self.n_classes, self.n_classes)

    @property
    def value(self):
        return segmentation_scores(self.cm.numpy(), range(self.n_classes))["miou"]

    @property
    def name(self):
        return "miou"


class CrossEntropyDiceLoss(nn.Module):
    """Cross-entropy plus soft Dice loss (mean over classes present), both leaving out `ignore_index` pixels.

    Dice counts a thin, rare class (cracks) as much as the background, where cross-entropy counts pixels.
    """

    def __init__(self, ignore_index: int | None = None, dice_weight: float = 1.0):
        super().__init__()
        self.ignore_index, self.dice_weight = ignore_index, dice_weight

    def forward(self, logits, targs):
        targs = targs.long()
        ignore = -100 if self.ignore_index is None else self.ignore_index
        ce = F.cross_entropy(logits, targs, ignore_index=ignore)
        keep = (targs != ignore).unsqueeze(1).float()
        probs = logits.float().softmax(1) * keep
        onehot = F.one_hot(targs.clamp(0, logits.shape[1] - 1), logits.shape[1]).permute(0, 3, 1, 2).float() * keep
        inter, total = (probs * onehot).sum((0, 2, 3)), (probs + onehot).sum((0, 2, 3))
        present = onehot.sum((0, 2, 3)) > 0
        dice = 1 - (2 * inter + 1) / (total + 1)
        return ce + self.dice_weight * (dice[present].mean() if present.any() else dice.sum() * 0)

    def activation(self, x):
        return x.softmax(1)

    def decodes(self, x):
        return x.argmax(1)


class EncoderBatchNormCallback(FrozenBatchNormCallback):
    """Run the encoder's BatchNorm layers with their pre-trained statistics during all training; the decoder's
    (new, with no statistics to keep) learn theirs from the data."""

    def before_train(self):
        for module in unwrap_model(self.learn.model).encoder.modules():  # DDP wraps it under `distributed()`
            if isinstance(module, BATCH_NORMS):
                module.eval()


class SegmentationLearner(TransferLearner):
    """A `TransferLearner` for semantic segmentation; build one with `segmentation_learner`.

    With the encoder frozen (`fit_frozen`, `lr_find`, `fit_gradual`'s stage 0) the decoder and head train on the
    encoder's feature maps, computed once (`FeatureMapCache`); an inner fastai Learner runs that loop (`HeadLoop`),
    and every callback of the fit sees this learner. Its other attributes are those of `TransferLearner`.

    Attributes:
        segmentation: the `SegmentationConfig` (decoder, ignore_index) the bundle records.
        feature_cache: the `FeatureMapCache` of the frozen encoder while the encoder stays frozen (dropped when it
            is unfrozen); recomputed when its weights, the data or the views change.
        cache_window: the side of the window of the cached maps a frozen training step reads, a fraction of the
            image's side (`FROZEN_WINDOW`; ``None``: whole maps); `fit_frozen`'s ``cache_window`` sets it.
    """

    task = "segmentation"
    mistakes_hint = "learn.interpret().per_class(), plot_top_losses() and plot_confusion_matrix() (pixels)"
    augmentation_advice = ("More augmentation: the data's aug= preset (its flips and crops move the masks with the "
                           "images), and more weight decay (wd=0.1 on the learner).",)

    def __init__(self, dls: SegmentationData, model: nn.Module, *, spec, layer_groups,
                 segmentation: SegmentationConfig, train_bn: bool = False, freeze_bn_stats: bool = True, **kwargs):
        self.feature_cache: FeatureMapCache | None = None  # before the parent's __init__, which freezes
        self.cache_window: float | None = FROZEN_WINDOW
        # the parent's rule puts BN layers whose parameters are all frozen in inference mode; the encoder's are
        # then kept so after unfreezing too (freeze_bn_stats), the decoder's never (they start with no statistics)
        super().__init__(dls, model, spec=spec, layer_groups=layer_groups, head_config=HeadConfig(),
                         train_bn=train_bn, freeze_bn_stats=False, **kwargs)
        self.segmentation = segmentation
        if freeze_bn_stats and not train_bn:
            self.add_cb(EncoderBatchNormCallback())

    @property
    def classes(self) -> tuple[str, ...]:
        """The class names (the data's ``codes``), class id order."""
        return tuple(str(c) for c in self.dls.codes)

    def preprocessing(self) -> Preprocessing:
        """The data's size, resize filter, mean and std; images are squished to the size (`SQUISH_RULE`)."""
        recipe = self.dls.recipe
        return Preprocessing(int(recipe.size), recipe.interpolation, tuple(recipe.mean), tuple(recipe.std),
                             SQUISH_RULE)

    def task_config(self) -> SegmentationConfig:
        """The decoder and ``ignore_index`` the bundle records."""
        return self.segmentation

    def describe_head(self) -> str:
        """The head in words for the report: the decoder (``"unet decoder"``)."""
        return f"{self.segmentation.head} decoder"

    def fit_frozen(self, epochs: int = 3, lr: float | str | None = None, *, cache: bool = True,
                   cache_views: int = DEFAULT_CACHE_VIEWS, cache_window: float | None = FROZEN_WINDOW,
                   **kwargs) -> SegmentationLearner:
        """Train the decoder and segmentation head with the encoder frozen (`TransferLearner.fit_frozen`).

        With ``cache=True`` (default) the frozen encoder's feature maps at every scale are computed once
        (`cache_views` views per training image: the plain image, plus views drawn with the training augmentations,
        each with its mask, when more than 1; and the validation images), and the decoder and head train on them:
        the same loss, metrics, warm-up + cosine schedule, history, early stopping and best weights, without the
        encoder's pass and the image reading of every epoch. The maps are kept as float16 in memory up to
        `MAP_CACHE_MEMORY_LIMIT` (2 GiB), memory-mapped from a file in `feature_cache_dir()` beyond it; when that
        disk has no room, or with ``train_bn=True`` (the encoder's BatchNorm layers train), one logged line says
        why and the fit runs on the images, as with ``cache=False``. The maps are reused by the next frozen fit and
        `lr_find` while the encoder's weights, the data and the views stay the same. The history marks the epochs
        ``on_features``.

        Each training step on the maps reads a window of them (`cache_window` of the side, half by default, at a
        random place drawn every epoch, the same at every scale and in the mask; validation reads whole maps): the
        decoder learns at the images' own scale from random crops, and a step costs about a quarter of a whole
        image's, the decoder being most of a segmentation model's work (measured in docs/segmentation.md).

        Args:
            epochs, lr, cache, cache_views: as in `TransferLearner.fit_frozen`.
            cache_window: the window's side, a fraction of the image's side; ``None`` trains on whole maps.
            **kwargs: `TransferLearner.fit_frozen`'s others (warmup_pct, monitor, patience, restore_best, cbs, resume).

        Returns:
            The learner.

        >>> learn.fit_frozen(3)  # doctest: +SKIP
        >>> learn.fit_frozen(3, cache=False)  # every epoch a pass through the encoder  # doctest: +SKIP
        >>> learn.fit_frozen(3, cache_window=None)  # whole maps in every step  # doctest: +SKIP
        """
        self.cache_window = cache_window
        return super().fit_frozen(epochs, lr, cache=cache, cache_views=cache_views, **kwargs)

    def freeze_to(self, n: int) -> None:
        """fastai's ``freeze_to``; once an encoder group trains, the cached maps are dropped (they would go stale and
        only hold memory)."""
        super().freeze_to(n)
        if not self._body_is_frozen():
            self.feature_cache = None

    # ------------------------------------------------------------------------------------ cached feature maps

    def _cache_obstacle(self) -> str | None:
        """Why the frozen encoder's maps cannot be cached for this learner (``None`` when they can)."""
        if self.train_bn:
            return "the encoder's BatchNorm layers train (train_bn=True)"
        if self.world is not None:
            return "this is a distributed run"
        if not isinstance(self.dls, SegmentationData):
            return "the data is not a SegmentationData"
        model = self.model
        if not all(hasattr(model, name) for name in ("encoder", "decoder", "segmentation_head")) or getattr(
                model, "classification_head", None) is not None:
            return "the model is not an smp encoder, decoder and segmentation head"
        head = {id(p) for p in (*model.decoder.parameters(), *model.segmentation_head.parameters())}
        if head != {id(p) for p in self.layer_groups.params(model)[-1]}:
            return "the last layer group is not the decoder and segmentation head"
        return None

    def _feature_cache_or_none(self, cache_views: int, caller: str = "fit_frozen") -> FeatureMapCache | None:
        """The cached maps for the current encoder weights, data and views (computed when needed), or ``None``.

        Says in one line when the cheap path is lost (and why), and when `lr_find` does the one-time pass.
        """
        obstacle = self._cache_obstacle()
        if obstacle is not None:
            logger.info(f"{caller}: the decoder trains on the images, not on cached feature maps, because {obstacle}: "
                        "every frozen epoch is a full pass through the encoder.")
            return None
        key = map_cache_key(self.model.encoder, self.dls.recipe, cache_views)
        if self.feature_cache is None or self.feature_cache.key != key:
            if caller == "lr_find":
                logger.info(f"lr_find: computing the frozen encoder's feature maps of the {len(self.dls.train_ds)} "
                            f"training and {len(self.dls.valid_ds)} validation images once (one pass); the sweep and "
                            "later frozen fits reuse them.")
            self.feature_cache = None  # free the old one first
            try:
                self.feature_cache = compute_map_cache(self.model.encoder, self.dls, cache_views, key, self.device,
                                                       autocast_dtype=autocast_dtype(self.cbs, self.device))
            except MapCacheTooLarge as e:
                logger.info(f"{caller}: the decoder trains on the images, not on cached feature maps: {e}.")
                return None
        return self.feature_cache

    def _training_loop(self, features: FeatureMapCache | None):
        """This learner, or the `HeadLoop` that trains the decoder and head on cached `features` with its optimizer
        and callbacks."""
        if features is None:
            return self
        dls = features.dataloaders(self.dls, self.device, window=self.cache_window)
        return HeadLoop(self, dls, DecoderHead(self.model, features.layout))

    # ------------------------------------------------------------------------------------ predictions

    def interpret(self, dl=None, tta: bool = False) -> SegmentationInterpretation:
        """Predictions on `dl` (default the validation set; a DataLoader, or a table with ``path`` and ``mask``),
        computed once: ``scores()``, ``per_class()``, ``confusion_matrix()``, ``plot_top_losses()`` ...

        `tta`: average each image's probabilities with those of its left-right mirror (`flip_averaged_logits`).

        >>> interp = learn.interpret(); interp.plot_top_losses(4)  # doctest: +SKIP
        """
        if dl is None:
            dl = self.dls.valid
        elif not hasattr(dl, "one_batch"):
            dl = self.dls.labelled_dl(dl)
        return SegmentationInterpretation.from_learner(self, dl, tta=tta)

    def evaluate(self, test=None, tta: bool = False) -> dict:
        """mIoU, pixel accuracy, per-class IoU, mean Dice, loss and number of images on the test images the data
        was built with (else the validation images), or on `test` (a DataLoader or a ``path``/``mask`` table).

        Pixels equal to ``ignore_index`` are not scored; a class absent from both truth and prediction has no
        IoU (nan) and is left out of the means. Scores are at the training resolution.

        >>> learn.evaluate()  # doctest: +SKIP
        {'n_images': 24, 'loss': 0.08, 'miou': 0.71, 'pixel_accuracy': 0.98, 'per_class_iou': {...}, 'dice': 0.81, ...}
        """
        if test is None:
            test = self.dls.labelled_dl() if self.dls.recipe.test_items is not None else self.dls.valid
        return self.interpret(test, tta=tta).scores()

    def predict(self, item, probabilities: bool = False, **kwargs):
        """The mask of class ids of one image (a path, a PIL image or an array) at its own size, as the exported
        model's `SegmentationPredictor.predict` gives it; ``probabilities=True``: ``(mask, probs)``."""
        from .predictor import SegmentationPredictor

        was_training = self.model.training
        try:
            predictor = SegmentationPredictor(self.model, self.bundle_config(), device=self.device)
            return predictor.predict(item, probabilities=probabilities)
        finally:
            self.model.train(was_training)

    def tta(self, dl=None):
        """Test-time augmentation for masks: each image's class probabilities averaged with those of its
        left-right mirror (mirrored back). `dl`: as for `interpret` (default the validation set).

        Returns ``(probs, targets)`` as fastai's ``Learner.tta``: (images, classes, H, W) and (images, H, W).

        >>> probs, masks = learn.tta()  # doctest: +SKIP
        """
        if dl is None:
            dl = self.dls.valid
        elif not hasattr(dl, "one_batch"):
            dl = self.dls.labelled_dl(dl)
        probs, targs = [], []
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.inference_mode():
                for xb, yb in dl:
                    xb = xb.as_subclass(torch.Tensor)
                    probs.append(flip_averaged_logits(self.model, xb).exp().cpu())
                    targs.append(yb.as_subclass(torch.Tensor).to(torch.int64).cpu())
        finally:
            self.model.train(was_training)
        return torch.cat(probs), torch.cat(targs)


def segmentation_learner(
    dls: SegmentationData,
    arch: str = "efficientnet_lite0",
    head: str = "unet",
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    n_stages: int | None = None,
    loss: str = "ce",
    metrics=None,
    wd: float | None = None,
    train_bn: bool = False,
    freeze_bn_stats: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **kwargs,
) -> SegmentationLearner:
    """A `SegmentationLearner`: `arch` (a timm backbone, ImageNet weights) as the encoder of a `head` decoder.

    The data is rebuilt with the backbone's resize filter, mean and std (and its input size, rounded up to a
    multiple of 32, unless the data was given a size).

    Args:
        dls: `SegmentationData`.
        arch: ``"efficientnet_lite0"`` (default; weights offline), ``"mobilenetv2_100"``, any timm CNN.
        head: ``"unet"`` (default), ``"fpn"``, ``"deeplabv3plus"``, ``"unetplusplus"``, ``"linknet"``
            (`segmentation_heads` says which to choose).
        pretrained, weights: ImageNet weights for the encoder (``False``: random), or a local file of `arch`.
        n_stages: encoder layer groups (default 4).
        loss: ``"ce"`` (cross-entropy) or ``"ce+dice"`` (plus soft Dice: helps thin, rare classes); both leave
            out the data's ``ignore_index`` pixels.
        metrics: fastai metrics; default `MeanIoU` (``"miou"``; ``monitor="miou"`` keeps the best mIoU epoch).
        train_bn, freeze_bn_stats: as for `transfer_learner`; with ``freeze_bn_stats`` the encoder's BatchNorm
            layers keep their ImageNet statistics, the decoder's learn theirs.
        checkpoint_dir, device, wd: as for `transfer_learner`.

    Returns:
        The learner, its encoder frozen (the decoder and head train until `unfreeze`).

    >>> dls = SegmentationData.from_folders("images/", "masks/", codes=["background", "crack"])  # doctest: +SKIP
    >>> learn = segmentation_learner(dls, "efficientnet_lite0", "unet"); learn.fit_frozen(5)  # doctest: +SKIP
    """
    if not isinstance(dls, SegmentationData):
        raise TypeError(f"segmentation_learner takes SegmentationData (SegmentationData.from_folders), got "
                        f"{type(dls).__name__}.")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    config = SegmentationConfig(head, dls.ignore_index)
    model, spec = build_segmentation_model(arch, len(dls.codes), head=head, pretrained=pretrained, weights=weights)
    dls = dls.for_model(spec)
    groups = encoder_layer_groups(model, n_stages)
    ignore = -100 if dls.ignore_index is None else dls.ignore_index
    loss_func = (CrossEntropyLossFlat(axis=1, ignore_index=ignore) if loss == "ce"
                 else CrossEntropyDiceLoss(dls.ignore_index))
    kwargs.setdefault("loss_func", loss_func)
    return SegmentationLearner(
        dls, model, spec=spec, layer_groups=groups, segmentation=config,
        metrics=metrics if metrics is not None else [MeanIoU(len(dls.codes), dls.ignore_index)],
        checkpoint_dir=checkpoint_dir, train_bn=train_bn, freeze_bn_stats=freeze_bn_stats, wd=wd, device=device,
        **kwargs,
    )

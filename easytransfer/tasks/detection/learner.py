"""`DetectionLearner`: the transfer recipe (frozen body, unfreezing, discriminative rates) for object detectors.

The learner is a `TransferLearner` whose model is a torchvision detector (`build_detector`) and whose data is a
`DetectionData`. fastai's loop drives it through `DetectionLossCallback`: each batch's targets are passed to the
model with the images, the model returns its dict of losses, and the loss is their sum.

Validation loss: torchvision's detectors return losses only in train mode, so the validation pass runs in
`loss_mode` (train mode, ``no_grad``, BatchNorm and Dropout in eval mode): ``valid_loss`` is the same summed
detection loss as ``train_loss`` on held-out images. Beside it, each batch runs in eval mode for the
``map50`` metric (COCO mAP@0.5, `MeanAveragePrecision`): what early stopping and best-weight restore watch by
default (`default_monitor`), since the region proposal network samples its anchors at random in train mode and
the loss says little about the boxes.
``learn.evaluate()`` gives mAP on the test images.

No feature cache: the frozen body's forward pass is ~14% of a frozen training step (measured at 320 px; the
pyramid, the proposal network and the box head run on every batch), so `fit_frozen` trains on the images.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from fastai.callback.core import Callback

from ...data.images import as_rgb, resample_filter
from ...deploy.bundle import Preprocessing
from ...models.factory import get_model_spec
from ...models.heads import HeadConfig
from ...train.learner import TransferLearner
from .data import DetectionData
from .interpretation import DetectionInterpretation, set_loss_mode
from .masks import check_head_data, masks_at_image_size
from .model import DEFAULT_PROPOSALS, DetectionConfig, build_detector, detection_layer_groups
from .recipe import (
    DETECTION_DECAY,
    DETECTION_WD,
    MeanAveragePrecision,
    detection_lr,
    detection_optimizer,
)
from .tta import flip_tta

__all__ = ["DetectionLearner", "DetectionLossCallback", "detection_learner", "detection_loss",
           "predict_boxes"]


def detection_loss(losses: dict, *targets) -> torch.Tensor:
    """The sum of a torchvision detector's losses (the targets were already given to the model)."""
    return sum(losses.values())


class DetectionLossCallback(Callback):
    """Feed each batch's targets to the detector, and validate in `loss_mode` so it returns losses."""

    order = -4  # after TrainEvalCallback (-10) and FrozenBatchNormCallback (-5) set the modes

    def before_batch(self):
        self.learn.xb = (self.xb[0], list(self.yb[0]))

    def before_validate(self):
        set_loss_mode(self.learn.model)


class DetectionLearner(TransferLearner):
    """A `TransferLearner` for object detection; build one with `detection_learner`.

    Everything of the recipe works as for classification: `fit_frozen` (body frozen, its BatchNorm layers in
    inference mode), `unfreeze`, `fit_discriminative`, `fit_gradual`, `lr_find`, early stopping with
    best-weight restore, checkpoints and ``resume=True``, the history and its plot. Detection adds `evaluate`
    (COCO mAP), `interpret` (top losses drawn, per-class table), `predict` (boxes on one image) and `export`.

    Attributes:
        detection_config: the `DetectionConfig` that rebuilds the detector (recorded in the bundle).
    """

    detection_config: DetectionConfig
    task = "detection"
    mistakes_hint = "learn.interpret().per_class() and plot_top_losses() (predicted and true boxes)"
    augmentation_advice = ("More augmentation: the data's aug= preset (its flips and crops move the boxes with the "
                           "images), and more weight decay (wd=0.1 on the learner).",)

    @property
    def classes(self) -> tuple[str, ...]:
        """The object classes, label 1 first (label 0 is the detector's background)."""
        return tuple(str(c) for c in self.dls.classes)

    def default_head_lr(self) -> float:
        """torchvision's detection rate for this batch size (`detection_lr`: 0.01 for 8 images)."""
        return detection_lr(self.dls.train.bs)

    def default_lr_max(self) -> float:
        """The same rate for the head when fine-tuning; the body's groups get it times `default_decay`."""
        return detection_lr(self.dls.train.bs)

    def default_decay(self) -> float:
        """`DETECTION_DECAY` (0.5) between neighbouring layer groups' rates."""
        return DETECTION_DECAY

    def default_monitor(self) -> str:
        """``"map50"``: COCO mAP@0.5 of the validation images decides early stopping and the weights kept."""
        return "map50"

    def preprocessing(self) -> Preprocessing:
        """The detector's input size, mean and std, and the data's resize filter; images are squashed to size."""
        cfg = self.detection_config
        return Preprocessing(cfg.size, self.dls.recipe.interpolation, cfg.mean, cfg.std, resize="squash to size")

    def task_config(self) -> DetectionConfig:
        """The `DetectionConfig` that rebuilds the detector."""
        return self.detection_config

    def describe_head(self) -> str:
        """The head in words for the report (``"fasterrcnn detector over a feature pyramid"``)."""
        return f"{self.detection_config.head} detector over a feature pyramid"

    def _eval_dl(self, test):
        if test is None:
            return self.dls.items_dl()
        if isinstance(test, DetectionData):
            return test.items_dl(test.recipe.items)
        return test  # a DataLoader of (images, targets)

    def interpret(self, dl=None, *, losses: bool = True, tta: bool = False) -> DetectionInterpretation:
        """Predictions on `dl` (default: the test set when the data has one, else validation), computed once.

        Args:
            dl: ``None``, another `DetectionData` (all its images), or a DataLoader of ``(images, targets)``.
            losses: also compute each image's detection losses (for the top losses).
            tta: detect on each image and its horizontal flip, the boxes merged (`flip_tta`).

        Returns:
            a `DetectionInterpretation`.

        >>> interp = learn.interpret(); interp.per_class(); interp.plot_top_losses(9)  # doctest: +SKIP
        """
        dl = self._eval_dl(dl)
        return DetectionInterpretation.from_model(self.model, dl, self.dls.classes, device=self.device, losses=losses,
                                                  tta=tta)

    def evaluate(self, test=None, tta: bool = False) -> dict:
        """COCO average precision on held-out images: the test set if the data has one, else validation.

        Args:
            test: ``None``, another `DetectionData` (all its images), or a DataLoader of ``(images, targets)``.
            tta: use test-time augmentation (the horizontal flip, boxes merged: `flip_tta`).

        Returns:
            ``{"n_images", "map50", "map" (IoU 0.50:0.95), "per_class_ap", "per_class_ap50"}``, equal to
            pycocotools' figures.

        >>> learn.evaluate()  # doctest: +SKIP
        {'n_images': 40, 'map50': 0.81, 'map': 0.43, 'per_class_ap': {'raccoon': 0.43}, ...}
        """
        return self.interpret(test, losses=False, tta=tta).scores()

    def predict(self, item, score_threshold: float = 0.5, rm_type_tfms=None, with_input: bool = False, *,
                tta: bool = False):
        """Boxes on one image (path, PIL image or HxWx3 array): ``[(label, score, (x1, y1, x2, y2)), ...]``.

        Boxes are in pixels of the image as given, best first. A Mask R-CNN adds each object's mask:
        ``(label, score, box, mask)``, a boolean array of the image's height and width. ``tta=True`` merges the
        image's and its horizontal flip's boxes (`flip_tta`: a box only one view finds keeps half its score).
        """
        return predict_boxes(self.model, item, self.detection_config, self.dls.classes, score_threshold,
                             self.device, tta=tta)


def predict_boxes(model, item, config: DetectionConfig, classes, score_threshold: float, device,
                  interpolation: str = "bilinear", *, tta: bool = False,
                  forward=None) -> list[tuple[str, float, tuple[float, float, float, float]]]:
    """One image through `model` at ``config.size`` and the boxes mapped back to its own pixels (and, for a Mask
    R-CNN, each box's mask as a boolean array of the image's size: `masks_at_image_size`).

    ``tta=True`` also runs the image's horizontal flip and merges the two views (`flip_tta`); `forward` runs the
    model instead of `model` itself (a `DetectorForward`: ONNX Runtime on the CPU)."""
    img = as_rgb(item)
    resized = img.resize((config.size, config.size), resample_filter(interpolation))
    x = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            run = model if forward is None else forward
            out = (flip_tta(run, x[None].to(device)) if tta else run(x[None].to(device)))[0]
    finally:
        model.train(was_training)
    sx, sy = img.width / config.size, img.height / config.size
    scale = torch.tensor([sx, sy, sx, sy])
    keep = out["scores"] >= score_threshold
    boxes = (out["boxes"][keep].cpu() * scale).tolist()
    found = [(classes[int(label) - 1], float(score), tuple(round(v, 2) for v in box))
             for label, score, box in zip(out["labels"][keep].tolist(), out["scores"][keep].tolist(), boxes)]
    if "masks" in out:
        found = [(*f, mask) for f, mask in zip(found, masks_at_image_size(out["masks"][keep], img.width, img.height))]
    return found


def detection_learner(
    dls: DetectionData,
    arch: str = "efficientnet_lite0",
    head: str = "fasterrcnn",
    *,
    pretrained: bool = True,
    weights: str | os.PathLike | None = None,
    n_stages: int | None = None,
    fpn_channels: int = 256,
    proposals: int = DEFAULT_PROPOSALS,
    score_thresh: float = 0.05,
    wd: float | None = None,
    train_bn: bool = False,
    freeze_bn_stats: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    **kwargs,
) -> DetectionLearner:
    """A `DetectionLearner`: a torchvision detector over a pre-trained timm backbone, its body frozen.

    Args:
        dls: the data (`DetectionData.from_voc` ...); the detector runs at its ``size``.
        arch: a timm CNN backbone (``"efficientnet_lite0"`` and ``"mobilenetv2_100"`` have offline weights).
        head: ``"fasterrcnn"``, ``"retinanet"``, ``"fcos"`` or ``"maskrcnn"`` (instance masks: the data must have
            them, ``masks=True`` in `DetectionData.from_coco` / `from_yolo`) (`detection_heads`).
        pretrained: load the backbone's ImageNet weights into the body (nothing missing); ``False``: random.
        weights: a local weights file of the timm classifier `arch`.
        n_stages: body layer groups (default 4, fewer when the backbone has fewer stages); the feature pyramid
            and the detection heads are the last group.
        fpn_channels: channels of the feature pyramid (torchvision's 256).
        proposals: Faster R-CNN's region proposals per image at inference (twice as many in training).
        score_thresh: detections scoring lower are not returned.
        wd: weight decay (default `DETECTION_WD`, 1e-4, added to the gradient as torchvision's references do).
        train_bn, freeze_bn_stats, checkpoint_dir, device: as for `transfer_learner`.
        **kwargs: fastai `Learner` arguments; ``opt_func`` defaults to `detection_optimizer` (SGD, momentum 0.9).

    The recipe's defaults are a detector's (`easytransfer.tasks.detection.recipe`): SGD with momentum, the rate
    of torchvision's references for the batch size (0.01 for 8 images) in `fit_frozen` and for the head in
    `fit_discriminative`, halving per layer group down the body, and COCO mAP@0.5 of the validation images
    (the ``map50`` column of the history) watched by early stopping and best-weight restore.

    >>> from easytransfer import DetectionData, detection_learner
    >>> dls = DetectionData.from_voc("images/", "annotations/", size=320)  # doctest: +SKIP
    >>> learn = detection_learner(dls, "efficientnet_lite0", "fasterrcnn"); learn.fit_frozen(3)  # doctest: +SKIP
    """
    if not isinstance(dls, DetectionData):
        raise TypeError("detection_learner needs a DetectionData (DetectionData.from_voc ...), "
                        f"got {type(dls).__name__}.")
    check_head_data(head, dls.has_masks)
    model, config, _, source = build_detector(arch, len(dls.classes), head=head, pretrained=pretrained,
                                              weights=weights, size=dls.recipe.size, fpn_channels=fpn_channels,
                                              score_thresh=score_thresh, proposals=proposals)
    groups = detection_layer_groups(model, n_stages)
    spec = get_model_spec(arch)
    spec = type(spec)(**{**spec.__dict__, "classifier": "", "weights": source,
                         "input_size": (3, config.size, config.size), "num_params": sum(
                             p.numel() for p in model.parameters())})
    cbs = list(kwargs.pop("cbs", None) or []) + [DetectionLossCallback()]
    kwargs.setdefault("opt_func", detection_optimizer())
    metrics = [MeanAveragePrecision(dls.classes, "map50")]
    learn = DetectionLearner(dls, model, spec=spec, layer_groups=groups, head_config=HeadConfig(), metrics=metrics,
                             loss_func=detection_loss, checkpoint_dir=checkpoint_dir, train_bn=train_bn,
                             freeze_bn_stats=freeze_bn_stats, channels_last=False,
                             wd=DETECTION_WD if wd is None else wd, cbs=cbs, device=device, **kwargs)
    learn.detection_config = config
    return learn




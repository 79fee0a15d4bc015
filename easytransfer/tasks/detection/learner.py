"""`DetectionLearner`: the transfer recipe (frozen body, unfreezing, discriminative rates) for object detectors.

The learner is a `TransferLearner` whose model is a torchvision detector (`build_detector`) and whose data is a
`DetectionData`. fastai's loop drives it through `DetectionLossCallback`: each batch's targets are passed to the
model with the images, the model returns its dict of losses, and the loss is their sum.

Validation loss: torchvision's detectors return losses only in train mode, so the validation pass runs in
`loss_mode` (train mode, ``no_grad``, BatchNorm and Dropout in eval mode): ``valid_loss`` is the same summed
detection loss as ``train_loss`` on held-out images, and early stopping and best-weight restore monitor it
(one pass; mAP would need a second, inference-mode pass per epoch). The region proposal network samples its
anchors at random in train mode, so the validation loss carries some noise. ``learn.evaluate()`` gives mAP.

The feature cache of classification does not apply (the heads read feature maps at several scales, and the
boxes move with augmentation): `fit_frozen` trains on the images, with the body frozen.
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
from .model import DEFAULT_PROPOSALS, DetectionConfig, build_detector, detection_layer_groups

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

    def interpret(self, dl=None, *, losses: bool = True) -> DetectionInterpretation:
        """Predictions on `dl` (default: the test set when the data has one, else validation), computed once.

        Args:
            dl: ``None``, another `DetectionData` (all its images), or a DataLoader of ``(images, targets)``.
            losses: also compute each image's detection losses (for the top losses).

        Returns:
            a `DetectionInterpretation`.

        >>> interp = learn.interpret(); interp.per_class(); interp.plot_top_losses(9)  # doctest: +SKIP
        """
        dl = self._eval_dl(dl)
        return DetectionInterpretation.from_model(self.model, dl, self.dls.classes, device=self.device, losses=losses)

    def evaluate(self, test=None) -> dict:
        """COCO average precision on held-out images: the test set if the data has one, else validation.

        Args:
            test: ``None``, another `DetectionData` (all its images), or a DataLoader of ``(images, targets)``.

        Returns:
            ``{"n_images", "map50", "map" (IoU 0.50:0.95), "per_class_ap", "per_class_ap50"}``, equal to
            pycocotools' figures.

        >>> learn.evaluate()  # doctest: +SKIP
        {'n_images': 40, 'map50': 0.81, 'map': 0.43, 'per_class_ap': {'raccoon': 0.43}, ...}
        """
        return self.interpret(test, losses=False).scores()

    def predict(self, item, score_threshold: float = 0.5, rm_type_tfms=None, with_input: bool = False):
        """Boxes on one image (path, PIL image or HxWx3 array): ``[(label, score, (x1, y1, x2, y2)), ...]``.

        Boxes are in pixels of the image as given, best first.
        """
        return predict_boxes(self.model, item, self.detection_config, self.dls.classes, score_threshold,
                             self.device)


def predict_boxes(model, item, config: DetectionConfig, classes, score_threshold: float, device,
                  interpolation: str = "bilinear") -> list[tuple[str, float, tuple[float, float, float, float]]]:
    """One image through `model` at ``config.size`` and the boxes mapped back to its own pixels."""
    img = as_rgb(item)
    resized = img.resize((config.size, config.size), resample_filter(interpolation))
    x = torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            out = model(x[None].to(device))[0]
    finally:
        model.train(was_training)
    sx, sy = img.width / config.size, img.height / config.size
    scale = torch.tensor([sx, sy, sx, sy])
    keep = out["scores"] >= score_threshold
    boxes = (out["boxes"][keep].cpu() * scale).tolist()
    return [(classes[int(label) - 1], float(score), tuple(round(v, 2) for v in box))
            for label, score, box in zip(out["labels"][keep].tolist(), out["scores"][keep].tolist(), boxes)]


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
        head: ``"fasterrcnn"``, ``"retinanet"`` or ``"fcos"`` (`detection_heads`).
        pretrained: load the backbone's ImageNet weights into the body (nothing missing); ``False``: random.
        weights: a local weights file of the timm classifier `arch`.
        n_stages: body layer groups (default 4, fewer when the backbone has fewer stages); the feature pyramid
            and the detection heads are the last group.
        fpn_channels: channels of the feature pyramid (torchvision's 256).
        proposals: Faster R-CNN's region proposals per image at inference (twice as many in training).
        score_thresh: detections scoring lower are not returned.
        wd, train_bn, freeze_bn_stats, checkpoint_dir, device: as for `transfer_learner`.

    >>> from easytransfer import DetectionData, detection_learner
    >>> dls = DetectionData.from_voc("images/", "annotations/", size=320)  # doctest: +SKIP
    >>> learn = detection_learner(dls, "efficientnet_lite0", "fasterrcnn"); learn.fit_frozen(3)  # doctest: +SKIP
    """
    if not isinstance(dls, DetectionData):
        raise TypeError("detection_learner needs a DetectionData (DetectionData.from_voc ...), "
                        f"got {type(dls).__name__}.")
    model, config, _, source = build_detector(arch, len(dls.classes), head=head, pretrained=pretrained,
                                              weights=weights, size=dls.recipe.size, fpn_channels=fpn_channels,
                                              score_thresh=score_thresh, proposals=proposals)
    groups = detection_layer_groups(model, n_stages)
    spec = get_model_spec(arch)
    spec = type(spec)(**{**spec.__dict__, "classifier": "", "weights": source,
                         "input_size": (3, config.size, config.size), "num_params": sum(
                             p.numel() for p in model.parameters())})
    cbs = list(kwargs.pop("cbs", None) or []) + [DetectionLossCallback()]
    learn = DetectionLearner(dls, model, spec=spec, layer_groups=groups, head_config=HeadConfig(), metrics=[],
                             loss_func=detection_loss, checkpoint_dir=checkpoint_dir, train_bn=train_bn,
                             freeze_bn_stats=freeze_bn_stats, channels_last=False, wd=wd, cbs=cbs, device=device,
                             **kwargs)
    learn.detection_config = config
    return learn




"""What a detector trains with when the user gives no option: the optimizer, the rates, and mAP watched per epoch.

A detector is not trained like a classifier. Its region proposal network, box head and feature pyramid start
random (a classifier's new head is one linear layer on features that already separate the classes), so the
frozen stage must train a deep, randomly initialised stack, and the body must then move far enough to localise.
The defaults follow torchvision's detection references (``references/detection``: SGD with momentum 0.9, weight
decay 1e-4, 0.02 for 16 images per step, i.e. 0.00125 per image, warm-up) rather than the classifier's Adam at
3e-3 / 1e-3 with rates falling tenfold per layer group. Measured on raccoon (issue 15) the classifier's recipe
reached mAP@0.5 0.324 where torchvision's plain loop reached 0.591 on the same detector and epochs;
``benchmarks/detection.py`` prints today's figures beside the plain loop.

- `detection_optimizer`: fastai's `SGD` with momentum 0.9 and L2 weight decay (torchvision's form).
- `detection_lr`: the peak rate for a batch size (linear scaling of torchvision's 0.02 per 16 images).
- `DETECTION_DECAY`: the ratio between neighbouring layer groups' rates when fine-tuning (0.5: the stem still
  learns at 1/16 of the head's rate, close to torchvision's uniform rate with the stem frozen).
- `MeanAveragePrecision`: a fastai metric, COCO mAP@0.5 of the validation images each epoch (an inference pass
  beside the loss pass): what early stopping and best-weight restore watch, since a detector's validation loss
  (random proposal sampling, a sum of four losses) says little about its boxes.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from functools import partial

import torch
from fastai.metrics import Metric
from fastai.optimizer import SGD
from torch import nn

from ...evaluate.box_metrics import average_precision

__all__ = ["DETECTION_DECAY", "DETECTION_LR_PER_IMAGE", "DETECTION_MOMENTUM", "DETECTION_WD",
           "MeanAveragePrecision", "detection_lr", "detection_optimizer", "inference_mode_of"]

DETECTION_LR_PER_IMAGE = 0.02 / 16  # torchvision's references: lr 0.02 for 8 GPUs x 2 images
DETECTION_MOMENTUM = 0.9
DETECTION_WD = 1e-4
DETECTION_DECAY = 0.5


def detection_lr(batch_size: int) -> float:
    """The peak rate for `batch_size` images per step (torchvision's rate scaled linearly).

    >>> detection_lr(8)
    0.01
    """
    return DETECTION_LR_PER_IMAGE * batch_size


def detection_optimizer():
    """fastai's `SGD` with momentum 0.9 and L2 weight decay (added to the gradient, as torch's SGD does).

    >>> detection_optimizer().keywords
    {'mom': 0.9, 'decouple_wd': False}
    """
    return partial(SGD, mom=DETECTION_MOMENTUM, decouple_wd=False)


@contextmanager
def inference_mode_of(model: nn.Module):
    """Within the block `model` is in eval mode (a torchvision detector returns detections) under ``no_grad``;
    every module's mode is restored afterwards."""
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with torch.no_grad():
            yield model
    finally:
        for m, training in modes.items():
            m.training = training


class MeanAveragePrecision(Metric):
    """COCO mAP@0.5 (``name="map50"``) or mAP@0.5:0.95 (``"map"``) over the validation images, per epoch.

    Each validation batch also runs through the detector in eval mode (its detections), beside the loss pass
    the validation loss comes from; the figure is `average_precision`'s, equal to pycocotools'.

    >>> metric = MeanAveragePrecision(["raccoon"]); metric.name
    'map50'
    """

    def __init__(self, classes: Sequence[str], name: str = "map50"):
        if name not in ("map50", "map"):
            raise ValueError(f"name must be 'map50' or 'map', got {name!r}")
        self.classes, self._name = tuple(classes), name
        self.preds, self.targets = [], []

    def reset(self):
        self.preds, self.targets = [], []

    def accumulate(self, learn):
        images, targets = learn.xb[0], learn.xb[1] if len(learn.xb) > 1 else learn.yb[0]
        with inference_mode_of(learn.model) as model:
            detections = model(images)
        # box mAP only: a Mask R-CNN's masks (100 x size x size floats an image) are not kept
        self.preds += [{k: v.detach().cpu() for k, v in d.items() if k != "masks"} for d in detections]
        self.targets += [{k: v.detach().cpu() for k, v in t.items() if k != "masks"} for t in targets]

    @property
    def value(self):
        if not self.targets:
            return None
        scores = average_precision(self.targets, self.preds, self.classes)
        return scores.map50 if self._name == "map50" else scores.map

    @property
    def name(self):
        return self._name

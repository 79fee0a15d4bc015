"""Evaluating a detector: predictions computed once, COCO average precision, per-class table, top losses drawn.

torchvision's detectors return detections in eval mode and losses only in train mode. A loss on held-out
images (the validation loss, the per-image losses of `DetectionInterpretation`) is computed in `loss_mode`:
train mode under ``no_grad`` with every BatchNorm and Dropout layer in eval mode, so nothing about the model
changes and the same pre-trained statistics normalise as in inference.

A Mask R-CNN's interpretation also keeps each image's masks, run-length encoded (`EncodedMasks`: predicted
probabilities above 0.5), and adds COCO's mask AP (``mask_map50``, ``mask_map``) to the box AP.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import nn

from ...evaluate.box_metrics import BoxAP, average_precision
from ...evaluate.instance_masks import EncodedMasks
from ...evaluate.interpretation import ReportSection
from .data import draw_boxes
from .tta import flip_tta

__all__ = ["DetectionInterpretation", "detect", "image_losses", "loss_mode", "set_loss_mode"]



def set_loss_mode(model: nn.Module) -> None:
    """Train mode (detectors return losses) with BatchNorm and Dropout layers in eval mode."""
    model.train()
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.Dropout)):
            module.eval()


@contextmanager
def loss_mode(model: nn.Module):
    """Within the block `model` returns losses without changing (`set_loss_mode`, ``no_grad``); modes restored."""
    modes = {m: m.training for m in model.modules()}
    try:
        set_loss_mode(model)
        with torch.no_grad():
            yield model
    finally:
        for m, training in modes.items():
            m.training = training


def _cpu(d: dict) -> dict:
    """A detection or target dict on the CPU, its masks (if any) run-length encoded (`EncodedMasks`)."""
    out = {k: v.detach().cpu() for k, v in d.items() if k != "masks"}
    if "masks" in d:
        masks = d["masks"]
        out["masks"] = EncodedMasks.encode(masks[:, 0] if masks.ndim == 4 else masks)  # (n, 1, H, W) predictions
    return out


def detect(model: nn.Module, dl, device=None, *, tta: bool = False) -> tuple[list[dict], list[dict]]:
    """Detections (eval mode) and targets of every batch of `dl`, on the CPU (masks as `EncodedMasks`); the model's
    mode is restored. ``tta=True``: each image's and its horizontal flip's detections merged (`flip_tta`)."""
    was_training = model.training
    model.eval()
    preds, targets = [], []
    try:
        with torch.inference_mode():
            for images, batch_targets in dl:
                if device is not None:
                    images = images.to(device)
                preds += [_cpu(p) for p in (flip_tta(model, images) if tta else model(images))]
                targets += [_cpu(t) for t in batch_targets]
    finally:
        model.train(was_training)
    return preds, targets


def image_losses(model: nn.Module, dl, device=None) -> np.ndarray:
    """The detector's summed training losses on each image of `dl` (in `loss_mode`: nothing changes)."""
    losses = []
    with loss_mode(model):
        for images, targets in dl:
            for x, t in zip(images, targets):
                if device is not None:
                    x, t = x.to(device), {k: v.to(device) for k, v in t.items()}
                losses.append(float(sum(model(x[None], [t]).values())))
    return np.asarray(losses)


class DetectionInterpretation:
    """A detector's predictions on a set of images, computed once; tables and plots read them.

    Attributes:
        preds, targets: one dict per image (boxes in the pixels of the resized image the model saw; a Mask R-CNN's
            ``masks`` as `EncodedMasks`).
        losses: the summed detection loss of each image (``None`` when not computed).
        ap: the `BoxAP` of the predictions; mask_ap: their mask AP (``None`` without masks).

    >>> interp = learn.interpret(); interp.per_class(); interp.plot_top_losses(4)  # doctest: +SKIP
    """

    def __init__(self, dataset, preds: list[dict], targets: list[dict], classes: Sequence[str],
                 losses: np.ndarray | None = None):
        self.dataset, self.preds, self.targets = dataset, preds, targets
        self.classes = list(classes)
        self.losses = losses
        self.ap: BoxAP = average_precision(targets, preds, self.classes)
        masks = bool(preds) and all("masks" in p for p in preds) and all("masks" in t for t in targets)
        self.mask_ap: BoxAP | None = average_precision(targets, preds, self.classes, iou_type="segm") if masks \
            else None

    @classmethod
    def from_model(cls, model: nn.Module, dl, classes: Sequence[str], *, device=None, losses: bool = True,
                   tta: bool = False) -> DetectionInterpretation:
        """Run `model` on `dl` once (detections, with `flip_tta` when `tta`; per-image losses unless
        ``losses=False``)."""
        preds, targets = detect(model, dl, device, tta=tta)
        return cls(dl.dataset, preds, targets, classes, image_losses(model, dl, device) if losses else None)

    def scores(self) -> dict:
        """``n_images``, ``map50``, ``map`` (COCO 0.50:0.95), ``per_class_ap`` and ``per_class_ap50``; with masks
        also ``mask_map50``, ``mask_map``, ``per_class_mask_ap`` and ``per_class_mask_ap50`` (COCO's segm AP)."""
        if self.mask_ap is None:
            return self.ap.scores()
        return {**self.ap.scores(), **self.mask_ap.scores(prefix="mask_")}

    def per_class(self, score_threshold: float = 0.5) -> pd.DataFrame:
        """One row per class: true boxes, predictions scoring at least `score_threshold`, AP50 and AP (and mask AP50
        and AP with masks)."""
        shown = {c: 0 for c in self.classes}
        for p in self.preds:
            for label in p["labels"][p["scores"] >= score_threshold].tolist():
                if 1 <= label <= len(self.classes):
                    shown[self.classes[label - 1]] += 1
        columns = {
            "true_boxes": [self.ap.n_true[c] for c in self.classes],
            f"predicted (score >= {score_threshold})": [shown[c] for c in self.classes],
            "ap50": [self.ap.per_class50.get(c, np.nan) for c in self.classes],
            "ap": [self.ap.per_class.get(c, np.nan) for c in self.classes],
        }
        if self.mask_ap is not None:
            columns["mask_ap50"] = [self.mask_ap.per_class50.get(c, np.nan) for c in self.classes]
            columns["mask_ap"] = [self.mask_ap.per_class.get(c, np.nan) for c in self.classes]
        return pd.DataFrame(columns, index=pd.Index(self.classes, name="class"))

    def top_losses(self, k: int | None = None) -> pd.DataFrame:
        """Images by decreasing loss: ``index`` (in the dataset), ``loss``, ``path``."""
        if self.losses is None:
            raise ValueError("This interpretation was computed without losses (losses=False).")
        order = np.argsort(-self.losses, kind="stable")[:k]
        paths = self.dataset.items["path"].to_numpy() if hasattr(self.dataset, "items") else [None] * len(order)
        return pd.DataFrame({"index": order, "loss": self.losses[order], "path": [paths[i] for i in order]})

    def plot_top_losses(self, k: int = 9, ncols: int = 3, score_threshold: float = 0.5) -> Figure:
        """The `k` images with the highest loss: true boxes (green), predictions scoring >= threshold (red), each with
        its mask (semi-transparent) for a Mask R-CNN."""
        table = self.top_losses(k)
        nrows = max(1, (len(table) + ncols - 1) // ncols)
        fig = Figure(figsize=(3.2 * ncols, 3.2 * nrows))
        for j, row in enumerate(table.itertuples()):
            ax = fig.add_subplot(nrows, ncols, j + 1)
            image, _ = self.dataset[int(row.index)]
            draw_boxes(ax, image, true=self.targets[row.index], pred=self.preds[row.index], classes=self.classes,
                       score_threshold=score_threshold, title=f"loss {row.loss:.3f}")
        fig.tight_layout()
        return fig

    def report_sections(self, top_k: int = 9, learn=None) -> list[ReportSection]:
        """This interpretation's sections of the HTML run report (`detection_sections`; `TaskInterpretation`).

        >>> [s.key for s in learn.interpret().report_sections(4)]  # doctest: +SKIP
        """
        from .report import detection_sections

        return detection_sections(self, top_k)

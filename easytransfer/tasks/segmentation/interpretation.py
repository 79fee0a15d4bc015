"""Interpretation of a segmentation model: predictions computed once, then every table and plot read from them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from ...evaluate.interpretation import ReportSection
from ...evaluate.metrics import pixel_confusion_matrix, segmentation_scores
from ..classification.interpretation import draw_matrix
from .data import denormalize, plot_overlays

__all__ = ["SegmentationInterpretation", "flip_averaged_logits", "image_losses"]


def image_losses(logits: torch.Tensor, targs: torch.Tensor, ignore_index: int | None) -> torch.Tensor:
    """Mean cross-entropy per image over its scored pixels (0 for an image with none)."""
    ignore = -100 if ignore_index is None else ignore_index
    pixel = F.cross_entropy(logits.float(), targs.long(), ignore_index=ignore, reduction="none")
    scored = (targs != ignore).flatten(1).sum(1).clamp(min=1)
    return pixel.flatten(1).sum(1) / scored


def flip_averaged_logits(model: torch.nn.Module, xb: torch.Tensor) -> torch.Tensor:
    """Test-time augmentation for masks: the log of the mean of the class probabilities of `xb` and of its
    left-right mirror (mirrored back, so every pixel keeps its place); usable wherever logits are.

    >>> model = torch.nn.Conv2d(3, 2, 1)
    >>> logits = flip_averaged_logits(model, torch.rand(1, 3, 4, 4))
    >>> tuple(logits.shape), bool(torch.allclose(logits.exp().sum(1), torch.ones(1, 4, 4)))
    ((1, 2, 4, 4), True)
    """
    probs = model(xb).float().softmax(1) + model(xb.flip(-1)).float().softmax(1).flip(-1)
    return (probs / 2).clamp_min(1e-12).log()


class SegmentationInterpretation:
    """Predictions of a segmentation model on one set of images with masks, kept as numpy arrays.

    Attributes:
        preds: (images, H, W) predicted class ids.
        targs: (images, H, W) true class ids.
        losses: mean cross-entropy per image.
        images: (images, H, W, 3) uint8 inputs as the model saw them (for the plots), or ``None``.
        classes: class names; ignore_index: the mask value that is not scored.
        items: the table of the images (``path``, ``mask``), when known.

    >>> interp = learn.interpret(); interp.per_class(); interp.plot_top_losses(4)  # doctest: +SKIP
    """

    def __init__(self, preds: np.ndarray, targs: np.ndarray, losses: np.ndarray, classes, *,
                 ignore_index: int | None = None, images: np.ndarray | None = None,
                 items: pd.DataFrame | None = None):
        self.preds, self.targs = np.asarray(preds), np.asarray(targs)
        self.losses = np.asarray(losses, dtype=np.float64)
        self.classes = [str(c) for c in classes]
        self.ignore_index = ignore_index
        self.images = images
        self.items = items
        self._cm = pixel_confusion_matrix(self.targs, self.preds, len(self.classes), ignore_index)

    @classmethod
    def from_learner(cls, learn, dl, tta: bool = False) -> SegmentationInterpretation:
        """Run `learn`'s model once over `dl` (a DataLoader of images and masks); `tta`: `flip_averaged_logits`."""
        recipe = learn.dls.recipe
        items = getattr(dl, "items", None)
        return cls.from_model(learn.model, dl, learn.dls.codes, mean=recipe.mean, std=recipe.std,
                              ignore_index=recipe.ignore_index, tta=tta,
                              items=items if isinstance(items, pd.DataFrame) else None)

    @classmethod
    def from_model(cls, model: torch.nn.Module, batches, classes, *, mean, std, ignore_index: int | None = None,
                   tta: bool = False, items: pd.DataFrame | None = None) -> SegmentationInterpretation:
        """Run `model` once over `batches` of ``(normalised images, masks)`` at one size."""
        preds, targs, losses, images = [], [], [], []
        was_training = model.training
        model.eval()
        try:
            with torch.inference_mode():
                for xb, yb in batches:
                    xb, yb = xb.as_subclass(torch.Tensor), yb.as_subclass(torch.Tensor)  # no fastai dispatch
                    logits = flip_averaged_logits(model, xb) if tta else model(xb).float()
                    losses.append(image_losses(logits, yb, ignore_index).cpu())
                    preds.append(logits.argmax(1).to(torch.uint8).cpu())
                    targs.append(yb.to(torch.int64).cpu())
                    images.append(denormalize(xb, mean, std))
        finally:
            model.train(was_training)
        return cls(torch.cat(preds).numpy(), torch.cat(targs).numpy(), torch.cat(losses).numpy(), classes,
                   ignore_index=ignore_index, images=np.concatenate(images), items=items)

    # ------------------------------------------------------------------------------------------------ numbers

    def confusion_matrix(self) -> np.ndarray:
        """Pixel counts, rows = true class, columns = predicted class (ignored pixels left out)."""
        return self._cm

    def scores(self) -> dict:
        """``miou``, ``pixel_accuracy``, ``per_class_iou``, ``dice``, ``per_class_dice``, ``loss``, ``n_images``:
        what ``evaluate`` returns. IoU and Dice are over all pixels of the set, not averaged per image."""
        return {"n_images": len(self.losses), "loss": float(self.losses.mean()) if len(self.losses) else float("nan"),
                **segmentation_scores(self._cm, self.classes)}

    def per_class(self) -> pd.DataFrame:
        """One row per class: IoU, Dice, precision, recall, true pixels and predicted pixels."""
        cm = self._cm.astype(np.float64)
        tp, support, predicted = np.diag(cm), cm.sum(1), cm.sum(0)
        scores = segmentation_scores(self._cm, self.classes)
        return pd.DataFrame({
            "iou": list(scores["per_class_iou"].values()),
            "dice": list(scores["per_class_dice"].values()),
            "precision": np.divide(tp, predicted, out=np.full(len(tp), np.nan), where=predicted > 0),
            "recall": np.divide(tp, support, out=np.full(len(tp), np.nan), where=support > 0),
            "pixels": support.astype(np.int64),
            "predicted_pixels": predicted.astype(np.int64),
        }, index=pd.Index(self.classes, name="class"))

    def image_iou(self) -> np.ndarray:
        """mIoU of each image on its own (classes absent from both its truth and prediction left out)."""
        n = len(self.classes)
        return np.array([segmentation_scores(pixel_confusion_matrix(t, p, n, self.ignore_index), self.classes)["miou"]
                         for t, p in zip(self.targs, self.preds)])

    def top_losses(self, k: int | None = None) -> pd.DataFrame:
        """The images with the highest loss first: index, loss, the image's own mIoU and path when known."""
        order = np.argsort(-self.losses, kind="stable")[: k if k is not None else len(self.losses)]
        ious = self.image_iou()
        table = pd.DataFrame({"index": order, "loss": self.losses[order], "miou": ious[order]})
        if self.items is not None and "path" in self.items:
            table["path"] = self.items["path"].to_numpy()[order]
        return table

    # ------------------------------------------------------------------------------------------------ plots

    def plot_top_losses(self, k: int = 4) -> Figure:
        """For the `k` images with the highest loss: the image, the prediction and the truth drawn over it."""
        if self.images is None:
            raise ValueError("These predictions were made without their images; use learn.interpret().")
        rows = []
        for r in self.top_losses(k).itertuples():
            img = self.images[r.index]
            rows.append([(img, None, f"#{r.index} loss {r.loss:.3f}"),
                         (img, self.preds[r.index].astype(np.int64), f"prediction (mIoU {r.miou:.2f})"),
                         (img, self.targs[r.index], "truth")])
        return plot_overlays(rows, len(self.classes), ignore_index=self.ignore_index)

    def plot_confusion_matrix(self, normalize: bool = True, ax=None, cmap: str = "Blues") -> Figure:
        """The pixel confusion matrix; normalised by row (recall per true class) by default."""
        if ax is None:
            fig = Figure(figsize=(1.2 + 0.8 * len(self.classes), 1 + 0.7 * len(self.classes)))
            ax = fig.add_subplot(1, 1, 1)
        else:
            fig = ax.figure
        cm = self._cm.astype(float)
        if normalize:
            cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
        draw_matrix(ax, cm, self.classes, self.classes, normalize, cmap)
        ax.set_title("pixels" + (" (share of each true class)" if normalize else ""))
        return fig

    def report_sections(self, top_k: int = 9, learn=None) -> list[ReportSection]:
        """This interpretation's sections of the HTML run report (`segmentation_sections`; `TaskInterpretation`).

        >>> [s.key for s in learn.interpret().report_sections(4)]  # doctest: +SKIP
        """
        from .report import segmentation_sections

        return segmentation_sections(self, top_k)

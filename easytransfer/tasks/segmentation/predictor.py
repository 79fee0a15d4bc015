"""The segmentation predictor: an exported segmentation model that turns an image into a mask of class ids."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from ...data.images import as_rgb
from ...deploy.bundle import SQUISH_RULE, BundleConfig
from ...deploy.predictor import Predictor, image_files, write_table
from ...devices import predict_batch_size
from ...progress import progress_bar
from .interpretation import SegmentationInterpretation
from .model import build_segmentation_model

__all__ = ["SegmentationPredictor", "load_segmentation_model"]


class SegmentationPredictor(Predictor):
    """A segmentation model with its classes and preprocessing; `predict` gives a mask of class ids.

    The image is resized whole to the training size (the model's resize filter), normalised, and the logits are
    resized back to the image's own size before the argmax, so the mask has the image's height and width.

    >>> predictor = load_model("runs/cracks")  # doctest: +SKIP
    >>> mask = predictor.predict("road.jpg"); mask.shape  # doctest: +SKIP
    (320, 480)
    """

    onnx_export = True  # logits (batch, classes, size, size): resize them to the image, then argmax

    @classmethod
    def build_model(cls, config: BundleConfig) -> nn.Module:
        """The segmentation model `config` describes (its decoder ``task_config.head``), untrained.

        >>> SegmentationPredictor.build_model(read_model_config("runs/cracks"))  # doctest: +SKIP
        """
        model, _ = build_segmentation_model(config.arch, len(config.classes), head=config.task_config.head,
                                            pretrained=False)
        return model

    @property
    def resize_rule(self) -> str:
        """The whole image squished to the training size, whatever the bundle says: the mask maps back onto every
        pixel of the image (bundles written before the rule was recorded say the classifier's crop)."""
        return SQUISH_RULE

    @property
    def codes(self) -> list[str]:
        """The class names by id (fastai's segmentation name for ``classes``)."""
        return self.vocab

    def predict_probabilities(self, images: Iterable) -> list[torch.Tensor]:
        """Class probabilities (classes, H, W) of each image, at the image's own size.

        >>> [p.shape for p in load_model("runs/cracks").predict_probabilities(["road.jpg"])]  # doctest: +SKIP
        [torch.Size([2, 320, 480])]
        """
        opened = [as_rgb(im) for im in images]
        logits = self._logits([self.preprocess_rgb(img) for img in opened])
        return [F.interpolate(lg[None], size=(img.height, img.width), mode="bilinear", align_corners=False)[0]
                .softmax(0) for lg, img in zip(logits, opened)]

    def predict(self, image, probabilities: bool = False):
        """The mask of class ids (H x W, the image's size, ``uint8`` when ids fit) of one image.

        Args:
            image: what `as_rgb` reads (a path, a PIL image, an HxWx3 / CxHxW array or tensor).
            probabilities: also return the (classes, H, W) probabilities: ``(mask, probs)``.

        Returns:
            The mask, or ``(mask, probs)``.

        >>> load_model("runs/cracks").predict("road.jpg").shape  # doctest: +SKIP
        (320, 480)
        """
        probs = self.predict_probabilities([image])[0]
        mask = probs.argmax(0).numpy().astype(np.uint8 if len(self.vocab) <= 256 else np.int64)
        return (mask, probs.numpy()) if probabilities else mask

    def predict_batch(self, images: Iterable) -> list[np.ndarray]:
        """Masks of a batch of images."""
        return [p.argmax(0).numpy().astype(np.uint8) for p in self.predict_probabilities(images)]

    def evaluate(self, images, masks=None, *, mask_fn=None, progress: bool = False) -> dict:
        """mIoU, pixel accuracy, per-class IoU and Dice of this model's masks against the true ones.

        Images are paired with masks and checked as for `SegmentationData.from_folders` (unusable pairs are left
        out, and counted in ``n_excluded``). Unlike `SegmentationLearner.evaluate` (training resolution), the
        scores are over every pixel at the images' own size: the masks `predict` gives. Pixels equal to the
        bundle's ``ignore_index`` are not scored.

        Args:
            images: a folder of images (or a list of files).
            masks: the folder of masks named like the images; or `mask_fn` (image path -> mask path or array).
            progress: show a progress bar.

        Returns:
            ``{"n_images", "n_excluded", "miou", "pixel_accuracy", "per_class_iou", "dice", "per_class_dice"}``.

        >>> load_model("runs/cracks").evaluate("test/images", "test/masks")["miou"]  # doctest: +SKIP
        0.71
        """
        from ...errors import DataError
        from ...evaluate.metrics import pixel_confusion_matrix, segmentation_scores
        from .data import labelled_mask_items, read_mask

        ignore_index = self.config.task_config.ignore_index
        kept, excluded = labelled_mask_items(images, masks, mask_fn=mask_fn, ignore_index=ignore_index)
        if kept.empty:
            raise DataError(f"No usable image with a mask in {str(images)!r} ({len(excluded)} left out: "
                            f"{excluded['reason'].iloc[0] if len(excluded) else 'no images'}).")
        n = len(self.vocab)
        cm = np.zeros((n, n), dtype=np.int64)
        rows = kept.itertuples()
        if progress:
            from fastprogress.fastprogress import progress_bar

            rows = progress_bar(list(rows))
        for row in rows:
            truth = read_mask(row.mask or mask_fn(row.path))
            scored = truth[truth != ignore_index] if ignore_index is not None else truth
            if scored.size and scored.max() >= n:
                raise DataError(f"The mask of {row.path!r} holds class id {int(scored.max())}, but the model knows "
                                f"{n} classes ({self.vocab}); is it the right model, or a value to ignore?")
            cm += pixel_confusion_matrix(truth, self.predict(row.path), n, ignore_index)
        return {"n_images": len(kept), "n_excluded": len(excluded), **segmentation_scores(cm, self.vocab)}

    def predict_folder(self, path: str | os.PathLike, out: str | os.PathLike, *, csv: str | os.PathLike | None = None,
                       progress: bool = False) -> pd.DataFrame:
        """Write one PNG of class ids per image under `path` to `out` (sub-folders kept, the image's size).

        An unreadable file is skipped and its error kept in the table, as the classification `predict_folder`.

        Args:
            path: a folder (searched recursively) or one image file.
            out: the folder for the masks (PNG, 8-bit; 16-bit above 256 classes).
            csv: also write the table to this CSV file.
            progress: show a progress bar.

        Returns:
            One row per file: ``path``, ``mask`` (the PNG written, ``""`` on error), ``error``.

        >>> predictor.predict_folder("incoming/", "masks/")  # doctest: +SKIP
        """
        root, out = Path(path), Path(out)
        rows = []
        for path in progress_bar(image_files(root), enabled=progress):
            try:
                mask = self.predict(path)
            except Exception as e:  # one unreadable file is reported, not fatal
                rows.append((str(path), "", f"{type(e).__name__}: {e}".splitlines()[0]))
                continue
            target = out / (path.relative_to(root) if root.is_dir() else Path(path.name)).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(mask if mask.dtype == np.uint8 else mask.astype(np.uint16)).save(target)  # >256: 16-bit
            rows.append((str(path), str(target), ""))
        return write_table(pd.DataFrame(rows, columns=["path", "mask", "error"]), csv)

    def interpret(self, images, masks=None, *, mask_fn=None, tta: bool = False, bs: int | None = None,
                  progress: bool = True) -> SegmentationInterpretation:
        """Predictions on labelled images, computed once, at the training resolution (as
        ``learn.interpret()``): ``scores()``, ``per_class()``, ``confusion_matrix()``, ``plot_top_losses()`` ...

        Images and masks are paired and checked as for `evaluate` (unusable pairs are left out); each image is
        resized as for `predict` and its mask to the same size (nearest neighbour).

        Args:
            images, masks, mask_fn: as for `evaluate`.
            tta: average each image's probabilities with those of its left-right mirror (`flip_averaged_logits`).
            bs: images per forward pass (default `predict_batch_size`).

        >>> load_model("runs/cracks").interpret("test/images", "test/masks").plot_top_losses(4)  # doctest: +SKIP
        """
        from ...errors import DataError
        from .data import labelled_mask_items

        pre, ignore_index = self.config.preprocessing, self.config.task_config.ignore_index
        kept, excluded = labelled_mask_items(images, masks, mask_fn=mask_fn, ignore_index=ignore_index)
        if kept.empty:
            raise DataError(f"No usable image with a mask in {str(images)!r} ({len(excluded)} left out: "
                            f"{excluded['reason'].iloc[0] if len(excluded) else 'no images'}).")
        bs = bs or predict_batch_size(self.device)
        starts = progress_bar(range(0, len(kept), bs), enabled=progress)
        batches = (self._labelled_batch(kept.iloc[i:i + bs], mask_fn, pre.size) for i in starts)
        return SegmentationInterpretation.from_model(self.model, batches, self.vocab, mean=pre.mean, std=pre.std,
                                                     ignore_index=ignore_index, tta=tta,
                                                     items=kept.reset_index(drop=True))

    def _labelled_batch(self, rows: pd.DataFrame, mask_fn, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised images and their masks (nearest-neighbour resized) at the training size, on the device."""
        from .data import read_mask

        xb = torch.stack([self.preprocess(path) for path in rows["path"]])
        masks = [torch.from_numpy(read_mask(m or mask_fn(p)).astype(np.int64)) for p, m in zip(rows["path"],
                                                                                             rows["mask"])]
        yb = torch.cat([F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0].long()
                        for m in masks])
        return (xb.to(self.device).contiguous(memory_format=torch.channels_last), yb.to(self.device))


def load_segmentation_model(path: str | os.PathLike, config: BundleConfig,
                            device: str | torch.device | None = None) -> SegmentationPredictor:
    """Rebuild an exported segmentation model (``SegmentationPredictor.from_bundle``; `load_model` does it too).

    >>> load_segmentation_model("runs/cracks", read_model_config("runs/cracks"))  # doctest: +SKIP
    """
    return SegmentationPredictor.from_bundle(path, config, device=device)

"""`DetectionPredictor`: an exported detector with its classes and input size, ready to find boxes on images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from PIL import Image, ImageDraw
from torch import nn

from ...data.images import as_rgb
from ...deploy.bundle import BundleConfig
from ...deploy.predictor import ExportNotSupportedError, Predictor, image_files, write_table
from ...progress import progress_bar
from .interpretation import DetectionInterpretation
from .learner import predict_boxes
from .model import build_detector

__all__ = ["BOX_COLUMNS", "DetectionPredictor", "load_detector"]

BOX_COLUMNS = ["path", "label", "score", "x1", "y1", "x2", "y2", "error"]  # `predict_folder`'s table


class DetectionPredictor(Predictor):
    """A trained detector from a bundle (`load_model` returns one for a detection bundle).

    Images are resized to the training ``size x size`` (as in training), the detector normalises them with the
    backbone's mean and std, and boxes come back in the pixels of the image as given. ``threshold`` is the lowest
    score of a box returned (also readable as ``score_threshold``).

    >>> predictor = load_model("runs/raccoon-detector")  # doctest: +SKIP
    >>> predictor.predict("photo.jpg")  # doctest: +SKIP
    [('raccoon', 0.97, (81.2, 23.0, 410.7, 355.1))]
    """

    normalizes = False  # the torchvision detector normalises inside the model
    channels_last = False
    onnx_export = False

    @classmethod
    def build_model(cls, config: BundleConfig) -> nn.Module:
        """The detector `config` describes (its `DetectionConfig`), without pre-trained weights.

        >>> DetectionPredictor.build_model(read_model_config("runs/raccoons"))  # doctest: +SKIP
        """
        model, *_ = build_detector(config.arch, len(config.classes), pretrained=False, config=config.task_config)
        return model

    @property
    def detection_config(self):
        """The bundle's `DetectionConfig` (``config.task_config``)."""
        return self.config.task_config

    @property
    def score_threshold(self) -> float:
        """The lowest score of a box `predict` returns (``threshold``)."""
        return self.threshold

    def check_exportable(self, kind: str = "ONNX") -> None:
        """Detectors are refused: their output is a variable number of boxes per image after NMS.

        >>> load_model("runs/raccoons").check_exportable("TorchScript")  # doctest: +SKIP
        Traceback (most recent call last):
        ExportNotSupportedError: TorchScript export of a detection model is not supported: ...
        """
        raise ExportNotSupportedError(
            f"{kind} export of a detection model is not supported: its output is a variable number of boxes per image "
            "after NMS, with image-dependent resizing. Deploy the bundle with load_model(path).predict(image) "
            "(easytransfer predict MODEL IMAGES --csv boxes.csv on the command line).")

    def predict(self, image, score_threshold: float | None = None) -> list[tuple[str, float, tuple]]:
        """Boxes on one image: ``[(label, score, (x1, y1, x2, y2)), ...]`` in the image's pixels.

        Args:
            image: what `as_rgb` reads (a path, a PIL image, an HxWx3 / CxHxW array or tensor).
            score_threshold: the lowest score kept (default ``threshold``).

        >>> load_model("runs/raccoons").predict("photo.jpg")  # doctest: +SKIP
        [('raccoon', 0.97, (81.2, 23.0, 410.7, 355.1))]
        """
        threshold = self.threshold if score_threshold is None else score_threshold
        return predict_boxes(self.model, as_rgb(image), self.detection_config, self.vocab, threshold, self.device,
                             self.config.preprocessing.interpolation)

    def predict_folder(self, path: str | os.PathLike, *, csv: str | os.PathLike | None = None,
                       out: str | os.PathLike | None = None, score_threshold: float | None = None,
                       progress: bool = False) -> pd.DataFrame:
        """Boxes on every image under `path` (recursively), one row per box; optionally the images with their boxes.

        A file where nothing was found has one row without a label; an unreadable one a row with its ``error``
        (the run goes on).

        Args:
            path: a folder (searched recursively) or one image file.
            csv: also write the table to this CSV file.
            out: also write each image with its boxes drawn (red, with label and score) to this folder, as PNG
                (sub-folders kept).
            score_threshold: the lowest score kept (default ``threshold``).
            progress: show a progress bar.

        Returns:
            `BOX_COLUMNS`: ``path``, ``label``, ``score``, ``x1``..``y2`` (the image's pixels), ``error``.

        >>> load_model("runs/raccoons").predict_folder("incoming/", out="drawn/")  # doctest: +SKIP
        """
        root = Path(path)
        rows = []
        for file in progress_bar(image_files(root), enabled=progress):
            try:
                image = as_rgb(file)
                found = self.predict(image, score_threshold)
            except Exception as e:  # one unreadable file is reported in its row, the run goes on
                rows.append([str(file), None, float("nan"), *[float("nan")] * 4,
                             f"{type(e).__name__}: {e}".splitlines()[0]])
                continue
            rows += [[str(file), label, score, *box, None] for label, score, box in found]
            if not found:
                rows.append([str(file), None, float("nan"), *[float("nan")] * 4, None])
            if out is not None:
                target = Path(out) / (file.relative_to(root) if root.is_dir() else Path(file.name)).with_suffix(".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                draw_found_boxes(image, found).save(target)
        return write_table(pd.DataFrame(rows, columns=BOX_COLUMNS), csv)

    def interpret(self, images: str | os.PathLike, annotations: str | os.PathLike, *, format: str | None = None,
                  names: Sequence[str] | None = None, losses: bool = True,
                  progress: bool = False) -> DetectionInterpretation:
        """Predictions on annotated images (every image: no split), computed once, as ``learn.interpret()`` gives.

        Args:
            images: folder of images.
            annotations: VOC ``.xml`` folder, COCO ``.json`` file or YOLO ``.txt`` folder
                (`DetectionData.from_annotations`).
            format: ``"voc"``, ``"coco"`` or ``"yolo"``; default: what `annotations` holds.
            names: YOLO class names in id order; default the model's classes.
            losses: also compute each image's loss (for ``top_losses`` / ``plot_top_losses``; a second pass).
            progress: accepted for the predictors' shared signature; detection shows no bar.

        Returns:
            The `DetectionInterpretation`: ``scores()``, ``per_class()``, ``top_losses()``, ``plot_top_losses()``.

        >>> load_model("runs/raccoons").interpret("test/images", "test/annotations").per_class()  # doctest: +SKIP
        """
        from .data import DetectionData, annotation_format

        format = format or annotation_format(annotations)
        if format == "yolo" and not names:
            names = self.vocab  # the ids of the labels are the model's class ids
        data = DetectionData.from_annotations(images, annotations, format=format, names=names, valid_pct=0,
                                              classes=self.vocab, size=self.detection_config.size, aug="none")
        data = DetectionData.from_recipe(replace(data.recipe, interpolation=self.config.preprocessing.interpolation))
        dl = data.items_dl(data.recipe.items)
        return DetectionInterpretation.from_model(self.model, dl, self.vocab, device=self.device, losses=losses)

    def evaluate(self, images: str | os.PathLike, annotations: str | os.PathLike, *, format: str | None = None,
                 names: Sequence[str] | None = None, progress: bool = False) -> dict:
        """COCO box AP of this detector on annotated images (every image: no split), as `DetectionLearner.evaluate`.

        Args:
            images, annotations, format, names: as for `interpret` (no losses are computed).

        Returns:
            ``{"n_images", "map50", "map", "per_class_ap", "per_class_ap50"}``.

        >>> load_model("runs/raccoons").evaluate("test/images", "test/annotations")["map50"]  # doctest: +SKIP
        0.81
        """
        return self.interpret(images, annotations, format=format, names=names, losses=False,
                              progress=progress).scores()


def draw_found_boxes(image: Image.Image, found: Sequence[tuple[str, float, tuple]]) -> Image.Image:
    """A copy of `image` with `found` boxes (`DetectionPredictor.predict`'s list) drawn in red with label and score.

    >>> draw_found_boxes(Image.new("RGB", (8, 8)), [("cat", 0.9, (1, 1, 6, 6))]).getpixel((1, 3))
    (255, 0, 0)
    """
    drawn = image.copy()
    draw = ImageDraw.Draw(drawn)
    for label, score, (x1, y1, x2, y2) in found:
        draw.rectangle((x1, y1, x2, y2), outline=(255, 0, 0), width=max(1, round(min(drawn.size) / 200)))
        draw.text((x1 + 2, y1 + 1), f"{label} {score:.2f}", fill=(255, 0, 0))
    return drawn


def load_detector(path: str | os.PathLike, config: BundleConfig, *, threshold: float = 0.5,
                  device: str | torch.device | None = None) -> DetectionPredictor:
    """Rebuild the detector of bundle `path` (``DetectionPredictor.from_bundle``; `load_model` does it too).

    >>> load_detector("runs/raccoons", read_model_config("runs/raccoons"))  # doctest: +SKIP
    """
    return DetectionPredictor.from_bundle(path, config, threshold=threshold, device=device)

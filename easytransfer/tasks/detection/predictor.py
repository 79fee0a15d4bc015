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
from ...deploy.predictor import Predictor, image_files, write_table
from ...progress import progress_bar
from .export import DetectorForward, detector_forward, export_detector_onnx, export_detector_torchscript
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
    _folder_forward: DetectorForward | None = None  # the detector in ONNX Runtime, once a large pass made it

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

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Write the detector as ONNX (`export_detector_onnx`): one ``(1, 3, size, size)`` image in [0, 1] in;
        ``boxes``, ``scores``, ``labels`` (and a Mask R-CNN's ``masks``) out, in the input's pixels.

        >>> load_model("runs/raccoons").export_onnx("runs/raccoons/model.onnx")  # doctest: +SKIP
        """
        return export_detector_onnx(self.model, path, self.detection_config.size)

    def export_torchscript(self, path: str | os.PathLike) -> Path:
        """Write the detector as a traced TorchScript file taking and giving what the ONNX file does
        (`export_detector_torchscript`).

        >>> load_model("runs/raccoons").export_torchscript("runs/raccoons/model.pt")  # doctest: +SKIP
        """
        return export_detector_torchscript(self.model, path, self.detection_config.size)

    def _forward(self, images: int) -> DetectorForward | None:
        """For a pass over `images` images on the CPU: the detector in ONNX Runtime where it gives the same boxes
        (`detector_forward`), exported on the first such pass and kept; ``None`` (PyTorch) elsewhere."""
        if self.device.type != "cpu":
            return None
        forward = detector_forward(self.model, images=images)
        if forward.runtime == "torch":
            return None
        if self._folder_forward is None:
            self._folder_forward = forward
        return self._folder_forward

    def predict(self, image, score_threshold: float | None = None, *,
                tta: bool = False) -> list[tuple[str, float, tuple]]:
        """Boxes on one image: ``[(label, score, (x1, y1, x2, y2)), ...]`` in the image's pixels; a Mask R-CNN's
        are ``(label, score, box, mask)`` with `mask` a boolean array of the image's height and width.

        Args:
            image: what `as_rgb` reads (a path, a PIL image, an HxWx3 / CxHxW array or tensor).
            score_threshold: the lowest score kept (default ``threshold``).
            tta: also detect on the horizontal flip and merge the two views' boxes per class (`flip_tta`: weighted
                box fusion; a box only one view finds keeps half its score).

        >>> load_model("runs/raccoons").predict("photo.jpg", tta=True)  # doctest: +SKIP
        [('raccoon', 0.95, (80.7, 23.4, 411.0, 354.8))]
        """
        return self._boxes(as_rgb(image), score_threshold, tta)

    def _boxes(self, image: Image.Image, score_threshold: float | None, tta: bool,
               forward: DetectorForward | None = None) -> list[tuple]:
        """`predict` of an RGB image, the detector run by `forward` when given (ONNX Runtime: `_forward`)."""
        threshold = self.threshold if score_threshold is None else score_threshold
        return predict_boxes(self.model, image, self.detection_config, self.vocab, threshold, self.device,
                             self.config.preprocessing.interpolation, tta=tta, forward=forward)

    def predict_folder(self, path: str | os.PathLike, *, csv: str | os.PathLike | None = None,
                       out: str | os.PathLike | None = None, score_threshold: float | None = None,
                       progress: bool = True, tta: bool = False) -> pd.DataFrame:
        """Boxes on every image under `path` (recursively), one row per box; optionally the images with their boxes.

        A file where nothing was found has one row without a label; an unreadable one a row with its ``error``
        (the run goes on).

        Args:
            path: a folder (searched recursively) or one image file.
            csv: also write the table to this CSV file.
            out: also write each image with its boxes drawn (red, with label and score) to this folder, as PNG
                (sub-folders kept).
            score_threshold: the lowest score kept (default ``threshold``).
            progress: show a progress bar (in a notebook, or on standard error in a terminal; `progress_bar`).
            tta: detect on each image and its horizontal flip, the boxes merged (as `predict`).

        On the CPU, a folder of `DETECTOR_ONNX_MIN_IMAGES` images or more runs in ONNX Runtime when it is installed
        and gives PyTorch's boxes on the first image (`detector_forward`; ``EASYTRANSFER_RUNTIME=torch`` opts out).

        Returns:
            `BOX_COLUMNS`: ``path``, ``label``, ``score``, ``x1``..``y2`` (the image's pixels), ``error``.

        >>> load_model("runs/raccoons").predict_folder("incoming/", out="drawn/")  # doctest: +SKIP
        """
        root = Path(path)
        rows = []
        files = image_files(root)
        forward = self._forward(len(files))
        for file in progress_bar(files, enabled=progress and bool(files)):
            try:
                image = as_rgb(file)
                found = self._boxes(image, score_threshold, tta, forward)
            except Exception as e:  # one unreadable file is reported in its row, the run goes on
                rows.append([str(file), None, float("nan"), *[float("nan")] * 4,
                             f"{type(e).__name__}: {e}".splitlines()[0]])
                continue
            rows += [[str(file), label, score, *box, None] for label, score, box, *_ in found]
            if not found:
                rows.append([str(file), None, float("nan"), *[float("nan")] * 4, None])
            if out is not None:
                target = Path(out) / (file.relative_to(root) if root.is_dir() else Path(file.name)).with_suffix(".png")
                target.parent.mkdir(parents=True, exist_ok=True)
                draw_found_boxes(image, found).save(target)
        return write_table(pd.DataFrame(rows, columns=BOX_COLUMNS), csv)

    def interpret(self, images: str | os.PathLike, annotations: str | os.PathLike, *, format: str | None = None,
                  names: Sequence[str] | None = None, losses: bool = True, progress: bool = False,
                  tta: bool = False) -> DetectionInterpretation:
        """Predictions on annotated images (every image: no split), computed once, as ``learn.interpret()`` gives.

        Args:
            images: folder of images.
            annotations: VOC ``.xml`` folder, COCO ``.json`` file or YOLO ``.txt`` folder
                (`DetectionData.from_annotations`).
            format: ``"voc"``, ``"coco"`` or ``"yolo"``; default: what `annotations` holds.
            names: YOLO class names in id order; default the model's classes.
            losses: also compute each image's loss (for ``top_losses`` / ``plot_top_losses``; a second pass).
            progress: accepted for the predictors' shared signature; detection shows no bar.
            tta: detect on each image and its horizontal flip, the boxes merged (`flip_tta`), as
                ``learn.interpret(tta=True)``.

        Returns:
            The `DetectionInterpretation`: ``scores()``, ``per_class()``, ``top_losses()``, ``plot_top_losses()``.

        >>> load_model("runs/raccoons").interpret("test/images", "test/annotations").per_class()  # doctest: +SKIP
        """
        from .data import DetectionData, annotation_format

        format = format or annotation_format(annotations)
        if format == "yolo" and not names:
            names = self.vocab  # the ids of the labels are the model's class ids
        masks = self.detection_config.instance_masks and format != "voc"  # a Mask R-CNN's mask AP too
        data = DetectionData.from_annotations(images, annotations, format=format, names=names, valid_pct=0,
                                              masks=masks, classes=self.vocab, size=self.detection_config.size,
                                              aug="none")
        data = DetectionData.from_recipe(replace(data.recipe, interpolation=self.config.preprocessing.interpolation))
        dl = data.items_dl(data.recipe.items)
        return DetectionInterpretation.from_model(self.model, dl, self.vocab, device=self.device, losses=losses,
                                                  tta=tta)

    def evaluate(self, images: str | os.PathLike, annotations: str | os.PathLike, *, format: str | None = None,
                 names: Sequence[str] | None = None, progress: bool = False, tta: bool = False) -> dict:
        """COCO box AP of this detector on annotated images (every image: no split), as `DetectionLearner.evaluate`.

        Args:
            images, annotations, format, names, tta: as for `interpret` (no losses are computed).

        Returns:
            ``{"n_images", "map50", "map", "per_class_ap", "per_class_ap50"}``.

        >>> load_model("runs/raccoons").evaluate("test/images", "test/annotations")["map50"]  # doctest: +SKIP
        0.81
        """
        return self.interpret(images, annotations, format=format, names=names, losses=False,
                              progress=progress, tta=tta).scores()


def draw_found_boxes(image: Image.Image, found: Sequence[tuple]) -> Image.Image:
    """A copy of `image` with `found` boxes (`DetectionPredictor.predict`'s list) drawn in red with label and score,
    and a Mask R-CNN's masks tinted red.

    >>> draw_found_boxes(Image.new("RGB", (8, 8)), [("cat", 0.9, (1, 1, 6, 6))]).getpixel((1, 3))
    (255, 0, 0)
    """
    drawn = image.copy()
    tinted = Image.blend(drawn, Image.new("RGB", drawn.size, (255, 0, 0)), 0.4)
    for *_, mask in (f for f in found if len(f) > 3):
        drawn = Image.composite(tinted, drawn, Image.fromarray(mask.astype("uint8") * 255))
    draw = ImageDraw.Draw(drawn)
    for label, score, (x1, y1, x2, y2), *_ in found:
        draw.rectangle((x1, y1, x2, y2), outline=(255, 0, 0), width=max(1, round(min(drawn.size) / 200)))
        draw.text((x1 + 2, y1 + 1), f"{label} {score:.2f}", fill=(255, 0, 0))
    return drawn


def load_detector(path: str | os.PathLike, config: BundleConfig, *, threshold: float = 0.5,
                  device: str | torch.device | None = None) -> DetectionPredictor:
    """Rebuild the detector of bundle `path` (``DetectionPredictor.from_bundle``; `load_model` does it too).

    >>> load_detector("runs/raccoons", read_model_config("runs/raccoons"))  # doctest: +SKIP
    """
    return DetectionPredictor.from_bundle(path, config, threshold=threshold, device=device)

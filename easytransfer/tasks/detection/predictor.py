"""`DetectionPredictor`: an exported detector with its classes and input size, ready to find boxes on images."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from ...deploy.bundle import WEIGHTS_NAME, BundleConfig, read_bundle_weights, write_bundle
from ...devices import resolve_device
from ...models.weights import load_state_dict_strict
from .learner import predict_boxes
from .model import build_detector

__all__ = ["DetectionPredictor", "load_detector"]


class DetectionPredictor:
    """A trained detector from a bundle (`load_model` returns one for a detection bundle).

    Images are resized to the training ``size x size`` (as in training), the detector normalises them with the
    backbone's mean and std, and boxes come back in the pixels of the image as given.

    >>> predictor = load_model("runs/raccoon-detector")  # doctest: +SKIP
    >>> predictor.predict("photo.jpg")  # doctest: +SKIP
    [('raccoon', 0.97, (81.2, 23.0, 410.7, 355.1))]
    """

    def __init__(self, model: nn.Module, config: BundleConfig, *, score_threshold: float = 0.5,
                 device: str | torch.device | None = None):
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.config = config
        self.detection_config = config.task_config
        self.vocab = list(config.classes)
        self.score_threshold = score_threshold

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, config: BundleConfig, *, threshold: float = 0.5,
                    device: str | torch.device | None = None) -> DetectionPredictor:
        """The detector of bundle folder `path` (`load_model` calls it); `threshold`: the lowest box score."""
        return load_detector(path, config, threshold=threshold, device=device)

    def predict(self, image, score_threshold: float | None = None) -> list[tuple[str, float, tuple]]:
        """Boxes on one image (path, PIL image or HxWx3 uint8 array): ``[(label, score, (x1, y1, x2, y2)), ...]``."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        return predict_boxes(self.model, image, self.detection_config, self.vocab, threshold, self.device,
                             self.config.preprocessing.interpolation)

    def evaluate(self, images: str | os.PathLike, annotations: str | os.PathLike, *, format: str | None = None,
                 names: Sequence[str] | None = None) -> dict:
        """COCO box AP of this detector on annotated images (every image: no split), as `DetectionLearner.evaluate`.

        Args:
            images: folder of images.
            annotations: VOC ``.xml`` folder, COCO ``.json`` file or YOLO ``.txt`` folder
                (`DetectionData.from_annotations`).
            format: ``"voc"``, ``"coco"`` or ``"yolo"``; default: what `annotations` holds.
            names: YOLO class names in id order; default the model's classes.

        Returns:
            ``{"n_images", "map50", "map", "per_class_ap", "per_class_ap50"}``.

        >>> load_model("runs/raccoons").evaluate("test/images", "test/annotations")["map50"]  # doctest: +SKIP
        0.81
        """
        from .data import DetectionData, annotation_format
        from .interpretation import DetectionInterpretation

        format = format or annotation_format(annotations)
        if format == "yolo" and not names:
            names = self.vocab  # the ids of the labels are the model's class ids
        data = DetectionData.from_annotations(images, annotations, format=format, names=names, valid_pct=0,
                                              classes=self.vocab, size=self.detection_config.size, aug="none")
        data = DetectionData.from_recipe(replace(data.recipe, interpolation=self.config.preprocessing.interpolation))
        dl = data.items_dl(data.recipe.items)
        return DetectionInterpretation.from_model(self.model, dl, self.vocab, device=self.device,
                                                  losses=False).scores()

    def export(self, path: str | os.PathLike) -> Path:
        """Write the bundle again (weights + JSON) to folder `path`."""
        return write_bundle(path, self.model, self.config)


def load_detector(path: str | os.PathLike, config: BundleConfig, *, threshold: float = 0.5,
                  device: str | torch.device | None = None) -> DetectionPredictor:
    """Rebuild the detector of bundle `path` (its `DetectionConfig`, no pre-trained weights) and load it strictly."""
    model, *_ = build_detector(config.arch, len(config.classes), pretrained=False,
                               config=config.task_config)
    load_state_dict_strict(model, read_bundle_weights(path, config), where=repr(str(Path(path) / WEIGHTS_NAME)),
                           arch=config.arch)
    return DetectionPredictor(model, config, score_threshold=threshold, device=device)

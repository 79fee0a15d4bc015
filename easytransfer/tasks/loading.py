"""`load_model`: a bundle folder back to its task's predictor, by one registry lookup.

The bundle's ``task`` names the registered task; its ``task_config`` is read into that task's typed config, and
the task's predictor class rebuilds the model (``pretrained=False``, the bundle's weights loaded strictly).
"""

from __future__ import annotations

import os

import torch

from ..deploy.bundle import BundleConfig, read_bundle_config
from ..errors import EasyTransferError
from .registry import get_task

__all__ = ["load_model", "parse_task_config", "read_model_config"]


def parse_task_config(task: str, data: dict):
    """The registered `task`'s typed config from a bundle's ``task_config`` object.

    >>> parse_task_config("segmentation", {"head": "fpn", "ignore_index": 255})
    SegmentationConfig(head='fpn', ignore_index=255)
    """
    try:
        registered = get_task(task)
    except ValueError as e:
        raise EasyTransferError(f"The bundle's task {task!r} is not one this easytransfer knows ({e}); upgrade "
                                "easytransfer or install the package that registers that task.") from None
    return registered.config_from_dict(data)


def read_model_config(path: str | os.PathLike) -> BundleConfig:
    """The `BundleConfig` of bundle folder `path`, its ``task_config`` typed by the task's config class."""
    return read_bundle_config(path, parse_task_config)


def load_model(path: str | os.PathLike, threshold: float = 0.5, device: str | torch.device | None = None):
    """Rebuild an exported model (``learn.export(path)``) as its task's predictor; nothing is unpickled.

    A classifier gives a `ClassifierPredictor` (``predict(image) -> (label, probability, probs)``), a segmentation
    model a `SegmentationPredictor` (a mask of class ids), a detector a `DetectionPredictor` (boxes): the bundle's
    ``task`` names the registered task, whose predictor class (all three extend the `Predictor` base, with the
    same ``predict``, ``predict_folder``, ``interpret``, ``evaluate`` and ``export``) rebuilds it. The
    architecture is built with ``pretrained=False`` and the bundle's safetensors weights are loaded strictly: a
    missing, unexpected or differently shaped tensor is a `WeightsMismatchError`.

    Args:
        path: the bundle folder.
        threshold: multi-label models: the probability above which a label is predicted; detectors: the
            score from which a box is returned.
        device: where the model runs (``None``: CUDA when available, else the CPU); probabilities come back
            on the CPU.

    >>> predictor = load_model("runs/textile-model"); predictor.predict("photo.jpg")  # doctest: +SKIP
    """
    config = read_model_config(path)
    return get_task(config.task).predictor_class.from_bundle(path, config, threshold=threshold, device=device)

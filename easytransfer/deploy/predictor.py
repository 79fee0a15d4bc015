"""The predictor base every task's predictor extends: a bundle's model, device, preprocessing and classes.

`Predictor` knows nothing of any task. It rebuilds the model of a bundle folder (the task's own builder,
`Predictor.build_model`, then one strict load of the bundle's weights: `from_bundle`), turns any image into the
model's input (`as_rgb`, then the resize rule and the mean and std of ``config.preprocessing``), writes the
bundle again (`export`), and lists the image files of a folder. Each task's predictor (the classifier's
``ClassifierPredictor``, ``SegmentationPredictor``, ``DetectionPredictor``, under ``easytransfer/tasks/``) adds
``predict``, ``predict_folder`` and ``interpret`` with the same names and shapes; `evaluate` is the scores of
`interpret`. `load_model` (``easytransfer.tasks.loading``) picks the task's class from the bundle's ``task``.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from fastai.vision.augment import Resize, ResizeMethod
from fastai.vision.core import PILImage
from PIL import Image
from torch import nn

from ..data.images import as_rgb, resample_filter
from ..data.sources import candidate_files
from ..devices import resolve_device
from ..errors import EasyTransferError
from ..models.weights import load_state_dict_strict
from ..runtime import CpuForward, cpu_forward
from .bundle import RESIZE_RULE, WEIGHTS_NAME, BundleConfig, read_bundle_weights, write_bundle

__all__ = ["ExportNotSupportedError", "Predictor", "image_files", "resize_transform", "write_table"]


class ExportNotSupportedError(EasyTransferError):
    """A model whose task cannot be written as ONNX or TorchScript (the task's predictor says why)."""


def resize_transform(rule: str, size: int, interpolation: str) -> Resize:
    """fastai's validation ``Resize`` for a bundle's resize `rule`: the shorter side to `size` and a centre crop
    (`RESIZE_RULE`), else the whole image squished to ``size x size`` (segmentation, detection).

    Args:
        rule: ``config.preprocessing.resize``.
        size: the side in pixels; interpolation: the resize filter's name (``"bicubic"`` ...).

    Returns:
        A fastai ``Resize`` to call with ``split_idx=1`` (validation: no random crop).

    >>> resize_transform(RESIZE_RULE, 224, "bicubic").method
    'crop'
    """
    method = ResizeMethod.Crop if rule == RESIZE_RULE else ResizeMethod.Squish
    return Resize(size, method=method, resamples=(resample_filter(interpolation), 0))


def image_files(path: str | os.PathLike) -> list[Path]:
    """The image files `path` names: itself when it is a file, else every candidate file under it (recursively).

    >>> image_files(__file__)[0].name
    'predictor.py'
    """
    root = Path(path)
    return [root] if root.is_file() else list(candidate_files(root))  # a missing folder: candidate_files' DataError


def write_table(table: pd.DataFrame, csv: str | os.PathLike | None) -> pd.DataFrame:
    """Write `table` to the CSV file `csv` (parent folders created) when one is given; returns the table.

    >>> write_table(pd.DataFrame({"path": ["a.jpg"]}), None).shape
    (1, 1)
    """
    if csv is not None:
        Path(csv).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(csv, index=False)
    return table


class Predictor(ABC):
    """A trained model with its classes and preprocessing, ready to predict: the base of every task's predictor.

    The preprocessing is the learner's validation pipeline, read from ``config.preprocessing``: fastai's
    ``Resize`` by the bundle's resize rule (centre crop, or the whole image squished; the model's resize filter),
    then scaling to [0, 1] and, unless the model normalises inside (`normalizes` false: a detector), the
    model's mean and std.

    Attributes:
        model, config, device: the model (in eval mode, on `device`) and its `BundleConfig`.
        classes (also ``vocab``): the class names in output order.
        threshold: the task's decision threshold (multi-label probability, box score; unused by segmentation).
        onnx_export: whether `export_onnx` / `export_torchscript` can write this model (`check_exportable`) and a
            large CPU pass may run it in ONNX Runtime (`easytransfer.runtime.cpu_forward`).

    >>> predictor = load_model("runs/textile-model")  # doctest: +SKIP
    >>> predictor.classes, predictor.predict("photo.jpg")  # doctest: +SKIP
    """

    normalizes: ClassVar[bool] = True
    channels_last: ClassVar[bool] = True
    onnx_export: ClassVar[bool] = True

    def __init__(self, model: nn.Module, config: BundleConfig, *, threshold: float = 0.5,
                 device: str | torch.device | None = None):
        self.device = resolve_device(device)
        model = model.eval().to(self.device)
        self.model = model.to(memory_format=torch.channels_last) if self.channels_last else model
        self.config = config
        self.vocab = list(config.classes)
        self.threshold = threshold
        self._runtime_forward: CpuForward | None = None  # the model in ONNX Runtime, once a large pass made it
        pre = config.preprocessing
        self._resize = resize_transform(self.resize_rule, pre.size, pre.interpolation)
        self._mean = torch.tensor(pre.mean, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(pre.std, dtype=torch.float32).view(3, 1, 1)

    # ------------------------------------------------------------------------------------------------ building

    @classmethod
    @abstractmethod
    def build_model(cls, config: BundleConfig) -> nn.Module:
        """The task's untrained model for `config` (``pretrained=False``); `from_bundle` loads the weights into it."""

    @classmethod
    def from_bundle(cls, path: str | os.PathLike, config: BundleConfig, *, threshold: float = 0.5,
                    device: str | torch.device | None = None) -> Predictor:
        """The predictor of bundle folder `path` whose `config` was read (`load_model` calls it).

        The model is built by the task's `build_model` and the bundle's weights are loaded strictly: a missing,
        unexpected or differently shaped tensor is a `WeightsMismatchError`.

        Args:
            path: the bundle folder; config: its `BundleConfig` (``read_model_config(path)``).
            threshold: the task's decision threshold (see the class); device: where the model runs.

        Returns:
            An instance of the class it is called on.

        >>> predictor = ClassifierPredictor.from_bundle("runs/m", read_model_config("runs/m"))  # doctest: +SKIP
        """
        model = cls.build_model(config)
        load_state_dict_strict(model, read_bundle_weights(path, config), where=repr(str(Path(path) / WEIGHTS_NAME)),
                               arch=config.arch)
        return cls(model, config, threshold=threshold, device=device)

    # ------------------------------------------------------------------------------------------------ properties

    @property
    def classes(self) -> list[str]:
        """The class names in the model's output order (the same list as ``vocab``)."""
        return self.vocab

    @property
    def resize_rule(self) -> str:
        """How an image is resized to the model's input: the bundle's ``preprocessing.resize``."""
        return self.config.preprocessing.resize

    # ------------------------------------------------------------------------------------------------ input

    def preprocess(self, image) -> torch.Tensor:
        """One image as the model's (3, size, size) input tensor.

        Args:
            image: anything `as_rgb` reads: a path, a PIL image of any mode, an HxWx3 / HxW / CxHxW array or
                tensor (integers in 0..255 or floats in [0, 1]).

        Returns:
            A float tensor, resized by the bundle's rule, in [0, 1] and normalised by the mean and std unless the
            model normalises itself.

        >>> load_model("runs/textile-model").preprocess("photo.jpg").shape  # doctest: +SKIP
        torch.Size([3, 224, 224])
        """
        return self.preprocess_rgb(as_rgb(image))

    def preprocess_rgb(self, img: Image.Image) -> torch.Tensor:
        """`preprocess` of an image that is already upright RGB (`as_rgb`'s result)."""
        img = self._resize(PILImage(img), split_idx=1)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float().div_(255)
        return (x - self._mean) / self._std if self.normalizes else x

    def _logits(self, tensors, forward: CpuForward | None = None) -> torch.Tensor:
        """The model's outputs (on the CPU) for preprocessed image tensors, through `forward` when given."""
        x = torch.stack(list(tensors)).to(self.device).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return (forward or self.model)(x).float().cpu()

    def _pass_forward(self, images: int) -> CpuForward | None:
        """For a pass over `images` images on the CPU: the model in ONNX Runtime where it gives the same outputs
        (`easytransfer.runtime.cpu_forward`), exported on the first such pass and reused by the later ones (a
        predictor's weights do not change); ``None`` (PyTorch) elsewhere."""
        if self.device.type != "cpu" or not self.onnx_export:
            return None
        forward = cpu_forward(self.model, images=images)
        if forward.runtime == "torch":  # few images, no ONNX Runtime, or opted out: nothing to export
            return forward
        if self._runtime_forward is None:
            self._runtime_forward = forward
        return self._runtime_forward

    # ------------------------------------------------------------------------------------------------ the task's

    @abstractmethod
    def predict(self, image, **options) -> Any:
        """The task's prediction for one image (a label, a mask, boxes)."""

    @abstractmethod
    def predict_folder(self, path: str | os.PathLike, **options) -> pd.DataFrame:
        """Predict every image under `path` (recursively); one table, unreadable files reported in an ``error``
        column."""

    @abstractmethod
    def interpret(self, data, *args, progress: bool = True, **options):
        """Predictions on labelled images, computed once: the task's interpretation (`TaskInterpretation`)."""

    def evaluate(self, data, *args, progress: bool = True, **options) -> dict:
        """The task's scores on labelled images: ``interpret(...).scores()``, the dict ``learn.evaluate`` gives.

        Args:
            data, args, options: what the task's `interpret` takes (a folder of class sub-folders; images and
                masks; images and annotations).
            progress: show a progress bar.

        >>> load_model("runs/textile-model").evaluate("data/test")  # doctest: +SKIP
        {'n_images': 90, 'loss': 0.41, 'accuracy': 0.87, 'macro_f1': 0.86, 'weighted_f1': 0.86}
        """
        return self.interpret(data, *args, progress=progress, **options).scores()

    # ------------------------------------------------------------------------------------------------ output

    def check_exportable(self, kind: str = "ONNX") -> None:
        """Raise `ExportNotSupportedError` when this task's model cannot be written as `kind` (ONNX, TorchScript).

        >>> load_model("runs/textile-model").check_exportable("TorchScript")  # doctest: +SKIP
        """
        if not self.onnx_export:
            raise ExportNotSupportedError(f"{kind} export of a {self.config.task} model is not supported; serve the "
                                          "bundle with load_model(path).predict(image).")

    def export_onnx(self, path: str | os.PathLike) -> Path:
        """Write the model as an ONNX file at the bundle's size (`easytransfer.deploy.convert.export_onnx`: logits
        out, normalised ``(batch, 3, size, size)`` in); a task whose model gives more than one tensor writes its own.

        >>> load_model("runs/textile-model").export_onnx("runs/textile-model/model.onnx")  # doctest: +SKIP
        """
        from .convert import export_onnx

        self.check_exportable("ONNX")
        return export_onnx(self.model, path, self.config.preprocessing.size)

    def export_torchscript(self, path: str | os.PathLike) -> Path:
        """Write the model as a traced TorchScript file at the bundle's size (`easytransfer.deploy.convert`).

        >>> load_model("runs/textile-model").export_torchscript("runs/textile-model/model.pt")  # doctest: +SKIP
        """
        from .convert import export_torchscript

        self.check_exportable("TorchScript")
        return export_torchscript(self.model, path, self.config.preprocessing.size)

    def export(self, path: str | os.PathLike) -> Path:
        """Write this predictor's model as a bundle folder (safetensors + JSON) that `load_model` reads.

        Args:
            path: the bundle folder (created or replaced).

        Returns:
            The folder.

        >>> load_model("runs/textile-model").export("runs/copy")  # doctest: +SKIP
        """
        return write_bundle(path, self.model, self.config)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(arch={self.config.arch!r}, task={self.config.task!r}, "
                f"classes={_short(self.vocab)}, device={str(self.device)!r})")


def _short(names: Sequence[str], shown: int = 6) -> str:
    return repr(list(names)) if len(names) <= shown else repr(list(names[:shown]))[:-1] + ", ...]"

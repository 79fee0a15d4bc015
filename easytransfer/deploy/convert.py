"""A trained model as ONNX or TorchScript, files that run without easytransfer.

These functions take any module with one image-batch input and one tensor output; whether a task's model is one
is its predictor's to say (``predictor.check_exportable("ONNX")``: a detector, whose output is a variable number
of boxes, refuses).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from ..files import atomic_write

__all__ = ["export_onnx", "export_torchscript"]


def _example_input(size: int) -> torch.Tensor:
    return torch.zeros(1, 3, size, size)


def export_onnx(model: nn.Module, path: str | os.PathLike, size: int, opset: int = 18) -> Path:
    """Write `model` (logits out, input ``(batch, 3, size, size)`` normalised) as ONNX with a dynamic batch axis.

    The file runs in onnxruntime without easytransfer or PyTorch; the preprocessing (resize, mean, std) is in
    the bundle's ``easytransfer.json``. A classifier's ``logits`` are ``(batch, classes)``; a segmentation
    model's are ``(batch, classes, size, size)`` (resize them to the image's size, then argmax over classes, as
    `SegmentationPredictor` does). Check a loaded model first with ``predictor.check_exportable("ONNX")``.

    >>> export_onnx(learn.model, "model.onnx", size=224)  # doctest: +SKIP
    """
    try:
        import onnx  # noqa: F401  (torch's exporter needs it)
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'easytransfer[onnx]'") from None
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    batch = torch.export.Dim("batch", min=1, max=1024)

    def write(tmp: Path):
        torch.onnx.export(model, (_example_input(size),), str(tmp), input_names=["input"], output_names=["logits"],
                          opset_version=opset, dynamo=True, dynamic_shapes=({0: batch},), external_data=False)

    return atomic_write(path, write)


def export_torchscript(model: nn.Module, path: str | os.PathLike, size: int) -> Path:
    """Write `model` as a traced TorchScript file, loadable with ``torch.jit.load`` without easytransfer.

    >>> export_torchscript(learn.model, "model.pt", size=224)  # doctest: +SKIP
    """
    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; tracing still works in this pin
        traced = torch.jit.trace(model, _example_input(size))

    def write(tmp: Path):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # the same notice from torch.jit.save
            torch.jit.save(traced, str(tmp))

    return atomic_write(path, write)

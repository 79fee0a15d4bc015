"""Model bundles: weights as safetensors plus a JSON description; nothing is pickled."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from .version import __version__

__all__ = ["CONFIG_NAME", "WEIGHTS_NAME", "export_bundle", "export_onnx", "export_torchscript"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "easytransfer.json"


def export_bundle(learn, path: str | os.PathLike) -> Path:
    """Write ``model.safetensors`` and ``easytransfer.json`` (architecture, classes, preprocessing) into `path`.

    >>> learn.export("runs/textile-model")  # doctest: +SKIP
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    spec = learn.spec
    state = {k: v.detach().cpu().contiguous() for k, v in learn.model.state_dict().items()}
    tmp = path / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, path / WEIGHTS_NAME)
    recipe = getattr(learn.dls, "recipe", None)
    config = {
        "easytransfer_version": __version__,
        "arch": spec.name,
        "source": spec.source,
        "source_arch": spec.arch,
        "classes": [str(c) for c in learn.dls.vocab],
        "multilabel": bool(getattr(learn.dls, "is_multilabel", False)),
        "task": "multi-label" if getattr(learn.dls, "is_multilabel", False) else "single-label",
        "head": dict(getattr(learn, "head_config", None) or {"type": "linear", "dropout": None}),
        "preprocessing": {
            "size": recipe.size if recipe is not None else spec.size,
            "interpolation": recipe.interpolation if recipe is not None else spec.interpolation,
            "mean": list(recipe.mean if recipe is not None else spec.mean),
            "std": list(recipe.std if recipe is not None else spec.std),
            "resize": "shorter side to size, centre crop",
        },
    }
    (path / CONFIG_NAME).write_text(json.dumps(config, indent=2))
    return path


def _example_input(size: int) -> torch.Tensor:
    return torch.zeros(1, 3, size, size)


def _atomic(path: Path, write) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)
    return path


def export_onnx(model: nn.Module, path: str | os.PathLike, size: int, opset: int = 18) -> Path:
    """Write `model` (logits out, input ``(batch, 3, size, size)`` normalised) as ONNX with a dynamic batch axis.

    The file runs in onnxruntime without easytransfer or PyTorch; the preprocessing (resize, mean, std) is in
    the bundle's ``easytransfer.json``.

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

    return _atomic(Path(path), write)


def export_torchscript(model: nn.Module, path: str | os.PathLike, size: int) -> Path:
    """Write `model` as a traced TorchScript file, loadable with ``torch.jit.load`` without easytransfer.

    >>> export_torchscript(learn.model, "model.pt", size=224)  # doctest: +SKIP
    """
    import warnings

    model = copy.deepcopy(model).eval().to(memory_format=torch.contiguous_format)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice; tracing still works in this pin
        traced = torch.jit.trace(model, _example_input(size))
    return _atomic(Path(path), lambda tmp: torch.jit.save(traced, str(tmp)))

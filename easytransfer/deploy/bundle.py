"""The model bundle: ``model.safetensors`` plus ``easytransfer.json``, written and read here and nowhere else.

The JSON is a `BundleConfig` (architecture, classes, head, preprocessing) with a format version; nothing is
pickled. Both files are written atomically.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import EasyTransferError, WeightsMismatchError
from ..evaluate.calibration import Calibration
from ..evaluate.conformal import ConformalCalibration
from ..files import atomic_write, atomic_write_text
from ..models.heads import HeadConfig
from ..models.segmentation import SegmentationConfig
from ..version import __version__

__all__ = ["BUNDLE_FORMAT_VERSION", "CONFIG_NAME", "WEIGHTS_NAME", "BundleConfig", "Preprocessing", "SQUISH_RULE",
           "read_bundle", "write_bundle"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "easytransfer.json"
BUNDLE_FORMAT_VERSION = 1
RESIZE_RULE = "shorter side to size, centre crop"
SQUISH_RULE = "whole image to size x size"  # segmentation: every pixel kept, the mask maps back onto the image
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # raw pickle protocol 2+, or torch's zip format


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input: resize filter and size, then the mean and std."""

    size: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = RESIZE_RULE


@dataclass(frozen=True)
class BundleConfig:
    """What ``easytransfer.json`` holds.

    Attributes:
        arch: the architecture name as the user typed it (rebuilt with `build_model`).
        source, source_arch: the model source and its own name (``"timm"``, ``"tf_efficientnet_lite0"``).
        classes: class names in output order.
        multilabel: sigmoid outputs with a threshold instead of a softmax.
        head: the new head's `HeadConfig`.
        preprocessing: the validation pipeline's `Preprocessing`.
        format_version: `BUNDLE_FORMAT_VERSION` when written; a newer one is refused on read.
        arch_config: the source's own config of the architecture (`ModelSpec.arch_config`: an open_clip model's
            ``open_clip_config.json``), so that `load_model` rebuilds it without its folder or the network;
            ``None`` (and absent from the JSON) for timm and torchvision.
        segmentation: a segmentation model's `SegmentationConfig` (decoder, ignore_index); ``None`` (and absent
            from the JSON) for a classifier. Its ``task`` is then ``"segmentation"``.
        calibration: the `Calibration` of ``learn.calibrate()`` (temperature or isotonic), applied to every
            prediction of the loaded model; ``None`` (and absent from the JSON): the plain softmax.
        conformal: the `ConformalCalibration` of ``learn.conformal()`` (calibration scores, score type, Mondrian,
            default alpha), for ``load_model(path).predict_set(image)``; ``None`` (absent from the JSON) if none.
        Bundles written before these two fields load with ``None``; the format version stays 1.

    >>> cfg = BundleConfig("resnet18", "timm", "resnet18", ("cat", "dog"), False, HeadConfig(),
    ...                    Preprocessing(224, "bicubic", (0.5,) * 3, (0.5,) * 3))
    >>> BundleConfig.from_json(cfg.to_json()) == cfg
    True
    """

    arch: str
    source: str
    source_arch: str
    classes: tuple[str, ...]
    multilabel: bool
    head: HeadConfig
    preprocessing: Preprocessing
    easytransfer_version: str = __version__
    format_version: int = BUNDLE_FORMAT_VERSION
    extra: dict = field(default_factory=dict, compare=False)
    arch_config: dict | None = None
    segmentation: SegmentationConfig | None = None
    calibration: Calibration | None = None
    conformal: ConformalCalibration | None = None

    @property
    def task(self) -> str:
        if self.segmentation is not None:
            return "segmentation"
        if "detection" in self.extra:  # a detector's DetectionConfig (easytransfer.models.detection)
            return "detection"
        return "multi-label" if self.multilabel else "single-label"

    def to_json(self) -> str:
        pre = self.preprocessing
        data = {
            "format_version": self.format_version,
            "easytransfer_version": self.easytransfer_version,
            "arch": self.arch,
            "source": self.source,
            "source_arch": self.source_arch,
            "classes": list(self.classes),
            "multilabel": self.multilabel,
            "task": self.task,
            "head": self.head.to_dict(),
            "preprocessing": {"size": pre.size, "interpolation": pre.interpolation, "mean": list(pre.mean),
                              "std": list(pre.std), "resize": pre.resize},
            **self.extra,
        }
        if self.arch_config is not None:
            data["arch_config"] = self.arch_config
        if self.segmentation is not None:
            data["segmentation"] = self.segmentation.to_dict()
        if self.calibration is not None:
            data["calibration"] = self.calibration.to_dict()
        if self.conformal is not None:
            data["conformal"] = self.conformal.to_dict()
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = "the bundle") -> BundleConfig:
        """Parse ``easytransfer.json``; a clear `EasyTransferError` names what is wrong and the fix."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise EasyTransferError(f"{where} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise EasyTransferError(f"{where} holds a {type(data).__name__}, not an easytransfer model description.")
        missing = [k for k in ("arch", "classes", "preprocessing") if k not in data]
        if missing:
            raise EasyTransferError(f"{where} lacks {missing}; re-export the model with learn.export().")
        version = int(data.get("format_version", 0))  # bundles before format versions were introduced: 0
        if version > BUNDLE_FORMAT_VERSION:
            raise EasyTransferError(f"{where} has bundle format {version}, newer than this easytransfer reads "
                                    f"({BUNDLE_FORMAT_VERSION}); upgrade easytransfer (pip install -U easytransfer).")
        pre = data["preprocessing"]
        known = {"format_version", "easytransfer_version", "arch", "source", "source_arch", "classes",
                 "multilabel", "task", "head", "preprocessing", "arch_config", "segmentation", "calibration",
                 "conformal"}
        return cls(
            arch=data["arch"], source=data.get("source", "timm"), source_arch=data.get("source_arch", data["arch"]),
            classes=tuple(str(c) for c in data["classes"]), multilabel=bool(data.get("multilabel", False)),
            head=HeadConfig.from_dict(data.get("head") or {}),
            preprocessing=Preprocessing(int(pre["size"]), pre.get("interpolation", "bilinear"),
                                        tuple(float(m) for m in pre["mean"]), tuple(float(s) for s in pre["std"]),
                                        pre.get("resize", RESIZE_RULE)),
            easytransfer_version=data.get("easytransfer_version", "unknown"), format_version=version,
            extra={k: v for k, v in data.items() if k not in known}, arch_config=data.get("arch_config"),
            segmentation=SegmentationConfig.from_dict(data["segmentation"]) if data.get("segmentation") else None,
            calibration=Calibration.from_dict(data["calibration"]) if data.get("calibration") else None,
            conformal=ConformalCalibration.from_dict(data["conformal"]) if data.get("conformal") else None,
        )


def write_bundle(path: str | os.PathLike, model: nn.Module, config: BundleConfig) -> Path:
    """Write `model`'s weights and `config` into folder `path` (each file atomically); returns the folder."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(state, str(tmp)))
    atomic_write_text(path / CONFIG_NAME, config.to_json())
    return path


def read_bundle_config(path: str | os.PathLike) -> BundleConfig:
    """The `BundleConfig` of bundle folder `path`, with a clear error for anything that is not a bundle."""
    folder = Path(path)
    if folder.is_file():
        with open(folder, "rb") as f:
            magic = f.read(4)
        kind = "a pickle / torch checkpoint" if magic.startswith(_PICKLE_MAGIC) else "a file"
        raise EasyTransferError(f"{str(folder)!r} is {kind}, not a model bundle folder. easytransfer never "
                                "unpickles files (they can run code); load a folder written by learn.export().")
    if not folder.is_dir():
        raise EasyTransferError(f"Model bundle {str(folder)!r} does not exist.")
    config_path = folder / CONFIG_NAME
    if not config_path.is_file():
        raise EasyTransferError(f"{str(folder)!r} is not an easytransfer model bundle: {CONFIG_NAME} is missing. "
                                "Create one with learn.export(path).")
    return BundleConfig.from_json(config_path.read_text(), where=repr(str(config_path)))


def read_bundle_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in bundle folder `path` (safetensors: no code can run)."""
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise WeightsMismatchError(f"{str(weights)!r} is missing from the bundle.")
    try:
        return load_file(str(weights), device="cpu")
    except SafetensorError as e:
        raise WeightsMismatchError(f"{str(weights)!r} is not a readable safetensors file: {e}") from None


def read_bundle(path: str | os.PathLike) -> tuple[BundleConfig, dict[str, torch.Tensor]]:
    """``(config, state dict)`` of bundle folder `path`."""
    return read_bundle_config(path), read_bundle_weights(path)

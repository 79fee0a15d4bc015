"""The model bundle: ``model.safetensors`` plus ``easytransfer.json``, written and read here and nowhere else.

The JSON is a `BundleConfig` (architecture, classes, head, preprocessing) with a format version; nothing is
pickled. Both files are written atomically (a unique temporary file each, then a rename), and the weights' own
metadata repeats the architecture and the classes, so weights from one export beside the JSON of another (two
exports into one folder) are refused on load instead of predicting another model's class names. The JSON is
checked against the `BundleConfig` schema before anything is built from it: a wrong type or value is an error
that names the field, and a name that would make `load_model` reach the network (``"hf-hub:..."``) is refused.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn

from ..errors import EasyTransferError, WeightsMismatchError
from ..files import atomic_write_safetensors, atomic_write_text, remove_stale_temporaries
from ..models.heads import HeadConfig
from ..version import __version__

__all__ = ["BUNDLE_FORMAT_VERSION", "CONFIG_NAME", "WEIGHTS_NAME", "BundleConfig", "Preprocessing", "SQUISH_RULE",
           "TaskConfig", "TaskConfigParser", "read_bundle", "write_bundle"]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "easytransfer.json"
BUNDLE_FORMAT_VERSION = 2  # 2: task + task_config (version 1: fields per task)
RESIZE_RULE = "shorter side to size, centre crop"
SQUISH_RULE = "whole image to size x size"  # segmentation: every pixel kept, the mask maps back onto the image
_PICKLE_MAGIC = (b"\x80", b"PK\x03\x04")  # raw pickle protocol 2+, or torch's zip format
WEIGHTS_IDENTITY_KEY = "easytransfer_model"  # the weights' metadata: {"arch": ..., "classes": [...]} as JSON
_HUB_PREFIXES = ("hf-hub:", "hf_hub:")  # timm's names of Hugging Face Hub models: building one downloads its config
_HUB_ARCHITECTURE = "timm_architecture"  # ... unless arch_config records the timm architecture (backends/timm.py)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input: resize filter and size, then the mean and std."""

    size: int
    interpolation: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resize: str = RESIZE_RULE


class TaskConfig(Protocol):
    """What a task records in the bundle (`BundleConfig.task_config`): a frozen dataclass with these two methods."""

    def to_dict(self) -> dict: ...

    @classmethod
    def from_dict(cls, data: dict) -> TaskConfig: ...


# Reads a bundle's ``task_config`` object into the task's typed config: ``parse(task_name, data)``. The task
# registry gives one (`easytransfer.tasks.loading`); without it the config stays the JSON object (a dict).
TaskConfigParser = Callable[[str, dict], TaskConfig]


@dataclass(frozen=True)
class BundleConfig:
    """What ``easytransfer.json`` holds.

    Attributes:
        arch: the architecture name as the user typed it (rebuilt with `build_model`).
        source, source_arch: the model source and its own name (``"timm"``, ``"tf_efficientnet_lite0"``).
        classes: class names in output order.
        head: the new head's `HeadConfig` (a classifier's; the default for the other tasks).
        preprocessing: the validation pipeline's `Preprocessing`.
        task: the registered task's name (``"classification"``, ``"segmentation"``, ``"detection"`` ...): the
            one vocabulary of the bundle, the command line and ``learn.task``.
        task_config: the task's own typed config (``to_dict`` / ``from_dict``): a classifier's
            ``ClassificationConfig`` (multi-label, calibration, conformal scores), a segmentation model's
            ``SegmentationConfig`` (decoder, ignore_index), a detector's ``DetectionConfig``. Read without the
            task registry it is the JSON object (a dict).
        format_version: `BUNDLE_FORMAT_VERSION` when written; a newer one is refused on read. Version 1 bundles
            (the task guessed from which field was set: ``segmentation``, ``detection``, else a classifier with
            top-level ``multilabel``, ``calibration`` and ``conformal``) are read into the same record.
        arch_config: the source's own config of the architecture (`ModelSpec.arch_config`: an open_clip model's
            ``open_clip_config.json``), so that `load_model` rebuilds it without its folder or the network;
            ``None`` (and absent from the JSON) for timm and torchvision.

    >>> cfg = BundleConfig("resnet18", "timm", "resnet18", ("cat", "dog"), HeadConfig(),
    ...                    Preprocessing(224, "bicubic", (0.5,) * 3, (0.5,) * 3), task_config={"multilabel": False})
    >>> BundleConfig.from_json(cfg.to_json()) == cfg
    True
    """

    arch: str
    source: str
    source_arch: str
    classes: tuple[str, ...]
    head: HeadConfig
    preprocessing: Preprocessing
    task: str = "classification"
    task_config: TaskConfig | dict | None = None
    easytransfer_version: str = __version__
    format_version: int = BUNDLE_FORMAT_VERSION
    arch_config: dict | None = None

    def to_json(self) -> str:
        pre = self.preprocessing
        task_config = self.task_config if isinstance(self.task_config, dict) or self.task_config is None \
            else self.task_config.to_dict()
        data = {
            "format_version": self.format_version,
            "easytransfer_version": self.easytransfer_version,
            "arch": self.arch,
            "source": self.source,
            "source_arch": self.source_arch,
            "classes": list(self.classes),
            "task": self.task,
            "task_config": task_config or {},
            "head": self.head.to_dict(),
            "preprocessing": {"size": pre.size, "interpolation": pre.interpolation, "mean": list(pre.mean),
                              "std": list(pre.std), "resize": pre.resize},
        }
        if self.arch_config is not None:
            data["arch_config"] = self.arch_config
        return json.dumps(data, indent=2)

    @classmethod
    def from_json(cls, text: str, where: str = "the bundle", parse_task_config: TaskConfigParser | None = None
                  ) -> BundleConfig:
        """Parse ``easytransfer.json``, checked against this schema; a clear `EasyTransferError` names what is wrong.

        `parse_task_config` turns the ``task_config`` object into the task's typed config (the task registry's);
        without it the object stays a dict.

        >>> try:
        ...     BundleConfig.from_json('{"arch": "resnet18", "classes": ["a", "b"], "preprocessing": {"size": 0}}')
        ... except EasyTransferError as e:
        ...     print(e)  # doctest: +ELLIPSIS
        the bundle: preprocessing 'size' must be a positive number of pixels, not 0; re-export the model ...
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise EasyTransferError(f"{where} is not valid JSON: {e}") from None
        if not isinstance(data, dict):
            raise EasyTransferError(f"{where} holds a {type(data).__name__}, not an easytransfer model description.")
        missing = [k for k in ("arch", "classes", "preprocessing") if k not in data]
        if missing:
            raise EasyTransferError(f"{where} lacks {missing}; re-export the model with learn.export().")
        version = _field(data, "format_version", int, where, default=0)  # bundles before format versions: 0
        if version > BUNDLE_FORMAT_VERSION:
            raise EasyTransferError(f"{where} has bundle format {version}, newer than this easytransfer reads "
                                    f"({BUNDLE_FORMAT_VERSION}); upgrade easytransfer (pip install -U easytransfer).")
        arch = _field(data, "arch", str, where)
        arch_config = _field(data, "arch_config", dict, where, default=None)
        _check_offline_arch(arch, arch_config, where)
        head = _field(data, "head", dict, where, default=None) or {}
        if version >= 2:
            task = _field(data, "task", str, where)
            task_config = _field(data, "task_config", dict, where, default=None) or {}
        else:
            task, task_config = _version_1_task(data, where)
        try:
            head_config = HeadConfig.from_dict(head)
            task_config = parse_task_config(task, task_config) if parse_task_config else task_config or None
        except (KeyError, TypeError, ValueError) as e:
            raise EasyTransferError(f"{where}: a value of 'head' or 'task_config' is malformed ({e}); re-export the "
                                    "model with learn.export().") from None
        return cls(
            arch=arch, source=_field(data, "source", str, where, default="timm"),
            source_arch=_field(data, "source_arch", str, where, default=arch),
            classes=_classes(data["classes"], where), head=head_config,
            preprocessing=_preprocessing(data["preprocessing"], where), task=task, task_config=task_config,
            easytransfer_version=str(data.get("easytransfer_version", "unknown")), format_version=version,
            arch_config=arch_config,
        )


def _version_1_task(data: dict, where: str) -> tuple[str, dict]:
    """``(task, task_config)`` of a bundle written before format 2: the task guessed from which field is set."""
    segmentation = _field(data, "segmentation", dict, where, default=None)
    if segmentation:
        return "segmentation", segmentation
    detection = _field(data, "detection", dict, where, default=None)
    if detection:
        return "detection", detection
    config = {"multilabel": _field(data, "multilabel", bool, where, default=False)}
    for name in ("calibration", "conformal"):
        value = _field(data, name, dict, where, default=None)
        if value:
            config[name] = value
    return "classification", config


def _malformed(where: str, name: str, problem: str) -> EasyTransferError:
    return EasyTransferError(f"{where}: {name} {problem}; re-export the model with learn.export() (or correct "
                             f"{CONFIG_NAME}).")


def _field(data: dict, name: str, kind: type, where: str, *, default=...):
    """``data[name]`` when it is a `kind` (an int is no bool here), `default` when absent or null."""
    value = data.get(name)
    if value is None:
        if default is ...:
            raise _malformed(where, repr(name), "is missing")
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _malformed(where, repr(name), f"must be a {kind.__name__}, not {type(value).__name__} {value!r}")
    if kind is str and not value.strip():
        raise _malformed(where, repr(name), "is empty")
    return value


def _check_offline_arch(arch: str, arch_config: dict | None, where: str) -> None:
    """Refuse an architecture name that could only be built with the network (a Hub name without the timm
    architecture that exports record for it)."""
    name = arch.strip()
    if name.lower().startswith(_HUB_PREFIXES) and not isinstance((arch_config or {}).get(_HUB_ARCHITECTURE), str):
        raise EasyTransferError(f"{where}: arch {arch!r} names a Hugging Face Hub model; load_model never downloads "
                                "(building it would need the network). Build it online with transfer_learner(dls, "
                                f"{arch!r}) and load this bundle's model.safetensors into learn.model yourself.")
    if name.startswith("open_clip:") and arch_config is None:
        raise EasyTransferError(f"{where}: the open_clip model {arch!r} comes without its 'arch_config', so building "
                                "it would need its folder or the network; re-export it with this easytransfer.")


def _classes(value, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise _malformed(where, "'classes'", f"must be a non-empty list of class names, not {value!r}")
    if not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in value):
        raise _malformed(where, "'classes'", "must hold names (strings)")
    classes = tuple(str(c) for c in value)
    if len(set(classes)) != len(classes):
        twice = sorted(c for c in set(classes) if classes.count(c) > 1)
        raise _malformed(where, "'classes'", f"names a class twice ({twice})")
    return classes


def _stats(pre: dict, name: str, where: str) -> tuple[float, ...]:
    value = pre.get(name)
    ok = isinstance(value, list) and len(value) == 3 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    if not ok:
        raise _malformed(where, f"preprocessing {name!r}", f"must be three finite numbers (R, G, B), not {value!r}")
    if name == "std" and min(value) <= 0:
        raise _malformed(where, "preprocessing 'std'", f"must be positive (it divides the image), not {value!r}")
    return tuple(float(v) for v in value)


def _preprocessing(pre, where: str) -> Preprocessing:
    if not isinstance(pre, dict):
        raise _malformed(where, "'preprocessing'", f"must be an object, not {pre!r}")
    size = _field(pre, "size", int, where)
    if size < 1:
        raise _malformed(where, "preprocessing 'size'", f"must be a positive number of pixels, not {size}")
    return Preprocessing(size, _field(pre, "interpolation", str, where, default="bilinear"),
                         _stats(pre, "mean", where), _stats(pre, "std", where),
                         _field(pre, "resize", str, where, default=RESIZE_RULE))


def write_bundle(path: str | os.PathLike, model: nn.Module, config: BundleConfig) -> Path:
    """Write `model`'s weights and `config` into folder `path` (each file atomically); returns the folder.

    The weights' metadata names the architecture and classes of `config` (checked by `read_bundle_weights`);
    temporary files left in the folder by a killed export are removed first.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {WEIGHTS_IDENTITY_KEY: _weights_identity(config)}
    atomic_write_safetensors(path / WEIGHTS_NAME, state, metadata)
    atomic_write_text(path / CONFIG_NAME, config.to_json())
    return path


def _weights_identity(config: BundleConfig) -> str:
    return json.dumps({"arch": config.arch, "classes": list(config.classes)})


def _unreadable(path: Path, error: OSError) -> EasyTransferError:
    return EasyTransferError(f"{str(path)!r} exists but cannot be read ({error.strerror or error}); ask its owner to "
                             f"make it readable (chmod a+r), or copy the bundle to a folder you own.")


def read_bundle_config(path: str | os.PathLike, parse_task_config: TaskConfigParser | None = None) -> BundleConfig:
    """The `BundleConfig` of bundle folder `path`, with a clear error for anything that is not a bundle.

    `parse_task_config`: as for `BundleConfig.from_json` (the task registry's gives the typed task config).
    """
    folder = Path(path)
    try:
        if folder.is_file():
            with open(folder, "rb") as f:
                magic = f.read(4)
            kind = "a pickle / torch checkpoint" if magic.startswith(_PICKLE_MAGIC) else "a file"
            raise EasyTransferError(f"{str(folder)!r} is {kind}, not a model bundle folder. easytransfer never "
                                    "unpickles files (they can run code); load a folder written by learn.export().")
        if not folder.is_dir():
            raise EasyTransferError(f"Model bundle {str(folder)!r} does not exist.")
        config_path = folder / CONFIG_NAME
        if not config_path.is_file() and (folder / "model" / CONFIG_NAME).is_file():
            raise EasyTransferError(f"{str(folder)!r} is a training run's folder; its model bundle is "
                                    f"{str(folder / 'model')!r}: give that folder.")
        if not config_path.is_file():
            if not os.access(folder, os.R_OK | os.X_OK):
                raise PermissionError(13, "Permission denied", str(folder))
            raise EasyTransferError(f"{str(folder)!r} is not an easytransfer model bundle: {CONFIG_NAME} is missing. "
                                    "Create one with learn.export(path).")
        text = config_path.read_text()
    except PermissionError as e:
        raise _unreadable(Path(e.filename or folder), e) from None
    return BundleConfig.from_json(text, where=repr(str(config_path)), parse_task_config=parse_task_config)


def read_bundle_weights(path: str | os.PathLike, config: BundleConfig | None = None) -> dict[str, torch.Tensor]:
    """The state dict in bundle folder `path` (safetensors: no code can run).

    With `config` (the bundle's JSON), the architecture and classes the weights were exported with must be
    its own: weights of one export beside the JSON of another are a `WeightsMismatchError`.
    """
    weights = Path(path) / WEIGHTS_NAME
    if not weights.is_file():
        raise WeightsMismatchError(f"{str(weights)!r} is missing from the bundle.")
    if not os.access(weights, os.R_OK):
        raise _unreadable(weights, PermissionError(13, "Permission denied"))
    try:
        if config is not None:
            with safe_open(str(weights), framework="pt") as f:
                _check_identity(weights, (f.metadata() or {}).get(WEIGHTS_IDENTITY_KEY), config)
        return load_file(str(weights), device="cpu")
    except SafetensorError as e:
        raise WeightsMismatchError(f"{str(weights)!r} is not a readable safetensors file: {e}") from None
    except PermissionError as e:
        raise _unreadable(weights, e) from None


def _check_identity(weights: Path, recorded: str | None, config: BundleConfig) -> None:
    """The weights' recorded architecture and classes are `config`'s (bundles before they were recorded pass)."""
    if recorded is None:
        return
    try:
        identity = json.loads(recorded)
        arch, classes = identity["arch"], tuple(identity["classes"])
    except (ValueError, KeyError, TypeError):
        raise WeightsMismatchError(f"{str(weights)!r} has malformed {WEIGHTS_IDENTITY_KEY!r} metadata; export the "
                                   "model again.") from None
    if arch != config.arch or classes != config.classes:
        raise WeightsMismatchError(
            f"{str(weights)!r} holds the weights of {arch!r} with classes {list(classes)}, but {CONFIG_NAME} beside "
            f"it describes {config.arch!r} with classes {list(config.classes)}: the folder mixes two exports (two "
            "exports into one folder, or files copied in by hand). Export the model again into an empty folder.")


def read_bundle(path: str | os.PathLike, parse_task_config: TaskConfigParser | None = None
                ) -> tuple[BundleConfig, dict[str, torch.Tensor]]:
    """``(config, state dict)`` of bundle folder `path`, the weights checked against the config."""
    config = read_bundle_config(path, parse_task_config)
    return config, read_bundle_weights(path, config)

"""Checkpoints of a running fit: the last and the best epoch, each one safetensors file written atomically.

A checkpoint holds the whole model's weights (also when the head trains on cached features), the optimizer
state (tensors as safetensors, the rest as JSON in the file's metadata) and a `FitState` -- where the fit
stands: phase, epochs done of how many, learning rates, warm-up, whether it runs on cached features, monitor,
best value, history -- so `fit_*(..., resume=True)` can continue the same schedule after an interruption -- and
the `ModelIdentity` (architecture and classes) it belongs to, so another run's checkpoint is refused.
Tensors are written from CPU copies and read onto the device the caller asks for. The metadata carries a
format version (`CHECKPOINT_FORMAT`); this module is the only one that writes or reads it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from safetensors import SafetensorError, safe_open

from ..errors import EasyTransferError
from ..files import atomic_write_safetensors, remove_stale_temporaries
from .distributed import is_main_process, unwrap_model
from .history import History, Phase

__all__ = ["BEST_NAME", "CHECKPOINT_FORMAT", "LAST_NAME", "Checkpoint", "CheckpointCallback", "FitState",
           "ModelIdentity", "read_checkpoint", "restore_optimizer", "save_checkpoint"]

LAST_NAME = "last.safetensors"
BEST_NAME = "best.safetensors"
CHECKPOINT_FORMAT = 2  # 1: the unversioned dict of easytransfer <= 0.x (a cached fit saved the head alone)


@dataclass(frozen=True)
class FitState:
    """Where a scheduled fit stands: what `resume=True` needs to continue it on the same schedule.

    Attributes:
        phase: the fit's `Phase`.
        epochs: the epochs the fit was asked for; `done` of them are finished.
        lrs: the peak learning rate of each layer group, stem first.
        warmup_pct: the share of the fit spent warming up.
        on_features: the head trains on cached features (the body frozen).
        monitor: the quantity that decides the best epoch; `best` its best value so far.
        history: every epoch of every fit up to the checkpoint.

    >>> FitState(Phase.from_name("frozen"), 3, (1e-3,), 0.1, on_features=True, monitor="valid_loss").done
    0
    """

    phase: Phase
    epochs: int
    lrs: tuple[float, ...]
    warmup_pct: float
    on_features: bool
    monitor: str
    done: int = 0
    best: float | None = None
    history: History = field(default_factory=History)

    def same_fit(self, other: FitState) -> str | None:
        """Why `other` is not a checkpoint of this fit (``None`` when it is)."""
        for name in ("phase", "epochs", "on_features"):
            if getattr(self, name) != getattr(other, name):
                return f"{name} {_shown(getattr(other, name))!r}, this one {_shown(getattr(self, name))!r}"
        return None

    def to_json(self) -> dict:
        return {"phase": self.phase.to_json(), "epochs": self.epochs, "lrs": [float(x) for x in self.lrs],
                "warmup_pct": self.warmup_pct, "on_features": self.on_features, "monitor": self.monitor,
                "done": self.done, "best": self.best, "history": self.history.to_json()}

    @classmethod
    def from_json(cls, data: dict) -> FitState:
        return cls(Phase.from_json(data["phase"]), int(data["epochs"]), tuple(float(x) for x in data["lrs"]),
                   float(data["warmup_pct"]), bool(data["on_features"]), data["monitor"], int(data["done"]),
                   data["best"], History.from_json(data["history"]))

    @classmethod
    def from_legacy(cls, meta: dict) -> FitState:
        """The state of a format-1 checkpoint (a plain dict, with the history as table rows)."""
        return cls(Phase.from_name(meta["phase"]), int(meta["epochs"]), tuple(float(x) for x in meta["lrs"]),
                   float(meta["warmup_pct"]), bool(meta["cached"]), meta.get("monitor", "valid_loss"),
                   int(meta["done"]), meta.get("best"), History.from_frame(pd.DataFrame(meta["history"])))


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a checkpoint belongs to: the architecture and the classes, in output order.

    >>> a = ModelIdentity("resnet18", ("cat", "dog"))
    >>> a.mismatch(ModelIdentity("resnet18", ("ant", "bee")))
    "classes ['ant', 'bee'], this learner's ['cat', 'dog']"
    """

    arch: str
    classes: tuple[str, ...]

    def mismatch(self, other: ModelIdentity) -> str | None:
        """How `other` (a checkpoint's) differs from this one (``None``: the same model)."""
        if other.arch != self.arch:
            return f"architecture {other.arch!r}, this learner's {self.arch!r}"
        if other.classes != self.classes:
            return f"classes {list(other.classes)}, this learner's {list(self.classes)}"
        return None

    def to_json(self) -> dict:
        return {"arch": self.arch, "classes": list(self.classes)}

    @classmethod
    def from_json(cls, data: dict) -> ModelIdentity:
        return cls(str(data["arch"]), tuple(str(c) for c in data["classes"]))


def _shown(value):
    return value.name if isinstance(value, Phase) else value


@dataclass
class Checkpoint:
    """A checkpoint read back: the whole model's state, the optimizer's tensors and metadata, the `FitState`, and
    the `ModelIdentity` (``None`` in checkpoints written before it was recorded)."""

    model_state: dict[str, torch.Tensor]
    optimizer_tensors: dict[str, torch.Tensor]
    optimizer_meta: dict | None
    state: FitState
    identity: ModelIdentity | None = None


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _optimizer_tensors(opt) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for i, state in enumerate(sd["state"]):
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"opt.{i}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(i), {})[k] = _jsonable(v)
    hypers = [{k: _jsonable(v) for k, v in h.items()} for h in sd["hypers"]]
    return tensors, {"scalars": scalars, "hypers": hypers, "n_params": len(sd["state"])}


def save_checkpoint(path: Path, model: torch.nn.Module, opt, state: FitState,
                    identity: ModelIdentity | None = None) -> Path:
    """Write the weights, the optimizer state, `state` and `identity` to `path` atomically (temporary file, rename).

    Temporary files that killed writers left in the folder are removed first.

    >>> save_checkpoint(Path("runs/last.safetensors"), learn.model, learn.opt, fit_state)  # doctest: +SKIP
    """
    weights = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt) if opt is not None else ({}, None)
    meta = {"format": CHECKPOINT_FORMAT, "fit": state.to_json(), "optimizer": opt_meta}
    if identity is not None:
        meta["model"] = identity.to_json()
    remove_stale_temporaries(Path(path).parent)  # leftovers of a writer killed earlier (kill -9, power loss)
    tensors, metadata = {**weights, **opt_tensors}, {"easytransfer": json.dumps(meta)}
    return atomic_write_safetensors(path, tensors, metadata)


def read_checkpoint(path: str | os.PathLike, device: torch.device | str = "cpu") -> Checkpoint:
    """The `Checkpoint` in a file, its tensors on `device`.

    Raises:
        EasyTransferError: no file, a format newer than this easytransfer, or a format-1 checkpoint of a fit on
            cached features (it holds the head alone); the message says what to do.

    >>> read_checkpoint("runs/last.safetensors", device=learn.device).state.done  # doctest: +SKIP
    2
    """
    path = Path(path)
    if not path.is_file():
        raise EasyTransferError(f"No checkpoint at {str(path)!r}: nothing to resume.")
    model, opt = {}, {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            meta = _easytransfer_metadata(path, f.metadata())
            for key in f.keys():
                (model if key.startswith("model.") else opt)[key.split(".", 1)[1]] = f.get_tensor(key)
    except SafetensorError as e:
        raise EasyTransferError(f"{str(path)!r} is not a readable checkpoint (damaged, or not a safetensors file: "
                                f"{e}); delete it and run the fit again without resume.") from None
    except PermissionError as e:
        raise EasyTransferError(f"The checkpoint {str(path)!r} exists but cannot be read ({e.strerror}); make it "
                                "readable (chmod) or resume as its owner.") from None
    version = meta.get("format", 1)
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT:
        raise EasyTransferError(f"The checkpoint {str(path)!r} has format {version}, newer than this easytransfer "
                                f"reads ({CHECKPOINT_FORMAT}); upgrade easytransfer to resume it.")
    if version == 1 and meta.get("cached"):
        raise EasyTransferError(f"The checkpoint {str(path)!r} of a fit on cached features was written by an "
                                "older easytransfer and holds the head alone; run the fit again without resume.")
    try:
        state = FitState.from_legacy(meta) if version == 1 else FitState.from_json(meta["fit"])
        identity = ModelIdentity.from_json(meta["model"]) if "model" in meta else None
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise EasyTransferError(f"The checkpoint {str(path)!r} has damaged metadata ({type(e).__name__}: {e}); "
                                "delete it and run the fit again without resume.") from None
    return Checkpoint(model, opt, meta.get("optimizer"), state, identity)


def _easytransfer_metadata(path: Path, metadata: dict | None) -> dict:
    """The checkpoint's own metadata (JSON under the ``easytransfer`` key), or a clear error."""
    text = (metadata or {}).get("easytransfer")
    if text is None:
        raise EasyTransferError(f"{str(path)!r} is a safetensors file but not an easytransfer checkpoint (it has no "
                                "easytransfer metadata); point checkpoint_dir at a folder of checkpoints written by a "
                                "fit, or start without resume.")
    try:
        meta = json.loads(text)
    except ValueError:
        meta = None
    if not isinstance(meta, dict):
        raise EasyTransferError(f"The checkpoint {str(path)!r} has damaged metadata (not a JSON object); delete it "
                                "and run the fit again without resume.")
    return meta


def restore_optimizer(opt, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    """Load an optimizer state saved by `save_checkpoint` into a fastai optimizer over the same parameters."""
    n = sum(len(pg) for pg in opt.param_lists)
    if meta is None or meta["n_params"] != n:
        raise EasyTransferError("The checkpoint's optimizer does not match this learner's parameters; "
                                "resume with the same model, head and frozen layer groups.")
    states = [dict(meta["scalars"].get(str(i), {})) for i in range(n)]
    for key, value in tensors.items():
        i, name = key.split(".", 1)
        states[int(i)][name] = value
    opt.load_state_dict({"state": states, "hypers": meta["hypers"]})


class CheckpointCallback(Callback):
    """After every epoch, save ``last.safetensors`` and, when the fit's monitor improves, ``best.safetensors``.

    >>> learn.fit(3, cbs=CheckpointCallback("runs/ckpt", fit_state))  # doctest: +SKIP
    """

    order = 59  # after the history row (55) and the best-weights tracker (58)

    def __init__(self, folder: str | os.PathLike, fit_state: FitState, identity: ModelIdentity | None = None):
        self.folder = Path(folder)
        self.fit_state = fit_state
        self.identity = identity
        self.monitor = fit_state.monitor
        self.lower_is_better = "loss" in self.monitor or "error" in self.monitor
        self.best = fit_state.best

    def before_fit(self):
        if is_main_process():
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder)  # left by a fit killed while writing a checkpoint
        names = list(self.learn.recorder.metric_names[1:])
        self.idx = names.index(self.monitor) if self.monitor in names else None

    def after_epoch(self):
        values = self.learn.recorder.values[-1] if self.learn.recorder.values else []
        value = float(values[self.idx]) if self.idx is not None and len(values) > self.idx else None
        improved = value is not None and np.isfinite(value) and (
            self.best is None or (value < self.best if self.lower_is_better else value > self.best))
        if improved:
            self.best = value
        history = getattr(self.learn, "fit_history", None)
        state = replace(self.fit_state, done=self.fit_state.done + self.epoch + 1, best=self.best,
                        history=History(list(history)) if history is not None else History())
        if not is_main_process():  # a distributed run: every rank holds the same weights, rank 0 writes them
            return
        model = unwrap_model(self.learn.model)  # DDP's wrapper would prefix every name with "module."
        save_checkpoint(self.folder / LAST_NAME, model, self.learn.opt, state, self.identity)
        if improved:
            save_checkpoint(self.folder / BEST_NAME, model, None, state, self.identity)

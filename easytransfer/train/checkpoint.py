"""Checkpoints of a running fit: the last and the best epoch, each one safetensors file written atomically.

A checkpoint holds the weights of what is training, the optimizer state (tensors as safetensors, the rest as
JSON in the file's metadata) and where the fit stands (phase, epochs done of how many, learning rates, warm-up,
history, best value), so `fit_*(..., resume=True)` can continue the same schedule after an interruption.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from fastai.callback.core import Callback
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import EasyTransferError

__all__ = ["BEST_NAME", "LAST_NAME", "CheckpointCallback", "read_checkpoint", "restore_optimizer"]

LAST_NAME = "last.safetensors"
BEST_NAME = "best.safetensors"


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


def save_checkpoint(path: Path, model: torch.nn.Module, opt, meta: dict) -> Path:
    """Write weights, optimizer state and `meta` to `path` atomically (temporary file, then rename)."""
    state = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    opt_tensors, opt_meta = _optimizer_tensors(opt) if opt is not None else ({}, None)
    meta = dict(meta, optimizer=opt_meta)
    tmp = path.with_name(path.name + ".tmp")
    save_file({**state, **opt_tensors}, str(tmp), metadata={"easytransfer": json.dumps(meta)})
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict]:
    """``(model state, optimizer tensors, metadata)`` of a checkpoint file."""
    path = Path(path)
    if not path.is_file():
        raise EasyTransferError(f"No checkpoint at {str(path)!r}: nothing to resume.")
    model, opt = {}, {}
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["easytransfer"])
        for key in f.keys():
            (model if key.startswith("model.") else opt)[key.split(".", 1)[1]] = f.get_tensor(key)
    return model, opt, meta


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
    """After every epoch, save ``last.safetensors`` and, when `monitor` improves, ``best.safetensors``."""

    order = 59  # after the history row (55) and the best-weights tracker (58)

    def __init__(self, folder: str | os.PathLike, fit_state: dict, monitor: str = "valid_loss",
                 best: float | None = None):
        self.folder = Path(folder)
        self.fit_state = dict(fit_state)
        self.monitor = monitor
        self.lower_is_better = "loss" in monitor or "error" in monitor
        self.best = best

    def before_fit(self):
        self.folder.mkdir(parents=True, exist_ok=True)
        names = list(self.learn.recorder.metric_names[1:])
        self.idx = names.index(self.monitor) if self.monitor in names else None

    def after_epoch(self):
        values = self.learn.recorder.values[-1] if self.learn.recorder.values else []
        value = float(values[self.idx]) if self.idx is not None and len(values) > self.idx else None
        improved = value is not None and np.isfinite(value) and (
            self.best is None or (value < self.best if self.lower_is_better else value > self.best))
        if improved:
            self.best = value
        done = self.fit_state["done"] + self.epoch + 1
        history = getattr(self.learn, "history", pd.DataFrame())
        meta = dict(self.fit_state, done=done, monitor=self.monitor, best=self.best,
                    history=json.loads(history.to_json(orient="records")))
        save_checkpoint(self.folder / LAST_NAME, self.learn.model, self.learn.opt, meta)
        if improved:
            save_checkpoint(self.folder / BEST_NAME, self.learn.model, None, meta)

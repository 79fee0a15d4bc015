"""What `ClassifierLearner.calibrate` and `ClassifierLearner.conformal` need from a fastai learner: raw logits,
the calibrated activation, and probabilities of loose images and folders."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from fastai.data.transforms import image_extensions
from fastai.torch_core import noop

from ...data.sources import candidate_files
from ...errors import DataError
from ...evaluate.calibration import Calibration

__all__ = ["calibration_activation", "folder_probabilities", "image_probabilities", "raw_logits"]


def calibration_activation(calibration: Calibration):
    """fastai's ``act`` for `get_preds`: logits (a tensor) to calibrated probabilities on the same device."""
    def act(logits: torch.Tensor) -> torch.Tensor:
        probs = calibration.probabilities(logits.detach().float().cpu().numpy())
        return torch.from_numpy(probs).float().to(logits.device)

    return act


def raw_logits(learn, dl) -> tuple[np.ndarray, np.ndarray]:
    """``(logits, targets)`` of labelled DataLoader `dl`, before any activation or calibration."""
    logits, targets = learn.get_preds(dl=dl, act=noop)
    return logits.float().numpy(), targets.numpy().astype(int)


def image_probabilities(learn, images) -> np.ndarray:
    """Probabilities (images x classes) of loose images (paths, PIL images, arrays), one `learn.predict` each."""
    return np.stack([learn.predict(image)[2].float().numpy() for image in images])


def folder_probabilities(learn, path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """``(paths, probabilities)`` of every image file under `path` (or of the one file `path`)."""
    root = Path(path)
    files = [root] if root.is_file() else [f for f in candidate_files(root) if f.suffix.lower() in image_extensions]
    if not files:
        raise DataError(f"No image files found under {str(root)!r}; give a folder of images or an image file.")
    dl = learn.dls.labelled_dl([str(f) for f in files], labels=[str(learn.dls.vocab[0])] * len(files))
    probs, _ = learn.get_preds(dl=dl)
    return dl.items["path"].tolist(), probs.float().numpy()

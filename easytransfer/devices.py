"""Which device a learner or a predictor runs on, and the batch sizes measured (or chosen) for each kind."""

from __future__ import annotations

import torch

__all__ = ["default_device", "predict_batch_size", "resolve_device"]

# measured on 2 CPU cores: channels-last batches of 4-8 are the fastest per image; on a GPU larger batches keep
# it busy (64 is a conservative default that fits every backbone we ship in a few GiB)
PREDICT_BS = {"cpu": 8, "cuda": 64}


def default_device() -> torch.device:
    """CUDA when available, else the CPU.

    >>> default_device().type in ("cpu", "cuda")
    True
    """
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """`device` as a ``torch.device`` (``None``: `default_device`), with a clear error for a bad name.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device("gpu")
    Traceback (most recent call last):
    ...
    ValueError: device='gpu' is not a device name; use 'cpu', 'cuda', 'cuda:0' ... or None (CUDA when available).
    """
    if device is None:
        return default_device()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device={device!r} is not a device name; use 'cpu', 'cuda', 'cuda:0' ... or None "
                         "(CUDA when available).") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but this machine has no CUDA GPU; use device='cpu'.")
    return resolved


def predict_batch_size(device: torch.device) -> int:
    """Images per forward pass when predicting folders on `device` (`PREDICT_BS`).

    >>> predict_batch_size(torch.device("cpu"))
    8
    """
    return PREDICT_BS.get(device.type, PREDICT_BS["cpu"])

"""Which device a learner or a predictor runs on, and the per-device batch sizes measured (or chosen) for it."""

from __future__ import annotations

import torch

__all__ = ["CPU_FEATURE_BS", "CUDA_FEATURE_BS", "PREDICT_BS", "collective_device", "feature_batch_size",
           "predict_batch_size", "resolve_device"]

CPU_FEATURE_BS = 8  # measured: channels-last EfficientNet-Lite0 forward is fastest per image at 4-8 on 2 cores
CUDA_FEATURE_BS = 64  # not measured: a conservative default that fits any model we build on a 16 GB GPU
# images per forward pass when predicting: measured on 2 CPU cores (channels-last batches of 4-8 are the fastest
# per image); on CUDA not measured, the same conservative default as the features
PREDICT_BS = {"cpu": 8, "cuda": 64}


def resolve_device(device: str | torch.device | None = None, data_device: torch.device | None = None) -> torch.device:
    """The device to train on: `device` when given, else the data's device, else CUDA when available, else CPU.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a `torch.device`, or ``None``.
        data_device: the device the DataLoaders were given (``dls.device``), or ``None``.

    Returns:
        a `torch.device`.

    Raises:
        ValueError: a string torch does not know, a device without storage (``"meta"``), or CUDA asked for on a
            machine without it; the message names the argument and the choices.

    >>> resolve_device("cpu")
    device(type='cpu')
    >>> resolve_device(None, data_device=torch.device("cpu"))
    device(type='cpu')
    """
    if device is None:
        if data_device is not None:
            return _checked(data_device, "the DataLoaders' device")
        return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    return _checked(device, "device")


def _checked(device, what: str) -> torch.device:
    choices = "use 'cpu', 'cuda' (or 'cuda:1' ...), or None for the data's device, else CUDA when available"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"{what}={device!r} is not a device torch knows ({e}); {choices}.") from None
    if parsed.type == "meta":
        raise ValueError(f"{what}={device!r} holds no data, so nothing can train on it; {choices}.")
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{what}={device!r} but torch sees no CUDA device on this machine; use 'cpu' or None.")
    return parsed


def feature_batch_size(device: torch.device) -> int:
    """The batch size for computing cached features on `device` (inference only, so larger than training's).

    >>> feature_batch_size(torch.device("cpu"))
    8
    """
    return CPU_FEATURE_BS if torch.device(device).type == "cpu" else CUDA_FEATURE_BS


def predict_batch_size(device: torch.device) -> int:
    """Images per forward pass when a predictor runs over a folder on `device` (`PREDICT_BS`).

    >>> predict_batch_size(torch.device("cpu"))
    8
    """
    return PREDICT_BS.get(torch.device(device).type, PREDICT_BS["cpu"])


def collective_device() -> torch.device:
    """Where tensors of a collective (``torch.distributed``) must live: the current GPU for nccl, else the CPU."""
    if torch.distributed.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

"""Mixed precision: fastai's `MixedPrecision` callback (``learn.to_fp16()`` / ``to_bf16()``) on CUDA, off on the CPU.

fastai's callback runs the forward pass under CUDA autocast with a gradient scaler (fp16) or without (bf16).
`mixed_precision_callback` makes it from the names a user types (``"fp16"``, ``"bf16"``, ``"no"``) and returns
``None`` on the CPU, where CUDA autocast does nothing; `autocast_dtype` tells the feature cache which dtype the
learner's callback uses, so the frozen body's pass runs in the same precision as training.
"""

from __future__ import annotations

import torch
from fastai.callback.fp16 import AMPMode, MixedPrecision

from ..choices import PRECISIONS

__all__ = ["PRECISIONS", "autocast_dtype", "mixed_precision_callback"]



def mixed_precision_callback(precision: str | None, device: torch.device, **kwargs) -> MixedPrecision | None:
    """fastai's `MixedPrecision` callback for `precision` on `device`; ``None`` for ``"no"`` or on the CPU.

    Raises:
        ValueError: a `precision` other than ``"no"``, ``"fp16"``, ``"bf16"`` or ``None``.

    >>> mixed_precision_callback("fp16", torch.device("cpu")) is None
    True
    >>> mixed_precision_callback("bf16", torch.device("cuda")).amp_mode
    <AMPMode.BF16: 'bf16'>
    """
    if precision is None or precision == "no":
        return None
    if precision not in PRECISIONS:
        raise ValueError(f"mixed_precision must be one of {PRECISIONS} (or None), got {precision!r}")
    if torch.device(device).type != "cuda":
        return None  # CUDA autocast only: on the CPU fastai's callback would train in float32 behind a warning
    return MixedPrecision(amp_mode=AMPMode(precision), **kwargs)  # kwargs: GradScaler's (init_scale ...)


def autocast_dtype(cbs, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the `MixedPrecision` callback in `cbs` on a CUDA `device`, else ``None``.

    >>> autocast_dtype([MixedPrecision(amp_mode="bf16")], torch.device("cuda"))
    torch.bfloat16
    >>> autocast_dtype([MixedPrecision()], torch.device("cpu")) is None
    True
    """
    if torch.device(device).type != "cuda":
        return None
    for cb in cbs:
        if isinstance(cb, MixedPrecision):
            return torch.bfloat16 if cb.amp_mode == AMPMode.BF16 else torch.float16
    return None

"""Images given as arrays (numpy or torch) turned into 8-bit RGB PIL images, without silent wrap-around or black.

Accepted: ``HxW`` (greyscale), ``HxWxC`` and, for torch tensors or when the layout is unambiguous, ``CxHxW``
(C = 1, 3 or 4); integers in 0..255, or floats in [0, 1] (scaled by 255). Anything else is a `DataError` that
says how to convert it, never a cast that wraps 300 to 44 or rounds 0.7 to 0.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import DataError

__all__ = ["rgb_from_array"]

_CHANNELS = (1, 3, 4)


def _channels_last(arr: np.ndarray, channels_first: bool) -> np.ndarray:
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3:
        raise DataError(f"An image array must be HxW, HxWxC or CxHxW; got shape {tuple(arr.shape)}.")
    if (channels_first and arr.shape[0] in _CHANNELS) or (arr.shape[-1] not in _CHANNELS and arr.shape[0] in _CHANNELS):
        arr = np.moveaxis(arr, 0, -1)
    if arr.shape[-1] not in _CHANNELS:
        raise DataError(f"An image array needs 1, 3 or 4 channels; got shape {tuple(arr.shape)}.")
    return arr[..., 0] if arr.shape[-1] == 1 else arr


def _as_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0:
        raise DataError(f"The image array is empty (shape {tuple(arr.shape)}).")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise DataError("The image array holds NaN or infinite values; give finite values in [0, 1].")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0 or hi > 1:
            raise DataError(f"A float image array must lie in [0, 1]; this one spans [{lo:g}, {hi:g}]. Scale it to "
                            "[0, 1], or pass 0-255 values as integers (array.astype(np.uint8)).")
        return np.round(arr * 255).astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
        if arr.dtype == np.bool_:
            return arr.astype(np.uint8) * 255
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise DataError(f"An integer image array must lie in 0..255; this one spans {lo}..{hi}. Scale it first "
                            "(a 16-bit image: (array // 257).astype(np.uint8)).")
        return arr.astype(np.uint8)
    raise DataError(f"Cannot read an image from an array of {arr.dtype}; give integers in 0..255 or floats in [0, 1].")


def rgb_from_array(image) -> Image.Image:
    """An RGB PIL image from a numpy array or torch tensor (see the module for the layouts and value ranges).

    >>> rgb_from_array(np.full((2, 2, 3), 0.5)).getpixel((0, 0))
    (128, 128, 128)
    >>> rgb_from_array(torch.ones(3, 4, 5)).size  # a CHW tensor: width 5, height 4
    (5, 4)
    """
    is_tensor = isinstance(image, torch.Tensor)
    arr = image.detach().cpu().numpy() if is_tensor else np.asarray(image)
    arr = _as_uint8(_channels_last(arr, channels_first=is_tensor))
    return Image.fromarray(np.ascontiguousarray(arr)).convert("RGB")

"""Any image as upright 8-bit RGB: files (EXIF rotation, greyscale, palette, alpha, CMYK, 16-bit), PIL images of
any mode, and arrays or tensors (`as_rgb`, the one function every predictor and learner ``predict`` uses)."""

from __future__ import annotations

import os
import threading
import warnings
from contextlib import contextmanager

import numpy as np
from fastai.data.block import TransformBlock
from fastai.vision.core import PILImage
from fastai.vision.data import IntToFloatTensor
from PIL import Image, ImageOps

from ..errors import DataError
from .arrays import rgb_from_array

__all__ = ["RESAMPLE_FILTERS", "ImageBlockRGB", "as_rgb", "load_rgb_image", "open_rgb", "resample_filter", "to_rgb"]

_HIGH_DEPTH = {"I;16", "I;16B", "I;16L", "I;16N", "I", "F"}
_ALPHA = {"RGBA", "LA", "PA", "RGBa", "La"}
_MODE_NAMES = {"L": "greyscale", "1": "black-and-white", "P": "palette", "CMYK": "CMYK", "YCbCr": "YCbCr",
               "LAB": "Lab", "HSV": "HSV"}


def _to_8bit(img: Image.Image) -> Image.Image:
    """A 16-bit / 32-bit / float greyscale image scaled to 8 bits (``convert("L")`` would clip it to white)."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode.startswith("I;16"):
        arr = arr / 257.0
    elif img.mode == "F" and arr.size and np.nanmax(arr) <= 1.0:
        arr = arr * 255.0
    elif arr.size and np.nanmax(arr) > 255:
        arr = arr * (255.0 / 65535.0) if np.nanmax(arr) <= 65535 else arr * (255.0 / np.nanmax(arr))
    return Image.fromarray(np.clip(np.nan_to_num(arr), 0, 255).round().astype(np.uint8), mode="L")


_WARNING_FILTERS_LOCK = threading.Lock()


@contextmanager
def _pillow_advice_silenced():
    """Ignore Pillow's UserWarnings inside; one thread at a time, because `warnings.catch_warnings` saves and
    restores process-wide state: two file-check threads interleaving could leave an "ignore" filter behind and
    silence every later warning (the data report's too)."""
    with _WARNING_FILTERS_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        yield


def to_rgb(img: Image.Image) -> tuple[Image.Image, list[str]]:
    """`img` as upright 8-bit RGB, and a note for every conversion that was needed.

    EXIF orientation is applied; transparency is flattened onto white; CMYK, greyscale and palette images are
    converted; 16-bit and float greyscale is scaled to 8 bits, not clipped.

    >>> rgb, notes = to_rgb(Image.new("L", (4, 4))); rgb.mode, notes
    ('RGB', ['greyscale -> RGB'])
    """
    notes = []
    orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
    if orientation not in (1, None):
        img = ImageOps.exif_transpose(img)
        notes.append(f"EXIF orientation {orientation} applied")
    mode = img.mode
    if mode in _HIGH_DEPTH:
        img = _to_8bit(img).convert("RGB")
        notes.append(f"{'16-bit' if mode.startswith('I;16') else mode + '-mode'} greyscale -> 8-bit RGB")
    elif mode in _ALPHA or (mode == "P" and "transparency" in img.info):
        with _pillow_advice_silenced():  # "palette images with transparency ...": we do exactly that
            rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba).convert("RGB")
        notes.append(f"{mode} transparency flattened onto white")
    elif mode != "RGB":
        img = img.convert("RGB")
        notes.append(f"{_MODE_NAMES.get(mode, mode)} -> RGB")
    return img, notes


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image file as upright 8-bit RGB (see `to_rgb`).

    >>> import tempfile
    >>> from pathlib import Path
    >>> grey = Path(tempfile.mkdtemp()) / "grey.png"
    >>> Image.new("L", (8, 8)).save(grey)
    >>> open_rgb(grey).mode
    'RGB'
    """
    with Image.open(path) as img:
        img.load()
        rgb, _ = to_rgb(img)
        if rgb is img:
            rgb = img.copy()
    return rgb


def as_rgb(item) -> Image.Image:
    """Any one image as an upright 8-bit RGB PIL image; the caller's object is never changed.

    Args:
        item: a file path; a PIL image of any mode (EXIF orientation applied, alpha flattened onto white, 16-bit
            scaled, see `to_rgb`); or a numpy array / torch tensor, ``HxW``, ``HxWxC`` or ``CxHxW`` (C = 1, 3 or 4),
            integers in 0..255 or floats in [0, 1] (see `rgb_from_array`).

    Returns:
        A new RGB ``PIL.Image.Image``.

    Raises:
        DataError: an array of another shape, range or type (the message says how to convert it).
        TypeError: an object that is none of these.

    >>> as_rgb(np.full((3, 2, 5), 1.0)).size  # a float CHW array: width 5, height 2
    (5, 2)
    >>> as_rgb(Image.new("LA", (2, 2))).mode
    'RGB'
    """
    if isinstance(item, (str, os.PathLike)):
        return open_rgb(item)
    if isinstance(item, Image.Image):
        item.load()
        rgb, _ = to_rgb(item)
        return item.copy() if rgb is item else rgb
    if isinstance(item, np.ndarray) or hasattr(item, "__array__") or hasattr(item, "detach"):
        return rgb_from_array(item)
    raise TypeError(f"Cannot read an image from a {type(item).__name__}; give a file path, a PIL image, or an "
                    "HxWx3 / CxHxW array or tensor (0..255 integers or [0, 1] floats).")


def load_rgb_image(path) -> PILImage:
    """The DataBlock's image loader: `open_rgb` as a fastai `PILImage`; a file that fails names itself.

    An image that is already loaded (``learn.predict(pil_image)``) is converted with `to_rgb`.
    """
    if isinstance(path, Image.Image):
        return PILImage.create(to_rgb(path)[0])
    try:
        return PILImage.create(open_rgb(path))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(
            f"Could not read image {str(path)!r} ({type(e).__name__}: {e}). It may have changed since the data was "
            "built; build the data again so the file check can exclude it."
        ) from e


def ImageBlockRGB() -> TransformBlock:  # noqa: N802 (named like fastai's ImageBlock)
    """fastai's `ImageBlock`, loading with `load_rgb_image` (upright RGB from any mode, clear errors)."""
    return TransformBlock(type_tfms=load_rgb_image, batch_tfms=IntToFloatTensor)


RESAMPLE_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}


def resample_filter(name: str) -> Image.Resampling:
    """The PIL filter for a resize-filter name (``"bicubic"`` ...); bilinear for a name PIL does not have.

    >>> resample_filter("bicubic").name
    'BICUBIC'
    """
    return RESAMPLE_FILTERS.get(name, Image.Resampling.BILINEAR)

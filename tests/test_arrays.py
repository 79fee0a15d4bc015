"""easytransfer/data/arrays.py: arrays and tensors as 8-bit RGB images, never wrapped around or rounded to black."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from easytransfer.data.arrays import rgb_from_array
from easytransfer.errors import DataError


@pytest.mark.parametrize(("image", "size", "pixel"), [
    (np.full((4, 6), 7, np.uint8), (6, 4), (7, 7, 7)),  # greyscale HxW
    (np.full((4, 6, 3), 0.5), (6, 4), (128, 128, 128)),  # floats in [0, 1]
    (np.full((4, 6, 4), 200, np.uint8), (6, 4), (200, 200, 200)),  # RGBA
    (np.ones((1, 4, 6), bool), (6, 4), (255, 255, 255)),  # a CxHxW mask
    (torch.zeros(3, 4, 6), (6, 4), (0, 0, 0)),  # a CHW tensor
    (torch.full((5, 6, 3), 9, dtype=torch.uint8), (6, 5), (9, 9, 9)),  # an HWC tensor (5 is no channel count)
])
def test_layouts_and_ranges_give_the_same_rgb_image(image, size, pixel):
    out = rgb_from_array(image)
    assert out.mode == "RGB" and out.size == size and out.getpixel((0, 0)) == pixel


@pytest.mark.parametrize(("image", "match"), [
    (np.full((4, 4, 3), 1.5), r"\[0, 1\]"),
    (np.full((4, 4, 3), 300), r"0\.\.255"),
    (np.full((4, 4, 3), np.nan), "NaN"),
    (np.zeros((5, 5, 2)), "1, 3 or 4 channels"),
    (np.zeros((1, 4, 4, 3)), "HxW, HxWxC or CxHxW"),
    (np.zeros((0, 4, 3)), "empty"),
    (np.full((2, 2, 3), "a"), "Cannot read an image"),
])
def test_what_cannot_be_an_image_is_a_data_error_with_the_fix(image, match):
    with pytest.raises(DataError, match=match):
        rgb_from_array(image)

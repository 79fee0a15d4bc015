"""Tests of easytransfer/data/images.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

from easytransfer.data.images import open_rgb


def test_conversions_give_upright_8bit_rgb(messy):
    _, f = messy
    sixteen = np.asarray(open_rgb(f["sixteen"]))
    assert sixteen.shape == (40, 40, 3) and abs(sixteen.mean() - 30000 / 257) < 1  # scaled, not clipped to 255
    assert open_rgb(f["rotated"]).size == (40, 60)  # stored 60x40, displayed upright 40x60
    assert np.asarray(open_rgb(f["rgba"]))[0, 0].tolist() == [255, 255, 255]  # transparent -> white
    cmyk = np.asarray(open_rgb(f["cmyk"]))[0, 0]
    assert cmyk[0] > 200 and cmyk[1] < 60 and cmyk[2] < 60  # CMYK (0, 255, 255, 0) is red


def test_converting_images_in_threads_leaves_the_warning_filters_as_they_were():
    """The file check converts in threads; a conversion that silences Pillow must not leave a filter behind."""
    from concurrent.futures import ThreadPoolExecutor

    from easytransfer.data.images import to_rgb

    palette = Image.new("P", (16, 16))
    palette.info["transparency"] = b"\x00" * 256  # transparency as bytes: Pillow advises RGBA
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        before = list(warnings.filters)
        with ThreadPoolExecutor(8) as pool:
            modes = set(pool.map(lambda _: to_rgb(palette.copy())[0].mode, range(400)))
        assert modes == {"RGB"} and warnings.filters == before

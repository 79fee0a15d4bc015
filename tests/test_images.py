"""Tests of easytransfer/data/images.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_image_folder
from PIL import Image

from easytransfer.data.images import open_rgb


def make_messy_folder(root: Path) -> dict:
    """Good images in cat/ and dog/, plus one of every kind of trouble. Returns {name: path}."""
    make_image_folder(root, per_class=6)
    (root / "bird").mkdir()  # an empty class folder
    f = {}
    f["truncated"] = root / "cat" / "truncated.jpg"
    noisy = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, "JPEG", quality=95)
    f["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    f["empty"] = root / "cat" / "empty.jpg"
    f["empty"].write_bytes(b"")
    f["text"] = root / "dog" / "notes.jpg"
    f["text"].write_text("this is not an image, it is a note someone saved with the wrong name\n")
    f["huge"] = root / "dog" / "huge.png"
    Image.new("RGB", (300, 300), (0, 90, 0)).save(f["huge"])
    f["png_as_jpg"] = root / "cat" / "png_named.jpg"
    Image.new("RGB", (40, 40), (10, 200, 10)).save(f["png_as_jpg"], "PNG")
    f["gif_as_jpg"] = root / "dog" / "gif_named.jpg"
    Image.new("RGB", (40, 40), (10, 10, 200)).convert("P").save(f["gif_as_jpg"], "GIF")
    f["cmyk"] = root / "cat" / "cmyk.jpg"
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(f["cmyk"], "JPEG")
    f["sixteen"] = root / "dog" / "sixteen.png"
    Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16)).save(f["sixteen"])
    f["rgba"] = root / "cat" / "rgba.png"
    Image.new("RGBA", (40, 40), (255, 0, 0, 0)).save(f["rgba"])
    f["palette"] = root / "dog" / "palette.png"
    Image.new("RGB", (40, 40), (120, 60, 200)).quantize(8).save(f["palette"])
    f["rotated"] = root / "cat" / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    Image.new("RGB", (60, 40), (220, 220, 30)).save(f["rotated"], "JPEG", exif=exif.tobytes())
    return f


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "messy"
    return root, make_messy_folder(root)


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

    from PIL import Image

    from easytransfer.data.images import to_rgb

    palette = Image.new("P", (16, 16))
    palette.info["transparency"] = b"\x00" * 256  # transparency as bytes: Pillow advises RGBA
    with warnings.catch_warnings():
        warnings.simplefilter("default")
        before = list(warnings.filters)
        with ThreadPoolExecutor(8) as pool:
            modes = set(pool.map(lambda _: to_rgb(palette.copy())[0].mode, range(400)))
        assert modes == {"RGB"} and warnings.filters == before

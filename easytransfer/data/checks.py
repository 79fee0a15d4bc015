"""Checking image files once, when the data is built: what cannot be used is excluded with a reason."""

from __future__ import annotations

import errno
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError

from ..progress import progress_bar
from .images import to_rgb

__all__ = ["DEFAULT_MAX_PIXELS", "FileCheck", "check_files", "check_image_file", "check_items"]

DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485  # Pillow's decompression-bomb threshold
_JPEG_EXTS = {".jpg", ".jpeg", ".jpe", ".jfif"}
_EXT_FORMATS = {".png": "PNG", ".gif": "GIF", ".bmp": "BMP", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF"}
_UNREACHABLE = {  # why a file's size cannot be read, by errno (otherwise: not found)
    errno.ELOOP: "symbolic link loop: the link points back to itself",
    errno.EACCES: "permission denied: your user cannot reach the file (check its folder's permissions)",
}
PROGRESS_MIN_FILES = 500  # show a progress bar when checking at least this many files


@dataclass
class FileCheck:
    """The outcome of checking one file: usable or not (`reason`), and conversions it will need (`notes`)."""

    path: str
    reason: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.reason is None


def _looks_like_text(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(512)
    return bool(head) and b"\x00" not in head and all(32 <= b < 127 or b in b"\t\r\n" for b in head)


def check_image_file(path: str | os.PathLike, max_pixels: int = DEFAULT_MAX_PIXELS) -> FileCheck:
    """Check that `path` decodes to an image of at most `max_pixels` pixels, header first, then the data.

    Reasons for exclusion: missing, permission denied, a symbolic link loop, empty (0 bytes), not an
    image (text, unknown format), too many pixels (a decompression bomb or a huge scan), truncated or corrupt
    data. Notes: wrong extension, and each
    conversion to upright RGB the file will need (see `to_rgb`).

    >>> import tempfile
    >>> from pathlib import Path
    >>> text = Path(tempfile.mkdtemp()) / "photo.jpg"
    >>> text.write_text("not an image")
    12
    >>> check_image_file(text).reason
    'not an image: a text file'
    """
    path = str(path)
    check = FileCheck(path)
    try:
        size = os.path.getsize(path)
    except OSError as error:
        check.reason = _UNREACHABLE.get(error.errno, "file not found")
        return check
    if size == 0:
        check.reason = "empty file (0 bytes)"
        return check
    try:
        with Image.open(path) as img:
            width, height = img.size
            if width * height > max_pixels:
                check.reason = f"too large: {width}x{height} pixels (limit {max_pixels:,}; raise max_pixels to keep it)"
                return check
            ext = Path(path).suffix.lower()
            expected = "JPEG" if ext in _JPEG_EXTS else _EXT_FORMATS.get(ext)
            if expected is not None and img.format not in (expected, "MPO" if expected == "JPEG" else expected):
                check.notes.append(f"{img.format} content in a {ext} file")
            if img.format == "JPEG":
                img.draft("RGB", (256, 256))  # decode at reduced scale: every byte is still read and checked
            img.load()
            _, notes = to_rgb(img)
            check.notes.extend(notes)
    except Image.DecompressionBombError as e:
        check.reason = f"too large: {e}"
    except PermissionError:
        check.reason = "permission denied: your user cannot read the file (check its permissions)"
    except UnidentifiedImageError:
        kind = "a text file" if _looks_like_text(path) else "not an image format Pillow can read"
        check.reason = f"not an image: {kind}"
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        check.reason = f"truncated or corrupt: {e}"
    return check


def check_files(paths, max_pixels: int = DEFAULT_MAX_PIXELS, workers: int | None = None,
                progress: bool | None = None) -> list[FileCheck]:
    """`check_image_file` on every path, in threads (Pillow decodes without the GIL), in the input order.

    A progress bar is shown from `PROGRESS_MIN_FILES` files on (``progress=True`` / ``False`` to force).
    """
    paths = [str(p) for p in paths]
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    show = len(paths) >= PROGRESS_MIN_FILES if progress is None else progress
    with ThreadPoolExecutor(workers) as pool:
        results = pool.map(lambda p: check_image_file(p, max_pixels), paths, chunksize=16)
        if show:
            results = progress_bar(results, total=len(paths), comment="checking image files")
        return list(results)


def check_items(items: pd.DataFrame, *, check: bool, max_pixels: int):
    """Run the file check on the ``path`` column of `items`; returns (kept items, excluded rows, converted rows)."""
    empty = pd.DataFrame(columns=["path", "label", "note"])
    if not check or len(items) == 0:
        return items, items.iloc[:0].assign(reason=[]), empty
    results = check_files(items["path"], max_pixels=max_pixels)
    ok = np.array([r.ok for r in results], dtype=bool)
    excluded = items[~ok].assign(reason=[r.reason for r, k in zip(results, ok) if not k])
    notes = [(row.path, row.label, note) for row, r in zip(items.itertuples(), results) if r.ok for note in r.notes]
    return items[ok].reset_index(drop=True), excluded, pd.DataFrame(notes, columns=["path", "label", "note"])

"""Real image data that ships inside installable packages, so examples and tests run offline."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["textile_folder", "textile_items", "textile_root"]


def textile_root() -> Path:
    """Folder of the simulated textile images from the ``conformal-clip-data`` package.

    Three class sub-folders: ``nominal`` (1,000 images), ``local`` (500, a small local defect) and
    ``global`` (500, a defect over the whole image); 250x250 greyscale-looking JPEGs.
    """
    import conformal_clip_data

    return Path(conformal_clip_data.textile_simulated_root())


def textile_items(limit: int | None = None, seed: int = 42) -> pd.DataFrame:
    """The textile images as a table (``path``, ``label``), at most `limit` per class drawn with `seed`.

    >>> textile_items(limit=5)["label"].value_counts().to_dict()
    {'global': 5, 'local': 5, 'nominal': 5}
    """
    rng = np.random.default_rng(seed)
    rows = []
    for class_dir in sorted(p for p in textile_root().iterdir() if p.is_dir()):
        files = sorted(class_dir.glob("*.jpg"))
        if limit is not None and limit < len(files):
            files = [files[i] for i in sorted(rng.choice(len(files), size=limit, replace=False))]
        rows += [(str(f), class_dir.name) for f in files]
    return pd.DataFrame(rows, columns=["path", "label"])


def textile_folder(limit: int | None = None, *, seed: int = 42, dest: str | os.PathLike | None = None) -> Path:
    """A folder of class sub-folders with (a sample of) the textile images, ready for `ImageData.from_folder`.

    Files are linked, not copied, where the file system allows it.

    >>> path = textile_folder(limit=30)
    >>> sorted(p.name for p in path.iterdir())
    ['global', 'local', 'nominal']
    """
    dest = Path(dest) if dest is not None else Path(tempfile.mkdtemp(prefix="textile-"))
    for path, label in textile_items(limit, seed).itertuples(index=False):
        target = dest / label / Path(path).name
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():
            continue
        try:
            os.symlink(path, target)
        except OSError:
            shutil.copyfile(path, target)
    return dest

"""Tests of easytransfer/data/sources.py (moved here from the history-named test files: faults, student, contracts ...)."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image_folder

from easytransfer import DataError, ImageData
from easytransfer.data.checks import check_image_file
from easytransfer.data.sources import folder_items
from easytransfer.data.tables import table_items
from easytransfer.errors import DataWarning


def _as_nobody(run):
    """``run()`` as a user without root's power to read anything: in a forked child when we are root."""
    if os.geteuid() != 0:
        return run()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, send the result back
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = ("ok", run())
        except BaseException as error:  # noqa: BLE001 - every outcome goes back to the parent
            result = ("error", f"{type(error).__name__}: {error}")
        with os.fdopen(write, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        kind, value = pickle.load(f)
    os.waitpid(pid, 0)
    if kind == "error":
        raise AssertionError(value)
    return value


@pytest.fixture
def open_folder():
    """A folder under /tmp that another user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="et-faults-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def test_unreadable_class_folder_and_file_say_permission_denied(open_folder):
    make_image_folder(open_folder / "images", classes=("cat", "dog", "fox"), per_class=3, size=16)
    for path in [open_folder, *open_folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (open_folder / "images" / "fox").chmod(0o000)
    secret = open_folder / "images" / "cat" / "cat_0.jpg"
    secret.chmod(0o000)

    def gather():
        found = folder_items(open_folder / "images")
        return found.messages, check_image_file(secret).reason

    messages, reason = _as_nobody(gather)
    assert any("fox" in m and "cannot be read (permission denied)" in m for m in messages), messages
    assert not any("empty" in m for m in messages), messages
    assert reason.startswith("permission denied"), reason


def test_a_self_looping_symlink_is_excluded_with_its_reason(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    loop = images / "cat" / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.warns(DataWarning, match=r"Using 6 of 7 image files; excluded 1 \(1 symbolic link loop\)"):
        dls = ImageData.from_folder(images, bs=2, size=16, seed=0, valid_pct=0.34)
    assert len(dls.train.items) + len(dls.valid.items) == 6
    assert dls.report.reasons() == {str(loop): "symbolic link loop: the link points back to itself"}
    table = pd.DataFrame({"path": ["elsewhere/loop.jpg", "cat/cat_0.jpg"], "label": ["cat", "cat"]})
    assert len(table_items(table, images).items) == 2  # found by file name: no raw "Symlink loop" error


TINY = dict(bs=4, size=32)


def test_loose_images_are_named_as_such(tmp_path):

    folder = make_image_folder(tmp_path / "images", per_class=2)
    for sub in ("cat", "dog"):
        for f in list((folder / sub).iterdir()):
            f.rename(folder / f.name)
        (folder / sub).rmdir()
    with pytest.raises(DataError, match="lie loose, without class folders"):
        ImageData.from_folder(folder, **TINY)

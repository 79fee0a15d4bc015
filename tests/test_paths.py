"""easytransfer/data/paths.py: paths in a table found on this machine, as written or by their tail of folders."""

from __future__ import annotations

from pathlib import Path

from easytransfer.data.paths import path_parts, resolve_paths


def test_windows_and_posix_paths_split_into_folder_names():
    assert path_parts(r"C:\Users\me\data\cat\1.jpg") == ("Users", "me", "data", "cat", "1.jpg")
    assert path_parts("/home/me/data/cat/1.jpg") == ("home", "me", "data", "cat", "1.jpg")
    assert path_parts("cat/1.jpg") == ("cat", "1.jpg")


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_paths_as_written_then_by_longest_tail_and_ties_are_none(tmp_path):
    cat, dog = _touch(tmp_path / "cat" / "1.jpg"), _touch(tmp_path / "dog" / "1.jpg")
    only = _touch(tmp_path / "dog" / "2.jpg")
    messages: list[str] = []
    found = resolve_paths(["cat/1.jpg", r"D:\old\pets\dog\1.jpg", "/elsewhere/2.jpg", "1.jpg", "none.jpg"],
                          tmp_path, messages)
    assert found[0] == str(cat.resolve())  # as written, relative to the base
    assert found[1] == str(dog.resolve())  # "dog/1.jpg" is the longest tail that exists
    assert found[2] == str(only.resolve())  # one file of that name
    assert found[3] is None  # two files named 1.jpg, equally good: not guessed
    assert found[4] is None
    assert len(messages) == 1 and messages[0].startswith("2 path(s) in the table do not exist as written")

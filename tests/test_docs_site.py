"""The documentation site builds strictly and offline, and its API reference covers every public name."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import easytransfer

ROOT = Path(__file__).resolve().parent.parent
API_PAGES = sorted((ROOT / "docs" / "api").glob("*.md"))


def public_names() -> set[str]:
    """The names ``from easytransfer import X`` offers: ``easytransfer.PUBLIC_NAMES`` (loaded on first use)."""
    return set(easytransfer.PUBLIC_NAMES)


def documented_names() -> set[str]:
    return {m for page in API_PAGES for m in re.findall(r"^::: easytransfer\.(\w+)$", page.read_text(), flags=re.M)}


def test_every_public_name_has_an_api_entry():
    names = public_names()
    assert "transfer_learner" in names and "Interpretation" in names  # the parse found the re-exports
    assert all(hasattr(easytransfer, n) for n in names)
    assert names - documented_names() == set(), "add a `::: easytransfer.NAME` line to a page in docs/api/"
    assert documented_names() - names == set(), "docs/api/ names something easytransfer does not export"


def test_doctest_fences_hook():
    spec = importlib.util.spec_from_file_location("doctest_fences", ROOT / "docs" / "hooks" / "doctest_fences.py")
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    lines = ["Text.", "", "    >>> f(1)  # doctest: +SKIP", "    2", "", "```", ">>> not touched", "```"]
    assert hook.fence_doctests(lines) == [
        "Text.", "", "    ```pycon", "    >>> f(1)", "    2", "    ```", "", "```", ">>> not touched", "```"]


@pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None, reason="mkdocs is not installed: pip install -e .[docs]")
def test_site_builds_strictly(tmp_path):
    """`mkdocs build --strict`: any broken link, missing reference or docstring warning fails it.

    The notebooks are rendered without executing them here (tests/test_notebooks.py runs them); `make docs`
    executes them.
    """
    env = {**os.environ, "EASYTRANSFER_DOCS_EXECUTE": "false", "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    train = (tmp_path / "site" / "api" / "train.html").read_text()
    for anchor in ("easytransfer.transfer_learner", "easytransfer.TransferLearner.fit_discriminative"):
        assert f'id="{anchor}"' in train
    assert 'id="easytransfer.ImageData"' in (tmp_path / "site" / "api" / "data.html").read_text()
    assert 'id="easytransfer.Interpretation"' in (tmp_path / "site" / "api" / "evaluate.html").read_text()
    assert (tmp_path / "site" / "nbs" / "00_quickstart.html").exists()
    assert "fonts.googleapis.com" not in (tmp_path / "site" / "index.html").read_text()

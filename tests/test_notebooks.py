"""Every notebook in nbs/ runs from top to bottom; a notebook that breaks fails the suite."""

import importlib.util
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parent.parent / "nbs").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors


ROOT = Path(__file__).resolve().parent.parent


GENERATORS = sorted((ROOT / "tools").glob("make_*_notebook.py"))


def _load_generator(path: Path):
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))  # the generators import tools/notebook_builder.py, as when run there
    spec = importlib.util.spec_from_file_location(f"generator_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # builds the cells; writes and executes nothing
    return module


def _sources(path: Path) -> list[tuple[str, str]]:
    nb = nbformat.read(path, as_version=4)
    return [(cell.cell_type, cell.source) for cell in nb.cells if cell.cell_type in ("code", "markdown")]


def test_there_are_notebook_generators():
    assert len(GENERATORS) >= 4


@pytest.mark.parametrize("generator", GENERATORS, ids=[p.stem for p in GENERATORS])
def test_each_generator_writes_the_committed_notebook(generator, tmp_path):
    module = _load_generator(generator)
    committed = module.NOTEBOOK
    assert committed.parent == ROOT / "nbs" and committed.exists(), committed
    written = module.write_notebook(tmp_path / committed.name)
    assert _sources(written) == _sources(committed), (
        f"{committed.name} differs from {generator.name}: regenerate it with `python tools/{generator.name}` "
        "and run it with tools/run_notebook.py, or update the generator"
    )

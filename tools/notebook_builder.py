"""What every ``make_*_notebook.py`` shares: a list of cells becomes a notebook with a Python 3 kernel, no outputs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import nbformat as nbf

markdown, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell


def build_notebook(cells: Sequence[nbf.NotebookNode]) -> nbf.NotebookNode:
    """A notebook holding `cells` with a Python 3 kernel, no outputs."""
    nb = nbf.v4.new_notebook()
    nb.cells = list(cells)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def notebook_writer(cells: Sequence[nbf.NotebookNode], default: Path) -> Callable[..., Path]:
    """``write_notebook(path=default)``: writes the notebook of `cells` to `path`; nothing is executed."""

    def write_notebook(path: str | Path = default) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nbf.write(build_notebook(cells), path)
        return path

    return write_notebook

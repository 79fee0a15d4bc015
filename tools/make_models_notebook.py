"""Writes ``nbs/01_choosing_a_model.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_models_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

import nbformat as nbf

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/01_choosing_a_model.ipynb"

md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
CELLS = [
    md("# Choosing a pre-trained model\n\n`describe_model` prints what easytransfer knows about an architecture "
       "(nothing is downloaded), and `summary_groups` shows the layer groups that freezing and learning rates work on."),
    code("from easytransfer import describe_model, list_models\n\n"
         "for arch in [\"resnet50\", \"efficientnet_b3\", \"convnext_tiny\", \"vit_small_patch14_dinov2\", "
         "\"vit_base_patch16_clip_224\", \"tv:mobilenet_v3_large\"]:\n"
         "    describe_model(arch)\n    print()"),
    code("list_models(\"*lite*\", offline_only=True)"),
    md("## Layer groups before and after `unfreeze(2)`"),
    code("from easytransfer import ImageData, transfer_learner\nfrom easytransfer.datasets import textile_folder\n\n"
         "dls = ImageData.from_folder(textile_folder(limit=10, seed=0), valid_pct=0.2, seed=42)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\")\nlearn.summary_groups()"),
    code("learn.unfreeze(2)\nlearn.summary_groups()"),
]


def build_notebook() -> nbf.NotebookNode:
    """The notebook: `CELLS` with a Python 3 kernel, no outputs."""
    nb = nbf.v4.new_notebook()
    nb.cells = list(CELLS)
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    return nb


def write_notebook(path: str | Path = NOTEBOOK) -> Path:
    """Write the notebook to `path` (default the committed one in nbs/); nothing is executed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbf.write(build_notebook(), path)
    return path


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

"""Writes ``nbs/01_choosing_a_model.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_models_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

from notebook_builder import code, markdown, notebook_writer

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/01_choosing_a_model.ipynb"

md = markdown
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


write_notebook = notebook_writer(CELLS, NOTEBOOK)


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

"""Writes ``nbs/00_quickstart.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_quickstart_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

from notebook_builder import code, markdown, notebook_writer

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/00_quickstart.ipynb"

md = markdown
CELLS = [
    md("# Quickstart: transfer learning in three lines\n\n"
       "A pre-trained EfficientNet-Lite0 (real ImageNet weights, installed with easytransfer, no download) "
       "learns to tell nominal textile images from ones with a local or a global defect.\n\n"
       "Your own data is a folder with one sub-folder per class (`images/nominal/*.jpg`, `images/local/*.jpg` ...). "
       "Here we make such a folder from 30 images per class of the textile set that ships with the "
       "`conformal-clip-data` package."),
    code("%matplotlib inline\nfrom easytransfer.datasets import textile_folder\n\n"
         "path = textile_folder(limit=30, seed=0)  # class sub-folders: global/ local/ nominal/\n"
         "sorted(p.name for p in path.iterdir())"),
    md("## The recipe\n\n"
       "`ImageData.from_folder` makes a stratified, seeded train / valid split. `transfer_learner` loads the model, "
       "replaces its ImageNet head with one for our three classes and applies the model's own preprocessing "
       "(224 px, bicubic, mean = std = 0.5 for this model). `fit_frozen` trains only the new head; `unfreeze` "
       "opens every layer group; `fit_discriminative` fine-tunes with a learning rate per group, smallest at the stem."),
    code("from easytransfer import ImageData, transfer_learner\n"
         "dls = ImageData.from_folder(path, valid_pct=0.2, seed=42)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\"); learn.fit_frozen(3); learn.unfreeze(); learn.fit_discriminative(5);"),
    md("## The data, as checked\n\nEvery file was checked when the data was built; the report counts images per class and split "
       "and would list any file that was excluded or converted (none here)."),
    code("print(dls.report)"),
    md("## What happened\n\nOne row per epoch, with the phase, the accuracy on the (augmented) training batches and the peak "
       "learning rate of each layer group (`lr_0` is the stem, the last one the head)."),
    code("learn.history"),
    code("learn.plot_history()"),
    code("print(learn.diagnose())"),
    md("## Evaluate\n\nPredictions on the validation set are computed once; the per-class table and the confusion matrix are read from them."),
    code("interp = learn.interpret()\ninterp.per_class().round(3)"),
    code("interp.plot_confusion_matrix()"),
    md("30 images per class is very little for this task (a local defect is a speck a few pixels wide); "
       "`make demo` trains on more images and reports on a held-out test set."),
]


write_notebook = notebook_writer(CELLS, NOTEBOOK)


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

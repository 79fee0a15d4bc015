"""Writes ``nbs/03_reading_your_models_mistakes.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_mistakes_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

from notebook_builder import code, markdown, notebook_writer

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/03_reading_your_models_mistakes.ipynb"

md = markdown
CELLS = [
    md("# Reading your model's mistakes\n\n"
       "Accuracy is one number; a model that is 90% right can still miss every image of the class you care about. "
       "`learn.interpret()` runs the model once over a set of images and keeps the probabilities, the predictions "
       "and the loss of every image; every table and plot below is read from them, nothing is predicted twice.\n\n"
       "We train EfficientNet-Lite0 briefly on 60 textile images per class and keep a held-out test set aside."),
    code("%matplotlib inline\nfrom fastai.torch_core import set_seed\n"
         "from easytransfer import ImageData, transfer_learner\n"
         "from easytransfer.datasets import textile_items\n"
         "from easytransfer.data import split_train_valid_test\n\n"
         "train_valid, test = split_train_valid_test(textile_items(limit=60, seed=0), seed=0)\n"
         "dls = ImageData.from_df(train_valid, valid_col=\"is_valid\")\n"
         "set_seed(0)\nlearn = transfer_learner(dls, \"efficientnet_lite0\")\n"
         "learn.fit_frozen(2); learn.unfreeze(); learn.fit_discriminative(3);"),
    md("## Per class: precision, recall, F1, support\n\n"
       "Precision: of the images predicted as this class, the share that are. Recall: of the images of this class, "
       "the share found. Support: how many images of the class there are. The table matches scikit-learn's "
       "`classification_report`; `report()` adds a line when one class's recall is far below the overall accuracy."),
    code("interp = learn.interpret()\ninterp.report()"),
    md("## Which classes are confused with which\n\nRows are the actual class, columns the prediction. "
       "Normalised, the diagonal is each class's recall."),
    code("interp.plot_confusion_matrix(normalize=True)"),
    code("interp.most_confused()"),
    md("## The images it gets most wrong\n\n"
       "Titles read *predicted / actual* and *loss / probability given to the actual class*. Look for patterns: "
       "wrong labels in your data, a defect too small to survive the resize, a class that needs more examples."),
    code("interp.plot_top_losses(9)"),
    md("## The held-out test set, with and without test-time augmentation\n\n"
       "`evaluate` runs one pass over images never used for training or for choosing the best epoch. With "
       "`tta=True` each image is also seen with the training augmentations and the predictions are averaged."),
    code("test_dl = learn.dls.labelled_dl(test)\n"
         "{\"plain\": learn.evaluate(test_dl), \"tta\": learn.evaluate(test_dl, tta=True)}"),
    md("## Everything in one file\n\n`save_report` writes one HTML file with the data summary, the model and its "
       "layer groups with their learning rates, the training curves, the LR finder plot (when one was run), the "
       "confusion matrix, the top losses, the per-class table and the diagnosis; images are embedded, so the file "
       "can be mailed or archived as it is."),
    code("path = learn.save_report(\"textile_report.html\")\nprint(path, path.stat().st_size // 1024, \"KiB\")"),
    code("print(learn.diagnose())"),
]


write_notebook = notebook_writer(CELLS, NOTEBOOK)


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

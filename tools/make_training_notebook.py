"""Writes ``nbs/02_feature_extraction_or_fine_tuning.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_training_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

from notebook_builder import code, markdown, notebook_writer

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/02_feature_extraction_or_fine_tuning.ipynb"

md = markdown
CELLS = [
    md("# Feature extraction or fine-tuning?\n\n"
       "Two ways to reuse a pre-trained network:\n\n"
       "- **feature extraction**: the body stays frozen, only the new head learns (`fit_frozen`). Fast, hard to "
       "over-fit, and often enough when your images look like the pre-training images.\n"
       "- **fine-tuning**: after the head, some or all body layer groups are unfrozen and trained with small, "
       "discriminative learning rates (`unfreeze`, `fit_discriminative`, or `fit_gradual`). Slower, and it pays "
       "off when your images differ from ImageNet (textiles, cells, X-rays) and you have enough of them.\n\n"
       "Here we run both on the same small subset of the textile images (60 per class) and compare the histories."),
    code("%matplotlib inline\nimport matplotlib.pyplot as plt\n"
         "from fastai.torch_core import set_seed\n"
         "from easytransfer import ImageData, transfer_learner\n"
         "from easytransfer.datasets import textile_folder\n\n"
         "path = textile_folder(limit=60, seed=0)\n"
         "dls = ImageData.from_folder(path, valid_pct=0.2, seed=42)"),
    md("## A learning rate for the head\n\n"
       "`lr_find` trains for a few dozen batches with a learning rate that grows exponentially and records the "
       "loss; afterwards the weights and the optimizer are put back exactly as they were. `valley` is the "
       "suggestion `fit_frozen(lr=\"find\")` uses."),
    code("set_seed(0)\nextractor = transfer_learner(dls, \"efficientnet_lite0\")\n"
         "res = extractor.lr_find(num_it=50)\nres"),
    code("res.plot()"),
    md("## Feature extraction: five epochs with the body frozen\n\n"
       "Every fit warms the learning rate up, anneals it with a cosine, stops early after 5 epochs without "
       "improvement of the validation loss and ends with the weights of its best epoch."),
    code("extractor.fit_frozen(5, lr=3e-3)"),
    md("## Fine-tuning: two epochs for the head, then three with every group unfrozen\n\n"
       "Group k counted from the head gets `lr_max * decay**k` (1e-3, 1e-4, 1e-5 ...). BatchNorm layers keep "
       "their pre-trained statistics (`freeze_bn_stats=True`), which is what makes fine-tuning on batches of 16 stable."),
    code("set_seed(0)\ntuner = transfer_learner(dls, \"efficientnet_lite0\")\n"
         "tuner.fit_frozen(2, lr=3e-3)\ntuner.unfreeze()\ntuner.summary_groups()"),
    code("tuner.fit_discriminative(3, lr_max=1e-3)"),
    md("## The two histories side by side\n\n"
       "Left: losses; right: accuracy on the training batches (augmented) and on the validation images. "
       "The shaded band is the second phase."),
    code("fig, axes = plt.subplots(2, 2, figsize=(12, 8), layout=\"constrained\")\n"
         "extractor.plot_history(axes=axes[0], title=\"feature extraction\")\n"
         "tuner.plot_history(axes=axes[1], title=\"fine-tuning\");"),
    code("tuner.history.round(4)"),
    md("## What the histories say\n\n`diagnose` reads a history and says in plain words what it sees and what to try next."),
    code("print(extractor.diagnose())"),
    code("print(tuner.diagnose())"),
    md("With 36 validation images one image is about 3% of accuracy, so read the comparison as a direction, not a "
       "verdict. On this data (textiles, far from ImageNet) fine-tuning usually wins once there are a few hundred "
       "images: `make demo` and `benchmarks/recipe_vs_fastai.py` train on more. `fit_gradual(epochs_per_stage=2)` "
       "is the cautious middle way: it opens one more layer group per stage."),
]


write_notebook = notebook_writer(CELLS, NOTEBOOK)


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

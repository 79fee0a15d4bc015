"""Writes ``nbs/04_zero_shot_and_foundation_models.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_zero_shot_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

from notebook_builder import code, markdown, notebook_writer

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/04_zero_shot_and_foundation_models.ipynb"

md = markdown
CELLS = [
    md("# Zero-shot and foundation models\n\n"
       "Four ways to get a classifier, from no labelled image to full fine-tuning:\n\n"
       "| you have | use | cost |\n| --- | --- | --- |\n"
       "| class names only | `zero_shot_classifier(classes, \"open_clip:...\")` | one pass over the prompts |\n"
       "| a handful of images per class | `fit_frozen(method=\"prototype\")` or `\"knn\"` | one pass over the images |\n"
       "| tens per class | `fit_frozen(method=\"logistic\")`, or `head=\"zero_shot\"` + `fit_frozen` | seconds |\n"
       "| hundreds, a domain far from photos | `unfreeze()` + `fit_discriminative` | minutes |\n\n"
       "CLIP weights download once when online (`\"open_clip:ViT-B-32/openai\"`) or come from a folder "
       "(`\"open_clip:local-dir:PATH\"`). This notebook runs offline on the tiny CLIP that ships with the tests: "
       "it learned 32 px images of one coloured shape from captions (`tools/train_tiny_clip.py`)."),
    code("import sys\nfrom pathlib import Path\n\nimport easytransfer\n\n"
         "REPO = Path(easytransfer.__file__).resolve().parent.parent\n"
         "sys.path.insert(0, str(REPO / \"tools\"))\n"
         "from tiny_clip_data import write_eval_folder  # the tiny CLIP's image generator\n\n"
         "ARCH = f\"open_clip:local-dir:{REPO / 'tests' / 'assets' / 'tiny_clip'}\"\n"
         "test = write_eval_folder(\"shapes-test\", per_class=20, seed=1234, by=\"shape\")\n"
         "train = write_eval_folder(\"shapes-train\", per_class=10, seed=77, by=\"shape\")\n"
         "classes = sorted(p.name for p in test.iterdir())\nclasses"),
    md("## Zero-shot: class names, no labelled image\n\n"
       "Each class becomes prompts (\"a photo of a circle.\" ...); an image's probabilities are the softmax of "
       "CLIP's logit scale times its cosine to each class's mean prompt embedding. The result is a `Predictor`, "
       "the object `load_model` returns."),
    code("from easytransfer import zero_shot_classifier\n\n"
         "classifier = zero_shot_classifier(classes, ARCH, templates=[\"an image showing one {}\", \"{}\"])\n"
         "classifier.evaluate(test)"),
    code("interp = classifier.interpret(test)\ninterp.plot_confusion_matrix();"),
    code("label, probability, probs = classifier.predict(next((test / \"circle\").iterdir()))\nlabel, round(probability, 3)"),
    md("`export` writes an ordinary bundle: the class text embeddings are stored as the head, no text tower."),
    code("from easytransfer import load_model\n\n"
         "classifier.export(\"zero-shot-shapes\")\nload_model(\"zero-shot-shapes\").evaluate(test)[\"accuracy\"]"),
    md("## Few-shot heads on cached features\n\n"
       "Ten labelled images per class (half of them for validation): the image tower runs once, then a head is "
       "fitted on its features. `prototype` is the nearest class mean, `knn` the nearest training images, "
       "`logistic` a regularised linear probe; each is an ordinary head that `export` and `load_model` keep."),
    code("from easytransfer import ImageData, transfer_learner\n\n"
         "dls = ImageData.from_folder(train, valid_pct=0.5, seed=0, bs=16)\n"
         "for method in (\"prototype\", \"knn\", \"logistic\"):\n"
         "    learn = transfer_learner(dls, ARCH)\n"
         "    learn.fit_frozen(1, method=method)\n"
         "    print(method, learn.evaluate(test)[\"accuracy\"])"),
    md("## A head that starts from the zero-shot classifier\n\n"
       "`head=\"zero_shot\"` starts the classifier as the class text embeddings: its first predictions are the "
       "zero-shot classifier's, so training starts from there, not from chance."),
    code("learn = transfer_learner(dls, ARCH, head=\"zero_shot\")\n"
         "print(\"before training\", learn.evaluate(test)[\"accuracy\"])\n"
         "learn.fit_frozen(3)\nlearn.evaluate(test)[\"accuracy\"]"),
    md("## Foundation towers in timm\n\n"
       "DINOv2, CLIP and SigLIP image towers are timm models too. DINOv2 runs at 224 px unless you ask for "
       "another `size=` (its weights were trained at 518 px, about six times the cost per image); "
       "`fit_discriminative(layer_decay=0.75)` gives every transformer block its own rate "
       "(docs/foundation_models.md). Weights download when online; `describe_model` needs none."),
    code("from easytransfer import describe_model\n\n"
         "describe_model(\"vit_small_patch14_dinov2\");"),
]


write_notebook = notebook_writer(CELLS, NOTEBOOK)


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

"""Writes ``nbs/06_when_the_model_is_unsure.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_unsure_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

from notebook_builder import code, markdown, notebook_writer

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/06_when_the_model_is_unsure.ipynb"

md = markdown
CELLS = [
    md("# When the model is unsure: calibration and conformal prediction sets\n\n"
       "An inspector needs more than a label: how far to trust it, and which images to send to a person. Two "
       "tools, both fitted on labelled images the model never trained on:\n\n"
       "- **calibration** (`learn.calibrate`) makes the probabilities honest: among images predicted with 80 % "
       "confidence, about 80 % should be right;\n"
       "- **conformal prediction sets** (`learn.conformal`) replace the single label by a set of labels that "
       "holds the true one for at least `1 - alpha` of the images. A set of one label can be trusted; a set of "
       "two or three goes to a person.\n\n"
       "The textile images (nominal, local defect, global defect) ship with easytransfer. Four disjoint parts, "
       "40 images per class each: training (with its validation split), calibration fit, conformal calibration "
       "and test. See docs/when_the_model_is_unsure.md for what is promised and what is not."),
    code("%matplotlib inline\nimport pandas as pd\n\nfrom easytransfer.datasets import textile_items\n\n"
         "items = textile_items(limit=160, seed=0).sample(frac=1.0, random_state=0)\n"
         "part = items.groupby(\"label\").cumcount() // 40  # 0, 1, 2, 3: 40 images per class in each part\n"
         "train, calib_fit, calib_sets, test = (items[part == k].reset_index(drop=True) for k in range(4))\n"
         "len(train), len(calib_fit), len(calib_sets), len(test)"),
    md("## A model\n\nThe head of a pre-trained EfficientNet-Lite0, trained on cached features (seconds)."),
    code("from easytransfer import ImageData, transfer_learner\n\n"
         "dls = ImageData.from_df(train, valid_pct=0.25, seed=0)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\")\nlearn.fit_frozen(15, lr=1e-2);"),
    md("## How far to trust the probabilities\n\n"
       "The expected calibration error (ECE) puts the test images in 15 bins of top-class probability and "
       "averages the gap between each bin's accuracy and its mean probability. The reliability diagram draws it: "
       "bars below the diagonal are over-confident, above it under-confident."),
    code("before = learn.interpret(test)\n"
         "print(f\"accuracy {before.accuracy:.3f}, ECE {before.calibration_error():.3f}\")"),
    md("Temperature scaling divides the logits by one number fitted on the calibration images; the predicted "
       "class never changes, only how sure the model says it is. Every later prediction uses it: `predict`, "
       "`interpret`, `evaluate`, `tta` and the exported bundle."),
    code("learn.calibrate(calib_fit, method=\"temperature\")  # above 1: it was over-confident; below 1: under-confident\n"
         "after = learn.interpret(test)\n"
         "print(f\"temperature {learn.calibration.temperature:.2f}: accuracy {after.accuracy:.3f}, "
         "ECE {after.calibration_error():.3f}\")\n"
         "after.plot_calibration(before=before)"),
    md("With 120 calibration and 120 test images each ECE carries a few points of noise, and a model that is "
       "already close to calibrated can come out slightly worse on the test images after a fit on so few. "
       "`benchmarks/conformal.py` measures both on more images (docs/when_the_model_is_unsure.md)."),
    md("## Which images to send to a person\n\n"
       "`learn.conformal` scores the calibration images (`\"lac\"`: one minus the probability of the true class) "
       "and keeps, for a new image, every label whose score is below the `(n + 1)`-corrected quantile of those "
       "scores. `alpha` is the error rate you accept: with `alpha=0.1` the set misses the true label for at most "
       "10 % of the images, on average."),
    code("calib_interp = learn.interpret(calib_sets)  # computed once, used for both kinds of sets below\n"
         "cp = learn.conformal(calib_interp, alpha=0.1)\n"
         "cp.predict(test[\"path\"][0]), test[\"label\"][0]"),
    md("What `alpha` costs: a smaller `alpha` promises more, so more sets hold two or three labels, and more "
       "images go to a person. `cp.evaluate` takes the test interpretation computed above, so no image is run "
       "through the model again."),
    code("rows = []\nfor alpha in (0.01, 0.05, 0.1, 0.2, 0.3):\n"
         "    result = cp.evaluate(after, alpha=alpha)\n"
         "    rows.append({\"alpha\": alpha, \"target coverage\": 1 - alpha, \"coverage\": result.coverage,\n"
         "                 \"average set size\": result.avg_set_size,\n"
         "                 \"to a person\": round((1 - result.singleton_share) * result.n_images)})\n"
         "pd.DataFrame(rows).set_index(\"alpha\").round(3)"),
    md("One threshold for all classes covers the classes on average; a hard class can be covered less. "
       "`mondrian=True` gives each class its own threshold from its own calibration images, so coverage holds "
       "within each class, at the price of larger sets (and it needs more calibration images per class). "
       "On 40 test images per class, one image moves a class's coverage by 2.5 points: read these figures "
       "as a sample, not as the promise itself."),
    code("mondrian = learn.conformal(calib_interp, alpha=0.1, mondrian=True)\n"
         "pd.DataFrame({\"global\": cp.evaluate(after).per_class_coverage,\n"
         "              \"Mondrian\": mondrian.evaluate(after).per_class_coverage})"),
    md("The scores travel with the model: `learn.export(path)` writes them into the bundle, and "
       "`load_model(path).predict_set(image, alpha=0.1)` or `easytransfer predict MODEL IMAGES --alpha 0.1` give "
       "the same sets outside Python notebooks."),
    code("from easytransfer import load_model\n\nlearn.export(\"textile-unsure\")\n"
         "load_model(\"textile-unsure\").predict_set(test[\"path\"][0], alpha=0.1)"),
]


write_notebook = notebook_writer(CELLS, NOTEBOOK)


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

"""Writes ``nbs/05_segmentation_and_detection.ipynb`` from `CELLS`: sources only, no outputs.

    python tools/make_tasks_notebook.py [OUT.ipynb]

`write_notebook(path)` writes the same notebook anywhere; tests compare it with the committed one.
"""

import sys
from pathlib import Path

from notebook_builder import code, markdown, notebook_writer

NOTEBOOK = Path(__file__).resolve().parent.parent / "nbs/05_segmentation_and_detection.ipynb"

md = markdown
CELLS = [
    md("# Segmentation and detection\n\n"
       "A class for every pixel, or a box around every object: the recipe is the one of classification. Data that "
       "checks its files, a pre-trained backbone with a new head, `fit_frozen` (the backbone frozen, the new parts "
       "train), `unfreeze` and `fit_discriminative` (small rates for the early layers, larger for the late ones), "
       "then `evaluate`, `interpret`, `save_report`, `export` and `load_model`.\n\n"
       "To run offline in about a minute, the notebook draws its own data: coloured squares and discs on a noisy "
       "grey background, with their exact masks and boxes. The backbone is EfficientNet-Lite0, whose ImageNet "
       "weights ship with easytransfer's dependencies."),
    code("%matplotlib inline\nfrom dataclasses import asdict\nfrom pathlib import Path\n\n"
         "import numpy as np\nimport pandas as pd\nimport torch\nfrom fastai.torch_core import set_seed\n"
         "from PIL import Image\n\n"
         "from easytransfer import (DetectionData, SegmentationData, available_heads, detection_learner, load_model,\n"
         "                          segmentation_learner)\n\n"
         "torch.set_num_threads(1)  # small images on a small shared CPU: one thread is several times faster"),
    code("SQUARE, DISC = (220, 40, 40), (40, 60, 220)\n\n\n"
         "def draw_scene(rng, size):\n"
         "    \"\"\"A noisy grey image with a red square and a blue disc; their masks (1, 2) and boxes.\"\"\"\n"
         "    image = rng.integers(20, 70, (size, size, 3)).astype(np.uint8)\n"
         "    mask = np.zeros((size, size), np.uint8)\n"
         "    side = int(rng.integers(14, 28))\n"
         "    x, y = (int(v) for v in rng.integers(0, size - side, 2))\n"
         "    image[y:y + side, x:x + side], mask[y:y + side, x:x + side] = SQUARE, 1\n"
         "    r = int(rng.integers(6, 12))\n"
         "    cx, cy = (int(v) for v in rng.integers(r, size - r, 2))\n"
         "    yy, xx = np.ogrid[:size, :size]\n"
         "    disc = (yy - cy) ** 2 + (xx - cx) ** 2 < r * r\n"
         "    image[disc], mask[disc] = DISC, 2\n"
         "    return image, mask, [(\"square\", x, y, x + side, y + side), (\"disc\", cx - r + 1, cy - r + 1, cx + r, cy + r)]\n\n\n"
         "def make_scenes(root, n, size=64, seed=0):\n"
         "    \"\"\"`n` scenes as images/, masks/ (PNG of class ids) and annotations/ (Pascal VOC XML) under `root`.\"\"\"\n"
         "    rng, root = np.random.default_rng(seed), Path(root)\n"
         "    for sub in (\"images\", \"masks\", \"annotations\"):\n"
         "        (root / sub).mkdir(parents=True, exist_ok=True)\n"
         "    for i in range(n):\n"
         "        image, mask, boxes = draw_scene(rng, size)\n"
         "        Image.fromarray(image).save(root / \"images\" / f\"{i:03d}.png\")\n"
         "        Image.fromarray(mask).save(root / \"masks\" / f\"{i:03d}.png\")\n"
         "        objects = \"\".join(f\"<object><name>{c}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>\"\n"
         "                          f\"<xmax>{d}</xmax><ymax>{e}</ymax></bndbox></object>\" for c, a, b, d, e in boxes)\n"
         "        (root / \"annotations\" / f\"{i:03d}.xml\").write_text(\n"
         "            f\"<annotation><filename>{i:03d}.png</filename>{objects}</annotation>\")\n"
         "    return root\n\n\n"
         "scenes = make_scenes(\"scenes\", 64)\nnew = make_scenes(\"new-scenes\", 1, seed=99)  # never seen in training"),
    md("## Segmentation: a class for every pixel\n\n"
       "`SegmentationData.from_folders` pairs each image with the mask of the same name (one channel of class ids: "
       "0 background, 1 square, 2 disc), checks every pair once and splits them. `show_batch` draws the masks over "
       "the images (background left clear)."),
    code("dls = SegmentationData.from_folders(scenes / \"images\", scenes / \"masks\",\n"
         "                                    codes=[\"background\", \"square\", \"disc\"], size=64, bs=8, seed=0)\n"
         "print(dls.report)\ndls.show_batch(max_n=3)"),
    md("`segmentation_learner` puts a U-Net decoder on the backbone's feature maps at every scale. The encoder "
       "starts frozen with its ImageNet weights; its stages and the decoder are the layer groups the recipe "
       "freezes, unfreezes and gives learning rates to."),
    code("set_seed(0)\nlearn = segmentation_learner(dls, \"efficientnet_lite0\", head=\"unet\")\nlearn.summary_groups()"),
    code("learn.fit_frozen(3, lr=1e-2)\nlearn.unfreeze()\nlearn.fit_discriminative(3, lr_max=1e-3, monitor=\"miou\");"),
    md("`evaluate` scores the validation images (or the `test=` images the data was given): mIoU and Dice over "
       "all their pixels, and per class."),
    code("learn.evaluate()"),
    md("`interpret` predicts once and keeps the masks: the per-class table, the images with the highest loss "
       "(image, prediction, truth) and the pixel confusion matrix read them."),
    code("interp = learn.interpret()\ninterp.per_class()"),
    code("interp.plot_top_losses(3)"),
    code("interp.plot_confusion_matrix()"),
    md("`save_report` writes all of it, with the data summary, the layer groups, the training history and a "
       "diagnosis, to one self-contained HTML file."),
    code("report = learn.save_report(\"scenes_segmentation_report.html\", interp=interp, top_k=4)\n"
         "print(report.name, report.stat().st_size // 1024, \"KiB\")"),
    md("`export` writes the weights (safetensors) and a JSON of the classes, decoder and preprocessing; "
       "`load_model` rebuilds the model from them (nothing is unpickled) and predicts a mask of class ids at the "
       "image's own size."),
    code("learn.export(\"scenes-segmenter\")\nsegmenter = load_model(\"scenes-segmenter\")\n"
         "mask = segmenter.predict(new / \"images\" / \"000.png\")\n"
         "truth = np.array(Image.open(new / \"masks\" / \"000.png\"))\n"
         "print(mask.shape, \"pixels as in the true mask:\", round(float((mask == truth).mean()), 3))"),
    md("## Detection: a box around every object\n\n"
       "The same scenes with their boxes as Pascal VOC XML (`from_coco` and `from_yolo` read the other two common "
       "formats). Boxes follow every resize and flip of their image."),
    code("dls = DetectionData.from_voc(scenes / \"images\", scenes / \"annotations\", size=96, bs=8, seed=0)\n"
         "print(dls.report)\ndls.show_batch(max_n=3)"),
    md("`detection_learner` builds torchvision's Faster R-CNN over the backbone, with a feature pyramid. A small "
       "pyramid (`fpn_channels=64`) and few region proposals (`proposals=50`) make each step cheap on a CPU; the "
       "defaults (256, 300) suit real images."),
    code("set_seed(0)\nlearn = detection_learner(dls, \"efficientnet_lite0\", \"fasterrcnn\", fpn_channels=64, "
         "proposals=50)\n"
         "learn.fit_frozen(4, lr=1e-3)\nlearn.unfreeze()\nlearn.fit_discriminative(4, lr_max=5e-4);"),
    md("`evaluate` gives COCO's average precision: `map50` counts a box as found when it overlaps the true one by "
       "an IoU of 0.5, `map` averages IoU thresholds from 0.5 to 0.95 (a stricter test of the box edges)."),
    code("learn.evaluate()"),
    code("interp = learn.interpret()\ninterp.per_class()"),
    md("Top losses: true boxes in green, predictions (score at least 0.5) in red."),
    code("interp.plot_top_losses(3)"),
    code("report = learn.save_report(\"scenes_detection_report.html\", interp=interp, top_k=3)\n"
         "print(report.name, report.stat().st_size // 1024, \"KiB\")"),
    md("The exported detector returns `(label, score, box)` in the pixels of the image it is given."),
    code("learn.export(\"scenes-detector\")\ndetector = load_model(\"scenes-detector\")\n"
         "for label, score, box in detector.predict(new / \"images\" / \"000.png\"):\n"
         "    print(f\"{label:7s} {score:.2f} {box}\")\n"
         "print(\"truth:\", draw_scene(np.random.default_rng(99), 64)[2])  # the same scene drawn again"),
    md("## Which head works with which backbone\n\n"
       "`available_heads(task)` lists every head of classification, segmentation and detection, the backbones it "
       "takes, and the backbones whose weights work offline."),
    code("pd.DataFrame([asdict(h) for h in available_heads()]).set_index([\"task\", \"head\"])"),
]


write_notebook = notebook_writer(CELLS, NOTEBOOK)


if __name__ == "__main__":
    print(write_notebook(sys.argv[1] if len(sys.argv) > 1 else NOTEBOOK))

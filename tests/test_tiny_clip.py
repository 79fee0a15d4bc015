"""The tiny CLIP asset (tests/assets/tiny_clip, made by tools/train_tiny_clip.py) loads through open_clip's
``local-dir:`` path with its own tokenizer and classifies fresh synthetic images zero-shot, with prompt wordings
that never appeared in its training captions."""

import sys
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
TINY_CLIP = ROOT / "tests" / "assets" / "tiny_clip"
if str(ROOT / "tools") not in sys.path:
    sys.path.insert(0, str(ROOT / "tools"))  # the generator and the templates live beside the training script
from tiny_clip_data import (  # noqa: E402
    COLOURS,
    HELD_OUT_COLOUR_WORDINGS,
    HELD_OUT_SHAPE_WORDINGS,
    SHAPES,
    TRAIN_BOTH_TEMPLATES,
    TRAIN_COLOUR_TEMPLATES,
    TRAIN_SHAPE_TEMPLATES,
    make_shape_images,
    write_eval_folder,
    zero_shot_accuracy,
)

EVAL_SEED = 1234  # training drew its images from seeds 0 (train) and 1 (validation)
N_IMAGES = 150


@pytest.fixture(scope="module")
def tiny_clip():
    model, preprocess = open_clip.create_model_from_pretrained(f"local-dir:{TINY_CLIP}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{TINY_CLIP}")
    return model.eval(), preprocess, tokenizer


@pytest.fixture(scope="module")
def eval_batch(tiny_clip):
    _, preprocess, _ = tiny_clip
    batch = make_shape_images(N_IMAGES, seed=EVAL_SEED)
    images = torch.stack([preprocess(Image.fromarray(a)) for a in batch.images])
    return batch, images


def test_held_out_wordings_share_no_word_with_training_captions():
    names = set(COLOURS) | set(SHAPES)

    def words(templates):
        return {w for t in templates for w in t.replace("{colour}", "").replace("{shape}", "").split()} - names

    seen = words(TRAIN_BOTH_TEMPLATES + TRAIN_COLOUR_TEMPLATES + TRAIN_SHAPE_TEMPLATES)
    assert not seen & words(HELD_OUT_COLOUR_WORDINGS + HELD_OUT_SHAPE_WORDINGS)


def test_asset_is_an_open_clip_local_dir_with_the_bundled_tokenizer(tiny_clip):
    model, preprocess, tokenizer = tiny_clip
    assert isinstance(tokenizer, open_clip.SimpleTokenizer) and tokenizer.context_length == 24
    assert model.visual.image_size == (32, 32)
    assert sum(f.stat().st_size for f in TINY_CLIP.iterdir()) < 5_000_000


# Measured when the asset was made (tests/assets/tiny_clip/README.md): colour 1.000 and shape 0.983 on 600 images,
# 1.000 and 0.973 on these 150; the thresholds leave room for float differences across machines.
@pytest.mark.parametrize(
    "task, names, wordings, threshold",
    [
        ("colour", list(COLOURS), HELD_OUT_COLOUR_WORDINGS, 0.9),  # chance 1/6
        ("shape", list(SHAPES), HELD_OUT_SHAPE_WORDINGS, 0.85),  # chance 1/4
    ],
)
def test_zero_shot_with_held_out_wordings_beats_chance(tiny_clip, eval_batch, task, names, wordings, threshold):
    model, _, tokenizer = tiny_clip
    batch, images = eval_batch
    labels = batch.colours if task == "colour" else batch.shapes
    accuracy = zero_shot_accuracy(model, tokenizer, images, labels, names, wordings, task)
    assert accuracy >= threshold, f"{task}: held-out zero-shot accuracy {accuracy:.3f} < {threshold}"


def test_eval_folder_has_one_sub_folder_per_class(tmp_path):
    root = write_eval_folder(tmp_path / "colours", per_class=2, seed=EVAL_SEED)
    assert sorted(p.name for p in root.iterdir()) == sorted(COLOURS)
    assert all(len(list((root / c).glob("*.png"))) == 2 for c in COLOURS)
    with Image.open(next((root / "red").glob("*.png"))) as image:
        assert image.size == (32, 32) and np.asarray(image).shape == (32, 32, 3)


def test_easytransfer_zero_shot_classifier_on_the_tiny_clip_with_never_seen_wordings(tmp_path):
    from easytransfer import load_model, zero_shot_classifier

    test = write_eval_folder(tmp_path / "shapes", per_class=8, seed=EVAL_SEED, by="shape")
    wordings = [w.replace("{shape}", "{}") for w in HELD_OUT_SHAPE_WORDINGS]
    classifier = zero_shot_classifier(list(SHAPES), f"open_clip:local-dir:{TINY_CLIP}", templates=wordings,
                                      device="cpu")
    scores = classifier.evaluate(test)
    assert scores["n_images"] == 8 * len(SHAPES) and scores["accuracy"] >= 0.85  # chance: 0.25
    label, _, probs = classifier.predict(next((test / "circle").iterdir()))
    assert label == "circle" and probs.shape == (len(SHAPES),)
    bundle = classifier.export(tmp_path / "bundle")
    assert load_model(bundle).evaluate(test)["accuracy"] == scores["accuracy"]  # no text tower in the bundle

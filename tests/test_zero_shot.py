"""Zero-shot CLIP classifiers and text-initialised heads, on a tiny random CLIP in a local-dir folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import open_clip
import pandas as pd
import pytest
import torch
from conftest import make_image_folder
from PIL import Image

from easytransfer import (
    BundleConfig,
    HeadConfig,
    ImageData,
    Interpretation,
    Predictor,
    load_model,
    transfer_learner,
    zero_shot_classifier,
)
from easytransfer.deploy.bundle import CONFIG_NAME, Preprocessing
from easytransfer.models.zero_shot import DEFAULT_TEMPLATES, class_prompts

CLASSES = ["cat", "dog"]
TOL = dict(atol=1e-5, rtol=1e-4)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("zero_shot"), classes=CLASSES, per_class=3, size=40)


@pytest.fixture(scope="module")
def classifier(tiny_clip):
    return zero_shot_classifier(CLASSES, tiny_clip, device="cpu")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (40 + 7 * i, 50, 3), dtype=np.uint8)) for i in range(3)]


def _by_hand(name: str, classes, prompts_of, images, predictor: Predictor) -> torch.Tensor:
    """softmax(logit_scale * cos(image, class)) with open_clip's own encode_image / encode_text."""
    folder = name.removeprefix("open_clip:")
    clip = open_clip.create_model(folder).eval()
    tokenizer = open_clip.get_tokenizer(folder)
    with torch.no_grad():
        image_emb = clip.encode_image(torch.stack([predictor.preprocess(im) for im in images]), normalize=True)
        class_emb = []
        for c in classes:
            mean = clip.encode_text(tokenizer(prompts_of(c)), normalize=True).mean(0)
            class_emb.append(mean / mean.norm())
        return (clip.logit_scale.exp() * image_emb @ torch.stack(class_emb).T).softmax(dim=1)


def test_probabilities_equal_open_clips_own_computation(tiny_clip, classifier, images):
    expected = _by_hand(tiny_clip, CLASSES, lambda c: [t.format(c) for t in DEFAULT_TEMPLATES], images, classifier)
    torch.testing.assert_close(classifier.predict_batch(images), expected, **TOL)
    label, probability, probs = classifier.predict(images[0])
    assert label in CLASSES and probability == pytest.approx(float(probs.max()))
    torch.testing.assert_close(probs, expected[0], **TOL)
    assert classifier.config.head == HeadConfig("zero_shot") and classifier.vocab == CLASSES


def test_templates_and_descriptions_make_the_class_embeddings(tiny_clip, images):
    templates = ["a photo of a {}.", "a blurry photo of the {}."]
    descriptions = {"dog": ["a loyal animal that barks", "a puppy"]}
    classes = ["cat", "dog", "hot_dog"]
    classifier = zero_shot_classifier(classes, tiny_clip, templates=templates, descriptions=descriptions, device="cpu")
    prompts = {"cat": [t.format("cat") for t in templates], "dog": descriptions["dog"],
               "hot_dog": [t.format("hot dog") for t in templates]}
    assert class_prompts(classes, templates, descriptions) == prompts
    expected = _by_hand(tiny_clip, classes, prompts.get, images, classifier)
    torch.testing.assert_close(classifier.predict_batch(images), expected, **TOL)


@pytest.mark.parametrize("kwargs, message", [
    (dict(templates=["a photo of a cat"]), "'{}'"),
    (dict(templates=[]), "templates is empty"),
    (dict(descriptions={"horse": ["a horse"]}), "horse"),
    (dict(descriptions={"cat": []}), "empty"),
])
def test_bad_prompts_are_refused_naming_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        class_prompts(CLASSES, **kwargs)
    with pytest.raises(ValueError, match="unique"):
        class_prompts(["cat", "cat"])


def test_export_and_load_model_give_the_same_probabilities_without_the_folder(tiny_clip, classifier, images,
                                                                             tmp_path):
    classifier.export(tmp_path / "bundle")
    data = json.loads((tmp_path / "bundle" / CONFIG_NAME).read_text())
    assert data["head"]["type"] == "zero_shot" and data["source"] == "open_clip"
    assert "text" not in " ".join(k.split(".")[0] for k in classifier.model.state_dict())  # no text tower
    # the bundle keeps the open_clip config: it loads with the folder moved away
    source = tiny_clip.removeprefix("open_clip:local-dir:")
    moved = shutil.move(source, str(tmp_path / "moved"))
    try:
        loaded = load_model(tmp_path / "bundle", device="cpu")
    finally:
        shutil.move(moved, source)
    assert loaded.config == classifier.config and loaded.config.arch_config == classifier.config.arch_config
    torch.testing.assert_close(loaded.predict_batch(images), classifier.predict_batch(images), **TOL)


def test_bundle_config_round_trips_its_arch_config_and_reads_older_bundles():
    pre = Preprocessing(32, "bicubic", (0.5,) * 3, (0.5,) * 3)
    config = BundleConfig("open_clip:local-dir:x", "open_clip", "local-dir:x", ("a", "b"),
                          HeadConfig("zero_shot"), pre, arch_config={"model_cfg": {"embed_dim": 16}})
    assert BundleConfig.from_json(config.to_json()) == config
    older = BundleConfig("resnet18", "timm", "resnet18", ("a", "b"), HeadConfig(), pre)
    assert "arch_config" not in json.loads(older.to_json())
    assert BundleConfig.from_json(older.to_json()).arch_config is None


def test_head_zero_shot_starts_as_the_zero_shot_classifier(tiny_clip, folder, tmp_path):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=4)
    learn = transfer_learner(dls, tiny_clip, head="zero_shot", device="cpu")
    assert learn.head_config == HeadConfig("zero_shot")
    probs, _ = learn.get_preds(dl=learn.dls.valid)
    classifier = zero_shot_classifier(list(learn.dls.vocab), tiny_clip, device="cpu")
    paths = learn.dls.valid.items["path"].tolist()
    torch.testing.assert_close(probs, classifier.predict_batch(paths), **TOL)
    # exported by the learner, rebuilt by load_model with its zero-shot head
    learn.export(tmp_path / "learner-bundle")
    loaded = load_model(tmp_path / "learner-bundle", device="cpu")
    assert loaded.config.head.type == "zero_shot"
    torch.testing.assert_close(loaded.predict_batch(paths), probs, **TOL)


@pytest.mark.slow
def test_learner_and_classifier_evaluate_alike(tiny_clip, folder):
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=4)
    learn = transfer_learner(dls, tiny_clip, head="zero_shot", device="cpu")
    classifier = zero_shot_classifier(list(learn.dls.vocab), tiny_clip, device="cpu")
    learner_scores, classifier_scores = learn.evaluate(folder), classifier.evaluate(folder, progress=False)
    assert learner_scores.keys() == classifier_scores.keys()
    assert learner_scores["accuracy"] == classifier_scores["accuracy"]
    assert learner_scores["loss"] == pytest.approx(classifier_scores["loss"], rel=1e-4)
    assert learn.interpret(folder).confusion_matrix().tolist() == classifier.interpret(
        folder, progress=False).confusion_matrix().tolist()


def test_head_zero_shot_needs_single_label_data(tiny_clip, folder):
    table = pd.DataFrame({"path": [str(p) for p in sorted(folder.rglob("*.jpg"))]})
    table["label"] = ["cat dog" if i % 2 else "cat" for i in range(len(table))]
    dls = ImageData.from_df(table, label_delim=" ", valid_pct=0.34, seed=0, bs=4)
    with pytest.raises(ValueError, match="multi-label"):
        transfer_learner(dls, tiny_clip, head="zero_shot", device="cpu")


def test_evaluate_and_interpret_read_folders_tables_lists_and_dataloaders(classifier, folder):
    interp = classifier.interpret(folder, progress=False)
    assert isinstance(interp, Interpretation) and interp.vocab == CLASSES
    files = sorted(str(p) for p in folder.rglob("*.jpg"))
    probs = classifier.predict_batch(interp.items["path"].tolist())
    np.testing.assert_allclose(interp.probs, probs.numpy(), atol=1e-5)
    assert interp.confusion_matrix().sum() == len(files) == len(interp.top_losses())
    assert set(interp.top_losses()["path"]) == set(files)
    assert list(interp.per_class().index[:2]) == CLASSES
    assert interp.plot_top_losses(2).axes  # the images come from the items' paths
    scores = classifier.evaluate(folder, progress=False)
    assert scores == interp.scores()
    assert scores["n_images"] == len(files) and scores["accuracy"] == pytest.approx(
        float((probs.argmax(1) == torch.tensor([CLASSES.index(p.split("/")[-2]) for p in interp.items["path"]]))
              .float().mean()))
    table = pd.DataFrame({"path": files, "label": [p.split("/")[-2] for p in files]})
    for data in (table, files):
        other = classifier.evaluate(data, progress=False)
        assert other["accuracy"] == scores["accuracy"] and other["loss"] == pytest.approx(scores["loss"], rel=1e-5)
    dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, bs=4)
    assert classifier.evaluate(dls.valid, progress=False)["n_images"] == len(dls.valid.items)
    with pytest.raises(Exception, match="horse"):
        classifier.evaluate(pd.DataFrame({"path": files[:1], "label": ["horse"]}), progress=False)

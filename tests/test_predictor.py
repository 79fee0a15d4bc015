"""The predictor family: one task-agnostic `Predictor` base, three sibling task predictors with the same methods,
one image-to-RGB (`as_rgb`) for all of them, and one interpretation protocol."""

from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import tiny_learner
from matplotlib.figure import Figure
from PIL import Image

from easytransfer import (
    ClassifierPredictor,
    DetectionPredictor,
    Predictor,
    SegmentationPredictor,
    load_model,
)
from easytransfer.data.images import as_rgb
from easytransfer.errors import DataError
from easytransfer.evaluate.interpretation import TaskInterpretation
from easytransfer.tasks.registry import available_tasks, get_task

SHARED_METHODS = ("predict", "predict_folder", "interpret", "evaluate", "export", "from_bundle", "build_model",
                  "preprocess", "check_exportable", "export_onnx", "export_torchscript", "classes")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory) -> Path:
    """Tiny random bundles of the three tasks (tests/assets/bundles_v1.tar.gz, see test_bundle)."""
    root = tmp_path_factory.mktemp("bundles")
    with tarfile.open(Path(__file__).parent / "assets" / "bundles_v1.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root / "bundles_v1"


# ------------------------------------------------------------------------------------------------ as_rgb


def test_as_rgb_reads_float_and_channels_first_arrays_as_their_uint8_image():
    rgb = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(rgb))
    as_float = rgb.astype(np.float32) / 255
    for given in (rgb, as_float, np.moveaxis(rgb, -1, 0), np.moveaxis(as_float, -1, 0),
                  torch.from_numpy(np.moveaxis(as_float, -1, 0).copy()), torch.from_numpy(rgb)):
        image = as_rgb(given)
        assert image.mode == "RGB" and image.size == (7, 6)
        np.testing.assert_array_equal(np.asarray(image), expected)
    grey = as_rgb(np.full((4, 5), 0.5))
    assert grey.size == (5, 4) and grey.getpixel((0, 0)) == (128, 128, 128)


def test_as_rgb_reads_files_and_pil_images_of_any_mode_without_changing_them(tmp_path):
    transparent = Image.new("LA", (3, 2), (0, 0))
    assert as_rgb(transparent).getpixel((0, 0)) == (255, 255, 255) and transparent.mode == "LA"
    rgb = Image.new("RGB", (3, 2), (1, 2, 3))
    copy = as_rgb(rgb)
    assert copy is not rgb and copy.getpixel((0, 0)) == (1, 2, 3)
    rotated = Image.new("RGB", (6, 4))
    exif = rotated.getexif()
    exif[0x0112] = 6  # stored 6x4, shown upright 4x6
    rotated.save(tmp_path / "rotated.jpg", exif=exif)
    assert as_rgb(tmp_path / "rotated.jpg").size == (4, 6) and as_rgb(str(tmp_path / "rotated.jpg")).mode == "RGB"


@pytest.mark.parametrize(("bad", "error", "match"), [
    (42, TypeError, "Cannot read an image from a int"),
    (np.full((4, 4, 3), 2.0), DataError, r"must lie in \[0, 1\]"),
    (np.zeros((5, 4, 7)), DataError, "1, 3 or 4 channels"),
])
def test_as_rgb_refuses_what_it_cannot_read_with_the_fix(bad, error, match):
    with pytest.raises(error, match=match):
        as_rgb(bad)


# ------------------------------------------------------------------------------------------------ the family


def test_every_registered_task_has_a_sibling_predictor_with_the_same_methods():
    classes = {task.name: task.predictor_class for task in available_tasks()}
    assert classes["classification"] is ClassifierPredictor
    assert classes["segmentation"] is SegmentationPredictor and classes["detection"] is DetectionPredictor
    for cls in classes.values():
        assert issubclass(cls, Predictor) and all(hasattr(cls, name) for name in SHARED_METHODS), cls
        assert not getattr(cls, "__abstractmethods__", None), cls  # every abstract method is implemented
        assert not any(issubclass(cls, other) for other in classes.values() if other is not cls), cls
    assert not hasattr(SegmentationPredictor, "predict_set")  # prediction sets are the classifier's


def test_every_registered_interpretation_follows_the_protocol():
    for task in available_tasks():
        assert issubclass(task.interpretation_class, TaskInterpretation), task.name


def test_load_model_gives_each_task_its_predictor(bundles):
    for task, cls in [("classification", ClassifierPredictor), ("segmentation", SegmentationPredictor),
                      ("detection", DetectionPredictor)]:
        predictor = load_model(bundles / task, device="cpu")
        assert type(predictor) is cls and predictor.classes == list(predictor.config.classes)
        assert get_task(task).predictor_class is cls and task in repr(predictor)


def test_predictors_read_float_and_channels_first_images_as_their_uint8_image(bundles):
    rgb = np.random.default_rng(1).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    chw_float = torch.from_numpy(np.moveaxis(rgb, -1, 0).astype(np.float32) / 255)
    classifier = load_model(bundles / "classification", device="cpu")
    label, _, probs = classifier.predict(rgb)
    for other in (rgb.astype(np.float64) / 255, chw_float, Image.fromarray(rgb)):
        other_label, _, other_probs = classifier.predict(other)
        assert other_label == label and torch.allclose(other_probs, probs)
    segmenter = load_model(bundles / "segmentation", device="cpu")
    mask = segmenter.predict(rgb)
    assert mask.shape == (40, 48) and np.array_equal(segmenter.predict(chw_float), mask)
    detector = load_model(bundles / "detection", threshold=0.0, device="cpu")
    assert detector.predict(chw_float) == detector.predict(rgb)


def test_export_is_the_predictors_to_allow(bundles):
    load_model(bundles / "classification", device="cpu").check_exportable("ONNX")
    load_model(bundles / "segmentation", device="cpu").check_exportable("TorchScript")
    load_model(bundles / "detection", device="cpu").check_exportable("ONNX")  # its own export (test_detection_deploy)


# ------------------------------------------------------------------------------------------------ detection


def test_detection_predict_folder_gives_one_row_per_box_and_draws_them(bundles, tmp_path):
    from test_detection import make_voc

    from easytransfer.tasks.detection.predictor import BOX_COLUMNS

    images, _, _ = make_voc(tmp_path / "voc", n=3)
    (images / "broken.png").write_bytes(b"not an image")
    detector = load_model(bundles / "detection", device="cpu")
    table = detector.predict_folder(images, out=tmp_path / "drawn", csv=tmp_path / "boxes.csv", score_threshold=0.0)
    assert list(table.columns) == BOX_COLUMNS
    broken = table[table["path"].str.endswith("broken.png")]
    assert len(broken) == 1 and broken["error"].iloc[0] and broken["label"].isna().all()
    found = table[table["label"].notna()]
    assert set(found["label"]) <= {"blue", "red"} and found["error"].isna().all()
    first = detector.predict(images / "im0.png", score_threshold=0.0)
    rows = found[found["path"].str.endswith("im0.png")]
    assert [(r.label, r.score, (r.x1, r.y1, r.x2, r.y2)) for r in rows.itertuples()] == first
    assert sorted(p.name for p in (tmp_path / "drawn").glob("*.png")) == ["im0.png", "im1.png", "im2.png"]
    assert len(pd.read_csv(tmp_path / "boxes.csv")) == len(table)


def test_detection_interpret_is_the_learners_interpretation(bundles, tmp_path):
    from test_detection import make_voc

    from easytransfer.tasks.detection.interpretation import DetectionInterpretation

    images, annotations, _ = make_voc(tmp_path / "voc", n=3)
    detector = load_model(bundles / "detection", device="cpu")
    interp = detector.interpret(images, annotations)
    assert isinstance(interp, DetectionInterpretation) and isinstance(interp, TaskInterpretation)
    assert list(interp.per_class().index) == ["blue", "red"] and len(interp.top_losses()) == 3
    assert isinstance(interp.plot_top_losses(2), Figure)
    assert [s.key for s in interp.report_sections(2)] == ["scores", "per-class", "top-losses"]
    scores = detector.evaluate(images, annotations)
    assert scores["n_images"] == 3 and scores["map50"] == interp.scores()["map50"]


# moved here from the history-named test files (faults, student, contracts ...)

@pytest.fixture(scope="module")
def predictor(cats, tmp_path_factory):
    return load_model(tiny_learner(cats).export(tmp_path_factory.mktemp("predictor") / "model"), device="cpu")


def test_a_float_array_in_0_1_is_scaled_not_truncated_to_black(predictor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    as_float = image.astype(np.float32) / 255
    torch.testing.assert_close(predictor.preprocess(as_float), predictor.preprocess(image))
    assert not torch.equal(predictor.preprocess(as_float), predictor.preprocess(np.zeros_like(image)))


def test_a_chw_tensor_is_read_as_the_same_image(predictor):
    image = np.random.default_rng(1).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    torch.testing.assert_close(predictor.preprocess(chw), predictor.preprocess(image))
    torch.testing.assert_close(predictor.preprocess(chw.float() / 255), predictor.preprocess(image))


@pytest.mark.parametrize("bad, match", [(np.full((8, 8, 3), 2.0), r"\[0, 1\]"), (np.full((8, 8, 3), 300), "0..255"),
                                        (np.full((8, 8, 3), np.nan), "NaN")])
def test_out_of_range_arrays_are_refused(predictor, bad, match):
    with pytest.raises(DataError, match=match):
        predictor.predict(bad)


def test_predict_folder_on_a_missing_path_is_an_error(bundle, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_model(bundle).predict_folder(tmp_path / "no-such-folder")

"""Deploying detectors: flip TTA with merged boxes, ONNX / TorchScript export with output parity, ONNX Runtime in
`predict_folder`, and the command line's export of a detection bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_detection import one_thread  # noqa: F401  (its autouse fixture: detection runs on one thread)
from torch import nn

from easytransfer import load_model
from easytransfer.deploy.bundle import BundleConfig, Preprocessing
from easytransfer.models.heads import HeadConfig
from easytransfer.tasks.detection.export import (
    DETECTOR_ONNX_MIN_IMAGES,
    detector_forward,
    export_detector_onnx,
    same_detections,
)
from easytransfer.tasks.detection.learner import predict_boxes
from easytransfer.tasks.detection.model import DetectionConfig, build_detector
from easytransfer.tasks.detection.predictor import DetectionPredictor
from easytransfer.tasks.detection.tta import flip_detections, flip_tta, merge_detections

SIZE = 96


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    """The tiny random bundles of tests/assets (see test_bundle)."""
    import tarfile
    from pathlib import Path

    root = tmp_path_factory.mktemp("bundles")
    with tarfile.open(Path(__file__).parent / "assets" / "bundles_v1.tar.gz") as tar:
        tar.extractall(root, filter="data")
    return root / "bundles_v1"


def _detections(boxes, scores, labels) -> dict:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor(scores, dtype=torch.float32), "labels": torch.tensor(labels, dtype=torch.long)}


# ------------------------------------------------------------------------------------------------ TTA


def test_merge_fuses_what_both_views_find_and_halves_what_one_finds():
    plain = _detections([[10, 10, 30, 30], [50, 50, 70, 70]], [0.9, 0.6], [1, 1])
    flipped = _detections([[12, 10, 32, 30], [11, 10, 31, 30]], [0.7, 0.8], [1, 2])  # same place, another class
    merged = merge_detections([plain, flipped])
    found = {(int(label), round(float(score), 4)): [round(v, 3) for v in box]
             for box, score, label in zip(merged["boxes"].tolist(), merged["scores"], merged["labels"])}
    assert found == {
        (1, 0.8): [10.875, 10.0, 30.875, 30.0],  # both views: scores averaged, boxes weighted by score
        (2, 0.4): [11.0, 10.0, 31.0, 30.0],  # one view (classes are merged apart): half its score
        (1, 0.3): [50.0, 50.0, 70.0, 70.0],
    }
    assert merged["scores"].tolist() == sorted(merged["scores"].tolist(), reverse=True)  # best first


def test_merge_keeps_a_views_best_score_per_object_and_averages_masks():
    plain = _detections([[10, 10, 30, 30], [10, 11, 30, 31]], [0.9, 0.5], [1, 1])  # two boxes on one object
    flipped = _detections([[10, 10, 30, 30]], [0.7], [1])
    plain["masks"], flipped["masks"] = torch.ones(2, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    merged = merge_detections([plain, flipped])
    assert len(merged["scores"]) == 1 and float(merged["scores"][0]) == pytest.approx(0.8)  # (0.9 + 0.7) / 2
    assert merged["masks"].shape == (1, 1, 4, 4)
    assert float(merged["masks"][0, 0, 0, 0]) == pytest.approx(1.4 / 2.1)  # the masks weighted by score
    empty = merge_detections([_detections([], [], []), _detections([], [], [])])
    assert empty["boxes"].shape == (0, 4) and len(empty["scores"]) == 0


def test_flipped_boxes_and_masks_map_back():
    found = _detections([[2, 3, 10, 20]], [0.5], [1])
    found["masks"] = torch.zeros(1, 1, 2, 64)
    found["masks"][..., 0] = 1
    back = flip_detections(found, 64)
    assert back["boxes"].tolist() == [[54.0, 3.0, 62.0, 20.0]] and back["masks"][..., -1].all()
    assert flip_detections(back, 64)["boxes"].tolist() == found["boxes"].tolist()


class ColourBoxes(nn.Module):
    """A stand-in detector: the extent of the bright red pixels of each image, score 0.9, class 1; with
    `left_only`, only objects whose centre is in the image's left half (a detector that misses some views)."""

    def __init__(self, left_only: bool = False):
        super().__init__()
        self.left_only = left_only

    def forward(self, images):
        found = []
        for image in images:
            ys, xs = torch.nonzero((image[0] > 0.5) & (image[1] < 0.3), as_tuple=True)
            box = [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1] if len(xs) else None
            if box is not None and self.left_only and (box[0] + box[2]) / 2 >= image.shape[-1] / 2:
                box = None
            found.append(_detections([box] if box else [], [0.9] if box else [], [1] if box else []))
        return found


def _red_square(x1: int, x2: int, size: int = 64) -> np.ndarray:
    image = np.full((size, size, 3), 30, np.uint8)
    image[10:40, x1:x2] = (220, 30, 30)
    return image


def test_tta_on_a_symmetric_image_keeps_the_plain_boxes():
    config = DetectionConfig("stub", "stub", "fasterrcnn", 1, 64, (0.0,) * 3, (1.0,) * 3)
    symmetric = _red_square(16, 48)  # mirrored, the square is where it was
    plain = predict_boxes(ColourBoxes(), symmetric, config, ["red"], 0.0, "cpu")
    assert plain == [("red", pytest.approx(0.9), (16.0, 10.0, 48.0, 40.0))]
    assert predict_boxes(ColourBoxes(), symmetric, config, ["red"], 0.0, "cpu", tta=True) == plain
    shifted = _red_square(4, 20)  # mirrored, it is at 44..60: the flipped box maps back onto the plain one
    assert predict_boxes(ColourBoxes(), shifted, config, ["red"], 0.0, "cpu", tta=True) == \
        [("red", pytest.approx(0.9), (4.0, 10.0, 20.0, 40.0))]


def test_tta_keeps_a_box_one_view_misses_with_half_its_score():
    config = DetectionConfig("stub", "stub", "fasterrcnn", 1, 64, (0.0,) * 3, (1.0,) * 3)
    left = _red_square(4, 20)  # the plain view finds it; in the mirrored view it is on the right, unseen
    assert predict_boxes(ColourBoxes(left_only=True), left, config, ["red"], 0.0, "cpu", tta=True) == \
        [("red", pytest.approx(0.45), (4.0, 10.0, 20.0, 40.0))]
    images = torch.from_numpy(np.stack([left, _red_square(44, 60)])).permute(0, 3, 1, 2).float() / 255
    right_only = flip_tta(ColourBoxes(left_only=True), images)[1]  # found only in the mirrored view, mapped back
    assert right_only["boxes"].tolist() == [[44.0, 10.0, 60.0, 40.0]] and right_only["scores"].tolist() == pytest.approx([0.45])


def test_bundle_predictor_tta_runs_everywhere_its_plain_pass_does(bundles, tmp_path):
    from test_detection import make_voc

    images, annotations, _ = make_voc(tmp_path / "voc", n=2, width=80, height=64)
    detector = load_model(bundles / "detection", threshold=0.0, device="cpu")
    found = detector.predict(images / "im0.png", tta=True)
    assert found and all(label in ("blue", "red") and 0 <= score <= 1 for label, score, _ in found)
    assert all(-1e-3 <= x1 <= x2 <= 80 + 1e-3 and -1e-3 <= y1 <= y2 <= 64 + 1e-3 for _, _, (x1, y1, x2, y2) in found)
    table = detector.predict_folder(images, tta=True, progress=False)
    rows = table[table["path"].str.endswith("im0.png")]
    assert [(r.label, r.score, (r.x1, r.y1, r.x2, r.y2)) for r in rows.itertuples()] == found
    scores = detector.evaluate(images, annotations, tta=True)
    assert scores["n_images"] == 2 and 0 <= scores["map50"] <= 1


# ------------------------------------------------------------------------------------------------ export


def tiny_detector(head: str) -> tuple[nn.Module, DetectionConfig]:
    """An untrained detector at 96 px whose heads are nudged off their initial values: freshly initialised heads
    score many boxes exactly alike, and among equal scores NMS may keep another box in each runtime."""
    torch.manual_seed(0)
    model, config, *_ = build_detector("efficientnet_lite0", 2, head=head, pretrained=False, size=SIZE,
                                       fpn_channels=64, proposals=16, score_thresh=0.0)
    noise = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.startswith(("head.", "roi_heads.", "rpn.")):
                parameter.add_(torch.randn(parameter.shape, generator=noise) * 0.02)
    return model.eval(), config


def _noise(seed: int) -> torch.Tensor:
    return torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _onnx_parity(model: nn.Module, path) -> tuple[float, float, int]:
    """Largest box and score differences between ONNX Runtime and PyTorch over a few images, and the boxes seen."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # Mask R-CNN's mask loop warns about the shapes it grows
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    box_diff = score_diff = 0.0
    seen = 0
    for seed in (11, 12, 13):
        x = _noise(seed)
        with torch.inference_mode():
            expected = model(x)[0]
        names = [o.name for o in session.get_outputs()]
        got = dict(zip(names, map(torch.from_numpy, session.run(None, {"input": x.numpy()}))))
        assert same_detections(got, expected), seed
        assert names == [n for n in ("boxes", "scores", "labels", "masks") if n in expected]
        if "masks" in expected:  # Mask R-CNN: one probability map per box, at the input's size
            assert got["masks"].shape == expected["masks"].shape == (len(expected["scores"]), 1, SIZE, SIZE)
        if len(expected["scores"]):  # each detection against the other runtime's nearest one of its class
            boxes = (expected["boxes"][:, None] - got["boxes"][None]).abs().amax(dim=-1)
            scores = (expected["scores"][:, None] - got["scores"][None]).abs()
            distance = (boxes + 100 * scores).masked_fill(expected["labels"][:, None] != got["labels"][None], 1e9)
            nearest = distance.argmin(dim=1)[:, None]
            box_diff = max(box_diff, float(boxes.gather(1, nearest).max()))
            score_diff = max(score_diff, float(scores.gather(1, nearest).max()))
        seen += len(expected["scores"])
    return box_diff, score_diff, seen


@pytest.mark.parametrize("head", ["fasterrcnn", pytest.param("retinanet", marks=pytest.mark.slow),
                                  pytest.param("fcos", marks=pytest.mark.slow),
                                  pytest.param("maskrcnn", marks=pytest.mark.slow)])
def test_onnx_export_gives_the_detectors_boxes_scores_and_labels(head, tmp_path):
    pytest.importorskip("onnxruntime")
    model, _ = tiny_detector(head)
    path = export_detector_onnx(model, tmp_path / "detector.onnx", size=SIZE)
    box_diff, score_diff, seen = _onnx_parity(model, path)
    print(f"{head}: {seen} boxes, largest box difference {box_diff:.2g} px, score difference {score_diff:.2g}")
    assert seen > 0 and box_diff < 1e-2 and score_diff < 1e-4, (box_diff, score_diff)  # measured: 2e-4 px, 3e-6


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory):
    """A `tiny_detector` Faster R-CNN as a detection bundle folder."""
    model, config = tiny_detector("fasterrcnn")
    bundle = BundleConfig(config.arch, "timm", config.source_arch, ("blue", "red"), HeadConfig(),
                          Preprocessing(SIZE, "bilinear", config.mean, config.std, resize="squash to size"),
                          task="detection", task_config=config)
    return DetectionPredictor(model, bundle, device="cpu").export(tmp_path_factory.mktemp("tiny") / "bundle")


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_torchscript_export_of_a_bundle_gives_the_same_outputs(tiny_bundle, tmp_path):
    predictor = load_model(tiny_bundle, device="cpu")
    loaded = torch.jit.load(str(predictor.export_torchscript(tmp_path / "detector.pt")))
    x = _noise(5)
    with torch.inference_mode():
        expected = predictor.model(x)[0]
        boxes, scores, labels = loaded(x)
    assert len(scores) > 0 and torch.equal(labels, expected["labels"])
    assert torch.allclose(boxes, expected["boxes"], atol=1e-4) and torch.allclose(scores, expected["scores"])


def test_predict_folder_runs_in_onnx_runtime_with_pytorchs_boxes(tiny_bundle, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.delenv("EASYTRANSFER_RUNTIME", raising=False)
    predictor = load_model(tiny_bundle, threshold=0.0, device="cpu")
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(DETECTOR_ONNX_MIN_IMAGES):
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    table = predictor.predict_folder(folder, progress=False)
    assert predictor._folder_forward.runtime == "onnxruntime"
    for path, rows in table.groupby("path"):
        expected = predictor.predict(path)  # PyTorch
        assert len(rows) == len(expected) and len(expected) > 0
        got = [(r.label, r.score, np.array([r.x1, r.y1, r.x2, r.y2])) for r in rows.itertuples()]
        for label, score, box in expected:  # every box has its twin (equal scores may come in another order)
            assert any(label == other and abs(score - other_score) < 1e-4 and np.abs(other_box - box).max() < 0.05
                       for other, other_score, other_box in got), (path, label, score, box)


def test_detector_forward_keeps_pytorch_when_onnx_runtime_differs(bundles):
    pytest.importorskip("onnxruntime")
    # the tiny bundle's random heads give every box of a class the same score: NMS keeps other boxes in ONNX Runtime
    model = load_model(bundles / "detection", device="cpu").model
    forward = detector_forward(model, runtime="onnxruntime")
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    first = forward(x)
    assert forward.runtime == "torch" and same_detections(forward(x)[0], first[0])
    assert detector_forward(model, runtime="auto", images=DETECTOR_ONNX_MIN_IMAGES - 1).runtime == "torch"


def test_the_command_line_exports_a_detection_bundle_as_onnx(tiny_bundle, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    from easytransfer.cli import main

    assert main(["export", str(tiny_bundle), "--onnx", str(tmp_path / "detector.onnx")]) == 0
    assert "written" in capsys.readouterr().out
    session = ort.InferenceSession(str(tmp_path / "detector.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["boxes", "scores", "labels"]
    x = _noise(7)
    with torch.inference_mode():
        expected = load_model(tiny_bundle, device="cpu").model(x)[0]
    got = dict(zip(("boxes", "scores", "labels"), map(torch.from_numpy, session.run(None, {"input": x.numpy()}))))
    assert len(expected["scores"]) > 0 and same_detections(got, expected)


def test_the_command_line_predicts_and_evaluates_with_tta(bundles, tmp_path, capsys):
    import pandas as pd
    from test_detection import make_voc

    from easytransfer.cli import main

    images, annotations, _ = make_voc(tmp_path / "voc", n=2, width=80, height=64)
    csv = tmp_path / "boxes.csv"
    model = str(bundles / "detection")
    assert main(["predict", model, str(images), "--tta", "--threshold", "0", "--csv", str(csv)]) == 0
    expected = load_model(bundles / "detection", threshold=0.0, device="cpu").predict(images / "im0.png", tta=True)
    rows = pd.read_csv(csv).query("path.str.endswith('im0.png')", engine="python")
    assert len(rows) == len(expected) and list(rows["label"]) == [label for label, _, _ in expected]
    assert main(["evaluate", model, str(images), "--annotations", str(annotations), "--tta"]) == 0
    assert "map50: " in capsys.readouterr().out

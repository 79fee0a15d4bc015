"""Object detection: data with boxes that follow their images, detectors over timm bodies, the recipe, mAP, export."""

from __future__ import annotations

import contextlib
import io
import json
import re
import warnings

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

from easytransfer import DetectionData, detection_heads, detection_learner, load_model
from easytransfer.evaluate.box_metrics import average_precision
from easytransfer.tasks.detection.data import DetectionDataset
from easytransfer.tasks.detection.model import DETECTION_HEADS, build_detector, detection_layer_groups
from easytransfer.tasks.detection.report import SECTIONS as DETECTION_SECTIONS

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}
TINY = dict(fpn_channels=64, proposals=32)  # a small pyramid and few proposals: fast steps on a CPU


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Detection steps on a shared 2-core machine are 10x faster with one thread than with oversubscribed ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _scene(rng, width, height):
    img = np.full((height, width, 3), 30, np.uint8)
    objects = []
    for name, colour in COLOURS.items():
        w, h = (int(v) for v in rng.integers(20, 40, 2))
        x, y = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        img[y:y + h, x:x + w] = colour
        objects.append((name, x, y, x + w, y + h))
    return img, objects


def make_voc(root, n=12, width=120, height=100, seed=0):
    """Images of a red and a blue rectangle on grey, with their exact boxes as VOC XML; returns (images, xml, truth)."""
    rng = np.random.default_rng(seed)
    images, annotations = root / "images", root / "annotations"
    images.mkdir(parents=True)
    annotations.mkdir()
    truth = {}
    for i in range(n):
        img, objects = _scene(rng, width, height)
        Image.fromarray(img).save(images / f"im{i}.png")
        truth[f"im{i}.png"] = objects
        body = "".join(f"<object><name>{c}</name><bndbox><xmin>{a}</xmin><ymin>{b}</ymin><xmax>{d}</xmax>"
                       f"<ymax>{e}</ymax></bndbox></object>" for c, a, b, d, e in objects)
        (annotations / f"im{i}.xml").write_text(f"<annotation><filename>im{i}.png</filename>{body}</annotation>")
    return images, annotations, truth


@pytest.fixture
def voc(tmp_path):
    return make_voc(tmp_path)


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------------------------------ data


def _coloured_extent(image: torch.Tensor, colour) -> list[float]:
    """x1, y1, x2, y2 of the pixels close to `colour` in a (3, H, W) [0, 1] image."""
    target = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255
    ys, xs = torch.nonzero(((image - target).abs().amax(0) < 0.1), as_tuple=True)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def test_voc_boxes_follow_resize_and_flip(voc):
    images, annotations, truth = voc
    dls = DetectionData.from_voc(images, annotations, size=96, bs=4, aug="flips", valid_pct=0.25, seed=1)
    assert dls.classes == ["blue", "red"] and len(dls.train_ds) + len(dls.valid_ds) == 12
    ds = DetectionDataset(dls.recipe.items, dls.classes, 96, train=True, aug="flips", interpolation="nearest", seed=0)
    flipped = 0
    for i in range(len(ds)):
        x, target = ds[i]
        for box, label in zip(target["boxes"].tolist(), target["labels"].tolist()):
            name = dls.classes[label - 1]
            # the drawn rectangle, found in the transformed pixels, is where the transformed box says (1 px of
            # nearest-neighbour rounding per side)
            assert np.allclose(_coloured_extent(x, COLOURS[name]), box, atol=1.01)
        path = dls.recipe.items["path"].iloc[i]
        original = {c: (a, b, d, e) for c, a, b, d, e in truth[path.rsplit("/", 1)[-1]]}
        sx, sy = 96 / 120, 96 / 100
        a, b, d, e = original[dls.classes[target["labels"][0] - 1]]
        plain = [a * sx, b * sy, d * sx, e * sy]
        mirrored = [96 - d * sx, b * sy, 96 - a * sx, e * sy]
        got = target["boxes"][0].tolist()
        assert np.allclose(got, plain, atol=1e-4) or np.allclose(got, mirrored, atol=1e-4)
        flipped += np.allclose(got, mirrored, atol=1e-4) and not np.allclose(plain, mirrored, atol=1e-4)
    assert 0 < flipped < len(ds)
    images_batch, targets = dls.one_batch()
    assert images_batch.shape == (4, 3, 96, 96) and len(targets) == 4 and targets[0]["labels"].dtype == torch.int64
    assert isinstance(dls.show_batch(max_n=2), Figure)


def test_bad_files_reported_not_fatal(voc):
    images, annotations, _ = voc
    (images / "broken.png").write_text("not an image")
    (annotations / "broken.xml").write_text("<annotation><filename>broken.png</filename><object><name>red</name>"
                                            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax>"
                                            "</bndbox></object></annotation>")
    (annotations / "lost.xml").write_text("<annotation><filename>lost.png</filename></annotation>")
    with pytest.warns(Warning, match="excluded 2"):
        dls = DetectionData.from_voc(images, annotations, size=64, bs=4)
    reasons = dls.report.reasons()
    assert any("not an image" in r for r in reasons.values()) and any("not found" in r for r in reasons.values())
    assert dls.report.counts.loc["red"].sum() == 12 and "Excluded files" in str(dls.report)


def test_coco_and_yolo_give_the_voc_boxes(voc, tmp_path):
    images, annotations, truth = voc
    classes = ["blue", "red"]
    coco = {"images": [], "annotations": [], "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
    labels = tmp_path / "labels"
    labels.mkdir()
    for i, (name, objects) in enumerate(sorted(truth.items())):
        coco["images"].append({"id": i, "file_name": name, "width": 120, "height": 100})
        lines = []
        for c, a, b, d, e in objects:
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": i, "bbox": [a, b, d - a, e - b],
                                        "category_id": classes.index(c) + 1, "iscrowd": 0, "area": (d - a) * (e - b)})
            lines.append(f"{classes.index(c)} {(a + d) / 240} {(b + e) / 200} {(d - a) / 120} {(e - b) / 100}")
        (labels / (name[:-4] + ".txt")).write_text("\n".join(lines))
    (tmp_path / "coco.json").write_text(json.dumps(coco))

    def boxes(dls):
        items = dls.recipe.items.sort_values("path")
        return [(tuple(labs), np.round(np.asarray(bx), 3).tolist()) for labs, bx in zip(items["labels"], items["boxes"])]

    kwargs = dict(size=64, valid_pct=0.25, seed=3)
    voc_dls = DetectionData.from_voc(images, annotations, **kwargs)
    coco_dls = DetectionData.from_coco(images, tmp_path / "coco.json", **kwargs)
    yolo_dls = DetectionData.from_yolo(images, labels, classes, **kwargs)
    assert boxes(voc_dls) == boxes(coco_dls) == boxes(yolo_dls)
    assert coco_dls.classes == yolo_dls.classes == classes


def test_test_set_is_kept_apart(voc, tmp_path):
    images, annotations, _ = voc
    test_images, test_annotations, _ = make_voc(tmp_path / "test", n=3, seed=5)
    dls = DetectionData.from_voc(images, annotations, size=64, test=(test_images, test_annotations))
    assert len(dls.recipe.test_items) == 3 and len(dls.items_dl().dataset) == 3
    assert list(dls.report.counts.columns) == ["train", "valid", "test"]


# ------------------------------------------------------------------------------------------------ metrics


def test_average_precision_equals_pycocotools():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]  # "c" has predictions but no true box: left out, as pycocotools does
    true, pred = [], []
    for _ in range(6):
        n = int(rng.integers(1, 4))
        xy = rng.uniform(0, 60, (n, 2))
        boxes = np.concatenate([xy, xy + rng.uniform(10, 40, (n, 2))], 1)
        labels = rng.integers(1, 3, n)
        true.append({"boxes": boxes, "labels": labels})
        jitter = boxes + rng.normal(0, 4, boxes.shape)  # near hits at various IoUs, some misses, a false class
        extra = np.concatenate([rng.uniform(0, 60, (2, 2)), rng.uniform(70, 100, (2, 2))], 1)
        pred.append({"boxes": np.concatenate([jitter, extra]), "labels": np.concatenate([labels, [2, 3]]),
                     "scores": rng.uniform(0.05, 1, n + 2)})
    ours = average_precision(true, pred, classes)

    gt = {"images": [{"id": i, "width": 200, "height": 200} for i in range(len(true))],
          "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)], "annotations": []}
    dets = []
    for i, (t, p) in enumerate(zip(true, pred)):
        for box, label in zip(t["boxes"], t["labels"]):
            w, h = box[2] - box[0], box[3] - box[1]
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": int(label),
                                      "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0})
        for box, label, score in zip(p["boxes"], p["labels"], p["scores"]):
            dets.append({"image_id": i, "category_id": int(label), "score": float(score),
                         "bbox": [box[0], box[1], box[2] - box[0], box[3] - box[1]]})
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert ours.map == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert ours.map50 == pytest.approx(evaluator.stats[1], abs=1e-9)
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class, area all, 100 dets
    for k, name in enumerate(classes[:2]):
        assert ours.per_class[name] == pytest.approx(precision[:, :, k].mean(), abs=1e-9)
    assert "c" not in ours.per_class and 0 < ours.map < ours.map50 < 1


# ------------------------------------------------------------------------------------------------ models


def test_detection_heads_lists_the_built_ones():
    assert [h.head for h in detection_heads()] == list(DETECTION_HEADS)


@pytest.mark.parametrize("head", DETECTION_HEADS)
def test_detector_builds_with_packaged_weights_in_the_body(head):
    import timm

    from easytransfer.models.factory import load_pretrained

    model, config, _, source = build_detector("efficientnet_lite0", 2, head=head, size=96, **TINY)
    assert source.startswith("package") and config.mean == (0.5, 0.5, 0.5)
    reference = timm.create_model("tf_efficientnet_lite0")
    load_pretrained(reference, "tf_efficientnet_lite0")
    body = model.backbone.body.state_dict()
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in body.items())  # every body tensor loaded
    groups = detection_layer_groups(model)
    names = [n for g in groups.names for n in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())  # each parameter in one group
    assert all(n.startswith("backbone.body.") for g in groups.names[:-1] for n in g)
    assert groups.names[0][0] == "backbone.body.conv_stem.weight" and len(groups) == 5
    model.eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 96, 96))
    assert set(out[0]) == {"boxes", "scores", "labels"} | ({"masks"} if head == "maskrcnn" else set())


def _trainable(learn) -> int:
    return sum(p.numel() for p in learn.model.parameters() if p.requires_grad)


def test_freezing_really_freezes(voc):
    images, annotations, _ = voc
    dls = DetectionData.from_voc(images, annotations, size=96, bs=4)
    learn = quiet(detection_learner, dls, "mobilenetv2_100", "retinanet", device="cpu", **TINY)
    groups = learn.layer_groups.params(learn.model)
    per_group = [sum(p.numel() for p in g) for g in groups]
    assert _trainable(learn) == per_group[-1]  # frozen: the pyramid and the heads only
    learn.unfreeze(1)
    assert _trainable(learn) == per_group[-1] + per_group[-2]
    learn.unfreeze()
    assert _trainable(learn) == sum(per_group)
    learn.freeze()
    assert _trainable(learn) == per_group[-1]
    config, detector = learn.bundle_config(), learn.detection_config  # the recipe's one bundle builder
    assert (config.task, config.arch, config.source, config.source_arch) == ("detection", detector.arch, "timm",
                                                                             detector.source_arch)
    assert config.task_config is detector and config.classes == tuple(dls.classes)
    assert not hasattr(learn, "calibrate") and not hasattr(learn, "conformal")


@pytest.mark.slow
def test_recipe_evaluate_export_and_predict(voc, tmp_path):
    images, annotations, _ = voc
    test_images, test_annotations, _ = make_voc(tmp_path / "test", n=3, seed=7)
    dls = DetectionData.from_voc(images, annotations, size=96, bs=4, test=(test_images, test_annotations))
    torch.manual_seed(0)
    learn = quiet(detection_learner, dls, "efficientnet_lite0", "fcos", device="cpu", checkpoint_dir=tmp_path / "ck",
                  **TINY)
    counts = []
    record = type("Count", (__import__("fastai.callback.core").callback.core.Callback,), {
        "before_train": lambda self: counts.append(_trainable(self.learn))})()
    body = {k: v.clone() for k, v in learn.model.backbone.body.state_dict().items()}
    quiet(learn.fit_frozen, 2, lr=1e-3, cbs=[record])
    assert all(torch.equal(v, learn.model.backbone.body.state_dict()[k]) for k, v in body.items())  # BN stats too
    learn.unfreeze(1)
    quiet(learn.fit_discriminative, 1, lr_max=1e-4, cbs=[record])
    head = sum(p.numel() for p in learn.layer_groups.params(learn.model)[-1])
    top = sum(p.numel() for p in learn.layer_groups.params(learn.model)[-2])
    assert counts == [head, head, head + top]
    history = learn.history
    assert list(history["phase"]) == ["frozen", "frozen", "discriminative"]
    assert np.isfinite(history["valid_loss"]).all() and isinstance(learn.plot_history(), Figure)
    assert (tmp_path / "ck" / "last.safetensors").is_file()
    again = quiet(detection_learner, dls, "efficientnet_lite0", "fcos", device="cpu", pretrained=False,
                  checkpoint_dir=tmp_path / "ck", **TINY)
    quiet(again.fit_discriminative, 1, lr_max=1e-4, resume=True)  # the finished fit: weights and history come back
    assert list(again.history["phase"]) == list(history["phase"])

    scores = learn.evaluate()
    assert scores["n_images"] == 3 and set(scores["per_class_ap"]) == {"blue", "red"}
    assert 0 <= scores["map"] <= scores["map50"] <= 1
    interp = learn.interpret()
    assert list(interp.per_class().index) == ["blue", "red"] and len(interp.top_losses()) == 3
    assert isinstance(interp.plot_top_losses(2), Figure)

    bundle = learn.export(tmp_path / "bundle")
    assert json.loads((bundle / "easytransfer.json").read_text())["task"] == "detection"
    predictor = load_model(bundle, threshold=0.0, device="cpu")
    image = str(test_images / "im0.png")
    found = predictor.predict(image)
    assert found == learn.predict(image, score_threshold=0.0)
    label, score, box = found[0]
    assert label in ("blue", "red") and 0 <= score <= 1 and len(box) == 4
    assert max(b[2] for _, _, b in found) <= 120 + 1e-3  # boxes in the original image's pixels (120 x 100)


@pytest.mark.slow
def test_lr_find_and_gradual(voc):
    images, annotations, _ = voc
    dls = DetectionData.from_voc(images, annotations, size=96, bs=4)
    learn = quiet(detection_learner, dls, "efficientnet_lite0", "fasterrcnn", device="cpu", n_stages=2, **TINY)
    before = {k: v.clone() for k, v in learn.model.state_dict().items()}
    result = quiet(learn.lr_find, num_it=6)
    assert len(result.lrs) > 0
    assert all(torch.equal(v, learn.model.state_dict()[k]) for k, v in before.items())  # restored exactly
    quiet(learn.fit_gradual, 1, 1e-4, head_lr=1e-3, max_unfrozen=1)
    assert list(learn.history["phase"]) == ["stage 0", "stage 1"]


def test_html_report_shows_map_per_class_ap_and_top_losses(voc, tmp_path):
    images, annotations, _ = voc
    dls = DetectionData.from_voc(images, annotations, size=64, bs=4, seed=0)
    learn = quiet(detection_learner, dls, "mobilenetv2_100", "fcos", device="cpu", **TINY)
    quiet(learn.fit_frozen, 1, lr=1e-3)
    interp = learn.interpret()
    text = learn.save_report(tmp_path / "report.html", interp=interp, top_k=2).read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', text) == list(DETECTION_SECTIONS.items())
    assert re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text) == [
        "training history", "top losses: true and predicted boxes"]
    scores = interp.scores()
    for shown in (f"{scores['map50']:.4f}", f"{scores['map']:.4f}", "<th>blue</th>", "<th>red</th>", "<th>ap50</th>",
                  "fcos detector", "Diagnosis:"):
        assert shown in text, shown
    without_losses = learn.save_report(tmp_path / "quick.html", interp=learn.interpret(losses=False))
    assert "top losses: true and predicted boxes" not in without_losses.read_text(encoding="utf-8")


def test_augmentation_follows_set_seed(voc):
    """The training flips and jitter draw from torch's generator: ``set_seed`` makes a run repeat exactly."""
    from fastai.torch_core import set_seed

    images, annotations, _ = voc
    ds = DetectionData.from_voc(images, annotations, size=64, bs=4, aug="light", seed=0).train_ds

    def draw():
        set_seed(0)
        return [ds[i] for i in range(len(ds))]

    first, again = draw(), draw()
    assert all(torch.equal(x, y) and torch.equal(t["boxes"], u["boxes"]) for (x, t), (y, u) in zip(first, again))

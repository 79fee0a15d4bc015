"""Instance segmentation on the detection seam (issue 27): masks from YOLO-seg and COCO (polygons, RLE) that move
with their images, Mask R-CNN trained by the recipe, mask AP equal to pycocotools' segm evaluation, overlays, and
export -> load_model -> predict with a boolean mask per object at the image's size."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image
from task_data import ARCH, INSTANCE_COLOURS, write_instance_scenes

from easytransfer import DetectionData, detection_learner, load_model
from easytransfer.errors import DataError
from easytransfer.evaluate.box_metrics import average_precision
from easytransfer.evaluate.instance_masks import EncodedMasks, mask_iou
from easytransfer.tasks.detection.data import DetectionDataset
from easytransfer.tasks.detection.masks import check_head_data, masks_at_image_size, segmentation_rle
from easytransfer.tasks.detection.predictor import draw_found_boxes

TINY = dict(fpn_channels=32, proposals=16, score_thresh=0.0)  # small and fast on a CPU; every detection kept
SIZE = 64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Detection steps on a shared 2-core machine are much faster with one thread than with oversubscribed ones."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_instance_scenes(tmp_path_factory.mktemp("scenes"), n=6)


def _coloured(image: torch.Tensor, colour) -> np.ndarray:
    """The pixels of a (3, H, W) [0, 1] image close to `colour`."""
    target = torch.tensor(colour, dtype=torch.float32).view(3, 1, 1) / 255
    return ((image - target).abs().amax(0) < 0.05).numpy()


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


# ------------------------------------------------------------------------------------------------ data


def test_yolo_seg_masks_follow_resize_and_flip(scenes):
    dls = DetectionData.from_yolo(scenes["images"], scenes["labels"], list(INSTANCE_COLOURS), masks=True, size=SIZE,
                                  bs=2, valid_pct=0.34, seed=0)
    assert dls.has_masks and dls.recipe.masks and len(dls.recipe.items["masks"][0]) == 2
    ds = DetectionDataset(dls.recipe.items, dls.classes, SIZE, train=True, aug="flips", interpolation="nearest",
                          seed=0, masks=True)
    flipped = 0
    for i in range(len(ds)):
        x, target = ds[i]
        masks = target["masks"]
        assert masks.dtype == torch.uint8 and masks.shape == (2, SIZE, SIZE)
        by_class = {dls.classes[label - 1]: m.numpy().astype(bool) for label, m in zip(target["labels"], masks)}
        # the block's polygon is its exact corners: its mask is the red pixels, where the flip put them
        assert np.array_equal(by_class["block"], _coloured(x, INSTANCE_COLOURS["block"]))
        assert _iou(by_class["disc"], _coloured(x, INSTANCE_COLOURS["disc"])) > 0.8  # a 24-point polygon of it
        for box, mask in zip(target["boxes"].tolist(), masks):
            ys, xs = torch.nonzero(mask, as_tuple=True)
            assert np.allclose([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], box, atol=1.01)
        flipped += bool(_coloured(x, INSTANCE_COLOURS["block"])[:, SIZE // 2:].any())  # the block went right
    assert 0 < flipped < len(ds)
    images, targets = dls.one_batch()
    assert targets[0]["masks"].shape == (2, SIZE, SIZE) and targets[0]["masks"].device == images.device
    assert isinstance(dls.show_batch(max_n=2), Figure)


def test_coco_polygons_and_rle_give_the_drawn_masks(scenes):
    dls = DetectionData.from_coco(scenes["images"], scenes["coco"], masks=True, size=SIZE, valid_pct=0.34, seed=0)
    ds = DetectionDataset(dls.recipe.items, dls.classes, SIZE, interpolation="nearest", masks=True)
    for i in range(len(ds)):
        x, target = ds[i]
        name = dls.recipe.items["path"][i].rsplit("/", 1)[-1]
        for label, mask in zip(target["labels"].tolist(), target["masks"]):
            cls = dls.classes[label - 1]
            assert np.array_equal(mask.numpy().astype(bool), _coloured(x, INSTANCE_COLOURS[cls])), (name, cls)
    # the masks at the original size are the drawn ones exactly (polygon, compressed and uncompressed RLE)
    items = dls.recipe.items.assign(name=[p.rsplit("/", 1)[-1] for p in dls.recipe.items["path"]])
    for row in items.itertuples():
        for (cls, drawn), rle in zip(scenes["truth"][row.name], row.masks):
            assert np.array_equal(EncodedMasks((rle,), 64, 80).decode()[0], drawn), (row.name, cls)


def test_boxes_only_data_is_refused_by_maskrcnn_with_the_fix(scenes, tmp_path):
    dls = DetectionData.from_coco(scenes["images"], scenes["coco"], size=SIZE)
    assert not dls.has_masks and "masks" not in dls.train_ds[0][1]
    with pytest.raises(DataError, match=r"masks=True"):
        detection_learner(dls, ARCH, "maskrcnn", pretrained=False)
    check_head_data("fasterrcnn", has_masks=False)  # box heads take any data
    with pytest.raises(DataError, match="VOC XML holds boxes only"):
        DetectionData.from_annotations(scenes["images"], tmp_path, format="voc", masks=True)


def test_unusable_segmentations_are_left_out_with_a_message(tmp_path):
    scenes = write_instance_scenes(tmp_path / "s", n=3)
    (scenes["labels"] / "scene0.txt").write_text("0 0.1 0.1 0.3 0.3\n1 0.6 0.2 0.9 0.2 0.9 0.5 0.6 0.5")
    dls = DetectionData.from_yolo(scenes["images"], scenes["labels"], list(INSTANCE_COLOURS), masks=True, size=SIZE,
                                  valid_pct=0.34, seed=0)
    assert any("not a YOLO-seg polygon" in m for m in dls.report.messages)
    assert sum(len(labs) for labs in dls.recipe.items["labels"]) == 5  # the box line is left out, the rest kept
    with pytest.raises(ValueError, match="polygons"):
        segmentation_rle(None, 4, 4)


# ------------------------------------------------------------------------------------------------ metrics


def _random_shape(rng, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    if rng.random() < 0.5:
        w, h = rng.integers(5, 16, 2)
        x, y = rng.integers(0, width - w), rng.integers(0, height - h)
        mask[y:y + h, x:x + w] = True
    else:
        r = int(rng.integers(3, 8))
        cy, cx = rng.integers(r, height - r), rng.integers(r, width - r)
        yy, xx = np.mgrid[:height, :width]
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
    return mask


def test_mask_average_precision_equals_pycocotools_segm():
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(0)
    height, width = 40, 48
    classes = ["a", "b", "c"]  # "c" has predictions but no true mask: left out, as pycocotools does
    true, pred = [], []
    for _ in range(5):
        n = int(rng.integers(1, 4))
        masks = np.stack([_random_shape(rng, height, width) for _ in range(n)])
        labels = rng.integers(1, 3, n)
        true.append({"boxes": np.zeros((n, 4)), "labels": labels, "masks": masks})
        # near hits (shifted by 0-3 pixels: IoUs across the thresholds), misses and a class with no truth
        moved = np.stack([np.roll(m, tuple(rng.integers(-3, 4, 2)), axis=(0, 1)) for m in masks])
        extra = np.stack([_random_shape(rng, height, width) for _ in range(2)])
        scores = rng.uniform(0.05, 1, n + 2)
        probabilities = np.concatenate([moved, extra])[:, None].astype(np.float32) * 0.9  # torchvision's layout
        pred.append({"boxes": np.zeros((n + 2, 4)), "labels": np.concatenate([labels, [2, 3]]),
                     "scores": scores, "masks": probabilities})
    ours = average_precision(true, pred, classes, iou_type="segm")

    def rle(mask):
        encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        return {"size": encoded["size"], "counts": encoded["counts"].decode()}

    gt = {"images": [{"id": i, "width": width, "height": height} for i in range(len(true))],
          "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)], "annotations": []}
    dets = []
    for i, (t, p) in enumerate(zip(true, pred)):
        for mask, label in zip(t["masks"], t["labels"]):
            encoded = rle(mask)
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": i, "category_id": int(label),
                                      "segmentation": encoded, "area": float(mask.sum()), "iscrowd": 0,
                                      "bbox": list(mask_utils.toBbox(encoded))})
        for mask, label, score in zip(p["masks"][:, 0] > 0.5, p["labels"], p["scores"]):
            dets.append({"image_id": i, "category_id": int(label), "score": float(score), "segmentation": rle(mask)})
    coco = COCO()
    coco.dataset = gt
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        evaluator = COCOeval(coco, coco.loadRes(dets), "segm")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    assert ours.map == pytest.approx(evaluator.stats[0], abs=1e-9)
    assert ours.map50 == pytest.approx(evaluator.stats[1], abs=1e-9)
    precision = evaluator.eval["precision"][:, :, :, 0, -1]  # IoU x recall x class, area all, 100 dets
    for k, name in enumerate(classes[:2]):
        assert ours.per_class[name] == pytest.approx(precision[:, :, k].mean(), abs=1e-9)
    assert "c" not in ours.per_class and 0 < ours.map < ours.map50 < 1
    # the same figures from EncodedMasks, and mask IoU is pycocotools'
    encoded = [{**t, "masks": EncodedMasks.encode(t["masks"])} for t in true]
    assert average_precision(encoded, pred, classes, iou_type="segm") == ours
    assert mask_iou(EncodedMasks.encode(true[0]["masks"]), EncodedMasks.encode(true[0]["masks"])).diagonal().tolist() \
        == [1.0] * len(true[0]["masks"])


def test_predicted_masks_map_back_to_the_image_size():
    probabilities = torch.zeros(1, 1, 8, 8)
    probabilities[0, 0, :4, :4] = 1.0  # the top-left quarter at the detector's size
    (mask,) = masks_at_image_size(probabilities, width=200, height=120)
    assert mask.dtype == bool and mask.shape == (120, 200)
    quarter = np.zeros((120, 200), bool)
    quarter[:60, :100] = True  # bilinear like torchvision's own pasting: the same quarter, its corner rounded
    assert _iou(mask, quarter) > 0.98 and not (mask & ~quarter).any()
    drawn = draw_found_boxes(Image.new("RGB", (200, 120)), [("block", 0.9, (0, 0, 100, 60), mask)])
    assert drawn.getpixel((50, 40)) == (102, 0, 0) and drawn.getpixel((150, 100)) == (0, 0, 0)  # tinted inside only


# ------------------------------------------------------------------------------------------------ Mask R-CNN


@pytest.fixture(scope="module")
def trained(scenes, tmp_path_factory):
    root = tmp_path_factory.mktemp("test-scenes")
    test = write_instance_scenes(root, n=2, seed=1)
    dls = DetectionData.from_coco(scenes["images"], scenes["coco"], masks=True, size=SIZE, bs=2, valid_pct=0.34,
                                  seed=0, test=(test["images"], test["coco"]))
    torch.manual_seed(0)
    learn = quiet(detection_learner, dls, ARCH, "maskrcnn", pretrained=False, device="cpu", **TINY)
    assert quiet(learn.fit_frozen, 1) is learn
    return learn, test


def test_maskrcnn_trains_and_evaluates_masks(trained):
    learn, _ = trained
    assert type(learn.model).__name__ == "MaskRCNN" and learn.detection_config.instance_masks
    assert learn.model.roi_heads.mask_roi_pool.output_size == (14, 14)
    assert len(learn.history) == 1 and np.isfinite(learn.history["train_loss"]).all()
    scores = quiet(learn.evaluate)
    assert {"map50", "map", "mask_map50", "mask_map", "per_class_mask_ap"} <= set(scores)
    assert scores["n_images"] == 2 and 0 <= scores["mask_map"] <= scores["mask_map50"] <= 1
    interp = quiet(learn.interpret)
    assert isinstance(interp.preds[0]["masks"], EncodedMasks) and interp.preds[0]["masks"].height == SIZE
    assert {"mask_ap50", "mask_ap"} <= set(interp.per_class().columns)
    assert isinstance(interp.plot_top_losses(2), Figure)


def test_maskrcnn_export_load_model_predict_masks(trained, tmp_path):
    learn, test = trained
    image = test["images"] / "scene0.png"  # 80 x 64: not the detector's square size
    found = learn.predict(image, score_threshold=0.0)
    assert found and all(len(f) == 4 for f in found)
    label, score, box, mask = found[0]
    assert label in INSTANCE_COLOURS and 0 <= score <= 1 and len(box) == 4
    assert mask.dtype == bool and mask.shape == (64, 80)

    bundle = learn.export(tmp_path / "bundle")
    predictor = quiet(load_model, bundle, threshold=0.0, device="cpu")
    assert predictor.detection_config.head == "maskrcnn"
    again = predictor.predict(image)
    assert [f[0] for f in again] == [f[0] for f in found]
    assert np.allclose([f[1] for f in again], [f[1] for f in found], atol=1e-4)
    assert all(m.shape == (64, 80) and (m == f[3]).mean() > 0.99 for (*_, m), f in zip(again, found))
    table = predictor.predict_folder(image, out=tmp_path / "drawn")
    assert len(table) == len(again) and (tmp_path / "drawn" / "scene0.png").is_file()
    scores = quiet(predictor.evaluate, test["images"], test["coco"])
    assert {"mask_map50", "mask_map"} <= set(scores)

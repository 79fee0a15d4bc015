"""Detection metrics on numpy arrays: COCO's average precision, computed the way pycocotools computes it.

`average_precision` follows ``pycocotools.cocoeval.COCOeval`` for boxes (``iou_type="bbox"``) and instance masks
(``iou_type="segm"``: the IoU of `EncodedMasks`, pycocotools' own) (area range "all", at most
`max_dets` detections per image and class): per image and class, detections sorted by score greedily take the
unmatched true box of highest IoU at or above each threshold; per class, all images' detections are sorted by
score (a stable sort, so ties keep image order), precision is made monotone and read at 101 recall points.
``map`` averages IoU thresholds 0.50:0.05:0.95 and the classes that have true boxes; ``map50`` is IoU 0.5.
The test suite checks the figures against pycocotools on hand-built fixtures (boxes and masks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .instance_masks import EncodedMasks, mask_iou

__all__ = ["IOU_TYPES", "IOU_THRESHOLDS", "BoxAP", "average_precision", "box_iou"]

IOU_TYPES = ("bbox", "segm")  # pycocotools' names: boxes, instance masks

IOU_THRESHOLDS = np.linspace(0.5, 0.95, 10)
RECALL_POINTS = np.linspace(0.0, 1.0, 101)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` (n, 4) with every box in `b` (m, 4), ``x1, y1, x2, y2``; shape (n, m).

    >>> box_iou(np.array([[0., 0, 2, 2]]), np.array([[1., 1, 3, 3]])).round(4).tolist()
    [[0.1429]]
    """
    a, b = np.asarray(a, dtype=float).reshape(-1, 4), np.asarray(b, dtype=float).reshape(-1, 4)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


@dataclass(frozen=True)
class BoxAP:
    """Average precision of a set of detections.

    Attributes:
        map50: mean over classes of AP at IoU 0.5 (COCO's ``AP50``).
        map: mean over classes and IoU 0.50:0.05:0.95 (COCO's ``AP``).
        per_class: class -> AP (0.50:0.95); classes without true boxes are left out (pycocotools: -1).
        per_class50: class -> AP at IoU 0.5.
        n_true, n_pred: true and predicted boxes per class.
        n_images: images evaluated.
    """

    map50: float
    map: float
    per_class: dict[str, float]
    per_class50: dict[str, float]
    n_true: dict[str, int]
    n_pred: dict[str, int]
    n_images: int

    def scores(self, prefix: str = "") -> dict:
        """``n_images``, ``map50``, ``map``, ``per_class_ap`` and ``per_class_ap50``, the AP keys after `prefix`.

        >>> sorted(BoxAP(1.0, 0.5, {}, {}, {}, {}, 2).scores("mask_"))
        ['mask_map', 'mask_map50', 'n_images', 'per_class_mask_ap', 'per_class_mask_ap50']
        """
        return {"n_images": self.n_images, f"{prefix}map50": self.map50, f"{prefix}map": self.map,
                f"per_class_{prefix}ap": dict(self.per_class), f"per_class_{prefix}ap50": dict(self.per_class50)}


def _match(iou: np.ndarray, threshold: float) -> np.ndarray:
    """Whether each detection (rows, sorted by score) matches a true box at `threshold` (COCOeval.evaluateImg)."""
    matched = np.zeros(iou.shape[1], dtype=bool)
    hits = np.zeros(iou.shape[0], dtype=bool)
    limit = min(threshold, 1 - 1e-10)
    for d in range(iou.shape[0]):
        best, best_iou = -1, limit
        for g in range(iou.shape[1]):
            if matched[g] or iou[d, g] < best_iou:
                continue
            best, best_iou = g, iou[d, g]
        if best >= 0:
            matched[best] = hits[d] = True
    return hits


def _class_ap(per_image: list[tuple], max_dets: int, iou_of: Callable) -> np.ndarray | None:
    """AP per IoU threshold of one class; `per_image`: (true, detected, scores) with `iou_of(detected, true)`
    their IoU (boxes or masks); ``None``: no truth."""
    n_true = sum(len(t) for t, _, _ in per_image)
    if n_true == 0:
        return None
    scores, hits = [], []
    for true, boxes, score in per_image:
        order = np.argsort(-score, kind="mergesort")[:max_dets]
        iou = iou_of(boxes[order], true)
        scores.append(score[order])
        hits.append(np.stack([_match(iou, t) for t in IOU_THRESHOLDS]) if len(order) else
                    np.zeros((len(IOU_THRESHOLDS), 0), dtype=bool))
    scores = np.concatenate(scores)
    order = np.argsort(-scores, kind="mergesort")
    hits = np.concatenate(hits, axis=1)[:, order]
    ap = np.zeros(len(IOU_THRESHOLDS))
    for t, row in enumerate(hits):
        tp = np.cumsum(row).astype(float)
        fp = np.cumsum(~row).astype(float)
        recall = tp / n_true
        precision = tp / (tp + fp + np.spacing(1))  # pycocotools' own formula
        precision = np.maximum.accumulate(precision[::-1])[::-1]  # the envelope, from the right
        idx = np.searchsorted(recall, RECALL_POINTS, side="left")
        q = np.where(idx < len(precision), precision[np.minimum(idx, len(precision) - 1)], 0.0) if len(row) else \
            np.zeros(len(RECALL_POINTS))
        ap[t] = q.mean()
    return ap


def _mean(values: dict) -> float:
    return float(np.mean(list(values.values()))) if values else float("nan")


def _numpy(value) -> np.ndarray:
    return np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)


def _instances(image: dict, iou_type: str):
    """The boxes ``(n, 4)`` or the masks (`EncodedMasks`) of one image's dict."""
    if iou_type == "bbox":
        return _numpy(image["boxes"]).reshape(-1, 4)
    masks = image["masks"]
    if not isinstance(masks, EncodedMasks):
        masks = _numpy(masks)
        masks = masks[:, 0] if masks.ndim == 4 else masks  # torchvision's (n, 1, H, W) probabilities
    return EncodedMasks.encode(masks)


def average_precision(true: Sequence[dict], pred: Sequence[dict], classes: Sequence[str], *,
                      max_dets: int = 100, iou_type: str = "bbox") -> BoxAP:
    """COCO box (or mask) AP of `pred` against `true`, one dict per image.

    Args:
        true: per image ``{"boxes": (n, 4), "labels": (n,)}`` (labels 1-based: label ``i`` is ``classes[i - 1]``),
            and ``"masks"`` (``(n, H, W)`` arrays or `EncodedMasks`) for ``iou_type="segm"``.
        pred: per image ``{"boxes", "labels", "scores"}`` (and ``"masks"``: probabilities are cut at 0.5).
        classes: class names.
        max_dets: detections kept per image and class (COCO: 100).
        iou_type: ``"bbox"`` (box IoU) or ``"segm"`` (mask IoU), as pycocotools' ``COCOeval`` names them.

    Returns:
        a `BoxAP`.

    >>> t = [{"boxes": np.array([[0., 0, 10, 10]]), "labels": np.array([1])}]
    >>> p = [{"boxes": np.array([[0., 0, 10, 10]]), "labels": np.array([1]), "scores": np.array([0.9])}]
    >>> round(average_precision(t, p, ["cat"]).map, 6)  # pycocotools: 0.9999999999999998 too (eps in precision)
    1.0
    """
    if len(true) != len(pred):
        raise ValueError(f"Got {len(true)} images of true boxes and {len(pred)} of predictions.")
    if iou_type not in IOU_TYPES:
        raise ValueError(f"iou_type must be one of {IOU_TYPES}, got {iou_type!r}")
    iou_of = box_iou if iou_type == "bbox" else mask_iou
    images = [(_numpy(t["labels"]).reshape(-1), _instances(t, iou_type), _numpy(p["labels"]).reshape(-1),
               _instances(p, iou_type), _numpy(p["scores"]).reshape(-1).astype(float)) for t, p in zip(true, pred)]
    per_class, per_class50, n_true, n_pred = {}, {}, {}, {}
    for c, name in enumerate(classes, start=1):
        of_class = [(true_items[true_labels == c], pred_items[pred_labels == c], scores[pred_labels == c])
                    for true_labels, true_items, pred_labels, pred_items, scores in images]
        n_true[name] = int(sum(len(i[0]) for i in of_class))
        n_pred[name] = int(sum(len(i[1]) for i in of_class))
        ap = _class_ap(of_class, max_dets, iou_of)
        if ap is not None:
            per_class[name], per_class50[name] = float(ap.mean()), float(ap[0])
    return BoxAP(_mean(per_class50), _mean(per_class), per_class, per_class50, n_true, n_pred, len(true))

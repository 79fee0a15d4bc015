"""Test-time augmentation for detectors: each image and its horizontal flip, the two sets of boxes merged.

The flipped image's boxes (and a Mask R-CNN's masks) are mirrored back into the plain image's pixels, then the two
views are merged per class by weighted box fusion (Solovyev et al., "Weighted boxes fusion", 2021) over clusters
that torchvision's `batched_nms` finds:

- every detection of both views is pooled; `batched_nms` at `TTA_IOU` picks the cluster leaders, best first,
  and each detection joins the best leader of its class it overlaps by more than `TTA_IOU`;
- a cluster's box (and mask) is the score-weighted mean of its members': the two views' estimates of one object
  are averaged, which steadies the box, where NMS would keep one of them and throw the other's evidence away;
- its score is the mean over the views of each view's best score in the cluster, a view without a member
  counting 0. A box both views find keeps its (averaged) score; a box only one view finds keeps half of it.
  Plain NMS over the union would keep the single view's full score, so an object that disappears when the
  image is mirrored (a less stable detection) would look as sure as one both views agree on.

`flip_tta` takes any callable that maps a ``(B, 3, H, W)`` batch to torchvision's list of detection dicts: the
detector in eval mode, or its ONNX Runtime session (`easytransfer.tasks.detection.export.DetectorForward`).

>>> import torch
>>> view = {"boxes": torch.tensor([[10.0, 10, 30, 30]]), "scores": torch.tensor([0.8]), "labels": torch.tensor([1])}
>>> merged = merge_detections([view, {k: v[:0] for k, v in view.items()}])
>>> merged["boxes"].tolist(), round(float(merged["scores"][0]), 2)
([[10.0, 10.0, 30.0, 30.0]], 0.4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torchvision.ops import batched_nms, box_iou

from .data import hflip_boxes

__all__ = ["TTA_IOU", "flip_detections", "flip_tta", "merge_detections"]

# Weighted boxes fusion's own setting (Solovyev et al.: IoU 0.55 was best on COCO / Open Images); above the 0.5 of
# torchvision's Faster R-CNN and RetinaNet NMS, so two objects a view kept apart are rarely fused.
TTA_IOU = 0.55

Detections = dict[str, torch.Tensor]  # torchvision's per-image output: boxes, scores, labels (and masks)


def flip_detections(detections: Detections, width: int) -> Detections:
    """`detections` of a horizontally flipped image mapped back to the image (``x -> width - x``); masks flipped.

    >>> d = {"boxes": torch.tensor([[0.0, 5, 10, 20]]), "scores": torch.ones(1), "labels": torch.ones(1)}
    >>> flip_detections(d, 64)["boxes"].tolist()
    [[54.0, 5.0, 64.0, 20.0]]
    """
    flipped = dict(detections)
    boxes = detections["boxes"]  # the data's flip of training boxes, on a CPU copy (a few boxes)
    flipped["boxes"] = torch.from_numpy(hflip_boxes(boxes.detach().cpu().numpy(), width)).to(boxes)
    if "masks" in detections:
        flipped["masks"] = detections["masks"].flip(-1)
    return flipped


def merge_detections(views: Sequence[Detections], iou_threshold: float = TTA_IOU) -> Detections:
    """One image's detections from several views (already in the same pixels) fused per class (module docstring).

    Args:
        views: one torchvision detection dict per view (``boxes``, ``scores``, ``labels``, optional ``masks``).
        iou_threshold: detections of one class overlapping more than this describe one object.

    Returns:
        A detection dict, best first: fused boxes, scores averaged over the views, labels (and averaged masks).

    >>> a = {"boxes": torch.tensor([[10.0, 10, 30, 30]]), "scores": torch.tensor([0.9]), "labels": torch.tensor([1])}
    >>> b = {"boxes": torch.tensor([[12.0, 10, 32, 30]]), "scores": torch.tensor([0.7]), "labels": torch.tensor([1])}
    >>> merged = merge_detections([a, b])
    >>> [round(v, 2) for v in merged["boxes"][0].tolist()], round(float(merged["scores"][0]), 2)
    ([10.88, 10.0, 30.88, 30.0], 0.8)
    """
    boxes = torch.cat([v["boxes"] for v in views]).float()
    scores = torch.cat([v["scores"] for v in views]).float()
    labels = torch.cat([v["labels"] for v in views])
    masks = torch.cat([v["masks"] for v in views]).float() if all("masks" in v for v in views) else None
    if not len(scores):
        return {"boxes": boxes, "scores": scores, "labels": labels, **({} if masks is None else {"masks": masks})}
    device, n = boxes.device, len(scores)
    view = torch.cat([torch.full((len(v["scores"]),), i, dtype=torch.long) for i, v in enumerate(views)]).to(device)
    leaders = batched_nms(boxes, scores, labels, iou_threshold)  # best first
    joins = (box_iou(boxes[leaders], boxes) > iou_threshold) & (labels[leaders][:, None] == labels[None])
    joins[torch.arange(len(leaders), device=device), leaders] = True  # a leader is in its own cluster (zero area too)
    cluster = joins.int().argmax(dim=0)  # each detection's best leader (every one has one: NMS suppressed it)
    weights = torch.zeros(len(leaders), n, device=device)
    weights[cluster, torch.arange(n, device=device)] = scores
    weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    by_view = torch.zeros(n, len(views), device=device)
    by_view[torch.arange(n, device=device), view] = scores
    best = torch.zeros(len(leaders), len(views), device=device).scatter_reduce_(
        0, cluster[:, None].expand(-1, len(views)), by_view, "amax")  # each view's best score in each cluster
    merged = {"boxes": weights @ boxes, "scores": best.mean(dim=1), "labels": labels[leaders]}
    if masks is not None:
        merged["masks"] = torch.einsum("kn,n...->k...", weights, masks)
    order = merged["scores"].argsort(descending=True, stable=True)
    return {k: v[order] for k, v in merged.items()}


def flip_tta(detector: Callable[[torch.Tensor], list[Detections]], images: torch.Tensor) -> list[Detections]:
    """`detector` on `images` and on their horizontal flips, each image's two views merged (`merge_detections`).

    Args:
        detector: maps a ``(B, 3, H, W)`` batch to one detection dict per image (a torchvision detector in eval
            mode under ``inference_mode``, or `DetectorForward`).
        images: the batch, as `detector` takes it.

    Returns:
        One merged detection dict per image, in the pixels of `images`.

    >>> found = flip_tta(model.eval(), torch.rand(1, 3, 96, 96))  # doctest: +SKIP
    """
    plain = detector(images)
    flipped = detector(images.flip(-1))
    width = images.shape[-1]
    return [merge_detections([p, flip_detections(f, width)]) for p, f in zip(plain, flipped)]

"""Instance masks of the detection task (Mask R-CNN): read from annotations, resized with their image, drawn, and
mapped from a prediction back onto the image.

Annotations keep each instance's mask as pycocotools' compressed RLE at the original image's size (a few hundred
bytes, where a decoded mask of a 640 x 480 photo is 300 KB): COCO ``segmentation`` polygons and RLE are read as
``pycocotools.coco.COCO.annToRLE`` reads them, YOLO-seg's normalised polygons are scaled to the image's pixels and
rasterised the same way. A training item decodes its masks and resizes them with nearest-neighbour sampling to the
detector's ``size x size`` (the image's own resize, pixel centres aligned as PIL's), then flips them with the image.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from pycocotools import mask as mask_utils

from ...choices import INSTANCE_HEADS as INSTANCE_HEADS
from ...errors import DataError
from ...evaluate.instance_masks import EncodedMasks

__all__ = ["INSTANCE_HEADS", "boolean_masks", "check_head_data", "mask_overlay", "masks_at_image_size", "polygon_rle",
           "resized_masks", "segmentation_rle", "yolo_polygon_rle"]

MASK_THRESHOLD = 0.5  # torchvision's: a pixel whose mask probability is above it belongs to the object
MIN_POLYGON_VALUES = 6  # three x, y points; pycocotools reads a list of four numbers as a box, not a polygon


def polygon_rle(polygons: Sequence[Sequence[float]], height: int, width: int) -> dict:
    """One instance's polygons (``[x1, y1, x2, y2, ...]`` in pixels) rasterised as one compressed RLE.

    Raises:
        ValueError: no polygon has three points.

    >>> rle = polygon_rle([[1, 1, 9, 1, 9, 5, 1, 5]], 8, 12)
    >>> rle["size"], int(mask_utils.area(rle))
    ([8, 12], 32)
    """
    usable = [[float(v) for v in p] for p in polygons if len(p) >= MIN_POLYGON_VALUES and len(p) % 2 == 0]
    if not usable:
        raise ValueError("no polygon with at least three x, y points")
    return mask_utils.merge(mask_utils.frPyObjects(usable, height, width))


def yolo_polygon_rle(values: Sequence[float], width: int, height: int) -> dict:
    """A YOLO-seg line's normalised polygon (``x1 y1 x2 y2 ...`` in [0, 1]) rasterised at ``width x height``.

    Raises:
        ValueError: a box line (four values) or not a polygon of three points or more.

    >>> int(mask_utils.area(yolo_polygon_rle([0, 0, 0.5, 0, 0.5, 0.5, 0, 0.5], 8, 4)))
    8
    """
    if len(values) == 4:
        raise ValueError("a box line (class cx cy w h), not a YOLO-seg polygon")
    if len(values) % 2:
        raise ValueError(f"{len(values)} coordinates, not x, y pairs")
    polygon = np.asarray(values, dtype=np.float64).reshape(-1, 2) * (width, height)
    return polygon_rle([polygon.reshape(-1).tolist()], height, width)


def segmentation_rle(segmentation, height: int, width: int) -> dict:
    """A COCO annotation's ``segmentation`` (polygons, uncompressed or compressed RLE) as one compressed RLE.

    As ``pycocotools.coco.COCO.annToRLE``: a list is polygons, a dict with a list of ``counts`` is uncompressed
    RLE, a dict with a string of ``counts`` is already compressed.

    Raises:
        ValueError: empty, or not one of these forms.

    >>> segmentation_rle({"size": [2, 3], "counts": [1, 2, 3]}, 2, 3)["size"]
    [2, 3]
    """
    if isinstance(segmentation, list):
        return polygon_rle(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation and "size" in segmentation:
        if isinstance(segmentation["counts"], list):
            return mask_utils.frPyObjects(segmentation, *segmentation["size"])
        counts = segmentation["counts"]
        return {"size": list(segmentation["size"]), "counts": counts.encode() if isinstance(counts, str) else counts}
    raise ValueError(f"a segmentation is polygons (a list) or RLE (a dict of size and counts), not {segmentation!r}")


def resized_masks(rles: Sequence[dict], size: int) -> torch.Tensor:
    """Decode `rles` and resize them (nearest neighbour, PIL's pixel centres) to a ``(n, size, size)`` uint8 tensor.

    >>> resized_masks([polygon_rle([[0, 0, 4, 0, 4, 4, 0, 4]], 8, 8)], 4)[0].tolist()
    [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    """
    if not rles:
        return torch.zeros((0, size, size), dtype=torch.uint8)
    decoded = torch.from_numpy(mask_utils.decode(list(rles)).transpose(2, 0, 1).copy())
    return F.interpolate(decoded[None], size=(size, size), mode="nearest-exact")[0]


def masks_at_image_size(probabilities: torch.Tensor, width: int, height: int) -> list[np.ndarray]:
    """Mask R-CNN's ``(n, 1, size, size)`` probabilities (pasted at the detector's size) as boolean ``(height,
    width)`` masks of the image as given: resized bilinearly one at a time, then above `MASK_THRESHOLD`.

    >>> [m.shape for m in masks_at_image_size(torch.ones(2, 1, 4, 4), 6, 3)]
    [(3, 6), (3, 6)]
    """
    return [(F.interpolate(p[None].float().cpu(), size=(height, width), mode="bilinear", align_corners=False)[0, 0]
             > MASK_THRESHOLD).numpy() for p in probabilities]


def check_head_data(head: str, has_masks: bool) -> None:
    """Refuse an instance-segmentation head on data without masks, naming the fix.

    >>> check_head_data("maskrcnn", has_masks=False)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    easytransfer.errors.DataError: head='maskrcnn' learns instance masks, and this data has boxes only: ...
    """
    if head in INSTANCE_HEADS and not has_masks:
        raise DataError(f"head={head!r} learns instance masks, and this data has boxes only: load it with masks, "
                        "DetectionData.from_coco(images, json_path, masks=True) (polygons or RLE) or "
                        "DetectionData.from_yolo(images, labels, names, masks=True) (YOLO-seg polygons); for boxes "
                        "only choose head='fasterrcnn', 'retinanet' or 'fcos'.")


def boolean_masks(masks) -> np.ndarray:
    """``(n, H, W)`` booleans of masks given as `EncodedMasks`, a 0/1 or bool array or tensor ``(n, H, W)``, or
    torchvision's ``(n, 1, H, W)`` probabilities (above `MASK_THRESHOLD`).

    >>> boolean_masks(torch.full((2, 1, 3, 3), 0.7)).shape
    (2, 3, 3)
    """
    if isinstance(masks, EncodedMasks):
        return masks.decode()
    array = np.asarray(masks.detach().cpu() if hasattr(masks, "detach") else masks)
    array = array[:, 0] if array.ndim == 4 else array
    return array > MASK_THRESHOLD if array.dtype.kind == "f" else array > 0


def mask_overlay(masks: np.ndarray, colour, alpha: float = 0.4) -> np.ndarray:
    """An ``(H, W, 4)`` RGBA image: `colour` at `alpha` where any of the ``(n, H, W)`` boolean `masks` is set.

    >>> overlay = mask_overlay(np.eye(2, dtype=bool)[None], "red")
    >>> overlay[0, 0, :3].tolist(), round(float(overlay[0, 0, 3]), 2), float(overlay[0, 1, 3])
    ([1.0, 0.0, 0.0], 0.4, 0.0)
    """
    from matplotlib.colors import to_rgb

    overlay = np.zeros((*masks.shape[1:], 4), dtype=np.float32)
    if len(masks):
        covered = np.asarray(masks, dtype=bool).any(0)
        overlay[covered] = (*to_rgb(colour), alpha)
    return overlay

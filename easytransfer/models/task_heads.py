"""Which head works with which backbone, for every task: one record type, one listing.

>>> from easytransfer import available_heads
>>> sorted({h.task for h in available_heads()})
['classification', 'detection', 'segmentation']
>>> [h.head for h in available_heads("detection")]
['fasterrcnn', 'retinanet', 'fcos']
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TASKS", "HeadSupport", "available_heads"]

TASKS = ("classification", "segmentation", "detection")


@dataclass(frozen=True)
class HeadSupport:
    """One head of one task and the backbones it works with.

    Attributes:
        task: ``"classification"``, ``"segmentation"`` or ``"detection"``.
        head: the name the task's learner takes (``head="unet"``).
        backbones: the backbones it takes, in words.
        offline: backbone names whose ImageNet weights ship with easytransfer's dependencies and that the tests or
            benchmarks have run with this head (they work without a network).
        note: what the head is and when to choose it.
    """

    task: str
    head: str
    backbones: str
    offline: tuple[str, ...]
    note: str


_CLASSIFIERS = {
    "linear": "a new Linear layer on the pooled features (the default)",
    "mlp": "hidden layer, BatchNorm and dropout, fastai's head",
    "zero_shot": "open_clip models: starts as the class names' CLIP text embeddings",
    "prototype": "nearest class mean of normalised features (fit_frozen(method='prototype'))",
    "knn": "nearest training images (fit_frozen(method='knn'))",
}


def classification_heads() -> tuple[HeadSupport, ...]:
    """The heads `transfer_learner` (and `fit_frozen`'s methods) put on a classifier."""
    every = "every timm, torchvision and open_clip classifier"
    offline = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100", "tv:mobilenet_v2")
    return tuple(HeadSupport("classification", head, "open_clip image towers" if head == "zero_shot" else every,
                             () if head == "zero_shot" else offline, note) for head, note in _CLASSIFIERS.items())


def available_heads(task: str | None = None) -> list[HeadSupport]:
    """Every head of `task` (default: all tasks) and the backbones it works with.

    Args:
        task: ``"classification"``, ``"segmentation"``, ``"detection"`` or ``None`` for all.

    Returns:
        A list of `HeadSupport` records (print one for its fields).
    """
    from .detection import detection_heads  # imported here: they import this module's record
    from .segmentation import segmentation_heads

    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {TASKS} or None, got {task!r}")
    heads = [*classification_heads(), *segmentation_heads(), *detection_heads()]
    return [h for h in heads if task is None or h.task == task]

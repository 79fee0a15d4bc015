"""The heads `transfer_learner` (and `fit_frozen`'s methods) put on a classifier.

>>> [h.head for h in classification_heads()][:2]
['linear', 'mlp']
"""

from __future__ import annotations

from ..registry import HeadSupport

__all__ = ["classification_heads"]

_CLASSIFIERS = {
    "linear": "a new Linear layer on the pooled features (the default)",
    "mlp": "hidden layer, BatchNorm and dropout, fastai's head",
    "zero_shot": "open_clip models: starts as the class names' CLIP text embeddings",
    "prototype": "nearest class mean of normalised features (fit_frozen(method='prototype'))",
    "knn": "nearest training images (fit_frozen(method='knn'))",
}


def classification_heads() -> tuple[HeadSupport, ...]:
    """The heads `transfer_learner` (and `fit_frozen`'s methods) put on a classifier, and their backbones."""
    every = "every timm, torchvision and open_clip classifier"
    offline = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "mobilenetv2_100", "tv:mobilenet_v2")
    return tuple(HeadSupport("classification", head, "open_clip image towers" if head == "zero_shot" else every,
                             () if head == "zero_shot" else offline, note) for head, note in _CLASSIFIERS.items())

"""easytransfer/tasks/classification/heads.py: the classifier's heads, as `available_heads` lists them."""

from __future__ import annotations

from easytransfer import available_heads
from easytransfer.tasks.classification.heads import classification_heads


def test_heads_and_their_offline_backbones():
    heads = classification_heads()
    assert [h.head for h in heads] == ["linear", "mlp", "zero_shot", "prototype", "knn"]
    assert list(heads) == available_heads("classification")
    assert all(h.task == "classification" and h.note for h in heads)
    by_name = {h.head: h for h in heads}
    assert by_name["zero_shot"].offline == () and "open_clip" in by_name["zero_shot"].backbones
    assert "efficientnet_lite0" in by_name["linear"].offline

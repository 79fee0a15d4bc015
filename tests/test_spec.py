"""easytransfer/models/spec.py: `ModelSpec`, what easytransfer knows about an architecture before training."""

from __future__ import annotations

import fnmatch
from dataclasses import replace

from easytransfer.models.spec import FAMILY_NOTES, ModelSpec


def _spec(**changes) -> ModelSpec:
    spec = ModelSpec("m", "timm", "resnet50", "resnet", (3, 160, 192), (0.5,) * 3, (0.5,) * 3, "bilinear", 0.9,
                     "head,head_dist", 2048, 25_000_000, False)
    return replace(spec, **changes)


def test_size_heads_and_what_equality_ignores():
    spec = _spec()
    assert spec.size == 192 and spec.classifier_paths == ("head", "head_dist")
    assert spec.weights == "random init"
    assert _spec(arch_config={"model_cfg": {}}) == spec  # arch_config is not part of the identity


def test_notes_match_the_arch_first_then_the_family():
    assert FAMILY_NOTES
    assert _spec(arch="zzz", family="zzz").notes == ""
    for pattern, _ in FAMILY_NOTES:
        name = pattern.replace("*", "x").replace("?", "x")
        first = next(n for p, n in FAMILY_NOTES if fnmatch.fnmatch(name, p))
        assert _spec(arch=name, family="zzz").notes == first
        assert _spec(arch="zzz", family=name).notes == first

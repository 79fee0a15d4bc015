"""Tests of easytransfer/models/layer_groups.py (moved here from the history-named test files: faults, student, contracts ...)."""

import pytest
import timm
import torch
from helpers import TOWERS

from easytransfer import (
    build_model,
)
from easytransfer.models.layer_groups import block_layer_groups, split_layer_groups


@pytest.mark.parametrize("arch", TOWERS)
def test_tower_groups_cover_every_parameter_once_with_tokens_in_the_stem(arch):
    with torch.device("meta"):
        model, spec = build_model(arch, 3, pretrained=False)
    names = [n for n, _ in model.named_parameters()]
    tokens = {n for n in names if n.split(".")[0] in ("cls_token", "reg_token", "pos_embed", "patch_embed")}
    assert ("reg_token" in names) == ("reg4" in arch)
    for groups in (split_layer_groups(model, head=spec.classifier), block_layer_groups(model, head=spec.classifier)):
        flat = [n for g in groups.names for n in g]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat))
        assert tokens <= set(groups.names[0])
        assert {"head.weight", "head.bias"} <= set(groups.names[-1])
    assert len(block_layer_groups(model, head=spec.classifier)) == 12 + 2  # stem, 12 blocks, head


def test_layer_decay_uses_timms_fine_groups_on_cnns():
    model = timm.create_model("test_resnet", num_classes=2)
    groups = block_layer_groups(model, head="fc")
    assert groups.names[0][0].startswith("conv1.") and groups.names[-1] == ("fc.weight", "fc.bias")
    blocks = {".".join(n.split(".")[:2]) for g in groups.names[1:-1] for n in g if n.startswith("layer")}
    assert len(groups) == len(blocks) + 2  # one group per residual block (layerN.M)

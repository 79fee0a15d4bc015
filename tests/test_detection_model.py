"""Detectors on any backend: torchvision's detectors over ConvNeXt and torchvision bodies build, train, export,
take a local weights file strictly and split into their natural stages (issue 25, point 3)."""

from __future__ import annotations

import pytest
import torch
from test_detection import make_voc, quiet
from test_segmentation_model import (
    assert_body_is_the_file,
    one_thread,  # noqa: F401 - its autouse fixture: one thread in this module too
    save_random_classifiers,
)

from easytransfer import DetectionData, detection_learner, load_model
from easytransfer.models import NoMultiScaleFeaturesError, create_features
from easytransfer.tasks.detection.model import FPNBackbone, build_detector, detection_heads, detection_layer_groups

TINY_DETECTOR = dict(fpn_channels=64, proposals=16)  # 64: the heads' GroupNorm(32) needs 2+ values per group


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    return save_random_classifiers(tmp_path_factory.mktemp("weights"))


@pytest.fixture(scope="module")
def det_dls(tmp_path_factory):
    images, annotations, _ = make_voc(tmp_path_factory.mktemp("voc"), n=6)
    return DetectionData.from_voc(images, annotations, size=64, bs=3, seed=0)


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_detection_learner_trains_on_any_backbone(det_dls, arch, tmp_path):
    learn = quiet(detection_learner, det_dls, arch, "fcos", pretrained=False, device="cpu", checkpoint_dir=tmp_path,
                  **TINY_DETECTOR)
    assert len(learn.layer_groups) == 5
    assert learn.detection_config.source_arch == arch.removeprefix("tv:")
    quiet(learn.fit_frozen, 1, lr=1e-3)
    assert len(learn.history) == 1
    image = det_dls.recipe.items["path"][0]
    predictor = quiet(load_model, learn.export(tmp_path / "bundle"), threshold=0.0, device="cpu")
    assert predictor.predict(image) == learn.predict(image, score_threshold=0.0)


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_detection_body_takes_a_local_weights_file_strictly(weight_files, arch):
    path, state = weight_files[arch]
    model, config, body, source = build_detector(arch, 2, head="retinanet", weights=path, size=64, **TINY_DETECTOR)
    assert source == f"file {path}" and body.weights == source
    assert_body_is_the_file(model.backbone.body, state)
    assert config.out_indices == body.indices_at((8, 16, 32))


@pytest.mark.parametrize(("arch", "natural"), [("efficientnet_lite0", 8), ("convnext_atto", 5), ("tv:resnet18", 5)])
def test_detection_layer_groups_keep_the_natural_stages(arch, natural):
    model, *_ = build_detector(arch, 2, pretrained=False, size=64, **TINY_DETECTOR)
    assert len(detection_layer_groups(model)) == 5  # the default 4 body stages + the pyramid and heads
    every = detection_layer_groups(model, natural)
    assert every.n_body == natural
    names = [n for g in every.names for n in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and len(names) == len(set(names))
    assert all(n.startswith("backbone.body.") for g in every.names[:-1] for n in g)
    assert not any(n.startswith("backbone.body.") for n in every.names[-1])


def test_the_pyramid_reads_strides_8_16_32_of_a_stride_4_body():
    backbone = FPNBackbone(create_features("convnext_atto", pretrained=False), 16)
    assert backbone.indices == (1, 2, 3)
    assert {k: tuple(v.shape[1:]) for k, v in backbone(torch.zeros(1, 3, 64, 64)).items()} == {
        "0": (16, 8, 8), "1": (16, 4, 4), "2": (16, 2, 2)}


def test_a_vit_is_refused_with_the_fix():
    with pytest.raises(NoMultiScaleFeaturesError, match="To fix it"):
        build_detector("test_vit", 2, pretrained=False, size=64)


def test_available_heads_name_torchvision_backbones():
    assert all("tv:resnet18" in h.backbones and "ConvNeXt" in h.backbones for h in detection_heads())

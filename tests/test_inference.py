"""Export without pickle, load_model, the predictor, ONNX and TorchScript exports."""

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_image_folder
from PIL import Image
from safetensors.torch import load_file, save_file

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.deploy.convert import export_onnx, export_torchscript
from easytransfer.errors import EasyTransferError, UnknownModelError, WeightsMismatchError


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = make_image_folder(tmp_path_factory.mktemp("data") / "images", classes=("cat", "dog", "fox"), per_class=5,
                             size=50)
    dls = ImageData.from_folder(root, valid_pct=0.4, seed=0, bs=4, size=48)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False)
    learn.fit_frozen(1)
    bundle = learn.export(tmp_path_factory.mktemp("bundle") / "model")
    return learn, bundle, root


def test_bundle_is_safetensors_and_json(trained):
    _, bundle, _ = trained
    config = json.loads((bundle / "easytransfer.json").read_text())
    assert config["task"] == "classification" and config["classes"] == ["cat", "dog", "fox"]
    assert config["preprocessing"]["size"] == 48 and config["head"] == {"type": "linear", "dropout": None, "hidden": 512, "pool": None,
                                                                                  "k": None, "exemplars": None}
    assert "easytransfer_version" in config and config["source"] == "timm"
    assert sorted(p.name for p in bundle.iterdir()) == ["easytransfer.json", "model.safetensors"]


def test_loaded_predictor_matches_the_learner(trained, monkeypatch):
    learn, bundle, root = trained

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    predictor = load_model(bundle)
    files = sorted(root.rglob("*.jpg"))
    for f in files[:6]:
        label, idx, probs = learn.predict(f)
        p_label, p_prob, p_probs = predictor.predict(f)
        assert (p_probs - probs).abs().max() < 1e-5
        assert p_label == label and p_prob == pytest.approx(float(probs.max()), abs=1e-5)
    image = Image.open(files[0])
    np.testing.assert_allclose(predictor.predict(image)[2], predictor.predict(np.asarray(image))[2], atol=1e-6)
    np.testing.assert_allclose(predictor.predict(image)[2], learn.predict(files[0])[2], atol=1e-5)


def test_predict_folder_streams_and_writes_a_csv(trained, tmp_path):
    _, bundle, root = trained
    (root / "cat" / "broken.jpg").write_text("not an image")
    try:
        table = load_model(bundle).predict_folder(root, bs=4, csv=tmp_path / "out" / "preds.csv")
    finally:
        (root / "cat" / "broken.jpg").unlink()
    assert len(table) == 16 and list(table.columns[:3]) == ["path", "label", "probability"]
    broken = table[table["path"].str.endswith("broken.jpg")].iloc[0]
    assert pd.isna(broken["label"]) and "UnidentifiedImageError" in broken["error"]
    good = table[table["error"].isna()]
    np.testing.assert_allclose(good[["p_cat", "p_dog", "p_fox"]].sum(1), 1, rtol=1e-5)
    assert (tmp_path / "out" / "preds.csv").read_text().count("\n") == 17


def test_a_pickle_file_is_refused(tmp_path):
    path = tmp_path / "learner.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(EasyTransferError, match="pickle.*never unpickles"):
        load_model(path)
    with pytest.raises(EasyTransferError, match="does not exist"):
        load_model(tmp_path / "nope")


def _copy_bundle(bundle, dest):
    dest.mkdir()
    for f in bundle.iterdir():
        (dest / f.name).write_bytes(f.read_bytes())
    return dest


def test_missing_or_mismatched_tensors_are_clear_errors(trained, tmp_path):
    _, bundle, _ = trained
    broken = _copy_bundle(bundle, tmp_path / "missing")
    state = load_file(str(broken / "model.safetensors"))
    state.pop("classifier.weight")
    save_file(state, str(broken / "model.safetensors"))
    with pytest.raises(WeightsMismatchError, match=r"1 missing \(e.g. \['classifier.weight'\]\)"):
        load_model(broken)
    shaped = _copy_bundle(bundle, tmp_path / "shape")
    state = load_file(str(shaped / "model.safetensors"))
    state["classifier.bias"] = torch.zeros(7)
    save_file(state, str(shaped / "model.safetensors"))
    with pytest.raises(WeightsMismatchError, match="another shape"):
        load_model(shaped)
    garbage = _copy_bundle(bundle, tmp_path / "garbage")
    (garbage / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(WeightsMismatchError, match="not a readable safetensors"):
        load_model(garbage)


def test_unknown_architecture_in_the_json_is_a_clear_error(trained, tmp_path):
    _, bundle, _ = trained
    odd = _copy_bundle(bundle, tmp_path / "odd")
    config = json.loads((odd / "easytransfer.json").read_text())
    config["arch"] = "resnet_9000"
    (odd / "easytransfer.json").write_text(json.dumps(config))
    with pytest.raises(UnknownModelError, match="resnet_9000"):
        load_model(odd)
    (odd / "easytransfer.json").write_text("{not json")
    with pytest.raises(EasyTransferError, match="not valid JSON"):
        load_model(odd)


def test_onnx_export_matches_pytorch_in_onnxruntime(trained, tmp_path):
    import onnxruntime as ort  # in the dev extras
    learn, _, _ = trained
    path = export_onnx(learn.model, tmp_path / "model.onnx", size=48)
    x = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        expected = learn.model.eval()(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert np.abs(got - expected).max() < 1e-4


def test_torchscript_export_loads_with_plain_torch(trained, tmp_path):
    learn, _, _ = trained
    path = export_torchscript(learn.model, tmp_path / "model.pt", size=48)
    loaded = torch.jit.load(str(path))
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), learn.model.eval()(x), rtol=1e-5, atol=1e-5)

"""Semantic segmentation: data with exact synthetic masks, metrics by hand, freezing, the recipe, export."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from easytransfer import SegmentationData, load_model, segmentation_heads, segmentation_learner
from easytransfer.deploy.bundle import CONFIG_NAME, BundleConfig, Preprocessing
from easytransfer.errors import DataError
from easytransfer.evaluate.metrics import pixel_confusion_matrix, segmentation_scores
from easytransfer.models.heads import HeadConfig
from easytransfer.tasks.segmentation.model import SEGMENTATION_HEADS, build_segmentation_model, encoder_layer_groups
from easytransfer.tasks.segmentation.report import SECTIONS as SEGMENTATION_SECTIONS

SIZE = 64
RED, GREEN = (220, 30, 30), (30, 200, 40)
TINY = "test_efficientnet"  # timm's tiny test model: random weights, fast


def make_shapes(root, n=10, size=SIZE, seed=0, ext=".png"):
    """Images with a red square (class 1) and a green disc (class 2) on grey; masks with exactly those pixels."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    for i in range(n):
        img = np.full((size, size, 3), 60, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        y, x = rng.integers(2, size - 22, 2)
        img[y:y + 20, x:x + 20], mask[y:y + 20, x:x + 20] = RED, 1
        cy, cx = rng.integers(10, size - 10, 2)
        yy, xx = np.ogrid[:size, :size]
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 49
        img[disc], mask[disc] = GREEN, 2
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}{ext}")
    return root / "images", root / "masks"


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes(tmp_path_factory.mktemp("shapes"))


@pytest.fixture(scope="module")
def dls(shapes):
    images, masks = shapes
    return SegmentationData.from_folders(images, masks, codes=["bg", "square", "disc"], size=SIZE, bs=4, seed=0)


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------------------------ data


def colour_class(xb: torch.Tensor) -> torch.Tensor:
    """Class ids read back from the (normalised) pixels: red -> 1, green -> 2, else 0."""
    r, g = xb[:, 0], xb[:, 1]
    return torch.where(r > g + 1, 1, torch.where(g > r + 1, 2, 0))


@pytest.mark.parametrize("aug", ["flips", "light", "none"])
def test_masks_follow_every_geometric_transform(shapes, aug):
    images, masks = shapes
    data = SegmentationData.from_folders(images, masks, size=SIZE, bs=8, aug=aug, seed=0)
    for _ in range(2):
        xb, yb = data.train.one_batch()
        assert yb.shape == (len(xb), SIZE, SIZE) and yb.dtype == torch.int64
        assert set(yb.unique().tolist()) <= {0, 1, 2}
        agree = (colour_class(xb) == yb).float().mean().item()
        assert agree > 0.98, agree  # only resampled edge pixels may differ (image bilinear, mask nearest)


def test_report_excludes_bad_pairs_and_infers_codes(tmp_path):
    images, masks = make_shapes(tmp_path, n=6)
    (images / "text.png").write_text("not an image")
    Image.new("RGB", (SIZE, SIZE)).save(images / "nomask.png")
    Image.new("RGB", (SIZE, SIZE)).save(images / "small.png")
    Image.new("L", (SIZE // 2, SIZE)).save(masks / "small.png")
    with pytest.warns(Warning, match="excluded 3"):
        data = SegmentationData.from_folders(images, masks, size=SIZE, bs=2)
    reasons = {k.rsplit("/", 1)[-1]: v for k, v in data.report.reasons().items()}
    assert reasons["text.png"].startswith("not an image")
    assert reasons["nomask.png"].startswith("no mask")
    assert "32x64" in reasons["small.png"]
    assert data.codes == ["class_0", "class_1", "class_2"]
    assert len(data.train_ds) + len(data.valid_ds) == 6
    counts = data.report.counts
    assert int(counts.to_numpy().sum()) == 6 * SIZE * SIZE  # every pixel of the 6 kept masks, counted once


def test_mask_fn_and_other_extensions(tmp_path):
    images, masks = make_shapes(tmp_path, n=5, ext=".bmp")
    data = SegmentationData.from_folders(images, masks, size=SIZE, bs=2)
    assert len(data.train_ds) + len(data.valid_ds) == 5
    arrays = SegmentationData.from_folders(
        images, mask_fn=lambda p: np.asarray(Image.open(masks / (p.rsplit("/", 1)[-1][:-4] + ".bmp"))),
        size=SIZE, bs=2, codes=["bg", "square", "disc"])
    xb, yb = arrays.valid.one_batch()
    assert (colour_class(xb) == yb).float().mean() > 0.98
    with pytest.raises(Exception, match="codes names only 2"):
        SegmentationData.from_folders(images, masks, size=SIZE, codes=["bg", "square"])
    with pytest.raises(ValueError, match="multiple of 32"):
        SegmentationData.from_folders(images, masks, size=50)


def test_show_batch_returns_a_figure(dls):
    assert len(dls.show_batch(max_n=2).axes) == 2


# ------------------------------------------------------------------------------------------------ metrics


def test_scores_match_a_hand_computation_with_ignore_index():
    targs = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    preds = np.array([[0, 1, 1, 1], [2, 0, 0, 1]])
    cm = pixel_confusion_matrix(targs, preds, 3, ignore_index=255)
    # scored pixels: 7. class 0: tp 1, fp 1 (a 2 called 0), fn 1 (a 0 called 1) -> IoU 1/3
    # class 1: tp 3, fp 1, fn 0 -> 3/4; class 2: tp 1, fp 0, fn 1 -> 1/2
    assert cm.sum() == 7
    scores = segmentation_scores(cm, ["a", "b", "c"])
    assert scores["per_class_iou"] == pytest.approx({"a": 1 / 3, "b": 3 / 4, "c": 1 / 2})
    assert scores["miou"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert scores["pixel_accuracy"] == pytest.approx(5 / 7)
    assert scores["dice"] == pytest.approx((2 / 4 + 6 / 7 + 2 / 3) / 3)
    absent = segmentation_scores(pixel_confusion_matrix(np.zeros(4), np.zeros(4), 2), ["a", "b"])
    assert np.isnan(absent["per_class_iou"]["b"]) and absent["miou"] == 1.0


# ------------------------------------------------------------------------------------------------ models


@pytest.mark.parametrize("head", sorted(SEGMENTATION_HEADS))
def test_every_head_builds_and_groups_cover_every_parameter(head):
    model, spec = build_segmentation_model(TINY, 3, head=head, pretrained=False)
    assert model(torch.zeros(2, 3, SIZE, SIZE)).shape == (2, 3, SIZE, SIZE)  # DeepLabV3+'s pooled BN needs 2
    groups = encoder_layer_groups(model, 2)
    names = [n for g in groups.names for n in g]
    assert sorted(names) == sorted(n for n, _ in model.named_parameters())
    assert all(n.startswith("encoder.") for g in groups.names[:-1] for n in g)
    assert not any(n.startswith("encoder.") for n in groups.names[-1])
    assert {h.head for h in segmentation_heads()} == set(SEGMENTATION_HEADS)


def test_packaged_weights_fill_the_whole_encoder():
    model, spec = build_segmentation_model("efficientnet_lite0", 2, pretrained=True)
    assert spec.weights.startswith("package efficientnet-lite0") and spec.mean == (0.5, 0.5, 0.5)
    full = timm.create_model("tf_efficientnet_lite0")
    from easytransfer.models.factory import load_pretrained

    load_pretrained(full, "tf_efficientnet_lite0")
    body, reference = model.encoder.model.state_dict(), full.state_dict()
    assert body and all(torch.equal(v, reference[k]) for k, v in body.items())


# ------------------------------------------------------------------------------------------------ learner


@pytest.fixture(scope="module")
def learn(dls, tmp_path_factory):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return segmentation_learner(dls, TINY, "unet", pretrained=False, checkpoint_dir=tmp_path_factory.mktemp("ck"))


def test_freezing_really_freezes(learn):
    decoder = sum(p.numel() for n, p in learn.model.named_parameters() if not n.startswith("encoder."))
    groups = [sum(p.numel() for p in g) for g in learn.layer_groups.params(learn.model)]
    assert trainable(learn.model) == decoder == groups[-1]
    learn.unfreeze(1)
    assert trainable(learn.model) == groups[-1] + groups[-2]
    learn.unfreeze()
    assert trainable(learn.model) == sum(groups)
    learn.freeze()
    encoder_before = {k: v.clone() for k, v in learn.model.encoder.state_dict().items()}
    learn.fit_frozen(1, lr=1e-2, cache=True)  # the decoder trains on the encoder's cached maps
    assert trainable(learn.model) == decoder
    after = learn.model.encoder.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in encoder_before.items())  # BN statistics included
    assert list(learn.history["phase"]) == ["frozen"] and "miou" in learn.history


@pytest.mark.slow
def test_recipe_evaluate_interpret_export(learn, tmp_path):
    learn.unfreeze()
    learn.fit_discriminative(1, lr_max=1e-3, monitor="miou")
    learn.fit_gradual(1, max_unfrozen=1)
    assert list(learn.history["phase"])[-3:] == ["discriminative", "stage 0", "stage 1"]
    scores = learn.evaluate()
    assert set(scores) >= {"miou", "pixel_accuracy", "per_class_iou", "dice", "n_images"}
    interp = learn.interpret()
    assert scores["n_images"] == len(learn.dls.valid_ds) == len(interp.preds)
    hand = segmentation_scores(pixel_confusion_matrix(interp.targs, interp.preds, 3), learn.dls.codes)
    assert scores["per_class_iou"] == pytest.approx(hand["per_class_iou"], nan_ok=True)
    assert list(interp.per_class().index) == ["bg", "square", "disc"]
    assert len(interp.plot_top_losses(2).axes) == 6
    assert interp.plot_confusion_matrix() is not None
    learn.plot_history()

    image = learn.dls.recipe.items["path"][0]
    mask = learn.predict(image)
    assert mask.shape == (SIZE, SIZE) and mask.max() < 3
    bundle = learn.export(tmp_path / "bundle")
    written = json.loads((bundle / CONFIG_NAME).read_text())
    assert written["task"] == "segmentation" and written["task_config"]["head"] == "unet"
    predictor = load_model(bundle)
    again, probs = predictor.predict(Image.open(image), probabilities=True)
    assert np.array_equal(again, mask) and probs.shape == (3, SIZE, SIZE)
    assert np.allclose(probs.sum(0), 1, atol=1e-4)


def test_a_fastai_fit_lands_in_the_history_and_diagnose_reads_it(dls):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = segmentation_learner(dls, TINY, "unet", pretrained=False)
    learn.fit_one_cycle(1, 1e-3)
    learn.fit_frozen(1, lr=1e-3)  # the library's own fit: one row, not two
    assert list(learn.history["phase"]) == ["fit_one_cycle", "frozen"] and learn.history["miou"].notna().all()
    text = str(learn.diagnose())
    assert "after 2 epoch(s)" in text and "of accuracy" not in text


def test_other_ranks_write_no_bundle(learn, tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")  # what torchrun sets for the second process
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert learn.export(tmp_path / "model") == tmp_path / "model" and not (tmp_path / "model").exists()
    monkeypatch.setenv("RANK", "0")
    assert (learn.export(tmp_path / "model") / "model.safetensors").is_file()


def test_classification_bundles_record_their_task():
    cfg = BundleConfig("resnet18", "timm", "resnet18", ("cat", "dog"), HeadConfig(),
                       Preprocessing(224, "bicubic", (0.5,) * 3, (0.5,) * 3))
    data = json.loads(cfg.to_json())
    assert "segmentation" not in data and data["task"] == "classification"
    assert BundleConfig.from_json(cfg.to_json()) == cfg


def test_checkpoints_and_resume(learn, capsys):
    learn.freeze()
    learn.fit_frozen(1, lr=1e-3)
    assert (learn.checkpoint_dir / "last.safetensors").is_file()
    n = len(learn.history)
    learn.fit_frozen(1, lr=1e-3, resume=True)  # reads the checkpoint back; that fit had finished
    assert "Nothing to resume" in capsys.readouterr().err and len(learn.history) == n


@pytest.mark.slow
@pytest.mark.parametrize("head", ["unet", "deeplabv3plus"])
def test_onnx_export_matches_pytorch_in_onnxruntime(head, tmp_path):
    import onnxruntime as ort  # in the dev extras

    from easytransfer.deploy.convert import export_onnx

    model, _ = build_segmentation_model(TINY, 3, head=head, pretrained=False)
    model.eval()
    path = export_onnx(model, tmp_path / "seg.onnx", size=SIZE)
    x = torch.randn(3, 3, SIZE, SIZE)  # another batch size than the export's example: the batch axis is dynamic
    with torch.no_grad():
        expected = model(x).numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert got.shape == (3, 3, SIZE, SIZE)  # N x C x H x W logits
    assert np.abs(got - expected).max() < 1e-4


def test_html_report_shows_scores_per_class_confusion_matrix_and_overlays(dls, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = segmentation_learner(dls, TINY, "unet", pretrained=False)
    learn.fit_frozen(1, lr=1e-2)
    interp = learn.interpret()
    text = learn.save_report(tmp_path / "report.html", interp=interp, top_k=2).read_text(encoding="utf-8")
    assert re.findall(r'<section id="([^"]+)"><h2>([^<]+)</h2>', text) == [
        (key, title.replace("&", "&amp;")) for key, title in SEGMENTATION_SECTIONS.items()]
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,', text)
    assert images == ["training history", "pixel confusion matrix", "row-normalised pixel confusion matrix",
                      "top losses: image, prediction, truth"]
    scores = interp.scores()
    for shown in (f"{scores['miou']:.4f}", f"{scores['dice']:.4f}", "<th>square</th>", "<th>disc</th>",
                  "unet decoder", "<th>dice</th>", "Diagnosis:"):
        assert shown in text, shown
    assert not re.search(r"(src|href)=\"https?://", text)


def test_black_and_white_masks_are_a_clear_error_with_the_fix(tmp_path):
    images, masks = make_shapes(tmp_path, n=4)
    for p in masks.iterdir():  # 0 / 255 pictures instead of class ids
        Image.fromarray(((np.array(Image.open(p)) > 0) * 255).astype(np.uint8)).save(p)
    with pytest.raises(DataError, match=r"4 x mask holds 0 and 255 only .*// 255.*ignore_index=255"):
        SegmentationData.from_folders(images, masks, size=64)
    from easytransfer.tasks.segmentation.data import read_mask

    dls = SegmentationData.from_folders(images, size=64, valid_pct=0.25,
                                        mask_fn=lambda p: read_mask(masks / (Path(p).stem + ".png")) // 255)
    assert len(dls.codes) == 2 and dls.report.counts.loc["class_1"].sum() > 0


def test_predictor_predict_folder_writes_one_mask_per_image(tmp_path):
    images, _ = make_shapes(tmp_path / "data", n=3)
    (images / "broken.png").write_bytes(b"not an image")
    model, _ = build_segmentation_model(TINY, 3, head="unet", pretrained=False)
    from easytransfer.tasks.segmentation.model import SegmentationConfig
    from easytransfer.tasks.segmentation.predictor import SegmentationPredictor

    config = BundleConfig(TINY, "timm", TINY, ("bg", "square", "disc"), HeadConfig(),
                          Preprocessing(SIZE, "bilinear", (0.5,) * 3, (0.5,) * 3), task="segmentation",
                          task_config=SegmentationConfig())
    table = SegmentationPredictor(model, config, device="cpu").predict_folder(images, tmp_path / "out")
    ok = table[table["error"] == ""]
    assert len(ok) == 3 and table.loc[table["error"] != "", "path"].str.endswith("broken.png").all()
    for row in ok.itertuples():
        mask = np.array(Image.open(row.mask))
        assert mask.shape == (SIZE, SIZE) and mask.max() < 3


def _tiny_predictor():
    from easytransfer.tasks.segmentation.model import SegmentationConfig
    from easytransfer.tasks.segmentation.predictor import SegmentationPredictor

    model, _ = build_segmentation_model(TINY, 3, head="unet", pretrained=False)
    config = BundleConfig(TINY, "timm", TINY, ("bg", "square", "disc"), HeadConfig(),
                          Preprocessing(SIZE, "bilinear", (0.5,) * 3, (0.5,) * 3), task="segmentation",
                          task_config=SegmentationConfig())
    return SegmentationPredictor(model, config, device="cpu")


def test_predictor_interpret_scores_what_evaluate_scores(tmp_path):
    images, masks = make_shapes(tmp_path / "data", n=5)
    predictor = _tiny_predictor()
    interp = predictor.interpret(images, masks, bs=2, progress=False)
    assert interp.preds.shape == interp.targs.shape == (5, SIZE, SIZE) and len(interp.items) == 5
    # images already at the training size: the same pixels and predictions as evaluate's own-size scores
    scores = predictor.evaluate(images, masks)
    assert interp.scores()["per_class_iou"] == pytest.approx(scores["per_class_iou"], nan_ok=True)
    assert list(interp.per_class().index) == ["bg", "square", "disc"]
    for name in ("000.png", "001.png"):
        assert np.array_equal(interp.targs[int(name[:3])], np.array(Image.open(masks / name)))


def test_flip_tta_is_the_mean_of_an_image_and_its_mirror(tmp_path):
    from easytransfer.tasks.segmentation.interpretation import flip_averaged_logits

    images, masks = make_shapes(tmp_path / "data", n=4)
    predictor = _tiny_predictor()
    plain = predictor.interpret(images, masks, progress=False)
    tta = predictor.interpret(images, masks, tta=True, progress=False)
    xb = torch.stack([predictor.preprocess(p) for p in sorted(images.glob("*.png"))])
    model = predictor.model.eval()
    with torch.inference_mode():
        mean = (model(xb).softmax(1) + model(xb.flip(-1)).softmax(1).flip(-1)) / 2
        logits = flip_averaged_logits(model, xb)
        # mirroring the input mirrors the averaged prediction: the augmentation is symmetric
        assert torch.allclose(flip_averaged_logits(model, xb.flip(-1)), logits.flip(-1), atol=1e-5)
    assert torch.allclose(logits.exp(), mean, atol=1e-5)
    assert np.array_equal(tta.preds, mean.argmax(1).numpy())
    assert tta.targs.tolist() == plain.targs.tolist()


def test_learner_tta_and_interpret_with_tta(learn):
    probs, targs = learn.tta()
    n = len(learn.dls.valid_ds)
    assert probs.shape == (n, 3, SIZE, SIZE) and targs.shape == (n, SIZE, SIZE)
    assert torch.allclose(probs.sum(1), torch.ones(n, SIZE, SIZE), atol=1e-4)
    interp = learn.interpret(tta=True)
    assert np.array_equal(interp.preds, probs.argmax(1).numpy())
    assert "miou" in learn.evaluate(tta=True)

"""Every subcommand of the command line on tiny data; errors are one line and exit 2."""

import pytest
from conftest import make_image_folder

from easytransfer.cli import COMMANDS, main


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cli") / "images", per_class=6)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    code = main(["train", str(data), "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1",
                 "--epochs", "1", "--size", "32", "--bs", "4", "--out", str(out)])
    assert code == 0
    return out


def _one_line_error(capsys, code):
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("easytransfer: error: ") and "\n" not in err and "Traceback" not in err
    return err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0 and "usage: easytransfer " + command in capsys.readouterr().out


def test_train_writes_bundle_history_plots_and_report(trained):
    for name in ("model/model.safetensors", "model/easytransfer.json", "history.csv", "history.png",
                 "confusion_matrix.png", "report.html"):
        assert (trained / name).stat().st_size > 0, name
    assert (trained / "history.csv").read_text().count("\n") == 3  # header + 1 frozen + 1 fine-tuning epoch


def test_lr_find_prints_suggestions_and_plots(data, tmp_path, capsys):
    plot = tmp_path / "lr.png"
    assert main(["lr-find", str(data), "--arch", "test_efficientnet", "--random-init", "--size", "32", "--bs", "4",
                 "--num-it", "20", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "valley: " in out and plot.stat().st_size > 0


def test_evaluate_predict_and_export(trained, data, tmp_path, capsys):
    model = trained / "model"
    assert main(["evaluate", str(model), str(data)]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "accuracy: " in out and "on 12 images" in out
    csv = tmp_path / "preds.csv"
    one = next((data / "cat").glob("*.jpg"))
    assert main(["predict", str(model), str(one), str(data / "dog"), "--csv", str(csv)]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "\t" in line]
    assert len(lines) == 7 and lines[0].startswith(str(one))
    assert csv.read_text().count("\n") == 8
    assert main(["export", str(model), "--torchscript"]) == 0 and (model / "model.pt").stat().st_size > 0
    assert main(["export", str(model), "--onnx", str(tmp_path / "m.onnx")]) == 0
    assert (tmp_path / "m.onnx").stat().st_size > 0


def test_models_and_describe(capsys):
    assert main(["models", "*lite0*", "--offline"]) == 0
    assert "efficientnet_lite0" in capsys.readouterr().out
    assert main(["describe", "efficientnet_lite0"]) == 0
    assert "bicubic" in capsys.readouterr().out


def test_errors_are_one_line(tmp_path, data, capsys):
    err = _one_line_error(capsys, main(["train", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]))
    assert "does not exist" in err
    err = _one_line_error(capsys, main(["describe", "resnet_9000"]))
    assert "resnet_9000" in err
    out = tmp_path / "never"
    err = _one_line_error(capsys, main(["train", str(data), "--arch", "resnet_9000", "--random-init", "--out", str(out)]))
    assert "resnet_9000" in err and not out.exists()
    (tmp_path / "notabundle").mkdir()
    err = _one_line_error(capsys, main(["predict", str(tmp_path / "notabundle"), str(data)]))
    assert "not an easytransfer model bundle" in err
    err = _one_line_error(capsys, main(["evaluate", str(tmp_path / "notabundle"), str(data)]))
    assert "easytransfer.json is missing" in err


def test_a_command_prints_no_future_warning_before_its_output(tmp_path):
    """fastai's import-time torch.jit.script used to print a FutureWarning before every command's output."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "LD_PRELOAD")}
    env["EASYTRANSFER_ALLOCATOR"] = "system"
    done = subprocess.run([sys.executable, "-m", "easytransfer.cli", "models", "*lite0*"], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0 and "efficientnet_lite0" in done.stdout
    assert "Warning" not in done.stderr, done.stderr


# ------------------------------------------------------------------------------------------------ --task


def test_task_flags_errors_name_the_flag_and_the_fix(tmp_path, data, capsys):
    images = tmp_path / "images"
    images.mkdir()
    err = _one_line_error(capsys, main(["train", "--task", "segmentation", "--images", str(images)]))
    assert "--masks DIR" in err
    err = _one_line_error(capsys, main(["train", "--task", "segmentation", "--masks", str(images)]))
    assert "--images DIR" in err
    err = _one_line_error(capsys, main(["train", str(data), "--masks", str(images)]))
    assert "--masks is for --task segmentation" in err
    err = _one_line_error(capsys, main(["train", "--task", "detection", "--images", str(images)]))
    assert "--annotations" in err
    err = _one_line_error(capsys, main(["train", str(data), "--annotations", str(images), "--format", "voc"]))
    assert "--task detection" in err
    err = _one_line_error(capsys, main(["train", "--images", str(images)]))
    assert "--images is for --task" in err and "segmentation" in err and "detection" in err  # the registry's tasks
    (images / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    err = _one_line_error(capsys, main(["train", "--task", "detection", "--images", str(images), "--annotations",
                                        str(images)]))
    assert "YOLO" in err and "--names" in err


@pytest.mark.slow
def test_segmentation_train_evaluate_predict_export(tmp_path, capsys):
    import json

    import numpy as np
    from PIL import Image
    from test_segmentation import make_shapes

    images, masks = make_shapes(tmp_path / "shapes", n=8)
    out = tmp_path / "run"
    assert main(["train", "--task", "segmentation", "--images", str(images), "--masks", str(masks), "--codes",
                 "bg,square,disc", "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1", "--epochs",
                 "1", "--size", "64", "--bs", "4", "--out", str(out)]) == 0
    for name in ("model/easytransfer.json", "history.csv", "history.png", "metrics.json", "confusion_matrix.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "history.csv").read_text().count("\n") == 3
    assert set(json.loads((out / "metrics.json").read_text())) >= {"miou", "per_class_iou", "pixel_accuracy"}
    model = out / "model"
    capsys.readouterr()
    assert main(["evaluate", str(model), str(images), "--masks", str(masks), "--json", str(tmp_path / "s.json")]) == 0
    assert "miou: " in capsys.readouterr().out
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["n_images"] == 8 and list(scores["per_class_iou"]) == ["bg", "square", "disc"]
    assert main(["predict", str(model), str(images), "--out", str(tmp_path / "pred")]) == 0
    written = sorted((tmp_path / "pred").glob("*.png"))
    assert len(written) == 8
    mask = np.asarray(Image.open(written[0]))
    assert mask.shape == (64, 64) and mask.max() < 3
    from easytransfer import load_model
    assert np.array_equal(mask, load_model(model).predict(images / written[0].name))
    err = _one_line_error(capsys, main(["predict", str(model), str(images)]))
    assert "--out DIR" in err
    err = _one_line_error(capsys, main(["evaluate", str(model), str(images), "--task", "detection"]))
    assert "segmentation model" in err
    assert main(["export", str(model), "--onnx", str(tmp_path / "seg.onnx")]) == 0
    assert (tmp_path / "seg.onnx").stat().st_size > 0


@pytest.mark.slow
def test_detection_train_evaluate_predict(tmp_path, capsys):
    import csv
    import json

    import torch
    from test_detection import make_voc

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # detection steps on a shared 2-core machine (see test_detection.one_thread)
    try:
        images, annotations, _ = make_voc(tmp_path / "voc", n=8)
        out = tmp_path / "run"
        assert main(["train", "--task", "detection", "--images", str(images), "--annotations", str(annotations),
                     "--head", "fcos", "--arch", "mobilenetv2_100", "--random-init", "--frozen-epochs", "1",
                     "--epochs", "1", "--size", "64", "--bs", "4", "--out", str(out)]) == 0
        assert set(json.loads((out / "metrics.json").read_text())) >= {"map50", "map", "per_class_ap"}
        model = out / "model"
        capsys.readouterr()
        assert main(["evaluate", str(model), str(images), "--annotations", str(annotations)]) == 0
        printed = capsys.readouterr().out
        assert "map50: " in printed and "n_images: 8" in printed
        boxes = tmp_path / "boxes.csv"
        assert main(["predict", str(model), str(images / "im0.png"), "--threshold", "0", "--csv", str(boxes)]) == 0
        rows = list(csv.DictReader(boxes.open()))
        assert list(rows[0]) == ["path", "label", "score", "x1", "y1", "x2", "y2"]
        assert {r["label"] for r in rows} <= {"blue", "red"} and all(r["path"].endswith("im0.png") for r in rows)
        assert main(["export", str(model), "--onnx"]) == 0 and (model / "model.onnx").stat().st_size > 0
        err = _one_line_error(capsys, main(["evaluate", str(model), str(images)]))
        assert "--annotations" in err
    finally:
        torch.set_num_threads(threads)


def test_evaluate_reads_a_folder_of_symbolic_links(trained, data, tmp_path, capsys):
    # textile_folder() links its images; evaluate once matched no prediction to a label and said "No readable images"
    linked = tmp_path / "linked"
    for image in data.glob("*/*.jpg"):
        (linked / image.parent.name).mkdir(parents=True, exist_ok=True)
        (linked / image.parent.name / image.name).symlink_to(image)
    assert main(["evaluate", str(trained / "model"), str(linked)]) == 0
    assert "on 12 images" in capsys.readouterr().out


def test_evaluate_and_predict_of_every_task_go_through_its_cli_module(tmp_path, capsys):
    """The dense tasks' evaluate / predict outputs (tasks/<task>/cli.py) on the tiny bundles of tests/assets."""
    import csv
    import json
    import tarfile
    from pathlib import Path

    from test_detection import make_voc
    from test_segmentation import make_shapes

    with tarfile.open(Path(__file__).parent / "assets" / "bundles_v1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    bundles = tmp_path / "bundles_v1"
    images, masks = make_shapes(tmp_path / "shapes", n=3)
    capsys.readouterr()
    assert main(["evaluate", str(bundles / "segmentation"), str(images), "--masks", str(masks), "--json",
                 str(tmp_path / "s.json")]) == 0
    assert "miou: " in capsys.readouterr().out and json.loads((tmp_path / "s.json").read_text())["n_images"] == 3
    assert main(["predict", str(bundles / "segmentation"), str(images), "--out", str(tmp_path / "masks")]) == 0
    assert len(list((tmp_path / "masks").glob("*.png"))) == 3 and "3 masks" in capsys.readouterr().out
    err = _one_line_error(capsys, main(["predict", str(bundles / "segmentation"), str(images), "--csv",
                                        str(tmp_path / "m.csv"), "--out", str(tmp_path / "masks")]))
    assert "--csv is for classification and detection" in err

    voc, annotations, _ = make_voc(tmp_path / "voc", n=3)
    assert main(["evaluate", str(bundles / "detection"), str(voc), "--annotations", str(annotations)]) == 0
    assert "n_images: 3" in capsys.readouterr().out
    boxes = tmp_path / "boxes.csv"
    assert main(["predict", str(bundles / "detection"), str(voc), "--threshold", "0", "--csv", str(boxes), "--out",
                 str(tmp_path / "drawn")]) == 0
    rows = list(csv.DictReader(boxes.open()))
    assert list(rows[0]) == ["path", "label", "score", "x1", "y1", "x2", "y2"] and len(rows) > 0
    assert len(list((tmp_path / "drawn").glob("*.png"))) == 3
    err = _one_line_error(capsys, main(["evaluate", str(bundles / "detection"), str(voc), "--masks", str(masks)]))
    assert "--masks is for a segmentation model" in err
    err = _one_line_error(capsys, main(["predict", str(bundles / "classification"), str(voc), "--out",
                                        str(tmp_path / "x")]))
    assert "--out is for segmentation and detection" in err

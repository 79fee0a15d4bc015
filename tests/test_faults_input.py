"""Bad input and slow starts found by issue 19's probe (defects 8-13 and 15): each case failed before its fix."""

from __future__ import annotations

import ast
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_image_folder

import easytransfer
from easytransfer import DataError, ImageData, SegmentationData, load_model, transfer_learner
from easytransfer.cli import main
from easytransfer.data.checks import check_image_file
from easytransfer.data.sources import folder_items
from easytransfer.data.tables import table_items
from easytransfer.errors import DataWarning

ROOT = Path(easytransfer.__file__).resolve().parent.parent


def _python(code: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that imports this checkout's easytransfer."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["EASYTRANSFER_ALLOCATOR"] = "system"
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


# ------------------------------------------------------------------------------ 15: start-up without torch


HEAVY = ("torch", "fastai", "timm", "torchvision", "pandas")


def test_help_and_argument_errors_do_not_import_torch(tmp_path):
    code = ("import sys\nfrom easytransfer.cli import main\n"
            "for argv in (['--help'], ['train', '--help'], ['train', 'x', '--bs', '0'], ['predict', '--nope']):\n"
            "    try:\n        main(argv)\n    except SystemExit as e:\n        print('exit', e.code)\n"
            f"print('heavy', sorted(m for m in {HEAVY!r} if m in sys.modules))")
    done = _python(code, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    exits = [line for line in done.stdout.splitlines() if line.startswith("exit ")]
    assert exits == ["exit 0", "exit 0", "exit 2", "exit 2"] and "heavy []" in done.stdout, done.stdout


def test_import_easytransfer_is_light_and_emits_no_warning(tmp_path):
    done = _python("import sys, easytransfer\nprint(sorted(m for m in sys.modules if m.split('.')[0] == 'torch'))",
                   "-W", "error::FutureWarning", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


@pytest.mark.slow  # a fresh interpreter that loads torch and fastai: ~6 s on 2 idle cores
def test_public_names_load_without_a_future_warning(tmp_path):
    done = _python("from easytransfer import ImageData, transfer_learner, load_model, Interpretation\n"
                   "import easytransfer.train.learner, easytransfer.cli.demo\nprint('ok')",
                   "-W", "error::FutureWarning", cwd=tmp_path)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_every_public_name_resolves_and_the_type_checking_block_agrees():
    for name in easytransfer.PUBLIC_NAMES:
        assert getattr(easytransfer, name) is not None
    tree = ast.parse((ROOT / "easytransfer" / "__init__.py").read_text())
    block = next(node for node in tree.body if isinstance(node, ast.If))
    typed = {alias.asname: "." * node.level + node.module for node in block.body for alias in node.names}
    assert typed == easytransfer.PUBLIC_NAMES
    with pytest.raises(AttributeError, match="no attribute 'ImageDta'"):
        easytransfer.ImageDta  # noqa: B018
    assert easytransfer.models.block_layer_groups is not None  # sub-packages load on first use too


# ------------------------------------------------------------------------------ 8, 9, 12: tables


def _table(folder: Path, labels: list[str], names: list[str] | None = None, **columns) -> pd.DataFrame:
    files = sorted(str(f) for f in folder.rglob("*.jpg"))
    names = names if names is not None else files[: len(labels)]
    return pd.DataFrame({"path": names, "label": labels, **columns})


def test_duplicate_rows_are_used_once_with_a_warning(image_folder):
    files = sorted(str(f) for f in image_folder.rglob("*.jpg"))
    table = pd.DataFrame({"path": files + files[:4], "label": [Path(f).parent.name for f in files + files[:4]]})
    with pytest.warns(DataWarning, match="4 row.s. of the table repeat a file already listed"):
        found = table_items(table)
    assert len(found.items) == len(files) and found.items["path"].is_unique
    with pytest.warns(DataWarning, match="repeat a file"):
        dls = ImageData.from_df(table, bs=4, size=32, seed=0)
    train, valid = set(dls.train.items["path"]), set(dls.valid.items["path"])
    assert not train & valid and len(train | valid) == len(files)


def test_one_file_with_two_labels_is_an_error_or_merged_for_multi_label(image_folder):
    files = sorted(str(f) for f in image_folder.rglob("*.jpg"))
    table = pd.DataFrame({"path": files + files[:1], "label": ["cat"] * len(files) + ["dog"]})
    with pytest.raises(DataError, match=r"different labels, e.g. .*\['cat', 'dog'\].*label_delim="):
        table_items(table)
    with pytest.warns(DataWarning, match="repeat a file"):
        found = table_items(table, label_delim=" ")
    assert found.items.set_index("path")["label"][files[0]] == "cat dog" and len(found.items) == len(files)
    split = pd.DataFrame({"path": files[:1] * 2, "label": ["cat"] * 2, "v": [True, False]})
    with pytest.raises(DataError, match="both the training and the validation"):
        table_items(split, valid_col="v")


@pytest.mark.parametrize(("delim", "labels", "cleaned"), [
    (" ", ["cat  dog", "dog ", " cat", "cat dog cat"], ["cat dog", "dog", "cat", "cat dog"]),
    (";", ["cat;", "dog;;cat", ";dog", "cat; dog"], ["cat", "dog;cat", "dog", "cat;dog"]),
])
def test_doubled_or_trailing_label_delimiters_build(image_folder, delim, labels, cleaned):
    table = _table(image_folder, labels * 3)
    dls = ImageData.from_df(table, label_delim=delim, bs=4, size=32, seed=0, valid_pct=0.25)
    assert list(dls.vocab) == ["cat", "dog"]
    x, y = dls.one_batch()
    assert y.shape[1] == 2
    found = table_items(table, label_delim=delim)
    assert found.items["label"].tolist() == cleaned * 3


def test_valid_col_strings_no_and_zero_are_training_rows(image_folder):
    words = ["no", "yes", "0", "1", "False", "True", "train", "valid", "0", "no", "1", "n"]
    table = _table(image_folder, ["cat"] * 12, v=words)
    found = table_items(table, valid_col="v")
    assert found.items["split"].tolist() == ["train", "valid"] * 4 + ["train", "train", "valid", "train"]
    with pytest.raises(DataError, match=r"'v' of the table must say.*\['maybe'\]"):
        table_items(_table(image_folder, ["cat"] * 2, v=["maybe", "yes"]), valid_col="v")


# ------------------------------------------------------------------------------ 10: unreadable and looping files


def _as_nobody(run):
    """``run()`` as a user without root's power to read anything: in a forked child when we are root."""
    if os.geteuid() != 0:
        return run()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run, send the result back
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            result = ("ok", run())
        except BaseException as error:  # noqa: BLE001 - every outcome goes back to the parent
            result = ("error", f"{type(error).__name__}: {error}")
        with os.fdopen(write, "wb") as f:
            pickle.dump(result, f)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        kind, value = pickle.load(f)
    os.waitpid(pid, 0)
    if kind == "error":
        raise AssertionError(value)
    return value


@pytest.fixture
def open_folder():
    """A folder under /tmp that another user can enter (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="et-faults-"))
    folder.chmod(0o755)
    yield folder
    for path in [folder, *folder.rglob("*")]:
        if not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def test_unreadable_class_folder_and_file_say_permission_denied(open_folder):
    make_image_folder(open_folder / "images", classes=("cat", "dog", "fox"), per_class=3, size=16)
    for path in [open_folder, *open_folder.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    (open_folder / "images" / "fox").chmod(0o000)
    secret = open_folder / "images" / "cat" / "cat_0.jpg"
    secret.chmod(0o000)

    def gather():
        found = folder_items(open_folder / "images")
        return found.messages, check_image_file(secret).reason

    messages, reason = _as_nobody(gather)
    assert any("fox" in m and "cannot be read (permission denied)" in m for m in messages), messages
    assert not any("empty" in m for m in messages), messages
    assert reason.startswith("permission denied"), reason


def test_a_self_looping_symlink_is_excluded_with_its_reason(tmp_path):
    images = make_image_folder(tmp_path / "images", per_class=3, size=16)
    loop = images / "cat" / "loop.jpg"
    loop.symlink_to(loop)
    with pytest.warns(DataWarning, match=r"Using 6 of 7 image files; excluded 1 \(1 symbolic link loop\)"):
        dls = ImageData.from_folder(images, bs=2, size=16, seed=0, valid_pct=0.34)
    assert len(dls.train.items) + len(dls.valid.items) == 6
    assert dls.report.reasons() == {str(loop): "symbolic link loop: the link points back to itself"}
    table = pd.DataFrame({"path": ["elsewhere/loop.jpg", "cat/cat_0.jpg"], "label": ["cat", "cat"]})
    assert len(table_items(table, images).items) == 2  # found by file name: no raw "Symlink loop" error


# ------------------------------------------------------------------------------ 11, 12, 13: the command line


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """An untrained tiny classifier's bundle (these tests are about paths and exit codes, not accuracy)."""
    root = make_image_folder(tmp_path_factory.mktemp("data") / "images", per_class=3, size=16)
    learn = transfer_learner(ImageData.from_folder(root, valid_pct=0.34, seed=0, bs=2, size=32), "test_efficientnet",
                             pretrained=False)
    return learn.export(tmp_path_factory.mktemp("bundle") / "model")


def _error(capsys, code: int) -> str:
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("easytransfer: error: ") and "Traceback" not in err, err
    return err


def test_output_paths_that_cannot_be_written_fail_at_once(tmp_path, capsys, image_folder):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    err = _error(capsys, main(["train", str(image_folder), "--out", str(a_file)]))
    assert "--out" in err and "is a file; give a folder" in err
    err = _error(capsys, main(["demo", "--out", str(a_file)]))
    assert "is a file; give a folder" in err
    err = _error(capsys, main(["train", str(image_folder), "--out", str(a_file / "run")]))
    assert "notes.txt' is a file, not a folder" in err
    err = _error(capsys, main(["predict", "any-model", str(image_folder), "--csv", str(tmp_path)]))
    assert "--csv" in err and "is a folder; give a file name" in err


def test_export_to_a_folder_is_refused_and_leaves_no_temporary_file(bundle, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exports").mkdir()
    err = _error(capsys, main(["export", str(bundle), "--torchscript", "exports"]))
    assert "--torchscript 'exports' is a folder" in err and "model.pt" in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["exports"]


def test_predict_csv_into_a_missing_folder_creates_it(bundle, image_folder, tmp_path, capsys):
    csv = tmp_path / "new" / "deeper" / "predictions.csv"
    assert main(["predict", str(bundle), str(image_folder / "cat"), "--csv", str(csv)]) == 0
    assert csv.read_text().count("\n") == 7  # header + 6 images


def test_predict_fails_when_every_input_failed(bundle, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("a.jpg", "b.jpg"):
        (broken / name).write_text("not an image")
    err = _error(capsys, main(["predict", str(bundle), str(broken)]))
    assert "None of the 2 file(s)" in err
    (tmp_path / "empty").mkdir()
    assert "No files found" in _error(capsys, main(["predict", str(bundle), str(tmp_path / "empty")]))


def test_predict_folder_on_a_missing_path_is_an_error(bundle, tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_model(bundle).predict_folder(tmp_path / "no-such-folder")


@pytest.mark.parametrize(("flag", "value", "message"), [("--lr-max", "abc", "expected a number"),
                                                         ("--lr", "0", "must be a positive number"),
                                                         ("--lr", "-1e-3", "must be a positive number"),
                                                         ("--bs", "0", "must be at least 1"),
                                                         ("--size", "0", "must be at least 1")])
def test_bad_training_arguments_fail_before_anything_runs(flag, value, message, image_folder, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", str(image_folder), f"{flag}={value}"])
    assert info.value.code == 2 and f"argument {flag}: {message}" in capsys.readouterr().err


def test_bad_learning_rates_fail_before_any_epoch(bundle, image_folder):
    learn = transfer_learner(ImageData.from_folder(image_folder, valid_pct=0.34, seed=0, bs=2, size=32),
                             "test_efficientnet", pretrained=False)
    with pytest.raises(ValueError, match="lr_max must be a positive number.*got 'abc'"):
        learn.fine_tune(1, 1, lr_max="abc")
    for lr in (0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="must be a positive number"):
            learn.fit_frozen(1, lr=lr)
    with pytest.raises(ValueError, match="must be a positive number"):
        learn.fit_discriminative(1, lr_max=slice(0, 1e-3))
    assert len(learn.history) == 0


def test_segmentation_batch_size_zero_is_refused():
    with pytest.raises(ValueError, match="bs .batch size. must be a whole number of at least 1, got 0"):
        SegmentationData.from_folders("images", "masks", bs=0)

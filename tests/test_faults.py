"""Faults and bad input (issue 19): each defect the probe found, kept as a test that failed before its fix.

Fast cases run in the default suite; the probe's slow ones (kill -9 loops, two exporting processes, a full disk,
another user's read) are marked ``slow`` and run in subprocesses.
"""

import json
import os
import shutil
import stat
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_image_folder
from safetensors.torch import save_file

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.cli import main
from easytransfer.deploy.bundle import CONFIG_NAME, WEIGHTS_NAME, BundleConfig, read_bundle_config
from easytransfer.errors import DataError, DataWarning, EasyTransferError, WeightsMismatchError
from easytransfer.evaluate.diagnosis import diagnose
from easytransfer.files import atomic_write, is_temporary, remove_stale_temporaries
from easytransfer.train.checkpoint import LAST_NAME, CheckpointCallback, FitState, read_checkpoint
from easytransfer.train.features import feature_cache_dir
from easytransfer.train.history import Phase

DEAD_PID = 999_999_999  # above any pid_max: no process has it
DELETE = object()


def _dls(folder, **kwargs):
    kwargs = {"valid_pct": 0.25, "seed": 0, "bs": 4, "size": 32, "aug": "none", **kwargs}
    return ImageData.from_folder(folder, **kwargs)


def _learner(folder, **kwargs):
    return transfer_learner(_dls(folder), "test_efficientnet", pretrained=False, **kwargs)


@pytest.fixture(scope="module")
def cats(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("cats") / "images", classes=("cat", "dog"), per_class=4, size=32)


@pytest.fixture(scope="module")
def bees(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("bees") / "images", classes=("ant", "bee"), per_class=4, size=32)


# 1. fewer training images than the batch size -----------------------------------------------------------------

def test_fewer_training_images_than_the_batch_size_still_train(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=6, size=32)  # 12 images: 8 train, 4 valid
    with pytest.warns(DataWarning, match="fewer than the batch size 16"):
        dls = ImageData.from_folder(folder, valid_pct=0.34, seed=0, size=32)  # the default bs=16
    n_train = len(dls.train_ds)
    assert dls.train.bs == n_train and len(dls.train) == 1  # one batch per epoch, not zero
    assert any("fewer than the batch size" in m for m in dls.report.messages)


def test_an_empty_validation_set_is_refused(tmp_path):
    folder = make_image_folder(tmp_path / "images", per_class=1, size=32)  # one image per class: none to validate
    with pytest.raises(DataError, match="No validation images"):
        ImageData.from_folder(folder, valid_pct=0.2, seed=0, size=32)


def test_a_fit_that_would_run_no_batch_is_an_error(cats):
    learn = _learner(cats)
    learn.dls.train.bs = 64  # more than the training images: fastai drops the only, incomplete batch
    with pytest.raises(DataError, match="no batch"):
        learn.fit_frozen(1)
    assert len(learn.fit_history) == 0


def test_diagnose_never_calls_a_fit_without_training_a_good_fit():
    history = pd.DataFrame({"phase": ["frozen"] * 2, "epoch": [0, 1], "train_loss": [np.nan, np.nan],
                            "valid_loss": [0.69, 0.69], "accuracy": [0.5, 0.5]})
    result = diagnose(history)
    assert result.verdict == "nothing was trained" and "good fit" not in str(result)


# 2. concurrent / mixed exports ------------------------------------------------------------------------------

def test_weights_beside_another_exports_json_are_refused(cats, bees, tmp_path):
    a = _learner(cats).export(tmp_path / "a")
    x = _learner(bees).export(tmp_path / "x")  # same architecture and class count, other classes
    shutil.copy(a / WEIGHTS_NAME, x / WEIGHTS_NAME)  # what two exports racing into one folder can leave
    with pytest.raises(WeightsMismatchError, match="mixes two exports"):
        load_model(x, device="cpu")
    assert load_model(a, device="cpu").vocab == ["cat", "dog"]


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "easytransfer.json"
    target.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["easytransfer.json"]


def test_temporary_files_are_unique_and_named_for_their_process(tmp_path):
    seen = []
    atomic_write(tmp_path / "w.bin", lambda tmp: seen.append(tmp.parent.name) or tmp.write_bytes(b"1"))
    atomic_write(tmp_path / "w.bin", lambda tmp: seen.append(tmp.parent.name) or tmp.write_bytes(b"2"))
    assert seen[0] != seen[1] and all(is_temporary(n) and f".{os.getpid()}." in n for n in seen)
    assert os.listdir(tmp_path) == ["w.bin"]


# 3. permissions ---------------------------------------------------------------------------------------------

def test_bundle_files_honour_the_umask(cats, tmp_path):
    old = os.umask(0o022)
    try:
        bundle = _learner(cats).export(tmp_path / "model")
    finally:
        os.umask(old)
    for name in (WEIGHTS_NAME, CONFIG_NAME):
        assert stat.S_IMODE((bundle / name).stat().st_mode) == 0o644, name  # was 0o600: only the owner could read


# 5. stale temporary files ----------------------------------------------------------------------------------

def _plant_temporaries(folder):
    folder.mkdir(parents=True, exist_ok=True)
    dead = folder / f".model.safetensors.{DEAD_PID}.abc123.tmp"
    live = folder / f".model.safetensors.{os.getpid()}.def456.tmp"  # a writer still at work
    for temporary in (dead, live):
        temporary.mkdir()
        (temporary / ".tmpAbC123").write_bytes(b"half a file")  # what safetensors' own save_file leaves
    return dead, live


def test_an_export_removes_temporaries_of_killed_writers_only(cats, tmp_path):
    dead, live = _plant_temporaries(tmp_path / "model")
    _learner(cats).export(tmp_path / "model")
    assert not dead.exists() and live.exists()


def test_a_checkpoint_folder_is_cleaned_when_a_fit_opens_it(tmp_path):
    dead, live = _plant_temporaries(tmp_path / "ckpt")
    callback = CheckpointCallback(tmp_path / "ckpt", FitState(Phase.from_name("frozen"), 1, (1e-3,), 0.1,
                                                               on_features=False, monitor="valid_loss"))
    callback.learn = type("FakeLearner", (), {"recorder": type("R", (), {"metric_names": ["epoch"]})()})()
    callback.before_fit()
    assert not dead.exists() and live.exists()


def test_the_memory_mapped_feature_cache_lives_in_a_visible_cache_folder(cats, tmp_path, monkeypatch):
    monkeypatch.setenv("EASYTRANSFER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr("easytransfer.train.features.CACHE_MEMORY_LIMIT", 0)  # every cache goes to a file
    stale = feature_cache_dir() / f"features.{DEAD_PID}.zzz.tmp"  # left by a fit killed with -9
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left by kill -9")
    learn = _learner(cats)
    learn.fit_frozen(1, patience=None)
    path = learn.feature_cache.path
    assert os.path.dirname(path) == str(tmp_path / "cache" / "features") and is_temporary(path)  # not in /tmp
    assert not stale.exists()


# 6. resume tells another run's checkpoint ------------------------------------------------------------------

@pytest.mark.slow  # two tiny fits: ~6 s on 2 cores
def test_resume_refuses_a_checkpoint_of_other_classes(cats, bees, tmp_path):
    _learner(cats, checkpoint_dir=tmp_path / "ckpt").fit_frozen(1, patience=None)
    other = _learner(bees, checkpoint_dir=tmp_path / "ckpt")  # same architecture, same class count
    with pytest.raises(EasyTransferError, match=r"another model \(classes \['cat', 'dog'\]"):
        other.fit_frozen(1, patience=None, resume=True)


@pytest.mark.parametrize("content", ["garbage", "foreign", "bad-json"])
def test_a_checkpoint_that_is_not_ours_gives_a_clear_error(tmp_path, content):
    path = tmp_path / LAST_NAME
    if content == "garbage":
        path.write_bytes(b"\x00" * 64)
    elif content == "foreign":
        save_file({"w": torch.zeros(2)}, str(path))  # a safetensors file without our metadata
    else:
        save_file({"w": torch.zeros(2)}, str(path), metadata={"easytransfer": "{not json"})
    with pytest.raises(EasyTransferError, match="checkpoint"):
        read_checkpoint(path)


# 7. arrays in predict ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def predictor(cats, tmp_path_factory):
    return load_model(_learner(cats).export(tmp_path_factory.mktemp("predictor") / "model"), device="cpu")


def test_a_float_array_in_0_1_is_scaled_not_truncated_to_black(predictor):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, size=(40, 40, 3), dtype=np.uint8)
    as_float = image.astype(np.float32) / 255
    torch.testing.assert_close(predictor.preprocess(as_float), predictor.preprocess(image))
    assert not torch.equal(predictor.preprocess(as_float), predictor.preprocess(np.zeros_like(image)))


def test_a_chw_tensor_is_read_as_the_same_image(predictor):
    image = np.random.default_rng(1).integers(0, 256, size=(40, 30, 3), dtype=np.uint8)
    chw = torch.from_numpy(image).permute(2, 0, 1)
    torch.testing.assert_close(predictor.preprocess(chw), predictor.preprocess(image))
    torch.testing.assert_close(predictor.preprocess(chw.float() / 255), predictor.preprocess(image))


@pytest.mark.parametrize("bad, match", [(np.full((8, 8, 3), 2.0), r"\[0, 1\]"), (np.full((8, 8, 3), 300), "0..255"),
                                        (np.full((8, 8, 3), np.nan), "NaN")])
def test_out_of_range_arrays_are_refused(predictor, bad, match):
    with pytest.raises(DataError, match=match):
        predictor.predict(bad)


# 14. the bundle's JSON is checked against its schema --------------------------------------------------------

def _bundle_json(**changes):
    data = {"format_version": 1, "arch": "resnet18", "source": "timm", "source_arch": "resnet18",
            "classes": ["cat", "dog"], "multilabel": False, "head": {"type": "linear"},
            "preprocessing": {"size": 32, "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3}}
    for key, value in changes.items():
        fields = data["preprocessing"] if key in ("size", "mean", "std") else data
        if value is DELETE:
            del fields[key]
        else:
            fields[key] = value
    return json.dumps(data)


@pytest.mark.parametrize("changes, match", [
    ({"arch": "hf-hub:timm/resnet18.a1_in1k"}, "Hugging Face Hub"),
    ({"arch": "open_clip:hf-hub:org/repo"}, "arch_config"),
    ({"std": [0.5, 0.0, 0.5]}, "'std' must be positive"),
    ({"std": [0.5, 0.5]}, "three finite numbers"),
    ({"mean": DELETE}, "preprocessing 'mean'"),  # was a raw KeyError
    ({"size": 0}, "'size' must be a positive"),
    ({"size": "224"}, "'size' must be a int"),
    ({"classes": "cat"}, "non-empty list"),
    ({"classes": []}, "non-empty list"),
    ({"classes": ["cat", "cat"]}, "names a class twice"),
    ({"multilabel": "yes"}, "'multilabel' must be a bool"),
    ({"head": ["linear"]}, "'head' must be a dict"),
])
def test_malformed_bundle_json_is_a_clear_error(changes, match):
    with pytest.raises(EasyTransferError, match=match):
        BundleConfig.from_json(_bundle_json(**changes))


def test_load_model_never_builds_a_hub_model(cats, tmp_path, monkeypatch):
    bundle = _learner(cats).export(tmp_path / "model")
    data = json.loads((bundle / CONFIG_NAME).read_text())
    data["arch"] = "hf-hub:timm/resnet18.a1_in1k"
    (bundle / CONFIG_NAME).write_text(json.dumps(data))

    def no_network(*args, **kwargs):
        raise AssertionError("load_model tried to build a model from the Hugging Face Hub")

    monkeypatch.setattr("easytransfer.tasks.classification.predictor.build_model", no_network)
    with pytest.raises(EasyTransferError, match="never downloads"):
        load_model(bundle)
    with pytest.raises(EasyTransferError, match="never downloads"):
        read_bundle_config(bundle)


# 4. Ctrl-C in `easytransfer train` and --resume -------------------------------------------------------------

@pytest.mark.slow  # three CLI stages of a tiny model: ~12 s on 2 cores
def test_cli_train_checkpoints_and_resumes_after_ctrl_c(cats, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    argv = ["train", str(cats), "--arch", "test_efficientnet", "--random-init", "--frozen-epochs", "1", "--epochs",
            "1", "--size", "32", "--bs", "4", "--aug", "none", "--out", str(out)]

    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:  # Ctrl-C as the fine-tuning stage starts
        patch.setattr("easytransfer.train.learner.TransferLearner.fit_discriminative", ctrl_c)
        assert main(argv) == 130
    assert (out / "checkpoints" / "frozen" / LAST_NAME).is_file()
    assert "--resume" in capsys.readouterr().err
    assert main(argv + ["--resume"]) == 0
    printed = capsys.readouterr().out
    assert "Nothing to resume: the checkpoint's frozen fit already finished" in printed
    assert (out / "history.csv").read_text().count("\n") == 3  # the checkpointed frozen epoch + the fine-tuning one
    assert load_model(out / "model", device="cpu").vocab == ["cat", "dog"]
    assert not (out / "checkpoints").exists()  # the bundle is written: the checkpoints are no longer needed


def test_cli_resume_without_checkpoints_is_a_clear_error(cats, tmp_path, capsys):
    code = main(["train", str(cats), "--arch", "test_efficientnet", "--random-init", "--resume", "--out",
                 str(tmp_path / "never-ran")])
    assert code == 2 and "nothing to resume" in capsys.readouterr().err


def test_stale_temporaries_helper_ignores_other_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"keep")
    (tmp_path / f"notes.{DEAD_PID}.txt").write_bytes(b"keep")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert remove_stale_temporaries(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", f"notes.{DEAD_PID}.txt"]


# The probe: kill -9, two writers, a full disk, another user (slow: each runs Python subprocesses) ---------------

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_WRITER = """
import sys
import torch
from torch import nn
from easytransfer.deploy.bundle import BundleConfig, Preprocessing, write_bundle
from easytransfer.models.heads import HeadConfig
from easytransfer.train.checkpoint import FitState, save_checkpoint
from easytransfer.train.history import Phase

folder, classes, rounds = sys.argv[1], tuple(sys.argv[2].split(",")), int(sys.argv[3])
model = nn.Linear(1024, 1024)  # 4 MB of weights: a write takes long enough to be interrupted
config = BundleConfig("resnet18", "timm", "resnet18", classes, HeadConfig(),
                      Preprocessing(32, "bilinear", (0.5,) * 3, (0.5,) * 3))
state = FitState(Phase.from_name("frozen"), 3, (1e-3,), 0.1, on_features=False, monitor="valid_loss")
print("ready", flush=True)
for i in range(rounds):
    with torch.no_grad():
        model.weight.fill_(i)
    write_bundle(folder + "/model", model, config)
    save_checkpoint(__import__("pathlib").Path(folder) / "ckpt" / "last.safetensors", model, None, state)
"""


def _python(code: str, *args, **kwargs):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": _REPO}
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _everything_left_loads_or_is_temporary(folder):
    from easytransfer.deploy.bundle import read_bundle

    left = [p for p in folder.rglob("*") if p.is_file()]
    for path in left:
        temporary = any(is_temporary(p) for p in (path, *path.parents))  # safetensors' own .tmpXXXXXX is in ours
        assert temporary or path.name in (WEIGHTS_NAME, CONFIG_NAME, LAST_NAME), path
    if (folder / "model" / CONFIG_NAME).exists():
        try:
            read_bundle(folder / "model")
        except WeightsMismatchError as e:  # killed between the weights and the JSON of two exports: detected
            assert "mixes two exports" in str(e)
    if (folder / "ckpt" / LAST_NAME).exists():
        read_checkpoint(folder / "ckpt" / LAST_NAME)
    return left


@pytest.mark.slow
def test_probe_kill_9_during_exports_and_checkpoints_leaves_only_loadable_or_temporary_files(tmp_path):
    import signal
    import time

    rng = np.random.default_rng(0)
    temporaries_seen = 0
    for kill in range(4):
        child = _python(_WRITER, tmp_path, "cat,dog" if kill % 2 else "ant,bee", 10_000)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(float(rng.uniform(0.2, 1.5)))
        child.send_signal(signal.SIGKILL)
        child.wait()
        left = _everything_left_loads_or_is_temporary(tmp_path)
        temporaries_seen += sum(any(is_temporary(q) for q in (p, *p.parents)) for p in left)
    writer = _python(_WRITER, tmp_path, "cat,dog", 1)  # writing into the folders again removes what the kills left
    assert writer.wait(timeout=300) == 0, writer.stderr.read()
    assert not [p for p in tmp_path.rglob("*") if is_temporary(p)]
    print(f"{temporaries_seen} temporary files left by 4 kills, all removed by the next export")


@pytest.mark.slow
def test_probe_two_processes_exporting_to_one_folder_never_crash_each_other(tmp_path):
    from easytransfer.deploy.bundle import read_bundle

    writers = [_python(_WRITER, tmp_path, classes, 20) for classes in ("cat,dog", "ant,bee")]
    for writer in writers:
        assert writer.wait(timeout=600) == 0, writer.stderr.read()
    assert not [p for p in tmp_path.rglob("*") if is_temporary(p)]
    try:
        config, _ = read_bundle(tmp_path / "model")
        assert config.classes in (("cat", "dog"), ("ant", "bee"))
    except WeightsMismatchError as e:  # the last weights and the last JSON came from different writers
        assert "mixes two exports" in str(e)


@pytest.mark.slow
def test_probe_a_full_disk_keeps_the_old_bundle(tmp_path):
    import subprocess

    from torch import nn

    from easytransfer.deploy.bundle import Preprocessing, read_bundle, write_bundle
    from easytransfer.models.heads import HeadConfig

    mount = tmp_path / "small"
    mount.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a 1 MB tmpfs here ({e}); needs root and CAP_SYS_ADMIN")
    try:
        config = BundleConfig("resnet18", "timm", "resnet18", ("cat", "dog"), HeadConfig(),
                              Preprocessing(32, "bilinear", (0.5,) * 3, (0.5,) * 3))
        write_bundle(mount / "model", nn.Linear(64, 64), config)  # 16 kB: fits
        with pytest.raises(OSError) as info:
            write_bundle(mount / "model", nn.Linear(1024, 1024), config)  # 4 MB: the disk fills up
        assert info.value.errno == 28 and "the old file" in str(info.value)  # ENOSPC, not safetensors' own error
        loaded, state = read_bundle(mount / "model")
        assert loaded == config and state["weight"].shape == (64, 64)  # the old bundle, intact
        assert sorted(os.listdir(mount / "model")) == [CONFIG_NAME, WEIGHTS_NAME]  # no temporary left
        del state  # its tensors map the file: the tmpfs stays busy while they live
    finally:
        import gc

        gc.collect()
        if subprocess.run(["umount", str(mount)], check=False).returncode:
            subprocess.run(["umount", "-l", str(mount)], check=False)


_OTHER_USER_READ = """
import os, pwd, sys
from easytransfer.deploy.bundle import read_bundle
from easytransfer.errors import EasyTransferError
nobody = pwd.getpwnam("nobody")
os.setgid(nobody.pw_gid)
os.setuid(nobody.pw_uid)  # everything is imported: only the bundle is read as the other user
try:
    config, _ = read_bundle(sys.argv[1])
    print("loaded", ",".join(config.classes))
except EasyTransferError as e:
    print("error", e)
"""


@pytest.mark.slow
def test_probe_another_user_reads_a_bundle(cats, tmp_path):
    import pwd
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("switching to the user 'nobody' needs root")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' on this machine")
    shared = tempfile.mkdtemp(prefix="easytransfer-shared-")
    try:
        os.chmod(shared, 0o755)
        old = os.umask(0o022)
        try:
            bundle = _learner(cats).export(os.path.join(shared, "model"))
        finally:
            os.umask(old)
        reader = _python(_OTHER_USER_READ, bundle)
        out, err = reader.communicate(timeout=300)
        assert out.strip() == "loaded cat,dog", err
        os.chmod(bundle / WEIGHTS_NAME, 0o600)  # the owner made it private: the reader is told so
        reader = _python(_OTHER_USER_READ, bundle)
        out, err = reader.communicate(timeout=300)
        assert out.startswith("error") and "cannot be read" in out and "Permission denied" in out, out + err
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_hub_model_bundle_with_its_timm_architecture_rebuilds_offline(monkeypatch):
    """An export of an ``hf-hub:`` timm model records the architecture (arch_config), so loading it is offline."""
    import timm

    from easytransfer.models.backends.timm import TimmBackend
    from easytransfer.models.heads import HeadConfig

    hub = "hf-hub:timm/test_convnext.r160_in1k"
    config = BundleConfig.from_json(_bundle_json(arch=hub, arch_config={"timm_architecture": "test_convnext"}))
    assert config.arch == hub and config.arch_config == {"timm_architecture": "test_convnext"}
    create = timm.create_model

    def offline_create(name, *args, **kwargs):
        assert not str(name).startswith("hf-hub:"), "built from the Hub"
        return create(name, *args, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline_create)
    model, spec = TimmBackend().build(hub, hub, 2, pretrained=False, weights=None, head=HeadConfig(),
                                      arch_config=config.arch_config)
    assert spec.arch == hub and spec.arch_config == {"timm_architecture": "test_convnext"}
    assert model.get_classifier().out_features == 2

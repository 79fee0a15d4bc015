"""Tests of easytransfer/files.py (moved here from the history-named test files: faults, student, contracts ...)."""

import os
import shutil
import warnings

import numpy as np
import pytest
from helpers import DEAD_PID, plant_temporaries, tiny_learner

from easytransfer.deploy.bundle import CONFIG_NAME, WEIGHTS_NAME, BundleConfig
from easytransfer.errors import WeightsMismatchError
from easytransfer.files import atomic_write, is_temporary, remove_stale_temporaries
from easytransfer.train.checkpoint import LAST_NAME, read_checkpoint


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


def test_an_export_removes_temporaries_of_killed_writers_only(cats, tmp_path):
    dead, live = plant_temporaries(tmp_path / "model")
    tiny_learner(cats).export(tmp_path / "model")
    assert not dead.exists() and live.exists()


def test_stale_temporaries_helper_ignores_other_files(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"keep")
    (tmp_path / f"notes.{DEAD_PID}.txt").write_bytes(b"keep")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert remove_stale_temporaries(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == ["model.safetensors", f"notes.{DEAD_PID}.txt"]


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
            bundle = tiny_learner(cats).export(os.path.join(shared, "model"))
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

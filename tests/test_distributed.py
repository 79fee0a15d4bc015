"""Distributed training on the CPU: 2 gloo processes started by torchrun, through the Python API and the CLI.

Each test starts real processes (torchrun, 2 ranks) on 2 x 16 tiny images with a tiny random model; they run in
the default suite because nothing else exercises the collectives (about 30-60 s each on 2 cores).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import make_image_folder

from easytransfer import ImageData, load_model, transfer_learner
from easytransfer.cli.launch import without_launch_flags
from easytransfer.train.distributed import World, torchrun_command

TIMEOUT_S = 600  # a hung collective fails the test instead of the suite
ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent('''
    """One rank: a distributed frozen + discriminative fit, interrupted; a new learner resumes it."""
    import json, os, sys
    from pathlib import Path

    import torch
    import torch.distributed as dist
    from fastai.callback.core import Callback
    from fastai.torch_core import set_seed

    from easytransfer import ImageData, transfer_learner

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo")  # owned here, so both learners below share it


    class CountTrainingItems(Callback):
        order = 100

        def __init__(self):
            self.n = 0

        def after_batch(self):
            if self.training:
                self.n += len(self.learn.yb[0])


    class InterruptInSecondEpoch(Callback):
        def after_batch(self):
            if self.training and self.epoch == 1 and self.iter == 0:
                raise KeyboardInterrupt


    def learner():
        dls = ImageData.from_folder(folder, valid_pct=0.25, seed=0, bs=4, size=32, aug="none")
        set_seed(0)
        return transfer_learner(dls, "test_efficientnet", pretrained=False, checkpoint_dir=out / "ckpt", device="cpu")


    first, frozen_count, tuned_count = learner(), CountTrainingItems(), CountTrainingItems()
    with first.distributed():
        first.fit_frozen(2, cbs=[frozen_count])  # on cached features, computed on each rank's half
        suggestion = first.lr_find(num_it=5).suggested
        first.unfreeze()
        first.fit_discriminative(1, lr_max=1e-3, cbs=[tuned_count])
    weights_after_fit = {k: v.clone() for k, v in first.model.state_dict().items()}
    first.export(out / f"model-{rank}")  # rank 0 alone writes
    try:
        with first.distributed():
            first.fit_discriminative(3, lr_max=1e-3, patience=None, cbs=[InterruptInSecondEpoch()])
    except KeyboardInterrupt:
        pass
    interrupted_unwrapped = not isinstance(first.model, torch.nn.parallel.DistributedDataParallel)

    resumed = learner()  # a new process would build the same learner and resume from the checkpoint
    resumed.unfreeze()
    with resumed.distributed():
        resumed.fit_discriminative(3, lr_max=1e-3, patience=None, resume=True)
    torch.save({"fit": weights_after_fit, "resumed": resumed.model.state_dict()}, out / f"weights-{rank}.pt")
    (out / f"rank-{rank}.json").write_text(json.dumps({
        "n_train": len(first.dls.train_ds), "frozen_seen": frozen_count.n, "tuned_seen": tuned_count.n,
        "suggestion": suggestion, "resumed_phases": [r.phase.name for r in resumed.fit_history],
        "interrupted_unwrapped": interrupted_unwrapped,
    }))
    dist.destroy_process_group()
''')


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)  # the test itself may run under a launcher
    return env


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done


@pytest.fixture
def images(tmp_path) -> Path:
    return make_image_folder(tmp_path / "images", per_class=16, size=32)


def test_two_cpu_ranks_train_the_same_weights_on_half_the_items_each_and_resume(images, tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(images), str(out)]
    done = _run(cmd, tmp_path)
    assert done.stdout.count("distributed: 2 processes (backend gloo)") == 3  # rank 0 alone, once per block
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    weights = [torch.load(out / f"weights-{r}.pt") for r in (0, 1)]
    for stage in ("fit", "resumed"):
        assert weights[0][stage].keys() == weights[1][stage].keys()
        assert all(torch.equal(weights[0][stage][k], weights[1][stage][k]) for k in weights[0][stage]), stage
    n_train = ranks[0]["n_train"]
    assert n_train == 24
    for rank in ranks:  # 2 frozen epochs on cached features, 1 on images: half of the 24 training items each
        assert rank["frozen_seen"] == 2 * n_train // 2
        assert rank["tuned_seen"] == n_train // 2
    assert ranks[0]["suggestion"] == ranks[1]["suggestion"]
    assert (out / "model-0" / "model.safetensors").is_file() and not (out / "model-1").exists()
    assert ranks[0]["resumed_phases"] == ranks[1]["resumed_phases"]
    assert ranks[0]["resumed_phases"][-3:] == ["discriminative"] * 3 and len(ranks[0]["resumed_phases"]) == 6
    # a library message (standard error), shown by rank 0 alone
    assert done.stderr.count("Resuming the discriminative fit after epoch 1 of 3.") == 1
    assert ranks[0]["interrupted_unwrapped"] and ranks[1]["interrupted_unwrapped"]  # the block cleaned up after Ctrl-C


def test_cli_nproc_2_writes_one_bundle_and_one_history(images, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "easytransfer.cli", "train", str(images), "--arch", "test_efficientnet",
           "--random-init", "--size", "32", "--bs", "4", "--frozen-epochs", "1", "--epochs", "1", "--nproc", "2",
           "--out", str(out)]
    done = _run(cmd, tmp_path)
    assert done.stdout.count("distributed: 2 processes (backend gloo)") == 1
    assert done.stdout.count("written to") == 1
    assert sorted(p.name for p in out.rglob("*.safetensors")) == ["model.safetensors"]
    assert [p.name for p in out.rglob("history.csv")] == ["history.csv"]
    history = (out / "history.csv").read_text().splitlines()
    assert len(history) == 1 + 2  # header, one frozen and one fine-tuning epoch
    predictor = load_model(out / "model")
    assert list(predictor.vocab) == ["cat", "dog"]


def test_other_ranks_write_no_bundle_and_no_report(image_folder, tmp_path, monkeypatch):
    dls = ImageData.from_folder(image_folder, valid_pct=0.25, seed=0, bs=4, size=32)
    learn = transfer_learner(dls, "test_efficientnet", pretrained=False, device="cpu")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    learn.export(tmp_path / "model")
    learn.save_report(tmp_path / "report.html")
    assert not (tmp_path / "model").exists() and not (tmp_path / "report.html").exists()
    monkeypatch.setenv("RANK", "0")
    assert (learn.export(tmp_path / "model") / "model.safetensors").is_file()


SEGMENTATION_WORKER = textwrap.dedent('''
    """One rank: a segmentation learner's frozen fit under distributed(), exported inside and after the block."""
    import json, os, sys, warnings
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from easytransfer import SegmentationData, segmentation_learner

    folder, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    dls = SegmentationData.from_folders(folder / "images", folder / "masks", codes=["bg", "square"], size=32, bs=2,
                                        seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        learn = segmentation_learner(dls, "test_efficientnet", "unet", pretrained=False, device="cpu")
    with learn.distributed():
        learn.fit_frozen(1, lr=1e-3)
        inside = learn.export(out / f"inside-{rank}")
    after = learn.export(out / f"after-{rank}")
    (out / f"rank-{rank}.json").write_text(json.dumps({"inside": str(inside), "after": str(after),
                                                       "phases": list(learn.history["phase"])}))
''')


def _squares(root: Path, n: int = 8, size: int = 32) -> Path:
    """Images with a red square and masks with exactly its pixels (class 1)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(n):
        img, mask = np.full((size, size, 3), 60, np.uint8), np.zeros((size, size), np.uint8)
        y, x = rng.integers(0, size - 10, 2)
        img[y:y + 10, x:x + 10], mask[y:y + 10, x:x + 10] = (220, 30, 30), 1
        Image.fromarray(img).save(root / "images" / f"{i:03d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:03d}.png")
    return root


def test_a_segmentation_learner_under_two_ranks_writes_its_bundle_once(tmp_path):
    script = tmp_path / "segmentation_worker.py"
    script.write_text(SEGMENTATION_WORKER)
    out = tmp_path / "out"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(script),
           str(_squares(tmp_path / "shapes")), str(out)]
    _run(cmd, tmp_path)
    ranks = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["after-0", "inside-0"]  # rank 0 alone writes
    assert (out / "inside-0" / "model.safetensors").is_file() and (out / "after-0" / "model.safetensors").is_file()
    assert ranks[1]["inside"] == str(out / "inside-1") and ranks[1]["after"] == str(out / "after-1")
    assert ranks[0]["phases"] == ranks[1]["phases"] == ["frozen"]


def test_world_from_torchrun_variables_and_launch_command():
    assert World.from_env({"RANK": "0", "WORLD_SIZE": "1"}, device=torch.device("cpu")).is_main
    assert World.from_env({"WORLD_SIZE": "2"}) is None
    assert str(World(0, 4, 0, "nccl")) == "distributed: 4 processes (backend nccl)"
    cmd = torchrun_command(["train", "d"], nproc=8, nnodes=2, node_rank=1, master_addr="10.0.0.1")
    assert "--standalone" not in cmd and cmd[cmd.index("--node_rank") + 1] == "1"
    kept = without_launch_flags(["train", "d", "--nproc", "2", "--nnodes=2", "--bs", "4"])
    assert kept == ["train", "d", "--bs", "4"]

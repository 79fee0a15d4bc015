"""Plain helpers shared by several test modules (fixtures are in conftest.py). Import them as ``from helpers import ...``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from timm.data.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

import easytransfer
from easytransfer import ImageData, transfer_learner

ROOT = Path(easytransfer.__file__).resolve().parent.parent  # this checkout

TINY = dict(bs=4, size=32)  # small batches of small images
TINY_TOWER = dict(depth=2, embed_dim=32, num_heads=2)  # a ViT tower small enough for a CPU

# name -> (size when none is given, mean, std, patch size)
TOWERS = {
    "vit_small_patch14_dinov2": (224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 14),
    "vit_small_patch14_reg4_dinov2": (224, IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, 14),
    "vit_base_patch16_clip_224.openai": (224, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, 16),
    "vit_base_patch16_siglip_224": (224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 16),
}

DEAD_PID = 999_999_999  # above any pid_max: no process has it

DELETE = object()  # bundle_json(key=DELETE) leaves `key` out


def tiny_dls(folder, **kwargs):
    """`folder`'s data: a quarter held out, small images, no augmentation (`kwargs` override)."""
    kwargs = {"valid_pct": 0.25, "seed": 0, "bs": 4, "size": 32, "aug": "none", **kwargs}
    return ImageData.from_folder(folder, **kwargs)


def tiny_learner(folder, **kwargs):
    """An untrained ``test_efficientnet`` on `tiny_dls(folder)`; `kwargs` go to `transfer_learner`."""
    return transfer_learner(tiny_dls(folder), "test_efficientnet", pretrained=False, **kwargs)


def learner_with_data(folder, **kwargs):
    """A tiny learner; ``aug`` and ``test_pct`` go to the data."""
    data = {k: kwargs.pop(k) for k in ("aug", "test_pct") if k in kwargs}
    dls = ImageData.from_folder(folder, seed=0, **TINY, **data)
    return transfer_learner(dls, "test_efficientnet", pretrained=False, **kwargs)


def plant_temporaries(folder):
    """A dead writer's and a live writer's temporary in `folder`: returns (dead, live)."""
    folder.mkdir(parents=True, exist_ok=True)
    dead = folder / f".model.safetensors.{DEAD_PID}.abc123.tmp"
    live = folder / f".model.safetensors.{os.getpid()}.def456.tmp"  # a writer still at work
    for temporary in (dead, live):
        temporary.mkdir()
        (temporary / ".tmpAbC123").write_bytes(b"half a file")  # what safetensors' own save_file leaves
    return dead, live


def bundle_json(**changes):
    """A bundle's easytransfer.json (format 1) with `changes` (``size``, ``mean``, ``std`` in its preprocessing)."""
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


def fixed_scores(n: int = 2000, n_classes: int = 4, seed: int = 0):
    """Probabilities of a noisy, over-confident classifier and the true labels: a fixed population to split."""
    from easytransfer.evaluate.calibration import softmax

    rng = np.random.default_rng(seed)
    targets = rng.integers(0, n_classes, n)
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), targets] += 1.5
    return softmax(3 * logits), targets


def make_history(valid_losses, train_acc, valid_acc, kind=None, on_features=False):
    """A History of one epoch per valid loss (a discriminative phase unless `kind` says otherwise)."""
    from easytransfer.train.history import EpochRecord, History, Phase, PhaseKind

    kind = PhaseKind.DISCRIMINATIVE if kind is None else kind
    history = History()
    cached = {"on_features": True} if on_features else {}
    for i, loss in enumerate(valid_losses):
        history.append(EpochRecord(Phase(kind), i, train_loss=1.0 / (i + 1), valid_loss=loss,
                                   metrics={"accuracy": valid_acc}, train_accuracy=train_acc, **cached))
    return history


def cli_error(capsys, code: int) -> str:
    """The error the command line just printed, after checking it exited 2 with a message and no traceback."""
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("easytransfer: error: ") and "Traceback" not in err, err
    return err


def python_in_checkout(code: str, *flags: str, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter that imports this checkout's easytransfer."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "LD_PRELOAD")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["EASYTRANSFER_ALLOCATOR"] = "system"
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)
